#pragma once
// Clocks: the `ratelimit::clock` concept, a simulated `manual_clock` for exact
// tests, and `ratelimit::sleep_until`, which sleeps on whatever clock a limiter holds.

#include <atomic>
#include <chrono>
#include <concepts>
#include <cstdint>
#include <limits>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>

namespace ratelimit {

/// A clock is anything with `duration`, `time_point` and a `now()` callable on
/// an instance. Every std::chrono clock qualifies; so does `manual_clock`.
/// A limiter holds its clock by value, so an empty clock type costs no space.
template <class C>
concept clock = requires(C& c) {
    typename C::duration;
    typename C::time_point;
    { c.now() } -> std::convertible_to<typename C::time_point>;
};

/// A simulated clock for tests: time stands still until `advance` or `set`
/// moves it. Copies are handles to one shared time, so a test keeps a copy
/// and moves the time a limiter sees.
///
/// `sleep_until(tp)` moves the time forward to `tp` at once instead of
/// sleeping, so blocking calls (`acquire`, `wait`) finish instantly and
/// deterministically. Thread-safe: every member may be called from any thread;
/// time only ever moves forward through `advance` and `sleep_until` (`set` may
/// move it back, to test limiters against a clock that jumps).
///
/// Time starts at the epoch (0 ns) unless another start is given. Arithmetic
/// saturates at `time_point::max()` instead of overflowing.
class manual_clock {
public:
    using rep = std::int64_t;
    using period = std::nano;
    using duration = std::chrono::nanoseconds;
    using time_point = std::chrono::time_point<manual_clock, duration>;
    static constexpr bool is_steady = false;

    manual_clock() : manual_clock(time_point{}) {}
    explicit manual_clock(time_point start)
        : now_(std::make_shared<std::atomic<rep>>(start.time_since_epoch().count())) {}

    /// The current simulated time.
    [[nodiscard]] time_point now() const noexcept {
        return time_point{duration{now_->load(std::memory_order_acquire)}};
    }

    /// Moves time forward by `d`; `d < 0` throws std::invalid_argument.
    void advance(duration d) {
        if (d < duration::zero()) {
            throw std::invalid_argument("ratelimit::manual_clock::advance: d must be >= 0, got " +
                                        std::to_string(d.count()) + "ns");
        }
        rep current = now_->load(std::memory_order_relaxed);
        rep next = 0;
        do {
            next = saturating_add(current, d.count());
        } while (!now_->compare_exchange_weak(current, next, std::memory_order_acq_rel,
                                              std::memory_order_relaxed));
    }

    /// Sets the time to `t`, forward or back.
    void set(time_point t) noexcept { now_->store(t.time_since_epoch().count(), std::memory_order_release); }

    /// Simulated sleep: moves time forward to `t` at once (never back).
    void sleep_until(time_point t) noexcept {
        const rep target = t.time_since_epoch().count();
        rep current = now_->load(std::memory_order_relaxed);
        while (current < target &&
               !now_->compare_exchange_weak(current, target, std::memory_order_acq_rel,
                                            std::memory_order_relaxed)) {
        }
    }

    /// Simulated sleep of `d` from now.
    void sleep_for(duration d) noexcept {
        if (d > duration::zero()) sleep_until(time_point{duration{saturating_add(now().time_since_epoch().count(), d.count())}});
    }

private:
    static constexpr rep saturating_add(rep a, rep b) noexcept {
        rep sum = 0;
        if (__builtin_add_overflow(a, b, &sum)) {
            return b > 0 ? std::numeric_limits<rep>::max() : std::numeric_limits<rep>::min();
        }
        return sum;
    }

    std::shared_ptr<std::atomic<rep>> now_;
};

/// Sleeps until `c.now() >= t`: through `c.sleep_until(t)` when the clock has
/// one (as `manual_clock` does, advancing at once), else through
/// std::this_thread::sleep_until (for std::chrono clocks).
template <class Clock>
void sleep_until(Clock& c, typename Clock::time_point t) {
    if constexpr (requires { c.sleep_until(t); }) {
        c.sleep_until(t);
    } else {
        std::this_thread::sleep_until(t);
    }
}

}  // namespace ratelimit
