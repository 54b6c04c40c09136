#pragma once
// mock_upstream: an OpenAI-compatible mock LLM server that rate-limits the way
// providers do, so a client library can be measured against an independent referee.
//
// The limits are implemented here from scratch (a mutex and doubles), on purpose
// without the ratelimit library: the mock must not share a bug with what it judges.

#include <httplib.h>
#include <nlohmann/json.hpp>

#include "../common/http_guard.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <charconv>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <limits>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

namespace mock_upstream {

using steady_time = std::chrono::steady_clock::time_point;
using json = nlohmann::json;

// ---------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------

/// Which family of rate-limit headers the server sends.
enum class header_style { openai, anthropic, none };

/// Everything the server can be told; the defaults are the demo's values.
struct config {
    std::string host = "127.0.0.1";          ///< address to bind; nothing else is bound
    int port = 0;                            ///< 0: pick a free port
    std::int64_t requests_per_minute = 1200; ///< --rpm
    std::int64_t tokens_per_minute = 400000; ///< --tpm
    double burst_seconds = 1;                ///< bucket capacity in seconds of quota, (0, 60]
    std::int64_t min_latency_ms = 20;        ///< each answer (200, 500, drop) waits a uniform
    std::int64_t max_latency_ms = 80;        ///< number of ms in [min, max]
    header_style headers = header_style::openai;
    std::uint64_t seed = 1;                  ///< seeds latency, completion size, errors, drops
    double error_rate = 0;                   ///< fraction of requests answered 500, [0, 1]
    double drop_rate = 0;                    ///< fraction of connections closed without answer
    int threads = 64;                        ///< worker threads = connections served at once
};

namespace detail {
inline std::string number_text(double x) {  // 2.5, not 2.500000
    std::array<char, 32> buf{};
    std::snprintf(buf.data(), buf.size(), "%g", x);
    return buf.data();
}
}  // namespace detail

/// Throws std::invalid_argument naming the first bad field and its value.
inline void validate(const config& c) {
    auto fail = [](const std::string& what) { throw std::invalid_argument(what); };
    if (c.port < 0 || c.port > 65535) fail("--port must be in [0, 65535], got " + std::to_string(c.port));
    if (c.host.empty()) fail("--host must not be empty");
    if (c.requests_per_minute <= 0 || c.requests_per_minute > 1'000'000'000)
        fail("--rpm must be in [1, 1e9], got " + std::to_string(c.requests_per_minute));
    if (c.tokens_per_minute <= 0 || c.tokens_per_minute > 1'000'000'000'000)
        fail("--tpm must be in [1, 1e12], got " + std::to_string(c.tokens_per_minute));
    if (!(c.burst_seconds > 0 && c.burst_seconds <= 60))
        fail("--burst-seconds must be in (0, 60], got " + detail::number_text(c.burst_seconds));
    if (c.min_latency_ms < 0 || c.max_latency_ms < c.min_latency_ms || c.max_latency_ms > 600'000)
        fail("--latency-ms must be MIN:MAX with 0 <= MIN <= MAX <= 600000, got " +
             std::to_string(c.min_latency_ms) + ":" + std::to_string(c.max_latency_ms));
    if (!(c.error_rate >= 0 && c.error_rate <= 1))
        fail("--error-rate must be in [0, 1], got " + detail::number_text(c.error_rate));
    if (!(c.drop_rate >= 0 && c.drop_rate <= 1))
        fail("--drop-rate must be in [0, 1], got " + detail::number_text(c.drop_rate));
    if (c.threads < 1 || c.threads > 1024) fail("--threads must be in [1, 1024], got " + std::to_string(c.threads));
}

inline const char* usage() {
    return "usage: mock_upstream --port N [--host ADDR] [--rpm N] [--tpm N] [--burst-seconds S]\n"
           "                     [--latency-ms MIN:MAX] [--header-style openai|anthropic|none]\n"
           "                     [--seed N] [--error-rate P] [--drop-rate P] [--threads N]\n"
           "\n"
           "An OpenAI-compatible mock LLM server (POST /v1/chat/completions, GET /stats,\n"
           "GET /health) that enforces provider-style limits: requests and tokens are two\n"
           "buckets of capacity limit*burst_seconds/60, refilled at limit/60 per second.\n"
           "\n"
           "  --port N               port to listen on; 0 picks a free one (required)\n"
           "  --host ADDR            address to bind (default 127.0.0.1)\n"
           "  --rpm N                requests per minute (default 1200)\n"
           "  --tpm N                tokens per minute (default 400000)\n"
           "  --burst-seconds S      bucket capacity in seconds of quota, (0, 60] (default 1)\n"
           "  --latency-ms MIN:MAX   answer latency, uniform in [MIN, MAX] ms (default 20:80)\n"
           "  --header-style STYLE   openai (x-ratelimit-*), anthropic (anthropic-ratelimit-*)\n"
           "                         or none (only retry-after on 429) (default openai)\n"
           "  --seed N               seed for latency, completion size, errors, drops (default 1)\n"
           "  --error-rate P         fraction of requests answered 500 (default 0)\n"
           "  --drop-rate P          fraction of connections closed without an answer (default 0)\n"
           "  --threads N            connections served at once (default 64)\n"
           "  --help                 print this and exit\n"
           "\n"
           "Prints `listening on HOST:PORT` once bound; SIGINT or SIGTERM stop it.\n";
}

namespace detail {

template <class T>
T parse_integer(std::string_view flag, std::string_view text) {
    T value{};
    const auto* end = text.data() + text.size();
    const auto [ptr, ec] = std::from_chars(text.data(), end, value);
    if (text.empty() || ec != std::errc{} || ptr != end)
        throw std::invalid_argument(std::string(flag) + ": expected an integer, got '" + std::string(text) + "'");
    return value;
}

inline double parse_number(std::string_view flag, std::string_view text) {
    double value = 0;
    const auto* end = text.data() + text.size();
    const auto [ptr, ec] = std::from_chars(text.data(), end, value);
    if (text.empty() || ec != std::errc{} || ptr != end || !std::isfinite(value))
        throw std::invalid_argument(std::string(flag) + ": expected a number, got '" + std::string(text) + "'");
    return value;
}

}  // namespace detail

/// Parses the command line (without argv[0]); GNU style, `--name value` or
/// `--name=value`. Returns nullopt for --help. Throws std::invalid_argument with
/// a one-line message for an unknown flag, a missing or bad value, or no --port.
inline std::optional<config> parse_flags(const std::vector<std::string>& args) {
    config c;
    bool have_port = false;
    for (std::size_t i = 0; i < args.size(); ++i) {
        std::string flag = args[i];
        std::optional<std::string> inline_value;
        if (const auto eq = flag.find('='); flag.rfind("--", 0) == 0 && eq != std::string::npos) {
            inline_value = flag.substr(eq + 1);
            flag.resize(eq);
        }
        if (flag == "--help" || flag == "-h") return std::nullopt;
        auto value = [&]() -> std::string {
            if (inline_value) return *inline_value;
            if (i + 1 >= args.size()) throw std::invalid_argument(flag + ": missing value");
            return args[++i];
        };
        if (flag == "--port") {
            c.port = detail::parse_integer<int>(flag, value());
            have_port = true;
        } else if (flag == "--host") {
            c.host = value();
        } else if (flag == "--rpm") {
            c.requests_per_minute = detail::parse_integer<std::int64_t>(flag, value());
        } else if (flag == "--tpm") {
            c.tokens_per_minute = detail::parse_integer<std::int64_t>(flag, value());
        } else if (flag == "--burst-seconds") {
            c.burst_seconds = detail::parse_number(flag, value());
        } else if (flag == "--latency-ms") {
            const std::string v = value();
            const auto colon = v.find(':');
            const std::string_view all(v);
            c.min_latency_ms = detail::parse_integer<std::int64_t>(flag, all.substr(0, colon));
            c.max_latency_ms = colon == std::string::npos
                                   ? c.min_latency_ms
                                   : detail::parse_integer<std::int64_t>(flag, all.substr(colon + 1));
        } else if (flag == "--header-style") {
            const std::string v = value();
            if (v == "openai") c.headers = header_style::openai;
            else if (v == "anthropic") c.headers = header_style::anthropic;
            else if (v == "none") c.headers = header_style::none;
            else throw std::invalid_argument("--header-style: expected openai, anthropic or none, got '" + v + "'");
        } else if (flag == "--seed") {
            c.seed = detail::parse_integer<std::uint64_t>(flag, value());
        } else if (flag == "--error-rate") {
            c.error_rate = detail::parse_number(flag, value());
        } else if (flag == "--drop-rate") {
            c.drop_rate = detail::parse_number(flag, value());
        } else if (flag == "--threads") {
            c.threads = detail::parse_integer<int>(flag, value());
        } else {
            throw std::invalid_argument("unknown flag '" + args[i] + "' (see --help)");
        }
    }
    if (!have_port) throw std::invalid_argument("--port is required (--port 0 picks a free port)");
    validate(c);
    return c;
}

// ---------------------------------------------------------------------------
// Pure helpers: token estimate, duration and time formats, per-request draws
// ---------------------------------------------------------------------------

/// Prompt tokens of an OpenAI `messages` array: the sum over messages of
/// ceil(bytes(content) / 4) + 4. Content may be a string, an array of parts
/// (the bytes of each part's "text" count) or null (0 bytes). Deterministic.
inline std::int64_t estimate_prompt_tokens(const json& messages) {
    std::int64_t tokens = 0;
    for (const json& message : messages) {
        std::int64_t bytes = 0;
        if (const auto content = message.find("content"); content != message.end()) {
            if (content->is_string()) {
                bytes = static_cast<std::int64_t>(content->get_ref<const std::string&>().size());
            } else if (content->is_array()) {
                for (const json& part : *content)
                    if (part.is_object())
                        if (const auto text = part.find("text"); text != part.end() && text->is_string())
                            bytes += static_cast<std::int64_t>(text->get_ref<const std::string&>().size());
            }
        }
        tokens += (bytes + 3) / 4 + 4;
    }
    return tokens;
}

/// Go's time.Duration.String() for a whole number of milliseconds, the format
/// of OpenAI's x-ratelimit-reset-*: "0s", "20ms", "1s", "1.5s", "1m26.4s", "6m0s", "1h0m0s".
inline std::string go_duration(std::int64_t ms) {
    if (ms <= 0) return "0s";
    if (ms < 1000) return std::to_string(ms) + "ms";
    const std::int64_t hours = ms / 3'600'000, minutes = ms / 60'000 % 60, seconds = ms / 1000 % 60;
    std::string out;
    if (hours > 0) out += std::to_string(hours) + "h";
    if (hours > 0 || minutes > 0) out += std::to_string(minutes) + "m";
    out += std::to_string(seconds);
    if (const std::int64_t fraction = ms % 1000; fraction != 0) {
        std::string digits = std::to_string(1000 + fraction).substr(1);  // three digits
        while (digits.back() == '0') digits.pop_back();
        out += "." + digits;
    }
    return out + "s";
}

/// Whole milliseconds at or above `seconds` (never less: a client waiting that
/// long is never early).
inline std::int64_t ceil_ms(double seconds) {
    if (!(seconds > 0)) return 0;
    return static_cast<std::int64_t>(std::ceil(seconds * 1000 - 1e-9));
}

/// RFC 3339 UTC time with whole seconds, e.g. "2024-06-06T10:00:30Z".
inline std::string rfc3339(std::chrono::system_clock::time_point tp) {
    const std::time_t t = std::chrono::system_clock::to_time_t(
        std::chrono::time_point_cast<std::chrono::seconds>(tp));
    std::tm utc{};
    gmtime_r(&t, &utc);
    std::array<char, 32> buf{};
    std::strftime(buf.data(), buf.size(), "%Y-%m-%dT%H:%M:%SZ", &utc);
    return buf.data();
}

/// A uniform draw in [0, 1) fixed by (seed, request number, purpose): the k-th
/// request received gets the same latency, completion size, error and drop
/// decisions on every run with the same seed, whatever the thread timing.
inline double unit_draw(std::uint64_t seed, std::uint64_t request, std::uint64_t purpose) {
    auto mix = [](std::uint64_t x) {  // splitmix64
        x += 0x9e3779b97f4a7c15ULL;
        x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
        x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
        return x ^ (x >> 31);
    };
    const std::uint64_t bits = mix(mix(seed ^ mix(purpose)) + request);
    return static_cast<double>(bits >> 11) * 0x1.0p-53;
}

// ---------------------------------------------------------------------------
// The referee: provider-style request and token buckets
// ---------------------------------------------------------------------------

/// One provider limit of `limit` units per minute, enforced as a bucket.
///
/// Model: the bucket holds `level` units, at most capacity = max(1, limit ·
/// burst_seconds / 60); it starts full and refills continuously at limit / 60
/// units per second (a minute's quota "quantized" into sub-windows of
/// burst_seconds, as OpenAI describes). Taking n units needs level >= n.
///
/// Guarantee: in any interval of length T at most capacity + limit·T/60 units
/// are taken (plus whatever `give` returned). Not thread-safe: `quota` locks.
class quota_bucket {
public:
    quota_bucket(std::int64_t limit_per_minute, double burst_seconds, steady_time now)
        : limit_(limit_per_minute),
          per_second_(static_cast<double>(limit_per_minute) / 60.0),
          capacity_(std::max(1.0, static_cast<double>(limit_per_minute) * burst_seconds / 60.0)),
          level_(capacity_), last_(now) {}

    /// Adds what accrued since the last refill, capped at capacity; a `now`
    /// earlier than the last refill adds nothing.
    void refill(steady_time now) {
        if (now <= last_) return;
        const double elapsed = std::chrono::duration<double>(now - last_).count();
        level_ = std::min(capacity_, level_ + elapsed * per_second_);
        last_ = now;
    }
    /// Seconds until n units are in the bucket: 0 when they are now, infinity above capacity.
    double seconds_until(double n) const {
        if (n <= level_) return 0;
        if (n > capacity_) return std::numeric_limits<double>::infinity();
        return (n - level_) / per_second_;
    }
    double seconds_until_full() const { return (capacity_ - level_) / per_second_; }
    void take(double n) { level_ -= n; }
    void give(double n) { level_ = std::min(capacity_, level_ + n); }

    std::int64_t limit_per_minute() const { return limit_; }
    double capacity() const { return capacity_; }
    double level() const { return level_; }
    /// What the headers report as remaining: floor(level), never negative.
    std::int64_t remaining() const { return std::max<std::int64_t>(0, static_cast<std::int64_t>(std::floor(level_ + 1e-9))); }

private:
    std::int64_t limit_;
    double per_second_;
    double capacity_;
    double level_;
    steady_time last_;
};

/// A bucket as the headers show it.
struct bucket_view {
    std::int64_t limit_per_minute = 0;  ///< x-ratelimit-limit-*: the per-minute number
    std::int64_t remaining = 0;         ///< x-ratelimit-remaining-*: floor(level)
    double capacity = 0;
    double seconds_until_full = 0;      ///< x-ratelimit-reset-*
};
struct quota_view {
    bucket_view requests, tokens;
};

enum class limit_kind { none, requests, tokens };

/// The answer to one admission attempt.
struct decision {
    bool admitted = false;
    limit_kind limited_by = limit_kind::none;
    bool too_large = false;           ///< cost above the token capacity: never admitted
    double retry_after_seconds = 0;   ///< when the refused request would fit (0 if too_large)
    std::int64_t cost = 0;            ///< tokens charged at admission: prompt + max_tokens
    quota_view after;                 ///< the buckets after this decision
};

/// The request bucket and the token bucket of one account, as a provider
/// enforces them.
///
/// Model: a request costs 1 request and prompt_tokens + max_tokens tokens at
/// admission; it is admitted only if both buckets hold that much now (all or
/// nothing). When it completes, the tokens it did not use (max_tokens −
/// completion_tokens) are given back, capped at capacity.
/// A refused request changes nothing; it is told the time until both buckets
/// would hold its cost (`retry_after_seconds`) and the limit that needs the
/// longer wait. A cost above the token capacity is refused as too large.
///
/// Thread-safe: one mutex, held for a few arithmetic operations, never while
/// sleeping. Time is passed in, so tests control it exactly.
class quota {
public:
    quota(std::int64_t requests_per_minute, std::int64_t tokens_per_minute, double burst_seconds,
          steady_time now = std::chrono::steady_clock::now())
        : requests_(requests_per_minute, burst_seconds, now), tokens_(tokens_per_minute, burst_seconds, now) {}

    decision admit(std::int64_t prompt_tokens, std::int64_t max_tokens, steady_time now) {
        const std::lock_guard lock(mutex_);
        refill(now);
        decision d;
        d.cost = prompt_tokens + max_tokens;
        const double cost = static_cast<double>(d.cost);
        if (cost > tokens_.capacity()) {
            d.limited_by = limit_kind::tokens;
            d.too_large = true;
        } else {
            const double request_wait = requests_.seconds_until(1);
            const double token_wait = tokens_.seconds_until(cost);
            if (request_wait == 0 && token_wait == 0) {
                requests_.take(1);
                tokens_.take(cost);
                d.admitted = true;
            } else {
                d.limited_by = request_wait >= token_wait ? limit_kind::requests : limit_kind::tokens;
                d.retry_after_seconds = std::max(request_wait, token_wait);
            }
        }
        d.after = view_locked();
        return d;
    }

    /// Gives back `unused_tokens` (capped at capacity) when a request completes.
    quota_view settle(std::int64_t unused_tokens, steady_time now) {
        const std::lock_guard lock(mutex_);
        refill(now);
        if (unused_tokens > 0) tokens_.give(static_cast<double>(unused_tokens));
        return view_locked();
    }

    quota_view view(steady_time now) {
        const std::lock_guard lock(mutex_);
        refill(now);
        return view_locked();
    }

private:
    void refill(steady_time now) {
        requests_.refill(now);
        tokens_.refill(now);
    }
    static bucket_view view_of(const quota_bucket& b) {
        return {b.limit_per_minute(), b.remaining(), b.capacity(), b.seconds_until_full()};
    }
    quota_view view_locked() const { return {view_of(requests_), view_of(tokens_)}; }

    std::mutex mutex_;
    quota_bucket requests_;
    quota_bucket tokens_;
};

// ---------------------------------------------------------------------------
// Statistics
// ---------------------------------------------------------------------------

/// Totals since start.
struct counters {
    std::int64_t requests_total = 0;    ///< POST /v1/chat/completions received
    std::int64_t admitted = 0;          ///< passed both buckets
    std::int64_t throttled_429 = 0;
    std::int64_t bad_requests_400 = 0;
    std::int64_t errors_500 = 0;        ///< --error-rate answers
    std::int64_t dropped = 0;           ///< --drop-rate connections closed without answer
    std::int64_t tokens_admitted = 0;   ///< sum of prompt + max_tokens at admission
    std::int64_t tokens_used = 0;       ///< sum of prompt + completion of completed requests
    std::int64_t in_flight = 0;         ///< admitted, not yet answered
};

/// One second since start: admitted requests, their net tokens (prompt +
/// max_tokens at admission, minus what was given back on completion), and 429s.
struct second_stats {
    std::int64_t t = -1;
    std::int64_t requests = 0;
    std::int64_t tokens = 0;
    std::int64_t throttled = 0;
};

// ---------------------------------------------------------------------------
// The server
// ---------------------------------------------------------------------------

/// The mock provider: an httplib server on its own thread, `threads` workers.
///
/// Routes: POST /v1/chat/completions (OpenAI chat body), GET /stats[?seconds=N]
/// (JSON), GET /health ("ok"); anything else 404 with an OpenAI-shaped error.
/// Order of decisions for a chat request: drop (per --drop-rate, after the
/// latency), 400 for a malformed body, 500 (per --error-rate, after the
/// latency), 429 from the quota (answered at once), else 200 after the latency,
/// when the unused tokens are given back and the headers are computed. Dropped,
/// 400 and 500 requests are not charged. Every chat answer carries the
/// rate-limit headers of the configured style.
///
/// start() binds and returns the port (connections are queued from then on);
/// stop() (or the destructor) wakes handlers sleeping out a latency, lets them
/// answer, closes idle keep-alive connections and joins every thread. Not
/// restartable. The server's threads block SIGPIPE (a write to a closed
/// connection returns EPIPE instead); clients in the same process that use
/// --drop-rate should ignore SIGPIPE themselves.
class server {
public:
    /// Throws std::invalid_argument for a bad config (see validate).
    explicit server(config c)
        : config_(checked(std::move(c))),
          quota_(config_.requests_per_minute, config_.tokens_per_minute, config_.burst_seconds) {
        started_steady_ = std::chrono::steady_clock::now();
        started_system_ = std::chrono::system_clock::now();
    }
    server(const server&) = delete;
    server& operator=(const server&) = delete;
    ~server() { stop(); }

    /// Binds (port 0: a free port), starts serving on a background thread and
    /// returns the port. Throws std::runtime_error if the address cannot be bound.
    int start() {
        {
            const std::lock_guard lock(sleep_mutex_);
            if (thread_.joinable() || stopped_) throw std::logic_error("mock_upstream::server::start: already started");
        }
        setup_routes();
        const int port = config_.port == 0 ? http_.bind_to_any_port(config_.host)
                                           : (http_.bind_to_port(config_.host, config_.port) ? config_.port : -1);
        if (port <= 0) throw std::runtime_error("cannot bind " + config_.host + ":" + std::to_string(config_.port));
        http_.widen_backlog();
        port_ = port;
        thread_ = std::thread([this] {
            sigset_t pipe;  // inherited by httplib's worker threads, created in listen
            sigemptyset(&pipe);
            sigaddset(&pipe, SIGPIPE);
            pthread_sigmask(SIG_BLOCK, &pipe, nullptr);
            http_.listen_after_bind();
        });
        while (!http_.is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
        return port;
    }

    /// Stops serving and joins every thread; safe to call twice.
    void stop() {
        {
            const std::lock_guard lock(sleep_mutex_);
            stopped_ = true;
        }
        sleep_cv_.notify_all();
        if (thread_.joinable()) {
            http_.stop();
            // Idle keep-alive connections would hold their worker for up to the
            // keep-alive timeout: end their reading side so they close now (an
            // answer being written still goes out).
            examples::http::for_each_connection(port_, [](int fd, std::string_view, int) {
                ::shutdown(fd, SHUT_RD);
                return false;
            });
            thread_.join();
        }
    }

    int port() const { return port_; }
    const config& settings() const { return config_; }

    counters totals() const {
        const std::lock_guard lock(stats_mutex_);
        return totals_;
    }

    /// The /stats document; `window_seconds` (1..600) bounds per_second.
    json stats_json(std::int64_t window_seconds = history) {
        window_seconds = std::clamp<std::int64_t>(window_seconds, 1, history);
        const std::int64_t now_t = second_now();
        const quota_view q = quota_.view(std::chrono::steady_clock::now());
        const std::lock_guard lock(stats_mutex_);
        json per_second = json::array();
        for (std::int64_t t = std::max<std::int64_t>(0, now_t - window_seconds + 1); t <= now_t; ++t) {
            const second_stats& s = seconds_[static_cast<std::size_t>(t % history)];
            const bool live = s.t == t;
            per_second.push_back({{"t", t}, {"requests", live ? s.requests : 0},
                                  {"tokens", live ? s.tokens : 0}, {"throttled", live ? s.throttled : 0}});
        }
        return {{"requests_total", totals_.requests_total},
                {"admitted", totals_.admitted},
                {"throttled_429", totals_.throttled_429},
                {"bad_requests_400", totals_.bad_requests_400},
                {"errors_500", totals_.errors_500},
                {"dropped", totals_.dropped},
                {"tokens_admitted", totals_.tokens_admitted},
                {"tokens_used", totals_.tokens_used},
                {"in_flight", totals_.in_flight},
                {"started_at", rfc3339(started_system_)},
                {"uptime_seconds", std::chrono::duration<double>(std::chrono::steady_clock::now() - started_steady_).count()},
                {"limits", {{"requests_per_minute", config_.requests_per_minute},
                            {"tokens_per_minute", config_.tokens_per_minute},
                            {"burst_seconds", config_.burst_seconds},
                            {"request_capacity", q.requests.capacity},
                            {"token_capacity", q.tokens.capacity},
                            {"remaining_requests", q.requests.remaining},
                            {"remaining_tokens", q.tokens.remaining}}},
                {"per_second", std::move(per_second)}};
    }

    static constexpr std::int64_t history = 600;  ///< seconds of per_second kept
    static constexpr std::int64_t default_max_tokens = 256;
    static constexpr std::uint64_t max_body_bytes = 16u << 20;  ///< larger request bodies are answered 413 unread

private:
    /// httplib::Server with access to its listening socket, to raise the
    /// listen backlog (Debian's build fixes it at 5, too few for bursts).
    struct http_server : httplib::Server {
        void widen_backlog() { ::listen(svr_sock_, SOMAXCONN); }
    };

    static config checked(config c) {
        validate(c);
        return c;
    }

    enum purpose : std::uint64_t { latency_draw = 1, completion_draw, error_draw, drop_draw };

    static void send_json(httplib::Response& res, int status, const json& body) {
        res.status = status;
        res.set_content(body.dump(), "application/json");
    }
    static json error_body(std::string message, const char* type, json code, json param = nullptr) {
        return {{"error", {{"message", std::move(message)}, {"type", type}, {"param", std::move(param)}, {"code", std::move(code)}}}};
    }

    void setup_routes() {
        http_.set_tcp_nodelay(true);  // small answers go out at once, not after a delayed ACK
        const int threads = config_.threads;
        http_.new_task_queue = [threads] { return new httplib::ThreadPool(static_cast<std::size_t>(threads)); };
        http_.set_keep_alive_timeout(5);
        http_.set_payload_max_length(max_body_bytes);
        // Before any body is read: an ambiguous length is refused (RFC 9112
        // §6.3), and a body sent to a route that takes none is not read; either
        // way the connection ends after the answer.
        http_.set_pre_routing_handler([](const httplib::Request& req, httplib::Response& res) {
            if (const auto problem = examples::http::framing_error(req)) {
                send_json(res, 400, error_body(*problem, "invalid_request_error", "invalid_request"));
            } else if (const bool has_body = req.has_header("Transfer-Encoding") ||
                                             examples::http::content_length(req).value_or(0) > 0;
                       has_body && req.path != "/v1/chat/completions") {  // 404 as before, but unread
                send_json(res, 404, error_body("Unknown path " + req.method + " " + req.path, "invalid_request_error", "unknown_url"));
            } else {
                return httplib::Server::HandlerResponse::Unhandled;
            }
            examples::http::close_after_answer(res);
            return httplib::Server::HandlerResponse::Handled;
        });
        http_.set_logger([](const httplib::Request& req, const httplib::Response&) {
            examples::http::end_marked_connection(req, std::chrono::seconds(1));
        });
        http_.Post("/v1/chat/completions", [this](const httplib::Request& req, httplib::Response& res,
                                                  const httplib::ContentReader& reader) {
            // Read up to max_body_bytes, chunked or not, in at most 30 s; a body
            // refused unread or cut short ends its connection after the answer.
            if (examples::http::content_length(req).value_or(0) > max_body_bytes) {
                send_json(res, 413, error_body("The request body exceeds " + std::to_string(max_body_bytes) + " bytes.",
                                               "invalid_request_error", "request_too_large"));
                return examples::http::close_after_answer(res);
            }
            const examples::http::body body =
                examples::http::read_body(reader, max_body_bytes, std::chrono::steady_clock::now() + std::chrono::seconds(30));
            if (body.status == examples::http::body_status::complete) return chat(req, body.bytes, res);
            const bool large = body.status == examples::http::body_status::too_large;
            send_json(res, large ? 413 : 400,
                      error_body(large ? "The request body exceeds " + std::to_string(max_body_bytes) + " bytes."
                                       : std::string("The request body could not be read in time or is malformed."),
                                 "invalid_request_error", large ? "request_too_large" : "invalid_body"));
            examples::http::close_after_answer(res);
        });
        http_.Get("/stats", [this](const httplib::Request& req, httplib::Response& res) {
            std::int64_t window = history;
            if (req.has_param("seconds")) {
                try {
                    window = detail::parse_integer<std::int64_t>("seconds", req.get_param_value("seconds"));
                } catch (const std::invalid_argument& e) {
                    return send_json(res, 400, error_body(e.what(), "invalid_request_error", "invalid_value", "seconds"));
                }
            }
            send_json(res, 200, stats_json(window));
        });
        http_.Get("/health", [](const httplib::Request&, httplib::Response& res) { res.set_content("ok", "text/plain"); });
        http_.set_error_handler(httplib::Server::HandlerWithResponse([](const httplib::Request& req, httplib::Response& res) {
            if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
            const std::string what = res.status == 404 ? "Unknown path " + req.method + " " + req.path
                                                       : "HTTP status " + std::to_string(res.status);
            send_json(res, res.status, error_body(what, "invalid_request_error", res.status == 404 ? json("unknown_url") : json(nullptr)));
            return httplib::Server::HandlerResponse::Handled;
        }));
        http_.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
            std::string what = "internal error";
            try {
                if (ep) std::rethrow_exception(ep);
            } catch (const std::exception& e) {
                what = e.what();
            } catch (...) {
            }
            send_json(res, 500, error_body(what, "server_error", "internal_error"));
        });
    }

    // The chat completion endpoint: see the class comment for the order of decisions.
    void chat(const httplib::Request& req, const std::string& request_body, httplib::Response& res) {
        const std::uint64_t number = next_request_.fetch_add(1);
        count([](counters& c) { ++c.requests_total; });
        res.set_header("x-request-id", "req_mock_" + std::to_string(number));
        const auto latency = std::chrono::milliseconds(
            config_.min_latency_ms +
            static_cast<std::int64_t>(unit_draw(config_.seed, number, latency_draw) *
                                      static_cast<double>(config_.max_latency_ms - config_.min_latency_ms + 1)));

        if (config_.drop_rate > 0 && unit_draw(config_.seed, number, drop_draw) < config_.drop_rate) {
            sleep_for(latency);
            if (const int fd = examples::http::socket_of(req); fd >= 0) {
                count([](counters& c) { ++c.dropped; });  // before the client can see it
                ::shutdown(fd, SHUT_RDWR);  // httplib's write of the answer then fails; it closes the socket
                return;
            }
            // Could not find our socket (should not happen on Linux): say so instead.
            count([](counters& c) { ++c.errors_500; });
            return send_json(res, 500, error_body("mock_upstream: could not drop the connection", "server_error", "drop_failed"));
        }

        std::string model = "mock-1";
        std::int64_t prompt_tokens = 0, max_tokens = default_max_tokens;
        if (auto problem = parse_chat(request_body, model, prompt_tokens, max_tokens)) {
            count([](counters& c) { ++c.bad_requests_400; });
            add_quota_headers(res, quota_.view(std::chrono::steady_clock::now()));
            return send_json(res, 400, *problem);
        }

        if (config_.error_rate > 0 && unit_draw(config_.seed, number, error_draw) < config_.error_rate) {
            sleep_for(latency);
            count([](counters& c) { ++c.errors_500; });
            add_quota_headers(res, quota_.view(std::chrono::steady_clock::now()));
            return send_json(res, 500, error_body("The server had an error while processing your request (mock --error-rate).",
                                                  "server_error", "internal_error"));
        }

        const decision d = quota_.admit(prompt_tokens, max_tokens, std::chrono::steady_clock::now());
        if (!d.admitted) {
            count([&](counters& c) { ++c.throttled_429; }, [](second_stats& s) { ++s.throttled; });
            add_quota_headers(res, d.after);
            if (!d.too_large) add_retry_headers(res, d.retry_after_seconds);
            return send_json(res, 429, throttle_body(d, model));
        }
        const std::int64_t admitted_at = second_now();
        count([&](counters& c) { ++c.admitted; ++c.in_flight; c.tokens_admitted += d.cost; },
              [&](second_stats& s) { ++s.requests; s.tokens += d.cost; });

        sleep_for(latency);  // no lock held

        const std::int64_t completion_tokens =
            1 + static_cast<std::int64_t>(unit_draw(config_.seed, number, completion_draw) * static_cast<double>(max_tokens));
        const std::int64_t unused = max_tokens - completion_tokens;
        const quota_view after = quota_.settle(unused, std::chrono::steady_clock::now());
        {
            const std::lock_guard lock(stats_mutex_);
            --totals_.in_flight;
            totals_.tokens_used += prompt_tokens + completion_tokens;
            second_stats& s = seconds_[static_cast<std::size_t>(admitted_at % history)];
            if (s.t == admitted_at) s.tokens -= unused;
        }
        add_quota_headers(res, after);
        send_json(res, 200, completion_body(number, model, prompt_tokens, completion_tokens, max_tokens));
    }

    /// Validates an OpenAI chat body; returns the 400 body when it is bad.
    static std::optional<json> parse_chat(const std::string& body, std::string& model, std::int64_t& prompt_tokens,
                                          std::int64_t& max_tokens) {
        const json request = json::parse(body, nullptr, false);
        if (request.is_discarded())
            return error_body("We could not parse the JSON body of your request. (HINT: This likely means you aren't using "
                              "your HTTP library correctly. The OpenAI API expects a JSON payload.)",
                              "invalid_request_error", "invalid_json");
        if (!request.is_object())
            return error_body("The request body must be a JSON object.", "invalid_request_error", "invalid_type");
        if (const auto m = request.find("model"); m != request.end()) {
            if (!m->is_string()) return error_body("Invalid type for 'model': expected a string.", "invalid_request_error", "invalid_type", "model");
            model = m->get<std::string>();
        }
        const auto messages = request.find("messages");
        if (messages == request.end())
            return error_body("Missing required parameter: 'messages'.", "invalid_request_error", "missing_required_parameter", "messages");
        if (!messages->is_array())
            return error_body("Invalid type for 'messages': expected an array.", "invalid_request_error", "invalid_type", "messages");
        if (messages->empty())
            return error_body("Invalid 'messages': empty array. Expected an array with minimum length 1.", "invalid_request_error", "empty_array", "messages");
        for (std::size_t i = 0; i < messages->size(); ++i) {
            const json& m = (*messages)[i];
            const std::string at = "messages[" + std::to_string(i) + "]";
            if (!m.is_object()) return error_body("Invalid type for '" + at + "': expected an object.", "invalid_request_error", "invalid_type", at);
            const auto role = m.find("role");
            if (role == m.end() || !role->is_string())
                return error_body("Missing required parameter: '" + at + ".role'.", "invalid_request_error", "missing_required_parameter", at + ".role");
            const auto content = m.find("content");
            if (content != m.end() && !content->is_string() && !content->is_array() && !content->is_null())
                return error_body("Invalid type for '" + at + ".content': expected a string or an array.", "invalid_request_error", "invalid_type", at + ".content");
        }
        for (const char* name : {"max_completion_tokens", "max_tokens"}) {
            const auto v = request.find(name);
            if (v == request.end() || v->is_null()) continue;
            if (!v->is_number_integer() || v->get<std::int64_t>() < 1 || v->get<std::int64_t>() > 1'000'000'000)
                return error_body(std::string("Invalid '") + name + "': expected an integer in [1, 1000000000].", "invalid_request_error", "invalid_value", name);
            max_tokens = v->get<std::int64_t>();
            break;  // max_completion_tokens wins over the deprecated max_tokens
        }
        prompt_tokens = estimate_prompt_tokens(*messages);
        return std::nullopt;
    }

    static json completion_body(std::uint64_t number, const std::string& model, std::int64_t prompt_tokens,
                                std::int64_t completion_tokens, std::int64_t max_tokens) {
        std::string text;  // "tok " per token: ceil(bytes / 4) of it is completion_tokens again
        text.reserve(static_cast<std::size_t>(completion_tokens) * 4);
        for (std::int64_t i = 0; i < completion_tokens; ++i) text += i == 0 ? "tok" : " tok";
        const auto created = std::chrono::duration_cast<std::chrono::seconds>(
                                 std::chrono::system_clock::now().time_since_epoch()).count();
        return {{"id", "chatcmpl-mock-" + std::to_string(number)},
                {"object", "chat.completion"},
                {"created", created},
                {"model", model},
                {"choices", json::array({{{"index", 0},
                                          {"message", {{"role", "assistant"}, {"content", std::move(text)}}},
                                          {"logprobs", nullptr},
                                          {"finish_reason", completion_tokens == max_tokens ? "length" : "stop"}}})},
                {"usage", {{"prompt_tokens", prompt_tokens},
                           {"completion_tokens", completion_tokens},
                           {"total_tokens", prompt_tokens + completion_tokens}}}};
    }

    /// OpenAI's wording and shape for a rate-limit error: type "requests" or "tokens".
    json throttle_body(const decision& d, const std::string& model) const {
        const bool tokens = d.limited_by == limit_kind::tokens;
        const bucket_view& b = tokens ? d.after.tokens : d.after.requests;
        const std::string what = tokens ? "tokens per min (TPM)" : "requests per min (RPM)";
        const std::int64_t requested = tokens ? d.cost : 1;
        std::string message;
        if (d.too_large) {
            message = "Request too large for " + model + " on " + what + ": Limit " + std::to_string(b.limit_per_minute) +
                      ", bucket capacity " + std::to_string(static_cast<std::int64_t>(b.capacity)) + ", Requested " +
                      std::to_string(requested) + " (prompt + max_tokens). Lower max_tokens or the prompt; this request "
                      "can never be admitted.";
        } else {
            message = "Rate limit reached for " + model + " on " + what + ": Limit " + std::to_string(b.limit_per_minute) +
                      ", Remaining " + std::to_string(b.remaining) + ", Requested " + std::to_string(requested) +
                      ". Please try again in " + go_duration(ceil_ms(d.retry_after_seconds)) + ".";
        }
        return error_body(std::move(message), tokens ? "tokens" : "requests", "rate_limit_exceeded");
    }

    void add_quota_headers(httplib::Response& res, const quota_view& q) const {
        switch (config_.headers) {
        case header_style::openai:
            res.set_header("x-ratelimit-limit-requests", std::to_string(q.requests.limit_per_minute));
            res.set_header("x-ratelimit-limit-tokens", std::to_string(q.tokens.limit_per_minute));
            res.set_header("x-ratelimit-remaining-requests", std::to_string(q.requests.remaining));
            res.set_header("x-ratelimit-remaining-tokens", std::to_string(q.tokens.remaining));
            res.set_header("x-ratelimit-reset-requests", go_duration(ceil_ms(q.requests.seconds_until_full)));
            res.set_header("x-ratelimit-reset-tokens", go_duration(ceil_ms(q.tokens.seconds_until_full)));
            break;
        case header_style::anthropic: {
            const auto now = std::chrono::system_clock::now();
            auto reset = [&](double seconds) {  // rounded up to the whole second after `now + seconds`
                const auto at = now + std::chrono::milliseconds(ceil_ms(seconds));
                const auto whole = std::chrono::ceil<std::chrono::seconds>(at);
                return rfc3339(std::chrono::system_clock::time_point(whole));
            };
            res.set_header("anthropic-ratelimit-requests-limit", std::to_string(q.requests.limit_per_minute));
            res.set_header("anthropic-ratelimit-requests-remaining", std::to_string(q.requests.remaining));
            res.set_header("anthropic-ratelimit-requests-reset", reset(q.requests.seconds_until_full));
            res.set_header("anthropic-ratelimit-tokens-limit", std::to_string(q.tokens.limit_per_minute));
            res.set_header("anthropic-ratelimit-tokens-remaining", std::to_string(q.tokens.remaining));
            res.set_header("anthropic-ratelimit-tokens-reset", reset(q.tokens.seconds_until_full));
            break;
        }
        case header_style::none:
            break;
        }
    }

    /// retry-after (whole seconds, rounded up) always; retry-after-ms too in the openai style.
    void add_retry_headers(httplib::Response& res, double seconds) const {
        const std::int64_t ms = std::max<std::int64_t>(1, ceil_ms(seconds));
        res.set_header("retry-after", std::to_string((ms + 999) / 1000));
        if (config_.headers == header_style::openai) res.set_header("retry-after-ms", std::to_string(ms));
    }

    /// Sleeps `d` on a condition variable that stop() wakes; holds no lock while waiting.
    void sleep_for(std::chrono::milliseconds d) {
        if (d <= std::chrono::milliseconds::zero()) return;
        std::unique_lock lock(sleep_mutex_);
        sleep_cv_.wait_for(lock, d, [this] { return stopped_; });
    }

    std::int64_t second_now() const {
        return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now() - started_steady_).count();
    }

    template <class Totals>
    void count(Totals totals) {
        const std::lock_guard lock(stats_mutex_);
        totals(totals_);
    }
    template <class Totals, class Second>
    void count(Totals totals, Second second) {
        const std::int64_t t = second_now();
        const std::lock_guard lock(stats_mutex_);
        totals(totals_);
        second_stats& s = seconds_[static_cast<std::size_t>(t % history)];
        if (s.t != t) s = second_stats{t, 0, 0, 0};
        second(s);
    }

    config config_;
    quota quota_;
    http_server http_;
    std::thread thread_;
    int port_ = -1;
    std::atomic<std::uint64_t> next_request_{0};

    std::mutex sleep_mutex_;
    std::condition_variable sleep_cv_;
    bool stopped_ = false;

    mutable std::mutex stats_mutex_;
    counters totals_;
    std::array<second_stats, history> seconds_{};
    steady_time started_steady_;
    std::chrono::system_clock::time_point started_system_;
};

}  // namespace mock_upstream
