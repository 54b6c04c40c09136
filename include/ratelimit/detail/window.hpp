#pragma once
// The window math behind fixed_window and sliding_window_counter, on plain
// integers: no clock, no atomics, no allocation, no floating point. The Redis
// scripts mirror these functions; the tests check both against the same
// vectors (tests/support/window_vectors.hpp).
//
// Time. Every time is a count of nanoseconds since the origin (the instant
// window 0 starts), never negative: window k covers [k·W, (k+1)·W) for a
// window of W ns. A store may hold its state in a later window than the one
// `now` falls in: a caller waiting for the next window has already taken its
// permits there. While that is so, nothing is granted before that window
// starts (first come, first served).
//
// Fixed window. State: the window last written and the permits granted in it.
// n permits fit when count + n <= limit; otherwise they go in the next window.
//
// Sliding window counter. State: the window last written, the permits granted
// in it (`current`) and in the window before it (`previous`). At offset e into
// the window the estimate is
//     current + ceil(previous · (W − e) / W),
// and n permits fit when estimate + n <= limit, that is (exactly, in integers)
//     previous · (W − e) <= (limit − current − n) · W.
// The products exceed 64 bits and are taken in 128 (a script in double
// precision must keep previous·W and limit·W below 2^53, e.g. by counting in
// milliseconds).
//
// Overflow. Nothing here overflows for any limit and window up to INT64_MAX:
// "count + n <= limit" is tested as "n <= limit − count", the weighted count
// saturates, and a grant whose window index or usable time would pass the
// last representable one (window index · W or start + offset above
// params::end, at most INT64_MAX: the last time the caller's clock can show;
// or an index above params::max_window) is out_of_range, never granted at a
// saturated time. A `now` stuck at the end therefore grants at most the last
// window's worth and then nothing.

#include <algorithm>
#include <cstdint>
#include <limits>

namespace ratelimit::detail::window {

__extension__ using uint128 = unsigned __int128;

/// Nanoseconds since the origin; always >= 0.
using nanoseconds = std::int64_t;

inline constexpr std::int64_t int64_max = std::numeric_limits<std::int64_t>::max();

/// The configuration both algorithms share.
struct params {
    std::int64_t limit = 1;               ///< permits per window, >= 1
    nanoseconds window = 1;               ///< window length W, >= 1
    std::int64_t max_window = int64_max;  ///< the largest window index the state can hold
    nanoseconds end = int64_max;          ///< the last time the caller's clock can show, >= 0
};

/// The window `t` falls in (t < 0 counts as 0).
[[nodiscard]] constexpr std::int64_t index_of(nanoseconds t, nanoseconds window) noexcept {
    return t <= 0 ? 0 : t / window;
}

/// The last window that starts by p.end and which the state can hold:
/// min(p.max_window, floor(p.end / W)). Windows after it are out_of_range.
[[nodiscard]] constexpr std::int64_t last_window(const params& p) noexcept {
    return std::min(p.max_window, p.end / p.window);
}

/// When window `index` starts, saturating at INT64_MAX.
[[nodiscard]] constexpr nanoseconds start_of(std::int64_t index, nanoseconds window) noexcept {
    if (index <= 0) return 0;
    if (index > int64_max / window) return int64_max;
    return index * window;
}

/// `a + b` for b >= 0, saturating at INT64_MAX.
[[nodiscard]] constexpr std::int64_t add_saturating(std::int64_t a, std::int64_t b) noexcept {
    return a > int64_max - b ? int64_max : a + b;
}

/// Nanoseconds from `origin` to `t` on a clock (both in ns since its epoch):
/// 0 when t is before the origin, saturating at INT64_MAX.
[[nodiscard]] constexpr nanoseconds since(std::int64_t origin, std::int64_t t) noexcept {
    if (t <= origin) return 0;
    const std::uint64_t diff = static_cast<std::uint64_t>(t) - static_cast<std::uint64_t>(origin);
    return diff > static_cast<std::uint64_t>(int64_max) ? int64_max : static_cast<nanoseconds>(diff);
}

/// floor(a · b / c) for a, b >= 0 and c > 0, exact; the caller ensures the result fits.
[[nodiscard]] constexpr std::int64_t mul_div_floor(std::int64_t a, std::int64_t b, std::int64_t c) noexcept {
    return static_cast<std::int64_t>(static_cast<uint128>(a) * static_cast<uint128>(b) / static_cast<uint128>(c));
}

/// ceil(a · b / c) for a, b >= 0 and c > 0, exact; the caller ensures the result fits.
[[nodiscard]] constexpr std::int64_t mul_div_ceil(std::int64_t a, std::int64_t b, std::int64_t c) noexcept {
    const uint128 product = static_cast<uint128>(a) * static_cast<uint128>(b);
    const uint128 divisor = static_cast<uint128>(c);
    return static_cast<std::int64_t>(product / divisor + (product % divisor != 0 ? 1 : 0));
}

/// What decide() concluded.
enum class verdict {
    granted,       ///< taken; usable at ready_at
    too_late,      ///< could be taken, but not usable by the deadline
    never,         ///< n > limit: can never be granted
    out_of_range,  ///< the permits would land past params::max_window
};

namespace fixed {

/// `count` permits granted in window `window`; every other window is empty.
struct state {
    std::int64_t window = 0;
    std::int64_t count = 0;
    friend constexpr bool operator==(const state&, const state&) = default;
};

struct decision {
    verdict outcome;
    state next;            ///< the new state when granted, else the old one
    nanoseconds ready_at;  ///< when the n permits are (or would be) usable; >= now
};

/// The one admission decision: may n permits be taken at `now`, to be used no
/// later than `deadline` (a deadline before `now` means `now`)? They go in the
/// first window, from the later of now's and the state's, with room for them;
/// out_of_range when that window lies past last_window(p).
/// Precondition: 0 <= n, 0 <= s.count <= p.limit, now >= 0.
[[nodiscard]] constexpr decision decide(const params& p, state s, nanoseconds now, std::int64_t n,
                                        nanoseconds deadline) noexcept {
    if (n == 0) return {verdict::granted, s, now};
    if (n > p.limit) return {verdict::never, s, now};
    const std::int64_t first = std::max(s.window, index_of(now, p.window));
    const std::int64_t count = s.window == first ? s.count : 0;
    const bool fits = n <= p.limit - count;  // count + n <= limit, without overflow
    if (first > last_window(p) - (fits ? 0 : 1)) return {verdict::out_of_range, s, now};
    const state next = fits ? state{first, count + n} : state{first + 1, n};
    const nanoseconds ready_at = std::max(now, next.window * p.window);  // <= p.end: next.window <= last_window
    if (ready_at > std::max(deadline, now)) return {verdict::too_late, s, ready_at};
    return {verdict::granted, next, ready_at};
}

/// Permits that could be taken at `now`: 0 while the state is in a later window.
[[nodiscard]] constexpr std::int64_t available(const params& p, state s, nanoseconds now) noexcept {
    const std::int64_t current = index_of(now, p.window);
    if (s.window > current) return 0;
    return s.window == current ? p.limit - s.count : p.limit;
}

/// The state after giving back n permits at `now`: only to the window `now`
/// falls in, never below zero.
[[nodiscard]] constexpr state refund(const params& p, state s, nanoseconds now, std::int64_t n) noexcept {
    if (n <= 0 || s.window != index_of(now, p.window)) return s;
    return {s.window, s.count - std::min(n, s.count)};
}

}  // namespace fixed

namespace sliding {

/// `current` permits granted in window `window`, `previous` in the window before.
struct state {
    std::int64_t window = 0;
    std::int64_t current = 0;
    std::int64_t previous = 0;
    friend constexpr bool operator==(const state&, const state&) = default;
};

struct decision {
    verdict outcome;
    state next;            ///< the new state when granted, else the old one
    nanoseconds ready_at;  ///< when the n permits are (or would be) usable; >= now
};

/// The state as seen from the later window `to` (>= s.window): one window on,
/// `current` becomes `previous`; two or more, both are zero.
[[nodiscard]] constexpr state roll(state s, std::int64_t to) noexcept {
    if (to <= s.window) return s;
    if (to == s.window + 1) return {to, 0, s.current};
    return {to, 0, 0};
}

/// Where the next grant is counted from: the state rolled to the window of
/// `time`, the later of `now` and the start of the state's window.
struct position {
    state s;
    nanoseconds time;    ///< max(now, start of the state's window)
    nanoseconds offset;  ///< time − start of s.window, in [0, W)
};

[[nodiscard]] constexpr position locate(const params& p, state s, nanoseconds now) noexcept {
    const std::int64_t current = index_of(now, p.window);
    if (s.window >= current) {
        const nanoseconds start = start_of(s.window, p.window);
        const nanoseconds time = std::max(now, start);
        return {s, time, time - start};
    }
    return {roll(s, current), now, now - start_of(current, p.window)};
}

/// The estimate at offset `offset` into the window of `s`:
/// current + ceil(previous · (W − offset) / W), saturating at INT64_MAX.
[[nodiscard]] constexpr std::int64_t weighted_count(const params& p, state s, nanoseconds offset) noexcept {
    return add_saturating(s.current, mul_div_ceil(s.previous, p.window - offset, p.window));
}

/// The smallest offset e in [0, W] at which previous · (W − e) <= room · W,
/// that is at which `room` permits fit beside the weighted previous count
/// (W when only the next window will do). Precondition: previous, room >= 0.
[[nodiscard]] constexpr nanoseconds earliest_offset(nanoseconds window, std::int64_t previous,
                                                    std::int64_t room) noexcept {
    if (previous <= room) return 0;
    return window - mul_div_floor(room, window, previous);
}

/// The one admission decision: may n permits be taken at `now`, to be used no
/// later than `deadline` (a deadline before `now` means `now`)? They are
/// counted at the earliest time, from the later of now and the start of the
/// state's window, at which the estimate leaves room for them: later in the
/// same window as the previous count's weight falls, else in the next
/// window, else (n == limit) the one after; out_of_range when that window
/// lies past last_window(p) or its time past INT64_MAX.
/// Precondition: 0 <= n; 0 <= s.current, s.previous <= p.limit; now >= 0.
[[nodiscard]] constexpr decision decide(const params& p, state s, nanoseconds now, std::int64_t n,
                                        nanoseconds deadline) noexcept {
    if (n == 0) return {verdict::granted, s, now};
    if (n > p.limit) return {verdict::never, s, now};
    const position at = locate(p, s, now);
    const std::int64_t w = at.s.window;
    state next{};
    std::int64_t ahead = 0;  // next.window − w, in {0, 1, 2}
    nanoseconds offset = 0;
    const std::int64_t room = p.limit - at.s.current - n;
    const nanoseconds here = room >= 0 ? std::max(at.offset, earliest_offset(p.window, at.s.previous, room)) : p.window;
    if (here < p.window) {
        next = {w, at.s.current + n, at.s.previous};
        offset = here;
    } else {
        const nanoseconds there = earliest_offset(p.window, at.s.current, p.limit - n);
        if (there < p.window) {
            ahead = 1;
            next = {0, n, at.s.current};
            offset = there;
        } else {
            ahead = 2;
            next = {0, n, 0};
        }
    }
    if (w > last_window(p) - ahead) return {verdict::out_of_range, s, now};
    next.window = w + ahead;
    const nanoseconds start = next.window * p.window;  // <= p.end: next.window <= last_window
    if (offset > p.end - start) return {verdict::out_of_range, s, now};
    const nanoseconds ready_at = std::max(now, start + offset);
    if (ready_at > std::max(deadline, now)) return {verdict::too_late, s, ready_at};
    return {verdict::granted, next, ready_at};
}

/// Permits that could be taken at `now` (limit − estimate, at least 0):
/// 0 while the state is in a later window.
[[nodiscard]] constexpr std::int64_t available(const params& p, state s, nanoseconds now) noexcept {
    const position at = locate(p, s, now);
    if (at.time > now) return 0;
    return std::max<std::int64_t>(0, p.limit - weighted_count(p, at.s, at.offset));
}

/// The state after giving back n permits at `now`: only to the window `now`
/// falls in, never below zero.
[[nodiscard]] constexpr state refund(const params& p, state s, nanoseconds now, std::int64_t n) noexcept {
    if (n <= 0 || s.window != index_of(now, p.window)) return s;
    return {s.window, s.current - std::min(n, s.current), s.previous};
}

}  // namespace sliding

}  // namespace ratelimit::detail::window
