#pragma once
// The limiter concepts every limiter meets, the errors they throw, and the
// reservation returned by reserve(n).

#include <array>
#include <chrono>
#include <concepts>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>

#include "clock.hpp"

namespace ratelimit {

/// A limiter grants permits: all or nothing, thread-safe, on the clock it holds.
///
/// - `try_acquire(n)` never blocks.
/// - `try_acquire_for(n, d)` / `try_acquire_until(n, t)` wait at most until the
///   deadline, and return false at once when the earliest grant lies beyond it.
/// - `acquire(n)` blocks until granted and returns the time it waited.
///
/// `n == 0` succeeds at once; `n < 0` throws std::invalid_argument; `n` above
/// the capacity never blocks: `try_*` return false, `acquire` throws
/// `capacity_exceeded`. A failed call changes no state.
template <class L>
concept limiter = requires(L& l, std::int64_t n, typename L::duration d, typename L::time_point t) {
    typename L::clock_type;
    typename L::duration;
    typename L::time_point;
    { l.try_acquire(n) } -> std::same_as<bool>;
    { l.try_acquire_for(n, d) } -> std::same_as<bool>;
    { l.try_acquire_until(n, t) } -> std::same_as<bool>;
    { l.acquire(n) } -> std::same_as<typename L::duration>;
};

/// A limiter that takes back permits granted but not used (capped at its capacity).
template <class L>
concept refundable_limiter = limiter<L> && requires(L& l, std::int64_t n) { l.refund(n); };

/// A limiter that can take permits now for use later: `reserve(n)` returns a
/// `reservation` saying when they may be used.
template <class L>
concept reservable_limiter = limiter<L> && requires(L& l, std::int64_t n) { l.reserve(n); };

/// `n` can never be granted: it exceeds what the limiter can ever hold.
struct capacity_exceeded : std::invalid_argument {
    capacity_exceeded(const std::string& where, std::int64_t requested, std::int64_t capacity)
        : std::invalid_argument(where + ": n = " + std::to_string(requested) + " exceeds the capacity " +
                                std::to_string(capacity) + " and can never be granted"),
          requested_(requested),
          capacity_(capacity) {}
    /// The n that was asked for.
    [[nodiscard]] std::int64_t requested() const noexcept { return requested_; }
    /// The most the limiter can ever grant at once.
    [[nodiscard]] std::int64_t capacity() const noexcept { return capacity_; }

private:
    std::int64_t requested_;
    std::int64_t capacity_;
};

/// Too many callers are already waiting (leaky_bucket's bounded queue).
struct queue_full : std::runtime_error {
    using std::runtime_error::runtime_error;
};

namespace detail {

/// Throws std::invalid_argument unless n >= 0.
inline void check_count(const char* where, std::int64_t n) {
    if (n < 0) throw std::invalid_argument(std::string(where) + ": n must be >= 0, got " + std::to_string(n));
}

/// Throws std::invalid_argument unless value > 0; `name` is the argument's name.
inline void check_positive(const char* where, const char* name, std::int64_t value) {
    if (value <= 0) {
        throw std::invalid_argument(std::string(where) + ": " + name + " must be > 0, got " + std::to_string(value));
    }
}

/// How a limiter gives back a cancelled reservation: `give_back(owner, n,
/// ready_at, record)` applies the limiter's cancel rule. `record` is the
/// limiter's own note of the reservation (for a token bucket: where it ended).
template <class TimePoint>
struct canceller {
    using record_type = std::array<std::int64_t, 3>;
    void* owner = nullptr;
    void (*give_back)(void* owner, std::int64_t n, TimePoint ready_at, const record_type& record) noexcept = nullptr;
    record_type record{};
};

}  // namespace detail

/// Permits taken now for use at `ready_at()`, returned by a limiter's `reserve(n)`.
///
/// The permits are already counted against the limiter: dropping the
/// reservation keeps them taken (the conservative choice). `wait()` sleeps on
/// the limiter's clock until `ready_at()`; `cancel()` gives back what it can by
/// the limiter's rule (for the token bucket, Go's x/time/rate rule: n minus the
/// permits reserved after this one, and nothing once now() > ready_at()).
///
/// Move-only; cancel() acts once. Must not outlive the limiter that made it.
template <class Clock>
class [[nodiscard]] reservation {
public:
    using clock_type = Clock;
    using duration = typename Clock::duration;
    using time_point = typename Clock::time_point;

    /// For limiter implementers: `n` permits ready at `ready_at`, given back through `how`.
    reservation(Clock clock, time_point ready_at, std::int64_t n, detail::canceller<time_point> how = {}) noexcept
        : clock_(std::move(clock)), ready_at_(ready_at), n_(n), how_(how) {}

    reservation(reservation&& other) noexcept
        : clock_(other.clock_), ready_at_(other.ready_at_), n_(other.n_), how_(std::exchange(other.how_, {})) {}
    reservation& operator=(reservation&& other) noexcept {
        if (this != &other) {
            clock_ = other.clock_;
            ready_at_ = other.ready_at_;
            n_ = other.n_;
            how_ = std::exchange(other.how_, {});
        }
        return *this;
    }
    reservation(const reservation&) = delete;
    reservation& operator=(const reservation&) = delete;
    ~reservation() = default;

    /// When the reserved permits may be used.
    [[nodiscard]] time_point ready_at() const noexcept { return ready_at_; }
    /// How many permits this reservation holds.
    [[nodiscard]] std::int64_t count() const noexcept { return n_; }
    /// Time from now until ready_at(), zero when already ready.
    [[nodiscard]] duration delay() const {
        const auto now = clock_.now();
        return ready_at_ > now ? std::chrono::duration_cast<duration>(ready_at_ - now) : duration::zero();
    }
    /// Sleeps on the limiter's clock until ready_at(); no lock is held.
    void wait() {
        if (ready_at_ > clock_.now()) ratelimit::sleep_until(clock_, ready_at_);
    }
    /// Gives back the permits by the limiter's cancel rule; acts once.
    void cancel() noexcept {
        const auto how = std::exchange(how_, {});
        if (how.give_back != nullptr && n_ > 0) how.give_back(how.owner, n_, ready_at_, how.record);
    }

private:
    [[no_unique_address]] Clock clock_;
    time_point ready_at_;
    std::int64_t n_;
    detail::canceller<time_point> how_;
};

}  // namespace ratelimit
