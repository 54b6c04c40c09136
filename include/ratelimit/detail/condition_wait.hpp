#pragma once
// Waiting on a condition variable until a deadline on any clock.

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <limits>
#include <mutex>

#include "chrono.hpp"

namespace ratelimit::detail {

/// Waits on `cv` (releasing `lock` meanwhile) until `done()` or until `clock`
/// reaches `deadline`; returns done(). The clock is only read, never slept on:
/// a clock that sleeps itself (manual_clock) is the caller's business.
///
/// time_point::max() means no deadline and is a plain wait, on every clock.
/// Other deadlines are waited for in slices of at most an hour measured on
/// `clock`, so no conversion between clocks can overflow: libstdc++'s
/// wait_until on a clock other than steady_clock or system_clock adds the
/// distance to steady_clock::now(), which overflows near time_point::max()
/// and then spins without sleeping while holding the mutex.
template <class Clock, class Done>
bool wait_on(std::condition_variable& cv, std::unique_lock<std::mutex>& lock, const Clock& clock,
             typename Clock::time_point deadline, Done done) {
    if (deadline == Clock::time_point::max()) {
        cv.wait(lock, done);
        return true;
    }
    constexpr std::int64_t slice_ns = std::chrono::nanoseconds{std::chrono::hours{1}}.count();
    const std::int64_t deadline_ns = ns_since_epoch(deadline);
    while (!done()) {
        const std::int64_t now_ns = ns_since_epoch(clock.now());
        if (now_ns >= deadline_ns) return done();
        std::int64_t left = 0;
        if (__builtin_sub_overflow(deadline_ns, now_ns, &left)) left = slice_ns;
        cv.wait_for(lock, std::chrono::nanoseconds{std::min(left, slice_ns)});
    }
    return true;
}

}  // namespace ratelimit::detail
