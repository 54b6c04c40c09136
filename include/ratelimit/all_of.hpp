#pragma once
// ratelimit::all_of: several limiters of the same unit acting as one, all or
// nothing (for example 1000 per second AND 50000 per minute).

#include <algorithm>
#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <tuple>
#include <type_traits>
#include <utility>

#include "clock.hpp"
#include "detail/chrono.hpp"
#include "limiter.hpp"

namespace ratelimit {

namespace detail {

/// Parts all_of asks before taking anything, reads the clock from, or sizes itself by.
template <class L>
concept tells_wait = requires(L& l, std::int64_t n) { l.time_until_available(n); };
template <class L>
concept tells_available = requires(L& l) { l.available(); };
template <class L>
concept has_clock = requires(const L& l) { l.get_clock(); };
template <class L>
concept has_capacity = requires(const L& l) { l.capacity(); };

}  // namespace detail

/// A composite of limiters counting the same unit: n permits are granted
/// when every part grants n. Built by `all_of(parts...)`; holds references,
/// so the parts must outlive it (they may still be used directly too).
///
/// Guarantee: every part keeps its own bound for the permits it grants, so
/// the composite admits no more than the strictest part allows at any time
/// scale. All or nothing: when a part refuses, the parts that had already
/// granted get their permits back (refund; see below), so a failed call
/// changes no part. Blocking callers are served first come, first served when
/// every part is reservable: `acquire` reserves n on each part and sleeps until
/// the latest ready_at(), so no part is polled. Otherwise `acquire` calls each
/// part's blocking `acquire` in order (waiting for the first, then the rest,
/// holding what it got). Either way a part that is ready early holds its
/// permits, counted from when it granted them, until the latest part is ready.
///
/// Undo. Every part but the last must be a refundable_limiter (checked at
/// compile time): a failed call refunds the parts that granted before the
/// refusal. Before taking anything, parts that offer `time_until_available(n)`
/// are asked, so a call that cannot succeed by its deadline takes nothing and
/// never sleeps in vain; refunds happen only when another caller wins a race
/// between that check and the take. A refunded reservation that lies in the
/// future is cancelled instead (x/time/rate's rule: it gives back what later
/// reservations did not take). Race window: a permit granted at once and
/// refunded a moment later returns in full, even when another caller has
/// reserved ahead on that part in between; that caller was then scheduled
/// behind permits that no longer count, so for that instant the part may admit
/// up to n more than its bound. Put the part most likely to refuse first.
///
/// Thread-safe when the parts are; no state, lock or allocation of its own.
/// Cost: one call per part, plus the time_until_available pre-checks.
///
/// Clock and units: all parts must have the same clock_type (a static_assert
/// says so); the composite reads and sleeps on the clock of the first part
/// that exposes `get_clock()` (else a default-constructed, stateless Clock).
/// capacity() is the smallest capacity() among the parts that report one.
///
/// Edge cases: n == 0 succeeds at once; n < 0 throws std::invalid_argument;
/// n above capacity() never blocks (`try_*` return false, `acquire` throws
/// capacity_exceeded); a part without capacity() that can never grant n
/// refuses or throws by its own contract, and the others get theirs back.
template <limiter... Parts>
class all_of_limiter {
    static_assert(sizeof...(Parts) >= 1, "ratelimit::all_of needs at least one limiter");
    using first_part = std::tuple_element_t<0, std::tuple<Parts...>>;

public:
    using clock_type = typename first_part::clock_type;
    using duration = typename first_part::duration;
    using time_point = typename first_part::time_point;

    static_assert((std::is_same_v<typename Parts::clock_type, clock_type> && ...),
                  "ratelimit::all_of: every limiter must have the same clock_type");

    /// A composite of `parts`, held by reference.
    explicit all_of_limiter(Parts&... parts) : parts_(parts...), clock_(find_clock(parts...)) {}

    /// Takes n from every part if each grants it now; never blocks.
    bool try_acquire(std::int64_t n = 1) {
        detail::check_count(name, n);
        if (n == 0) return true;
        if (n > capacity()) return false;
        if (!all_ready_within(n, duration::zero())) return false;
        return take_in_turn(n, [n](auto& part) { return part.try_acquire(n); });
    }

    /// Takes n from every part if all can grant it within `d`, sleeping until
    /// the latest is ready; false at once when a part's earliest grant is later.
    bool try_acquire_for(std::int64_t n, duration d) {
        detail::check_count(name, n);
        const time_point now = clock_.now();
        const time_point deadline =
            detail::deadline_after(now, d);
        return try_acquire_until(n, deadline);
    }

    /// Takes n from every part if all can grant it by `t`, sleeping until the
    /// latest is ready; false at once when a part's earliest grant is later.
    /// A past `t` acts as try_acquire.
    bool try_acquire_until(std::int64_t n, time_point t) {
        detail::check_count(name, n);
        if (n == 0) return true;
        if (n > capacity()) return false;
        const time_point now = clock_.now();
        if (t <= now) return try_acquire(n);
        if (!all_ready_within(n, t - now)) return false;
        if constexpr (all_reservable) {
            const std::optional<time_point> ready = reserve_all(n, t);
            if (!ready) return false;
            if (*ready > clock_.now()) ratelimit::sleep_until(clock_, *ready);
            return true;
        } else {
            return take_in_turn(n, [n, t](auto& part) { return part.try_acquire_until(n, t); });
        }
    }

    /// Takes n from every part, sleeping until the latest is ready; returns
    /// the time slept. Throws capacity_exceeded when n > capacity().
    duration acquire(std::int64_t n = 1) {
        detail::check_count(name, n);
        if (n == 0) return duration::zero();
        const std::int64_t most = capacity();
        if (n > most) throw capacity_exceeded(name, n, most);
        const time_point start = clock_.now();
        if constexpr (all_reservable) {
            const time_point ready = *reserve_all(n, std::nullopt);
            if (ready > clock_.now()) ratelimit::sleep_until(clock_, ready);
            return ready > start ? std::chrono::duration_cast<duration>(ready - start) : duration::zero();
        } else {
            (void)take_in_turn(n, [n](auto& part) {
                (void)part.acquire(n);
                return true;
            });
            const time_point end = clock_.now();
            return end > start ? std::chrono::duration_cast<duration>(end - start) : duration::zero();
        }
    }

    /// Gives n unused permits back to every part (each capped at its capacity).
    void refund(std::int64_t n)
        requires(refundable_limiter<Parts> && ...)
    {
        detail::check_count(name, n);
        std::apply([n](auto&... part) { (part.refund(n), ...); }, parts_);
    }

    /// How long until every part could grant n: the latest of the parts' waits.
    [[nodiscard]] duration time_until_available(std::int64_t n = 1)
        requires(detail::tells_wait<Parts> && ...)
    {
        detail::check_count(name, n);
        return std::apply([n](auto&... part) { return std::max({duration::zero(), part.time_until_available(n)...}); },
                          parts_);
    }

    /// Permits every part could grant now: the smallest of the parts' available().
    [[nodiscard]] std::int64_t available()
        requires(detail::tells_available<Parts> && ...)
    {
        return std::apply([](auto&... part) { return std::min({static_cast<std::int64_t>(part.available())...}); },
                          parts_);
    }

    /// The largest n one call can be granted: the smallest capacity() among
    /// the parts that report one (INT64_MAX when none does).
    [[nodiscard]] std::int64_t capacity() const {
        std::int64_t most = std::numeric_limits<std::int64_t>::max();
        std::apply(
            [&most](auto&... part) {
                (
                    [&most](auto& p) {
                        if constexpr (detail::has_capacity<std::remove_cvref_t<decltype(p)>>) most = std::min<std::int64_t>(most, p.capacity());
                    }(part),
                    ...);
            },
            parts_);
        return most;
    }

    /// The parts, in the order given.
    [[nodiscard]] const std::tuple<Parts&...>& parts() const noexcept { return parts_; }
    /// The clock the composite reads and sleeps on.
    [[nodiscard]] const clock_type& get_clock() const noexcept { return clock_; }

private:
    static constexpr const char* name = "ratelimit::all_of";
    static constexpr std::size_t count = sizeof...(Parts);
    static constexpr bool all_reservable = (reservable_limiter<Parts> && ...);
    static constexpr std::array<bool, count> refundable{refundable_limiter<Parts>...};

    static constexpr bool all_but_last_refundable() {
        for (std::size_t i = 0; i + 1 < count; ++i) {
            if (!refundable[i]) return false;
        }
        return true;
    }
    static_assert(all_but_last_refundable(),
                  "ratelimit::all_of: every limiter but the last must be a refundable_limiter "
                  "(a failed call gives back what the earlier ones granted)");

    template <class Part>
    using reservation_of = decltype(std::declval<Part&>().reserve(std::int64_t{1}));

    /// The clock of the first part with get_clock(), else a stateless default.
    static clock_type find_clock(Parts&... parts) {
        std::optional<clock_type> found;
        (
            [&found](auto& part) {
                if constexpr (detail::has_clock<std::remove_cvref_t<decltype(part)>>) {
                    if (!found) found.emplace(part.get_clock());
                }
            }(parts),
            ...);
        if constexpr ((detail::has_clock<Parts> || ...)) {
            return *found;
        } else {
            static_assert(std::is_empty_v<clock_type> && std::is_default_constructible_v<clock_type>,
                          "ratelimit::all_of: no limiter exposes get_clock(), and its clock is not stateless");
            return clock_type{};
        }
    }

    /// False when a part that can tell says it cannot grant n within `d`.
    bool all_ready_within(std::int64_t n, duration d) {
        return std::apply(
            [n, d](auto&... part) {
                return ([n, d](auto& p) {
                    if constexpr (detail::tells_wait<std::remove_cvref_t<decltype(p)>>) {
                        const auto wait = p.time_until_available(n);
                        return wait != std::remove_cvref_t<decltype(wait)>::max() && wait <= d;
                    } else {
                        return true;
                    }
                }(part) && ...);
            },
            parts_);
    }

    /// Gives n back to part I after it granted at once.
    template <std::size_t I>
    void give_back(std::int64_t n) {
        if constexpr (refundable[I]) std::get<I>(parts_).refund(n);
    }

    /// Gives n back to parts [0, taken).
    template <std::size_t... I>
    void give_back_first(std::size_t taken, std::int64_t n, std::index_sequence<I...>) {
        ((I < taken ? give_back<I>(n) : void()), ...);
    }

    /// Calls `take(part)` on each part in order; when one returns false or
    /// throws, refunds the parts before it and returns false or rethrows.
    template <class Take>
    bool take_in_turn(std::int64_t n, Take take) {
        std::size_t taken = 0;
        try {
            const bool all = std::apply([&](auto&... part) { return ((take(part) && (++taken, true)) && ...); }, parts_);
            if (all) return true;
        } catch (...) {
            give_back_first(taken, n, std::make_index_sequence<count>{});
            throw;
        }
        give_back_first(taken, n, std::make_index_sequence<count>{});
        return false;
    }

    /// Reserves n on every part (all reservable) and returns the latest
    /// ready_at(); with a deadline, stops at the first part ready later,
    /// undoes what it took and returns nothing. A part that throws is rethrown
    /// after the undo.
    std::optional<time_point> reserve_all(std::int64_t n, std::optional<time_point> deadline) {
        std::tuple<std::optional<reservation_of<Parts>>...> held;
        std::optional<time_point> latest;
        bool failed = false;
        try {
            [&]<std::size_t... I>(std::index_sequence<I...>) {
                (
                    [&] {
                        if (failed) return;
                        auto& r = std::get<I>(held).emplace(std::get<I>(parts_).reserve(n));
                        const time_point ready = r.ready_at();
                        if (deadline && ready > std::max(*deadline, clock_.now())) {
                            failed = true;
                            return;
                        }
                        latest = latest ? std::max(*latest, ready) : ready;
                    }(),
                    ...);
            }(std::make_index_sequence<count>{});
        } catch (...) {
            undo_reservations(held, n, std::make_index_sequence<count>{});
            throw;
        }
        if (failed) {
            undo_reservations(held, n, std::make_index_sequence<count>{});
            return std::nullopt;
        }
        return latest;
    }

    /// Undoes every held reservation: a future one by cancel(), one already
    /// usable by refund (cancel would give nothing back once the clock moved on).
    template <class Held, std::size_t... I>
    void undo_reservations(Held& held, std::int64_t n, std::index_sequence<I...>) {
        (
            [&] {
                auto& r = std::get<I>(held);
                if (!r) return;
                if constexpr (refundable[I]) {
                    if (r->ready_at() <= clock_.now()) {
                        std::get<I>(parts_).refund(n);
                        return;
                    }
                }
                r->cancel();
            }(),
            ...);
    }

    std::tuple<Parts&...> parts_;
    [[no_unique_address]] clock_type clock_;
};

/// A limiter granting n only when every one of `parts` grants n; see all_of_limiter.
template <limiter... Parts>
[[nodiscard]] all_of_limiter<Parts...> all_of(Parts&... parts) {
    return all_of_limiter<Parts...>(parts...);
}

}  // namespace ratelimit
