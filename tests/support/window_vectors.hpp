#pragma once
// Hand-computed vectors for the window math in include/ratelimit/detail/window.hpp.
//
// Every row is plain integers, so the same table can drive another
// implementation of the math (the Redis Lua scripts) as well as the C++ one.
// Times are nanoseconds since the origin; window k covers [k·W, (k+1)·W).
//
// Fixed window rows use limit = 3 and W = 1000 ns unless they say otherwise:
// n permits fit in a window while count + n <= 3, else they go to the next
// window and are usable at its start.
//
// Sliding window counter rows use limit = 10 and W = 1000 ns unless they say
// otherwise: at offset e into window w the estimate is
// current + ceil(previous · (1000 − e) / 1000), and n permits fit when
// estimate + n <= 10, that is when previous · (1000 − e) <= (10 − current − n) · 1000.
//
// Overflow rows (at_top<top> at the end) are written in terms of the store's
// largest time and count, `top`: INT64_MAX for the C++, 2^53 for the Lua
// scripts (whose doubles saturate there). Each store runs them at its own top.

#include <cstdint>
#include <limits>
#include <ratelimit/detail/sliding_window_log.hpp>
#include <ratelimit/detail/window.hpp>

namespace ratelimit_test::window_vectors {

using ratelimit::detail::window::verdict;

inline constexpr std::int64_t never_deadline = std::numeric_limits<std::int64_t>::max();

/// fixed::decide(params{limit, window_ns}, state{window, count}, now, n, deadline)
///   -> {outcome, state{next_window, next_count}, ready_at}.
struct fixed_decide_vector {
    const char* name;
    std::int64_t limit;
    std::int64_t window_ns;
    std::int64_t window;
    std::int64_t count;
    std::int64_t now;
    std::int64_t n;
    std::int64_t deadline;
    verdict outcome;
    std::int64_t next_window;  ///< the state afterwards: unchanged unless granted
    std::int64_t next_count;
    std::int64_t ready_at;  ///< when the n permits are (or would be) usable
};

inline constexpr fixed_decide_vector fixed_decide_vectors[] = {
    {"an empty first window grants at once", 3, 1000, 0, 0, 0, 1, 0, verdict::granted, 0, 1, 0},
    {"the whole limit in one call", 3, 1000, 0, 0, 250, 3, 250, verdict::granted, 0, 3, 250},
    {"2 + 1 <= 3 fills the window", 3, 1000, 0, 2, 500, 1, 500, verdict::granted, 0, 3, 500},
    // A full window: the next one starts at 1 * 1000.
    {"a full window refuses when the deadline is now", 3, 1000, 0, 3, 999, 1, 999, verdict::too_late, 0, 3, 1000},
    {"a full window refuses a deadline one ns before the next window", 3, 1000, 0, 3, 500, 1, 999, verdict::too_late, 0,
     3, 1000},
    {"a deadline at the next window's start takes the permit there", 3, 1000, 0, 3, 500, 1, 1000, verdict::granted, 1,
     1, 1000},
    {"2 + 2 > 3: both go to the next window", 3, 1000, 0, 2, 500, 2, never_deadline, verdict::granted, 1, 2, 1000},
    {"a new window counts from zero", 3, 1000, 0, 3, 1000, 3, 1000, verdict::granted, 1, 3, 1000},
    {"windows without grants count from zero: 5500 is in window 5", 3, 1000, 0, 3, 5500, 2, 5500, verdict::granted, 5,
     2, 5500},
    {"a deadline before now means now", 3, 1000, 0, 0, 700, 1, 100, verdict::granted, 0, 1, 700},
    {"a deadline before now refuses what is not ready now", 3, 1000, 0, 3, 700, 1, 100, verdict::too_late, 0, 3, 1000},
    // The state is in window 2 while now (1500) is in window 1: a caller waits there.
    {"while a caller waits for a later window, now grants nothing", 3, 1000, 2, 1, 1500, 1, 1500, verdict::too_late, 2,
     1, 2000},
    {"a later caller joins the waiting window while it has room: 1 + 2 <= 3", 3, 1000, 2, 1, 1500, 2, never_deadline,
     verdict::granted, 2, 3, 2000},
    {"a later caller queues behind a full waiting window", 3, 1000, 2, 3, 1500, 1, never_deadline, verdict::granted, 3,
     1, 3000},
    {"a clock that went back waits for the window last granted in", 3, 1000, 4, 1, 100, 1, never_deadline,
     verdict::granted, 4, 2, 4000},
    {"n above the limit is never granted", 3, 1000, 0, 0, 0, 4, never_deadline, verdict::never, 0, 0, 0},
    {"n == 0 on a full window changes nothing", 3, 1000, 0, 3, 700, 0, 700, verdict::granted, 0, 3, 700},
    // limit 1 in 1 ns windows: window k is the single instant k.
    {"limit 1 per 1 ns: a taken instant refuses", 1, 1, 0, 1, 0, 1, 0, verdict::too_late, 0, 1, 1},
    {"limit 1 per 1 ns: the next instant grants", 1, 1, 0, 1, 1, 1, 1, verdict::granted, 1, 1, 1},
};

/// fixed::available(params{limit, window_ns}, state{window, count}, now) -> permits.
struct fixed_available_vector {
    const char* name;
    std::int64_t limit;
    std::int64_t window_ns;
    std::int64_t window;
    std::int64_t count;
    std::int64_t now;
    std::int64_t expected;
};

inline constexpr fixed_available_vector fixed_available_vectors[] = {
    {"3 - 2 left in the current window", 3, 1000, 0, 2, 500, 1},
    {"none left in a full window", 3, 1000, 0, 3, 999, 0},
    {"the whole limit in a new window", 3, 1000, 0, 3, 1000, 3},
    {"none while a caller waits for a later window", 3, 1000, 2, 1, 1500, 0},
};

/// fixed::refund(params{limit, window_ns}, state{window, count}, now, n) -> state.
struct fixed_refund_vector {
    const char* name;
    std::int64_t limit;
    std::int64_t window_ns;
    std::int64_t window;
    std::int64_t count;
    std::int64_t now;
    std::int64_t n;
    std::int64_t next_window;
    std::int64_t next_count;
};

inline constexpr fixed_refund_vector fixed_refund_vectors[] = {
    {"3 - 2 in the current window", 3, 1000, 0, 3, 500, 2, 0, 1},
    {"never below zero: 1 - min(5, 1)", 3, 1000, 0, 1, 500, 5, 0, 0},
    {"nothing once the window has ended", 3, 1000, 0, 3, 1000, 1, 0, 3},
    {"nothing while a caller waits for a later window", 3, 1000, 2, 1, 1500, 1, 2, 1},
};

/// sliding::decide(params{limit, window_ns}, state{window, current, previous}, now, n, deadline)
///   -> {outcome, state{next_window, next_current, next_previous}, ready_at}.
struct sliding_decide_vector {
    const char* name;
    std::int64_t limit;
    std::int64_t window_ns;
    std::int64_t window;
    std::int64_t current;
    std::int64_t previous;
    std::int64_t now;
    std::int64_t n;
    std::int64_t deadline;
    verdict outcome;
    std::int64_t next_window;  ///< the state afterwards: unchanged unless granted
    std::int64_t next_current;
    std::int64_t next_previous;
    std::int64_t ready_at;  ///< when the n permits are (or would be) usable
};

inline constexpr sliding_decide_vector sliding_decide_vectors[] = {
    {"a fresh limiter grants the whole limit at once", 10, 1000, 0, 0, 0, 0, 10, 0, verdict::granted, 0, 10, 0, 0},
    // Window 0 full; in window 1 the previous 10 weigh 10·(1000 − e)/1000,
    // so one more permit fits once 10·(1000 − e) <= 9·1000: e = 100, at 1100.
    {"a full window refuses; the next permit fits at 1000 + 100", 10, 1000, 0, 10, 0, 999, 1, 999, verdict::too_late, 0,
     10, 0, 1100},
    {"a waiting caller takes that permit at 1100", 10, 1000, 0, 10, 0, 999, 1, never_deadline, verdict::granted, 1, 1,
     10, 1100},
    {"at 1100 the estimate is 0 + ceil(10·900/1000) = 9: one fits", 10, 1000, 0, 10, 0, 1100, 1, 1100, verdict::granted,
     1, 1, 10, 1100},
    // 1 + ceil(10·900/1000) = 10: the next needs 10·(1000 − e) <= (10 − 1 − 1)·1000, e = 200.
    {"1 + 9 = 10 leaves no room until e = 200", 10, 1000, 1, 1, 10, 1100, 1, 1100, verdict::too_late, 1, 1, 10, 1200},
    {"at 1250 the estimate is 1 + ceil(10·750/1000) = 9: one fits", 10, 1000, 1, 1, 10, 1250, 1, 1250, verdict::granted,
     1, 2, 10, 1250},
    {"two at 1250 need 10·(1000 − e) <= 7·1000: e = 300", 10, 1000, 1, 1, 10, 1250, 2, 1250, verdict::too_late, 1, 1,
     10, 1300},
    // 5 + 5 > 10 at any offset: window 2, where 5·(1000 − e) <= (10 − 5)·1000 already at e = 0.
    {"current + n above the limit waits for the next window", 10, 1000, 1, 5, 10, 1999, 5, never_deadline,
     verdict::granted, 2, 5, 5, 2000},
    // n = 10 in window 2 needs 5·(1000 − e) <= 0: only window 3.
    {"n == limit behind a non-empty window waits two windows", 10, 1000, 1, 5, 10, 1500, 10, never_deadline,
     verdict::granted, 3, 10, 0, 3000},
    {"one window on, current becomes previous: 0 + ceil(4·700/1000) = 3, 3 + 3 <= 10", 10, 1000, 1, 4, 7, 2300, 3, 2300,
     verdict::granted, 2, 3, 4, 2300},
    {"two windows on, both counts are gone", 10, 1000, 1, 4, 7, 3300, 10, 3300, verdict::granted, 3, 10, 0, 3300},
    {"the weighted previous count rounds up: ceil(3·999/1000) = 3, 3 + 7 <= 10", 10, 1000, 0, 0, 3, 1, 7, 1,
     verdict::granted, 0, 7, 3, 1},
    {"8 need 3·(1000 − e) <= 2·1000: e = 1000 − floor(2000/3) = 334", 10, 1000, 0, 0, 3, 1, 8, never_deadline,
     verdict::granted, 0, 8, 3, 334},
    // The state is in window 3 while now (1500) is in window 1: a caller waits there.
    // From 3000: 2 + ceil(8·1000/1000) = 10; one more needs 8·(1000 − e) <= 7·1000, e = 125.
    {"while a caller waits for a later window, the next grant counts from there", 10, 1000, 3, 2, 8, 1500, 1,
     never_deadline, verdict::granted, 3, 3, 8, 3125},
    {"while a caller waits for a later window, now grants nothing", 10, 1000, 3, 2, 8, 1500, 1, 1500, verdict::too_late,
     3, 2, 8, 3125},
    {"a deadline before now means now", 10, 1000, 0, 0, 0, 700, 1, 100, verdict::granted, 0, 1, 0, 700},
    {"n above the limit is never granted", 10, 1000, 0, 0, 0, 0, 11, never_deadline, verdict::never, 0, 0, 0, 0},
    {"n == 0 on a full window changes nothing", 10, 1000, 1, 10, 10, 1500, 0, 1500, verdict::granted, 1, 10, 10, 1500},
    // limit 2^26 - 1 = 67108863 per hour (3.6e12 ns), previous full, half the hour gone:
    // ceil(67108863 · 1.8e12 / 3.6e12) = 33554432, + 2^25 > the limit; room 67108863 - 2^25 = 33554431
    // gives e = 3.6e12 - floor(33554431 · 3.6e12 / 67108863) = 1800000026823 (products above 2^63).
    {"large limit and window: exact in 128 bits", 67108863, 3600000000000, 0, 0, 67108863, 1800000000000, 33554432,
     never_deadline, verdict::granted, 0, 33554432, 67108863, 1800000026823},
};

/// sliding::available(params{limit, window_ns}, state{window, current, previous}, now) -> permits.
struct sliding_available_vector {
    const char* name;
    std::int64_t limit;
    std::int64_t window_ns;
    std::int64_t window;
    std::int64_t current;
    std::int64_t previous;
    std::int64_t now;
    std::int64_t expected;
};

inline constexpr sliding_available_vector sliding_available_vectors[] = {
    {"10 - (1 + ceil(10·900/1000)) = 0", 10, 1000, 1, 1, 10, 1100, 0},
    {"10 - (1 + ceil(10·750/1000)) = 1", 10, 1000, 1, 1, 10, 1250, 1},
    {"one window on: 10 - (0 + ceil(4·700/1000)) = 7", 10, 1000, 1, 4, 7, 2300, 7},
    {"the weighted count rounds up: 10 - ceil(3·999/1000) = 7", 10, 1000, 0, 0, 3, 1, 7},
    {"two windows on: the whole limit", 10, 1000, 0, 10, 10, 5000, 10},
    {"none while a caller waits for a later window", 10, 1000, 3, 2, 8, 1500, 0},
};

/// sliding::refund(params{limit, window_ns}, state{window, current, previous}, now, n) -> state.
struct sliding_refund_vector {
    const char* name;
    std::int64_t limit;
    std::int64_t window_ns;
    std::int64_t window;
    std::int64_t current;
    std::int64_t previous;
    std::int64_t now;
    std::int64_t n;
    std::int64_t next_window;
    std::int64_t next_current;
    std::int64_t next_previous;
};

inline constexpr sliding_refund_vector sliding_refund_vectors[] = {
    {"5 - 2 in the current window; previous untouched", 10, 1000, 1, 5, 10, 1500, 2, 1, 3, 10},
    {"never below zero: 5 - min(9, 5)", 10, 1000, 1, 5, 10, 1500, 9, 1, 0, 10},
    {"nothing once the window has ended", 10, 1000, 1, 5, 10, 2100, 1, 1, 5, 10},
    {"nothing while a caller waits for a later window", 10, 1000, 3, 2, 8, 1500, 1, 3, 2, 8},
};

/// window_log::decide(limit, window, nth_oldest, newest, now, n, deadline) -> {outcome, start}.
struct log_decide_vector {
    const char* name;
    std::int64_t limit;
    std::int64_t window_ns;
    std::int64_t nth_oldest;
    std::int64_t newest;
    std::int64_t now;
    std::int64_t n;
    std::int64_t deadline;
    ratelimit::detail::window_log::verdict outcome;
    std::int64_t start;
};

/// The overflow rows, at a store's `top` (its largest time and count: INT64_MAX
/// in C++, 2^53 in Lua). max_window is `top` too (no limit from the state).
/// Before the saturating rules, C++ granted (or overflowed) in every fixed and
/// log row below, and the Lua over-admitted in the first fixed and log rows.
template <std::int64_t top>
struct at_top {
    static constexpr fixed_decide_vector fixed_decide[] = {
        // count + n = top + 1 would overflow (C++) or round back to top (Lua's doubles).
        {"limit top: a full window sends one more to the next, which starts at top", top, top, 0, top, 0, 1, 0,
         verdict::too_late, 0, top, top},
        {"limit top: top - 1 and one more fill the window", top, top, 0, top - 1, 5, 1, 5, verdict::granted, 0, top, 5},
        // 1 ns windows: window `top` starts at top, and window top + 1 does not exist.
        {"the last window whose start is representable grants nothing after it", 1, 1, top, 1, top, 1, top,
         verdict::out_of_range, top, 1, top},
        // W = floor(top / 3): windows 0..3 start at or before top; window 4 would start after it.
        {"a window that would start after top is out of range, never granted at a saturated time", 3, top / 3, 3, 3,
         3 * (top / 3), 1, top, verdict::out_of_range, 3, 3, 3 * (top / 3)},
    };
    static constexpr sliding_available_vector sliding_available[] = {
        // current + previous = 2·top: the estimate saturates at top, leaving nothing.
        {"limit top: the weighted count saturates and leaves nothing", top, 1000, 1, top, top, 1000, 0},
    };
    static constexpr sliding_decide_vector sliding_decide[] = {
        // Full at window `top` of 1 ns: the next permit needs window top + 2.
        {"a full last window: the windows after it do not exist", 1, 1, top, 1, 0, top, 1, top, verdict::out_of_range,
         top, 1, 0, top},
        // W = top: window 1 starts at top; one more permit behind 5 needs offset
        // top - floor(4·top/5) > 0 into it, past top.
        {"a window of top: a grant at an offset into the window starting at top is out of range", 5, top, 0, 5, 0, 0, 1,
         top, verdict::out_of_range, 0, 5, 0, 0},
    };
    static constexpr log_decide_vector log_decide[] = {
        // limit 1, window 10.
        {"an entry whose time + window passes top never leaves, even at now = top", 1, 10, top - 5, top - 5, top, 1,
         top, ratelimit::detail::window_log::verdict::out_of_range, top},
        {"an entry that leaves exactly at top is granted there when the deadline allows", 1, 10, top - 10, top - 10,
         top - 3, 1, top, ratelimit::detail::window_log::verdict::granted, top},
        {"at now = top an entry that left at top has left", 1, 10, top - 10, top - 10, top, 1, top,
         ratelimit::detail::window_log::verdict::granted, top},
    };
};

}  // namespace ratelimit_test::window_vectors
