#pragma once
// Hand-computed vectors for the GCRA math in include/ratelimit/detail/gcra.hpp.
//
// Every row is plain integers, so the same table can drive another
// implementation of the math (the Redis Lua script) as well as the C++ one.
// Unless a row says otherwise the bucket is `interval = 10` ticks per permit
// and `capacity = 3`, so `tolerance = capacity * interval = 30` ticks: the
// bucket is full when `tat <= now`, holds `(30 - (tat - now)) / 10` permits
// while `tat > now`, and n permits taken at `now` are usable at
// `max(tat, now) + 10n - 30` (or now, if that is earlier).

#include <cstdint>
#include <limits>
#include <optional>

#include <ratelimit/detail/gcra.hpp>

namespace ratelimit_test::gcra_vectors {

using ratelimit::detail::gcra::max_tat;
using ratelimit::detail::gcra::ticks;
using ratelimit::detail::gcra::verdict;

inline constexpr ticks never_deadline = std::numeric_limits<ticks>::max();

/// decide(params{interval, capacity}, tat, now, n, deadline) -> {outcome, tat, ready_at}.
struct decide_vector {
    const char* name;
    ticks interval;
    std::int64_t capacity;
    ticks tat;
    ticks now;
    std::int64_t n;
    ticks deadline;
    verdict outcome;
    ticks new_tat;   ///< the state afterwards: unchanged unless granted
    ticks ready_at;  ///< when the n permits are (or would be) usable
};

inline constexpr decide_vector decide_vectors[] = {
    // A full bucket (tat in the past) grants at once: tat = now + 10n.
    {"one permit from a full bucket", 10, 3, 0, 100, 1, 100, verdict::granted, 110, 100},
    {"the whole burst from a full bucket", 10, 3, 0, 100, 3, 100, verdict::granted, 130, 100},
    {"a stale tat counts from now, not from tat", 10, 3, 50, 1000, 2, 1000, verdict::granted, 1020, 1000},
    // Empty bucket (tat = now + 30): the next permit is usable at 130 + 10 - 30 = 110.
    {"an empty bucket refuses when the deadline is now", 10, 3, 130, 100, 1, 100, verdict::too_late, 130, 110},
    {"an empty bucket refuses a deadline one tick short", 10, 3, 130, 100, 1, 109, verdict::too_late, 130, 110},
    {"an empty bucket grants when the deadline is exactly ready_at", 10, 3, 130, 100, 1, 110, verdict::granted, 140,
     110},
    {"a deadline before now means now", 10, 3, 0, 100, 1, 50, verdict::granted, 110, 100},
    {"a deadline before now refuses what is not ready now", 10, 3, 130, 100, 1, 50, verdict::too_late, 130, 110},
    // Partly drained (tat = 115: 1.5 permits): 3 permits end at 145, usable at 145 - 30 = 115.
    {"the full burst from a partly drained bucket waits for the refill", 10, 3, 115, 100, 3, never_deadline,
     verdict::granted, 145, 115},
    {"one permit from a partly drained bucket is usable now", 10, 3, 115, 100, 1, 100, verdict::granted, 125, 100},
    // Reserving deep into debt: tat 200 -> 230, usable at 230 - 30 = 200.
    {"reserving in debt queues behind the debt", 10, 3, 200, 100, 3, never_deadline, verdict::granted, 230, 200},
    {"n == 0 on a non-empty bucket changes nothing", 10, 3, 115, 100, 0, 100, verdict::granted, 115, 100},
    {"n above capacity is never granted", 10, 3, 0, 100, 4, never_deadline, verdict::never, 0, 100},
    {"n above capacity is never granted even when full and idle", 10, 3, 0, 5000, 4, never_deadline, verdict::never,
     0, 5000},
    // Range: cost 10 must fit below max_tat.
    {"a reservation ending past max_tat is out of range", 10, 3, max_tat - 5, 100, 1, never_deadline,
     verdict::out_of_range, max_tat - 5, 100},
    {"a reservation ending exactly at max_tat is granted", 10, 3, max_tat - 10, 100, 1, never_deadline,
     verdict::granted, max_tat, max_tat - 30},
    // A one-tick interval (the fastest rate) and a one-permit bucket.
    {"one tick per permit, capacity 1", 1, 1, 7, 7, 1, 7, verdict::granted, 8, 7},
    {"one tick per permit, capacity 1, empty", 1, 1, 8, 7, 1, 7, verdict::too_late, 8, 8},
};

/// available(params, tat, now) -> whole permits, floored (negative in debt).
struct available_vector {
    const char* name;
    ticks interval;
    std::int64_t capacity;
    ticks tat;
    ticks now;
    std::int64_t expected;
};

inline constexpr available_vector available_vectors[] = {
    {"a full bucket holds its capacity", 10, 3, 0, 100, 3},
    {"tat equal to now is full", 10, 3, 100, 100, 3},
    {"half a permit short floors to 2", 10, 3, 105, 100, 2},         // (30 - 5) / 10 = 2.5
    {"one permit short", 10, 3, 110, 100, 2},                        // 20 / 10
    {"one tick more than one permit short", 10, 3, 111, 100, 1},     // 19 / 10 = 1.9
    {"exactly empty", 10, 3, 130, 100, 0},                           // 0 / 10
    {"one tick into debt floors to -1", 10, 3, 131, 100, -1},        // -1 / 10 = -0.1
    {"exactly one permit of debt", 10, 3, 140, 100, -1},             // -10 / 10
    {"one tick more than a permit of debt floors to -2", 10, 3, 141, 100, -2},  // -1.1
    {"a whole burst of debt", 10, 3, 160, 100, -3},                  // -30 / 10
    {"capacity 1, one tick refilled", 16, 1, 115, 100, 0},           // (16 - 15) / 16
};

/// refund(params, tat, now, n) -> tat: give back n permits, never above full,
/// and nothing while reservations run ahead of the refill.
struct refund_vector {
    const char* name;
    ticks interval;
    std::int64_t capacity;
    ticks tat;
    ticks now;
    std::int64_t n;
    ticks expected;
};

inline constexpr refund_vector refund_vectors[] = {
    {"a full bucket stays as it is", 10, 3, 90, 100, 1, 90},
    {"one permit back", 10, 3, 120, 100, 1, 110},
    {"more than was taken is capped at full (tat = now)", 10, 3, 120, 100, 5, 100},
    {"n above capacity gives back at most capacity", 10, 3, 125, 100, 5, 100},  // capped at full
    {"an empty bucket takes back what it is given", 10, 3, 130, 100, 2, 110},      // tat - now == tolerance
    {"reservations run ahead (tat > now + tolerance): nothing comes back", 10, 3, 160, 100, 2, 160},
    {"n == 0 changes nothing", 10, 3, 120, 100, 0, 120},
};

/// cancel(params, tat, now, n, reserved_end, ready_at) -> tat (x/time/rate's rule).
struct cancel_vector {
    const char* name;
    ticks interval;
    std::int64_t capacity;
    ticks tat;
    ticks now;
    std::int64_t n;
    ticks reserved_end;  ///< the state right after the reservation was taken
    ticks ready_at;      ///< when the reservation was usable
    ticks expected;
};

inline constexpr cancel_vector cancel_vectors[] = {
    {"the last reservation gives back all of it", 10, 3, 160, 100, 2, 160, 130, 140},
    {"a later reservation of 1 keeps 1 of the 2", 10, 3, 170, 100, 2, 160, 130, 160},
    {"later reservations of 2 or more keep everything", 10, 3, 180, 100, 2, 160, 130, 180},
    {"at exactly ready_at it still gives back", 10, 3, 160, 130, 2, 160, 130, 140},
    {"once now > ready_at it gives back nothing", 10, 3, 160, 131, 2, 160, 130, 160},
    {"it never gives back beyond full (tat = now)", 10, 3, 160, 140, 3, 160, 140, 140},  // 160 - 30 = 130 < 140
    {"a full bucket gives back nothing", 10, 3, 100, 100, 2, 120, 100, 100},
    {"n above capacity gives back at most capacity", 10, 3, 200, 100, 5, 200, 170, 170},
    {"later refills or refunds below reserved_end do not count as later reservations", 10, 3, 150, 100, 2, 160,
     130, 130},
};

/// rescale(from, tat, now_from, to, now_to, tick_shift) -> tat under `to`.
struct rescale_vector {
    const char* name;
    ticks from_interval;
    std::int64_t from_capacity;
    ticks tat;
    ticks now_from;
    ticks to_interval;
    std::int64_t to_capacity;
    ticks now_to;
    int tick_shift;
    ticks expected;
};

inline constexpr rescale_vector rescale_vectors[] = {
    {"a full bucket stays full when the rate changes", 10, 3, 90, 100, 5, 3, 200, 0, 200},
    {"a full bucket stays full when the capacity shrinks", 10, 3, 90, 100, 10, 2, 200, 0, 200},
    // Full with 2 permits, capacity raised to 4: keeps 2 permits, so 2 * 10 ticks of debt.
    {"a full bucket keeps its count when the capacity grows", 10, 2, 90, 100, 10, 4, 200, 0, 220},
    {"moving the origin keeps the debt exactly", 10, 3, 125, 100, 10, 3, 0, 0, 25},
    // 1 permit (debt 20 of 30) at 5 ticks per permit: debt 15 - 5 = 10.
    {"a faster rate keeps the permit count", 10, 3, 120, 100, 5, 3, 0, 0, 10},
    // 4 permits (debt 10 of 50), capacity 2: capped at 2 -> full.
    {"a smaller capacity caps the count", 10, 5, 110, 100, 10, 2, 0, 0, 0},
    // 1 permit, capacity 5: debt 50 - 10 = 40.
    {"a larger capacity keeps the count", 10, 3, 120, 100, 10, 5, 0, 0, 40},
    // Debt 40 of 30: a reservation usable 10 ticks from now, then empty and
    // refilling at 20 ticks per permit: 10 + 60 = 70.
    {"debt beyond empty keeps its time, then the new tolerance", 10, 3, 140, 100, 20, 3, 0, 0, 70},
    // 0.5 permits at 3 ticks per permit: debt ceil(9 - 1.5) = 8, i.e. 1/3 permit (fewer).
    {"fractions round toward fewer permits", 10, 3, 125, 100, 3, 3, 0, 0, 8},
    {"a debt beyond the range saturates at max_tat", 10, 3, max_tat, 0, ticks{1} << 20, 3, 0, 0, max_tat},
    // 2 permits reserved ahead (debt 50 of 30): they become usable at +20, so at
    // 5 ticks per permit the bucket is empty then and full 15 later: 35, not
    // the 25 that keeping -2 permits would give.
    {"reservations ahead keep their ready time when the rate grows", 10, 3, 150, 100, 5, 3, 0, 0, 35},
    // The same in ticks half the size: 20 ticks ahead are 40, plus the new tolerance 15.
    {"reservations ahead keep their ready time across a finer tick", 10, 3, 150, 100, 5, 3, 0, 1, 55},
    // Slower rate: the same +20, then the new tolerance 60.
    {"reservations ahead keep their ready time when the rate falls", 10, 3, 150, 100, 20, 3, 0, 0, 80},
    // A smaller capacity: +20, then empty with tolerance 10.
    {"reservations ahead keep their ready time when the capacity shrinks", 10, 3, 150, 100, 10, 1, 0, 0, 30},
};

/// time_scale{origin_ns, shift}.to_ticks(ns): floor, 0 before the origin, saturating.
struct to_ticks_vector {
    const char* name;
    std::int64_t origin_ns;
    int shift;
    std::int64_t ns;
    ticks expected;
};

inline constexpr std::int64_t int64_max = std::numeric_limits<std::int64_t>::max();
inline constexpr std::int64_t int64_min = std::numeric_limits<std::int64_t>::min();

inline constexpr to_ticks_vector to_ticks_vectors[] = {
    {"the origin is tick 0", 1000, 4, 1000, 0},
    {"before the origin counts as the origin", 1000, 4, 999, 0},
    {"one ns is 16 ticks at shift 4", 1000, 4, 1001, 16},
    {"the last ns before saturation at shift 4", 1000, 4, 1000 + (int64_max >> 4), (int64_max >> 4) << 4},
    {"saturates at INT64_MAX at shift 4", 1000, 4, 1000 + (int64_max >> 4) + 1, int64_max},
    {"shift 0 counts nanoseconds", -50, 0, 50, 100},
    {"shift -3 floors to 8 ns ticks (15 ns)", 1000, -3, 1015, 1},
    {"shift -3 floors to 8 ns ticks (16 ns)", 1000, -3, 1016, 2},
    {"the whole int64 range at shift -1", int64_min, -1, int64_max, int64_max >> 1},
    {"the whole int64 range at shift 4 saturates", int64_min, 4, 0, int64_max},
};

/// time_scale{origin_ns, shift}.to_ns(t): rounded up, saturating at INT64_MAX.
struct to_ns_vector {
    const char* name;
    std::int64_t origin_ns;
    int shift;
    ticks t;
    std::int64_t expected;
};

inline constexpr to_ns_vector to_ns_vectors[] = {
    {"tick 0 is the origin", 1000, 4, 0, 1000},
    {"one tick rounds up to a whole ns", 1000, 4, 1, 1001},
    {"16 ticks are exactly 1 ns", 1000, 4, 16, 1001},
    {"17 ticks round up to 2 ns", 1000, 4, 17, 1002},
    {"ticks of 8 ns", 1000, -3, 2, 1016},
    {"the largest tick at shift 4", 0, 4, int64_max, (int64_max >> 4) + 1},
    {"past the range at shift -3 saturates", 0, -3, (int64_max >> 3) + 1, int64_max},
    {"an origin near the end saturates", int64_max - 5, 0, 10, int64_max},
    {"a negative origin", -1000, 0, 10, -990},
};

/// interval_ticks(interval_ns, shift): rounded up, at least 1, at most max_tat.
struct interval_vector {
    const char* name;
    long double interval_ns;
    int shift;
    ticks expected;
};

inline constexpr interval_vector interval_vectors[] = {
    {"10 per second at 1/16 ns", 1e8L, 4, 1'600'000'000},
    {"90000 per minute rounds up to a whole tick", 60e9L / 90000, 4, 10'666'667},  // 10666666.67
    {"100 ns at 4 ns ticks", 100, -2, 25},
    {"100 ns at 8 ns ticks rounds up", 100, -3, 13},  // 12.5
    {"a sub-tick interval is one tick", 0.01L, 4, 1},
    {"1e-10 per second at 32 ns ticks", 1e19L, -5, 312'500'000'000'000'000},
    {"an interval beyond the range is max_tat", 1e30L, 4, max_tat},
};

/// finest_fitting_shift(interval_ns, capacity): the largest shift in [-62, 4]
/// with interval_ticks * capacity <= 2^59, or none.
struct shift_vector {
    const char* name;
    long double interval_ns;
    std::int64_t capacity;
    std::optional<int> expected;
};

inline constexpr std::int64_t two_to_59 = std::int64_t{1} << 59;

inline constexpr shift_vector shift_vectors[] = {
    {"10 per second, capacity 1, gets the finest tick", 1e8L, 1, 4},
    // 2^59 / 1.6e9 = 360287970.2: the last capacity at 1/16 ns, then 1/8 ns.
    {"the largest capacity at 1/16 ns for 10 per second", 1e8L, 360'287'970, 4},
    {"one more permit needs 1/8 ns ticks", 1e8L, 360'287'971, 3},
    {"1e-10 per second needs 32 ns ticks", 1e19L, 1, -5},  // 1e19 / 16 > 2^59 >= 1e19 / 32
    {"capacity 2^59 at 1 ns fits only at 1 ns ticks", 1, two_to_59, 0},
    {"capacity above 2^59 never fits", 1, two_to_59 + 1, std::nullopt},
    {"2^121 ns per permit fits at the coarsest tick", 0x1p121L, 1, -62},
    {"beyond 2^121 ns per permit never fits", 0x1.0001p121L, 1, std::nullopt},
    {"a sixteenth of a ns per permit", 0.0625L, 1, 4},
};

}  // namespace ratelimit_test::gcra_vectors
