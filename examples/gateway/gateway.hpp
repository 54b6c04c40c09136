#pragma once
// gateway: an OpenAI-compatible rate-limiting proxy. Callers authenticate with
// their own API keys; each user gets a per-minute request and token budget;
// all of them share one upstream quota, kept by an LLM gate so the provider
// never answers 429. Embeddable: `gateway::server` runs in-process (start/stop).

#include <httplib.h>
#include <nlohmann/json.hpp>

#include "../common/http_guard.hpp"

#include <ratelimit/dual_bucket.hpp>
#include <ratelimit/headers.hpp>
#include <ratelimit/keyed.hpp>
#include <ratelimit/llm/estimate.hpp>
#include <ratelimit/llm/gate.hpp>
#include <ratelimit/rate.hpp>

#include <signal.h>
#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <cstdio>
#include <fstream>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

namespace gateway {

using json = nlohmann::json;

// ---------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------

/// One caller's API key and the limits of the user it belongs to.
struct api_key {
    std::string key;
    std::string user;
    std::int64_t requests_per_minute = 0;
    std::int64_t tokens_per_minute = 0;
};

/// Parses a keys document: `{"keys": [{"key", "user", "requests_per_minute",
/// "tokens_per_minute"}, ...]}`. Throws std::invalid_argument with a one-line
/// message naming the first problem: malformed JSON, a missing or mistyped
/// field, a limit below 1, a key listed twice, or one user given two limits.
inline std::vector<api_key> parse_keys(std::string_view text) {
    const json doc = json::parse(text, nullptr, false);
    if (doc.is_discarded()) throw std::invalid_argument("keys file is not valid JSON");
    if (!doc.is_object() || !doc.contains("keys") || !doc["keys"].is_array())
        throw std::invalid_argument("keys file must be an object with a \"keys\" array");
    std::vector<api_key> keys;
    std::unordered_map<std::string, std::pair<std::int64_t, std::int64_t>> users;
    std::unordered_map<std::string, bool> seen;
    for (std::size_t i = 0; i < doc["keys"].size(); ++i) {
        const json& k = doc["keys"][i];
        const std::string at = "keys[" + std::to_string(i) + "]";
        if (!k.is_object()) throw std::invalid_argument(at + " must be an object");
        api_key entry;
        for (const char* field : {"key", "user"}) {
            const auto f = k.find(field);
            if (f == k.end() || !f->is_string() || f->get<std::string>().empty())
                throw std::invalid_argument(at + "." + field + " must be a non-empty string");
        }
        entry.key = k["key"].get<std::string>();
        entry.user = k["user"].get<std::string>();
        // A bearer key is one token (RFC 6750): a key with a space, tab, newline or
        // other control character could never be presented, so it never matches.
        for (const char c : entry.key) {
            if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f)
                throw std::invalid_argument(at + ".key contains whitespace or a control character (a key is one token)");
        }
        for (const char* field : {"requests_per_minute", "tokens_per_minute"}) {
            const auto f = k.find(field);
            if (f == k.end() || !f->is_number_integer() || f->get<std::int64_t>() < 1 ||
                f->get<std::int64_t>() > 1'000'000'000'000)
                throw std::invalid_argument(at + "." + field + " must be an integer in [1, 1e12]");
        }
        entry.requests_per_minute = k["requests_per_minute"].get<std::int64_t>();
        entry.tokens_per_minute = k["tokens_per_minute"].get<std::int64_t>();
        if (seen.count(entry.key) != 0) throw std::invalid_argument(at + ".key is listed twice");
        seen[entry.key] = true;
        const auto limits = std::make_pair(entry.requests_per_minute, entry.tokens_per_minute);
        if (const auto u = users.find(entry.user); u != users.end() && u->second != limits)
            throw std::invalid_argument(at + ": user '" + entry.user + "' already has other limits");
        users[entry.user] = limits;
        keys.push_back(std::move(entry));
    }
    return keys;
}

/// Reads and parses a keys file; throws std::invalid_argument (one line) when
/// it cannot be read or is not a valid keys document.
inline std::vector<api_key> load_keys(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw std::invalid_argument("cannot read keys file '" + path + "'");
    std::stringstream text;
    text << in.rdbuf();
    try {
        return parse_keys(text.str());
    } catch (const std::invalid_argument& e) {
        throw std::invalid_argument(path + ": " + e.what());
    }
}

/// Everything the server can be told.
struct config {
    std::string host = "127.0.0.1";   ///< address to bind; nothing else is bound
    int port = 0;                     ///< 0: pick a free port
    std::string upstream;             ///< http://host:port[/prefix]; the request path is appended
    std::string upstream_key;         ///< sent upstream as `Authorization: Bearer`; empty: none
    std::vector<api_key> keys;
    std::int64_t requests_per_minute = 0;  ///< upstream quota; 0: learned from headers
    std::int64_t tokens_per_minute = 0;    ///< upstream quota; 0: learned from headers
    std::int64_t concurrency = 0;          ///< upstream requests in flight; 0: unbounded
    std::int64_t max_body_bytes = 1 << 20;
    std::chrono::milliseconds max_wait{10'000};  ///< longest wait in the upstream line, then 429
    std::chrono::seconds upstream_timeout{120};  ///< read timeout for the upstream's answer
    std::chrono::milliseconds body_timeout{10'000};  ///< longest time a request body may take to arrive
    std::chrono::milliseconds drain{10'000};          ///< stop(): time requests being handled get to answer
    /// Worker threads = connections served at once (httplib gives each
    /// connection a thread until it closes): above what slow clients may hold
    /// (max_connections_per_address per address, for header_timeout each).
    int threads = 256;
    std::chrono::milliseconds header_timeout{10'000};  ///< a request's headers must arrive within it
    int max_connections_per_address = 32;  ///< beyond it, an address's connections still reading a request are cut
    std::int64_t default_max_tokens = 256;       ///< charged when a request names no max_tokens
};

/// The upstream URL split into what httplib::Client takes and the path prefix.
struct upstream_url {
    std::string origin;     ///< scheme://host[:port]
    std::string base_path;  ///< "" or "/prefix" (no trailing slash)
};

/// Splits `http://host:port/prefix`; throws std::invalid_argument for anything
/// but an http URL with a host (https needs an OpenSSL build of httplib).
inline upstream_url parse_upstream(const std::string& url) {
    const std::string scheme = "http://";
    if (url.rfind(scheme, 0) != 0) throw std::invalid_argument("--upstream must start with http://, got '" + url + "'");
    const std::size_t slash = url.find('/', scheme.size());
    upstream_url u;
    u.origin = url.substr(0, slash);
    if (u.origin.size() == scheme.size()) throw std::invalid_argument("--upstream has no host: '" + url + "'");
    if (slash != std::string::npos) u.base_path = url.substr(slash);
    while (!u.base_path.empty() && u.base_path.back() == '/') u.base_path.pop_back();
    return u;
}

// ---------------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------------

/// Why the gateway refused a request (the `reason` label of the rejections).
enum class reason : std::size_t { auth, body_too_large, bad_request, user_limit, upstream_wait, count };

inline constexpr std::array<const char*, static_cast<std::size_t>(reason::count)> reason_names{
    "auth", "body_too_large", "bad_request", "user_limit", "upstream_wait"};

/// Counters for /metrics; lock-free (relaxed atomics), read as a snapshot.
class metrics {
public:
    /// Upper bounds (seconds) of the queue-wait histogram buckets; +Inf is implied.
    static constexpr std::array<double, 11> wait_bounds{0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};

    void admitted() noexcept { admitted_.fetch_add(1, std::memory_order_relaxed); }
    void rejected(reason r) noexcept { rejected_[static_cast<std::size_t>(r)].fetch_add(1, std::memory_order_relaxed); }
    void upstream_status(int status) noexcept {
        if (status == 429) upstream_429_.fetch_add(1, std::memory_order_relaxed);
        if (status < 200 || status >= 300) upstream_failed_.fetch_add(1, std::memory_order_relaxed);
    }
    void upstream_unreachable() noexcept { upstream_unreachable_.fetch_add(1, std::memory_order_relaxed); }
    void waited(std::chrono::nanoseconds d) noexcept {
        const double s = std::chrono::duration<double>(d).count();
        for (std::size_t i = 0; i < wait_bounds.size(); ++i) {
            if (s <= wait_bounds[i]) buckets_[i].fetch_add(1, std::memory_order_relaxed);
        }
        wait_count_.fetch_add(1, std::memory_order_relaxed);
        wait_sum_ns_.fetch_add(d.count(), std::memory_order_relaxed);
    }
    [[nodiscard]] std::int64_t rejected_count(reason r) const noexcept {
        return rejected_[static_cast<std::size_t>(r)].load(std::memory_order_relaxed);
    }
    [[nodiscard]] std::int64_t admitted_count() const noexcept { return admitted_.load(std::memory_order_relaxed); }

    /// Prometheus text exposition format (0.0.4).
    [[nodiscard]] std::string text(std::size_t keys_tracked, const ratelimit::llm::stats& gate) const {
        std::string out;
        auto line = [&out](const std::string& s) { out += s + "\n"; };
        auto num = [](double x) {
            std::array<char, 32> b{};
            std::snprintf(b.data(), b.size(), "%g", x);
            return std::string(b.data());
        };
        line("# HELP gateway_requests_admitted_total Chat requests admitted by the gateway and sent upstream.");
        line("# TYPE gateway_requests_admitted_total counter");
        line("gateway_requests_admitted_total " + std::to_string(admitted_count()));
        line("# HELP gateway_requests_rejected_total Requests the gateway answered itself with a 4xx, by reason.");
        line("# TYPE gateway_requests_rejected_total counter");
        for (std::size_t i = 0; i < reason_names.size(); ++i)
            line(std::string("gateway_requests_rejected_total{reason=\"") + reason_names[i] + "\"} " +
                 std::to_string(rejected_[i].load(std::memory_order_relaxed)));
        line("# HELP gateway_upstream_429_total Upstream answers with status 429 (should stay 0).");
        line("# TYPE gateway_upstream_429_total counter");
        line("gateway_upstream_429_total " + std::to_string(upstream_429_.load(std::memory_order_relaxed)));
        line("# HELP gateway_upstream_failed_total Upstream answers with a non-2xx status.");
        line("# TYPE gateway_upstream_failed_total counter");
        line("gateway_upstream_failed_total " + std::to_string(upstream_failed_.load(std::memory_order_relaxed)));
        line("# HELP gateway_upstream_unreachable_total Requests the upstream did not answer (502).");
        line("# TYPE gateway_upstream_unreachable_total counter");
        line("gateway_upstream_unreachable_total " + std::to_string(upstream_unreachable_.load(std::memory_order_relaxed)));
        line("# HELP gateway_queue_wait_seconds Time admitted requests waited in the upstream line.");
        line("# TYPE gateway_queue_wait_seconds histogram");
        for (std::size_t i = 0; i < wait_bounds.size(); ++i)
            line("gateway_queue_wait_seconds_bucket{le=\"" + num(wait_bounds[i]) + "\"} " +
                 std::to_string(buckets_[i].load(std::memory_order_relaxed)));
        const std::int64_t count = wait_count_.load(std::memory_order_relaxed);
        line("gateway_queue_wait_seconds_bucket{le=\"+Inf\"} " + std::to_string(count));
        line("gateway_queue_wait_seconds_sum " + num(static_cast<double>(wait_sum_ns_.load(std::memory_order_relaxed)) / 1e9));
        line("gateway_queue_wait_seconds_count " + std::to_string(count));
        line("# HELP gateway_keys_tracked Users with a limiter in memory.");
        line("# TYPE gateway_keys_tracked gauge");
        line("gateway_keys_tracked " + std::to_string(keys_tracked));
        line("# HELP gateway_upstream_in_flight Requests sent upstream and not yet answered.");
        line("# TYPE gateway_upstream_in_flight gauge");
        line("gateway_upstream_in_flight " + std::to_string(gate.in_flight));
        line("# HELP gateway_upstream_limit_requests_per_minute Upstream request limit in force (0: unknown).");
        line("# TYPE gateway_upstream_limit_requests_per_minute gauge");
        line("gateway_upstream_limit_requests_per_minute " + std::to_string(gate.requests_per_minute));
        line("# HELP gateway_upstream_limit_tokens_per_minute Upstream token limit in force (0: unknown).");
        line("# TYPE gateway_upstream_limit_tokens_per_minute gauge");
        line("gateway_upstream_limit_tokens_per_minute " + std::to_string(gate.tokens_per_minute));
        return out;
    }

private:
    std::atomic<std::int64_t> admitted_{0};
    std::array<std::atomic<std::int64_t>, static_cast<std::size_t>(reason::count)> rejected_{};
    std::atomic<std::int64_t> upstream_429_{0}, upstream_failed_{0}, upstream_unreachable_{0};
    std::array<std::atomic<std::int64_t>, wait_bounds.size()> buckets_{};
    std::atomic<std::int64_t> wait_count_{0}, wait_sum_ns_{0};
};

// ---------------------------------------------------------------------------
// Request parsing
// ---------------------------------------------------------------------------

/// What a chat request may cost, or the 400 body saying why it is malformed.
struct chat_cost {
    ratelimit::llm::request_cost cost;
    std::optional<json> error;  ///< set: answer 400 with it
};

inline json error_body(const std::string& message, const char* type, const char* code) {
    return {{"error", {{"message", message}, {"type", type}, {"param", nullptr}, {"code", code}}}};
}

/// Validates an OpenAI chat body and estimates its cost: the prompt (every
/// message's text content, by llm::estimate_tokens) plus max_completion_tokens
/// or max_tokens (`default_max_tokens` when neither is given).
inline chat_cost estimate_chat(const std::string& body, std::int64_t default_max_tokens) {
    chat_cost out;
    const json request = json::parse(body, nullptr, false);
    if (request.is_discarded())
        return {{}, error_body("The request body is not valid JSON.", "invalid_request_error", "invalid_json")};
    if (!request.is_object())
        return {{}, error_body("The request body must be a JSON object.", "invalid_request_error", "invalid_type")};
    const auto messages = request.find("messages");
    if (messages == request.end())
        return {{}, error_body("Missing required parameter: 'messages'.", "invalid_request_error", "missing_required_parameter")};
    if (!messages->is_array() || messages->empty())
        return {{}, error_body("'messages' must be a non-empty array.", "invalid_request_error", "invalid_type")};
    std::int64_t input = 0;
    for (const json& m : *messages) {
        if (!m.is_object()) return {{}, error_body("Each message must be an object.", "invalid_request_error", "invalid_type")};
        const auto content = m.find("content");
        if (content == m.end() || content->is_null()) continue;
        if (content->is_string()) {
            input += ratelimit::llm::estimate_tokens(content->get_ref<const std::string&>());
        } else if (content->is_array()) {  // [{"type": "text", "text": "..."}, ...]
            for (const json& part : *content) {
                if (part.is_object() && part.contains("text") && part["text"].is_string())
                    input += ratelimit::llm::estimate_tokens(part["text"].get_ref<const std::string&>());
            }
        } else {
            return {{}, error_body("A message's 'content' must be a string or an array.", "invalid_request_error", "invalid_type")};
        }
    }
    std::int64_t max_tokens = default_max_tokens;
    for (const char* name : {"max_completion_tokens", "max_tokens"}) {
        const auto v = request.find(name);
        if (v == request.end() || v->is_null()) continue;
        if (!v->is_number_integer() || v->get<std::int64_t>() < 1 || v->get<std::int64_t>() > 1'000'000'000)
            return {{}, error_body(std::string("'") + name + "' must be an integer in [1, 1000000000].",
                                   "invalid_request_error", "invalid_value")};
        max_tokens = v->get<std::int64_t>();
        break;  // max_completion_tokens wins over the deprecated max_tokens
    }
    out.cost = {input, max_tokens};
    return out;
}

/// The key of `Authorization: Bearer KEY` (scheme case-insensitive), or empty.
inline std::string_view bearer_key(const httplib::Request& req) {
    const auto it = req.headers.find("Authorization");
    if (it == req.headers.end()) return {};
    std::string_view v = it->second;
    if (v.size() < 7) return {};
    static constexpr std::string_view bearer = "bearer ";
    for (std::size_t i = 0; i < bearer.size(); ++i) {
        const char c = v[i] >= 'A' && v[i] <= 'Z' ? static_cast<char>(v[i] - 'A' + 'a') : v[i];
        if (c != bearer[i]) return {};
    }
    v.remove_prefix(bearer.size());
    while (!v.empty() && v.front() == ' ') v.remove_prefix(1);
    while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) v.remove_suffix(1);
    return v;
}

/// Whole seconds, rounded up, at least 1: for Retry-After.
inline std::int64_t ceil_seconds(std::chrono::nanoseconds d) {
    const auto s = std::chrono::ceil<std::chrono::seconds>(d).count();
    return std::max<std::int64_t>(1, s);
}

// ---------------------------------------------------------------------------
// The fair line
// ---------------------------------------------------------------------------

/// Who waits for the shared upstream quota next: round robin over users.
///
/// Model: one request at a time is "inside" (waiting in the upstream gate's
/// own FIFO line); the others wait here, each user's in arrival order, and
/// each time the request inside leaves (admitted, refused or given up), the
/// next user in turn sends its oldest request inside. A user with a request
/// waiting is served within one turn of each other waiting user: a light
/// user's request waits for at most one request of every other user, never
/// for all of a heavy user's (a FIFO line would put it behind them all).
///
/// Thread-safe: one mutex and a condition variable; a waiter holds no lock
/// while it sleeps. enter() is O(1) amortized; memory O(waiting requests).
class fair_line {
public:
    /// Waits for this request's turn until `deadline`; false (and out of line) when it passes.
    bool enter(const std::string& user, std::chrono::steady_clock::time_point deadline) {
        std::unique_lock lock(mutex_);
        const std::uint64_t me = next_id_++;
        auto& mine = waiting_[user];
        if (mine.empty()) turns_.push_back(user);
        mine.push_back(me);
        grant();
        if (!cv_.wait_until(lock, deadline, [&] { return granted_.count(me) != 0 || closed_; }) || closed_) {
            if (granted_.erase(me) != 0) {  // closed after its turn came: pass the turn on
                inside_ = false;
                grant();
                return false;
            }
            auto& queue = waiting_[user];  // still waiting: leave the line
            queue.erase(std::find(queue.begin(), queue.end(), me));
            if (queue.empty()) {
                waiting_.erase(user);
                turns_.erase(std::find(turns_.begin(), turns_.end(), user));
            }
            return false;
        }
        granted_.erase(me);
        return true;
    }
    /// Wakes every waiter with false, and refuses every later enter (shutdown).
    void close() {
        const std::lock_guard lock(mutex_);
        closed_ = true;
        cv_.notify_all();
    }
    [[nodiscard]] bool closed() const {
        const std::lock_guard lock(mutex_);
        return closed_;
    }
    /// The request inside left the gate's line: the next turn goes.
    void leave() {
        const std::lock_guard lock(mutex_);
        inside_ = false;
        grant();
    }

private:
    void grant() {  // requires mutex_
        if (inside_ || turns_.empty()) return;
        const std::string user = turns_.front();
        turns_.pop_front();
        auto& queue = waiting_[user];
        granted_.insert(queue.front());
        queue.pop_front();
        if (queue.empty()) {
            waiting_.erase(user);
        } else {
            turns_.push_back(user);  // its next request waits for everyone else's turn
        }
        inside_ = true;
        cv_.notify_all();
    }

    mutable std::mutex mutex_;
    std::condition_variable cv_;
    bool closed_ = false;
    std::unordered_map<std::string, std::deque<std::uint64_t>> waiting_;  ///< by user, oldest first
    std::deque<std::string> turns_;                                       ///< users with requests waiting, in turn order
    std::unordered_set<std::uint64_t> granted_;                           ///< turns given, not yet taken by their waiter
    std::uint64_t next_id_ = 0;
    bool inside_ = false;
};

// ---------------------------------------------------------------------------
// The server
// ---------------------------------------------------------------------------

/// The gateway: an httplib server on its own thread.
///
/// Routes: POST /v1/chat/completions, GET /v1/limits, GET /health, GET /metrics;
/// another method on one of them 405 with Allow; anything else 404. Before any
/// body is read, a request with an ambiguous length (RFC 9112 §6.3) is 400
/// invalid_framing, and a body sent to a route that takes none is answered
/// unread; such connections end after the answer. A chat request is decided
/// in this order, each refusal an OpenAI-shaped JSON error the gateway
/// answers itself:
///  1. 401 unless `Authorization: Bearer KEY` names a known key (on the
///     headers, before the body is read);
///  2. 413 when the body exceeds max_body_bytes: a declared length at once,
///     a chunked body as soon as it passes the limit (never read whole); 408
///     when it takes longer than body_timeout;
///  3. 400 for malformed JSON, a missing or empty `messages`, a bad max_tokens,
///     or a cost above the user's or the upstream's whole per-minute token limit;
///  4. 429 (`user_limit`) when the user's dual bucket (requests_per_minute and
///     tokens_per_minute, each bucket holding one minute's worth) cannot pay
///     one request and the cost now, with Retry-After, RateLimit, RateLimit-Policy;
///  5. the upstream gate (llm::gate, FIFO): waits in line for the shared
///     quota; 429 (`upstream_wait`) when the wait would exceed max_wait, and
///     the user's charge is given back (the request was not made);
///  6. proxied with the gateway's own key; the upstream's status and body go
///     back to the caller; its x-ratelimit-* headers are dropped (they describe
///     the shared quota, not the caller's), its Retry-After is kept.
/// After an upstream 2xx, the tokens reserved but not used (by the response's
/// `usage`) are given back to both the gate and the user's bucket; after a
/// 5xx, a refused upstream key (401/403, answered as the gateway's own 502)
/// or no answer, the user's whole charge is.
///
/// A request above one sub-window of the upstream's token limit (tpm/60 with
/// the gate's one-second sub-windows) but within its minute is held until the
/// gate's token bucket is full (a full sub-window: the gate lets a request
/// larger than its bucket go only then, leaving the bucket in debt), then
/// sent. An upstream that refuses it anyway with a 429 naming no retry time
/// (a refusal of its size: mock_upstream's "can never be admitted") makes
/// the gateway answer that request, and every later one above that
/// sub-window, 400 request_too_large, with no pause of the line; so it draws
/// at most one provider 429. Users take turns for the line (fair_line).
///
/// The caller's Authorization header is never forwarded; the upstream key is
/// never written to a response or a log (the server logs nothing).
///
/// Thread-safety: handlers run on `threads` workers; the keyed limiter, the
/// gate and the metrics are thread-safe; the key table is read-only after
/// construction. start() once; stop() joins every thread; not restartable.
class server {
public:
    /// Throws std::invalid_argument for a bad config (upstream URL, limits, empty keys).
    explicit server(config c)
        : config_(checked(std::move(c))),
          upstream_(parse_upstream(config_.upstream)),
          users_(make_users(config_.keys)),
          keys_(make_keys(config_.keys, users_)),
          per_user_([users = &users_](const std::string& user) {
              const user_limits& u = users->at(user);
              return ratelimit::dual_bucket<>(ratelimit::rate::per_minute(static_cast<double>(u.requests_per_minute)),
                                              u.requests_per_minute,
                                              ratelimit::rate::per_minute(static_cast<double>(u.tokens_per_minute)),
                                              u.tokens_per_minute);
          }),
          gate_(gate_config_of(config_)),
          watch_(config_.header_timeout, config_.max_connections_per_address) {}
    server(const server&) = delete;
    server& operator=(const server&) = delete;
    ~server() { stop(); }

    /// Binds (port 0: a free port), serves on a background thread, returns the
    /// port. Throws std::runtime_error when the address cannot be bound.
    int start() {
        if (thread_.joinable()) throw std::logic_error("gateway::server::start: already started");
        setup_routes();
        const int port = config_.port == 0 ? http_.bind_to_any_port(config_.host)
                                           : (http_.bind_to_port(config_.host, config_.port) ? config_.port : -1);
        if (port <= 0) throw std::runtime_error("cannot bind " + config_.host + ":" + std::to_string(config_.port));
        http_.widen_backlog();
        port_ = port;
        watch_.start(port);
        thread_ = std::thread([this] {
            sigset_t pipe;  // inherited by httplib's workers: a write to a closed socket returns EPIPE
            sigemptyset(&pipe);
            sigaddset(&pipe, SIGPIPE);
            pthread_sigmask(SIG_BLOCK, &pipe, nullptr);
            http_.listen_after_bind();
        });
        while (!http_.is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
        return port;
    }

    /// Stops serving and joins the threads; safe to call twice. No new
    /// connection is accepted; a connection idle or still sending its request
    /// (however slowly) ends at once; a request being handled gets until
    /// `drain` to answer, then its connection and its upstream call are cut.
    /// Returns within drain + ~0.1 s, except that a caller waiting in the
    /// upstream line leaves it only when its wait ends (at most max_wait): the
    /// gate cannot be woken early (the program's main bounds that too).
    void stop() {
        if (!thread_.joinable()) return;
        http_.stop();
        watch_.stop();
        examples::http::for_each_connection(port_, [](int fd, std::string_view, int) {
            ::shutdown(fd, SHUT_RD);  // a read of the next request sees end of file; an answer still goes out
            return false;
        });
        const auto deadline = std::chrono::steady_clock::now() + config_.drain;
        while (http_.is_running() && std::chrono::steady_clock::now() < deadline)
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        if (http_.is_running()) {  // the drain time is over: cut what is left
            line_.close();  // callers waiting for a turn or for the quota answer 503 now
            gate_.close();
            const auto answered = std::chrono::steady_clock::now() + std::chrono::milliseconds(200);
            while (http_.is_running() && std::chrono::steady_clock::now() < answered)
                std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
        if (http_.is_running()) {  // still not done: cut the upstream calls and the connections
            {
                const std::lock_guard lock(clients_mutex_);
                cut_ = true;
                for (httplib::Client* c : in_use_) c->stop();
            }
            examples::http::for_each_connection(port_, [](int fd, std::string_view, int) {
                ::shutdown(fd, SHUT_RDWR);
                return false;
            });
        }
        thread_.join();
    }

    [[nodiscard]] int port() const { return port_; }
    [[nodiscard]] const metrics& counters() const { return metrics_; }
    [[nodiscard]] std::string metrics_text() { return metrics_.text(per_user_.size(), gate_.snapshot()); }

private:
    struct user_limits {
        std::int64_t requests_per_minute = 0;
        std::int64_t tokens_per_minute = 0;
    };
    struct caller {
        std::string user;
        const user_limits* limits = nullptr;
    };
    using user_table = std::unordered_map<std::string, user_limits>;
    using key_table = std::unordered_map<std::string, caller>;

    /// httplib::Server with access to its listening socket (Debian's build
    /// fixes the listen backlog at 5, too few for bursts).
    struct http_server : httplib::Server {
        void widen_backlog() { ::listen(svr_sock_, SOMAXCONN); }
    };

    static config checked(config c) {
        auto fail = [](const std::string& what) { throw std::invalid_argument(what); };
        if (c.port < 0 || c.port > 65535) fail("--port must be in [0, 65535], got " + std::to_string(c.port));
        if (c.keys.empty()) fail("the keys file lists no keys");
        if (c.requests_per_minute < 0) fail("--rpm must be >= 0, got " + std::to_string(c.requests_per_minute));
        if (c.tokens_per_minute < 0) fail("--tpm must be >= 0, got " + std::to_string(c.tokens_per_minute));
        if (c.concurrency < 0) fail("--concurrency must be >= 0, got " + std::to_string(c.concurrency));
        if (c.max_body_bytes < 1) fail("--max-body-bytes must be >= 1, got " + std::to_string(c.max_body_bytes));
        if (c.max_wait.count() < 0) fail("max_wait must be >= 0");
        if (c.header_timeout.count() < 1) fail("--header-timeout-ms must be >= 1");
        if (c.max_connections_per_address < 1) fail("--max-connections-per-address must be >= 1");
        if (c.threads < 1 || c.threads > 4096) fail("--threads must be in [1, 4096], got " + std::to_string(c.threads));
        if (c.default_max_tokens < 1) fail("default_max_tokens must be >= 1");
        return c;
    }

    static user_table make_users(const std::vector<api_key>& keys) {
        user_table users;
        for (const api_key& k : keys) users[k.user] = {k.requests_per_minute, k.tokens_per_minute};
        return users;
    }
    static key_table make_keys(const std::vector<api_key>& keys, const user_table& users) {
        key_table table;
        for (const api_key& k : keys) table[k.key] = caller{k.user, &users.at(k.user)};
        return table;
    }
    static ratelimit::llm::gate_config gate_config_of(const config& c) {
        ratelimit::llm::gate_config g;
        g.requests_per_minute = c.requests_per_minute;
        g.tokens_per_minute = c.tokens_per_minute;
        g.max_concurrent = c.concurrency;
        g.max_wait = c.max_wait;
        return g;
    }

    static void send_json(httplib::Response& res, int status, const json& body) {
        res.status = status;
        res.set_content(body.dump(), "application/json");
    }

    void reject(httplib::Response& res, reason why, int status, const std::string& message, const char* type,
                const char* code) {
        metrics_.rejected(why);
        send_json(res, status, error_body(message, type, code));
    }

    /// The caller named by the request's bearer key, or nullptr.
    const caller* authenticate(const httplib::Request& req) const {
        const std::string_view key = bearer_key(req);
        if (key.empty()) return nullptr;
        const auto it = keys_.find(std::string(key));
        return it == keys_.end() ? nullptr : &it->second;
    }

    void unauthorized(const httplib::Request& req, httplib::Response& res) {
        const bool given = !bearer_key(req).empty();
        reject(res, reason::auth, 401,
               given ? "Incorrect API key provided." : "You didn't provide an API key. Use 'Authorization: Bearer KEY'.",
               "invalid_request_error", given ? "invalid_api_key" : "missing_api_key");
        res.set_header("WWW-Authenticate", "Bearer");
    }

    void setup_routes() {
        const auto threads = static_cast<std::size_t>(config_.threads);
        http_.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
        http_.set_tcp_nodelay(true);  // answers go out as two writes: without it, Nagle + delayed ACK add 40 ms
        http_.set_keep_alive_timeout(2);
        http_.set_keep_alive_max_count(100000);
        http_.set_payload_max_length(static_cast<std::size_t>(config_.max_body_bytes));
        // Before any body is read: a request whose length is ambiguous is
        // refused, and its connection ends after the answer (RFC 9112 §6.3).
        http_.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
            watch_.started(req);
            if (const auto problem = examples::http::framing_error(req)) {
                reject(res, reason::bad_request, 400, *problem, "invalid_request_error", "invalid_framing");
                examples::http::close_after_answer(res);
                return httplib::Server::HandlerResponse::Handled;
            }
            // Only the chat route reads a body (limited, after authentication):
            // any other route would have httplib read it whole, chunked without
            // limit, before answering 404 or 405. Answer those unread.
            const bool has_body = req.has_header("Transfer-Encoding") || examples::http::content_length(req).value_or(0) > 0;
            if (has_body && req.path != "/v1/chat/completions") {
                if (const char* allow = allowed_methods(req.path); allow != nullptr) {
                    res.set_header("Allow", allow);
                    reject(res, reason::bad_request, 405, "Method " + req.method + " is not allowed on " + req.path + " (allowed: " + allow + ").",
                           "invalid_request_error", "method_not_allowed");
                } else {
                    reject(res, reason::bad_request, 404, "Unknown path " + req.method + " " + req.path, "invalid_request_error", "unknown_url");
                }
                examples::http::close_after_answer(res);
                return httplib::Server::HandlerResponse::Handled;
            }
            return httplib::Server::HandlerResponse::Unhandled;
        });
        http_.set_logger([this](const httplib::Request& req, const httplib::Response&) {
            examples::http::end_marked_connection(req, std::chrono::seconds(1));
            watch_.finished(req);
        });
        http_.Post("/v1/chat/completions", [this](const httplib::Request& req, httplib::Response& res,
                                                  const httplib::ContentReader& reader) { receive_chat(req, res, reader); });
        http_.Get("/v1/limits", [this](const httplib::Request& req, httplib::Response& res) { limits(req, res); });
        http_.Get("/health", [](const httplib::Request&, httplib::Response& res) { res.set_content("ok", "text/plain"); });
        http_.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
            res.set_content(metrics_text(), "text/plain; version=0.0.4");
        });
        http_.set_error_handler(httplib::Server::HandlerWithResponse([this](const httplib::Request& req, httplib::Response& res) {
            if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
            if (res.status == 413) {  // httplib refused the body unread; authentication still comes first
                if (authenticate(req) == nullptr) {
                    unauthorized(req, res);
                } else {
                    reject(res, reason::body_too_large, 413,
                           "The request body exceeds " + std::to_string(config_.max_body_bytes) + " bytes.",
                           "invalid_request_error", "request_too_large");
                }
                res.set_header("Connection", "close");
                return httplib::Server::HandlerResponse::Handled;
            }
            if (res.status == 404) {
                if (const char* allow = allowed_methods(req.path); allow != nullptr) {
                    res.set_header("Allow", allow);
                    send_json(res, 405, error_body("Method " + req.method + " is not allowed on " + req.path + " (allowed: " + allow + ").",
                                                   "invalid_request_error", "method_not_allowed"));
                    return httplib::Server::HandlerResponse::Handled;
                }
            }
            const std::string what = res.status == 404 ? "Unknown path " + req.method + " " + req.path
                                                       : "HTTP status " + std::to_string(res.status);
            send_json(res, res.status, error_body(what, "invalid_request_error", res.status == 404 ? "unknown_url" : "http_error"));
            return httplib::Server::HandlerResponse::Handled;
        }));
        http_.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr) {
            send_json(res, 500, error_body("internal error", "server_error", "internal_error"));
        });
    }

    /// The methods a route takes (for 405's Allow), or nullptr for an unknown path.
    static const char* allowed_methods(const std::string& path) {
        if (path == "/v1/chat/completions") return "POST";
        if (path == "/v1/limits" || path == "/health" || path == "/metrics") return "GET, HEAD";
        return nullptr;
    }

    /// The user limiter's answer for one call.
    struct user_decision {
        bool admitted = false;
        bool never = false;  ///< the cost exceeds the user's whole token limit
        std::chrono::nanoseconds wait{0};
        std::int64_t requests_left = 0, tokens_left = 0;
    };

    /// IETF RateLimit and RateLimit-Policy (draft-ietf-httpapi-ratelimit-headers):
    /// one policy for requests ("user") and one for tokens ("user-tokens", qu="tokens").
    static void add_rate_limit_headers(httplib::Response& res, const user_limits& u, const user_decision& d) {
        const std::int64_t t = d.admitted ? 0 : ceil_seconds(d.wait);
        res.set_header("RateLimit", "\"user\";r=" + std::to_string(std::max<std::int64_t>(0, d.requests_left)) +
                                        ";t=" + std::to_string(t) + ", \"user-tokens\";r=" +
                                        std::to_string(std::max<std::int64_t>(0, d.tokens_left)) + ";t=" + std::to_string(t));
        res.set_header("RateLimit-Policy", "\"user\";q=" + std::to_string(u.requests_per_minute) +
                                               ";w=60, \"user-tokens\";q=" + std::to_string(u.tokens_per_minute) +
                                               ";w=60;qu=\"tokens\"");
    }

    /// Authenticates on the headers, then reads the body (chunked or not) up to
    /// max_body_bytes and body_timeout; a body refused unread or cut short ends
    /// its connection after the answer. Any content type is read as JSON (curl
    /// -d sends application/x-www-form-urlencoded), except multipart (415).
    void receive_chat(const httplib::Request& req, httplib::Response& res, const httplib::ContentReader& reader) {
        const caller* who = authenticate(req);
        const auto refuse_unread = [&res] { examples::http::close_after_answer(res); };
        if (who == nullptr) {
            unauthorized(req, res);
            return refuse_unread();
        }
        const std::string too_large = "The request body exceeds " + std::to_string(config_.max_body_bytes) + " bytes.";
        if (const auto length = examples::http::content_length(req);
            length && *length > static_cast<std::uint64_t>(config_.max_body_bytes)) {
            reject(res, reason::body_too_large, 413, too_large, "invalid_request_error", "request_too_large");
            return refuse_unread();
        }
        if (req.is_multipart_form_data()) {
            reject(res, reason::bad_request, 415, "The request body must be JSON (Content-Type: application/json).",
                   "invalid_request_error", "unsupported_media_type");
            return refuse_unread();
        }
        const examples::http::body body = examples::http::read_body(
            reader, static_cast<std::uint64_t>(config_.max_body_bytes), std::chrono::steady_clock::now() + config_.body_timeout);
        switch (body.status) {
        case examples::http::body_status::complete:
            return chat(req, body.bytes, *who, res);
        case examples::http::body_status::too_large:
            reject(res, reason::body_too_large, 413, too_large, "invalid_request_error", "request_too_large");
            break;
        case examples::http::body_status::too_slow:
            reject(res, reason::bad_request, 408,
                   "The request body did not arrive within " + std::to_string(config_.body_timeout.count()) + " ms.",
                   "invalid_request_error", "request_timeout");
            break;
        case examples::http::body_status::broken:
            reject(res, reason::bad_request, 400, "The request body could not be read (broken chunked encoding or a stalled sender).",
                   "invalid_request_error", "invalid_body");
            break;
        }
        refuse_unread();
    }

    void chat(const httplib::Request& req, const std::string& body, const caller& caller_of_key, httplib::Response& res) {
        const caller* who = &caller_of_key;
        const chat_cost parsed = estimate_chat(body, config_.default_max_tokens);
        if (parsed.error) {
            metrics_.rejected(reason::bad_request);
            return send_json(res, 400, *parsed.error);
        }
        const ratelimit::llm::request_cost cost = parsed.cost;
        const std::int64_t total = cost.total();

        if (above_sub_window(total)) {
            return reject(res, reason::bad_request, 400,
                          "This request may use " + std::to_string(total) + " tokens (prompt + max_tokens), above the " +
                              std::to_string(sub_window_tokens_.load(std::memory_order_relaxed)) +
                              " tokens the upstream takes in one request (a one-second share of its per-minute limit).",
                          "invalid_request_error", "request_too_large");
        }
        const user_decision d = per_user_.with(who->user, [total](ratelimit::dual_bucket<>& b) {
            user_decision out;
            if (total > b.token_capacity()) {
                out.never = true;
            } else {
                out.admitted = b.try_acquire(total);
                if (!out.admitted) out.wait = b.time_until_available(total);
            }
            out.requests_left = b.available_requests();
            out.tokens_left = b.available_tokens();
            return out;
        });
        if (d.never) {
            return reject(res, reason::bad_request, 400,
                          "This request may use " + std::to_string(total) + " tokens (prompt + max_tokens), above your limit of " +
                              std::to_string(who->limits->tokens_per_minute) + " tokens per minute.",
                          "invalid_request_error", "request_too_large");
        }
        if (!d.admitted) {
            add_rate_limit_headers(res, *who->limits, d);
            res.set_header("Retry-After", std::to_string(ceil_seconds(d.wait)));
            return reject(res, reason::user_limit, 429,
                          "Rate limit reached for user " + who->user + ": " + std::to_string(who->limits->requests_per_minute) +
                              " requests and " + std::to_string(who->limits->tokens_per_minute) +
                              " tokens per minute. Please try again in " + std::to_string(ceil_seconds(d.wait)) + "s.",
                          "rate_limit_exceeded", "rate_limit_exceeded");
        }
        add_rate_limit_headers(res, *who->limits, d);
        const auto give_back = [&] { per_user_.with(who->user, [total](ratelimit::dual_bucket<>& b) { b.refund(total); }); };

        std::optional<ratelimit::llm::gate<>::ticket> ticket;
        const auto asked = std::chrono::steady_clock::now();
        try {
            // Users take turns to enter the gate's line (fair_line); the wait
            // for a turn counts against max_wait, the gate gets the rest.
            const bool never = total > gate_.snapshot().tokens_per_minute && gate_.snapshot().tokens_per_minute > 0;
            if (never) ticket.emplace(gate_.acquire(cost));  // throws capacity_exceeded at once
            const auto deadline = asked + config_.max_wait;
            if (!line_.enter(who->user, deadline)) throw ratelimit::llm::gate_timeout("no turn before max_wait");
            try {
                ticket = gate_.try_acquire_until(cost, deadline);
            } catch (...) {
                line_.leave();
                throw;
            }
            line_.leave();
            if (!ticket) {
                if (gate_.snapshot().tokens_per_minute > 0 && total > gate_.snapshot().tokens_per_minute)
                    ticket.emplace(gate_.acquire(cost));  // a learned limit fell below the cost: capacity_exceeded
                throw ratelimit::llm::gate_timeout("the upstream line would take longer than max_wait");
            }
        } catch (const ratelimit::llm::gate_timeout&) {
            give_back();
            if (line_.closed()) {  // stop() ended the wait
                res.set_header("Connection", "close");
                return send_json(res, 503, error_body("The gateway is shutting down.", "server_error", "shutting_down"));
            }
            const auto paused = gate_.snapshot().paused_for;
            res.set_header("Retry-After", std::to_string(ceil_seconds(std::max<std::chrono::nanoseconds>(paused, std::chrono::seconds(1)))));
            return reject(res, reason::upstream_wait, 429,
                          "The upstream quota is busy: this request would wait more than " +
                              std::to_string(config_.max_wait.count()) + " ms. Please try again shortly.",
                          "rate_limit_exceeded", "upstream_busy");
        } catch (const ratelimit::capacity_exceeded&) {
            give_back();
            return reject(res, reason::bad_request, 400,
                          "This request may use " + std::to_string(total) +
                              " tokens (prompt + max_tokens), above the upstream's whole per-minute limit.",
                          "invalid_request_error", "request_too_large");
        } catch (const ratelimit::llm::gate_closed&) {  // stop() closed the gate
            give_back();
            res.set_header("Connection", "close");
            return send_json(res, 503, error_body("The gateway is shutting down.", "server_error", "shutting_down"));
        }
        metrics_.waited(std::chrono::steady_clock::now() - asked);
        metrics_.admitted();
        proxy(req, body, res, *ticket, *who, cost);
    }

    void proxy(const httplib::Request& req, const std::string& body, httplib::Response& res,
               ratelimit::llm::gate<>::ticket& ticket, const caller& who, const ratelimit::llm::request_cost& cost) {
        httplib::Headers headers;
        if (!config_.upstream_key.empty()) headers.emplace("Authorization", "Bearer " + config_.upstream_key);
        // The user's charge comes back whenever the upstream did not do the work.
        const auto refund_user = [&] {
            per_user_.with(who.user, [total = cost.total()](ratelimit::dual_bucket<>& b) { b.refund(total); });
        };
        std::unique_ptr<httplib::Client> client = borrow_client();
        if (client == nullptr) {  // stop() cut the upstream calls: the gateway is shutting down
            ticket.complete(503);
            refund_user();
            res.set_header("Connection", "close");
            return send_json(res, 503, error_body("The gateway is shutting down.", "server_error", "shutting_down"));
        }
        httplib::Result result = client->Post(upstream_.base_path + req.path, headers, body, "application/json");
        give_back_client(std::move(client), static_cast<bool>(result));
        if (!result) {
            metrics_.upstream_unreachable();
            ticket.complete(502);
            refund_user();
            return send_json(res, 502, error_body("The upstream did not answer (" + httplib::to_string(result.error()) + ").",
                                                  "server_error", "upstream_unreachable"));
        }
        const httplib::Response& up = *result;
        metrics_.upstream_status(up.status);
        if (up.status == 429) remember_sub_window_refusal(up.headers, cost);
        if (up.status == 429 && (above_upstream_minute(up.headers, cost) || above_sub_window(cost.total()))) {
            // The provider refused a request that can never fit (its per-minute
            // token limit, learned from these headers, or its one-second share):
            // a 429 would tell the caller to retry forever. Its headers still
            // teach the gate the limit, but this is no sign of a spent quota,
            // so no pause.
            // (The gate keeps what it charged: it refunds only after a 2xx, and a
            // cost above its bucket left debt that a refund cannot pass. The
            // next requests wait that debt out, at most cost / rate, once.)
            ticket.complete(400, up.headers);
            refund_user();
            return reject(res, reason::bad_request, 400,
                          "This request may use " + std::to_string(cost.total()) +
                              " tokens (prompt + max_tokens), more than the upstream takes in one request " +
                              (above_upstream_minute(up.headers, cost) ? "(its whole per-minute limit)."
                                                                        : "(a one-second share of its per-minute limit)."),
                          "invalid_request_error", "request_too_large");
        }
        if (up.status == 401 || up.status == 403) {
            // The upstream refused the gateway's own key: the caller's request was
            // fine, and the upstream's body (which may show the masked key) stays here.
            ticket.complete(up.status, up.headers);
            refund_user();
            return send_json(res, 502, error_body("The upstream refused the gateway's credentials (HTTP " + std::to_string(up.status) +
                                                      "). This is the gateway's configuration, not your key.",
                                                  "server_error", "upstream_auth_failed"));
        }
        if (up.status >= 500) refund_user();
        std::optional<ratelimit::llm::usage> used;
        if (up.status >= 200 && up.status < 300) {
            const json body = json::parse(up.body, nullptr, false);
            if (body.is_object() && body.contains("usage") && body["usage"].is_object()) {
                const json& u = body["usage"];
                const auto field = [&u](const char* name) {
                    return u.contains(name) && u[name].is_number_integer() ? std::max<std::int64_t>(0, u[name].get<std::int64_t>()) : 0;
                };
                used = ratelimit::llm::usage{field("prompt_tokens"), field("completion_tokens")};
            }
        }
        ticket.complete(up.status, up.headers, used);
        if (used && used->total() < cost.total()) {
            const std::int64_t unused = cost.total() - used->total();
            per_user_.with(who.user, [unused](ratelimit::dual_bucket<>& b) { b.refund_tokens(unused); });
        }
        if (up.has_header("Retry-After")) res.set_header("Retry-After", up.get_header_value("Retry-After"));
        res.status = up.status;
        const std::string type = up.has_header("Content-Type") ? up.get_header_value("Content-Type") : "application/json";
        res.set_content(up.body, type.c_str());
    }

    /// A 429 with no retry time for a cost above one sub-window (a second) of
    /// the upstream's per-minute token limit is a refusal of the size, not of
    /// the moment (mock_upstream: "can never be admitted"): from then on such
    /// costs are answered 400 at once instead of drawing another provider 429.
    void remember_sub_window_refusal(const httplib::Headers& headers, const ratelimit::llm::request_cost& cost) {
        const ratelimit::quota_snapshot q = ratelimit::parse_rate_limit_headers(headers);
        if (q.retry_after || !q.tokens || !q.tokens->limit || *q.tokens->limit < 1) return;
        const std::int64_t sub_window = std::max<std::int64_t>(1, *q.tokens->limit / 60);
        if (cost.total() > sub_window) sub_window_tokens_.store(sub_window, std::memory_order_relaxed);
    }
    /// Is `total` above a sub-window the upstream was seen to refuse as too large?
    [[nodiscard]] bool above_sub_window(std::int64_t total) const {
        const std::int64_t limit = sub_window_tokens_.load(std::memory_order_relaxed);
        return limit > 0 && total > limit;
    }

    /// Do the upstream's rate-limit headers name a per-minute token limit below `cost`?
    static bool above_upstream_minute(const httplib::Headers& headers, const ratelimit::llm::request_cost& cost) {
        const ratelimit::quota_snapshot q = ratelimit::parse_rate_limit_headers(headers);
        const auto above = [](const std::optional<ratelimit::quota_state>& s, std::int64_t n) {
            return s && s->limit && *s->limit > 0 && n > *s->limit;
        };
        return above(q.tokens, cost.total()) || above(q.input_tokens, cost.input_tokens) ||
               above(q.output_tokens, cost.max_output_tokens);
    }

    void limits(const httplib::Request& req, httplib::Response& res) {
        const caller* who = authenticate(req);
        if (who == nullptr) return unauthorized(req, res);
        const auto [requests, tokens] = per_user_.with(who->user, [](ratelimit::dual_bucket<>& b) {
            return std::make_pair(b.available_requests(), b.available_tokens());
        });
        send_json(res, 200,
                  {{"object", "rate_limits"},
                   {"user", who->user},
                   {"limits", {{"requests_per_minute", who->limits->requests_per_minute},
                               {"tokens_per_minute", who->limits->tokens_per_minute}}},
                   {"remaining", {{"requests", std::max<std::int64_t>(0, requests)},
                                  {"tokens", std::max<std::int64_t>(0, tokens)}}}});
    }

    /// An upstream client, listed as in use (so stop() can cut its call); nullptr once stop() has cut them.
    std::unique_ptr<httplib::Client> borrow_client() {
        const std::lock_guard lock(clients_mutex_);
        if (cut_) return nullptr;
        std::unique_ptr<httplib::Client> c;
        if (!clients_.empty()) {
            c = std::move(clients_.back());
            clients_.pop_back();
        } else {
            c = std::make_unique<httplib::Client>(upstream_.origin);
            c->set_keep_alive(true);
            c->set_tcp_nodelay(true);
            c->set_connection_timeout(std::chrono::seconds(5));
            c->set_read_timeout(config_.upstream_timeout);
            c->set_write_timeout(std::chrono::seconds(30));
        }
        in_use_.push_back(c.get());
        return c;
    }
    /// Ends a borrow; a client whose call failed is dropped, not reused.
    void give_back_client(std::unique_ptr<httplib::Client> c, bool reusable) {
        const std::lock_guard lock(clients_mutex_);
        in_use_.erase(std::find(in_use_.begin(), in_use_.end(), c.get()));
        if (reusable && !cut_ && clients_.size() < static_cast<std::size_t>(config_.threads)) clients_.push_back(std::move(c));
    }

    config config_;
    upstream_url upstream_;
    user_table users_;
    key_table keys_;
    ratelimit::keyed<ratelimit::dual_bucket<>> per_user_;
    ratelimit::llm::gate<> gate_;
    metrics metrics_;
    fair_line line_;
    std::atomic<std::int64_t> sub_window_tokens_{0};  ///< 0, or the largest cost the upstream takes (seen refused above it)
    examples::http::connection_watch watch_;  ///< ends slow and excess connections (slowloris)
    http_server http_;
    std::thread thread_;
    int port_ = -1;
    std::mutex clients_mutex_;
    std::vector<std::unique_ptr<httplib::Client>> clients_;  ///< idle, for reuse
    std::vector<httplib::Client*> in_use_;                   ///< borrowed; stop() may cut their calls
    bool cut_ = false;                                       ///< stop() cut the upstream calls
};

}  // namespace gateway
