#pragma once
// llm_batch: sends an OpenAI Batch-format JSONL file of LLM requests through a
// ratelimit::llm::gate as fast as the quota allows, and writes one output line
// per input line. The parts live here so the tests can drive them directly;
// main.cpp only parses flags and calls run().
//
// Model: `concurrency` workers share one input reader, one gate and one
// output file. A worker takes the next input line, charges its estimated
// cost to the gate (one request plus prompt + max output tokens), sends it,
// settles the gate with the response's status, headers and usage, retries
// what may succeed later, and appends exactly one output line.
//
// Guarantees:
// - Every non-blank input line gets exactly one output line, malformed ones
//   included (error records), once the run completes.
// - Each output line is written whole by one write(2) of the complete line
//   and its '\n', in completion order (not input order, as with OpenAI's
//   Batch API); a killed run leaves a prefix of whole lines, at most a torn
//   last line, which --resume cuts off.
// - Completion is tracked by input line: each record carries "line": N, so
//   repeated custom_ids never hide a line from --resume. With --resume no
//   line whose record is a success or a final error is sent again; a line
//   whose record is a transient error (transient_error()) is, and with
//   --retry-failed so is every failed line: their old records are removed
//   from the output first (rewritten beside it and renamed over it), so the
//   output still holds one record per line.
// - What --resume sends twice: at most the requests in flight when the
//   earlier run ended (sent, record not yet written: at most --concurrency
//   lines per kill). Each request carries an Idempotency-Key header that is
//   the same on every resume of the same input (input_identity + line +
//   custom_id), and its custom_id as X-Request-ID, so a provider that
//   deduplicates can; the journal beside the output (OUTPUT.journal, see
//   journal.hpp) records each line's first send, and the summary counts the
//   lines sent again this way as `resent`.
// - --resume starts the gate's buckets empty (the limits learned by the
//   earlier run come from the journal), since the provider's quota is still
//   drawn down by the run that ended: the first requests wait for the quota
//   to refill instead of going as a full burst.
// - Learned limits (no --rpm/--tpm): until the first answer, one request is
//   in flight (probe_turn), so the first wave cannot overrun a small provider
//   bucket before the headers have named the limits.
// - Every attempt passes the gate, so the client never sends above the
//   configured or learned limits (at the gate's headroom). With use_gate
//   off (--no-gate, for contrast) requests go at once and only retries wait.

#include "journal.hpp"

#include <httplib.h>
#include <nlohmann/json.hpp>
#include <ratelimit/headers.hpp>
#include <ratelimit/limiter.hpp>
#include <ratelimit/llm/estimate.hpp>
#include <ratelimit/llm/gate.hpp>

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <limits>
#include <mutex>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

namespace llm_batch {

using json = nlohmann::ordered_json;  // keeps key order: records read as documented, bodies as sent
using steady = std::chrono::steady_clock;
using gate_type = ratelimit::llm::gate<steady>;

// ---------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------

/// Everything a run needs. The first block mirrors the flags; the second has
/// fixed defaults in the program and exists so tests can shorten them.
struct options {
    std::string input_path;
    std::string output_path;
    std::string base_url;                  ///< server root, e.g. http://127.0.0.1:8080
    std::string api_key;                   ///< the key itself (empty: no Authorization header)
    int concurrency = 16;                  ///< workers = requests in flight at most
    std::int64_t requests_per_minute = 0;  ///< 0: learned from the response headers
    std::int64_t tokens_per_minute = 0;    ///< 0: learned from the response headers
    int max_attempts = 5;                  ///< attempts per request, the first included
    bool resume = false;
    bool retry_failed = false;             ///< --retry-failed: resume, sending every failed line again
    bool progress = true;                  ///< progress line and final summary line on stderr
    std::string summary_json_path;         ///< empty: none

    bool use_gate = true;                  ///< false (--no-gate): send at once, only retries slow down

    std::int64_t default_max_tokens = 256;  ///< output tokens reserved when the body names none
    std::chrono::milliseconds connect_timeout{10'000};
    std::chrono::milliseconds read_timeout{120'000};
    std::chrono::milliseconds backoff_initial{500};  ///< first retry delay of a 5xx or network error
    std::chrono::milliseconds backoff_max{30'000};   ///< cap of the exponential backoff
    std::chrono::milliseconds progress_every_tty{250};
    std::chrono::milliseconds progress_every_plain{5'000};
    std::int64_t max_lines = 0;               ///< stop taking lines after this many (0: all)
    const std::atomic<bool>* stop = nullptr;  ///< when set: send nothing new, finish what is in flight
    std::FILE* diagnostics = stderr;          ///< warnings and progress (nullptr: silent)
};

/// A command line that cannot run: a missing input, an output that would be
/// overwritten, a bad URL. The program exits 2 with what() on one line.
struct setup_error : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// ---------------------------------------------------------------------------
// Input lines
// ---------------------------------------------------------------------------

/// Why a line gets an error record instead of a request.
struct record_error {
    std::string code;
    std::string message;
};

/// One input line, parsed. `error` set: malformed, answered with an error record.
struct input_line {
    std::int64_t line = 0;   ///< 1-based line number in the input file
    std::string custom_id;   ///< "line-N" when the line has none
    std::string url;         ///< the path appended to the base URL
    json body;
    std::optional<record_error> error;
};

/// Deepest nesting of arrays and objects in a JSON text (strings skipped);
/// cheap, so a hostile document is refused before a recursive dump sees it.
[[nodiscard]] inline std::size_t json_depth(std::string_view text) noexcept {
    std::size_t depth = 0, deepest = 0;
    bool in_string = false, escaped = false;
    for (const char c : text) {
        if (in_string) {
            if (escaped) escaped = false;
            else if (c == '\\') escaped = true;
            else if (c == '"') in_string = false;
        } else if (c == '"') {
            in_string = true;
        } else if (c == '[' || c == '{') {
            deepest = std::max(deepest, ++depth);
        } else if ((c == ']' || c == '}') && depth > 0) {
            --depth;
        }
    }
    return deepest;
}
inline constexpr std::size_t max_json_depth = 256;

/// True for a line of spaces, tabs and '\r' only: skipped, not a request.
[[nodiscard]] inline bool is_blank(std::string_view text) noexcept {
    return text.find_first_not_of(" \t\r") == std::string_view::npos;
}

/// Parses one OpenAI Batch input line: {"custom_id", "method": "POST", "url", "body"}.
/// Malformed lines come back with `error` set (codes: invalid_json,
/// invalid_request, missing_custom_id, missing_body); never throws.
[[nodiscard]] inline input_line parse_input_line(std::string_view text, std::int64_t line_number) {
    input_line out;
    out.line = line_number;
    out.custom_id = "line-" + std::to_string(line_number);
    if (!text.empty() && text.back() == '\r') text.remove_suffix(1);
    auto fail = [&out](std::string code, std::string message) {
        out.error = record_error{std::move(code), std::move(message)};
        return out;
    };
    if (json_depth(text) > max_json_depth) {
        return fail("invalid_json", "nested deeper than " + std::to_string(max_json_depth) + " levels");
    }
    json parsed;
    try {
        parsed = json::parse(text);
    } catch (const json::exception& e) {
        return fail("invalid_json", std::string("line ") + std::to_string(line_number) + ": " + e.what());
    }
    if (!parsed.is_object()) return fail("invalid_request", "the line is not a JSON object");
    const auto id = parsed.find("custom_id");
    if (id == parsed.end() || !id->is_string() || id->get_ref<const std::string&>().empty()) {
        return fail("missing_custom_id", "custom_id must be a non-empty string (this record uses line-" +
                                             std::to_string(line_number) + ")");
    }
    out.custom_id = id->get<std::string>();
    if (const auto method = parsed.find("method"); method != parsed.end() && *method != "POST") {
        return fail("invalid_request", "method must be \"POST\"");
    }
    const auto url = parsed.find("url");
    if (url == parsed.end() || !url->is_string() || url->get_ref<const std::string&>().rfind('/', 0) != 0) {
        return fail("invalid_request", "url must be a path beginning with '/', e.g. \"/v1/chat/completions\"");
    }
    out.url = url->get<std::string>();
    const auto body = parsed.find("body");
    if (body == parsed.end() || !body->is_object()) return fail("missing_body", "body must be a JSON object");
    if (const auto stream = body->find("stream"); stream != body->end() && *stream == true) {
        return fail("invalid_request", "streaming (\"stream\": true) is not supported in a batch");
    }
    out.body = std::move(*body);
    return out;
}

/// Non-blank lines of a file: the total the progress line counts towards.
[[nodiscard]] inline std::int64_t count_lines(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::int64_t count = 0;
    std::string line;
    while (std::getline(in, line)) {
        if (!is_blank(line)) ++count;
    }
    return count;
}

// ---------------------------------------------------------------------------
// Cost and usage
// ---------------------------------------------------------------------------

namespace detail {

/// Tokens of a string, or of the text parts of an array of strings or parts.
[[nodiscard]] inline std::int64_t text_tokens(const json& content) {
    if (content.is_string()) return ratelimit::llm::estimate_tokens(content.get_ref<const std::string&>());
    std::int64_t tokens = 0;
    if (content.is_array()) {
        for (const json& part : content) {
            if (part.is_string()) {
                tokens += ratelimit::llm::estimate_tokens(part.get_ref<const std::string&>());
            } else if (part.is_object()) {
                if (const auto t = part.find("text"); t != part.end() && t->is_string()) {
                    tokens += ratelimit::llm::estimate_tokens(t->get_ref<const std::string&>());
                }
            }
        }
    }
    return tokens;
}

[[nodiscard]] inline std::optional<std::int64_t> positive_integer(const json& object, const char* name) {
    const auto v = object.find(name);
    if (v == object.end() || !v->is_number_integer() || v->get<std::int64_t>() < 1) return std::nullopt;
    return v->get<std::int64_t>();
}

[[nodiscard]] inline std::int64_t saturating_add(std::int64_t a, std::int64_t b) noexcept {
    return b > 0 && a > std::numeric_limits<std::int64_t>::max() - b ? std::numeric_limits<std::int64_t>::max() : a + b;
}

}  // namespace detail

/// What a request may cost the gate. input_tokens: estimate_tokens over every
/// message's text + 4 per message (chat), or over `prompt` / `input`
/// (completions, embeddings), plus `system` and `tools` when present; a body
/// with none of these is estimated from its whole JSON text. max_output_tokens:
/// max_completion_tokens, else max_tokens, else `default_max_tokens` (0 for an
/// embeddings URL), times `n` choices.
[[nodiscard]] inline ratelimit::llm::request_cost estimate_cost(const json& body, std::string_view url,
                                                                 std::int64_t default_max_tokens) {
    using ratelimit::llm::estimate_tokens;
    std::int64_t input = 0;
    bool found = false;
    if (const auto messages = body.find("messages"); messages != body.end() && messages->is_array()) {
        found = true;
        for (const json& m : *messages) {
            input = detail::saturating_add(input, 4);
            if (!m.is_object()) continue;
            if (const auto c = m.find("content"); c != m.end()) input = detail::saturating_add(input, detail::text_tokens(*c));
        }
    }
    for (const char* name : {"prompt", "input", "system"}) {
        if (const auto v = body.find(name); v != body.end()) {
            found = true;
            input = detail::saturating_add(input, detail::text_tokens(*v));
        }
    }
    if (const auto tools = body.find("tools"); tools != body.end()) {
        input = detail::saturating_add(input, estimate_tokens(tools->dump(-1, ' ', false, json::error_handler_t::replace)));
    }
    if (!found) input = estimate_tokens(body.dump(-1, ' ', false, json::error_handler_t::replace));

    const bool embeddings = url.find("/embeddings") != std::string_view::npos;
    std::int64_t output = detail::positive_integer(body, "max_completion_tokens")
                              .value_or(detail::positive_integer(body, "max_tokens")
                                            .value_or(embeddings ? 0 : default_max_tokens));
    if (const auto n = detail::positive_integer(body, "n"); n && output > 0) {
        output = *n > std::numeric_limits<std::int64_t>::max() / output ? std::numeric_limits<std::int64_t>::max()
                                                                        : output * *n;
    }
    return {input, output};
}

/// The response body's `usage`: OpenAI's prompt_tokens / completion_tokens,
/// or Anthropic's input_tokens / output_tokens; nothing when absent.
[[nodiscard]] inline std::optional<ratelimit::llm::usage> usage_of(const json& body) {
    if (!body.is_object()) return std::nullopt;
    const auto u = body.find("usage");
    if (u == body.end() || !u->is_object()) return std::nullopt;
    auto field = [&u](const char* a, const char* b) -> std::optional<std::int64_t> {
        for (const char* name : {a, b}) {
            const auto v = u->find(name);
            if (v != u->end() && v->is_number_integer() && v->get<std::int64_t>() >= 0) return v->get<std::int64_t>();
        }
        return std::nullopt;
    };
    const auto in = field("prompt_tokens", "input_tokens");
    const auto out = field("completion_tokens", "output_tokens");
    if (!in && !out) return std::nullopt;
    return ratelimit::llm::usage{in.value_or(0), out.value_or(0)};
}

// ---------------------------------------------------------------------------
// Output records
// ---------------------------------------------------------------------------

/// The HTTP answer a record carries.
struct response_info {
    int status_code = 0;
    std::string request_id;
    json body;  ///< the parsed JSON body, or the raw text as a string when it is not JSON
};

/// "batch_req_" and 32 hex digits.
[[nodiscard]] inline std::string make_record_id(std::mt19937_64& rng) {
    static constexpr char hex[] = "0123456789abcdef";
    std::string id = "batch_req_";
    for (int half = 0; half < 2; ++half) {
        std::uint64_t bits = rng();
        for (int i = 0; i < 16; ++i, bits >>= 4) id += hex[bits & 0xF];
    }
    return id;
}

/// One output line, '\n' included: {"id", "custom_id", "response", "error",
/// "line"}: OpenAI's Batch output fields, then the 1-based input line the
/// record answers (an addition: --resume tracks completion by line, since
/// custom_ids may repeat). Invalid UTF-8 from the network is replaced, never thrown on.
[[nodiscard]] inline std::string output_line(const std::string& record_id, const std::string& custom_id,
                                             std::int64_t line, const std::optional<response_info>& response,
                                             const std::optional<record_error>& error) {
    json record = {{"id", record_id}, {"custom_id", custom_id}, {"response", nullptr}, {"error", nullptr}};
    if (response) {
        record["response"] = {{"status_code", response->status_code},
                              {"request_id", response->request_id},
                              {"body", response->body}};
    }
    if (error) record["error"] = {{"code", error->code}, {"message", error->message}};
    record["line"] = line;
    return record.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
}

// ---------------------------------------------------------------------------
// Resume
// ---------------------------------------------------------------------------

/// Error codes of records a later --resume sends again: the answer may differ
/// next time (no response, 5xx, 429 after every attempt, a request timeout).
[[nodiscard]] inline bool transient_error(std::string_view code) noexcept {
    return code == "network_error" || code == "server_error" || code == "rate_limited" || code == "http_408";
}

/// The record an existing output holds for one input line.
struct line_record {
    std::string custom_id;
    std::optional<std::string> error_code;  ///< none: a success
};

/// What an existing output file already holds.
struct resume_state {
    std::unordered_map<std::int64_t, line_record> lines;    ///< input line -> its (last) record
    std::unordered_map<std::string, std::int64_t> records;  ///< custom_id -> records without "line" (older outputs)
    std::int64_t total = 0;             ///< whole, readable records
    std::int64_t failed = 0;            ///< of which error records
    std::int64_t unreadable = 0;        ///< whole lines that are not records (kept, ignored)
    std::uintmax_t valid_bytes = 0;     ///< length of the prefix of whole lines
    bool torn_tail = false;             ///< bytes after the last '\n' (a write cut short)
};

namespace detail {

/// A record's input line: its "line" field when it is an integer >= 1.
[[nodiscard]] inline std::optional<std::int64_t> record_line(const json& record) {
    const auto l = record.find("line");
    if (l == record.end() || !l->is_number_integer() || l->get<std::int64_t>() < 1) return std::nullopt;
    return l->get<std::int64_t>();
}

/// A record's error code: "" for an error without a string code, nothing for a success.
[[nodiscard]] inline std::optional<std::string> record_error_code(const json& record) {
    const auto e = record.find("error");
    if (e == record.end() || e->is_null()) return std::nullopt;
    const auto c = e->is_object() ? e->find("code") : e->end();
    return e->is_object() && c != e->end() && c->is_string() ? c->get<std::string>() : std::string();
}

/// The output line parsed as a record with a string custom_id, or a discarded value.
[[nodiscard]] inline json parse_record(const std::string& text) {
    json record = json_depth(text) > max_json_depth ? json() : json::parse(text, nullptr, false);
    const auto id = record.is_object() ? record.find("custom_id") : record.end();
    if (!record.is_object() || id == record.end() || !id->is_string()) return json(json::value_t::discarded);
    return record;
}

}  // namespace detail

/// Reads an output file: every '\n'-terminated line with a string custom_id
/// counts, by its "line" field when it has one (the last record of a line
/// wins), else by custom_id; a tail without '\n' is torn (valid_bytes stops
/// before it). A missing file is an empty state. Throws setup_error when it cannot be read.
[[nodiscard]] inline resume_state scan_output(const std::string& path) {
    resume_state state;
    std::error_code ec;
    if (!std::filesystem::exists(path, ec)) return state;
    std::ifstream in(path, std::ios::binary);
    if (!in) throw setup_error("cannot read output " + path + ": " + std::strerror(errno));
    std::string text;
    while (std::getline(in, text)) {
        if (in.eof()) {  // no '\n' after it: torn
            state.torn_tail = !text.empty();
            break;
        }
        state.valid_bytes += text.size() + 1;
        const json record = detail::parse_record(text);
        if (record.is_discarded()) {
            ++state.unreadable;
            continue;
        }
        ++state.total;
        std::optional<std::string> code = detail::record_error_code(record);
        if (code) ++state.failed;
        std::string custom_id = record.at("custom_id").get<std::string>();
        if (const auto line = detail::record_line(record)) {
            if (const auto earlier = state.lines.find(*line); earlier != state.lines.end() && earlier->second.error_code) {
                --state.failed;  // superseded by this later record
            }
            state.lines[*line] = line_record{std::move(custom_id), std::move(code)};
        } else {
            ++state.records[custom_id];
        }
    }
    return state;
}

// ---------------------------------------------------------------------------
// Retry policy
// ---------------------------------------------------------------------------

/// 429 and 5xx may succeed later; every other status is final.
[[nodiscard]] constexpr bool retryable_status(int status) noexcept { return status == 429 || status >= 500; }

/// Network errors worth another attempt: all but the ones a retry cannot fix.
[[nodiscard]] inline bool retryable_error(httplib::Error e) noexcept {
    switch (e) {
    case httplib::Error::SSLLoadingCerts:
    case httplib::Error::SSLServerVerification:
    case httplib::Error::UnsupportedMultipartBoundaryChars:
    case httplib::Error::ExceedRedirectCount:
        return false;
    default:
        return true;
    }
}

/// The delay before attempt `failed_attempts + 1` when the server named none:
/// min(cap, initial · 2^(failed_attempts − 1)) scaled by a jitter factor in
/// [0.5, 1] drawn from `unit` in [0, 1).
[[nodiscard]] inline std::chrono::milliseconds backoff_delay(int failed_attempts, std::chrono::milliseconds initial,
                                                             std::chrono::milliseconds cap, double unit) {
    const int doublings = std::clamp(failed_attempts - 1, 0, 30);
    const double full = std::min(static_cast<double>(cap.count()), static_cast<double>(initial.count()) * std::ldexp(1.0, doublings));
    return std::chrono::milliseconds(static_cast<std::int64_t>(full * (0.5 + 0.5 * std::clamp(unit, 0.0, 1.0))));
}

// ---------------------------------------------------------------------------
// Base URL
// ---------------------------------------------------------------------------

/// A base URL split for httplib: "scheme://host[:port]" and a path prefix
/// (without a trailing '/') put before each line's url.
struct endpoint {
    std::string origin;
    std::string path_prefix;
};

/// Accepts http:// and https:// URLs with a host; nothing otherwise.
[[nodiscard]] inline std::optional<endpoint> parse_base_url(std::string_view url) {
    std::size_t scheme_end = 0;
    if (url.rfind("http://", 0) == 0) scheme_end = 7;
    else if (url.rfind("https://", 0) == 0) scheme_end = 8;
    else return std::nullopt;
    const std::size_t slash = url.find('/', scheme_end);
    const std::string_view authority = url.substr(scheme_end, slash == std::string_view::npos ? url.npos : slash - scheme_end);
    if (authority.empty() || authority.find_first_of("?#@ ") != std::string_view::npos) return std::nullopt;
    endpoint e{std::string(url.substr(0, scheme_end + authority.size())), ""};
    if (slash != std::string_view::npos) {
        std::string_view path = url.substr(slash);
        if (path.find_first_of("?# ") != std::string_view::npos) return std::nullopt;
        while (!path.empty() && path.back() == '/') path.remove_suffix(1);
        e.path_prefix = std::string(path);
    }
    return e;
}

// ---------------------------------------------------------------------------
// Output file
// ---------------------------------------------------------------------------

/// The output JSONL file, appended to by every worker. Holds an exclusive
/// flock so two runs never write the same file. Thread-safe: one mutex
/// around each write(2).
class output_file {
public:
    /// Opens (creating) `path` and locks it; writes nothing yet.
    explicit output_file(const std::string& path) : path_(path) {
        fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (fd_ < 0) throw setup_error("cannot open output " + path + ": " + std::strerror(errno));
        if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
            ::close(fd_);
            throw setup_error("output " + path + " is in use by another process");
        }
    }
    output_file(const output_file&) = delete;
    output_file& operator=(const output_file&) = delete;
    ~output_file() {
        if (fd_ >= 0) ::close(fd_);
    }

    /// Cuts the file to its first `keep_bytes` (a torn last line goes).
    void truncate(std::uintmax_t keep_bytes) {
        if (::ftruncate(fd_, static_cast<off_t>(keep_bytes)) != 0) {
            throw setup_error("cannot truncate output " + path_ + ": " + std::strerror(errno));
        }
    }

    /// Replaces the file by its whole lines within the first `keep_bytes` for
    /// which `keep(line)` is true: written to a locked temporary file beside
    /// it, synced, then renamed over it, so a crash leaves the old file or
    /// the new one, and the lock never lapses.
    template <class Keep>
    void rewrite(std::uintmax_t keep_bytes, Keep keep) {
        const std::string temporary = path_ + ".rewrite-" + std::to_string(::getpid());
        const int fd = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0644);
        if (fd < 0) throw setup_error("cannot create " + temporary + ": " + std::strerror(errno));
        auto fail = [&](const std::string& what) {
            const int err = errno;
            ::close(fd);
            ::unlink(temporary.c_str());
            throw setup_error(what + " " + temporary + ": " + std::strerror(err));
        };
        if (::flock(fd, LOCK_EX | LOCK_NB) != 0) fail("cannot lock");
        std::ifstream in(path_, std::ios::binary);
        std::string line;
        std::uintmax_t read = 0;
        while (read < keep_bytes && std::getline(in, line)) {
            read += line.size() + 1;
            if (!keep(std::string_view(line))) continue;
            line += '\n';
            if (!write_all(fd, line)) fail("cannot write");
        }
        if (::fsync(fd) != 0) fail("cannot sync");
        if (::rename(temporary.c_str(), path_.c_str()) != 0) fail("cannot rename");
        ::close(fd_);
        fd_ = fd;
    }

    /// Appends `line` (which ends in '\n') whole; throws std::runtime_error on a write error.
    void write_line(std::string_view line) {
        std::lock_guard lock(mutex_);
        if (!write_all(fd_, line)) throw std::runtime_error("cannot write output " + path_ + ": " + std::strerror(errno));
    }

private:
    static bool write_all(int fd, std::string_view text) {
        while (!text.empty()) {
            const ssize_t n = ::write(fd, text.data(), text.size());
            if (n < 0) {
                if (errno == EINTR) continue;
                return false;
            }
            text.remove_prefix(static_cast<std::size_t>(n));
        }
        return true;
    }

    std::string path_;
    int fd_ = -1;
    std::mutex mutex_;
};

// ---------------------------------------------------------------------------
// Counters, progress, summary
// ---------------------------------------------------------------------------

/// Live counters of a run, written by the workers, read by progress.
struct counters {
    std::atomic<std::int64_t> succeeded{0};
    std::atomic<std::int64_t> failed{0};          ///< error records written (malformed included)
    std::atomic<std::int64_t> malformed{0};
    std::atomic<std::int64_t> throttled{0};       ///< 429 answers
    std::atomic<std::int64_t> server_errors{0};   ///< 5xx answers
    std::atomic<std::int64_t> network_errors{0};  ///< attempts without an answer
    std::atomic<std::int64_t> retries{0};         ///< attempts after the first
    std::atomic<std::int64_t> http_requests{0};   ///< attempts sent
    std::atomic<std::int64_t> prompt_tokens{0};
    std::atomic<std::int64_t> completion_tokens{0};
    std::atomic<std::int64_t> skipped{0};         ///< lines already answered in the output (--resume)
    std::atomic<std::int64_t> resent{0};          ///< lines an earlier run sent without a record, sent again

    [[nodiscard]] std::int64_t written() const noexcept { return succeeded.load() + failed.load(); }
    [[nodiscard]] std::int64_t tokens() const noexcept { return prompt_tokens.load() + completion_tokens.load(); }
};

/// "950 ms", "12.3 s", "4m05s", "2h03m".
[[nodiscard]] inline std::string human_duration(double seconds) {
    char buffer[32];
    if (!(seconds >= 0) || !std::isfinite(seconds)) return "?";
    if (seconds < 1) std::snprintf(buffer, sizeof buffer, "%d ms", static_cast<int>(seconds * 1000));
    else if (seconds < 60) std::snprintf(buffer, sizeof buffer, "%.1f s", seconds);
    else if (seconds < 3600) std::snprintf(buffer, sizeof buffer, "%dm%02ds", static_cast<int>(seconds) / 60, static_cast<int>(seconds) % 60);
    else std::snprintf(buffer, sizeof buffer, "%dh%02dm", static_cast<int>(seconds) / 3600, static_cast<int>(seconds) / 60 % 60);
    return buffer;
}

/// "812", "12.4k", "3.1M".
[[nodiscard]] inline std::string human_count(double x) {
    char buffer[32];
    if (x < 1000) std::snprintf(buffer, sizeof buffer, "%.0f", x);
    else if (x < 1e6) std::snprintf(buffer, sizeof buffer, "%.1fk", x / 1e3);
    else std::snprintf(buffer, sizeof buffer, "%.1fM", x / 1e6);
    return buffer;
}

/// One progress line (no '\r' or '\n'): done/total, rates, 429s and ETA,
/// with a bar when `bar_width` > 0. `done` counts lines resumed as well;
/// the rates count only this run's (`sent_now` lines, `tokens` tokens).
[[nodiscard]] inline std::string progress_text(std::int64_t done, std::int64_t total, std::int64_t sent_now,
                                               std::int64_t tokens, std::int64_t throttled, double elapsed_s,
                                               int bar_width) {
    std::string out = "llm_batch: ";
    const double fraction = total > 0 ? std::clamp(static_cast<double>(done) / static_cast<double>(total), 0.0, 1.0) : 1.0;
    if (bar_width > 0) {
        const int filled = static_cast<int>(fraction * bar_width);
        out += "[" + std::string(static_cast<std::size_t>(filled), '#') +
               std::string(static_cast<std::size_t>(bar_width - filled), '.') + "] ";
    }
    const double req_rate = elapsed_s > 0 ? static_cast<double>(sent_now) / elapsed_s : 0;
    const double tok_rate = elapsed_s > 0 ? static_cast<double>(tokens) / elapsed_s : 0;
    char buffer[160];
    std::snprintf(buffer, sizeof buffer, "%lld/%lld %3d%%  %.1f req/s  %s tok/s  429s %lld  ETA ",
                  static_cast<long long>(done), static_cast<long long>(total), static_cast<int>(fraction * 100),
                  req_rate, human_count(tok_rate).c_str(), static_cast<long long>(throttled));
    out += buffer;
    const std::int64_t left = std::max<std::int64_t>(0, total - done);
    out += left == 0 ? "0 s" : req_rate > 0 ? human_duration(static_cast<double>(left) / req_rate) : "?";
    return out;
}

/// The outcome of a run, as --summary-json writes it.
struct summary {
    std::int64_t requests = 0;          ///< lines answered in this run (succeeded + failed)
    std::int64_t succeeded = 0;
    std::int64_t failed = 0;            ///< error records written in this run
    std::int64_t malformed = 0;         ///< of which malformed input lines
    std::int64_t throttled_429 = 0;
    std::int64_t server_errors = 0;
    std::int64_t network_errors = 0;
    std::int64_t retries = 0;
    std::int64_t http_requests = 0;
    std::int64_t prompt_tokens = 0;
    std::int64_t completion_tokens = 0;
    std::int64_t skipped_resumed = 0;   ///< lines already in the output (--resume)
    std::int64_t previously_failed = 0; ///< error records kept in the output (final errors)
    std::int64_t retried_failed = 0;    ///< error records of earlier runs dropped to send their lines again
    std::int64_t resent = 0;            ///< lines sent again that were in flight when an earlier run ended
    std::int64_t unfinished = 0;        ///< lines left without a record (stopped early)
    std::int64_t total_lines = 0;
    double elapsed_s = 0;
    std::int64_t learned_requests_per_minute = 0;  ///< the limits in force at the end
    std::int64_t learned_tokens_per_minute = 0;
    bool stopped = false;               ///< the stop flag ended the run

    /// Successful requests per second of this run.
    [[nodiscard]] double requests_per_s() const { return elapsed_s > 0 ? static_cast<double>(succeeded) / elapsed_s : 0; }
    /// Prompt + completion tokens (from usage) per second of this run.
    [[nodiscard]] double tokens_per_s() const {
        return elapsed_s > 0 ? static_cast<double>(prompt_tokens + completion_tokens) / elapsed_s : 0;
    }
    /// 130 when stopped, 1 when any line failed (now or in the resumed output)
    /// or was left unfinished, else 0.
    [[nodiscard]] int exit_status() const {
        if (stopped) return 130;
        return failed + previously_failed + unfinished > 0 ? 1 : 0;
    }

    [[nodiscard]] json to_json() const {
        return {{"requests", requests},
                {"succeeded", succeeded},
                {"failed", failed},
                {"malformed", malformed},
                {"throttled_429", throttled_429},
                {"server_errors", server_errors},
                {"network_errors", network_errors},
                {"retries", retries},
                {"http_requests", http_requests},
                {"prompt_tokens", prompt_tokens},
                {"completion_tokens", completion_tokens},
                {"skipped_resumed", skipped_resumed},
                {"previously_failed", previously_failed},
                {"retried_failed", retried_failed},
                {"resent", resent},
                {"unfinished", unfinished},
                {"total_lines", total_lines},
                {"elapsed_s", elapsed_s},
                {"requests_per_s", requests_per_s()},
                {"tokens_per_s", tokens_per_s()},
                {"limits", {{"requests_per_minute", learned_requests_per_minute},
                            {"tokens_per_minute", learned_tokens_per_minute}}}};
    }

    /// The final line on stderr.
    [[nodiscard]] std::string one_line() const {
        char buffer[320];
        std::snprintf(buffer, sizeof buffer,
                      "llm_batch: %lld requests: %lld succeeded, %lld failed, %lld throttled (429), %lld retries "
                      "in %s: %.1f req/s, %s tok/s",
                      static_cast<long long>(requests), static_cast<long long>(succeeded),
                      static_cast<long long>(failed), static_cast<long long>(throttled_429),
                      static_cast<long long>(retries), human_duration(elapsed_s).c_str(), requests_per_s(),
                      human_count(tokens_per_s()).c_str());
        std::string out = buffer;
        if (skipped_resumed > 0) out += "; " + std::to_string(skipped_resumed) + " already done";
        if (resent > 0) out += "; " + std::to_string(resent) + " sent again (in flight when the last run ended)";
        if (unfinished > 0) out += "; " + std::to_string(unfinished) + " left (rerun with --resume)";
        return out;
    }
};

/// Redraws a progress line with '\r' on a terminal, or prints a plain line
/// every few seconds otherwise, on its own thread until stopped.
class progress_reporter {
public:
    progress_reporter(std::FILE* out, bool terminal, std::chrono::milliseconds every, std::int64_t total,
                      const counters& c)
        : out_(out), terminal_(terminal), every_(every), total_(total), counters_(c),
          start_(steady::now()) {
        thread_ = std::thread([this] { loop(); });
    }
    progress_reporter(const progress_reporter&) = delete;
    progress_reporter& operator=(const progress_reporter&) = delete;
    ~progress_reporter() { finish(); }

    /// Draws the last state and ends the line; idempotent.
    void finish() {
        {
            std::lock_guard lock(mutex_);
            if (done_) return;
            done_ = true;
        }
        wake_.notify_all();
        thread_.join();
        if (terminal_) {
            draw();
            std::fputc('\n', out_);
            std::fflush(out_);
        }
    }

private:
    void loop() {
        std::unique_lock lock(mutex_);
        while (!wake_.wait_for(lock, every_, [this] { return done_; })) {
            lock.unlock();
            draw();
            if (!terminal_) std::fputc('\n', out_);
            std::fflush(out_);
            lock.lock();
        }
    }

    void draw() {
        const double elapsed = std::chrono::duration<double>(steady::now() - start_).count();
        const std::int64_t sent = counters_.written();
        const std::string text = progress_text(counters_.skipped.load() + sent, total_, sent, counters_.tokens(),
                                               counters_.throttled.load(), elapsed, terminal_ ? 24 : 0);
        if (terminal_) std::fprintf(out_, "\r%s\033[K", text.c_str());
        else std::fputs(text.c_str(), out_);
    }

    std::FILE* out_;
    bool terminal_;
    std::chrono::milliseconds every_;
    std::int64_t total_;
    const counters& counters_;
    steady::time_point start_;
    std::mutex mutex_;
    std::condition_variable wake_;
    bool done_ = false;
    std::thread thread_;
};

// ---------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------

/// One batch run: set up by the constructor (which throws setup_error for
/// anything the caller must fix), executed once by run().
class runner {
public:
    explicit runner(options o) : options_(std::move(o)), gate_(gate_settings(options_)) {
        if (options_.concurrency < 1) throw setup_error("--concurrency must be >= 1");
        if (options_.max_attempts < 1) throw setup_error("--max-attempts must be >= 1");
        const auto e = parse_base_url(options_.base_url);
        if (!e) throw setup_error("--base-url must be http://HOST[:PORT] or https://..., got '" + options_.base_url + "'");
        endpoint_ = *e;

        std::error_code ec;
        if (!std::filesystem::is_regular_file(options_.input_path, ec)) {
            throw setup_error("cannot read input " + options_.input_path + ": " +
                              (std::filesystem::exists(options_.input_path, ec) ? "not a regular file" : "no such file"));
        }
        input_.open(options_.input_path, std::ios::binary);
        if (!input_) throw setup_error("cannot read input " + options_.input_path + ": " + std::strerror(errno));
        if (std::filesystem::exists(options_.output_path, ec) &&
            std::filesystem::equivalent(options_.input_path, options_.output_path, ec)) {
            throw setup_error("--output must not be the input file");
        }
        if (std::filesystem::is_directory(options_.output_path, ec)) {
            throw setup_error("output " + options_.output_path + " is a directory: name a file to write");
        }
        if (options_.retry_failed) options_.resume = true;
        const bool output_has_data = std::filesystem::exists(options_.output_path, ec) &&
                                     std::filesystem::file_size(options_.output_path, ec) > 0;
        if (output_has_data && !options_.resume) {
            throw setup_error("output " + options_.output_path +
                              " exists and is not empty: pass --resume to continue it, or remove it");
        }
        output_.emplace(options_.output_path);  // locked before it is read: no other run writes it meanwhile
        journal_state previous;
        if (options_.resume) {
            resumed_ = scan_output(options_.output_path);
            previous = read_journal(journal_path());
        }
        // Lines an earlier run sent without writing their record: in flight when it ended.
        journal_state keep;
        for (const std::int64_t line : previous.sent) {
            if (resumed_.lines.count(line) == 0) keep.sent.insert(line);
        }
        keep.requests_per_minute = previous.requests_per_minute;
        keep.tokens_per_minute = previous.tokens_per_minute;
        in_flight_before_ = keep.sent;
        open_resumed_output();
        try {
            journal_.emplace(journal_path(), keep);
        } catch (const std::runtime_error& e) {
            throw setup_error(e.what());
        }
        identity_ = input_identity(options_.input_path);
        if (options_.resume && options_.use_gate) start_drawn_down(previous);
        const ratelimit::llm::stats known = gate_.snapshot();
        probe_done_ = !options_.use_gate || (known.requests_per_minute > 0 && known.tokens_per_minute > 0);
        if (resumed_.torn_tail) warn("cut off a torn last line of " + options_.output_path);
        if (resumed_.unreadable > 0) {
            warn("ignored " + std::to_string(resumed_.unreadable) + " unreadable line(s) in " + options_.output_path);
        }
        total_lines_ = count_lines(options_.input_path);
    }

    /// Sends every line not yet answered; returns the counts. Throws
    /// std::runtime_error when the output cannot be written (the run stops).
    /// Once only: the output file is closed (and its lock released) at the end.
    summary run() {
        if (!output_) throw std::logic_error("llm_batch::runner::run: a runner runs once");
        const auto start = steady::now();
        std::optional<progress_reporter> progress;
        if (options_.progress && options_.diagnostics != nullptr) {
            const bool terminal = ::isatty(::fileno(options_.diagnostics)) == 1;
            progress.emplace(options_.diagnostics, terminal,
                             terminal ? options_.progress_every_tty : options_.progress_every_plain, total_lines_,
                             counters_);
        }
        std::vector<std::thread> workers;
        workers.reserve(static_cast<std::size_t>(options_.concurrency));
        for (int i = 0; i < options_.concurrency; ++i) workers.emplace_back([this, i] { work(i); });
        std::thread watcher([this] { close_gate_on_stop(); });
        for (std::thread& t : workers) t.join();
        {
            std::lock_guard lock(watch_mutex_);
            workers_done_ = true;
        }
        watch_wake_.notify_all();
        watcher.join();
        journal_.reset();
        output_.reset();  // closes the file and releases its lock: the run is over
        count_rest();
        if (progress) progress->finish();

        summary s = collect(std::chrono::duration<double>(steady::now() - start).count());
        if (options_.progress && options_.diagnostics != nullptr) {
            std::fprintf(options_.diagnostics, "%s\n", s.one_line().c_str());
        }
        if (!options_.summary_json_path.empty()) write_summary(s);
        if (fatal_) std::rethrow_exception(fatal_);
        return s;
    }

    /// The gate, for its stats.
    [[nodiscard]] const gate_type& gate() const noexcept { return gate_; }
    [[nodiscard]] const resume_state& resumed() const noexcept { return resumed_; }

private:
    /// A line taken by a worker: a request to send.
    using job = input_line;

    static ratelimit::llm::gate_config gate_settings(const options& o) {
        ratelimit::llm::gate_config c;
        c.requests_per_minute = std::max<std::int64_t>(0, o.requests_per_minute);
        c.tokens_per_minute = std::max<std::int64_t>(0, o.tokens_per_minute);
        c.max_concurrent = std::max(1, o.concurrency);
        return c;
    }

    [[nodiscard]] bool stopping() const noexcept {
        return fatal_flag_.load() || (options_.stop != nullptr && options_.stop->load());
    }

    /// Closes the gate within 50 ms of a stop (the flag is set by a signal
    /// handler, which cannot notify), so workers waiting in the gate's line, a
    /// 429 pause included, give up their line at once; returns when the workers are done.
    void close_gate_on_stop() {
        std::unique_lock lock(watch_mutex_);
        while (!watch_wake_.wait_for(lock, std::chrono::milliseconds(50), [this] { return workers_done_; })) {
            if (stopping()) {
                gate_.close();
                return;
            }
        }
    }

    void warn(const std::string& message) const {
        if (options_.diagnostics != nullptr) std::fprintf(options_.diagnostics, "llm_batch: %s\n", message.c_str());
    }

    [[nodiscard]] std::string journal_path() const { return options_.output_path + ".journal"; }

    /// Empties the gate's buckets, learning the limits the journal holds
    /// first: the provider's quota may still be drawn down by the run that
    /// ended, so a resumed run starts as if it had just used a full burst.
    /// Done through the gate's own header rule (a success reporting nothing
    /// remaining), so it is exactly what a response would do.
    void start_drawn_down(const journal_state& previous) {
        std::vector<std::pair<std::string, std::string>> headers{{"x-ratelimit-remaining-requests", "0"},
                                                                 {"x-ratelimit-remaining-tokens", "0"}};
        if (previous.requests_per_minute > 0) {
            headers.emplace_back("x-ratelimit-limit-requests", std::to_string(previous.requests_per_minute));
        }
        if (previous.tokens_per_minute > 0) {
            headers.emplace_back("x-ratelimit-limit-tokens", std::to_string(previous.tokens_per_minute));
        }
        if (std::optional<gate_type::ticket> t = gate_.try_acquire({0, 0})) t->complete(200, headers);
    }

    /// Drops the records of the lines to send again (failed with a transient
    /// error, or any failure with --retry-failed) by rewriting the output
    /// without them, else cuts off a torn tail. Those lines then have no
    /// record, so the run sends them like any other.
    void open_resumed_output() {
        std::unordered_set<std::int64_t> again;
        for (const auto& [line, record] : resumed_.lines) {
            if (record.error_code && (options_.retry_failed || transient_error(*record.error_code))) again.insert(line);
        }
        if (again.empty()) return output_->truncate(resumed_.valid_bytes);
        output_->rewrite(resumed_.valid_bytes, [&again](std::string_view text) {
            const json record = detail::parse_record(std::string(text));
            if (record.is_discarded()) return true;
            const auto line = detail::record_line(record);
            return !line || again.count(*line) == 0;
        });
        for (const std::int64_t line : again) resumed_.lines.erase(line);
        resumed_.failed -= static_cast<std::int64_t>(again.size());
        retried_ = static_cast<std::int64_t>(again.size());
    }

    /// Does the output already answer this input line (its `occurrence`-th
    /// custom_id)? By line when records carry one (the custom_id must match,
    /// else the input changed and the line is sent), else by custom_id count.
    bool answered(const input_line& line, std::int64_t occurrence) {
        if (const auto done = resumed_.lines.find(line.line); done != resumed_.lines.end()) {
            if (done->second.custom_id == line.custom_id) return true;
            if (mismatched_++ == 0) {
                warn("output record for input line " + std::to_string(line.line) + " has custom_id '" +
                     done->second.custom_id + "', the input has '" + line.custom_id + "': the input changed; sending it");
            }
            return false;
        }
        const auto done = resumed_.records.find(line.custom_id);
        return done != resumed_.records.end() && occurrence <= done->second;
    }

    /// The next line to send, writing error records for malformed and
    /// duplicate lines on the way and skipping the ones already answered.
    std::optional<job> next_job(std::mt19937_64& rng) {
        std::lock_guard lock(input_mutex_);
        std::string text;
        for (;;) {
            if (stopping() || (options_.max_lines > 0 && dispatched_ >= options_.max_lines)) return std::nullopt;
            if (!std::getline(input_, text)) return std::nullopt;
            ++line_number_;
            if (is_blank(text)) continue;
            input_line line = parse_input_line(text, line_number_);
            const std::int64_t occurrence = ++seen_[line.custom_id];
            if (answered(line, occurrence)) {
                ++counters_.skipped;
                continue;
            }
            ++dispatched_;
            if (!line.error && occurrence > 1) {
                line.error = record_error{"duplicate_custom_id", "custom_id '" + line.custom_id + "' appears on an earlier line"};
            }
            if (line.error) {
                ++counters_.malformed;
                write_record(rng, line, std::nullopt, *line.error);
                continue;
            }
            return line;
        }
    }

    /// After an early stop: sorts the lines never taken into already answered
    /// (skipped) and left for a later --resume (unfinished).
    void count_rest() {
        std::lock_guard lock(input_mutex_);
        std::string text;
        while (std::getline(input_, text)) {
            ++line_number_;
            if (is_blank(text)) continue;
            const input_line line = parse_input_line(text, line_number_);
            const std::int64_t occurrence = ++seen_[line.custom_id];
            if (answered(line, occurrence)) ++counters_.skipped;
            else ++unfinished_;
        }
    }

    void write_record(std::mt19937_64& rng, const input_line& line, const std::optional<response_info>& response,
                      const std::optional<record_error>& error) {
        output_->write_line(output_line(make_record_id(rng), line.custom_id, line.line, response, error));
        if (error) ++counters_.failed;
        else ++counters_.succeeded;
    }

    void work(int index) {
        try {
            std::mt19937_64 rng(std::random_device{}() ^ (static_cast<std::uint64_t>(index) << 32));
            httplib::Client client(endpoint_.origin);
            client.set_keep_alive(true);
            client.set_connection_timeout(options_.connect_timeout);
            client.set_read_timeout(options_.read_timeout);
            client.set_write_timeout(options_.read_timeout);
            while (std::optional<job> j = next_job(rng)) send(client, *j, rng);
        } catch (...) {
            std::lock_guard lock(input_mutex_);
            if (!fatal_) fatal_ = std::current_exception();
            fatal_flag_ = true;
        }
    }

    /// Sleeps until `until`, waking every 100 ms to check the stop flag; false when stopped.
    bool sleep_until(steady::time_point until) const {
        for (;;) {
            const auto now = steady::now();
            if (now >= until) return true;
            if (stopping()) return false;
            std::this_thread::sleep_until(std::min(until, now + std::chrono::milliseconds(100)));
        }
    }

    /// Sends one request with retries and writes its record (none when stopped midway).
    void send(httplib::Client& client, const job& j, std::mt19937_64& rng) {
        const ratelimit::llm::request_cost cost = estimate_cost(j.body, j.url, options_.default_max_tokens);
        const std::string payload = j.body.dump(-1, ' ', false, json::error_handler_t::replace);
        const std::string path = endpoint_.path_prefix + j.url;
        httplib::Headers headers;
        if (!options_.api_key.empty()) headers.emplace("Authorization", "Bearer " + options_.api_key);
        headers.emplace("Idempotency-Key", idempotency_key(identity_, j.line, j.custom_id));
        headers.emplace("X-Request-ID", header_value(j.custom_id));
        std::uniform_real_distribution<double> unit(0.0, 1.0);

        std::optional<response_info> last;
        record_error error;
        for (int attempt = 1;; ++attempt) {
            if (attempt > 1) ++counters_.retries;
            std::optional<gate_type::ticket> ticket;
            probe_turn probe(*this);  // while the limits are unknown: one request at a time
            if (options_.use_gate) {
                if (!probe.take()) return left_unfinished();
                try {
                    // The gate's line: charged only when the request goes, so the
                    // tokens finished requests give back serve the next ones.
                    ticket.emplace(gate_.acquire(cost));
                } catch (const ratelimit::llm::gate_closed&) {
                    return left_unfinished();  // stopping: --resume sends it
                } catch (const ratelimit::capacity_exceeded& e) {
                    return write_record(rng, j, std::nullopt,
                                        record_error{"request_too_large", std::string("can never fit the limit: ") + e.what()});
                }
                if (stopping()) return left_unfinished();
            }

            if (attempt == 1) {
                if (in_flight_before_.count(j.line) != 0) ++counters_.resent;
                journal_->sent(j.line);
            }
            ++counters_.http_requests;
            httplib::Result res = client.Post(path, headers, payload, "application/json");
            std::chrono::milliseconds delay{0};
            if (!res) {
                ticket.reset();  // dropped: the gate keeps the whole estimate charged
                ++counters_.network_errors;
                error = {"network_error", "no response: " + httplib::to_string(res.error())};
                if (!retryable_error(res.error())) break;
                if (attempt >= options_.max_attempts) {
                    error.message += gave_up(attempt);
                    break;
                }
                delay = backoff_delay(attempt, options_.backoff_initial, options_.backoff_max, unit(rng));
            } else {
                probe.answered();  // its headers are in the gate (or there are none to learn from)
                const int status = res->status;
                last = response_info{status, "", parse_body(res->body)};
                last->request_id = res->get_header_value("x-request-id");
                if (last->request_id.empty() && last->body.is_object()) {
                    if (const auto id = last->body.find("id"); id != last->body.end() && id->is_string()) {
                        last->request_id = id->get<std::string>();
                    }
                }
                if (status >= 200 && status < 300) {
                    const std::optional<ratelimit::llm::usage> used = usage_of(last->body);
                    if (ticket) {
                        ticket->complete(status, res->headers, used);
                        note_limits();
                    }
                    if (used) {
                        counters_.prompt_tokens += used->input_tokens;
                        counters_.completion_tokens += used->output_tokens;
                    }
                    return write_record(rng, j, last, std::nullopt);
                }
                if (ticket) {
                    ticket->complete(status, res->headers);
                    note_limits();
                }
                if (status == 429) ++counters_.throttled;
                if (status >= 500) ++counters_.server_errors;
                error = error_of(status, last->body);
                if (!retryable_status(status)) break;
                if (attempt >= options_.max_attempts) {
                    error.message += gave_up(attempt);
                    break;
                }
                const ratelimit::quota_snapshot quota = ratelimit::parse_rate_limit_headers(res->headers);
                // A server's retry-after is obeyed up to the gate's max_pause (10 min), as the gate does.
                delay = quota.retry_after ? std::chrono::ceil<std::chrono::milliseconds>(
                                                std::min(*quota.retry_after, gate_.config().max_pause))
                                          : backoff_delay(attempt, options_.backoff_initial, options_.backoff_max, unit(rng));
            }
            probe.release();
            if (!sleep_until(steady::now() + delay)) return left_unfinished();
        }
        write_record(rng, j, last, error);
    }

    /// A worker's turn to send while the limits are still unknown (learned
    /// mode, no response seen yet): the first wave would otherwise go out as
    /// `concurrency` requests at once, and every one beyond the provider's
    /// burst (1 at 60 RPM) draws a 429. So until the first answer, one request
    /// is in flight; its headers teach the gate the limits, and the rest go
    /// paced. A network error passes the turn on; an answer ends the probing
    /// (headers or not: without them there is nothing to wait for).
    class probe_turn {
    public:
        explicit probe_turn(runner& r) : runner_(r) {}
        probe_turn(const probe_turn&) = delete;
        probe_turn& operator=(const probe_turn&) = delete;
        ~probe_turn() { release(); }

        /// Waits for the turn while probing; false when the run is stopping.
        bool take() {
            std::unique_lock lock(runner_.probe_mutex_);
            for (;;) {
                if (runner_.probe_done_) return true;
                if (!runner_.probe_busy_) {
                    runner_.probe_busy_ = held_ = true;
                    return true;
                }
                if (runner_.stopping()) return false;
                runner_.probe_wake_.wait_for(lock, std::chrono::milliseconds(50));
            }
        }
        /// The request got an HTTP answer: probing ends when this turn ends
        /// (after complete() has fed its headers to the gate).
        void answered() noexcept { answered_ = true; }

        /// Ends the turn (before a retry delay, so the next worker may probe meanwhile); idempotent.
        void release() {
            if (!held_) return;
            {
                std::lock_guard lock(runner_.probe_mutex_);
                runner_.probe_busy_ = held_ = false;
                if (answered_) runner_.probe_done_ = true;
            }
            runner_.probe_wake_.notify_all();
        }

    private:
        runner& runner_;
        bool held_ = false;
        bool answered_ = false;
    };

    /// Writes the limits in force to the journal when they changed (learned from headers).
    void note_limits() {
        const ratelimit::llm::stats g = gate_.snapshot();
        journal_->limits(g.requests_per_minute, g.tokens_per_minute);
    }

    /// A request given up because of the stop flag: no record, --resume sends it.
    void left_unfinished() {
        std::lock_guard lock(input_mutex_);
        ++unfinished_;
    }

    static std::string gave_up(int attempts) {
        return " (gave up after " + std::to_string(attempts) + (attempts == 1 ? " attempt)" : " attempts)");
    }

    /// A response body as JSON, or as its raw text when it is not JSON.
    static json parse_body(const std::string& text) {
        if (json_depth(text) <= max_json_depth) {
            json body = json::parse(text, nullptr, false);
            if (!body.is_discarded()) return body;
        }
        return json(text);
    }

    /// The error record for a final non-2xx answer: the body's OpenAI-shaped
    /// error when it has one. Codes: rate_limited (429), server_error (5xx),
    /// the body's error.code or http_<status> (other 4xx).
    static record_error error_of(int status, const json& body) {
        std::string code = "http_" + std::to_string(status);
        std::string message = "HTTP " + std::to_string(status);
        if (body.is_object()) {
            if (const auto e = body.find("error"); e != body.end() && e->is_object()) {
                if (const auto m = e->find("message"); m != e->end() && m->is_string()) message += ": " + m->get<std::string>();
                if (const auto c = e->find("code"); c != e->end() && c->is_string() && !retryable_status(status)) {
                    code = c->get<std::string>();
                }
            }
        }
        if (status == 429) code = "rate_limited";
        else if (status >= 500) code = "server_error";
        return {std::move(code), std::move(message)};
    }

    summary collect(double elapsed_s) const {
        summary s;
        s.succeeded = counters_.succeeded.load();
        s.failed = counters_.failed.load();
        s.requests = s.succeeded + s.failed;
        s.malformed = counters_.malformed.load();
        s.throttled_429 = counters_.throttled.load();
        s.server_errors = counters_.server_errors.load();
        s.network_errors = counters_.network_errors.load();
        s.retries = counters_.retries.load();
        s.http_requests = counters_.http_requests.load();
        s.prompt_tokens = counters_.prompt_tokens.load();
        s.completion_tokens = counters_.completion_tokens.load();
        s.skipped_resumed = counters_.skipped.load();
        s.previously_failed = resumed_.failed;
        s.retried_failed = retried_;
        s.resent = counters_.resent.load();
        s.total_lines = total_lines_;
        s.unfinished = unfinished_;
        s.elapsed_s = elapsed_s;
        const ratelimit::llm::stats g = gate_.snapshot();
        s.learned_requests_per_minute = g.requests_per_minute;
        s.learned_tokens_per_minute = g.tokens_per_minute;
        s.stopped = options_.stop != nullptr && options_.stop->load() && s.unfinished > 0;
        return s;
    }

    void write_summary(const summary& s) const {
        std::ofstream out(options_.summary_json_path, std::ios::trunc);
        out << s.to_json().dump(2) << "\n";
        out.flush();
        if (!out) throw std::runtime_error("cannot write summary " + options_.summary_json_path);
    }

    options options_;
    endpoint endpoint_;
    gate_type gate_;
    resume_state resumed_;
    std::optional<output_file> output_;
    std::optional<journal> journal_;
    std::unordered_set<std::int64_t> in_flight_before_;  // lines an earlier run sent without a record
    std::string identity_;                              // input_identity of the input
    std::int64_t total_lines_ = 0;
    counters counters_;

    std::mutex input_mutex_;  // guards the reader state below and fatal_
    std::ifstream input_;
    std::int64_t line_number_ = 0;
    std::int64_t dispatched_ = 0;
    std::int64_t unfinished_ = 0;  // lines taken but not answered, and lines never taken
    std::unordered_map<std::string, std::int64_t> seen_;
    std::int64_t mismatched_ = 0;  // output records whose custom_id differs from their input line's
    std::int64_t retried_ = 0;     // failed records dropped from the output to be sent again
    std::exception_ptr fatal_;
    std::atomic<bool> fatal_flag_{false};

    std::mutex probe_mutex_;  // guards the two flags below (probe_turn)
    std::condition_variable probe_wake_;
    bool probe_busy_ = false;
    bool probe_done_ = true;  // set false by the constructor in learned mode

    std::mutex watch_mutex_;  // guards workers_done_
    std::condition_variable watch_wake_;
    bool workers_done_ = false;
};

/// Sets up and runs a batch; see runner.
inline summary run(const options& o) {
    runner r(o);
    return r.run();
}

}  // namespace llm_batch
