#pragma once
// examples/distributed/shared_quota.hpp: N processes sharing one quota through
// ratelimit::redis::token_bucket.
//
// The parent fixes one deadline, forks `workers` processes and waits. Each
// worker opens its own connection to Redis, builds a token bucket on the same
// key, and takes one permit at a time until the deadline; it sends its count
// back through a pipe. Because the bucket lives in Redis, the processes
// together are held to one quota: at most burst + rate·T permits in the T
// seconds, however many processes there are.
//
// A worker waits for each permit with try_acquire_until(1, deadline), the
// blocking acquisition that never waits past the deadline (acquire() would
// let the last permit of each worker become usable after it). One round trip
// per permit; no polling. During an outage the policy answers (fail_closed:
// no permit; fail_open: a permit; local_fallback: an in-process bucket at
// 1/workers of the quota, empty when Redis goes away mid-run, whose grants
// are taken from the shared bucket when Redis is back, so the workers stay
// within burst + rate·T across the outage); a refused worker retries every
// outage_pause, so a server that comes back is used again at once. A server
// that refuses the connection (AUTH failed) stops the worker with that
// reason: the run then fails (exit status 1).

#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <type_traits>
#include <vector>

#include <ratelimit/redis.hpp>

namespace distributed {

using std::chrono::steady_clock;
using ratelimit::redis::on_error;

/// What one run does (the program's flags).
struct config {
    std::string host = "127.0.0.1";
    int port = 0;
    std::string key = "demo";
    double rate = 20;        ///< permits per second, shared by all workers
    std::int64_t burst = 5;  ///< the bucket's capacity
    double seconds = 3;      ///< how long the workers run
    int workers = 2;         ///< processes sharing the quota
    on_error policy = on_error::fail_closed;
    std::string password;  ///< sent as AUTH when not empty (read from an environment variable)
};

/// How long a worker refused by an outage waits before it asks again.
inline constexpr std::chrono::milliseconds outage_pause{100};

/// "fail_open", "fail_closed", "local_fallback" -> the policy; anything else -> nothing.
inline std::optional<on_error> parse_policy(std::string_view text) {
    if (text == "fail_open") return on_error::fail_open;
    if (text == "fail_closed") return on_error::fail_closed;
    if (text == "local_fallback") return on_error::local_fallback;
    return std::nullopt;
}

inline const char* policy_name(on_error policy) {
    switch (policy) {
        case on_error::fail_open: return "fail_open";
        case on_error::fail_closed: return "fail_closed";
        case on_error::local_fallback: return "local_fallback";
    }
    return "?";
}

/// The most permits the workers may get together: burst + rate·seconds.
inline double quota(const config& c) { return static_cast<double>(c.burst) + c.rate * c.seconds; }

/// The limiter options of a worker: the policy, and under local_fallback a
/// 1/workers share of the quota each, so the sum stays within it during an outage.
inline ratelimit::redis::options limiter_options(const config& c) {
    ratelimit::redis::options o;
    o.policy = c.policy;
    o.fallback_share = 1.0 / c.workers;
    return o;
}

/// Builds (without touching the network) what a worker would build, so a bad
/// key, rate or burst is reported once, before any process is forked.
/// Throws std::invalid_argument naming the bad value.
inline void check(const config& c) {
    if (c.workers < 1) throw std::invalid_argument("--workers must be >= 1, got " + std::to_string(c.workers));
    ratelimit::redis::connection conn(c.host, c.port);
    ratelimit::redis::token_bucket<> bucket(conn, c.key, ratelimit::rate::per_second(c.rate), c.burst,
                                            limiter_options(c));
}

/// One worker's outcome; trivially copyable, so it crosses the pipe as bytes.
struct worker_result {
    std::int64_t permits = 0;   ///< permits granted (by Redis or by the policy)
    std::uint64_t outages = 0;  ///< calls the policy answered because Redis did not
    bool ok = false;            ///< false: the worker died or threw
};
static_assert(std::is_trivially_copyable_v<worker_result>);

/// One worker: its own connection, the shared bucket, one permit at a time
/// until `deadline`. Every permit granted is usable by the deadline.
inline worker_result run_worker(const config& c, steady_clock::time_point deadline) {
    ratelimit::redis::connection_options connection_options;
    connection_options.pool_size = 1;
    connection_options.password = c.password;
    ratelimit::redis::connection conn(c.host, c.port, connection_options);
    ratelimit::redis::token_bucket<> bucket(conn, c.key, ratelimit::rate::per_second(c.rate), c.burst,
                                            limiter_options(c));
    worker_result result;
    while (steady_clock::now() < deadline) {
        const std::uint64_t outages_before = bucket.outages();
        const bool granted = bucket.try_acquire_until(1, deadline);
        // A server that refuses the connection (a wrong password) is a
        // configuration error, not an outage: stop with its reason.
        if (bucket.outages() != outages_before && conn.refused()) throw std::runtime_error(conn.last_error());
        if (granted) {
            ++result.permits;
            continue;
        }
        if (bucket.outages() == outages_before) break;  // the next permit comes after the deadline
        std::this_thread::sleep_until(std::min(deadline, steady_clock::now() + outage_pause));
    }
    result.outages = bucket.outages();
    result.ok = true;
    return result;
}

/// A whole run: what each worker got and how long it took.
struct run_result {
    std::vector<worker_result> workers;
    double elapsed_seconds = 0;

    [[nodiscard]] std::int64_t total() const {
        std::int64_t sum = 0;
        for (const worker_result& w : workers) sum += w.permits;
        return sum;
    }
    [[nodiscard]] bool all_ok() const {
        return std::all_of(workers.begin(), workers.end(), [](const worker_result& w) { return w.ok; });
    }
    /// Every worker finished and together they stayed within burst + rate·seconds.
    [[nodiscard]] bool within(const config& c) const {
        return all_ok() && static_cast<double>(total()) <= std::floor(quota(c) + 1e-9);
    }
};

namespace detail {

inline bool read_all(int fd, void* data, std::size_t size) {
    auto* bytes = static_cast<char*>(data);
    while (size > 0) {
        const ssize_t got = ::read(fd, bytes, size);
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0) return false;
        bytes += got;
        size -= static_cast<std::size_t>(got);
    }
    return true;
}

inline void write_all(int fd, const void* data, std::size_t size) {
    const auto* bytes = static_cast<const char*>(data);
    while (size > 0) {
        const ssize_t put = ::write(fd, bytes, size);
        if (put < 0 && errno == EINTR) continue;
        if (put <= 0) return;
        bytes += put;
        size -= static_cast<std::size_t>(put);
    }
}

}  // namespace detail

/// Forks c.workers processes that run run_worker until one shared deadline
/// (now + c.seconds) and collects their results. Call it from a process with
/// no other thread (fork copies only the calling one). A worker that throws
/// prints one line on stderr and reports ok = false.
inline run_result run(const config& c) {
    std::fflush(nullptr);  // nothing buffered may be written twice
    const auto start = steady_clock::now();
    const auto deadline =
        start + std::chrono::duration_cast<steady_clock::duration>(std::chrono::duration<double>(c.seconds));
    struct child {
        pid_t pid;
        int fd;
    };
    std::vector<child> children;
    for (int i = 0; i < c.workers; ++i) {
        int fds[2];
        if (::pipe(fds) != 0) throw std::system_error(errno, std::generic_category(), "pipe");
        const pid_t pid = ::fork();
        if (pid < 0) throw std::system_error(errno, std::generic_category(), "fork");
        if (pid == 0) {
            ::close(fds[0]);
            for (const child& earlier : children) ::close(earlier.fd);
            worker_result result;
            try {
                result = run_worker(c, deadline);
            } catch (const std::exception& e) {
                std::fprintf(stderr, "distributed: worker %d: %s\n", i + 1, e.what());
            }
            detail::write_all(fds[1], &result, sizeof result);
            std::fflush(nullptr);
            ::_exit(0);  // no atexit handlers or destructors of the parent's objects
        }
        ::close(fds[1]);
        children.push_back({pid, fds[0]});
    }
    run_result results;
    for (const child& ch : children) {
        worker_result result;
        if (!detail::read_all(ch.fd, &result, sizeof result)) result = worker_result{};
        ::close(ch.fd);
        int status = 0;
        while (::waitpid(ch.pid, &status, 0) < 0 && errno == EINTR) {
        }
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) result.ok = false;
        results.workers.push_back(result);
    }
    results.elapsed_seconds = std::chrono::duration<double>(steady_clock::now() - start).count();
    return results;
}

// --- output ------------------------------------------------------------------

/// The shortest text that reads back as x ("20", "0.5", "1e+06").
inline std::string number_text(double x) {
    char buffer[32];
    const auto [end, ec] = std::to_chars(buffer, buffer + sizeof buffer, x);
    return ec == std::errc{} ? std::string(buffer, end) : std::string("0");
}

/// Seconds with one decimal when that is exact ("3.0", "2.5"), else in full.
inline std::string seconds_text(double s) {
    if (std::abs(s * 10 - std::round(s * 10)) < 1e-9) {
        char buffer[32];
        std::snprintf(buffer, sizeof buffer, "%.1f", s);
        return buffer;
    }
    return number_text(s);
}

/// One line per worker and a total line.
inline std::string report_text(const config& c, const run_result& r) {
    std::string out;
    for (std::size_t i = 0; i < r.workers.size(); ++i) {
        const worker_result& w = r.workers[i];
        out += "worker " + std::to_string(i + 1) + ": ";
        if (!w.ok) {
            out += "failed\n";
            continue;
        }
        out += std::to_string(w.permits) + (w.permits == 1 ? " permit" : " permits");
        if (w.outages > 0) {
            out += " (" + std::to_string(w.outages) + " calls answered by " + policy_name(c.policy) +
                   ": Redis did not answer)";
        }
        out += "\n";
    }
    const std::string t = seconds_text(c.seconds);
    out += "total: " + std::to_string(r.total()) + " permits in " + t + " s; the quota allows at most " +
           std::to_string(c.burst) + " + " + number_text(c.rate) + " x " + t + " = " + number_text(quota(c));
    if (!r.all_ok()) out += "; a worker failed";
    else if (!r.within(c)) out += "; EXCEEDED";
    out += "\n";
    return out;
}

inline std::string json_string(std::string_view s) {
    std::string out = "\"";
    for (const char ch : s) {
        const auto u = static_cast<unsigned char>(ch);
        if (ch == '"' || ch == '\\') {
            out += '\\';
            out += ch;
        } else if (u < 0x20) {
            char buffer[8];
            std::snprintf(buffer, sizeof buffer, "\\u%04x", u);
            out += buffer;
        } else {
            out += ch;
        }
    }
    return out + "\"";
}

/// The same as one JSON object (one line).
inline std::string report_json(const config& c, const run_result& r) {
    std::string out = "{\"key\":" + json_string(c.key) + ",\"policy\":\"" + policy_name(c.policy) +
                      "\",\"rate\":" + number_text(c.rate) + ",\"burst\":" + std::to_string(c.burst) +
                      ",\"seconds\":" + number_text(c.seconds) + ",\"workers\":[";
    for (std::size_t i = 0; i < r.workers.size(); ++i) {
        const worker_result& w = r.workers[i];
        if (i > 0) out += ",";
        out += "{\"worker\":" + std::to_string(i + 1) + ",\"permits\":" + std::to_string(w.permits) +
               ",\"outages\":" + std::to_string(w.outages) + ",\"ok\":" + (w.ok ? "true" : "false") + "}";
    }
    out += "],\"total\":" + std::to_string(r.total()) + ",\"quota\":" + number_text(quota(c)) +
           ",\"within_quota\":" + (r.within(c) ? "true" : "false") +
           ",\"elapsed_seconds\":" + number_text(std::round(r.elapsed_seconds * 1000) / 1000) + "}\n";
    return out;
}

}  // namespace distributed
