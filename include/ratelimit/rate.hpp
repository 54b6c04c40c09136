#pragma once
// ratelimit::rate: how many permits per period.

#include <chrono>
#include <cmath>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>

#include "detail/text.hpp"

namespace ratelimit {

/// A rate of `permits` per `period`, kept as given so integer inputs stay
/// exact: `per_minute(90000)` is 90000 per 60 s, not a rounded interval.
///
/// Construct with the factories; the permit count must be finite and > 0 and
/// the period > 0, else std::invalid_argument names the bad argument. Very
/// slow rates are fine (`per_second(1e-10)`: one permit every 317 years); the
/// limiters keep whatever precision their state allows and say so.
class rate {
public:
    /// `permits` per second.
    static rate per_second(double permits) { return per(permits, std::chrono::seconds{1}, "per_second"); }
    /// `permits` per minute.
    static rate per_minute(double permits) { return per(permits, std::chrono::minutes{1}, "per_minute"); }
    /// `permits` per hour.
    static rate per_hour(double permits) { return per(permits, std::chrono::hours{1}, "per_hour"); }

    /// One permit every `d` (d > 0; sub-nanosecond floating durations are kept exactly).
    template <class Rep, class Period>
    static rate every(std::chrono::duration<Rep, Period> d) {
        using exact_ns = std::chrono::duration<long double, std::nano>;
        const long double ns = std::chrono::duration_cast<exact_ns>(d).count();
        if (!(ns > 0) || !std::isfinite(ns)) {
            throw std::invalid_argument("ratelimit::rate::every: d must be > 0 and finite, got " +
                                        detail::number_text(static_cast<double>(ns)) + "ns");
        }
        if constexpr (std::chrono::treat_as_floating_point_v<Rep>) {
            if (ns != std::floor(ns) || ns > static_cast<long double>(std::numeric_limits<std::int64_t>::max())) {
                // Not a whole number of nanoseconds: keep it as permits per second.
                return rate{static_cast<double>(1e9L / ns), std::chrono::seconds{1}};
            }
        }
        return rate{1.0, std::chrono::duration_cast<std::chrono::nanoseconds>(d)};
    }

    /// Permits per `period` as given.
    [[nodiscard]] constexpr double permits() const noexcept { return permits_; }
    /// The period the permit count refers to.
    [[nodiscard]] constexpr std::chrono::nanoseconds period() const noexcept { return period_; }

    /// Permits per second (rounded to double).
    [[nodiscard]] double per_second_value() const noexcept {
        return static_cast<double>(static_cast<long double>(permits_) * 1e9L / static_cast<long double>(period_.count()));
    }

    /// Time between two permits, rounded to the nearest nanosecond and
    /// saturated at nanoseconds::max(); exact_interval() keeps the fraction.
    [[nodiscard]] std::chrono::nanoseconds interval() const noexcept {
        const long double ns = std::round(exact_interval().count());
        if (ns >= static_cast<long double>(std::numeric_limits<std::int64_t>::max())) {
            return std::chrono::nanoseconds::max();
        }
        return std::chrono::nanoseconds{static_cast<std::int64_t>(ns)};
    }

    /// Time between two permits with its fractional part (80-bit long double
    /// on x86-64: exact for integer permits and periods below 2^64 ns).
    [[nodiscard]] std::chrono::duration<long double, std::nano> exact_interval() const noexcept {
        return std::chrono::duration<long double, std::nano>{static_cast<long double>(period_.count()) /
                                                             static_cast<long double>(permits_)};
    }

    /// Equal when the intervals are equal: per_second(1) == per_minute(60).
    friend bool operator==(const rate& a, const rate& b) noexcept {
        return static_cast<long double>(a.permits_) * static_cast<long double>(b.period_.count()) ==
               static_cast<long double>(b.permits_) * static_cast<long double>(a.period_.count());
    }

private:
    constexpr rate(double permits, std::chrono::nanoseconds period) noexcept : permits_(permits), period_(period) {}

    static rate per(double permits, std::chrono::nanoseconds period, const char* factory) {
        if (!(permits > 0) || !std::isfinite(permits)) {
            throw std::invalid_argument(std::string("ratelimit::rate::") + factory +
                                        ": permits must be finite and > 0, got " + detail::number_text(permits));
        }
        return rate{permits, period};
    }

    double permits_;
    std::chrono::nanoseconds period_;
};

}  // namespace ratelimit
