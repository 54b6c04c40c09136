#pragma once
// Saturating conversions between std::chrono durations and integer nanoseconds.

#include <chrono>
#include <cstdint>
#include <limits>

namespace ratelimit::detail {

/// `d` in whole nanoseconds (rounded down), saturating at the int64 range.
template <class Rep, class Period>
[[nodiscard]] constexpr std::int64_t saturating_ns(std::chrono::duration<Rep, Period> d) noexcept {
    using wide = std::chrono::duration<long double, std::nano>;
    constexpr auto max = std::numeric_limits<std::int64_t>::max();
    constexpr auto min = std::numeric_limits<std::int64_t>::min();
    if constexpr (std::ratio_less_equal_v<Period, std::nano> && !std::chrono::treat_as_floating_point_v<Rep>) {
        return static_cast<std::int64_t>(std::chrono::floor<std::chrono::nanoseconds>(d).count());
    } else {
        const long double ns = std::chrono::duration_cast<wide>(d).count();
        if (ns >= static_cast<long double>(max)) return max;
        if (ns <= static_cast<long double>(min)) return min;
        return std::chrono::floor<std::chrono::nanoseconds>(d).count();
    }
}

/// `ns` nanoseconds as a `Duration`, rounded up, saturating at Duration::max().
template <class Duration>
[[nodiscard]] constexpr Duration duration_from_ns(std::int64_t ns) noexcept {
    const std::chrono::nanoseconds exact{ns};
    if constexpr (std::ratio_less_equal_v<typename Duration::period, std::nano>) {
        if (exact > std::chrono::duration_cast<std::chrono::nanoseconds>(Duration::max())) return Duration::max();
        return std::chrono::duration_cast<Duration>(exact);
    } else {
        return std::chrono::ceil<Duration>(exact);
    }
}

/// `a + b` for durations, saturating at the range of D instead of overflowing.
template <class D>
[[nodiscard]] constexpr D saturating_add(D a, D b) noexcept {
    typename D::rep sum{};
    if constexpr (std::is_integral_v<typename D::rep>) {
        if (__builtin_add_overflow(a.count(), b.count(), &sum)) return b.count() > 0 ? D::max() : D::min();
        return D{sum};
    } else {
        return a + b;
    }
}

}  // namespace ratelimit::detail

namespace ratelimit::detail {

/// A time point as whole nanoseconds since its clock's epoch, saturating.
template <class TimePoint>
[[nodiscard]] constexpr std::int64_t ns_since_epoch(TimePoint t) noexcept {
    return saturating_ns(t.time_since_epoch());
}

/// The time point `ns` nanoseconds after its clock's epoch, rounded up, saturating.
template <class TimePoint>
[[nodiscard]] constexpr TimePoint time_point_from_ns(std::int64_t ns) noexcept {
    return TimePoint{duration_from_ns<typename TimePoint::duration>(ns)};
}

/// `now + d`, saturating; a d <= 0 gives `now` (a deadline already past acts as now).
template <class TimePoint>
[[nodiscard]] constexpr TimePoint deadline_after(TimePoint now, typename TimePoint::duration d) noexcept {
    if (d <= TimePoint::duration::zero()) return now;
    return TimePoint{saturating_add(now.time_since_epoch(), d)};
}

}  // namespace ratelimit::detail
