#pragma once
// ratelimit::adaptive_limiter: a token bucket whose rate follows the server's
// verdicts (additive-increase is multiplicative here: AIMD on the rate).

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>

#include "clock.hpp"
#include "detail/chrono.hpp"
#include "detail/gcra.hpp"
#include "detail/text.hpp"
#include "limiter.hpp"
#include "rate.hpp"
#include "token_bucket.hpp"

namespace ratelimit {

/// How an adaptive_limiter moves its rate. The constructor checks it:
/// min_rate <= initial_rate <= max_rate, each one a token bucket of
/// `capacity` can hold (capacity × interval within 2^121 ns, some 10^20
/// years: so min_rate decides), and the factors and durations in the ranges
/// below; std::invalid_argument names the field and its value otherwise.
/// Rates faster than 1.6·10^10 per second are accepted and run at that, as
/// token_bucket runs them.
struct adaptive_config {
    rate initial_rate = rate::per_second(1);
    rate min_rate = rate::per_second(0.1);
    rate max_rate = rate::per_second(10);
    double increase_factor = 1.1;  ///< applied on each success outside recovery, finite and >= 1
    double decrease_factor = 0.5;  ///< applied on each throttle, in (0, 1]
    std::chrono::nanoseconds recovery_time = std::chrono::seconds{30};  ///< no increase for this long after a pause, >= 0
    std::int64_t capacity = 1;     ///< the bucket's burst, in [1, 2^59] (an addition to the contract's fields)
    /// Cap on any pause a throttle's retry_after asks for, > 0. A hostile
    /// `retry-after: 9000000000` would otherwise stop every acquisition for
    /// 285 years; the default, 10 minutes, is the LLM gate's
    /// `gate_config::max_pause`.
    std::chrono::nanoseconds max_pause = std::chrono::minutes{10};
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
/// acquisition until retry_after (at most max_pause) has passed, and then
/// holds the rate for recovery_time before successes raise it again.
///
/// Guarantee: between two rate changes, the token bucket's bound holds
/// (at most capacity + rate·T in any interval T); no call returns with a
/// permit before the end of the latest pause that began before it returned,
/// including callers already asleep in acquire or try_acquire_for/until when
/// the throttle came: on waking they sleep out the pause too, keeping their
/// place (their permit is used at the pause's end, so those callers may go
/// together then). current_rate() is the rate the bucket was set to, always
/// within [min_rate, max_rate]; on_success and on_throttle never throw (the
/// constructor checked that the bucket can take every rate in that range).
///
/// Thread-safe. on_success and on_throttle never wait for each other or for
/// a sleeping caller: the pause is a time stamp, not a held lock, and rate
/// changes are atomic updates followed by the bucket's set_rate. try_acquire
/// costs the token bucket's plus a clock read and a load of the pause stamp;
/// the waiting calls load the stamp again after the bucket's wait and read
/// the clock again only when a throttle came meanwhile. No allocation.
///
/// Edge cases: a throttle without retry_after cuts the rate and starts the
/// recovery at once; a later throttle extends a pause, never shortens it.
/// try_acquire_for/until fail at once when the pause or the bucket's refill
/// outlasts the deadline. When a pause that began during their sleep outlasts
/// the deadline, they return false at their wake-up and give the permit back
/// through the bucket's refund, so a failed call leaves the count as it
/// found it, unless the bucket then owes more than its refill covers (later
/// reservations, or the throttle's rate cut, which keeps the permit count
/// and so turns the caller's permit into debt at the slower rate): refund
/// gives nothing then, and the permit stays spent: one lost, never one too
/// many granted. A clock that goes back leaves pauses at the times they were
/// set.
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
    /// cannot grant them by then; otherwise sleeps out the pause and the
    /// bucket's wait, and then any pause that began meanwhile (false, with
    /// the permit given back, when that one outlasts `t`).
    bool try_acquire_until(std::int64_t n, time_point t) {
        detail::check_count(name, n);
        if (n == 0) return true;
        if (n > config_.capacity) return false;
        std::int64_t seen = paused_until_ns_.load(std::memory_order_acquire);
        for (time_point now = clock_.now(); now < at(seen); now = clock_.now()) {
            // The bucket refills during the pause: both must be over by t.
            const time_point bucket_ready = detail::deadline_after(now, bucket_.time_until_available(n));
            if (std::max(at(seen), bucket_ready) > t) return false;
            ratelimit::sleep_until(clock_, at(seen));
            seen = paused_until_ns_.load(std::memory_order_acquire);  // a throttle may have extended it
        }
        if (!bucket_.try_acquire_until(n, t)) return false;
        if (sit_out_pauses_since(seen, t)) return true;
        bucket_.refund(n);  // all or nothing: the pause outlasts the deadline
        return false;
    }

    /// Takes n permits, sleeping out any pause, then the bucket's wait (first
    /// come, first served), then any pause that began meanwhile; returns the
    /// time slept. Throws capacity_exceeded when n > capacity.
    duration acquire(std::int64_t n = 1) {
        detail::check_count(name, n);
        if (n == 0) return duration::zero();
        if (n > config_.capacity) throw capacity_exceeded(name, n, config_.capacity);
        const time_point start = clock_.now();
        std::int64_t seen = paused_until_ns_.load(std::memory_order_acquire);
        for (time_point now = start; now < at(seen); now = clock_.now()) {
            ratelimit::sleep_until(clock_, at(seen));  // reserve after the pause: the bucket refills during it
            seen = paused_until_ns_.load(std::memory_order_acquire);
        }
        (void)bucket_.acquire(n);
        (void)sit_out_pauses_since(seen, std::nullopt);
        return elapsed_since(start);
    }

    /// Gives back n unused permits.
    void refund(std::int64_t n) { bucket_.refund(n); }

    /// Reports a request the server accepted: raises the rate in the normal state.
    void on_success() {
        if (state() != adaptive_state::normal) return;
        change_rate(config_.increase_factor);
    }

    /// Reports a throttle (HTTP 429): cuts the rate and pauses until
    /// `retry_after` (at most config().max_pause) has passed.
    void on_throttle(std::optional<std::chrono::nanoseconds> retry_after = std::nullopt) {
        const std::int64_t now = ns(clock_.now());
        const std::chrono::nanoseconds pause_for =
            std::clamp(retry_after.value_or(std::chrono::nanoseconds::zero()), std::chrono::nanoseconds::zero(),
                       config_.max_pause);
        const std::int64_t pause = detail::saturating_add(std::chrono::nanoseconds{now}, pause_for).count();
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
    [[nodiscard]] time_point paused_until() const noexcept { return at(paused_until_ns_.load(std::memory_order_acquire)); }

    /// The most permits one call can take.
    [[nodiscard]] std::int64_t capacity() const noexcept { return config_.capacity; }

    /// True when it acts as a fresh one: back to normal, at the initial rate,
    /// with a full bucket (keyed may then drop it without loss).
    [[nodiscard]] bool is_at_rest() {
        return state() == adaptive_state::normal && current_rate() == config_.initial_rate &&
               bucket_.available() >= config_.capacity;
    }

    /// True when it owes nothing and no pause is in force: dropping it (keyed)
    /// would not forget a 429 pause or a permit granted ahead of the refill.
    [[nodiscard]] bool is_idle() { return state() != adaptive_state::throttled && bucket_.available() >= 0; }

    /// The configuration in force.
    [[nodiscard]] const adaptive_config& config() const noexcept { return config_; }

private:
    static constexpr const char* name = "ratelimit::adaptive_limiter";

    static std::int64_t ns(time_point t) noexcept { return detail::saturating_ns(t.time_since_epoch()); }
    static time_point at(std::int64_t ns) noexcept { return time_point{detail::duration_from_ns<duration>(ns)}; }

    /// Time from `start` to now, never negative (the clock may have gone back), saturating.
    duration elapsed_since(time_point start) {
        const std::int64_t now = ns(clock_.now());
        std::int64_t waited = 0;
        if (__builtin_sub_overflow(now, ns(start), &waited)) {
            waited = now > ns(start) ? std::numeric_limits<std::int64_t>::max() : 0;
        }
        return detail::duration_from_ns<duration>(std::max<std::int64_t>(waited, 0));
    }

    /// After a grant: sleeps out every pause that began since the pause stamp
    /// read `seen` (a throttle that came while the caller slept), looking again
    /// after each; false, at once, when one lasts past `deadline`.
    bool sit_out_pauses_since(std::int64_t seen, std::optional<time_point> deadline) {
        for (std::int64_t latest = paused_until_ns_.load(std::memory_order_acquire); latest != seen;
             latest = paused_until_ns_.load(std::memory_order_acquire)) {
            seen = latest;
            if (at(latest) <= clock_.now()) return true;
            if (deadline && at(latest) > *deadline) return false;
            ratelimit::sleep_until(clock_, at(latest));
        }
        return true;
    }

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

    /// Why a token bucket of `capacity` cannot run at `r` (its set_rate
    /// would throw: the rule of token_bucket's configuration), or nothing.
    static std::optional<std::string> unrepresentable(const rate& r, std::int64_t capacity) {
        const long double interval_ns = r.exact_interval().count();
        if (!detail::gcra::finest_fitting_shift(interval_ns, capacity)) {
            return "is too slow for a token bucket of capacity " + std::to_string(capacity) +
                   " (capacity x interval must fit in 2^121 ns, about 8e19 years)";
        }
        return std::nullopt;
    }

    static adaptive_config checked(const adaptive_config& cfg) {
        const auto fail = [](const std::string& what) { throw std::invalid_argument(std::string(name) + ": " + what); };
        if (cfg.capacity <= 0 || cfg.capacity > detail::gcra::max_tolerance) {
            fail("capacity must lie in [1, 2^59], got " + std::to_string(cfg.capacity));
        }
        const double initial = cfg.initial_rate.per_second_value();
        const double low = cfg.min_rate.per_second_value();
        const double high = cfg.max_rate.per_second_value();
        for (const auto& [field, value] : {std::pair{"min_rate", low}, std::pair{"max_rate", high}}) {
            if (!(value > 0) || !std::isfinite(value)) {  // a rate outside double's range per second
                fail(std::string(field) + " (" + detail::number_text(value) + "/s) must be finite and > 0 per second");
            }
        }
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
        if (cfg.max_pause <= std::chrono::nanoseconds::zero()) {
            fail("max_pause must be > 0, got " + std::to_string(cfg.max_pause.count()) + "ns");
        }
        // The bucket starts at initial_rate as given and later runs at
        // rate::per_second(v) for v in [min, max]: if both ends fit, all do
        // (representability is monotonic in the interval).
        const std::pair<const char*, rate> rates[] = {{"initial_rate", cfg.initial_rate},
                                                      {"min_rate", rate::per_second(low)},
                                                      {"max_rate", rate::per_second(high)}};
        for (const auto& [field, r] : rates) {
            if (const std::optional<std::string> why = unrepresentable(r, cfg.capacity)) {
                fail(std::string(field) + " (" + detail::number_text(r.per_second_value()) + "/s) " + *why);
            }
        }
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
