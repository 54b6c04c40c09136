#pragma once
// The sliding window log's decision on plain integers (nanoseconds): no
// clock, no atomics, no allocation. A Redis script can mirror it on a sorted
// set of grant times.
//
// Model. The log keeps the times of the last `limit` permits granted, oldest
// first (a never-used slot holds `unused_slot`). A permit granted at t counts in the
// window until t + window (half-open: at t + window it has left). Grants are
// made in order, so the log stays sorted. n permits fit at time t when the
// n-th oldest entry has left the window by t: then at most limit - n of the
// last `limit` permits still count, and adding n makes at most `limit`.
//
// Guarantee. Every grant is placed at least `window` after the entry `limit`
// places before it, so any half-open interval of length `window` holds at
// most `limit` grants.
//
// Overflow. A permit whose t + window lies past INT64_MAX never leaves the
// window (has_left is exact, not saturating), and a grant that would have to
// wait for it is out_of_range: a `now` stuck at INT64_MAX (a saturated clock)
// grants `limit` permits and then nothing.

#include <algorithm>
#include <cstdint>
#include <limits>

namespace ratelimit::detail::window_log {

/// A slot no permit ever used: it never counts.
inline constexpr std::int64_t unused_slot = std::numeric_limits<std::int64_t>::min();

/// The time a permit granted at `granted_at` leaves the window (saturating;
/// `unused_slot` for an unused slot). For display only: decisions use
/// has_left, which is exact where this saturates.
[[nodiscard]] constexpr std::int64_t expiry(std::int64_t granted_at, std::int64_t window) noexcept {
    if (granted_at == unused_slot) return unused_slot;
    std::int64_t sum = 0;
    if (__builtin_add_overflow(granted_at, window, &sum)) return std::numeric_limits<std::int64_t>::max();
    return sum;
}

/// Whether a permit granted at `granted_at` has left the window at `now`:
/// granted_at + window <= now, exactly (an unused slot always has; one whose
/// sum passes INT64_MAX never has).
[[nodiscard]] constexpr bool has_left(std::int64_t granted_at, std::int64_t window, std::int64_t now) noexcept {
    if (granted_at == unused_slot) return true;
    std::int64_t sum = 0;
    if (__builtin_add_overflow(granted_at, window, &sum)) return false;
    return sum <= now;
}

/// What decide() concluded.
enum class verdict {
    granted,       ///< n permits fit at `start`
    too_late,      ///< they fit only after the deadline
    never,         ///< n > limit: can never be granted
    out_of_range,  ///< they would fit only past the representable time
};

struct decision {
    verdict outcome;
    std::int64_t start;  ///< when the n permits are (or would be) granted; >= now
};

/// The one admission decision: may n permits (1 <= n) be granted at `now`, or
/// by `deadline` (a deadline before now means now)? `nth_oldest` is the n-th
/// oldest entry of the log (when n <= limit) and `newest` the latest grant:
/// no grant goes before an earlier one, so callers are served in order.
/// out_of_range (start = now) when the n-th oldest leaves only past INT64_MAX.
[[nodiscard]] constexpr decision decide(std::int64_t limit, std::int64_t window, std::int64_t nth_oldest,
                                        std::int64_t newest, std::int64_t now, std::int64_t n,
                                        std::int64_t deadline) noexcept {
    if (n > limit) return {verdict::never, now};
    std::int64_t leaves = now;  // when the n-th oldest has left the window
    if (nth_oldest != unused_slot && __builtin_add_overflow(nth_oldest, window, &leaves)) {
        return {verdict::out_of_range, now};  // never, in representable time
    }
    const std::int64_t start = std::max({now, leaves, newest});
    if (start > std::max(deadline, now)) return {verdict::too_late, start};
    return {verdict::granted, start};
}

/// How many of the oldest entries have left the window at `now`: the largest
/// k with has_left(entry(k - 1), window, now), by binary search over the sorted log.
/// `entry(i)` is the i-th oldest entry, 0 <= i < limit.
template <class Entry>
[[nodiscard]] constexpr std::int64_t expired(std::int64_t limit, std::int64_t window, std::int64_t now, Entry entry) {
    std::int64_t low = 0;  // entries [0, low) have expired
    std::int64_t high = limit;  // entries [high, limit) have not
    while (low < high) {
        const std::int64_t mid = low + (high - low) / 2;
        if (has_left(entry(mid), window, now)) {
            low = mid + 1;
        } else {
            high = mid;
        }
    }
    return low;
}

/// Permits grantable at `now`: the expired entries, or none while the newest
/// grant lies in the future (a reservation waits, and nobody overtakes it).
[[nodiscard]] constexpr std::int64_t available(std::int64_t expired_count, std::int64_t newest, std::int64_t now) noexcept {
    return newest > now ? 0 : expired_count;
}

/// The entry to put back, when a grant of n permits at `start` is cancelled,
/// in place of each of the n entries it overwrote. Their true times are gone,
/// but each was <= start - window (it had expired by start) and <= the oldest
/// entry it left in the log, `next_oldest` (none: pass INT64_MAX). The result
/// is the latest time consistent with both: never earlier than the truth, so
/// the log stays safe, and the log stays sorted.
[[nodiscard]] constexpr std::int64_t restored_entry(std::int64_t start, std::int64_t window,
                                                    std::int64_t next_oldest) noexcept {
    std::int64_t back = 0;
    if (__builtin_sub_overflow(start, window, &back)) back = unused_slot;
    return std::min(back, next_oldest);
}

}  // namespace ratelimit::detail::window_log
