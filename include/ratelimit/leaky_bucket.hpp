#pragma once
// ratelimit::leaky_bucket: smooth pacing with a bounded queue, lock-free.

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
#include "detail/leaky.hpp"
#include "detail/text.hpp"
#include "limiter.hpp"
#include "rate.hpp"

namespace ratelimit {

/// A pacer that lets permits out one every r.interval(), holding at most
/// `max_queue` permits waiting behind the one being served. Every permit gets
/// its own slot on a schedule, one interval after the previous slot; a
/// request for n permits takes the next n slots and is granted at the last.
/// Idle time is not banked: after a long pause the next single permit goes
/// at once and the one after waits a full interval.
///
/// Guarantee: slots are never closer than r.interval(), so single-permit
/// grants are at least an interval apart and a grant of n permits comes at
/// least n intervals after the previous grant; counting each permit at its
/// slot, any interval [s, s + T] holds at most 1 + T/interval permits. (The
/// interval is rounded up to a tick of 1/16 ns: the spacing is exact for
/// whole-nanosecond intervals and never faster than `r` otherwise.)
/// A request is admitted only if at most `max_queue` permits would then be
/// waiting (slots after now, other than the one being served): with single
/// permits, at most max_queue callers ever have a grant in the future. A
/// request for n permits counts as n callers (it waits behind its own first
/// n - 1 slots), and no admitted caller, whatever its n, waits longer than
/// max_queue·interval.
/// Waiting is first come, first served by construction: `acquire` takes its
/// slots and then sleeps; there is no retry loop and no thundering herd.
///
/// Lock-free: the whole state is one 64-bit atomic word (the schedule's end,
/// GCRA's theoretical arrival time, see detail/leaky.hpp). The queue size is
/// computed from that word, not kept in a separate counter, so admission and
/// counting are one compare-and-swap and cannot race: no interleaving of
/// callers can admit more than max_queue waiters. A grant is one CAS, a
/// refusal two loads and no write; 96 bytes (x86-64, empty clock), no
/// allocation, no lock held while sleeping. Once every 4.5 years of uptime
/// a writers-only spin lock moves the tick origin forward.
///
/// Edge cases: n == 0 succeeds at once; n < 0 throws std::invalid_argument;
/// n > capacity() = max_queue + 1 never blocks (`try_*` return false,
/// `acquire` and `reserve` throw capacity_exceeded). When the queue is full,
/// `acquire` and `reserve` throw queue_full and `try_*` return false, at
/// once. max_queue == 0 allows only immediate grants of one permit. A clock
/// that stands still grants one permit and then nothing; one that jumps back
/// before construction counts as construction time. (max_queue + 1)·interval
/// above 2^55 ns (about 417 days) coarsens the tick.
template <clock Clock = std::chrono::steady_clock>
class leaky_bucket {
public:
    using clock_type = Clock;
    using duration = typename Clock::duration;
    using time_point = typename Clock::time_point;

    /// An idle pacer letting out one permit every r.interval(), with at most
    /// `max_queue` (>= 0) permits waiting.
    leaky_bucket(rate r, std::int64_t max_queue, Clock c = {})
        : clock_(std::move(c)), rate_(r), max_queue_(checked_max_queue(max_queue)), shape_(make_shape(r, max_queue)) {
        slots_[0].origin_ns.store(detail::ns_since_epoch(clock_.now()), std::memory_order_relaxed);
        word_.store(pack(0, 0), std::memory_order_release);
    }
    leaky_bucket(const leaky_bucket&) = delete;
    leaky_bucket& operator=(const leaky_bucket&) = delete;
    ~leaky_bucket() = default;

    /// Takes n permits if they can be granted now; never blocks. Only a
    /// single permit can be granted at once (n > 1 waits for its later slots:
    /// use try_acquire_for or acquire).
    bool try_acquire(std::int64_t n = 1) {
        detail::check_count(name, n);
        if (n == 0) return true;
        const time_point now = clock_.now();
        return take(n, now, now).outcome == detail::leaky::verdict::granted;
    }

    /// Takes n permits if they can be had within `d`, sleeping until then;
    /// returns false at once when the earliest grant is later or the queue is full.
    bool try_acquire_for(std::int64_t n, duration d) {
        detail::check_count(name, n);
        if (n == 0) return true;
        const time_point now = clock_.now();
        return wait_for(take(n, now, detail::deadline_after(now, d)), now);
    }

    /// Takes n permits if they can be had by `t`, sleeping until then; returns
    /// false at once when the earliest grant is later or the queue is full.
    /// A past `t` acts as now.
    bool try_acquire_until(std::int64_t n, time_point t) {
        detail::check_count(name, n);
        if (n == 0) return true;
        const time_point now = clock_.now();
        return wait_for(take(n, now, t), now);
    }

    /// Takes n permits, sleeping until their slot; returns the time slept.
    /// Throws queue_full when max_queue() permits are already waiting and
    /// capacity_exceeded when n > capacity(), both at once.
    duration acquire(std::int64_t n = 1) {
        reservation<Clock> r = reserve(n);
        const duration waited = r.delay();
        r.wait();
        return waited;
    }

    /// Takes the next n slots now; the reservation says when they come. A
    /// reservation counts toward the queue until its ready_at(), whether or
    /// not anyone waits on it. Throws queue_full and capacity_exceeded as acquire.
    /// cancel() gives the n slots back while no later reservation follows it
    /// and now() <= ready_at(), else nothing (see detail::leaky::cancel: the
    /// schedule has no holes, so slots before a later grant cannot be reused).
    reservation<Clock> reserve(std::int64_t n = 1) {
        detail::check_count(name, n);
        const time_point now = clock_.now();
        if (n == 0) return reservation<Clock>(clock_, now, 0);
        const grant g = take(n, now, std::nullopt);
        switch (g.outcome) {
            case detail::leaky::verdict::granted:
                break;
            case detail::leaky::verdict::never:
                throw capacity_exceeded(name, n, capacity());
            case detail::leaky::verdict::queue_full:
                throw queue_full(std::string(name) + ": n = " + std::to_string(n) + " would wait behind a full queue (" +
                                 std::to_string(max_queue_) + " permits may wait)");
            case detail::leaky::verdict::too_late:
            case detail::leaky::verdict::out_of_range:
                throw std::overflow_error(std::string(name) + ": n = " + std::to_string(n) +
                                          " would be ready beyond the representable time range");
        }
        return reservation<Clock>(clock_, g.ready_at, n, {this, &give_back, g.record});
    }

    /// Permits waiting now: with single permits, the callers whose grant is
    /// still in the future (a request for n counts n). At most max_queue().
    [[nodiscard]] std::int64_t queue_size() {
        return read([this](detail::gcra::ticks tat, detail::gcra::ticks now, std::int64_t, const detail::gcra::time_scale&) {
            return detail::leaky::queue_size(shape_.params, tat, now);
        });
    }

    /// How long a caller asking now for n permits would wait for their slots
    /// (it is admitted only if the queue has room); duration::max() when n > capacity().
    [[nodiscard]] duration time_until_available(std::int64_t n = 1) {
        detail::check_count(name, n);
        if (n == 0) return duration::zero();
        if (n > capacity()) return duration::max();
        return read([&](detail::gcra::ticks tat, detail::gcra::ticks now, std::int64_t now_at,
                        const detail::gcra::time_scale& scale) {
            const detail::gcra::ticks ready = detail::leaky::ready_at(shape_.params, tat, now, n);
            if (ready == now) return duration::zero();
            return detail::duration_from_ns<duration>(std::max<std::int64_t>(0, scale.to_ns(ready) - now_at));
        });
    }

    /// The most permits that may wait behind the one being served.
    [[nodiscard]] std::int64_t max_queue() const noexcept { return max_queue_; }

    /// The most permits one call can take: max_queue() + 1, the whole bucket.
    [[nodiscard]] std::int64_t capacity() const noexcept { return shape_.params.capacity; }

    /// The pacing rate.
    [[nodiscard]] rate current_rate() const noexcept { return rate_; }

    /// True when the schedule has drained (nothing scheduled after now): the
    /// bucket then acts as a fresh one, so keyed may drop it without loss.
    [[nodiscard]] bool is_at_rest() {
        return read([](detail::gcra::ticks tat, detail::gcra::ticks now, std::int64_t, const detail::gcra::time_scale&) {
            return tat <= now;
        });
    }

    /// True when no slot is scheduled after now (the same as is_at_rest: a
    /// pacer's only obligation is its schedule).
    [[nodiscard]] bool is_idle() { return is_at_rest(); }

    /// The clock the bucket reads.
    [[nodiscard]] const Clock& get_clock() const noexcept { return clock_; }

private:
    static constexpr const char* name = "ratelimit::leaky_bucket";
    using record_type = typename detail::canceller<time_point>::record_type;

    /// The fixed configuration: the math's parameters and the tick size.
    struct shape {
        detail::gcra::params params;
        int shift = 0;  // a tick is 2^-shift ns
    };

    /// A tick origin as atomics, so readers never race with a rebase.
    struct origin_slot {
        std::atomic<std::int64_t> origin_ns{0};
        std::atomic<std::int64_t> epoch{0};
    };

    /// The state word and the origin it was made under.
    struct view {
        std::uint64_t word;
        detail::gcra::time_scale scale;
        std::int64_t epoch;
        [[nodiscard]] detail::gcra::ticks tat() const noexcept { return static_cast<detail::gcra::ticks>(word >> 2); }
        [[nodiscard]] unsigned generation() const noexcept { return static_cast<unsigned>(word & 3U); }
    };

    /// What take() decided, in the caller's time.
    struct grant {
        detail::leaky::verdict outcome;
        time_point ready_at;
        record_type record;  // {end tick, origin epoch, end ns}: for cancel
    };

    static std::int64_t checked_max_queue(std::int64_t max_queue) {
        if (max_queue < 0 || max_queue == std::numeric_limits<std::int64_t>::max()) {
            throw std::invalid_argument(std::string(name) + ": max_queue must be >= 0 and < 2^63 - 1, got " +
                                        std::to_string(max_queue));
        }
        return max_queue;
    }

    /// The finest tick at which a bucket of max_queue + 1 intervals fits the state.
    static shape make_shape(rate r, std::int64_t max_queue) {
        const long double interval_ns = r.exact_interval().count();
        const std::optional<int> shift = detail::gcra::finest_fitting_shift(interval_ns, max_queue + 1);
        if (!shift) {
            throw std::invalid_argument(std::string(name) + ": max_queue " + std::to_string(max_queue) +
                                        " at one permit every " + detail::number_text(static_cast<double>(interval_ns)) +
                                        "ns spans more time than the state can hold");
        }
        return {detail::leaky::params(detail::gcra::interval_ticks(interval_ns, *shift), max_queue), *shift};
    }

    static constexpr std::uint64_t pack(detail::gcra::ticks tat, unsigned generation) noexcept {
        return (static_cast<std::uint64_t>(tat) << 2) | (generation & 3U);
    }


    /// The state word and its origin. A caller that acts on the view
    /// validates it: a CAS on view.word, or unchanged(view) for a read.
    [[nodiscard]] view load() const noexcept {
        const std::uint64_t w = word_.load(std::memory_order_acquire);
        const origin_slot& s = slots_[w & 1U];
        view v{w, {s.origin_ns.load(std::memory_order_relaxed), shape_.shift}, s.epoch.load(std::memory_order_relaxed)};
        std::atomic_thread_fence(std::memory_order_acquire);  // the slot reads happen before the re-check
        return v;
    }

    [[nodiscard]] bool unchanged(const view& v) const noexcept { return word_.load(std::memory_order_relaxed) == v.word; }

    /// `now` in v's ticks, or nothing when the origin must move first.
    [[nodiscard]] static std::optional<detail::gcra::ticks> ticks_at(const view& v, std::int64_t now) noexcept {
        const detail::gcra::ticks t = v.scale.to_ticks(now);
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
                deadline ? v.scale.to_ticks(deadline_at) : std::numeric_limits<detail::gcra::ticks>::max();
            const detail::leaky::decision d = detail::leaky::decide(shape_.params, v.tat(), *now_t, n, deadline_t);
            if (d.outcome != detail::leaky::verdict::granted) {
                if (!unchanged(v)) continue;
                return {d.outcome, now, {}};
            }
            if (word_.compare_exchange_weak(v.word, pack(d.tat, v.generation()), std::memory_order_acq_rel,
                                            std::memory_order_relaxed)) {
                const time_point ready = d.ready_at == *now_t ? now : detail::time_point_from_ns<time_point>(v.scale.to_ns(d.ready_at));
                return {detail::leaky::verdict::granted, ready, record_type{d.tat, v.epoch, v.scale.to_ns(d.tat)}};
            }
        }
    }

    /// Sleeps until a granted request is usable; false when it was refused.
    bool wait_for(const grant& g, time_point now) {
        if (g.outcome != detail::leaky::verdict::granted) return false;
        if (g.ready_at > now) ratelimit::sleep_until(clock_, g.ready_at);
        return true;
    }

    /// Evaluates `f(tat, now, now_ns, scale)` on a consistent snapshot. The
    /// clock is read after the state, so `now` is never older than the
    /// admissions that made it (a stale now would show more waiting than ever was).
    template <class F>
    auto read(F f) {
        for (;;) {
            const view v = load();
            const std::int64_t now_at = detail::ns_since_epoch(clock_.now());
            const std::optional<detail::gcra::ticks> now_t = ticks_at(v, now_at);
            if (!now_t) {
                rebase(now_at);
                continue;
            }
            auto result = f(v.tat(), *now_t, now_at, v.scale);
            if (unchanged(v)) return result;
        }
    }

    /// Cancel rule for reservations (see detail::leaky::cancel).
    static void give_back(void* owner, std::int64_t n, time_point ready_at, const record_type& record) noexcept {
        auto& self = *static_cast<leaky_bucket*>(owner);
        const time_point now = self.clock_.now();
        if (now > ready_at) return;
        const std::int64_t now_at = detail::ns_since_epoch(now);
        const std::int64_t ready_ns = detail::ns_since_epoch(ready_at);
        for (;;) {
            view v = self.load();
            const detail::gcra::ticks now_t = v.scale.to_ticks(now_at);
            const detail::gcra::ticks end = v.epoch == record[1] ? record[0] : v.scale.to_ticks(record[2]);
            const detail::gcra::ticks ready_t = std::max(now_t, v.scale.to_ticks(ready_ns));
            const detail::gcra::ticks tat = detail::leaky::cancel(self.shape_.params, v.tat(), now_t, n, end, ready_t);
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

    /// Moves the tick origin forward to `now_at` (a time some caller read, past
    /// the rebase threshold), keeping the schedule's distance from it. Rebasing
    /// to the caller's time, not a fresh clock read, is what lets the caller's
    /// loop end when the clock jumps back meanwhile.
    void rebase(std::int64_t now_at) {
        detail::writer_guard guard(rebasing_);
        view v = load();
        if (ticks_at(v, now_at)) return;  // another thread just did it
        const unsigned generation = (v.generation() + 1U) & 3U;
        // Readers still holding the previous generation may read this slot;
        // the fence makes them see the word move on and retry.
        std::atomic_thread_fence(std::memory_order_release);
        origin_slot& next = slots_[generation & 1U];
        next.origin_ns.store(now_at, std::memory_order_relaxed);
        next.epoch.store(v.epoch + 1, std::memory_order_relaxed);
        for (;;) {
            const detail::gcra::ticks now_prev = v.scale.to_ticks(now_at);
            const detail::gcra::ticks tat = detail::gcra::rescale(shape_.params, v.tat(), now_prev, shape_.params, 0, 0);
            if (word_.compare_exchange_weak(v.word, pack(tat, generation), std::memory_order_acq_rel,
                                            std::memory_order_acquire)) {
                return;
            }
        }
    }

    [[no_unique_address]] Clock clock_;
    rate rate_;
    std::int64_t max_queue_;
    shape shape_;
    std::atomic<std::uint64_t> word_{0};  // (schedule end << 2) | generation
    std::array<origin_slot, 2> slots_{};  // the origin of generation g is slots_[g & 1]
    mutable std::atomic_flag rebasing_ = ATOMIC_FLAG_INIT;
};

}  // namespace ratelimit
