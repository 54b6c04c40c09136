#pragma once
// The part every Redis-backed limiter shares: one script call per decision,
// the shared limiter contract around it (argument checks, deadlines, waits),
// and the outage policy. Each limiter supplies only its script and its
// in-process fallback.

#include <algorithm>
#include <array>
#include <atomic>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>

#include "../clock.hpp"
#include "../detail/chrono.hpp"
#include "../limiter.hpp"
#include "connection.hpp"
#include "options.hpp"

namespace ratelimit::redis::detail {

/// What a limiter script concluded. Every script returns {verdict, delay_ns, value}.
enum class verdict : long long {
    granted = 0,       ///< taken; usable after delay_ns (0: now)
    too_late = 1,      ///< not taken; could be at the earliest after delay_ns
    never = 2,         ///< n can never be granted
    out_of_range = 3,  ///< the state cannot represent the reservation
};

namespace lua {

/// What every limiter script starts with: the codes of `verdict` above and an
/// exact floored division (Lua numbers are doubles; for integers below 2^53
/// the quotient is floored and then corrected to be exact).
inline constexpr std::string_view prelude = R"lua(
local GRANTED, TOO_LATE, NEVER, OUT_OF_RANGE = 0, 1, 2, 3

local function floor_div(a, b)
  local q = math.floor(a / b)
  if q * b > a then q = q - 1 elseif (q + 1) * b <= a then q = q + 1 end
  return q
end
)lua";

}  // namespace lua

/// One script call's result: `reached` is false when Redis did not answer.
struct answer {
    bool reached = false;
    verdict outcome = verdict::too_late;
    std::int64_t delay_ns = 0;
    std::int64_t value = 0;  ///< the script's third number (e.g. permits left)
    std::array<std::int64_t, 3> record{};  ///< numbers 4 to 6 when the script returns them
};

/// Integers as decimal text on the stack, for script arguments.
template <std::size_t N>
class number_args {
public:
    number_args(std::initializer_list<std::int64_t> numbers) {
        std::size_t i = 0;
        for (std::int64_t v : numbers) {
            if (i == N) break;
            const auto [end, ec] = std::to_chars(text_[i].data(), text_[i].data() + text_[i].size(), v);
            (void)ec;  // 24 chars hold any int64
            views_[i] = std::string_view(text_[i].data(), static_cast<std::size_t>(end - text_[i].data()));
            ++i;
        }
        size_ = i;
    }
    [[nodiscard]] std::span<const std::string_view> view() const noexcept { return {views_.data(), size_}; }

private:
    std::array<std::array<char, 24>, N> text_{};
    std::array<std::string_view, N> views_{};
    std::size_t size_ = 0;
};

/// Runs `s` once and reads {verdict, delay_ns, value}; anything else (no
/// answer, an error reply, a reply of another shape) is an unreached answer.
inline answer call(connection& c, const script& s, std::span<const std::string_view> keys,
                   std::span<const std::string_view> args) {
    const reply r = c.eval(s, keys, args);
    const redisReply* raw = r.get();
    if (!r.ok() || raw->type != REDIS_REPLY_ARRAY || raw->elements < 3) return {};
    for (std::size_t i = 0; i < 3; ++i) {
        if (raw->element[i]->type != REDIS_REPLY_INTEGER) return {};
    }
    const long long code = raw->element[0]->integer;
    if (code < 0 || code > 3) return {};
    answer a{true, static_cast<verdict>(code), std::max<long long>(raw->element[1]->integer, 0),
             raw->element[2]->integer};
    for (std::size_t i = 3; i < 6 && i < raw->elements; ++i) {
        if (raw->element[i]->type == REDIS_REPLY_INTEGER) a.record[i - 3] = raw->element[i]->integer;
    }
    return a;
}

/// The shared contract of a Redis-backed limiter, around one callable
/// `ask(n, wait_ns) -> answer` that runs the limiter's script: "take n
/// permits usable within wait_ns of the server's now".
///
/// `Local` is the in-process limiter answering under on_error::local_fallback.
/// The outage policy lives here once, for every Redis-backed limiter:
///
/// - An outage that begins after this object has reached Redis starts its
///   local limiter empty (drained: the permits Redis granted before it are
///   already in use), so a local bucket only refills, at the share, while
///   Redis is away; a local window or log has its current window full. An
///   outage from the start (Redis never answered this object) starts it as
///   constructed (full).
/// - Every permit the local limiter grants for a rate limiter is owed to
///   Redis: the first call that reaches Redis again first takes the debt
///   there (at most capacity per round trip, usable ahead when the script
///   can take ahead, so the shared state falls into debt rather than refuse),
///   and only then its own n. A debt Redis cannot take yet (a full log) makes
///   the call wait or refuse as if its own n did not fit: first in line.
///   Concurrency permits are released, not used up: nothing is owed; the
///   concurrency fallback instead starts with all its permits held in place
///   of this object's Redis leases, and frees one for each of those leases
///   the object releases during the outage (so a process holds at most what
///   it held through Redis, and at most the share locally): the live leases
///   and local permits of all processes stay within max_concurrent. Local
///   permits still held when Redis answers again are not known to Redis
///   until released (up to P·s·max_concurrent more meanwhile).
///
/// Bound across an outage (token bucket: B(T) = capacity + r·T): with P
/// processes each at fallback_share s and P·s <= 1, the permits granted in
/// all in any interval of length T stay within B(T) when every process
/// reaches Redis again after the outage (each settles its debt before its
/// next grant from Redis), plus what other processes take from Redis in the
/// round trips before the last debt is paid. Two exceptions add to it: P·s·capacity for processes whose outage
/// began before they ever reached Redis (their buckets start full), and the
/// local grants of a process that never reaches Redis again (at most
/// s·r·D over an outage of length D). For a window limiter the debt is
/// counted in the first window with room once Redis answers, so each Redis
/// window holds at most `limit` grants and debt together; in real time a
/// window during the outage may see up to P·s·limit local grants beyond
/// its limit (local windows are aligned apart from Redis's), which the
/// windows after the outage then give up.
template <clock Clock, class Local>
class remote {
public:
    using duration = typename Clock::duration;
    using time_point = typename Clock::time_point;

    template <class... LocalArgs>
    remote(const char* name, connection& c, options o, Clock clock, std::int64_t capacity, LocalArgs&&... local)
        : name_(name), connection_(&c), options_(std::move(o)), clock_(std::move(clock)), capacity_(capacity) {
        check_share(name, options_.fallback_share);
        if (options_.policy == on_error::local_fallback) fallback_.emplace(std::forward<LocalArgs>(local)..., clock_);
    }

    [[nodiscard]] connection& conn() const noexcept { return *connection_; }
    [[nodiscard]] const options& opts() const noexcept { return options_; }
    [[nodiscard]] Clock& clock() noexcept { return clock_; }
    [[nodiscard]] std::int64_t capacity() const noexcept { return capacity_; }
    /// Calls answered by the outage policy instead of Redis.
    [[nodiscard]] std::uint64_t outages() const noexcept { return outages_.load(std::memory_order_relaxed); }
    /// The in-process limiter used under on_error::local_fallback (null otherwise).
    [[nodiscard]] Local* fallback() noexcept { return fallback_ ? &*fallback_ : nullptr; }

    /// try_acquire_until: n permits usable by `deadline`, sleeping for the
    /// delay the script returns; false at once when the script says the
    /// earliest grant is later. Each retry sleeps the script's delay first.
    template <class Ask>
    bool try_until(std::int64_t n, time_point deadline, Ask&& ask) {
        ratelimit::detail::check_count(name_, n);
        if (n == 0) return true;
        if (n > capacity_) return false;
        for (;;) {
            const time_point now = clock_.now();
            const std::int64_t wait_ns = deadline <= now ? 0 : ratelimit::detail::saturating_ns(deadline - now);
            answer a = pay_debt(ask);  // granted when nothing is owed
            if (a.reached && a.outcome == verdict::granted) a = ask(n, wait_ns);
            if (!a.reached) return on_outage(n, deadline);
            note_reached();
            if (a.outcome == verdict::granted) {
                if (a.delay_ns > 0) sleep_for_ns(now, a.delay_ns);
                return true;
            }
            if (a.outcome != verdict::too_late || a.delay_ns > wait_ns) return false;
            sleep_for_ns(now, std::max<std::int64_t>(a.delay_ns, 1));
        }
    }

    /// acquire: n permits, waiting as long as it takes; returns the time waited.
    /// Under an outage: fail_open returns at once, local_fallback asks the
    /// local limiter, fail_closed throws unavailable.
    template <class Ask>
    duration acquire(std::int64_t n, Ask&& ask) {
        ratelimit::detail::check_count(name_, n);
        if (n > capacity_) throw capacity_exceeded(name_, n, capacity_);
        const time_point start = clock_.now();
        if (n == 0) return duration::zero();
        for (;;) {
            const time_point now = clock_.now();
            answer a = pay_debt(ask);
            if (a.reached && a.outcome == verdict::granted) a = ask(n, std::numeric_limits<std::int64_t>::max());
            if (!a.reached) {
                on_outage_blocking(n);
                return clock_.now() - start;
            }
            note_reached();
            if (a.outcome == verdict::granted) {
                if (a.delay_ns > 0) sleep_for_ns(now, a.delay_ns);
                return clock_.now() - start;
            }
            if (a.outcome != verdict::too_late) throw capacity_exceeded(name_, n, capacity_);
            sleep_for_ns(now, std::max<std::int64_t>(a.delay_ns, 1));
        }
    }

    /// Notes one call answered without Redis.
    void count_outage() noexcept { outages_.fetch_add(1, std::memory_order_relaxed); }

    /// Notes that Redis answered: the next outage starts the local limiter
    /// empty; a concurrency fallback gets back the permits it held for this
    /// object's Redis leases.
    void note_reached() {
        if (!reached_.load(std::memory_order_relaxed)) reached_.store(true, std::memory_order_relaxed);
        if (down_.load(std::memory_order_relaxed)) down_.store(false, std::memory_order_relaxed);
        if constexpr (!consumes) {
            if (placeholders_.load(std::memory_order_acquire) > 0) {
                const std::int64_t k = placeholders_.exchange(0, std::memory_order_acq_rel);
                if (k > 0) fallback_->release(k);
            }
        }
    }

    /// Concurrency: this object gave back k Redis leases it held; during an
    /// outage each frees one local permit held in their place (see drain).
    void released_remote(std::int64_t k) {
        if constexpr (!consumes) {
            std::int64_t held = placeholders_.load(std::memory_order_acquire);
            while (held > 0 && k > 0) {
                const std::int64_t freed = std::min(held, k);
                if (placeholders_.compare_exchange_weak(held, held - freed, std::memory_order_acq_rel)) {
                    fallback_->release(freed);
                    return;
                }
            }
        }
    }

    /// The local limiter, for a call Redis did not answer under
    /// on_error::local_fallback: drained first when this call begins an
    /// outage after Redis has answered (see the class comment). Counts the outage.
    Local& outage_fallback() {
        count_outage();
        if (!down_.exchange(true, std::memory_order_acq_rel) && reached_.load(std::memory_order_relaxed)) {
            drain(*fallback_);
        }
        return *fallback_;
    }

    /// Notes n permits the local limiter granted, to be taken from Redis when it answers again.
    void owe(std::int64_t n) noexcept {
        if constexpr (consumes) debt_.fetch_add(n, std::memory_order_acq_rel);
    }
    /// Permits the local fallback granted that Redis has not been charged for yet.
    [[nodiscard]] std::int64_t debt() const noexcept { return debt_.load(std::memory_order_acquire); }

    /// Takes the debt from Redis, at most capacity per round trip, with no
    /// deadline (a script that can take ahead puts the shared state in debt).
    /// Returns granted when nothing is owed any more; the unreached answer
    /// when Redis did not answer; the script's too_late answer (its delay
    /// says when the debt could go) when Redis cannot take it yet. What is
    /// not taken stays owed. A debt the script can never take (never,
    /// out_of_range) is dropped.
    template <class Ask>
    answer pay_debt(Ask& ask) {
        answer paid{true, verdict::granted};
        if (debt_.load(std::memory_order_acquire) == 0) return paid;
        std::int64_t owed = debt_.exchange(0, std::memory_order_acq_rel);
        while (owed > 0) {
            const std::int64_t k = std::min(owed, capacity_);
            const answer a = ask(k, std::numeric_limits<std::int64_t>::max());
            if (!a.reached || a.outcome == verdict::too_late) {
                debt_.fetch_add(owed, std::memory_order_acq_rel);
                if (a.reached) note_reached();
                return a;
            }
            owed -= k;
        }
        note_reached();
        return paid;
    }

    /// The policy's answer to a blocking acquire of n during an outage:
    /// fail_open returns, local_fallback waits in the local limiter,
    /// fail_closed throws unavailable.
    void on_outage_blocking(std::int64_t n) {
        switch (options_.policy) {
            case on_error::fail_open: count_outage(); return;
            case on_error::local_fallback:
                (void)outage_fallback().acquire(n);
                owe(n);
                return;
            case on_error::fail_closed: count_outage(); break;
        }
        throw unavailable(std::string(name_) + ": " + why_unavailable() + " and the policy is fail_closed");
    }

    /// The policy's answer to "may n permits go by `deadline`?" during an outage.
    bool on_outage(std::int64_t n, time_point deadline) {
        switch (options_.policy) {
            case on_error::fail_open: count_outage(); return true;
            case on_error::fail_closed: count_outage(); return false;
            case on_error::local_fallback:
                if (!outage_fallback().try_acquire_until(n, deadline)) return false;
                owe(n);
                return true;
        }
        return false;
    }

    /// "Redis did not answer (host:port: why)", or for a server that refused
    /// the connection (wrong password) "Redis refused the connection (...)".
    [[nodiscard]] std::string why_unavailable() const {
        const std::string where = connection_->host() + ":" + std::to_string(connection_->port());
        const std::string why = connection_->last_error();
        if (connection_->refused()) return "Redis refused the connection (" + why + ")";
        return "Redis did not answer (" + (why.empty() ? where : why) + ")";
    }

private:
    /// A limiter whose permits are used up (rate limiters), as opposed to
    /// released (concurrency): only those owe Redis for local grants and start empty.
    static constexpr bool consumes = !requires(Local& l) { l.release(std::int64_t{1}); };

    /// Takes every permit `local` has now (a few tries against concurrent
    /// callers): a rate limiter then grants only what it refills from here
    /// on; a concurrency limiter holds them in place of this object's Redis
    /// leases, one freed per lease released (released_remote), all given
    /// back when Redis answers again (note_reached).
    void drain(Local& local) {
        for (int attempt = 0; attempt < 4; ++attempt) {
            const std::int64_t left = local.available();
            if (left <= 0) return;
            if (local.try_acquire(left)) {
                if constexpr (!consumes) placeholders_.fetch_add(left, std::memory_order_acq_rel);
                return;
            }
        }
    }

    void sleep_for_ns(time_point from, std::int64_t ns) {
        ratelimit::sleep_until(clock_,
                               ratelimit::detail::deadline_after(from, ratelimit::detail::duration_from_ns<duration>(ns)));
    }

    const char* name_;
    connection* connection_;
    options options_;
    [[no_unique_address]] Clock clock_;
    std::int64_t capacity_;
    std::optional<Local> fallback_;
    std::atomic<std::uint64_t> outages_{0};
    std::atomic<std::int64_t> debt_{0};  // local grants Redis has not been charged for
    std::atomic<bool> reached_{false};   // Redis answered this object at least once
    std::atomic<bool> down_{false};      // the latest call answered by the policy found Redis away
    std::atomic<std::int64_t> placeholders_{0};  // concurrency: local permits held for Redis leases
};


/// The public members every script-backed limiter shares (token_bucket, the
/// windows, the log), written once around the limiter's one script call:
/// `Derived::run(op, n, wait_ns) -> answer` with op "take" (n permits usable
/// within wait_ns), "peek" (the same decision, nothing written) or "refund".
/// Derived names this class a friend so that run can stay private.
template <class Derived, clock Clock, class Local>
class script_limiter {
public:
    using clock_type = Clock;
    using duration = typename Clock::duration;
    using time_point = typename Clock::time_point;

    /// Takes n permits if they are available now; never blocks.
    bool try_acquire(std::int64_t n = 1) { return try_acquire_until(n, remote_.clock().now()); }
    /// Takes n permits if they can be had within `d`, sleeping until then;
    /// false at once when the script says the earliest grant is later.
    bool try_acquire_for(std::int64_t n, duration d) {
        const time_point now = remote_.clock().now();
        return try_acquire_until(n, ratelimit::detail::deadline_after(now, d));
    }
    /// Takes n permits if they can be had by `t`, sleeping until then; false
    /// at once when the script says the earliest grant is later. A past `t` acts as now.
    bool try_acquire_until(std::int64_t n, time_point t) {
        return remote_.try_until(n, t, [this](std::int64_t k, std::int64_t wait_ns) { return run("take", k, wait_ns); });
    }
    /// Takes n permits, sleeping until they are usable; returns the time waited.
    /// Throws capacity_exceeded when n is above the limit.
    duration acquire(std::int64_t n = 1) {
        return remote_.acquire(n, [this](std::int64_t k, std::int64_t wait_ns) { return run("take", k, wait_ns); });
    }
    /// Permits available now, or nothing when Redis does not answer.
    [[nodiscard]] std::optional<std::int64_t> available() {
        const answer a = run("peek", 0, 0);
        if (!a.reached) return std::nullopt;
        return a.value;
    }
    /// How long until n permits could be taken (if nobody takes them first):
    /// duration::max() when n is above the limit, nothing when Redis does not answer.
    [[nodiscard]] std::optional<duration> time_until_available(std::int64_t n = 1) {
        ratelimit::detail::check_count(name_, n);
        if (n > remote_.capacity()) return duration::max();
        const answer a = run("peek", n, std::numeric_limits<std::int64_t>::max());
        if (!a.reached) return std::nullopt;
        if (a.outcome != verdict::granted && a.outcome != verdict::too_late) return duration::max();
        return ratelimit::detail::duration_from_ns<duration>(a.delay_ns);
    }
    /// The Redis key holding the state.
    [[nodiscard]] const std::string& key() const noexcept { return key_; }
    /// Calls answered by the outage policy instead of Redis.
    [[nodiscard]] std::uint64_t outages() const noexcept { return remote_.outages(); }

protected:
    /// `kind` names the state key's suffix ("<prefix>:{<key>}:<kind>");
    /// `local` are the fallback limiter's arguments before its clock.
    template <class... LocalArgs>
    script_limiter(const char* name, connection& c, std::string_view key, std::string_view kind, const options& o,
                   Clock clock, std::int64_t capacity, LocalArgs&&... local)
        : name_(name),
          key_(state_key(name, o.prefix, key, kind)),
          remote_(name, c, o, std::move(clock), capacity, std::forward<LocalArgs>(local)...) {}
    script_limiter(const script_limiter&) = delete;
    script_limiter& operator=(const script_limiter&) = delete;
    ~script_limiter() = default;

    /// refund(n) for limiters whose script takes "refund"; ignored during an outage.
    void refund_permits(std::int64_t n) {
        ratelimit::detail::check_count(name_, n);
        if (n > 0) run("refund", n, 0);
    }
    [[nodiscard]] remote<Clock, Local>& shared() noexcept { return remote_; }
    [[nodiscard]] const remote<Clock, Local>& shared() const noexcept { return remote_; }

private:
    answer run(std::string_view op, std::int64_t n, std::int64_t wait_ns) {
        return static_cast<Derived&>(*this).run(op, n, wait_ns);
    }

    const char* name_;
    std::string key_;
    remote<Clock, Local> remote_;
};

}  // namespace ratelimit::redis::detail
