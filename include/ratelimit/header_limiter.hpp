#pragma once
// ratelimit::header_limiter: a limiter that follows what the server says.

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <optional>

#include "clock.hpp"
#include "detail/chrono.hpp"
#include "headers.hpp"
#include "limiter.hpp"

namespace ratelimit {

/// Which quota of a quota_snapshot a header_limiter follows.
enum class quota_dimension { requests, tokens, input_tokens, output_tokens };

/// How a header_limiter reads snapshots.
struct header_limiter_options {
    quota_dimension dimension = quota_dimension::requests;
    /// When the server gives a remaining count but no reset time, assume the
    /// count resets this long after it was received (> 0). Also the length of
    /// a new window when every reset the server announced was zero.
    std::chrono::nanoseconds fallback_reset = std::chrono::seconds{1};
    /// Cap on any retry-after pause a server asks for (> 0): a hostile or
    /// broken `retry-after: 9000000000` would otherwise stop every grant for
    /// 285 years. The default, 10 minutes, is the LLM gate's
    /// `gate_config::max_pause`; no provider asks for longer.
    std::chrono::nanoseconds max_pause = std::chrono::minutes{10};
};

/// A limiter that holds the server's own count: `update(snapshot)` sets the
/// remaining permits and when they reset, and each grant takes from the
/// remaining count until the reset restores it to the limit. Before the first
/// snapshot, and after a reset whose limit is unknown, nothing is known and
/// every request is granted.
///
/// Guarantee: within one server window, never more permits than the lowest
/// remaining count the server reported (held to [0, limit] when the limit is
/// known), less the grants since, plus refunds up to the limit; no grant
/// during a retry-after pause (each capped at options.max_pause). Snapshots
/// merge conservatively: inside the current window a snapshot can lower the
/// remaining count but never raise it (so an older response arriving after a
/// newer one changes nothing); a new window starts only when the current
/// one's reset time has passed; without a new snapshot it lasts as long as
/// the longest reset the server announced.
///
/// Thread-safe: a short mutex around a few integers, never held while
/// sleeping. Blocking waits sleep until the reset or the end of the pause and
/// then look again; they are not first come, first served.
///
/// Edge cases: n == 0 succeeds at once; n above a known limit never blocks
/// (try_* false, acquire throws capacity_exceeded); a snapshot without the
/// followed dimension changes only the pause. Hostile numbers: counts
/// saturate instead of overflowing (refund(INT64_MAX) fills to the limit, or
/// to INT64_MAX when no limit is known); a negative remaining count reads as
/// 0 and a negative limit as unknown; a reset of zero starts a window of
/// fallback_reset, never one that refills on every call. Windows and pauses
/// end at the times they were set, so after a clock goes back they last until
/// it catches up (never shorter). A deadline of time_point::max() waits only
/// as long as the reset or the pause needs.
template <clock Clock = std::chrono::steady_clock>
class header_limiter {
public:
    using clock_type = Clock;
    using duration = typename Clock::duration;
    using time_point = typename Clock::time_point;

    explicit header_limiter(Clock c = {}) : header_limiter(header_limiter_options{}, std::move(c)) {}
    explicit header_limiter(header_limiter_options options, Clock c = {})
        : options_(options), clock_(std::move(c)) {
        if (options_.fallback_reset <= std::chrono::nanoseconds::zero()) {
            throw std::invalid_argument("ratelimit::header_limiter: fallback_reset must be > 0, got " +
                                        std::to_string(options_.fallback_reset.count()) + "ns");
        }
        if (options_.max_pause <= std::chrono::nanoseconds::zero()) {
            throw std::invalid_argument("ratelimit::header_limiter: max_pause must be > 0, got " +
                                        std::to_string(options_.max_pause.count()) + "ns");
        }
    }

    /// Merges what a response said (see the class comment for the rule).
    void update(const quota_snapshot& snapshot) {
        const std::int64_t now = ns(clock_.now());
        std::lock_guard lock(mutex_);
        expire(now);
        if (snapshot.retry_after) {
            pause_until_ = std::max(pause_until_, plus(now, std::min(*snapshot.retry_after, options_.max_pause)));
        }
        const std::optional<quota_state>& quota = followed(snapshot);
        if (!quota) return;
        if (quota->limit && *quota->limit >= 0) {
            limit_ = *quota->limit;
            if (remaining_) remaining_ = std::min(*remaining_, *limit_);
        }
        if (!quota->remaining) return;
        const std::chrono::nanoseconds reset_after = quota->reset_after.value_or(options_.fallback_reset);
        window_ = std::max(window_, reset_after);
        const std::int64_t reset = plus(now, reset_after);
        // Held to [0, limit]: a count below zero or above the limit is not one the server can mean.
        const std::int64_t told = std::clamp<std::int64_t>(*quota->remaining, 0, limit_.value_or(max_count));
        if (!remaining_) {
            remaining_ = told;
            reset_at_ = reset;
        } else {
            remaining_ = std::min(*remaining_, told);
            reset_at_ = std::max(reset_at_, reset);
        }
    }

    /// Takes n permits if the known remaining count allows now; never blocks.
    bool try_acquire(std::int64_t n = 1) {
        detail::check_count(name, n);
        if (n == 0) return true;
        return attempt(n, ns(clock_.now())).granted;
    }

    /// As try_acquire_until(n, now + d).
    bool try_acquire_for(std::int64_t n, duration d) {
        return try_acquire_until(n, detail::deadline_after(clock_.now(), d));
    }

    /// Takes n permits by `t`: false at once when the count cannot come back by
    /// then; otherwise sleeps until the reset (or the pause's end) and looks again.
    bool try_acquire_until(std::int64_t n, time_point t) {
        detail::check_count(name, n);
        if (n == 0) return true;
        const std::int64_t deadline = ns(t);
        for (;;) {
            const outcome o = attempt(n, ns(clock_.now()));
            if (o.granted) return true;
            if (o.never || o.retry_at > deadline) return false;
            ratelimit::sleep_until(clock_, at(o.retry_at));
        }
    }

    /// Takes n permits, sleeping through resets and pauses; returns the time slept.
    duration acquire(std::int64_t n = 1) {
        detail::check_count(name, n);
        if (n == 0) return duration::zero();
        const time_point start = clock_.now();
        for (;;) {
            const outcome o = attempt(n, ns(clock_.now()));
            if (o.granted) return elapsed_since(start);
            if (o.never) throw capacity_exceeded(name, n, *limit_known());
            ratelimit::sleep_until(clock_, at(o.retry_at));
        }
    }

    /// Gives back n unused permits (never above the known limit; saturating at INT64_MAX without one).
    void refund(std::int64_t n) {
        detail::check_count(name, n);
        std::lock_guard lock(mutex_);
        if (!remaining_) return;
        std::int64_t sum = 0;
        if (__builtin_add_overflow(*remaining_, n, &sum)) sum = max_count;  // both >= 0: only upward
        remaining_ = std::min(sum, limit_.value_or(max_count));
    }

    /// The remaining count as now known; empty when unknown.
    [[nodiscard]] std::optional<std::int64_t> remaining() {
        const std::int64_t now = ns(clock_.now());
        std::lock_guard lock(mutex_);
        expire(now);
        return remaining_;
    }

    /// The server's limit, once a snapshot said it.
    [[nodiscard]] std::optional<std::int64_t> limit() const {
        std::lock_guard lock(mutex_);
        return limit_;
    }

    /// When the current window's count resets (meaningful while remaining() is known).
    [[nodiscard]] time_point reset_at() const {
        std::lock_guard lock(mutex_);
        return at(reset_at_);
    }

    /// When the current retry-after pause ends (in the past when none is in force).
    [[nodiscard]] time_point paused_until() const {
        std::lock_guard lock(mutex_);
        return at(pause_until_);
    }

    /// True when no retry-after pause is in force: dropping it (keyed) would
    /// not forget a pause the server asked for.
    [[nodiscard]] bool is_idle() { return paused_until() <= clock_.now(); }

private:
    static constexpr const char* name = "ratelimit::header_limiter";
    static constexpr std::int64_t long_ago = std::numeric_limits<std::int64_t>::min();
    static constexpr std::int64_t max_count = std::numeric_limits<std::int64_t>::max();

    struct outcome {
        bool granted = false;
        bool never = false;         // n above the known limit
        std::int64_t retry_at = 0;  // when to look again (ns)
    };

    static std::int64_t ns(time_point t) noexcept { return detail::saturating_ns(t.time_since_epoch()); }
    static time_point at(std::int64_t ns) noexcept { return time_point{detail::duration_from_ns<duration>(ns)}; }
    static std::int64_t plus(std::int64_t now, std::chrono::nanoseconds d) noexcept {
        return detail::saturating_add(std::chrono::nanoseconds{now}, std::max(d, std::chrono::nanoseconds::zero())).count();
    }

    /// Time from `start` to now, never negative (the clock may have gone back), saturating.
    duration elapsed_since(time_point start) {
        const std::int64_t now = ns(clock_.now());
        std::int64_t waited = 0;
        if (__builtin_sub_overflow(now, ns(start), &waited)) waited = now > ns(start) ? max_count : 0;
        return detail::duration_from_ns<duration>(std::max<std::int64_t>(waited, 0));
    }

    [[nodiscard]] const std::optional<quota_state>& followed(const quota_snapshot& s) const noexcept {
        switch (options_.dimension) {
            case quota_dimension::tokens: return s.tokens;
            case quota_dimension::input_tokens: return s.input_tokens;
            case quota_dimension::output_tokens: return s.output_tokens;
            case quota_dimension::requests: break;
        }
        return s.requests;
    }

    std::optional<std::int64_t> limit_known() const {
        std::lock_guard lock(mutex_);
        return limit_;
    }

    /// A window whose reset has passed starts over at the limit (or unknown);
    /// without news from the server, the new window is taken to last as long
    /// as the longest reset the server has announced (fallback_reset when
    /// that was zero: a window of no length would refill on every call).
    void expire(std::int64_t now) {
        if (!remaining_ || now < reset_at_) return;
        remaining_ = limit_;
        reset_at_ = plus(now, window_ > std::chrono::nanoseconds::zero() ? window_ : options_.fallback_reset);
    }

    /// The one decision: may n permits go at `now`?
    outcome attempt(std::int64_t n, std::int64_t now) {
        std::lock_guard lock(mutex_);
        expire(now);
        if (limit_ && n > *limit_) return {false, true, 0};
        if (now < pause_until_) {
            // Still short when the pause ends: look again at the reset, so a deadline between the two fails at once.
            const bool short_after = remaining_ && *remaining_ < n;
            return {false, false, short_after ? std::max(pause_until_, reset_at_) : pause_until_};
        }
        if (!remaining_) return {true, false, now};
        if (*remaining_ >= n) {
            *remaining_ -= n;
            return {true, false, now};
        }
        return {false, false, reset_at_};
    }

    header_limiter_options options_;
    [[no_unique_address]] Clock clock_;
    mutable std::mutex mutex_;
    std::optional<std::int64_t> limit_;
    std::optional<std::int64_t> remaining_;
    std::int64_t reset_at_ = long_ago;
    std::int64_t pause_until_ = long_ago;
    std::chrono::nanoseconds window_{0};  // the longest reset_after announced
};

}  // namespace ratelimit
