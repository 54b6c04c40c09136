#pragma once
// ratelimit::redis::batched: lease mode for a Redis-backed rate limiter. It
// takes permits from Redis a batch at a time and serves calls from a local
// pool, so k calls cost about k/batch round trips.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <limits>
#include <mutex>
#include <stdexcept>
#include <string>
#include <utility>

#include "../clock.hpp"
#include "../detail/chrono.hpp"
#include "../limiter.hpp"

namespace ratelimit::redis {

/// A limiter in front of another (`Limiter`, typically Redis-backed such as
/// redis::token_bucket): when its local pool cannot serve n, it takes `batch`
/// permits from the wrapped limiter at once (`try_acquire(batch)`), hands n to
/// the caller and keeps the rest for later calls, each usable for `max_hold`
/// after it was asked for. Pooled permits that are not used by then are
/// dropped, so a process cannot hoard them.
///
/// Guarantee. Let B(T) bound the permits the wrapped limiter grants in any
/// interval of length T (token bucket: capacity + r·T), and ρ the longest
/// reply delay of the wrapped limiter (an unbatched client's uses already
/// trail its grants by up to ρ, so it meets B(T + ρ) for uses). Across P
/// batched objects sharing one wrapped quota, the permits handed to callers
/// in any interval of length T are at most
///
///     min( B(T + max(max_hold, ρ)),  B(T + ρ) + P·(batch − 1) ).
///
/// First term: a pooled permit is used before max_hold has passed since it
/// was asked for, hence since it was granted, and a direct grant within ρ;
/// uses in [a, a+T) therefore come from grants in (a − max(max_hold, ρ), a + T).
/// Second term: a use in [a, a+T) comes either from
/// a grant delivered in that window or from a pool at instant a, and a pool
/// never holds more than batch − 1 (a refill for n hands n out at once and
/// replaces what was left). For a token bucket (and max_hold ≥ ρ) the excess
/// over an unbatched client is at most min(r·max_hold, P·(batch − 1)). A max_hold of about batch
/// divided by one process's rate of use keeps batches from expiring unused.
/// For rate limiters, whose permits are used up; not for a concurrency
/// limiter, whose permits must be released.
///
/// Cost. A pooled grant is lock-free: a clock read, an atomic load and a CAS
/// on one word (count and batch generation), no allocation. A refill is one
/// call into the wrapped limiter under a mutex, so one refill at a time per
/// object; callers that find the pool empty meanwhile wait for it (bounded
/// by the wrapped limiter's timeouts) and then take from the new pool. k
/// single-permit calls from one object cost ⌈k / batch⌉ wrapped calls while
/// batches are granted and used within max_hold. When the wrapped limiter
/// refuses a whole batch, the call asks it for its own n instead (so a call
/// is refused only when the wrapped limiter would refuse n), and for the
/// next max_hold calls go to it directly, one round trip each, as unbatched.
///
/// Edge cases: n == 0 succeeds at once; n < 0 throws std::invalid_argument;
/// n > batch goes straight to the wrapped limiter (and so does everything
/// above its capacity: `try_*` false, `acquire` capacity_exceeded). A call for
/// n that finds fewer than n pooled drops those (at most n − 1) and refills.
/// `acquire` and `try_acquire_for/until` that the pool cannot serve wait in
/// the wrapped limiter (its blocking calls, no lock held). Outages are the
/// wrapped limiter's policy: a batch granted by fail_open or a local fallback
/// is pooled like any other. The wrapped limiter must outlive this object.
template <limiter Limiter>
class batched {
public:
    using limiter_type = Limiter;
    using clock_type = typename Limiter::clock_type;
    using duration = typename Limiter::duration;
    using time_point = typename Limiter::time_point;

    /// Batches of `batch` (> 0, at most the wrapped capacity when it tells
    /// one) from `inner`, each pooled for `max_hold` (> 0), on `inner`'s
    /// clock when it exposes get_clock(), else on a default `clock_type`.
    batched(Limiter& inner, std::int64_t batch, duration max_hold)
        : batched(inner, batch, max_hold, default_clock(inner)) {}
    /// As above, reading time on `clock`.
    batched(Limiter& inner, std::int64_t batch, duration max_hold, clock_type clock)
        : inner_(&inner), clock_(std::move(clock)), batch_(batch), max_hold_(max_hold) {
        ratelimit::detail::check_positive(name, "batch", batch);
        if (batch > std::numeric_limits<std::int32_t>::max()) {
            throw std::invalid_argument(std::string(name) + ": batch must be <= 2147483647, got " +
                                        std::to_string(batch));
        }
        if constexpr (requires(const Limiter& l) { l.capacity(); }) {
            if (batch > static_cast<std::int64_t>(inner.capacity())) {
                throw std::invalid_argument(std::string(name) + ": batch must be <= the wrapped capacity " +
                                            std::to_string(inner.capacity()) + ", got " + std::to_string(batch));
            }
        }
        if (max_hold <= duration::zero()) {
            throw std::invalid_argument(std::string(name) + ": max_hold must be > 0, got " +
                                        std::to_string(ratelimit::detail::saturating_ns(max_hold)) + "ns");
        }
    }
    batched(const batched&) = delete;
    batched& operator=(const batched&) = delete;
    ~batched() = default;

    /// Takes n permits from the pool, or after one refill, or from the wrapped
    /// limiter directly; never waits for permits.
    bool try_acquire(std::int64_t n = 1) {
        ratelimit::detail::check_count(name, n);
        if (n == 0) return true;
        if (n <= batch_ && (take_pooled(n, clock_.now()) || refill(n))) return true;
        return inner_->try_acquire(n);
    }
    /// As try_acquire, then waiting at most `d` in the wrapped limiter.
    bool try_acquire_for(std::int64_t n, duration d) {
        const time_point now = clock_.now();
        return try_acquire_until(n, ratelimit::detail::deadline_after(now, d));
    }
    /// As try_acquire, then waiting until `t` at most in the wrapped limiter
    /// (false at once when it says the earliest grant is later).
    bool try_acquire_until(std::int64_t n, time_point t) {
        ratelimit::detail::check_count(name, n);
        if (n == 0) return true;
        if (n <= batch_ && (take_pooled(n, clock_.now()) || refill(n))) return true;
        return inner_->try_acquire_until(n, t);
    }
    /// Takes n permits, from the pool when it can and else waiting in the
    /// wrapped limiter's acquire; returns the time taken.
    duration acquire(std::int64_t n = 1) {
        ratelimit::detail::check_count(name, n);
        const time_point start = clock_.now();
        if (n == 0) return duration::zero();
        if (n > batch_ || !(take_pooled(n, start) || refill(n))) (void)inner_->acquire(n);
        const time_point end = clock_.now();
        return end > start ? std::chrono::duration_cast<duration>(end - start) : duration::zero();
    }

    /// Empties the pool now, giving its permits back to the wrapped limiter
    /// when that is a refundable_limiter (one call), else dropping them.
    void flush() {
        std::lock_guard lock(refill_mutex_);
        std::uint64_t word = pool_.load(std::memory_order_acquire);
        while (!pool_.compare_exchange_weak(word, word & ~count_mask, std::memory_order_acq_rel,
                                            std::memory_order_acquire)) {
        }
        const std::int64_t left = live_count(word, clock_.now());
        if constexpr (refundable_limiter<Limiter>) {
            if (left > 0) inner_->refund(left);
        }
    }

    /// Permits pooled and not yet expired.
    [[nodiscard]] std::int64_t pooled() { return live_count(pool_.load(std::memory_order_acquire), clock_.now()); }
    /// Permits taken from the wrapped limiter per refill.
    [[nodiscard]] std::int64_t batch() const noexcept { return batch_; }
    /// How long a pooled permit stays usable after it was asked for.
    [[nodiscard]] duration max_hold() const noexcept { return max_hold_; }
    /// Batches taken from the wrapped limiter so far.
    [[nodiscard]] std::uint64_t refills() const noexcept { return refills_.load(std::memory_order_relaxed); }
    /// The wrapped limiter's capacity, when it tells one.
    [[nodiscard]] std::int64_t capacity() const
        requires requires(const Limiter& l) { l.capacity(); }
    {
        return static_cast<std::int64_t>(inner_->capacity());
    }
    /// The wrapped limiter.
    [[nodiscard]] Limiter& inner() noexcept { return *inner_; }
    /// The clock pool expiries are read on.
    [[nodiscard]] const clock_type& get_clock() const noexcept { return clock_; }

private:
    static constexpr const char* name = "ratelimit::redis::batched";
    /// The pool word: batch generation in the high 32 bits, permits in the low 32.
    static constexpr std::uint64_t count_mask = 0xffff'ffffULL;

    static clock_type default_clock(Limiter& inner) {
        if constexpr (requires { inner.get_clock(); }) {
            return inner.get_clock();
        } else {
            return clock_type{};
        }
    }

    static std::int64_t ns_of(time_point t) noexcept { return ratelimit::detail::ns_since_epoch(t); }

    /// Pooled permits in `word` still usable at `now`.
    std::int64_t live_count(std::uint64_t word, time_point now) const noexcept {
        const auto count = static_cast<std::int64_t>(word & count_mask);
        if (count == 0) return 0;
        return ns_of(now) < expires_[(word >> 32) & 1].load(std::memory_order_acquire) ? count : 0;
    }

    /// Takes n from the pool when it holds n usable at `now`. The expiry is
    /// read for the generation in the word the CAS then confirms, so a refill
    /// between the two never lends a new batch's expiry to an old one.
    bool take_pooled(std::int64_t n, time_point now) noexcept {
        const std::int64_t now_ns = ns_of(now);
        std::uint64_t word = pool_.load(std::memory_order_acquire);
        for (;;) {
            if (static_cast<std::int64_t>(word & count_mask) < n) return false;
            if (now_ns >= expires_[(word >> 32) & 1].load(std::memory_order_acquire)) return false;
            if (pool_.compare_exchange_weak(word, word - static_cast<std::uint64_t>(n), std::memory_order_acq_rel,
                                            std::memory_order_acquire)) {
                return true;
            }
        }
    }

    /// One batch from the wrapped limiter, n of it for this caller and the
    /// rest pooled (replacing what was left); false when the wrapped limiter
    /// refuses the batch or refused one within the last max_hold.
    bool refill(std::int64_t n) {
        if (ns_of(clock_.now()) < direct_until_.load(std::memory_order_acquire)) return false;
        std::lock_guard lock(refill_mutex_);
        const time_point asked = clock_.now();
        if (take_pooled(n, asked)) return true;  // another caller refilled meanwhile
        if (ns_of(asked) < direct_until_.load(std::memory_order_acquire)) return false;
        const std::int64_t expires = ns_of(ratelimit::detail::deadline_after(asked, max_hold_));
        if (!inner_->try_acquire(batch_)) {
            direct_until_.store(expires, std::memory_order_release);
            return false;
        }
        refills_.fetch_add(1, std::memory_order_relaxed);
        // Only this thread writes expiries (under the mutex), and only the
        // slot of the next generation, which no reader trusts before the CAS.
        std::uint64_t word = pool_.load(std::memory_order_acquire);
        for (;;) {
            const std::uint64_t generation = ((word >> 32) + 1) & count_mask;
            expires_[generation & 1].store(expires, std::memory_order_release);
            const std::uint64_t next = (generation << 32) | static_cast<std::uint64_t>(batch_ - n);
            if (pool_.compare_exchange_weak(word, next, std::memory_order_acq_rel, std::memory_order_acquire)) {
                return true;
            }
        }
    }

    Limiter* inner_;
    [[no_unique_address]] clock_type clock_;
    std::int64_t batch_;
    duration max_hold_;
    std::atomic<std::uint64_t> pool_{0};
    std::atomic<std::int64_t> expires_[2] = {0, 0};  // clock ns a generation's permits expire at (by parity)
    std::atomic<std::int64_t> direct_until_{std::numeric_limits<std::int64_t>::min()};
    std::atomic<std::uint64_t> refills_{0};
    std::mutex refill_mutex_;
};

}  // namespace ratelimit::redis
