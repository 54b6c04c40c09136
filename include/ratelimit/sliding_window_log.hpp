#pragma once
// ratelimit::sliding_window_log: the exact sliding window.

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>

#include "clock.hpp"
#include "detail/chrono.hpp"
#include "detail/sliding_window_log.hpp"
#include "limiter.hpp"

namespace ratelimit {

/// A log of the times of the last `limit` permits granted, in a ring buffer
/// allocated once. n permits are granted at time t when the n-th oldest
/// logged permit left the window by t (a permit granted at t counts until
/// t + window, half-open); they take n slots of the log, all stamped t.
///
/// Guarantee: in any half-open interval of length `window`, at most `limit`
/// permits are granted, counting reserved permits at their ready_at(). The
/// limit is exact: a request is refused only when granting it now would break
/// that bound or place it before a grant already logged. Blocking callers are
/// served first come, first served: `acquire` reserves a place at the exact
/// time the n-th oldest entry leaves the window, logs it stamped with that
/// future time, and then sleeps; no polling, no retry loop, and no later
/// caller is ever granted before it.
///
/// Cost: 8·limit bytes of log, allocated once at construction, plus 88 bytes
/// of object (x86-64, empty clock); no allocation on any call. Every call
/// holds one std::mutex around O(1) work plus n stores (a grant of n writes n
/// entries; available() searches the log in O(log limit)): uncontended that is
/// one lock and unlock; contended callers wait for each other's short critical
/// section, the price of exactness where token_bucket is lock-free. The mutex
/// is never held while sleeping.
///
/// Edge cases: n == 0 succeeds at once; n < 0 throws std::invalid_argument;
/// n > limit() never blocks (`try_*` return false, `acquire` and `reserve`
/// throw capacity_exceeded). limit is at most max_limit = 2^26 (512 MiB of
/// log); use a sliding_window_counter for more. A clock that stands still
/// grants `limit` permits and then nothing; one that jumps back grants
/// nothing before the latest logged grant. Times are kept in whole
/// nanoseconds since the clock's epoch, saturating; a permit whose t + window
/// passes INT64_MAX never leaves the window, so a clock stuck at the end of
/// its range grants `limit` permits there and then nothing.
template <clock Clock = std::chrono::steady_clock>
class sliding_window_log {
public:
    using clock_type = Clock;
    using duration = typename Clock::duration;
    using time_point = typename Clock::time_point;

    /// The largest limit: the log takes 8 bytes per permit (2^26 permits: 512 MiB).
    static constexpr std::int64_t max_limit = std::int64_t{1} << 26;

    /// At most `limit` permits (0 < limit <= max_limit) in any window of length `window` (> 0).
    sliding_window_log(std::int64_t limit, duration window, Clock c = {})
        : clock_(std::move(c)),
          limit_(checked_limit(limit)),
          window_(window),
          window_ns_(checked_window(window)),
          log_(std::make_unique_for_overwrite<std::int64_t[]>(static_cast<std::size_t>(limit_))) {
        std::fill_n(log_.get(), limit_, detail::window_log::unused_slot);
    }
    sliding_window_log(const sliding_window_log&) = delete;
    sliding_window_log& operator=(const sliding_window_log&) = delete;
    ~sliding_window_log() = default;

    /// Takes n permits if the window has room for them now; never blocks.
    bool try_acquire(std::int64_t n = 1) {
        detail::check_count(name, n);
        if (n == 0) return true;
        const time_point now = clock_.now();
        return take(n, now, now).outcome == detail::window_log::verdict::granted;
    }

    /// Takes n permits if they can be had within `d`, sleeping until then;
    /// returns false at once when the earliest grant is later.
    bool try_acquire_for(std::int64_t n, duration d) {
        detail::check_count(name, n);
        if (n == 0) return true;
        const time_point now = clock_.now();
        return wait_for(take(n, now, detail::deadline_after(now, d)), now);
    }

    /// Takes n permits if they can be had by `t`, sleeping until then; returns
    /// false at once when the earliest grant is later. A past `t` acts as now.
    bool try_acquire_until(std::int64_t n, time_point t) {
        detail::check_count(name, n);
        if (n == 0) return true;
        const time_point now = clock_.now();
        return wait_for(take(n, now, t), now);
    }

    /// Takes n permits, sleeping until the n-th oldest grant has left the
    /// window; returns the time slept. Throws capacity_exceeded when n > limit().
    duration acquire(std::int64_t n = 1) {
        reservation<Clock> r = reserve(n);
        const duration waited = r.delay();
        r.wait();
        return waited;
    }

    /// Takes n permits now, logged at the time they fit (possibly in the
    /// future); the reservation says when they may be used. Throws
    /// capacity_exceeded when n > limit(). cancel() gives all n back while
    /// no permit was granted after them and now() <= ready_at(), else nothing:
    /// the entries they displaced come back as late as the log can prove
    /// them (detail::window_log::restored_entry), never earlier.
    reservation<Clock> reserve(std::int64_t n = 1) {
        detail::check_count(name, n);
        const time_point now = clock_.now();
        if (n == 0) return reservation<Clock>(clock_, now, 0);
        const grant g = take(n, now, std::nullopt);
        if (g.outcome == detail::window_log::verdict::never) throw capacity_exceeded(name, n, limit_);
        if (g.outcome != detail::window_log::verdict::granted) {
            throw std::overflow_error(std::string(name) + ": n = " + std::to_string(n) +
                                      " would be ready beyond the representable time range");
        }
        return reservation<Clock>(clock_, g.ready_at, n, {this, &give_back, g.record});
    }

    /// Permits that could be taken now: the logged grants that have left the
    /// window, or 0 while a reservation waits in the future. O(log limit).
    [[nodiscard]] std::int64_t available() {
        std::lock_guard<std::mutex> lock(mutex_);
        const std::int64_t now = detail::ns_since_epoch(clock_.now());  // not older than any grant in the log
        const std::int64_t expired =
            detail::window_log::expired(limit_, window_ns_, now, [this](std::int64_t i) { return entry(i); });
        return detail::window_log::available(expired, newest(), now);
    }

    /// How long until n permits could be taken; duration::max() when n > limit().
    [[nodiscard]] duration time_until_available(std::int64_t n = 1) {
        detail::check_count(name, n);
        if (n == 0) return duration::zero();
        if (n > limit_) return duration::max();
        std::lock_guard<std::mutex> lock(mutex_);
        const std::int64_t now = detail::ns_since_epoch(clock_.now());
        const detail::window_log::decision d = detail::window_log::decide(
            limit_, window_ns_, entry(n - 1), newest(), now, n, std::numeric_limits<std::int64_t>::max());
        if (d.outcome != detail::window_log::verdict::granted) return duration::max();
        return detail::duration_from_ns<duration>(d.start - now);
    }

    /// The most permits granted in any window.
    [[nodiscard]] std::int64_t limit() const noexcept { return limit_; }

    /// The window's length.
    [[nodiscard]] duration window() const noexcept { return window_; }

    /// The clock the log reads.
    [[nodiscard]] const Clock& get_clock() const noexcept { return clock_; }

private:
    static constexpr const char* name = "ratelimit::sliding_window_log";
    using record_type = typename detail::canceller<time_point>::record_type;

    /// What take() decided, in the caller's time.
    struct grant {
        detail::window_log::verdict outcome;
        time_point ready_at;
        record_type record;  // {permits granted so far, entry to restore, unused}: for cancel
    };

    static std::int64_t checked_limit(std::int64_t limit) {
        detail::check_positive(name, "limit", limit);
        if (limit > max_limit) {
            throw std::invalid_argument(std::string(name) + ": limit must be <= " + std::to_string(max_limit) +
                                        " (the log keeps 8 bytes per permit), got " + std::to_string(limit));
        }
        return limit;
    }

    /// The window in whole nanoseconds, rounded up (a shorter window would admit more).
    static std::int64_t checked_window(duration window) {
        if (window <= duration::zero()) {
            throw std::invalid_argument(std::string(name) + ": window must be > 0, got " +
                                        std::to_string(detail::saturating_ns(window)) + "ns");
        }
        std::int64_t ns = detail::saturating_ns(window);
        if (ns < std::numeric_limits<std::int64_t>::max() &&
            std::chrono::duration_cast<duration>(std::chrono::nanoseconds{ns}) < window) {
            ++ns;  // a clock finer than a nanosecond
        }
        return ns;
    }


    /// The i-th oldest entry (0 <= i < limit). Caller holds mutex_.
    [[nodiscard]] std::int64_t entry(std::int64_t i) const noexcept { return log_[slot(head_ + i)]; }
    /// The latest grant. Caller holds mutex_.
    [[nodiscard]] std::int64_t newest() const noexcept { return entry(limit_ - 1); }
    /// The ring index of position p in [0, 2·limit).
    [[nodiscard]] std::size_t slot(std::int64_t p) const noexcept {
        return static_cast<std::size_t>(p >= limit_ ? p - limit_ : p);
    }

    /// Writes `value` into the n ring slots from position `from`. Caller holds mutex_.
    void fill(std::int64_t from, std::int64_t n, std::int64_t value) noexcept {
        const std::int64_t first = std::min(n, limit_ - from);  // up to the end of the ring
        std::fill_n(log_.get() + from, first, value);
        std::fill_n(log_.get(), n - first, value);
    }

    /// The one admission decision: n permits (1 <= n) at `now`, usable by
    /// `deadline` (none: whenever). Logs them when granted; changes nothing otherwise.
    grant take(std::int64_t n, time_point now, std::optional<time_point> deadline) {
        if (n > limit_) return {detail::window_log::verdict::never, now, {}};
        const std::int64_t now_at = detail::ns_since_epoch(now);
        const std::int64_t deadline_at = deadline ? detail::ns_since_epoch(*deadline) : std::numeric_limits<std::int64_t>::max();
        std::lock_guard<std::mutex> lock(mutex_);
        const detail::window_log::decision d =
            detail::window_log::decide(limit_, window_ns_, entry(n - 1), newest(), now_at, n, deadline_at);
        if (d.outcome != detail::window_log::verdict::granted) return {d.outcome, now, {}};
        const std::int64_t next_oldest = n < limit_ ? entry(n) : std::numeric_limits<std::int64_t>::max();
        const std::int64_t restore = detail::window_log::restored_entry(d.start, window_ns_, next_oldest);
        // The n oldest entries make room: overwrite them and move the head past them.
        fill(head_, n, d.start);
        head_ = static_cast<std::int64_t>(slot(head_ + n));
        granted_ += static_cast<std::uint64_t>(n);
        const time_point ready = d.start == now_at ? now : detail::time_point_from_ns<time_point>(d.start);
        return {detail::window_log::verdict::granted, ready, record_type{static_cast<std::int64_t>(granted_), restore, 0}};
    }

    /// Sleeps until a granted request is usable; false when it was refused.
    bool wait_for(const grant& g, time_point now) {
        if (g.outcome != detail::window_log::verdict::granted) return false;
        if (g.ready_at > now) ratelimit::sleep_until(clock_, g.ready_at);
        return true;
    }

    /// Cancel rule for reservations: undo the newest grant if it is this one.
    static void give_back(void* owner, std::int64_t n, time_point ready_at, const record_type& record) noexcept {
        auto& self = *static_cast<sliding_window_log*>(owner);
        if (self.clock_.now() > ready_at) return;
        std::lock_guard<std::mutex> lock(self.mutex_);
        if (static_cast<std::int64_t>(self.granted_) != record[0]) return;  // a later grant sits after it in the log
        // Its n entries are the newest: put back the displaced ones and move the head back.
        const std::int64_t from = static_cast<std::int64_t>(self.slot(self.head_ + self.limit_ - n));
        self.fill(from, n, record[1]);
        self.head_ = from;
        self.granted_ -= static_cast<std::uint64_t>(n);
    }

    [[no_unique_address]] Clock clock_;
    std::int64_t limit_;
    duration window_;
    std::int64_t window_ns_;
    std::unique_ptr<std::int64_t[]> log_;  // ring of grant times, oldest at head_; guarded by mutex_
    std::int64_t head_ = 0;                // guarded by mutex_
    std::uint64_t granted_ = 0;            // permits granted less those cancelled, modulo 2^64 (compared
                                           // for equality only, so it may wrap); guarded by mutex_
    std::mutex mutex_;
};

}  // namespace ratelimit
