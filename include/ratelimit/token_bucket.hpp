#pragma once
// ratelimit::token_bucket: the lock-free token bucket.

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <limits>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>

#include "clock.hpp"
#include "detail/chrono.hpp"
#include "detail/writer_guard.hpp"
#include "detail/gcra.hpp"
#include "detail/text.hpp"
#include "limiter.hpp"
#include "rate.hpp"

namespace ratelimit {

/// A token bucket of `capacity` permits, initially full, refilled at rate `r`
/// (one permit every r.interval()). A request for n permits is granted when
/// the bucket holds n; `reserve` and `acquire` may take them ahead of time,
/// leaving the bucket in debt until the refill covers it.
///
/// Guarantee: in any interval of length T at most `capacity + r·T` permits
/// are granted, counting reserved permits at their ready_at(). The bound is
/// exact in the bucket's ticks of 1/16 ns (the interval is rounded up to a
/// whole tick); ready_at() rounds a tick up to the clock's next nanosecond,
/// so between two such times it holds with T lengthened by 1 ns.
/// Blocking callers are served first come, first served: `acquire` reserves
/// and then sleeps, so there is no retry loop and no thundering herd.
///
/// `set_rate` and `set_capacity` keep the permit count (x/time/rate's rule),
/// capped at the capacity; a count below zero is reservations running ahead
/// of the refill, and those keep their ready times instead: the bucket is
/// empty when the last becomes usable and refills at the new rate from there.
///
/// Across those changes: in any interval, the permits usable in it less those
/// refunded in it are at most the largest capacity in force over it plus the
/// integral of the rate over it, where a permit reserved before a change
/// counts with the rate and capacity it was reserved at while outstanding.
/// `cancel()` of a reservation made before the latest change gives nothing
/// back (the change converted the state with its debt inside).
///
/// Lock-free: the state is one 64-bit atomic word (the GCRA theoretical
/// arrival time, see detail/gcra.hpp); a grant is one compare-and-swap, a
/// refusal two loads and no write. No allocation, no lock held while sleeping.
/// `set_rate` and `set_capacity` take a writers-only lock (a waiting writer
/// blocks), as does, once every 4.5 years of clock time, moving the tick
/// origin forward.
///
/// Edge cases: n == 0 succeeds at once; n < 0 throws std::invalid_argument;
/// n > capacity() never blocks (`try_*` return false, `acquire` and `reserve`
/// throw capacity_exceeded). A clock that stands still refills nothing; a
/// time earlier than one already seen counts as that later time (so a clock
/// that jumps ahead and back refills nothing until it catches up). Rates
/// faster than 1.6·10^10 per second are clamped to that; very slow rates
/// (down to one permit in 10^20 years) and large capacities use coarser
/// ticks. A capacity above 2^59 throws std::invalid_argument.
template <clock Clock = std::chrono::steady_clock>
class token_bucket {
public:
    using clock_type = Clock;
    using duration = typename Clock::duration;
    using time_point = typename Clock::time_point;

    /// A full bucket of `capacity` permits (> 0) refilled at `r`.
    token_bucket(rate r, std::int64_t capacity, Clock c = {}) : clock_(std::move(c)), rate_(r) {
        detail::check_positive(name, "capacity", capacity);
        const config first = make_config(r, capacity, detail::ns_since_epoch(clock_.now()), 0);
        store(slots_[0], first);
        word_.store(pack(0, 0), std::memory_order_release);
    }
    token_bucket(const token_bucket&) = delete;
    token_bucket& operator=(const token_bucket&) = delete;
    ~token_bucket() = default;

    /// Takes n permits if the bucket holds them now; never blocks.
    bool try_acquire(std::int64_t n = 1) {
        detail::check_count(name, n);
        if (n == 0) return true;
        const time_point now = clock_.now();
        return take(n, now, now).outcome == detail::gcra::verdict::granted;
    }

    /// Takes n permits if they can be had within `d`, sleeping until then; returns
    /// false at once when the earliest grant is later.
    bool try_acquire_for(std::int64_t n, duration d) {
        detail::check_count(name, n);
        if (n == 0) return true;
        const time_point now = clock_.now();
        return wait_for(take(n, now, detail::deadline_after(now, d)), now);
    }

    /// Takes n permits if they can be had by `t`, sleeping until then; returns
    /// false at once when the earliest grant is later. A past `t` acts as now.
    bool try_acquire_until(std::int64_t n, time_point t) {
        detail::check_count(name, n);
        if (n == 0) return true;
        const time_point now = clock_.now();
        return wait_for(take(n, now, t), now);
    }

    /// Takes n permits, sleeping until they are usable; returns the time slept.
    /// Throws capacity_exceeded when n > capacity().
    duration acquire(std::int64_t n = 1) {
        reservation<Clock> r = reserve(n);
        const duration waited = r.delay();
        r.wait();
        return waited;
    }

    /// Takes n permits now, possibly ahead of time; the reservation says when
    /// they may be used. Throws capacity_exceeded when n > capacity().
    reservation<Clock> reserve(std::int64_t n = 1) {
        detail::check_count(name, n);
        return reserve_at(n, clock_.now());
    }

    /// Gives back n unused permits, never beyond a full bucket.
    void refund(std::int64_t n) {
        detail::check_count(name, n);
        if (n == 0) return;
        update([n](const detail::gcra::params& p, detail::gcra::ticks tat, detail::gcra::ticks now) { return detail::gcra::refund(p, tat, now, n); });
    }

    /// Whole permits in the bucket now; negative while reservations run ahead of the refill.
    [[nodiscard]] std::int64_t available() {
        return read([](const detail::gcra::params& p, detail::gcra::ticks tat, detail::gcra::ticks now, const config&,
                       std::int64_t) { return detail::gcra::available(p, tat, now); });
    }

    /// How long until n permits could be taken; duration::max() when n > capacity().
    [[nodiscard]] duration time_until_available(std::int64_t n = 1) {
        detail::check_count(name, n);
        return time_until_available_at(n, clock_.now());
    }

    /// The most permits the bucket holds.
    [[nodiscard]] std::int64_t capacity() const noexcept { return load().cfg.params.capacity; }

    /// The refill rate.
    [[nodiscard]] rate current_rate() const {
        detail::writer_guard guard(writer_);
        return rate_;
    }

    /// Changes the refill rate at once, keeping the current permit count (or the reserved slots of a debt).
    void set_rate(rate r) { reconfigure(r, std::nullopt); }

    /// Changes the capacity at once (> 0), keeping the current permit count capped at it.
    void set_capacity(std::int64_t capacity) {
        detail::check_positive(name, "capacity", capacity);
        reconfigure(std::nullopt, capacity);
    }

    /// The clock the bucket reads.
    [[nodiscard]] const Clock& get_clock() const noexcept { return clock_; }

private:
    template <clock>
    friend class dual_bucket;  // one clock read per call: it passes `now` to both buckets

    /// reserve(n) as of `now` (n >= 0), for a composite that read the clock once.
    reservation<Clock> reserve_at(std::int64_t n, time_point now) {
        if (n == 0) return reservation<Clock>(clock_, now, 0);
        const grant g = take(n, now, std::nullopt);
        if (g.outcome == detail::gcra::verdict::never) throw capacity_exceeded(name, n, g.capacity);
        if (g.outcome != detail::gcra::verdict::granted) {
            throw std::overflow_error(std::string(name) + ": n = " + std::to_string(n) +
                                      " would be ready beyond the representable time range");
        }
        return reservation<Clock>(clock_, g.ready_at, n, {this, &give_back, g.record});
    }

    /// time_until_available(n) as of `now` (n >= 0).
    duration time_until_available_at(std::int64_t n, time_point now) {
        if (n == 0) return duration::zero();
        return read_at(now, [n](const detail::gcra::params& p, detail::gcra::ticks tat, detail::gcra::ticks now,
                        const config& c, std::int64_t now_at) {
            const detail::gcra::decision d = detail::gcra::decide(p, tat, now, n, std::numeric_limits<detail::gcra::ticks>::max());
            if (d.outcome != detail::gcra::verdict::granted) return duration::max();
            if (d.ready_at == now) return duration::zero();
            // From the clock's own nanosecond, not from the tick it falls in
            // (a coarse tick would add up to one tick to the wait).
            std::int64_t wait_ns = 0;
            if (__builtin_sub_overflow(c.scale.to_ns(d.ready_at), now_at, &wait_ns)) return duration::max();
            return detail::duration_from_ns<duration>(std::max<std::int64_t>(wait_ns, 0));
        });
    }

    static constexpr const char* name = "ratelimit::token_bucket";
    using record_type = typename detail::canceller<time_point>::record_type;

    /// One configuration: the math's parameters, the tick scale, and a serial number.
    struct config {
        detail::gcra::params params;
        detail::gcra::time_scale scale;
        std::int64_t epoch = 0;         ///< serial number, one more on every install
        std::int64_t params_since = 0;  ///< the epoch that set params (later ones only moved the origin)
    };

    /// A configuration as atomics, so readers never race with a writer.
    struct slot {
        std::atomic<std::int64_t> interval{1};
        std::atomic<std::int64_t> capacity{1};
        std::atomic<std::int64_t> origin_ns{0};
        std::atomic<std::int64_t> epoch{0};
        std::atomic<std::int64_t> params_since{0};
        std::atomic<int> shift{0};
    };

    /// The state word and the configuration it was made under.
    struct view {
        std::uint64_t word;
        config cfg;
        [[nodiscard]] detail::gcra::ticks tat() const noexcept { return static_cast<detail::gcra::ticks>(word >> 2); }
        [[nodiscard]] unsigned generation() const noexcept { return static_cast<unsigned>(word & 3U); }
    };

    /// What take() decided, in the caller's time.
    struct grant {
        detail::gcra::verdict outcome;
        time_point ready_at;
        std::int64_t capacity;
        record_type record;  // {end tick, config epoch, end ns}: for cancel
    };

    static constexpr std::uint64_t pack(detail::gcra::ticks tat, unsigned generation) noexcept {
        return (static_cast<std::uint64_t>(tat) << 2) | (generation & 3U);
    }


    /// The finest configuration that represents `r` and `capacity`, with tick 0 at `origin_ns`.
    static config make_config(rate r, std::int64_t capacity, std::int64_t origin_ns, std::int64_t epoch) {
        const long double interval_ns = r.exact_interval().count();
        if (capacity > detail::gcra::max_tolerance) {  // a permit is at least one tick
            throw std::invalid_argument(std::string(name) + ": capacity must be <= 2^59 (" +
                                        std::to_string(detail::gcra::max_tolerance) + "), got " +
                                        std::to_string(capacity));
        }
        const std::optional<int> shift = detail::gcra::finest_fitting_shift(interval_ns, capacity);
        if (!shift) {
            throw std::invalid_argument(std::string(name) + ": capacity " + std::to_string(capacity) +
                                        " at one permit every " + detail::number_text(static_cast<double>(interval_ns)) +
                                        "ns spans more time than the state can hold");
        }
        return config{{detail::gcra::interval_ticks(interval_ns, *shift), capacity}, {origin_ns, *shift}, epoch};
    }

    static void store(slot& s, const config& c) noexcept {
        s.interval.store(c.params.interval, std::memory_order_relaxed);
        s.capacity.store(c.params.capacity, std::memory_order_relaxed);
        s.origin_ns.store(c.scale.origin_ns, std::memory_order_relaxed);
        s.epoch.store(c.epoch, std::memory_order_relaxed);
        s.params_since.store(c.params_since, std::memory_order_relaxed);
        s.shift.store(c.scale.shift, std::memory_order_relaxed);
    }

    /// The state word and its configuration. A caller that acts on the view
    /// validates it: a CAS on view.word, or unchanged(view) for a read.
    [[nodiscard]] view load() const noexcept {
        const std::uint64_t w = word_.load(std::memory_order_acquire);
        const slot& s = slots_[w & 1U];
        view v{w,
               {{s.interval.load(std::memory_order_relaxed), s.capacity.load(std::memory_order_relaxed)},
                {s.origin_ns.load(std::memory_order_relaxed), s.shift.load(std::memory_order_relaxed)},
                s.epoch.load(std::memory_order_relaxed), s.params_since.load(std::memory_order_relaxed)}};
        std::atomic_thread_fence(std::memory_order_acquire);  // the slot reads happen before the re-check
        return v;
    }

    [[nodiscard]] bool unchanged(const view& v) const noexcept {
        return word_.load(std::memory_order_relaxed) == v.word;
    }

    /// `now` in v's ticks, or nothing when the origin must move first.
    [[nodiscard]] static std::optional<detail::gcra::ticks> ticks_at(const view& v, std::int64_t now) noexcept {
        const detail::gcra::ticks t = v.cfg.scale.to_ticks(now);
        if (t >= detail::gcra::rebase_threshold) return std::nullopt;
        return t;
    }

    /// The one admission decision: n permits at `now`, usable by `deadline`
    /// (none: whenever). Grants with one CAS; refuses without writing.
    grant take(std::int64_t n, time_point now, std::optional<time_point> deadline) {
        const std::int64_t now_at = detail::ns_since_epoch(now);
        const std::int64_t deadline_at = deadline ? detail::ns_since_epoch(*deadline) : std::numeric_limits<std::int64_t>::max();
        for (;;) {
            view v = load();
            const std::optional<detail::gcra::ticks> now_t = ticks_at(v, now_at);
            if (!now_t) {
                rebase(now_at);
                continue;
            }
            const detail::gcra::ticks deadline_t =
                deadline ? v.cfg.scale.to_ticks(deadline_at) : std::numeric_limits<detail::gcra::ticks>::max();
            const detail::gcra::decision d = detail::gcra::decide(v.cfg.params, v.tat(), *now_t, n, deadline_t);
            if (d.outcome != detail::gcra::verdict::granted) {
                if (!unchanged(v)) continue;
                return {d.outcome, now, v.cfg.params.capacity, {}};
            }
            if (word_.compare_exchange_weak(v.word, pack(d.tat, v.generation()), std::memory_order_acq_rel,
                                            std::memory_order_relaxed)) {
                const time_point ready = d.ready_at == *now_t ? now : detail::time_point_from_ns<time_point>(v.cfg.scale.to_ns(d.ready_at));
                return {detail::gcra::verdict::granted, ready, v.cfg.params.capacity,
                        record_type{d.tat, v.cfg.epoch, v.cfg.scale.to_ns(d.tat)}};
            }
        }
    }

    /// Sleeps until a granted request is usable; false when it was refused.
    bool wait_for(const grant& g, time_point now) {
        if (g.outcome != detail::gcra::verdict::granted) return false;
        if (g.ready_at > now) ratelimit::sleep_until(clock_, g.ready_at);
        return true;
    }

    /// Applies `next(params, tat, now) -> tat` with a CAS loop. The clock is
    /// read after the state, so `now` is never older than the grants that made
    /// it (a stale now would cap a refund at a full bucket of the past).
    template <class Next>
    void update(Next next) {
        for (;;) {
            view v = load();
            const std::int64_t now_at = detail::ns_since_epoch(clock_.now());
            const std::optional<detail::gcra::ticks> now_t = ticks_at(v, now_at);
            if (!now_t) {
                rebase(now_at);
                continue;
            }
            const detail::gcra::ticks tat = next(v.cfg.params, v.tat(), *now_t);
            if (tat == v.tat()) {
                if (unchanged(v)) return;
                continue;
            }
            if (word_.compare_exchange_weak(v.word, pack(tat, v.generation()), std::memory_order_acq_rel,
                                            std::memory_order_relaxed)) {
                return;
            }
        }
    }

    /// Evaluates `f(params, tat, now, config, now_ns)` on a consistent
    /// snapshot. The clock is read after the state, so `now` is never older
    /// than the grants that made it (a stale now shows debt nobody took).
    template <class F>
    auto read(F f) {
        return read_at(std::nullopt, std::move(f));
    }

    /// read(f) as of `now`, a time the caller read (none: read after the state).
    template <class F>
    auto read_at(std::optional<time_point> now, F f) {
        for (;;) {
            const view v = load();
            const std::int64_t now_at = detail::ns_since_epoch(now ? *now : clock_.now());
            const std::optional<detail::gcra::ticks> now_t = ticks_at(v, now_at);
            if (!now_t) {
                rebase(now_at);
                continue;
            }
            auto result = f(v.cfg.params, v.tat(), *now_t, v.cfg, now_at);
            if (unchanged(v)) return result;
        }
    }

    /// Cancel rule for reservations (see detail::gcra::cancel). A reservation
    /// made before the rate or capacity last changed gets nothing back: the
    /// change converted the state with its debt inside, and a faster refill
    /// may have repaid it already (giving it back again would over-admit).
    static void give_back(void* owner, std::int64_t n, time_point ready_at, const record_type& record) noexcept {
        auto& self = *static_cast<token_bucket*>(owner);
        const std::int64_t ready_ns = detail::ns_since_epoch(ready_at);
        for (;;) {
            view v = self.load();
            const time_point now = self.clock_.now();  // after the state: never older than its grants
            if (now > ready_at || record[1] < v.cfg.params_since) return;
            const std::int64_t now_at = detail::ns_since_epoch(now);
            const detail::gcra::ticks now_t = v.cfg.scale.to_ticks(now_at);
            // Same configuration: the end tick as recorded; only the origin moved: its nanosecond.
            const detail::gcra::ticks end = v.cfg.epoch == record[1] ? record[0] : v.cfg.scale.to_ticks(record[2]);
            const detail::gcra::ticks ready_t = std::max(now_t, v.cfg.scale.to_ticks(ready_ns));
            const detail::gcra::ticks tat = detail::gcra::cancel(v.cfg.params, v.tat(), now_t, n, end, ready_t);
            if (tat == v.tat()) {
                if (self.unchanged(v)) return;
                continue;
            }
            if (self.word_.compare_exchange_weak(v.word, pack(tat, v.generation()), std::memory_order_acq_rel,
                                                 std::memory_order_relaxed)) {
                return;
            }
        }
    }

    /// Moves the tick origin forward to `now_at` (a time some caller read,
    /// past the rebase threshold of the current origin), keeping the state.
    /// Rebasing to the caller's time, not a fresh clock read, is what lets the
    /// caller's loop end when the clock jumps back meanwhile.
    void rebase(std::int64_t now_at) {
        detail::writer_guard guard(writer_);
        view v = load();
        if (ticks_at(v, now_at)) return;  // another thread moved it already
        install(v, rate_, v.cfg.params.capacity, now_at, /*new_params=*/false);
    }

    /// Installs a new rate or capacity, converting the state so the permit
    /// count is kept (see detail::gcra::rescale).
    void reconfigure(std::optional<rate> new_rate, std::optional<std::int64_t> new_capacity) {
        detail::writer_guard guard(writer_);
        const view v = load();
        install(v, new_rate.value_or(rate_), new_capacity.value_or(v.cfg.params.capacity), std::nullopt, true);
    }

    /// Installs configuration (r, capacity) with the tick origin at `origin_at`
    /// (none: at now), converting the state from `v`'s. Requires writer_.
    void install(view v, rate r, std::int64_t capacity, std::optional<std::int64_t> origin_at, bool new_params) {
        // The origin never moves back (that would refill a stretch a second time).
        const std::int64_t first_now = origin_at.value_or(detail::ns_since_epoch(clock_.now()));
        const std::int64_t origin = std::max(first_now, v.cfg.scale.origin_ns);
        const std::int64_t epoch = v.cfg.epoch + 1;
        config next = make_config(r, capacity, origin, epoch);
        next.params_since = new_params ? epoch : v.cfg.params_since;
        rate_ = r;
        const unsigned generation = (v.generation() + 1U) & 3U;
        // Readers still holding the previous generation may read this slot;
        // the fence makes them see the word move on and retry.
        std::atomic_thread_fence(std::memory_order_release);
        store(slots_[generation & 1U], next);
        const int tick_shift = next.scale.shift - v.cfg.scale.shift;
        for (;;) {
            // The state converts at a time read after it was loaded: a grant
            // made between a stale clock read and the load would otherwise
            // count as made earlier, and a faster rate would repay it twice.
            const std::int64_t now_at = origin_at ? std::max(*origin_at, origin)
                                                  : std::max(detail::ns_since_epoch(clock_.now()), origin);
            const detail::gcra::ticks now_prev = v.cfg.scale.to_ticks(now_at);
            const detail::gcra::ticks now_next = next.scale.to_ticks(now_at);
            const detail::gcra::ticks tat = detail::gcra::rescale(v.cfg.params, v.tat(), now_prev, next.params, now_next, tick_shift);
            if (word_.compare_exchange_weak(v.word, pack(tat, generation), std::memory_order_acq_rel,
                                            std::memory_order_acquire)) {
                return;
            }
        }
    }

    [[no_unique_address]] Clock clock_;
    std::atomic<std::uint64_t> word_{0};  // (theoretical arrival time << 2) | generation
    std::array<slot, 2> slots_{};         // the configuration of generation g is slots_[g & 1]
    rate rate_;                           // guarded by writer_
    mutable std::atomic_flag writer_ = ATOMIC_FLAG_INIT;
};

}  // namespace ratelimit
