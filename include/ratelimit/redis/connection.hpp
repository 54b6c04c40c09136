#pragma once
// ratelimit::redis::connection: a small thread-safe pool of hiredis contexts
// with timeouts, reconnection and a circuit breaker.

#include <hiredis/hiredis.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cerrno>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <sys/time.h>
#include <pthread.h>
#include <utility>
#include <vector>

#include "../detail/sha1.hpp"

namespace ratelimit::redis {

/// How a connection talks to the server.
struct connection_options {
    std::chrono::milliseconds connect_timeout{200};  ///< to open one TCP connection
    std::chrono::milliseconds command_timeout{100};  ///< to send one command and read its reply
    int pool_size = 4;                               ///< contexts used in parallel, >= 1
    /// After `breaker_threshold` failed calls in a row the circuit opens:
    /// calls fail at once, without touching the network, for this long; then
    /// one call probes the server and closes the circuit when it answers.
    std::chrono::milliseconds breaker_cooldown{250};
    /// Consecutive failed calls that open the circuit (>= 1). 1 protects
    /// callers best during an outage; more rides out a single slow reply, at
    /// the price of that many timeouts before the circuit opens.
    int breaker_threshold = 1;
    /// Sent as AUTH on every new connection when not empty (with `username`
    /// too when that is not empty: Redis 6 ACL users).
    std::string username{};
    std::string password{};
    /// The logical database, selected on every new connection when not 0.
    int database = 0;
};

/// What became of one command.
enum class status {
    ok,            ///< the server answered (see reply::get())
    unavailable,   ///< no answer: connect failure, I/O error, timeout, or the circuit is open
    server_error,  ///< the server answered with an error reply (see reply::error())
};

/// The owned answer to one command.
class reply {
public:
    reply() = default;
    reply(status s, redisReply* raw, std::string error = {}) : status_(s), raw_(raw), error_(std::move(error)) {}

    [[nodiscard]] status code() const noexcept { return status_; }
    [[nodiscard]] bool ok() const noexcept { return status_ == status::ok; }
    /// The server's reply when ok(), else null.
    [[nodiscard]] const redisReply* get() const noexcept { return raw_.get(); }
    /// Why it failed (empty when ok()).
    [[nodiscard]] const std::string& error() const noexcept { return error_; }

    /// Element i of an array reply as an integer, or `fallback` when absent or not an integer.
    [[nodiscard]] long long integer_at(std::size_t i, long long fallback = 0) const noexcept {
        const redisReply* r = raw_.get();
        if (r == nullptr || r->type != REDIS_REPLY_ARRAY || i >= r->elements) return fallback;
        const redisReply* e = r->element[i];
        return e->type == REDIS_REPLY_INTEGER ? e->integer : fallback;
    }

private:
    struct deleter {
        void operator()(redisReply* r) const noexcept { freeReplyObject(r); }
    };
    status status_ = status::unavailable;
    std::unique_ptr<redisReply, deleter> raw_;
    std::string error_;
};

/// A Lua script and its SHA-1 name, computed once: calls use EVALSHA and fall
/// back to EVAL when the server answers NOSCRIPT (after a restart or SCRIPT FLUSH).
class script {
public:
    explicit script(std::string source) : source_(std::move(source)), sha1_(detail::sha1_hex(source_)) {}
    [[nodiscard]] std::string_view source() const noexcept { return source_; }
    [[nodiscard]] const std::string& sha1() const noexcept { return sha1_; }

private:
    std::string source_;
    std::string sha1_;
};

/// A connection to one Redis server: up to `pool_size` hiredis contexts, each
/// used by one thread at a time, opened lazily and reopened after any error.
///
/// Guarantee: every call returns within connect_timeout + command_timeout of
/// getting a context (waiting for a free one is bounded by the same amount),
/// and never throws for an outage: it answers status::unavailable. After a
/// failure the circuit breaker answers unavailable at once for
/// `breaker_cooldown` (after `breaker_threshold` consecutive failures); then
/// one call probes, and the first success closes it.
/// The same connection recovers when the server returns.
///
/// Thread-safe. Each call holds a pool mutex briefly to take and return a
/// context; hiredis allocates each reply. SIGPIPE from a closed socket is
/// blocked for the calling thread during a command and never delivered.
class connection {
public:
    /// A connection to `host`:`port`; nothing is opened until the first command.
    connection(std::string host, int port, connection_options options = {})
        : host_(std::move(host)), port_(port), options_(options) {
        if (port < 1 || port > 65535) {
            throw std::invalid_argument("redis::connection: port must be in [1, 65535], got " + std::to_string(port));
        }
        if (options.pool_size < 1) {
            throw std::invalid_argument("redis::connection: pool_size must be >= 1, got " +
                                        std::to_string(options.pool_size));
        }
        check_timeout("connect_timeout", options.connect_timeout);
        check_timeout("command_timeout", options.command_timeout);
        if (options.database < 0) {
            throw std::invalid_argument("redis::connection: database must be >= 0, got " +
                                        std::to_string(options.database));
        }
        if (options.breaker_threshold < 1) {
            throw std::invalid_argument("redis::connection: breaker_threshold must be >= 1, got " +
                                        std::to_string(options.breaker_threshold));
        }
        if (options.breaker_cooldown.count() < 0) {
            throw std::invalid_argument("redis::connection: breaker_cooldown must be >= 0, got " +
                                        std::to_string(options.breaker_cooldown.count()) + "ms");
        }
        idle_.assign(static_cast<std::size_t>(options.pool_size), nullptr);
    }
    connection(const connection&) = delete;
    connection& operator=(const connection&) = delete;
    ~connection() {
        for (redisContext* c : idle_) {
            if (c != nullptr) redisFree(c);
        }
    }

    [[nodiscard]] const std::string& host() const noexcept { return host_; }
    [[nodiscard]] int port() const noexcept { return port_; }
    [[nodiscard]] const connection_options& options() const noexcept { return options_; }
    /// True while the circuit is open (calls fail at once).
    [[nodiscard]] bool circuit_open() const noexcept {
        return open_until_.load(std::memory_order_acquire) > steady_ns();
    }
    /// True when the latest attempt to open a connection was refused by the
    /// server: AUTH (a wrong password or user) or SELECT answered an error.
    /// A configuration error rather than an outage: it lasts until the options
    /// change. Calls still answer status::unavailable (limiters apply their policy).
    [[nodiscard]] bool refused() const noexcept { return refused_.load(std::memory_order_acquire); }
    /// Why the latest call that got no answer failed, as in its reply's
    /// error() ("redis: cannot connect to H:P: authentication failed: WRONGPASS ...");
    /// empty before any failure.
    [[nodiscard]] std::string last_error() const {
        std::lock_guard lock(error_mutex_);
        return last_error_;
    }

    /// Runs one command, e.g. command({"SET", "k", "v"}).
    reply command(std::span<const std::string_view> args) { return run(args, {}, {}, nullptr); }
    reply command(std::initializer_list<std::string_view> args) {
        return command(std::span<const std::string_view>(args.begin(), args.size()));
    }

    /// Runs `s` with KEYS and ARGV: EVALSHA, and EVAL when the server has
    /// forgotten the script (one more round trip, once).
    reply eval(const script& s, std::span<const std::string_view> keys, std::span<const std::string_view> args) {
        return run({}, keys, args, &s);
    }

private:
    static constexpr std::size_t max_args = 24;

    static void check_timeout(const char* name, std::chrono::milliseconds t) {
        if (t.count() <= 0) {
            throw std::invalid_argument(std::string("redis::connection: ") + name + " must be > 0, got " +
                                        std::to_string(t.count()) + "ms");
        }
    }
    static std::int64_t steady_ns() noexcept {
        return std::chrono::duration_cast<std::chrono::nanoseconds>(
                   std::chrono::steady_clock::now().time_since_epoch())
            .count();
    }
    static timeval to_timeval(std::chrono::milliseconds t) noexcept {
        timeval tv{};
        tv.tv_sec = static_cast<decltype(tv.tv_sec)>(t.count() / 1000);
        tv.tv_usec = static_cast<decltype(tv.tv_usec)>((t.count() % 1000) * 1000);
        return tv;
    }

    // --- circuit breaker ---------------------------------------------------

    /// May a call touch the network? Sets `probe` when this call is the one
    /// probing a circuit whose cooldown has passed.
    bool admit(bool& probe) noexcept {
        const std::int64_t until = open_until_.load(std::memory_order_acquire);
        if (until == 0) return true;
        if (steady_ns() < until) return false;
        probe = !probing_.exchange(true, std::memory_order_acq_rel);
        return probe;
    }
    void record(bool reached_server, bool probe) noexcept {
        if (reached_server) {
            if (failures_.load(std::memory_order_relaxed) != 0) failures_.store(0, std::memory_order_relaxed);
            if (open_until_.load(std::memory_order_relaxed) != 0) open_until_.store(0, std::memory_order_release);
        } else if (probe || failures_.fetch_add(1, std::memory_order_relaxed) + 1 >= options_.breaker_threshold) {
            const std::int64_t cooldown =
                std::chrono::duration_cast<std::chrono::nanoseconds>(options_.breaker_cooldown).count();
            open_until_.store(std::max<std::int64_t>(steady_ns() + cooldown, 1), std::memory_order_release);
        }
        if (probe) probing_.store(false, std::memory_order_release);
    }

    // --- the pool ----------------------------------------------------------

    /// Takes an idle slot (possibly not yet connected); false when none frees
    /// up within connect_timeout + command_timeout.
    bool take(redisContext*& context) {
        std::unique_lock lock(pool_mutex_);
        const auto wait = options_.connect_timeout + options_.command_timeout;
        if (!pool_free_.wait_for(lock, wait, [&] { return !idle_.empty(); })) return false;
        context = idle_.back();
        idle_.pop_back();
        return true;
    }
    void give_back(redisContext* context) {
        {
            std::lock_guard lock(pool_mutex_);
            idle_.push_back(context);
        }
        pool_free_.notify_one();
    }

    /// Opens a context with both timeouts set, authenticated and on its
    /// database; null when any step fails (`refused` says the server answered
    /// AUTH or SELECT with an error, as opposed to not answering, and names
    /// the step with the server's error text).
    redisContext* open(std::string& refused) const {
        redisContext* c = redisConnectWithTimeout(host_.c_str(), port_, to_timeval(options_.connect_timeout));
        if (c == nullptr) return nullptr;
        if (c->err != 0 || redisSetTimeout(c, to_timeval(options_.command_timeout)) != REDIS_OK) {
            redisFree(c);
            return nullptr;
        }
        const auto setup = [&](std::initializer_list<std::string_view> args) {
            std::array<const char*, 3> argv{};
            std::array<std::size_t, 3> lengths{};
            std::size_t argc = 0;
            for (std::string_view a : args) {
                argv[argc] = a.data();
                lengths[argc++] = a.size();
            }
            redisReply* r = send(c, argc, argv.data(), lengths.data());
            if (r == nullptr) return false;  // send freed the context
            const bool ok = r->type != REDIS_REPLY_ERROR;
            if (!ok) refused.append(r->str, r->len);
            freeReplyObject(r);
            return ok;
        };
        if (!options_.password.empty()) {
            refused = "authentication failed: ";
            const bool ok = options_.username.empty() ? setup({"AUTH", options_.password})
                                                      : setup({"AUTH", options_.username, options_.password});
            if (!ok) {
                if (c == nullptr) refused.clear();  // no answer to AUTH: not a refusal
                if (c != nullptr) redisFree(c);
                return nullptr;
            }
        }
        if (options_.database != 0) {
            const std::string database = std::to_string(options_.database);
            refused = "SELECT " + database + " failed: ";
            if (!setup({"SELECT", database})) {
                if (c == nullptr) refused.clear();
                if (c != nullptr) redisFree(c);
                return nullptr;
            }
        }
        refused.clear();
        return c;
    }

    /// Blocks SIGPIPE in this thread while a command writes to a socket the
    /// server may have closed, and discards one raised meanwhile. One system
    /// call when the process already ignores SIGPIPE (as most servers do).
    class sigpipe_guard {
    public:
        sigpipe_guard() noexcept {
            struct sigaction current {};
            if (sigaction(SIGPIPE, nullptr, &current) == 0 && current.sa_handler == SIG_IGN) {
                active_ = false;
                return;
            }
            sigemptyset(&pipe_);
            sigaddset(&pipe_, SIGPIPE);
            sigset_t pending;
            sigpending(&pending);
            was_pending_ = sigismember(&pending, SIGPIPE) == 1;
            pthread_sigmask(SIG_BLOCK, &pipe_, &old_);
        }
        ~sigpipe_guard() {
            if (!active_) return;
            if (!was_pending_) {
                sigset_t pending;
                sigpending(&pending);
                if (sigismember(&pending, SIGPIPE) == 1) {
                    const timespec zero{0, 0};
                    while (sigtimedwait(&pipe_, nullptr, &zero) == -1 && errno == EINTR) {
                    }
                }
            }
            pthread_sigmask(SIG_SETMASK, &old_, nullptr);
        }
        sigpipe_guard(const sigpipe_guard&) = delete;
        sigpipe_guard& operator=(const sigpipe_guard&) = delete;

    private:
        sigset_t pipe_{};
        sigset_t old_{};
        bool was_pending_ = false;
        bool active_ = true;
    };

    /// One command on `context`: null when the connection failed (the
    /// context is then freed and set to null for the next caller to reopen).
    static redisReply* send(redisContext*& context, std::size_t argc, const char** argv, const std::size_t* lengths) {
        sigpipe_guard guard;
        void* raw = redisCommandArgv(context, static_cast<int>(argc), argv, lengths);
        if (raw == nullptr || context->err != 0) {
            if (raw != nullptr) freeReplyObject(raw);
            redisFree(context);
            context = nullptr;
            return nullptr;
        }
        return static_cast<redisReply*>(raw);
    }

    static bool is_noscript(const redisReply* r) noexcept {
        return r->type == REDIS_REPLY_ERROR && std::string_view(r->str, r->len).starts_with("NOSCRIPT");
    }

    /// The one path every command takes: breaker, pool, connect, send, and
    /// for scripts the NOSCRIPT fallback.
    reply run(std::span<const std::string_view> plain, std::span<const std::string_view> keys,
              std::span<const std::string_view> args, const script* s) {
        std::array<const char*, max_args> argv{};
        std::array<std::size_t, max_args> lengths{};
        std::array<char, 24> key_count{};
        std::size_t argc = 0;
        const auto push = [&](std::string_view a) {
            argv[argc] = a.data();
            lengths[argc] = a.size();
            ++argc;
        };
        const std::size_t needed = s != nullptr ? 3 + keys.size() + args.size() : plain.size();
        if (needed > max_args || needed == 0) {
            return {status::server_error, nullptr, "redis::connection: a command takes 1 to 24 arguments"};
        }
        if (s != nullptr) {
            push("EVALSHA");
            push(s->sha1());
            const int written = std::snprintf(key_count.data(), key_count.size(), "%zu", keys.size());
            push(std::string_view(key_count.data(), static_cast<std::size_t>(written)));
            for (std::string_view k : keys) push(k);
            for (std::string_view a : args) push(a);
        } else {
            for (std::string_view a : plain) push(a);
        }

        bool probe = false;
        if (!admit(probe)) {
            return {status::unavailable, nullptr, "redis: circuit open after a failure (" + last_error() + ")"};
        }
        redisContext* context = nullptr;
        if (!take(context)) {
            if (probe) probing_.store(false, std::memory_order_release);
            return failed("redis: no free connection in the pool");
        }
        struct returner {
            connection& self;
            redisContext*& context;
            ~returner() { self.give_back(context); }
        } give{*this, context};

        std::string refused;
        if (context == nullptr) {
            context = open(refused);
            refused_.store(!refused.empty(), std::memory_order_release);
        }
        if (context == nullptr) {
            record(false, probe);
            return failed("redis: cannot connect to " + host_ + ":" + std::to_string(port_) +
                          (refused.empty() ? std::string() : ": " + refused));
        }
        redisReply* r = send(context, argc, argv.data(), lengths.data());
        if (r != nullptr && s != nullptr && is_noscript(r)) {
            freeReplyObject(r);
            argv[0] = "EVAL";
            lengths[0] = 4;
            argv[1] = s->source().data();
            lengths[1] = s->source().size();
            r = send(context, argc, argv.data(), lengths.data());
        }
        record(r != nullptr, probe);
        if (r == nullptr) return failed("redis: no answer from " + host_ + ":" + std::to_string(port_));
        if (r->type == REDIS_REPLY_ERROR) {
            std::string message(r->str, r->len);
            return {status::server_error, r, std::move(message)};
        }
        return {status::ok, r};
    }

    /// An unavailable reply saying `why`, remembered for last_error().
    reply failed(std::string why) {
        {
            std::lock_guard lock(error_mutex_);
            last_error_ = why;
        }
        return {status::unavailable, nullptr, std::move(why)};
    }

    std::string host_;
    int port_;
    connection_options options_;
    std::mutex pool_mutex_;
    std::condition_variable pool_free_;
    std::vector<redisContext*> idle_;  // null: a slot not connected yet
    std::atomic<std::int64_t> open_until_{0};  // steady ns the circuit stays open until; 0 = closed
    std::atomic<bool> probing_{false};
    std::atomic<int> failures_{0};  // consecutive failed calls
    std::atomic<bool> refused_{false};  // the latest open was refused (AUTH or SELECT)
    mutable std::mutex error_mutex_;
    std::string last_error_;  // guarded by error_mutex_
};

}  // namespace ratelimit::redis
