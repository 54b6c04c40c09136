#pragma once
// The leaky bucket's decision on plain integers, built on the GCRA math of
// detail/gcra.hpp: no clock, no atomics, no allocation. A Redis script can
// mirror it line by line.
//
// Model. The state is GCRA's theoretical arrival time `tat`: the end of the
// schedule, the time at which the bucket has drained everything it holds.
// Every permit has a slot on the schedule, one `interval` after the previous
// permit's slot; a request for n permits takes the next n slots, starting at
// `max(tat, now)`, and is granted at the slot of its last permit:
//
//     ready_at = max(tat, now) + (n - 1) * interval,   tat' = ready_at + interval.
//
// This is GCRA with a tolerance of one interval (`params{interval, 1}` in
// gcra's terms; its "zero tolerance" in the ATM literature, where the cell's
// own increment is not counted): with n == 1 a grant comes exactly one
// interval after the previous one, and idle time is never banked.
//
// The bucket holds at most `max_queue + 1` permits: the one being served and
// `max_queue` waiting. A request is admitted only when the schedule it leaves
// behind ends at most `(max_queue + 1) * interval` after now, which is exactly
// gcra::decide with `capacity = max_queue + 1` granting at `now`. With single
// permits this is "at most max_queue callers waiting"; a request for n counts
// as n callers, and n > max_queue + 1 can never be admitted.

#include <algorithm>
#include <cstdint>

#include "gcra.hpp"

namespace ratelimit::detail::leaky {

using gcra::ticks;

/// The GCRA parameters of a leaky bucket: the admission tolerance is the
/// whole bucket, `max_queue + 1` intervals. Precondition: 0 <= max_queue < INT64_MAX.
[[nodiscard]] constexpr gcra::params params(ticks interval, std::int64_t max_queue) noexcept {
    return {interval, max_queue + 1};
}

/// When n permits (n >= 1) asked for at `now` would be granted: at the slot
/// of the last of them. Precondition: n <= p.capacity, tat in [0, max_tat].
[[nodiscard]] constexpr ticks ready_at(gcra::params p, ticks tat, ticks now, std::int64_t n) noexcept {
    return std::max(tat, now) + (n - 1) * p.interval;
}

/// What decide() concluded.
enum class verdict {
    granted,       ///< admitted; usable at ready_at
    too_late,      ///< the queue has room, but ready_at is after the deadline
    queue_full,    ///< admitting it would leave more than max_queue waiting
    never,         ///< n > max_queue + 1: can never be admitted
    out_of_range,  ///< the schedule would end past gcra::max_tat
};

struct decision {
    verdict outcome;
    ticks tat;       ///< the new state when granted, else the old one
    ticks ready_at;  ///< when the n permits are (or would be) usable; >= now
};

/// The one admission decision: may n permits (n >= 1) join the schedule at
/// `now`, to be used no later than `deadline` (a deadline before now means now)?
/// Precondition: p from params(), tat in [0, max_tat], now >= 0.
[[nodiscard]] constexpr decision decide(gcra::params p, ticks tat, ticks now, std::int64_t n, ticks deadline) noexcept {
    const gcra::decision fits = gcra::decide(p, tat, now, n, now);
    switch (fits.outcome) {
        case gcra::verdict::never:
            return {verdict::never, tat, now};
        case gcra::verdict::out_of_range:
            return {verdict::out_of_range, tat, now};
        case gcra::verdict::too_late:
            return {verdict::queue_full, tat, leaky::ready_at(p, tat, now, n)};
        case gcra::verdict::granted:
            break;
    }
    const ticks ready = fits.tat - p.interval;  // = ready_at(p, tat, now, n)
    if (ready > std::max(deadline, now)) return {verdict::too_late, tat, ready};
    return {verdict::granted, fits.tat, ready};
}

/// Permits waiting at `now`: slots after now that are not the one being
/// served, i.e. ceil((tat - now) / interval) - 1, at least 0. With single
/// permits this is the number of callers whose grant is still in the future.
[[nodiscard]] constexpr std::int64_t queue_size(gcra::params p, ticks tat, ticks now) noexcept {
    return std::max<std::int64_t>(0, p.capacity - 1 - gcra::available(p, tat, now));
}

/// The state after cancelling a reservation of n permits that ended the
/// schedule at `reserved_end` and is ready at `ready_at`. Its slots come back
/// only while it is still the last one on the schedule: later slots belong to
/// their own reservations, and a schedule kept as one number has no holes, so
/// giving back slots before them would put two grants less than an interval
/// apart. Nothing comes back once `now > ready_at`; slots already past come
/// back as now (the schedule restarts at now, never earlier).
[[nodiscard]] constexpr ticks cancel(gcra::params p, ticks tat, ticks now, std::int64_t n, ticks reserved_end,
                                     ticks ready_at) noexcept {
    if (tat != reserved_end) return tat;
    return gcra::cancel(p, tat, now, n, reserved_end, ready_at);
}

}  // namespace ratelimit::detail::leaky
