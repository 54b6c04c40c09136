#pragma once
// ratelimit::concurrency_limiter: at most N permits held at once, with a
// first come, first served queue for callers that wait.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <limits>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>

#include "clock.hpp"
#include "detail/chrono.hpp"
#include "detail/condition_wait.hpp"
#include "limiter.hpp"

namespace ratelimit {

/// A counting semaphore: at most `max_concurrent` permits are held at once.
/// `try_acquire`/`acquire`/`lease` take permits, `release` (or a permit's
/// destructor) gives them back; time plays no part except as a deadline.
///
/// Guarantee: `in_use() <= max_concurrent()` at every instant. Waiting callers
/// are served first come, first served: a waiter for n is never overtaken by
/// a later caller, however small its request, and while anyone waits
/// `try_acquire` refuses rather than jump the queue.
///
/// Thread-safe. `try_acquire` is lock-free: one CAS on the counter word (which
/// also carries a "callers are queued" bit). `release` is one CAS, plus a short
/// mutex section to hand permits to the queue when someone waits. A waiter
/// sleeps on its own condition variable (no thundering herd), queued in an
/// intrusive list of stack nodes: no allocation anywhere, and no lock is held
/// while sleeping.
///
/// Waiting and clocks. Deadlines are read on `Clock`. With a std::chrono clock
/// a waiter blocks on its condition variable until the deadline (or, for a
/// clock whose `now()` is not static, in slices re-checked against
/// `clock.now()`). With a clock that sleeps itself (`c.sleep_until(t)`, as
/// `manual_clock` does, advancing at once), a timed wait stays queued while it
/// calls `ratelimit::sleep_until(clock, deadline)` and then takes what was
/// handed to it, so manual-clock tests finish instantly and never hang:
/// `try_acquire_until` on an exhausted limiter advances the manual clock to
/// the deadline and returns false unless another thread released meanwhile.
/// `acquire` has no deadline and blocks until a release on every clock.
///
/// Edge cases: n == 0 succeeds at once; n < 0 throws std::invalid_argument;
/// n > max_concurrent() never blocks (`try_*` return false, `acquire` and
/// `lease` throw capacity_exceeded). Unlike a rate limiter the earliest grant
/// is unknown, so a timed wait on an exhausted limiter waits until its
/// deadline. Releasing more than is in use throws std::logic_error and
/// changes nothing. The limiter must outlive its waiters and permits.
template <clock Clock = std::chrono::steady_clock>
class concurrency_limiter {
public:
    using clock_type = Clock;
    using duration = typename Clock::duration;
    using time_point = typename Clock::time_point;

    class permit;

    /// A limiter letting at most `max_concurrent` (> 0) permits be held at once.
    explicit concurrency_limiter(std::int64_t max_concurrent, Clock c = {})
        : clock_(std::move(c)), max_(max_concurrent) {
        detail::check_positive(name, "max_concurrent", max_concurrent);
    }
    concurrency_limiter(const concurrency_limiter&) = delete;
    concurrency_limiter& operator=(const concurrency_limiter&) = delete;
    ~concurrency_limiter() = default;

    /// Takes n permits if they are free now and nobody waits; never blocks.
    bool try_acquire(std::int64_t n = 1) {
        detail::check_count(name, n);
        if (n == 0) return true;
        if (n > max_) return false;
        std::uint64_t word = state_.load(std::memory_order_acquire);
        for (;;) {
            if ((word & queued_bit) != 0 || !fits(in_use_of(word), max_, n)) return false;
            if (state_.compare_exchange_weak(word, word + static_cast<std::uint64_t>(n), std::memory_order_acq_rel,
                                             std::memory_order_acquire)) {
                return true;
            }
        }
    }

    /// Takes n permits, waiting in line at most `d` for them; false when the wait ran out.
    bool try_acquire_for(std::int64_t n, duration d) {
        detail::check_count(name, n);
        if (n == 0) return true;
        const time_point now = clock_.now();
        const time_point deadline =
            detail::deadline_after(now, d);
        return try_acquire_until(n, deadline);
    }

    /// Takes n permits, waiting in line until `t` at most; false when the wait
    /// ran out. A past `t` acts as try_acquire.
    bool try_acquire_until(std::int64_t n, time_point t) {
        detail::check_count(name, n);
        if (n == 0) return true;
        if (n > max_) return false;
        if (try_acquire(n)) return true;
        if (t == time_point::max()) return wait_in_line(n, std::nullopt);  // no deadline, on every clock
        if (t <= clock_.now()) return false;
        return wait_in_line(n, t);
    }

    /// Takes n permits, waiting in line until others release them; returns the
    /// time waited. Throws capacity_exceeded when n > max_concurrent().
    duration acquire(std::int64_t n = 1) {
        detail::check_count(name, n);
        if (n == 0) return duration::zero();
        if (n > max_) throw capacity_exceeded(name, n, max_);
        if (try_acquire(n)) return duration::zero();
        const time_point start = clock_.now();
        wait_in_line(n, std::nullopt);
        const time_point end = clock_.now();
        return end > start ? std::chrono::duration_cast<duration>(end - start) : duration::zero();
    }

    /// Gives back n permits and hands them to waiters in arrival order.
    /// Throws std::logic_error, changing nothing, when n > in_use().
    void release(std::int64_t n = 1) {
        detail::check_count(name, n);
        if (n == 0) return;
        std::uint64_t word = state_.load(std::memory_order_acquire);
        for (;;) {
            const std::int64_t held = in_use_of(word);
            if (n > held) {
                throw std::logic_error(std::string(name) + "::release: n = " + std::to_string(n) + " exceeds the " +
                                       std::to_string(held) + " permits in use");
            }
            if (state_.compare_exchange_weak(word, word - static_cast<std::uint64_t>(n), std::memory_order_acq_rel,
                                             std::memory_order_acquire)) {
                break;
            }
        }
        // A waiter that queued after our CAS sees the freed permits itself.
        if ((word & queued_bit) != 0) {
            std::lock_guard lock(mutex_);
            dispatch();
        }
    }

    /// Takes n permits as `acquire` does and returns them as a permit that
    /// releases them when destroyed. Throws capacity_exceeded when n > max_concurrent().
    [[nodiscard]] permit lease(std::int64_t n = 1) {
        (void)acquire(n);
        return permit(this, n);
    }

    /// A permit for n if `try_acquire(n)` succeeds, else nothing.
    [[nodiscard]] std::optional<permit> try_lease(std::int64_t n = 1) {
        if (!try_acquire(n)) return std::nullopt;
        return permit(this, n);
    }

    /// A permit for n if `try_acquire_until(n, t)` succeeds, else nothing.
    [[nodiscard]] std::optional<permit> try_lease_until(std::int64_t n, time_point t) {
        if (!try_acquire_until(n, t)) return std::nullopt;
        return permit(this, n);
    }

    /// A permit for n if `try_acquire_for(n, d)` succeeds, else nothing.
    [[nodiscard]] std::optional<permit> try_lease_for(std::int64_t n, duration d) {
        if (!try_acquire_for(n, d)) return std::nullopt;
        return permit(this, n);
    }

    /// Permits held now.
    [[nodiscard]] std::int64_t in_use() const noexcept { return in_use_of(state_.load(std::memory_order_acquire)); }
    /// Permits free now (they may still be promised to a waiter being woken).
    [[nodiscard]] std::int64_t available() const noexcept { return max_ - in_use(); }
    /// The most permits held at once.
    [[nodiscard]] std::int64_t max_concurrent() const noexcept { return max_; }
    /// The largest n one call can be granted: max_concurrent().
    [[nodiscard]] std::int64_t capacity() const noexcept { return max_; }
    /// Callers waiting in line now (takes the queue's mutex briefly).
    [[nodiscard]] std::int64_t waiting() const {
        std::lock_guard lock(mutex_);
        return waiting_;
    }
    /// The clock deadlines are read on.
    [[nodiscard]] const Clock& get_clock() const noexcept { return clock_; }

private:
    static constexpr const char* name = "ratelimit::concurrency_limiter";
    /// Set while callers are queued; the low 63 bits count permits in use.
    static constexpr std::uint64_t queued_bit = std::uint64_t{1} << 63;

    /// One caller waiting in line: a node on its own stack.
    struct waiter {
        explicit waiter(std::int64_t count) noexcept : n(count) {}
        std::int64_t n;
        waiter* prev = nullptr;
        waiter* next = nullptr;
        bool granted = false;  // guarded by mutex_
        std::condition_variable wake;
    };

    /// The one admission decision: may n more permits be held beside `in_use`?
    static constexpr bool fits(std::int64_t in_use, std::int64_t max, std::int64_t n) noexcept {
        return n <= max - in_use;
    }

    static constexpr std::int64_t in_use_of(std::uint64_t word) noexcept {
        return static_cast<std::int64_t>(word & ~queued_bit);
    }

    /// Takes n permits if they fit, whatever the queued bit says; for the queue's owner.
    bool take_if_fits(std::int64_t n) noexcept {
        std::uint64_t word = state_.load(std::memory_order_acquire);
        for (;;) {
            if (!fits(in_use_of(word), max_, n)) return false;
            if (state_.compare_exchange_weak(word, word + static_cast<std::uint64_t>(n), std::memory_order_acq_rel,
                                             std::memory_order_acquire)) {
                return true;
            }
        }
    }

    /// Under mutex_: grants waiters from the front while they fit, stopping at
    /// the first that does not (no overtaking); clears the bit when none is left.
    void dispatch() noexcept {
        while (head_ != nullptr && take_if_fits(head_->n)) {
            waiter* const w = head_;
            unlink(*w);
            w->granted = true;
            w->wake.notify_one();  // under the lock: w cannot be destroyed before this returns
        }
        if (head_ == nullptr) state_.fetch_and(~queued_bit, std::memory_order_acq_rel);
    }

    void enqueue(waiter& w) noexcept {
        w.prev = tail_;
        if (tail_ != nullptr) {
            tail_->next = &w;
        } else {
            head_ = &w;
        }
        tail_ = &w;
        ++waiting_;
    }

    void unlink(waiter& w) noexcept {
        (w.prev != nullptr ? w.prev->next : head_) = w.next;
        (w.next != nullptr ? w.next->prev : tail_) = w.prev;
        w.prev = w.next = nullptr;
        --waiting_;
    }

    /// Queues for n permits and waits until granted or, with a deadline, until
    /// it passes. True when granted.
    bool wait_in_line(std::int64_t n, std::optional<time_point> deadline) {
        std::unique_lock lock(mutex_);
        if (head_ == nullptr && take_if_fits(n)) return true;
        waiter self(n);
        enqueue(self);
        state_.fetch_or(queued_bit, std::memory_order_acq_rel);
        dispatch();  // permits released before the bit was set are ours to see
        if (!self.granted) {
            if (!deadline) {
                self.wake.wait(lock, [&] { return self.granted; });
            } else {
                wait_until(lock, self, *deadline);
            }
        }
        if (self.granted) return true;
        unlink(self);
        dispatch();  // leaving the front may let the next waiter in
        return false;
    }

    /// Sleeps (not holding the lock) until `self` is granted or `deadline` passes on Clock.
    void wait_until(std::unique_lock<std::mutex>& lock, waiter& self, time_point deadline) {
        if constexpr (requires(Clock& c) { c.sleep_until(deadline); }) {
            // A clock that sleeps itself (manual_clock: at once). Stay queued
            // meanwhile, so a release on another thread still reaches us.
            lock.unlock();
            ratelimit::sleep_until(clock_, deadline);
            lock.lock();
        } else {
            (void)detail::wait_on(self.wake, lock, clock_, deadline, [&] { return self.granted; });
        }
    }

    [[no_unique_address]] Clock clock_;
    const std::int64_t max_;
    std::atomic<std::uint64_t> state_{0};  // permits in use | queued_bit
    mutable std::mutex mutex_;
    waiter* head_ = nullptr;   // guarded by mutex_
    waiter* tail_ = nullptr;   // guarded by mutex_
    std::int64_t waiting_ = 0;  // guarded by mutex_
};

/// n permits of a concurrency_limiter, given back when released or destroyed.
///
/// Move-only; a moved-from or released permit holds nothing. Must not outlive
/// its limiter. If its permits were already given back by hand through
/// `concurrency_limiter::release`, `release()` throws std::logic_error, and
/// the destructor (which cannot throw) terminates: a double release is a bug.
template <clock Clock>
class concurrency_limiter<Clock>::permit {
public:
    /// A permit that holds nothing.
    permit() noexcept = default;
    permit(permit&& other) noexcept
        : owner_(std::exchange(other.owner_, nullptr)), n_(std::exchange(other.n_, 0)) {}
    /// Releases what this permit holds, then takes over `other`'s permits.
    permit& operator=(permit&& other) noexcept {
        if (this != &other) {
            release_noexcept();
            owner_ = std::exchange(other.owner_, nullptr);
            n_ = std::exchange(other.n_, 0);
        }
        return *this;
    }
    permit(const permit&) = delete;
    permit& operator=(const permit&) = delete;
    ~permit() { release_noexcept(); }

    /// Gives the permits back now; later calls do nothing.
    void release() {
        concurrency_limiter* const owner = std::exchange(owner_, nullptr);
        const std::int64_t n = std::exchange(n_, 0);
        if (owner != nullptr) owner->release(n);
    }
    /// Permits held: n until released or moved from, then 0.
    [[nodiscard]] std::int64_t count() const noexcept { return n_; }
    /// True while permits are held.
    explicit operator bool() const noexcept { return n_ > 0; }

private:
    friend class concurrency_limiter;
    permit(concurrency_limiter* owner, std::int64_t n) noexcept : owner_(n > 0 ? owner : nullptr), n_(n) {}

    void release_noexcept() noexcept { release(); }

    concurrency_limiter* owner_ = nullptr;
    std::int64_t n_ = 0;
};

}  // namespace ratelimit
