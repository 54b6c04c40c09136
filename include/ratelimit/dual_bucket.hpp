#pragma once
// ratelimit::dual_bucket: one request bucket and one token bucket charged
// together, all or nothing (requests per minute AND tokens per minute).

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>

#include "clock.hpp"
#include "limiter.hpp"
#include "rate.hpp"
#include "token_bucket.hpp"

namespace ratelimit {

/// A dual_bucket's reservation: one request and `count()` tokens, usable once
/// both are, at `ready_at()` (the later of the two).
///
/// Move-only, like `reservation`; dropping it keeps the permits taken.
/// `cancel()` cancels both halves, each by the token bucket's rule (x/time/rate:
/// what later reservations did not take, nothing once now() > its own ready_at()).
template <class Clock>
class [[nodiscard]] dual_reservation {
public:
    using clock_type = Clock;
    using duration = typename Clock::duration;
    using time_point = typename Clock::time_point;

    dual_reservation(Clock clock, reservation<Clock> request, reservation<Clock> tokens) noexcept
        : clock_(std::move(clock)), request_(std::move(request)), tokens_(std::move(tokens)) {}

    /// When the request and its tokens may be used: the later of the two.
    [[nodiscard]] time_point ready_at() const noexcept { return std::max(request_.ready_at(), tokens_.ready_at()); }
    /// Tokens held (the request is always one).
    [[nodiscard]] std::int64_t count() const noexcept { return tokens_.count(); }
    /// Time from now until ready_at(), zero when already ready.
    [[nodiscard]] duration delay() const {
        const time_point now = clock_.now();
        const time_point ready = ready_at();
        return ready > now ? std::chrono::duration_cast<duration>(ready - now) : duration::zero();
    }
    /// Sleeps on the limiter's clock until ready_at(); no lock is held.
    void wait() {
        const time_point ready = ready_at();
        if (ready > clock_.now()) ratelimit::sleep_until(clock_, ready);
    }
    /// Gives back both halves by the token bucket's cancel rule; acts once.
    void cancel() noexcept {
        tokens_.cancel();
        request_.cancel();
    }

private:
    [[no_unique_address]] Clock clock_;
    reservation<Clock> request_;
    reservation<Clock> tokens_;
};

/// Two token buckets charged together: every call is one request AND `n`
/// tokens (an LLM call: 1 request and its prompt + completion tokens). The
/// request bucket holds `request_capacity` and refills at `requests`; the
/// token bucket holds `token_capacity` and refills at `tokens`; both start full.
///
/// Guarantee: each bucket keeps its own bound, so in any interval of length T
/// at most `request_capacity + requests·T` calls and `token_capacity +
/// tokens·T` tokens are granted (reserved permits counted at their ready_at()).
/// All or nothing: a call is granted from both buckets or from neither; a
/// call refused for lack of tokens leaves the request bucket as it was, and
/// the other way round. Blocking callers are served first come, first served:
/// `acquire` reserves on both and sleeps until the later is ready.
///
/// Thread-safety and cost: the two buckets are lock-free token_buckets (this
/// type never re-does their math). A call checks both with
/// `time_until_available` and then reserves on both inside one short mutex
/// section (a few loads, two CASes, no allocation), so the check cannot go
/// stale between the two buckets and a granted request never has to be
/// undone. (Without the lock, the first take would have to be refunded when
/// the second failed, and a refund racing with another caller's reservation
/// ahead of time can let permits in early; see all_of.) The mutex is never
/// held while sleeping. Refunds skip it: they only add permits.
///
/// Edge cases: `n` counts tokens. n == 0 is a call that uses no tokens: it
/// still charges one request (so, unlike other limiters, it fails when the
/// request bucket is empty). n < 0 throws std::invalid_argument; n >
/// token_capacity() never blocks (`try_*` return false, `acquire` and
/// `reserve` throw capacity_exceeded). Clocks and rates behave as in token_bucket.
template <clock Clock = std::chrono::steady_clock>
class dual_bucket {
public:
    using clock_type = Clock;
    using duration = typename Clock::duration;
    using time_point = typename Clock::time_point;

    /// Full buckets: `request_capacity` (> 0) requests refilled at `requests`,
    /// `token_capacity` (> 0) tokens refilled at `tokens`.
    dual_bucket(rate requests, std::int64_t request_capacity, rate tokens, std::int64_t token_capacity, Clock c = {})
        : clock_(std::move(c)),
          requests_(requests, checked(request_capacity, "request_capacity"), clock_),
          tokens_(tokens, checked(token_capacity, "token_capacity"), clock_) {}
    dual_bucket(const dual_bucket&) = delete;
    dual_bucket& operator=(const dual_bucket&) = delete;
    ~dual_bucket() = default;

    /// Takes one request and n tokens if both are available now; never blocks.
    bool try_acquire(std::int64_t n = 1) {
        detail::check_count(name, n);
        if (n > token_capacity()) return false;
        const time_point now = clock_.now();
        return take(n, now, now).has_value();
    }

    /// Takes one request and n tokens if both can be had within `d`, sleeping
    /// until the later is ready; false at once when that is later.
    bool try_acquire_for(std::int64_t n, duration d) {
        detail::check_count(name, n);
        const time_point now = clock_.now();
        const time_point deadline =
            detail::deadline_after(now, d);
        return try_acquire_until(n, deadline);
    }

    /// Takes one request and n tokens if both can be had by `t`, sleeping
    /// until the later is ready; false at once when that is later. A past `t` acts as now.
    bool try_acquire_until(std::int64_t n, time_point t) {
        detail::check_count(name, n);
        if (n > token_capacity()) return false;
        const time_point now = clock_.now();
        const std::optional<time_point> ready = take(n, now, t);
        if (!ready) return false;
        if (*ready > now) ratelimit::sleep_until(clock_, *ready);
        return true;
    }

    /// Takes one request and n tokens, sleeping until both are usable; returns
    /// the time slept. Throws capacity_exceeded when n > token_capacity().
    duration acquire(std::int64_t n = 1) {
        dual_reservation<Clock> r = reserve(n);
        const duration waited = r.delay();
        r.wait();
        return waited;
    }

    /// Takes one request and n tokens now, possibly ahead of time; the
    /// reservation says when both may be used. Throws capacity_exceeded when
    /// n > token_capacity().
    dual_reservation<Clock> reserve(std::int64_t n = 1) {
        detail::check_count(name, n);
        const std::int64_t capacity = token_capacity();
        if (n > capacity) throw capacity_exceeded(name, n, capacity);
        const time_point now = clock_.now();
        std::lock_guard lock(mutex_);
        return reserve_locked(n, now);
    }

    /// Gives back a whole call not made: one request and its n tokens
    /// (each capped at a full bucket). The undo of try_acquire(n).
    void refund(std::int64_t n) {
        detail::check_count(name, n);
        requests_.refund(1);
        tokens_.refund(n);
    }

    /// Gives back n tokens reserved but not used (an estimate above the actual
    /// usage); the request stays charged.
    void refund_tokens(std::int64_t n) {
        detail::check_count(name, n);
        tokens_.refund(n);
    }

    /// How long until one request and n tokens could be taken; duration::max()
    /// when n > token_capacity().
    [[nodiscard]] duration time_until_available(std::int64_t n = 1) {
        detail::check_count(name, n);
        return time_until_available_at(n, clock_.now());  // two reads; no lock needed for an estimate
    }

    /// Whole requests in the request bucket now (negative while reserved ahead).
    [[nodiscard]] std::int64_t available_requests() { return requests_.available(); }
    /// Whole tokens in the token bucket now (negative while reserved ahead).
    [[nodiscard]] std::int64_t available_tokens() { return tokens_.available(); }
    /// Both buckets full: the same as a new dual_bucket (keyed drops it at no loss).
    [[nodiscard]] bool is_at_rest() {
        return requests_.available() >= requests_.capacity() && tokens_.available() >= tokens_.capacity();
    }

    /// The refill rate of requests.
    [[nodiscard]] rate request_rate() const { return requests_.current_rate(); }
    /// The refill rate of tokens.
    [[nodiscard]] rate token_rate() const { return tokens_.current_rate(); }
    /// The most requests the request bucket holds.
    [[nodiscard]] std::int64_t request_capacity() const noexcept { return requests_.capacity(); }
    /// The most tokens the token bucket holds: the largest n one call can take.
    [[nodiscard]] std::int64_t token_capacity() const noexcept { return tokens_.capacity(); }
    /// The largest n one call can be granted: token_capacity().
    [[nodiscard]] std::int64_t capacity() const noexcept { return token_capacity(); }

    /// Changes the request rate at once, keeping the current request count.
    void set_request_rate(rate r) {
        std::lock_guard lock(mutex_);
        requests_.set_rate(r);
    }
    /// Changes the token rate at once, keeping the current token count.
    void set_token_rate(rate r) {
        std::lock_guard lock(mutex_);
        tokens_.set_rate(r);
    }
    /// Changes the request capacity (> 0) at once, keeping the count capped at it.
    void set_request_capacity(std::int64_t capacity) {
        detail::check_positive(name, "request_capacity", capacity);
        std::lock_guard lock(mutex_);
        requests_.set_capacity(capacity);
    }
    /// Changes the token capacity (> 0) at once, keeping the count capped at it.
    void set_token_capacity(std::int64_t capacity) {
        detail::check_positive(name, "token_capacity", capacity);
        std::lock_guard lock(mutex_);
        tokens_.set_capacity(capacity);
    }

    /// The clock both buckets read.
    [[nodiscard]] const Clock& get_clock() const noexcept { return clock_; }

private:
    static constexpr const char* name = "ratelimit::dual_bucket";

    static std::int64_t checked(std::int64_t capacity, const char* argument) {
        detail::check_positive(name, argument, capacity);
        return capacity;
    }

    /// The later of the two buckets' waits for one request and n tokens, as of `now`.
    duration time_until_available_at(std::int64_t n, time_point now) {
        const duration request_wait = requests_.time_until_available_at(1, now);
        if (n == 0) return request_wait;
        return std::max(request_wait, tokens_.time_until_available_at(n, now));
    }

    /// The one admission decision: takes one request and n tokens (n <=
    /// token capacity) if both are usable by `deadline` (a past deadline means
    /// now) and returns when; takes nothing otherwise. Reads no clock: both
    /// buckets are asked as of `now`.
    std::optional<time_point> take(std::int64_t n, time_point now, time_point deadline) {
        std::lock_guard lock(mutex_);
        const duration wait = time_until_available_at(n, now);
        if (wait == duration::max()) return std::nullopt;
        if (wait != duration::zero() && (deadline <= now || wait > deadline - now)) return std::nullopt;
        dual_reservation<Clock> r = reserve_locked(n, now);
        const time_point ready = r.ready_at();
        if (ready > std::max(deadline, now)) {  // cannot happen under the mutex; kept as a guard
            r.cancel();  // exact: under the mutex nobody reserved after us
            return std::nullopt;
        }
        return ready;
    }

    /// Under mutex_: reserves one request and n tokens (n <= token capacity) as of `now`.
    dual_reservation<Clock> reserve_locked(std::int64_t n, time_point now) {
        reservation<Clock> request = requests_.reserve_at(1, now);
        try {
            reservation<Clock> tokens = tokens_.reserve_at(n, now);
            return dual_reservation<Clock>(clock_, std::move(request), std::move(tokens));
        } catch (...) {
            request.cancel();  // tokens beyond the time range: give the request back
            throw;
        }
    }

    [[no_unique_address]] Clock clock_;
    token_bucket<Clock> requests_;
    token_bucket<Clock> tokens_;
    std::mutex mutex_;  // makes check-then-take on the two buckets one step
};

}  // namespace ratelimit
