#pragma once
// ratelimit::adaptive_limiter: a token bucket whose rate follows the server's
// verdicts (additive-increase is multiplicative here: AIMD on the rate).

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>

#include "clock.hpp"
#include "detail/chrono.hpp"
#include "detail/text.hpp"
#include "limiter.hpp"
#include "rate.hpp"
#include "token_bucket.hpp"

namespace ratelimit {

/// How an adaptive_limiter moves its rate.
struct adaptive_config {
    rate initial_rate = rate::per_second(1);
    rate min_rate = rate::per_second(0.1);
    rate max_rate = rate::per_second(10);
    double increase_factor = 1.1;  ///< applied on each success outside recovery, >= 1
    double decrease_factor = 0.5;  ///< applied on each throttle, in (0, 1]
    std::chrono::nanoseconds recovery_time = std::chrono::seconds{30};  ///< no increase for this long after a pause
    std::int64_t capacity = 1;     ///< the bucket's burst (an addition to the contract's fields)
};

/// Where an adaptive_limiter is in its cycle.
enum class adaptive_state {
    normal,      ///< successes raise the rate
    throttled,   ///< paused until the server's retry-after has passed
    recovering,  ///< the pause is over; the rate holds for recovery_time
};

/// A token bucket of `capacity` permits whose rate starts at `initial_rate`
/// and moves with feedback: each `on_success()` in the normal state multiplies
/// it by increase_factor (capped at max_rate); each `on_throttle(retry_after)`
/// multiplies it by decrease_factor (floored at min_rate), pauses every
/// acquisition until retry_after has passed, and then holds the rate for
/// recovery_time before successes raise it again.
///
/// Guarantee: between two rate changes, the token bucket's bound holds
/// (at most capacity + rate·T in any interval T); no permit is granted before
/// the end of the latest pause.
///
/// Thread-safe. on_success and on_throttle never wait for each other or for
/// a sleeping caller: the pause is a time stamp, not a held lock, and rate
/// changes are atomic updates followed by the bucket's set_rate. Acquisition
/// costs the token bucket's plus one load.
///
/// Edge cases: a throttle without retry_after cuts the rate and starts the
/// recovery at once; a later throttle extends a pause, never shortens it.
template <clock Clock = std::chrono::steady_clock>
class adaptive_limiter {
public:
    using clock_type = Clock;
    using duration = typename Clock::duration;
    using time_point = typename Clock::time_point;

    explicit adaptive_limiter(adaptive_config cfg, Clock c = {})
        : config_(checked(cfg)),
          clock_(std::move(c)),
          bucket_(cfg.initial_rate, cfg.capacity, clock_),
          per_second_(cfg.initial_rate.per_second_value()) {}

    /// Takes n permits if available now and no pause is in force; never blocks.
    bool try_acquire(std::int64_t n = 1) {
        detail::check_count(name, n);
        if (n == 0) return true;
        if (n > config_.capacity) return false;
        if (clock_.now() < paused_until()) return false;
        return bucket_.try_acquire(n);
    }

    /// As try_acquire_until(n, now + d).
    bool try_acquire_for(std::int64_t n, duration d) {
        return try_acquire_until(n, detail::deadline_after(clock_.now(), d));
    }

    /// Takes n permits by `t`: false at once when the pause or the bucket
    /// cannot grant them by then; otherwise sleeps out the pause and the wait.
    bool try_acquire_until(std::int64_t n, time_point t) {
        detail::check_count(name, n);
        if (n == 0) return true;
        if (n > config_.capacity) return false;
        for (;;) {
            const time_point pause_end = paused_until();
            const time_point now = clock_.now();
            if (pause_end <= now) return bucket_.try_acquire_until(n, t);
            if (pause_end > t) return false;
            ratelimit::sleep_until(clock_, pause_end);  // then look again: a throttle may have extended it
        }
    }

    /// Takes n permits, sleeping out any pause and then the bucket's wait;
    /// returns the time slept. Throws capacity_exceeded when n > capacity.
    duration acquire(std::int64_t n = 1) {
        detail::check_count(name, n);
        if (n == 0) return duration::zero();
        if (n > config_.capacity) throw capacity_exceeded(name, n, config_.capacity);
        const time_point start = clock_.now();
        for (;;) {
            const time_point pause_end = paused_until();
            if (pause_end > clock_.now()) ratelimit::sleep_until(clock_, pause_end);
            reservation<Clock> r = bucket_.reserve(n);
            if (r.ready_at() >= paused_until()) {
                r.wait();
                return std::chrono::duration_cast<duration>(clock_.now() - start);
            }
            r.cancel();  // a throttle arrived meanwhile: wait it out first
        }
    }

    /// Gives back n unused permits.
    void refund(std::int64_t n) { bucket_.refund(n); }

    /// Reports a request the server accepted: raises the rate in the normal state.
    void on_success() {
        if (state() != adaptive_state::normal) return;
        change_rate(config_.increase_factor);
    }

    /// Reports a throttle (HTTP 429): cuts the rate and pauses until `retry_after` has passed.
    void on_throttle(std::optional<std::chrono::nanoseconds> retry_after = std::nullopt) {
        const std::int64_t now = ns(clock_.now());
        const std::int64_t pause = retry_after && *retry_after > std::chrono::nanoseconds::zero()
                                       ? detail::saturating_add(std::chrono::nanoseconds{now}, *retry_after).count()
                                       : now;
        raise_to(paused_until_ns_, pause);
        raise_to(recovering_until_ns_,
                 detail::saturating_add(std::chrono::nanoseconds{pause}, config_.recovery_time).count());
        change_rate(config_.decrease_factor);
    }

    /// The current rate.
    [[nodiscard]] rate current_rate() const noexcept {
        return rate::per_second(per_second_.load(std::memory_order_acquire));
    }

    /// normal, throttled (paused) or recovering.
    [[nodiscard]] adaptive_state state() const {
        const std::int64_t now = ns(clock_.now());
        if (now < paused_until_ns_.load(std::memory_order_acquire)) return adaptive_state::throttled;
        if (now < recovering_until_ns_.load(std::memory_order_acquire)) return adaptive_state::recovering;
        return adaptive_state::normal;
    }

    /// When the current pause ends (in the past when none is in force).
    [[nodiscard]] time_point paused_until() const noexcept {
        return time_point{detail::duration_from_ns<duration>(paused_until_ns_.load(std::memory_order_acquire))};
    }

    /// The most permits one call can take.
    [[nodiscard]] std::int64_t capacity() const noexcept { return config_.capacity; }

    /// The configuration in force.
    [[nodiscard]] const adaptive_config& config() const noexcept { return config_; }

private:
    static constexpr const char* name = "ratelimit::adaptive_limiter";

    static std::int64_t ns(time_point t) noexcept { return detail::saturating_ns(t.time_since_epoch()); }

    static void raise_to(std::atomic<std::int64_t>& value, std::int64_t at_least) noexcept {
        std::int64_t seen = value.load(std::memory_order_relaxed);
        while (seen < at_least &&
               !value.compare_exchange_weak(seen, at_least, std::memory_order_acq_rel, std::memory_order_relaxed)) {
        }
    }

    /// Multiplies the rate by `factor` within [min_rate, max_rate] and makes
    /// the bucket follow. Concurrent changes converge: whoever finishes last
    /// re-applies the latest value.
    void change_rate(double factor) {
        const double low = config_.min_rate.per_second_value();
        const double high = config_.max_rate.per_second_value();
        double seen = per_second_.load(std::memory_order_relaxed);
        double next = 0;
        do {
            next = std::clamp(seen * factor, low, high);
        } while (!per_second_.compare_exchange_weak(seen, next, std::memory_order_acq_rel, std::memory_order_relaxed));
        if (next == seen) return;
        for (double applied = next;;) {
            bucket_.set_rate(rate::per_second(applied));
            const double latest = per_second_.load(std::memory_order_acquire);
            if (latest == applied) return;
            applied = latest;
        }
    }

    static adaptive_config checked(const adaptive_config& cfg) {
        const auto fail = [](const std::string& what) { throw std::invalid_argument(std::string(name) + ": " + what); };
        const double initial = cfg.initial_rate.per_second_value();
        const double low = cfg.min_rate.per_second_value();
        const double high = cfg.max_rate.per_second_value();
        if (low > high) {
            fail("min_rate (" + detail::number_text(low) + "/s) must not exceed max_rate (" + detail::number_text(high) + "/s)");
        }
        if (initial < low || initial > high) {
            fail("initial_rate (" + detail::number_text(initial) + "/s) must lie in [min_rate, max_rate] = [" +
                 detail::number_text(low) + ", " + detail::number_text(high) + "]/s");
        }
        if (!(cfg.increase_factor >= 1) || !std::isfinite(cfg.increase_factor)) {
            fail("increase_factor must be finite and >= 1, got " + detail::number_text(cfg.increase_factor));
        }
        if (!(cfg.decrease_factor > 0 && cfg.decrease_factor <= 1)) {
            fail("decrease_factor must lie in (0, 1], got " + detail::number_text(cfg.decrease_factor));
        }
        if (cfg.recovery_time < std::chrono::nanoseconds::zero()) {
            fail("recovery_time must be >= 0, got " + std::to_string(cfg.recovery_time.count()) + "ns");
        }
        detail::check_positive(name, "capacity", cfg.capacity);
        return cfg;
    }

    adaptive_config config_;
    [[no_unique_address]] Clock clock_;
    token_bucket<Clock> bucket_;
    std::atomic<double> per_second_;
    std::atomic<std::int64_t> paused_until_ns_{std::numeric_limits<std::int64_t>::min()};
    std::atomic<std::int64_t> recovering_until_ns_{std::numeric_limits<std::int64_t>::min()};
};

}  // namespace ratelimit
