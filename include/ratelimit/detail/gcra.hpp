#pragma once
// The generic cell rate algorithm (GCRA), the math behind token_bucket, on
// plain integers: no clock, no atomics, no allocation. The Redis script
// mirrors these functions; the tests check both against the same vectors.
//
// Model. A token bucket of `capacity` permits refilled one permit every
// `interval` is kept as one number, the theoretical arrival time `tat`: the
// time at which the bucket would be full again. At time `now` the bucket is
// short of `debt = max(tat, now) - now` worth of permits, so it holds
// `(tolerance - debt) / interval` permits, where `tolerance = capacity *
// interval`. Taking n permits moves `tat` to `max(tat, now) + n * interval`;
// they may be used once `tat - tolerance <= now`.
//
// Time is counted in ticks from an origin: a tick is 2^-shift nanoseconds
// (shift from 4, a sixteenth of a nanosecond, down to -62 for very slow
// rates), chosen per configuration so that `tolerance` fits in 2^59 ticks.
// The state lives in [0, 2^62) ticks; past 2^61 the owner moves the origin.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>

namespace ratelimit::detail::gcra {

using ticks = std::int64_t;

/// Largest representable theoretical arrival time (the state is 62 bits).
inline constexpr ticks max_tat = (ticks{1} << 62) - 1;
/// Largest tolerance (capacity * interval) a configuration may have.
inline constexpr ticks max_tolerance = ticks{1} << 59;
/// When `now` passes this many ticks from the origin, the owner rebases.
inline constexpr ticks rebase_threshold = ticks{1} << 61;
/// Finest tick: 2^-4 ns.
inline constexpr int finest_shift = 4;
/// Coarsest tick: 2^62 ns.
inline constexpr int coarsest_shift = -62;

/// A bucket's configuration in ticks.
struct params {
    ticks interval = 1;         ///< ticks per permit, >= 1
    std::int64_t capacity = 1;  ///< permits the bucket holds when full, >= 1
    [[nodiscard]] constexpr ticks tolerance() const noexcept { return interval * capacity; }
    friend constexpr bool operator==(const params&, const params&) = default;
};

/// Conversion between nanoseconds on a clock and ticks from an origin.
struct time_scale {
    std::int64_t origin_ns = 0;  ///< tick 0, in nanoseconds since the clock's epoch
    int shift = 0;               ///< a tick is 2^-shift ns

    /// Ticks from the origin to `ns`: 0 before the origin, saturating at
    /// INT64_MAX far past it (the caller rebases past rebase_threshold).
    [[nodiscard]] constexpr ticks to_ticks(std::int64_t ns) const noexcept {
        if (ns <= origin_ns) return 0;
        const std::uint64_t diff = static_cast<std::uint64_t>(ns) - static_cast<std::uint64_t>(origin_ns);
        constexpr std::uint64_t max = static_cast<std::uint64_t>(std::numeric_limits<ticks>::max());
        if (shift >= 0) {
            if (diff > (max >> shift)) return std::numeric_limits<ticks>::max();
            return static_cast<ticks>(diff << shift);
        }
        if (diff > max) return std::numeric_limits<ticks>::max() >> -shift;
        return static_cast<ticks>(diff >> -shift);
    }

    /// The nanosecond time of tick `t`, rounded up; saturates at INT64_MAX.
    [[nodiscard]] constexpr std::int64_t to_ns(ticks t) const noexcept {
        constexpr std::int64_t max = std::numeric_limits<std::int64_t>::max();
        std::int64_t offset = 0;
        if (shift >= 0) {
            offset = (t >> shift) + ((t & ((ticks{1} << shift) - 1)) != 0 ? 1 : 0);
        } else {
            if (t > (max >> -shift)) return max;
            offset = t << -shift;
        }
        return origin_ns > max - offset ? max : origin_ns + offset;
    }
};

/// Ticks per permit for `interval_ns` at `shift`, rounded up (never faster than asked).
[[nodiscard]] inline ticks interval_ticks(long double interval_ns, int shift) noexcept {
    const long double scaled = std::ceil(std::ldexp(interval_ns, shift));
    if (scaled < 1) return 1;
    if (scaled >= static_cast<long double>(max_tat)) return max_tat;
    return static_cast<ticks>(scaled);
}

/// The finest tick at which a bucket of `capacity` permits `interval_ns`
/// apart fits the state, or nothing when none does (capacity * interval above
/// 2^121 ns, some 10^20 years, or capacity above 2^59: a permit is at least
/// one tick). A store with less room (the Redis script counts in doubles)
/// passes its own `tolerance_limit`.
[[nodiscard]] inline std::optional<int> finest_fitting_shift(long double interval_ns, std::int64_t capacity,
                                                             ticks tolerance_limit = max_tolerance) noexcept {
    for (int shift = finest_shift; shift >= coarsest_shift; --shift) {
        const ticks interval = interval_ticks(interval_ns, shift);
        if (interval <= tolerance_limit / capacity) return shift;
    }
    return std::nullopt;
}

/// What decide() concluded.
enum class verdict {
    granted,       ///< taken; usable at ready_at
    too_late,      ///< could be taken, but not usable by the deadline
    never,         ///< n > capacity: can never be granted
    out_of_range,  ///< the reservation would end past max_tat
};

struct decision {
    verdict outcome;
    ticks tat;       ///< the new state when granted, else the old one
    ticks ready_at;  ///< when the n permits are (or would be) usable; >= now
};

/// The one admission decision: may n permits be taken at `now` to be used no
/// later than `deadline` (a deadline before `now` means `now`)?
/// Precondition: 0 <= n, tat in [0, max_tat], now >= 0.
[[nodiscard]] constexpr decision decide(params p, ticks tat, ticks now, std::int64_t n, ticks deadline) noexcept {
    if (n > p.capacity) return {verdict::never, tat, now};
    const ticks base = std::max(tat, now);
    const ticks cost = n * p.interval;  // <= tolerance <= 2^59
    if (base > max_tat - cost) return {verdict::out_of_range, tat, now};
    const ticks new_tat = base + cost;
    const ticks ready_at = new_tat - now > p.tolerance() ? new_tat - p.tolerance() : now;
    if (ready_at > std::max(deadline, now)) return {verdict::too_late, tat, ready_at};
    return {verdict::granted, new_tat, ready_at};
}

/// Whole permits in the bucket at `now`; negative while reservations are
/// outstanding beyond it.
[[nodiscard]] constexpr std::int64_t available(params p, ticks tat, ticks now) noexcept {
    const ticks headroom = p.tolerance() - (std::max(tat, now) - now);
    const ticks whole = headroom / p.interval;
    return (headroom < 0 && whole * p.interval != headroom) ? whole - 1 : whole;  // floor
}

/// The state after giving back n permits at `now`, never above a full bucket.
/// Nothing comes back while reservations run ahead of the refill
/// (tat > now + tolerance): their ready times were fixed on the permits
/// already taken, and moving tat back would hand the same slots out twice.
[[nodiscard]] constexpr ticks refund(params p, ticks tat, ticks now, std::int64_t n) noexcept {
    if (tat <= now || n <= 0 || tat - now > p.tolerance()) return tat;
    const ticks back = std::min(n, p.capacity) * p.interval;
    return std::max(tat - back, now);
}

/// The state after cancelling a reservation of n permits that ended the state
/// at `reserved_end` (x/time/rate's rule): give back n permits' worth of
/// ticks less the ticks reserved after it, and nothing once `now > ready_at`.
[[nodiscard]] constexpr ticks cancel(params p, ticks tat, ticks now, std::int64_t n, ticks reserved_end,
                                     ticks ready_at) noexcept {
    if (now > ready_at || tat <= now) return tat;
    const ticks reserved_after = std::max<ticks>(0, tat - reserved_end);
    const ticks own = std::min(n, p.capacity) * p.interval;
    if (own <= reserved_after) return tat;
    return std::max(tat - (own - reserved_after), now);
}

/// The state under configuration `to` equivalent to `tat` under `from`.
/// A bucket holding permits keeps their number (capped at to.capacity),
/// rounding toward fewer. A bucket in debt beyond empty (reservations running
/// ahead of the refill, whose ready times are fixed) keeps that debt's length
/// in time: the bucket is empty when the last reservation becomes usable and
/// refills at the new rate from there, so no permit goes before a slot
/// already promised and a rate changed back and forth never inflates it.
/// `now_from` and `now_to` are the same instant in either's ticks; `to`
/// counts 2^tick_shift ticks for each tick of `from` (0: the same size, and
/// then equal params keep the debt exactly, as when only the origin moves).
[[nodiscard]] inline ticks rescale(params from, ticks tat, ticks now_from, params to, ticks now_to,
                                   int tick_shift) noexcept {
    const ticks debt_from = std::max(tat, now_from) - now_from;
    // Full stays full unless the capacity grows: then the count is kept, as in
    // x/time/rate, and the new room fills at the rate.
    if (debt_from == 0 && to.capacity <= from.capacity) return now_to;
    if (tick_shift == 0 && from == to) return std::min(now_to + debt_from, max_tat);
    long double debt_to = 0;
    if (debt_from > from.tolerance()) {
        const long double reserved_ahead = std::ceil(std::ldexp(static_cast<long double>(debt_from - from.tolerance()), tick_shift));
        debt_to = reserved_ahead + static_cast<long double>(to.tolerance());
    } else {
        const long double permits =
            std::min(static_cast<long double>(from.tolerance() - debt_from) / static_cast<long double>(from.interval),
                     static_cast<long double>(to.capacity));
        debt_to = std::ceil(static_cast<long double>(to.tolerance()) - permits * static_cast<long double>(to.interval));
    }
    if (debt_to <= 0) return now_to;
    if (debt_to >= static_cast<long double>(max_tat - now_to)) return max_tat;
    return now_to + static_cast<ticks>(debt_to);
}

}  // namespace ratelimit::detail::gcra
