#pragma once
// ratelimit::fixed_window: at most `limit` permits per aligned window, lock-free.

#include <atomic>
#include <bit>
#include <chrono>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>

#include "clock.hpp"
#include "detail/chrono.hpp"
#include "detail/window.hpp"
#include "limiter.hpp"

namespace ratelimit {

/// A fixed window limiter: time is cut into windows of length `window`, the
/// first starting at construction (window k covers [origin + k·window,
/// origin + (k+1)·window)), and each window grants at most `limit` permits.
/// The count starts from zero when a new window begins.
///
/// Guarantee: at most `limit` permits are used in each window, counting
/// permits a caller waited for in the window they became usable in. An
/// interval of length `window` that straddles a boundary may therefore see up
/// to 2·limit (the end of one window and the start of the next); pick
/// sliding_window_log or token_bucket when that burst matters. Waiting callers
/// are served first come, first served: `acquire` (and `try_acquire_for/until`
/// when the deadline allows) takes its permits in the first window with room
/// and then sleeps until that window starts, so there is no retry loop and no
/// thundering herd at the boundary; while it waits, the current window grants
/// nothing more.
///
/// Lock-free, O(1) memory: the state is one 64-bit atomic word, the window
/// index and the count in it (`index << bit_width(limit) | count`); a grant is
/// one compare-and-swap, a refusal one load and no write. No allocation, no
/// lock held while sleeping.
///
/// Edge cases: n == 0 succeeds at once; n < 0 throws std::invalid_argument;
/// n > limit() never blocks (`try_*` return false, `acquire` throws
/// capacity_exceeded; std::overflow_error if the window it needs lies past
/// the clock's range). limit <= 0, window <= 0, and a limit above the window's
/// length in nanoseconds (more than 10^9 permits per second, which the word
/// could not count for the clock's whole range) throw std::invalid_argument.
/// Overflow: any limit up to INT64_MAX is exact (`count + n <= limit` is
/// tested as `n <= limit − count`), and a window that would start after the
/// clock's last time (INT64_MAX ns since its epoch) is never granted: `try_*`
/// return false at once even with a deadline of time_point::max(), `acquire`
/// throws std::overflow_error, and a clock stuck at the end of its range
/// grants one window's limit and then nothing.
/// A clock that stands still stays in one window; one that goes back never
/// reopens a window already counted: it grants nothing until it reaches the
/// window last granted in again (a time before construction counts as
/// construction time).
template <clock Clock = std::chrono::steady_clock>
class fixed_window {
public:
    using clock_type = Clock;
    using duration = typename Clock::duration;
    using time_point = typename Clock::time_point;

    /// At most `limit` (> 0) permits in each `window` (> 0), windows aligned at construction.
    fixed_window(std::int64_t limit, duration window, Clock c = {})
        : clock_(std::move(c)),
          params_(make_params(limit, window)),
          window_(window),
          count_bits_(std::bit_width(static_cast<std::uint64_t>(limit))),
          origin_ns_(detail::ns_since_epoch(clock_.now())) {
        params_.max_window = static_cast<std::int64_t>((std::uint64_t{1} << (64 - count_bits_)) - 1U);
        params_.end = detail::window::since(origin_ns_, detail::window::int64_max);  // the clock's last time
    }
    fixed_window(const fixed_window&) = delete;
    fixed_window& operator=(const fixed_window&) = delete;
    ~fixed_window() = default;

    /// Takes n permits if the current window has room for them; never blocks.
    bool try_acquire(std::int64_t n = 1) {
        detail::check_count(name, n);
        if (n == 0) return true;
        const time_point now = clock_.now();
        const detail::window::nanoseconds at = since_origin(now);
        return take(n, at, at).outcome == detail::window::verdict::granted;
    }

    /// Takes n permits if a window with room for them starts within `d`,
    /// sleeping until then; returns false at once when none does.
    bool try_acquire_for(std::int64_t n, duration d) {
        detail::check_count(name, n);
        if (n == 0) return true;
        const time_point now = clock_.now();
        const time_point deadline =
            detail::deadline_after(now, d);
        return wait_for(n, now, since_origin(deadline));
    }

    /// Takes n permits if a window with room for them starts by `t`, sleeping
    /// until then; returns false at once when none does. A past `t` acts as now.
    bool try_acquire_until(std::int64_t n, time_point t) {
        detail::check_count(name, n);
        if (n == 0) return true;
        return wait_for(n, clock_.now(), since_origin(t));
    }

    /// Takes n permits in the first window with room, sleeping until it
    /// starts; returns the time slept. Throws capacity_exceeded when n > limit().
    duration acquire(std::int64_t n = 1) {
        detail::check_count(name, n);
        if (n == 0) return duration::zero();
        const time_point now = clock_.now();
        const detail::window::nanoseconds at = since_origin(now);
        const detail::window::fixed::decision d = take(n, at, detail::window::int64_max);
        if (d.outcome == detail::window::verdict::never) throw capacity_exceeded(name, n, params_.limit);
        if (d.outcome != detail::window::verdict::granted) {
            throw std::overflow_error(std::string(name) + ": n = " + std::to_string(n) +
                                      " would be ready beyond the representable time range");
        }
        const time_point ready = time_at(d.ready_at, at, now);
        if (ready <= now) return duration::zero();
        ratelimit::sleep_until(clock_, ready);
        return ready - now;
    }

    /// Gives back n unused permits to the current window (never below zero);
    /// nothing once that window has ended or a caller waits for the next one.
    void refund(std::int64_t n) {
        detail::check_count(name, n);
        if (n == 0) return;
        const detail::window::nanoseconds at = since_origin(clock_.now());
        std::uint64_t word = word_.load(std::memory_order_acquire);
        for (;;) {
            const detail::window::fixed::state s = unpack(word);
            const detail::window::fixed::state next = detail::window::fixed::refund(params_, s, at, n);
            if (next == s) return;
            if (word_.compare_exchange_weak(word, pack(next), std::memory_order_acq_rel, std::memory_order_acquire)) {
                return;
            }
        }
    }

    /// Permits the current window can still grant now.
    [[nodiscard]] std::int64_t available() {
        const detail::window::nanoseconds at = since_origin(clock_.now());
        return detail::window::fixed::available(params_, unpack(word_.load(std::memory_order_acquire)), at);
    }

    /// How long until n permits could be taken (the start of the first window
    /// with room); duration::max() when n > limit().
    [[nodiscard]] duration time_until_available(std::int64_t n = 1) {
        detail::check_count(name, n);
        if (n == 0) return duration::zero();
        const time_point now = clock_.now();
        const detail::window::nanoseconds at = since_origin(now);
        const detail::window::fixed::decision d = detail::window::fixed::decide(
            params_, unpack(word_.load(std::memory_order_acquire)), at, n, detail::window::int64_max);
        if (d.outcome != detail::window::verdict::granted) return duration::max();
        return time_at(d.ready_at, at, now) - now;
    }

    /// The most permits one window grants.
    [[nodiscard]] std::int64_t limit() const noexcept { return params_.limit; }

    /// The length of a window.
    [[nodiscard]] duration window() const noexcept { return window_; }

    /// The clock the limiter reads.
    [[nodiscard]] const Clock& get_clock() const noexcept { return clock_; }

private:
    static constexpr const char* name = "ratelimit::fixed_window";


    static detail::window::params make_params(std::int64_t limit, duration window) {
        detail::check_positive(name, "limit", limit);
        const std::int64_t window_ns = detail::saturating_ns(window);
        if (window <= duration::zero() || window_ns <= 0) {
            throw std::invalid_argument(std::string(name) + ": window must be > 0, got " + std::to_string(window_ns) +
                                        "ns");
        }
        if (limit > window_ns) {
            throw std::invalid_argument(std::string(name) + ": limit must be <= the window in nanoseconds (" +
                                        std::to_string(window_ns) + "), got " + std::to_string(limit));
        }
        return {limit, window_ns, detail::window::int64_max};
    }

    [[nodiscard]] detail::window::nanoseconds since_origin(time_point t) const noexcept {
        return detail::window::since(origin_ns_, detail::ns_since_epoch(t));
    }

    /// The clock time `ready` ns after the origin; `now` itself when that is
    /// `now_at` (so no rounding makes a grant look delayed).
    [[nodiscard]] time_point time_at(detail::window::nanoseconds ready, detail::window::nanoseconds now_at,
                                     time_point now) const noexcept {
        if (ready <= now_at) return now;
        return time_point{detail::duration_from_ns<duration>(detail::window::add_saturating(origin_ns_, ready))};
    }

    [[nodiscard]] std::uint64_t pack(detail::window::fixed::state s) const noexcept {
        return (static_cast<std::uint64_t>(s.window) << count_bits_) | static_cast<std::uint64_t>(s.count);
    }

    [[nodiscard]] detail::window::fixed::state unpack(std::uint64_t word) const noexcept {
        return {static_cast<std::int64_t>(word >> count_bits_),
                static_cast<std::int64_t>(word & ((std::uint64_t{1} << count_bits_) - 1U))};
    }

    /// The one admission path: decides on one load, grants with one CAS,
    /// refuses without writing.
    detail::window::fixed::decision take(std::int64_t n, detail::window::nanoseconds now,
                                         detail::window::nanoseconds deadline) {
        std::uint64_t word = word_.load(std::memory_order_acquire);
        for (;;) {
            const detail::window::fixed::decision d =
                detail::window::fixed::decide(params_, unpack(word), now, n, deadline);
            if (d.outcome != detail::window::verdict::granted) return d;
            if (word_.compare_exchange_weak(word, pack(d.next), std::memory_order_acq_rel, std::memory_order_acquire)) {
                return d;
            }
        }
    }

    /// Takes n permits usable by `deadline` (ns since the origin) and sleeps until they are.
    bool wait_for(std::int64_t n, time_point now, detail::window::nanoseconds deadline) {
        const detail::window::nanoseconds at = since_origin(now);
        const detail::window::fixed::decision d = take(n, at, deadline);
        if (d.outcome != detail::window::verdict::granted) return false;
        const time_point ready = time_at(d.ready_at, at, now);
        if (ready > now) ratelimit::sleep_until(clock_, ready);
        return true;
    }

    [[no_unique_address]] Clock clock_;
    detail::window::params params_;
    duration window_;
    int count_bits_;
    std::int64_t origin_ns_;
    std::atomic<std::uint64_t> word_{0};  // (window index << count_bits_) | count
};

}  // namespace ratelimit
