#pragma once
// ratelimit::sliding_window_counter: the weighted two-window estimate, lock-free.

#include <array>
#include <atomic>
#include <bit>
#include <chrono>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>

#include "clock.hpp"
#include "detail/chrono.hpp"
#include "detail/writer_guard.hpp"
#include "detail/window.hpp"
#include "limiter.hpp"

namespace ratelimit {

/// A sliding window counter: time is cut into windows of length `window`,
/// aligned at construction, and the limiter counts the permits granted in the
/// current window and in the one before. At offset e into the current window
/// it estimates the permits of the last `window` as
///     current + ceil(previous · (window − e) / window)
/// (the previous window's count, weighted by how much of it the sliding
/// window still covers) and grants n when estimate + n <= limit. The
/// arithmetic is exact integer arithmetic (detail/window.hpp).
///
/// Guarantee: each aligned window grants at most `limit` permits, and any
/// interval of length `window` sees fewer than 2·limit (2·limit − 1 at most,
/// approached only right after a window that filled up in a burst at its
/// end). Under a steady load above the limit the count settles at about
/// `limit` per window length: evenly spaced requests get limit − 1 in every
/// aligned window after the first and limit − 1 or limit in every interval of
/// one window length (a window's last permit would need the previous window's
/// weight to reach zero), so with limit 1 it grants once every other window.
/// Permits a caller waited for count at the time they became usable. Waiting
/// callers are served first come, first served: `acquire` (and
/// `try_acquire_for/until` when the deadline allows) computes from the formula
/// the earliest time the estimate leaves room for n, takes the permits for
/// that time, and sleeps until then: no polling, no retry loop.
///
/// Lock-free, O(1) memory: the state is one 64-bit atomic word holding the
/// window index (relative to a base), both counts and a 2-bit generation; a
/// grant is one compare-and-swap, a refusal reads the word twice and writes
/// nothing. No allocation, no lock held while sleeping. With
/// k = bit_width(limit) bits per count the index gets 62 − 2k bits; when the
/// clock nears the end of that range (every 256 windows for limit =
/// max_limit, every 2^28 windows for limit < 65536) one caller moves the base
/// forward under a writers-only spin lock.
///
/// Edge cases: n == 0 succeeds at once; n < 0 throws std::invalid_argument;
/// n > limit() never blocks (`try_*` return false, `acquire` throws
/// capacity_exceeded; std::overflow_error if callers already wait further
/// ahead than the word's index range, 512+ windows). limit <= 0, limit > max_limit and window <= 0 throw
/// std::invalid_argument. Overflow: the weighted count saturates, and a grant
/// whose time would pass the clock's last time (INT64_MAX ns since its epoch)
/// is never made, as with fixed_window (a window of nanoseconds::max(), a
/// deadline of time_point::max(), a clock stuck at the end of its range). A clock that stands still stays at one estimate; one
/// that goes back never reopens a window already counted: it may grant nothing
/// until it catches up with the latest window the state holds (a time before
/// construction counts as construction time).
template <clock Clock = std::chrono::steady_clock>
class sliding_window_counter {
public:
    using clock_type = Clock;
    using duration = typename Clock::duration;
    using time_point = typename Clock::time_point;

    /// The largest limit: each count gets bit_width(limit) <= 26 bits of the word.
    static constexpr std::int64_t max_limit = (std::int64_t{1} << 26) - 1;

    /// At most about `limit` (in [1, max_limit]) permits per sliding `window` (> 0).
    sliding_window_counter(std::int64_t limit, duration window, Clock c = {})
        : clock_(std::move(c)),
          params_(make_params(limit, window)),
          window_(window),
          count_bits_(std::bit_width(static_cast<std::uint64_t>(limit))),
          index_bits_(62 - 2 * count_bits_),
          origin_ns_(detail::ns_since_epoch(clock_.now())) {
        params_.end = detail::window::since(origin_ns_, detail::window::int64_max);  // the clock's last time
    }
    sliding_window_counter(const sliding_window_counter&) = delete;
    sliding_window_counter& operator=(const sliding_window_counter&) = delete;
    ~sliding_window_counter() = default;

    /// Takes n permits if the estimate has room for them now; never blocks.
    bool try_acquire(std::int64_t n = 1) {
        detail::check_count(name, n);
        if (n == 0) return true;
        const detail::window::nanoseconds at = since_origin(clock_.now());
        return take(n, at, at).outcome == detail::window::verdict::granted;
    }

    /// Takes n permits if the estimate has room for them within `d`, sleeping
    /// until then; returns false at once when it has not.
    bool try_acquire_for(std::int64_t n, duration d) {
        detail::check_count(name, n);
        if (n == 0) return true;
        const time_point now = clock_.now();
        const time_point deadline =
            detail::deadline_after(now, d);
        return wait_for(n, now, since_origin(deadline));
    }

    /// Takes n permits if the estimate has room for them by `t`, sleeping
    /// until then; returns false at once when it has not. A past `t` acts as now.
    bool try_acquire_until(std::int64_t n, time_point t) {
        detail::check_count(name, n);
        if (n == 0) return true;
        return wait_for(n, clock_.now(), since_origin(t));
    }

    /// Takes n permits at the earliest time the estimate has room, sleeping
    /// until then; returns the time slept. Throws capacity_exceeded when n > limit().
    duration acquire(std::int64_t n = 1) {
        detail::check_count(name, n);
        if (n == 0) return duration::zero();
        const time_point now = clock_.now();
        const detail::window::nanoseconds at = since_origin(now);
        const detail::window::sliding::decision d = take(n, at, detail::window::int64_max);
        if (d.outcome == detail::window::verdict::never) throw capacity_exceeded(name, n, params_.limit);
        if (d.outcome != detail::window::verdict::granted) {
            throw std::overflow_error(std::string(name) + ": n = " + std::to_string(n) +
                                      " would be ready beyond the windows the state can hold");
        }
        const time_point ready = time_at(d.ready_at, at, now);
        if (ready <= now) return duration::zero();
        ratelimit::sleep_until(clock_, ready);
        return ready - now;
    }

    /// Gives back n unused permits to the current window's count (never below
    /// zero); nothing once that window has ended or a caller waits for a later one.
    void refund(std::int64_t n) {
        detail::check_count(name, n);
        if (n == 0) return;
        const detail::window::nanoseconds at = since_origin(clock_.now());
        for (;;) {
            view v = load();
            if (needs_rebase(v, at)) {
                rebase(at);
                continue;
            }
            const detail::window::sliding::state s = state_of(v);
            const detail::window::sliding::state next = detail::window::sliding::refund(params_, s, at, n);
            if (next == s) {
                if (unchanged(v)) return;
                continue;
            }
            if (word_.compare_exchange_weak(v.word, pack(next, v.base, generation(v.word)), std::memory_order_acq_rel,
                                            std::memory_order_relaxed)) {
                return;
            }
        }
    }

    /// Permits the estimate has room for now (limit − estimate).
    [[nodiscard]] std::int64_t available() {
        const detail::window::nanoseconds at = since_origin(clock_.now());
        return read(at, [&](const detail::window::params& p, detail::window::sliding::state s) {
            return detail::window::sliding::available(p, s, at);
        });
    }

    /// How long until the estimate has room for n permits (exact, from the
    /// formula); duration::max() when n > limit().
    [[nodiscard]] duration time_until_available(std::int64_t n = 1) {
        detail::check_count(name, n);
        if (n == 0) return duration::zero();
        const time_point now = clock_.now();
        const detail::window::nanoseconds at = since_origin(now);
        return read(at, [&](const detail::window::params& p, detail::window::sliding::state s) {
            const detail::window::sliding::decision d =
                detail::window::sliding::decide(p, s, at, n, detail::window::int64_max);
            if (d.outcome != detail::window::verdict::granted) return duration::max();
            return time_at(d.ready_at, at, now) - now;
        });
    }

    /// The most permits the estimate allows in one window.
    [[nodiscard]] std::int64_t limit() const noexcept { return params_.limit; }

    /// The length of a window.
    [[nodiscard]] duration window() const noexcept { return window_; }

    /// The clock the limiter reads.
    [[nodiscard]] const Clock& get_clock() const noexcept { return clock_; }

private:
    static constexpr const char* name = "ratelimit::sliding_window_counter";

    /// The state word and the base its window index counts from. A caller
    /// that acts on a view validates it: a CAS on view.word, or unchanged(view).
    struct view {
        std::uint64_t word;
        std::int64_t base;
    };


    static detail::window::params make_params(std::int64_t limit, duration window) {
        detail::check_positive(name, "limit", limit);
        if (limit > max_limit) {
            throw std::invalid_argument(std::string(name) + ": limit must be <= " + std::to_string(max_limit) +
                                        ", got " + std::to_string(limit));
        }
        const std::int64_t window_ns = detail::saturating_ns(window);
        if (window <= duration::zero() || window_ns <= 0) {
            throw std::invalid_argument(std::string(name) + ": window must be > 0, got " + std::to_string(window_ns) +
                                        "ns");
        }
        return {limit, window_ns, detail::window::int64_max};
    }

    [[nodiscard]] detail::window::nanoseconds since_origin(time_point t) const noexcept {
        return detail::window::since(origin_ns_, detail::ns_since_epoch(t));
    }

    /// The clock time `ready` ns after the origin; `now` itself when that is `now_at`.
    [[nodiscard]] time_point time_at(detail::window::nanoseconds ready, detail::window::nanoseconds now_at,
                                     time_point now) const noexcept {
        if (ready <= now_at) return now;
        return time_point{detail::duration_from_ns<duration>(detail::window::add_saturating(origin_ns_, ready))};
    }

    // The word, high bits to low: [window − base : index_bits_][current : count_bits_]
    // [previous : count_bits_][generation : 2]. The base of generation g is bases_[g & 1].

    [[nodiscard]] std::uint64_t count_mask() const noexcept { return (std::uint64_t{1} << count_bits_) - 1U; }
    [[nodiscard]] std::int64_t max_offset() const noexcept { return (std::int64_t{1} << index_bits_) - 1; }
    /// The base moves when now's window is this far past it...
    [[nodiscard]] std::int64_t rebase_at() const noexcept { return std::int64_t{1} << (index_bits_ - 1); }
    /// ...to this many windows before now's window.
    [[nodiscard]] std::int64_t keep_behind() const noexcept { return std::int64_t{1} << (index_bits_ - 2); }

    static unsigned generation(std::uint64_t word) noexcept { return static_cast<unsigned>(word & 3U); }

    [[nodiscard]] std::uint64_t pack(detail::window::sliding::state s, std::int64_t base, unsigned gen) const noexcept {
        return (static_cast<std::uint64_t>(s.window - base) << (2 * count_bits_ + 2)) |
               (static_cast<std::uint64_t>(s.current) << (count_bits_ + 2)) |
               (static_cast<std::uint64_t>(s.previous) << 2) | (gen & 3U);
    }

    [[nodiscard]] detail::window::sliding::state state_of(const view& v) const noexcept {
        return {v.base + static_cast<std::int64_t>(v.word >> (2 * count_bits_ + 2)),
                static_cast<std::int64_t>((v.word >> (count_bits_ + 2)) & count_mask()),
                static_cast<std::int64_t>((v.word >> 2) & count_mask())};
    }

    /// The math's parameters under v: the largest window the word can hold from v.base.
    [[nodiscard]] detail::window::params params_of(const view& v) const noexcept {
        detail::window::params p = params_;
        p.max_window = detail::window::add_saturating(v.base, max_offset());
        return p;
    }

    [[nodiscard]] view load() const noexcept {
        const std::uint64_t w = word_.load(std::memory_order_acquire);
        view v{w, bases_[generation(w) & 1U].load(std::memory_order_relaxed)};
        std::atomic_thread_fence(std::memory_order_acquire);  // the base read happens before any re-check
        return v;
    }

    [[nodiscard]] bool unchanged(const view& v) const noexcept {
        return word_.load(std::memory_order_relaxed) == v.word;
    }

    /// Whether now's window (ns `at`) is too far past v's base.
    [[nodiscard]] bool needs_rebase(const view& v, detail::window::nanoseconds at) const noexcept {
        return detail::window::index_of(at, params_.window) - v.base >= rebase_at();
    }

    /// The one admission path: decides on a consistent view, grants with one
    /// CAS, refuses without writing.
    detail::window::sliding::decision take(std::int64_t n, detail::window::nanoseconds now,
                                           detail::window::nanoseconds deadline) {
        for (;;) {
            view v = load();
            if (needs_rebase(v, now)) {
                rebase(now);
                continue;
            }
            const detail::window::sliding::decision d =
                detail::window::sliding::decide(params_of(v), state_of(v), now, n, deadline);
            if (d.outcome != detail::window::verdict::granted) {
                if (unchanged(v)) return d;
                continue;
            }
            if (word_.compare_exchange_weak(v.word, pack(d.next, v.base, generation(v.word)), std::memory_order_acq_rel,
                                            std::memory_order_relaxed)) {
                return d;
            }
        }
    }

    /// Evaluates `f(params, state)` on a consistent view.
    template <class F>
    auto read(detail::window::nanoseconds at, F f) {
        for (;;) {
            const view v = load();
            if (needs_rebase(v, at)) {
                rebase(at);
                continue;
            }
            auto result = f(params_of(v), state_of(v));
            if (unchanged(v)) return result;
        }
    }

    /// Takes n permits usable by `deadline` (ns since the origin) and sleeps until they are.
    bool wait_for(std::int64_t n, time_point now, detail::window::nanoseconds deadline) {
        const detail::window::nanoseconds at = since_origin(now);
        const detail::window::sliding::decision d = take(n, at, deadline);
        if (d.outcome != detail::window::verdict::granted) return false;
        const time_point ready = time_at(d.ready_at, at, now);
        if (ready > now) ratelimit::sleep_until(clock_, ready);
        return true;
    }

    /// Moves the base to keep_behind() windows before the window of `at` (ns
    /// since the origin), carrying the state over (rolled forward when it lies
    /// before the new base). Afterwards needs_rebase(load(), at) is false.
    void rebase(detail::window::nanoseconds at) {
        detail::writer_guard guard(writer_);
        const std::int64_t current = detail::window::index_of(at, params_.window);
        view v = load();
        if (current - v.base < rebase_at()) return;  // another caller moved it
        const std::int64_t base = current - keep_behind();
        const unsigned gen = (generation(v.word) + 1U) & 3U;
        // Readers still holding the previous generation may read this slot;
        // the fence makes them see the word move on and retry.
        std::atomic_thread_fence(std::memory_order_release);
        bases_[gen & 1U].store(base, std::memory_order_relaxed);
        for (;;) {
            // Only a rebase changes the generation, so v.base stays the base of v.word.
            const detail::window::sliding::state s = state_of(v);
            const detail::window::sliding::state moved = s.window >= base ? s : detail::window::sliding::roll(s, base);
            if (word_.compare_exchange_weak(v.word, pack(moved, base, gen), std::memory_order_acq_rel,
                                            std::memory_order_relaxed)) {
                return;
            }
        }
    }

    [[no_unique_address]] Clock clock_;
    detail::window::params params_;
    duration window_;
    int count_bits_;
    int index_bits_;
    std::int64_t origin_ns_;
    std::atomic<std::uint64_t> word_{0};                  // see pack()
    std::array<std::atomic<std::int64_t>, 2> bases_{};    // the base of generation g is bases_[g & 1]
    mutable std::atomic_flag writer_ = ATOMIC_FLAG_INIT;  // serializes rebase()
};

}  // namespace ratelimit
