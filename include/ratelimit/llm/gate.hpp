#pragma once
// ratelimit::llm::gate: admits LLM requests against requests per minute AND
// tokens per minute AND concurrent requests, and learns from the responses.

#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <limits>
#include <mutex>
#include <optional>
#include <ranges>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>

#include "../clock.hpp"
#include "../concurrency_limiter.hpp"
#include "../detail/chrono.hpp"
#include "../detail/text.hpp"
#include "../headers.hpp"
#include "../limiter.hpp"
#include "../rate.hpp"
#include "../token_bucket.hpp"
#include "estimate.hpp"

namespace ratelimit::detail {

/// `a + b` for token counts, saturating at the int64 range instead of overflowing.
[[nodiscard]] constexpr std::int64_t saturating_token_sum(std::int64_t a, std::int64_t b) noexcept {
    std::int64_t sum = 0;
    if (__builtin_add_overflow(a, b, &sum)) {
        return b > 0 ? std::numeric_limits<std::int64_t>::max() : std::numeric_limits<std::int64_t>::min();
    }
    return sum;
}

}  // namespace ratelimit::detail

namespace ratelimit::llm {

/// The quota a gate keeps within. A per-minute limit of 0 is unknown: the
/// gate learns it from the provider's rate-limit headers (and until then
/// only the concurrency bound and 429 pauses apply).
struct gate_config {
    std::int64_t requests_per_minute = 0;
    std::int64_t tokens_per_minute = 0;
    std::int64_t max_concurrent = 0;  ///< 0: unbounded
    /// Separate input and output token limits (Anthropic-style); 0: none.
    std::int64_t input_tokens_per_minute = 0;
    std::int64_t output_tokens_per_minute = 0;
    /// Providers enforce a per-minute limit over short sub-windows (600 RPM
    /// as 10 per second): each bucket holds limit · burst_window / 1 min.
    std::chrono::nanoseconds burst_window = std::chrono::seconds{1};
    /// The share of every limit the gate uses, in (0, 1]: a margin for
    /// network jitter and for other clients of the same key.
    double headroom = 0.98;
    /// Follow the response headers: learn unknown limits, never believe more
    /// remains than the server says, pause on retry-after.
    bool follow_headers = true;
    /// acquire() gives up (throws gate_timeout) rather than wait longer. A
    /// cost that can never fit throws capacity_exceeded at once instead.
    std::chrono::nanoseconds max_wait = std::chrono::nanoseconds::max();
    /// The pause after a 429 that names no retry time.
    std::chrono::nanoseconds default_retry_after = std::chrono::seconds{1};
    /// The longest pause any 429 may cause, > 0: a retry-after (or reset)
    /// above it is cut to it, so a hostile or broken `retry-after: 9000000000`
    /// pauses the gate 10 min, not 285 years. No provider asks for more.
    std::chrono::nanoseconds max_pause = std::chrono::minutes{10};
};

/// What a request may cost: its prompt and the most it may generate.
/// INT64_MAX max_output_tokens ("no cap") is a cost above any token limit.
struct request_cost {
    std::int64_t input_tokens = 0;
    std::int64_t max_output_tokens = 0;
    /// input + max output, saturating at INT64_MAX instead of overflowing.
    [[nodiscard]] constexpr std::int64_t total() const noexcept {
        return detail::saturating_token_sum(input_tokens, max_output_tokens);
    }
};

/// What a request did cost, from the response's `usage`.
struct usage {
    std::int64_t input_tokens = 0;
    std::int64_t output_tokens = 0;
    /// input + output, saturating at INT64_MAX instead of overflowing.
    [[nodiscard]] constexpr std::int64_t total() const noexcept {
        return detail::saturating_token_sum(input_tokens, output_tokens);
    }
};

/// Counters since construction and the limits in force.
struct stats {
    std::int64_t admitted = 0;         ///< tickets handed out
    std::int64_t completed = 0;        ///< tickets completed with a 2xx
    std::int64_t throttled = 0;        ///< completions with 429
    std::int64_t failed = 0;           ///< completions with another status
    std::int64_t abandoned = 0;        ///< tickets dropped without complete()
    std::int64_t in_flight = 0;        ///< admitted, not yet completed or dropped
    std::int64_t tokens_reserved = 0;  ///< estimates charged at admission
    std::int64_t tokens_used = 0;      ///< actual usage reported
    std::int64_t tokens_refunded = 0;  ///< estimates given back after usage
    std::int64_t tokens_overrun = 0;   ///< usage beyond the estimate as reported (charged late, capped)
    std::int64_t requests_per_minute = 0;  ///< limit in force (configured or learned), 0: unknown
    std::int64_t tokens_per_minute = 0;    ///< limit in force (configured or learned), 0: unknown
    std::chrono::nanoseconds total_wait{0};  ///< summed over admissions: ready_at − request time
    std::chrono::nanoseconds paused_for{0};  ///< the current 429 pause still to run, 0 when none
    std::int64_t waiting = 0;  ///< callers blocked now: for a slot, in line for the quota, or in ticket::wait
};

/// acquire() would wait longer than gate_config::max_wait.
struct gate_timeout : std::runtime_error {
    using std::runtime_error::runtime_error;
};

/// The gate was closed (gate::close) before the request could go.
struct gate_closed : std::runtime_error {
    using std::runtime_error::runtime_error;
};

/// A gate in front of an LLM API: each request is charged one request and
/// its tokens (input + max output) against token buckets sized to the
/// provider's per-minute limits and sub-window (burst_window), plus one
/// concurrency slot, all or nothing. `ticket::complete` then settles the
/// estimate with the actual usage (refunds the unused part, charges an
/// overrun), syncs with the response's rate-limit headers, and on a 429
/// pauses every admission until the retry time and empties the bucket that
/// was exceeded.
///
/// Guarantee: over any interval T, admissions stay within each bucket's
/// bound (capacity + rate·T, at headroom · limit), except that one request
/// larger than a bucket passes when that bucket is full and leaves it in
/// debt; a request above a whole per-minute limit never passes
/// (capacity_exceeded). Waiters are served first come, first served: a
/// concurrency slot in FIFO order, then a place in line for the quota, where
/// only the first is served, when its whole cost fits; so a large request is
/// never starved by later small ones. A request is charged when it goes,
/// never ahead, so tokens given back by completed requests and room found in
/// the headers serve the line at once. (`reserve`, for asynchronous callers,
/// charges ahead of time instead; refunds cannot pass such a reservation.)
///
/// Thread-safe; one short mutex around the buckets, never held while
/// sleeping. The gate must outlive its tickets.
///
/// Edge cases: a cost whose total overflows int64 counts as INT64_MAX
/// tokens; a cost above a whole per-minute limit throws capacity_exceeded
/// from `acquire` and `reserve` and gives nothing from `try_acquire*`, at
/// once, before waiting for a slot or the line (also with max_wait). A 429
/// pauses at most max_pause; usage beyond the estimate is charged at most
/// one minute's limit of each dimension (a misreported usage of 10^9 tokens
/// on a 60,000 TPM gate costs about a minute, not days); a usage with a negative
/// count is ignored as unknown; a learned limit too large for a bucket
/// (above 2^59 per burst_window) is ignored, a configured one rejected. A
/// deadline of time_point::max() (or too far to convert to a condition
/// variable's clock) means no deadline, on every clock. An exception while
/// waiting in line leaves the line as it was.
///
/// Closing: `close()` (for a program that is stopping) ends every wait at
/// once, for a slot, in line or in ticket::wait, on every clock: `acquire`,
/// `reserve` and `ticket::wait` throw gate_closed, `try_acquire*` give
/// nothing; and so do all later calls. Tickets already handed out stay
/// valid (complete() settles them).
template <clock Clock = std::chrono::steady_clock>
class gate {
public:
    using clock_type = Clock;
    using duration = typename Clock::duration;
    using time_point = typename Clock::time_point;
    class ticket;

    explicit gate(gate_config config, Clock c = {}) : config_(checked(config)), clock_(std::move(c)) {
        if (config_.max_concurrent > 0) {
            // One slot more than configured, held by the gate itself until
            // close(): released then, it wakes the first caller waiting for a
            // slot, who passes it on as it leaves, and so on down the line.
            const std::int64_t spare = config_.max_concurrent < std::numeric_limits<std::int64_t>::max() ? 1 : 0;
            slots_.emplace(config_.max_concurrent + spare, clock_);
            spare_slot_ = slots_->try_lease(spare);
        }
        std::lock_guard lock(mutex_);
        requests_.configured = config_.requests_per_minute > 0;
        tokens_.configured = config_.tokens_per_minute > 0;
        input_tokens_.configured = config_.input_tokens_per_minute > 0;
        output_tokens_.configured = config_.output_tokens_per_minute > 0;
        set_limit(requests_, config_.requests_per_minute);
        set_limit(tokens_, config_.tokens_per_minute);
        set_limit(input_tokens_, config_.input_tokens_per_minute);
        set_limit(output_tokens_, config_.output_tokens_per_minute);
    }
    gate(const gate&) = delete;
    gate& operator=(const gate&) = delete;
    ~gate() = default;

    /// Waits for a slot and the quota, first come first served; returns the
    /// ticket once the request may be sent. Throws capacity_exceeded at once
    /// when the cost can never fit, gate_timeout when the wait would exceed max_wait.
    ticket acquire(request_cost cost) {
        check(cost);
        {
            std::lock_guard lock(mutex_);
            throw_if_closed();
            throw_if_never_fits(cost);
        }
        if (config_.max_wait != std::chrono::nanoseconds::max()) {
            std::optional<ticket> t = try_acquire_until(cost, detail::deadline_after(clock_.now(), std::chrono::duration_cast<duration>(config_.max_wait)));
            if (!t) {
                std::lock_guard lock(mutex_);
                throw_if_closed();
                throw_if_never_fits(cost);  // a header lowered a limit below the cost while it waited
                throw gate_timeout("ratelimit::llm::gate: the request would wait longer than max_wait (" +
                                   std::to_string(config_.max_wait.count()) + "ns)");
            }
            return std::move(*t);
        }
        std::optional<slot_type> slot = wait_for_slot();
        std::optional<ticket> t = admit(cost, std::nullopt, std::move(slot));
        if (!t) throw_if_never_fits_locked(cost);  // closed, or a header lowered a limit below the cost meanwhile
        t->wait();
        return std::move(*t);
    }

    /// The ticket if the request may be sent now; never blocks, never jumps the queue.
    std::optional<ticket> try_acquire(request_cost cost) { return try_acquire_until(cost, clock_.now()); }

    /// The ticket if the request may be sent by `t`, waiting in line until
    /// then; nothing at once when the quota cannot allow it by `t` or the
    /// cost can never fit. `t` = time_point::max() waits as acquire does.
    std::optional<ticket> try_acquire_until(request_cost cost, time_point t) {
        check(cost);
        std::optional<slot_type> slot;
        if (slots_) slot = slots_->try_lease(1);
        if (slots_ && !slot) {
            {
                std::lock_guard lock(mutex_);
                if (closed_ || never_fits(cost)) return std::nullopt;  // before waiting for a slot (admit checks again)
            }
            if (t == time_point::max()) {
                slot.emplace(slots_->lease(1));  // no deadline: never a timed wait to the end of time
            } else {
                slot = slots_->try_lease_until(1, t);
                if (!slot) return std::nullopt;
            }
        }
        std::optional<ticket> admitted = admit(cost, t, std::move(slot));
        if (admitted) {
            try {
                admitted->wait();
            } catch (const gate_closed&) {
                return std::nullopt;  // the ticket is dropped: its slot goes to the next waiter
            }
        }
        return admitted;
    }

    /// Takes a slot (waiting for one, first come first served) and reserves
    /// the quota at once; the ticket's ready_at() says when to send. For
    /// asynchronous code: await ready_at() on a timer instead of sleeping.
    /// Throws capacity_exceeded when the cost can never fit.
    ticket reserve(request_cost cost) {
        check(cost);
        {
            std::lock_guard lock(mutex_);
            throw_if_closed();
            throw_if_never_fits(cost);
        }
        std::optional<slot_type> slot = wait_for_slot();
        std::lock_guard lock(mutex_);
        throw_if_closed();
        throw_if_never_fits(cost);  // a header may have lowered a limit meanwhile
        const time_point now = clock_.now();
        ticket t = charge(cost, now, std::move(slot));
        stats_.total_wait = detail::saturating_add(stats_.total_wait, std::chrono::nanoseconds{detail::saturating_ns(t.ready_at() - now)});
        return t;
    }

    /// Closes the gate for good: every caller waiting in acquire, reserve,
    /// try_acquire_until or ticket::wait returns at once (acquire, reserve
    /// and wait throw gate_closed; try_* give nothing), and so does every
    /// later call. Tickets already handed out stay valid. Idempotent;
    /// thread-safe; O(waiters).
    void close() {
        std::optional<slot_type> spare;
        {
            std::lock_guard lock(mutex_);
            if (closed_) return;
            closed_ = true;
            for (waiter* w = line_head_; w != nullptr; w = w->next) w->wake.notify_one();
            ready_wake_.notify_all();
            spare = std::move(spare_slot_);
        }
        // `spare` is released here, outside the lock: the first slot waiter wakes.
    }

    /// True once close() was called.
    [[nodiscard]] bool closed() const {
        std::lock_guard lock(mutex_);
        return closed_;
    }

    /// Counters and the limits in force.
    [[nodiscard]] stats snapshot() const {
        std::lock_guard lock(mutex_);
        stats s = stats_;
        s.waiting = line_length_ + ticket_waiters_ + (slots_ ? slots_->waiting() : 0);
        s.requests_per_minute = requests_.per_minute;
        s.tokens_per_minute = tokens_.per_minute;
        const time_point now = clock_.now();
        s.paused_for = pause_until_ > now ? std::chrono::duration_cast<std::chrono::nanoseconds>(pause_until_ - now)
                                          : std::chrono::nanoseconds::zero();
        return s;
    }

    /// The configuration as given.
    [[nodiscard]] const gate_config& config() const noexcept { return config_; }

    /// When the current 429 pause ends (in the past when none is in force).
    [[nodiscard]] time_point paused_until() const {
        std::lock_guard lock(mutex_);
        return pause_until_;
    }

private:
    static constexpr const char* name = "ratelimit::llm::gate";
    using slot_type = typename concurrency_limiter<Clock>::permit;

    /// One quota dimension: its per-minute limit (0: unknown) and the bucket enforcing it.
    struct dimension {
        explicit dimension(const char* name_of_quota) : label(name_of_quota) {}
        const char* label;
        std::int64_t per_minute = 0;
        bool configured = false;  // set by the caller: headers never raise it
        std::optional<token_bucket<Clock>> bucket;
    };

    static gate_config checked(const gate_config& c) {
        const auto non_negative = [](const char* field, std::int64_t value) {
            if (value < 0) {
                throw std::invalid_argument(std::string(name) + ": " + field + " must be >= 0, got " +
                                            std::to_string(value));
            }
        };
        non_negative("requests_per_minute", c.requests_per_minute);
        non_negative("tokens_per_minute", c.tokens_per_minute);
        non_negative("max_concurrent", c.max_concurrent);
        non_negative("input_tokens_per_minute", c.input_tokens_per_minute);
        non_negative("output_tokens_per_minute", c.output_tokens_per_minute);
        if (c.burst_window <= std::chrono::nanoseconds::zero() || c.burst_window > std::chrono::minutes{1}) {
            throw std::invalid_argument(std::string(name) + ": burst_window must lie in (0, 1 min], got " +
                                        std::to_string(c.burst_window.count()) + "ns");
        }
        if (!(c.headroom > 0 && c.headroom <= 1)) {
            throw std::invalid_argument(std::string(name) + ": headroom must lie in (0, 1], got " +
                                        detail::number_text(c.headroom));
        }
        const auto holdable = [&c](const char* field, std::int64_t value) {
            if (bucket_capacity(c, value) > max_bucket_capacity) {
                throw std::invalid_argument(std::string(name) + ": " + field + " = " + std::to_string(value) +
                                            " is too large: headroom · limit per burst_window must be <= 2^59");
            }
        };
        holdable("requests_per_minute", c.requests_per_minute);
        holdable("tokens_per_minute", c.tokens_per_minute);
        holdable("input_tokens_per_minute", c.input_tokens_per_minute);
        holdable("output_tokens_per_minute", c.output_tokens_per_minute);
        if (c.max_wait < std::chrono::nanoseconds::zero()) {
            throw std::invalid_argument(std::string(name) + ": max_wait must be >= 0, got " +
                                        std::to_string(c.max_wait.count()) + "ns");
        }
        if (c.default_retry_after < std::chrono::nanoseconds::zero()) {
            throw std::invalid_argument(std::string(name) + ": default_retry_after must be >= 0, got " +
                                        std::to_string(c.default_retry_after.count()) + "ns");
        }
        if (c.max_pause <= std::chrono::nanoseconds::zero()) {
            throw std::invalid_argument(std::string(name) + ": max_pause must be > 0, got " +
                                        std::to_string(c.max_pause.count()) + "ns");
        }
        return c;
    }

    /// Requires mutex_.
    void throw_if_closed() const {
        if (closed_) throw gate_closed(std::string(name) + ": closed");
    }

    /// A slot, waiting for one first come first served (none when the gate
    /// has no concurrency bound); throws gate_closed when closed meanwhile.
    std::optional<slot_type> wait_for_slot() {
        std::optional<slot_type> slot;
        if (!slots_) return slot;
        slot.emplace(slots_->lease(1));
        std::lock_guard lock(mutex_);
        throw_if_closed();  // `slot` goes back as this unwinds: the next waiter wakes
        return slot;
    }

    /// Sleeps until `ready` and the end of any 429 pause; throws gate_closed
    /// when the gate is closed before then. For ticket::wait.
    void wait_ready(time_point ready) {
        std::unique_lock lock(mutex_);
        ++ticket_waiters_;
        struct leave {
            std::int64_t& count;
            ~leave() { --count; }
        } counted{ticket_waiters_};
        for (;;) {
            const time_point until = std::max(ready, pause_until_);
            if (until <= clock_.now()) return;
            throw_if_closed();
            wait_until(lock, ready_wake_, until);
        }
    }

    static void check(const request_cost& cost) {
        if (cost.input_tokens < 0) {
            throw std::invalid_argument(std::string(name) + ": input_tokens must be >= 0, got " +
                                        std::to_string(cost.input_tokens));
        }
        if (cost.max_output_tokens < 0) {
            throw std::invalid_argument(std::string(name) + ": max_output_tokens must be >= 0, got " +
                                        std::to_string(cost.max_output_tokens));
        }
    }


    /// The largest bucket a token_bucket holds (its documented 2^59).
    static constexpr long double max_bucket_capacity = 0x1p59L;

    /// The bucket for `per_minute` under `c`: headroom · limit per burst_window, at least 1.
    [[nodiscard]] static long double bucket_capacity(const gate_config& c, std::int64_t per_minute) noexcept {
        const long double allowed = static_cast<long double>(per_minute) * c.headroom;
        const long double window_share = static_cast<long double>(c.burst_window.count()) / 60e9L;
        return std::max(1.0L, std::floor(allowed * window_share));
    }

    /// Sizes `d`'s bucket for `per_minute` (0: no bucket; its bucket_capacity
    /// must be <= max_bucket_capacity). Requires mutex_ (or construction).
    void set_limit(dimension& d, std::int64_t per_minute) {
        d.per_minute = per_minute;
        if (per_minute == 0) {
            d.bucket.reset();
            return;
        }
        const long double allowed = static_cast<long double>(per_minute) * config_.headroom;
        const rate r = rate::per_minute(static_cast<double>(allowed));
        const auto capacity = static_cast<std::int64_t>(bucket_capacity(config_, per_minute));
        if (d.bucket) {
            d.bucket->set_rate(r);
            d.bucket->set_capacity(capacity);
        } else {
            d.bucket.emplace(r, capacity, clock_);
        }
    }

    template <class F>
    void for_each_token_dimension(const request_cost& cost, F f) {
        f(tokens_, cost.total());
        f(input_tokens_, cost.input_tokens);
        f(output_tokens_, cost.max_output_tokens);
    }

    /// A cost above a whole per-minute limit can never be granted. Requires mutex_.
    [[nodiscard]] bool never_fits(const request_cost& cost) {
        bool never = false;
        for_each_token_dimension(cost, [&never](const dimension& d, std::int64_t n) {
            if (d.per_minute > 0 && n > d.per_minute) never = true;
        });
        return never;
    }

    void throw_if_never_fits(const request_cost& cost) {
        for_each_token_dimension(cost, [](const dimension& d, std::int64_t n) {
            if (d.per_minute > 0 && n > d.per_minute) {
                throw capacity_exceeded(std::string(name) + " (" + d.label + " per minute)", n, d.per_minute);
            }
        });
    }

    /// When `n` more could be charged to `d`: when it holds n, or, for n above
    /// its capacity, when it is full. Requires mutex_.
    [[nodiscard]] static time_point ready_for(dimension& d, std::int64_t n, time_point now) {
        if (!d.bucket || n == 0) return now;
        const std::int64_t first = std::min(n, d.bucket->capacity());
        const duration wait = d.bucket->time_until_available(first);
        return time_point{detail::saturating_add(now.time_since_epoch(), wait)};
    }

    /// The earliest time `cost` could go: every bucket and the pause. Requires mutex_.
    [[nodiscard]] time_point earliest(const request_cost& cost, time_point now) {
        time_point ready = std::max(now, pause_until_);
        ready = std::max(ready, ready_for(requests_, 1, now));
        for_each_token_dimension(cost, [&](dimension& d, std::int64_t n) { ready = std::max(ready, ready_for(d, n, now)); });
        return ready;
    }

    /// Charges n to `d` now; above capacity, in capacity-sized reservations
    /// of which only the first decides when the request goes (the rest is
    /// debt). Returns when the first is usable. Requires mutex_.
    static time_point charge_dimension(dimension& d, std::int64_t n, time_point now) {
        if (!d.bucket || n == 0) return now;
        const std::int64_t capacity = d.bucket->capacity();
        time_point ready = now;
        bool first = true;
        while (n > 0) {
            const std::int64_t part = std::min(n, capacity);
            reservation<Clock> r = d.bucket->reserve(part);
            if (first) ready = r.ready_at();
            first = false;
            n -= part;
        }
        return ready;
    }

    /// Charges every dimension for `cost` and makes the ticket. Requires mutex_.
    ticket charge(const request_cost& cost, time_point now, std::optional<slot_type> slot) {
        time_point ready = std::max(now, pause_until_);
        ready = std::max(ready, charge_dimension(requests_, 1, now));
        for_each_token_dimension(cost, [&](dimension& d, std::int64_t n) { ready = std::max(ready, charge_dimension(d, n, now)); });
        ++stats_.admitted;
        ++stats_.in_flight;
        add_to(stats_.tokens_reserved, cost.total());
        return ticket(this, cost, ready, std::move(slot));
    }

    /// A counter += n, saturating (costs without a token limit may be INT64_MAX).
    static void add_to(std::int64_t& counter, std::int64_t n) noexcept {
        counter = detail::saturating_token_sum(counter, n);
    }

    /// A caller waiting in line for the quota.
    struct waiter {
        request_cost cost;
        std::condition_variable wake;
        waiter* next = nullptr;
    };

    /// A waiter's place in line, for as long as it lives: joins at
    /// construction and leaves at destruction unless served first, so an
    /// exception while waiting never leaves a dead stack node in the line.
    class place_in_line {
    public:
        place_in_line(gate& owner, std::unique_lock<std::mutex>& lock, const request_cost& cost)
            : owner_(owner), lock_(lock), self_{cost, {}, nullptr} {
            owner_.enqueue(self_);
        }
        place_in_line(const place_in_line&) = delete;
        place_in_line& operator=(const place_in_line&) = delete;
        ~place_in_line() {
            if (!linked_) return;
            if (!lock_.owns_lock()) lock_.lock();  // thrown while asleep, unlocked
            owner_.remove(self_);
        }
        [[nodiscard]] waiter& self() noexcept { return self_; }
        [[nodiscard]] bool first() const noexcept { return owner_.line_head_ == &self_; }
        /// Leaves the line from its head, to be served. Requires mutex_.
        void serve() noexcept {
            owner_.dequeue_head();
            linked_ = false;
        }

    private:
        gate& owner_;
        std::unique_lock<std::mutex>& lock_;
        waiter self_;
        bool linked_ = true;
    };

    /// Waits in line (first come, first served) until `cost` fits every
    /// bucket, then charges it; nothing when it cannot fit by `deadline`
    /// (none: no deadline) or can never fit. Charging only when the request
    /// goes (never ahead of time) is what lets refunds and header updates
    /// help the requests still waiting.
    std::optional<ticket> admit(const request_cost& cost, std::optional<time_point> deadline,
                                std::optional<slot_type> slot) {
        std::unique_lock lock(mutex_);
        if (closed_ || never_fits(cost)) return std::nullopt;
        const time_point requested = clock_.now();
        if (line_head_ == nullptr) {
            const time_point ready = earliest(cost, requested);
            if (ready <= requested) return charge_now(cost, requested, requested, std::move(slot));
            if (deadline && ready > *deadline) return std::nullopt;  // never sleep in vain
        } else if (deadline && *deadline <= requested) {
            return std::nullopt;  // others wait ahead: no grant now
        }
        place_in_line place(*this, lock, cost);
        for (;;) {
            if (closed_ || never_fits(cost)) return std::nullopt;
            const time_point now = clock_.now();
            if (place.first()) {
                const time_point ready = earliest(cost, now);
                if (ready <= now) {
                    place.serve();
                    return charge_now(cost, requested, now, std::move(slot));
                }
                if (deadline && ready > *deadline) return std::nullopt;
                wait_until(lock, place.self().wake, ready);
            } else {
                if (deadline && now >= *deadline) return std::nullopt;
                wait_until(lock, place.self().wake, deadline.value_or(time_point::max()));
            }
        }
    }

    /// Sleeps until `t` or a wake-up (or spuriously: callers look at the line
    /// again); the lock is released meanwhile. time_point::max() is no
    /// deadline: a plain wait, on every clock. A clock that sleeps itself
    /// (manual_clock) is slept on. steady_clock and system_clock deadlines go
    /// to the condition variable as they are; any other clock's deadline is
    /// waited for as the time left (libstdc++ would convert it through
    /// steady_clock and overflow), and a time left too long for that is no deadline.
    void wait_until(std::unique_lock<std::mutex>& lock, std::condition_variable& wake, time_point t) {
        if (t == time_point::max()) {
            wake.wait(lock);
        } else if constexpr (requires(Clock& c) { c.sleep_until(t); }) {
            lock.unlock();
            ratelimit::sleep_until(clock_, t);
            lock.lock();
        } else if constexpr (std::is_same_v<Clock, std::chrono::steady_clock> ||
                             std::is_same_v<Clock, std::chrono::system_clock>) {
            wake.wait_until(lock, t);
        } else {
            const std::optional<std::chrono::nanoseconds> left = time_left(clock_.now(), t);
            if (!left) {
                wake.wait(lock);
            } else if (*left > std::chrono::nanoseconds::zero()) {
                wake.wait_for(lock, *left);
            }
        }
    }

    /// `t - now` in nanoseconds, computed without overflow; nothing when it
    /// exceeds 2^62 ns (146 years): too far for steady_clock to add to its now.
    [[nodiscard]] static std::optional<std::chrono::nanoseconds> time_left(time_point now, time_point t) noexcept {
        using wide = std::chrono::duration<long double, std::nano>;
        const long double left = std::chrono::duration_cast<wide>(t.time_since_epoch()).count() -
                                 std::chrono::duration_cast<wide>(now.time_since_epoch()).count();
        if (left >= 0x1p62L) return std::nullopt;
        if (left <= 0) return std::chrono::nanoseconds::zero();
        return std::chrono::nanoseconds{static_cast<std::int64_t>(std::ceil(left))};
    }

    void enqueue(waiter& w) {
        ++line_length_;
        if (line_tail_ == nullptr) {
            line_head_ = line_tail_ = &w;
        } else {
            line_tail_->next = &w;
            line_tail_ = &w;
        }
    }

    void dequeue_head() {
        --line_length_;
        line_head_ = line_head_->next;
        if (line_head_ == nullptr) line_tail_ = nullptr;
        wake_head();
    }

    void remove(waiter& w) {
        if (line_head_ == &w) {
            dequeue_head();
            return;
        }
        for (waiter* p = line_head_; p != nullptr; p = p->next) {
            if (p->next == &w) {
                --line_length_;
                p->next = w.next;
                if (line_tail_ == &w) line_tail_ = p;
                return;
            }
        }
    }

    /// Tells the first in line to look again (the quota may fit now). Requires mutex_.
    void wake_head() {
        if (line_head_ != nullptr) line_head_->wake.notify_one();
    }

    void throw_if_never_fits_locked(const request_cost& cost) {
        std::lock_guard lock(mutex_);
        throw_if_closed();
        throw_if_never_fits(cost);
        throw std::logic_error(std::string(name) + ": admission failed without a deadline");
    }

    /// Charges `cost` at `now` (it fits every bucket) and makes the ticket. Requires mutex_.
    ticket charge_now(const request_cost& cost, time_point requested, time_point now, std::optional<slot_type> slot) {
        ticket t = charge(cost, now, std::move(slot));
        stats_.total_wait = detail::saturating_add(stats_.total_wait, std::chrono::nanoseconds{detail::saturating_ns(now - requested)});
        return t;
    }

    /// Gives back the unused part of `reserved` (never above full), or
    /// charges usage beyond it, at most one minute's limit (`per_minute`):
    /// a wild usage report must not shut the gate for longer. Requires mutex_.
    void settle_dimension(dimension& d, std::int64_t reserved, std::int64_t used, time_point now) {
        if (!d.bucket) return;
        if (used < reserved) {
            d.bucket->refund(reserved - used);
        } else if (used > reserved) {
            (void)charge_dimension(d, std::min(used - reserved, d.per_minute), now);
        }
    }

    /// Believes the server: learns an unknown limit (ignoring one too large
    /// for any bucket), and never keeps more permits than it says remain. Requires mutex_.
    void follow(dimension& d, const std::optional<quota_state>& quota) {
        if (!quota) return;
        if (quota->limit && *quota->limit > 0 && !d.configured && *quota->limit != d.per_minute &&
            bucket_capacity(config_, *quota->limit) <= max_bucket_capacity) {
            set_limit(d, *quota->limit);
        }
        if (quota->remaining && d.bucket) {
            const std::int64_t available = d.bucket->available();  // <= capacity: no overflow below
            const std::int64_t remaining = std::max<std::int64_t>(*quota->remaining, 0);
            if (available > remaining) (void)d.bucket->try_acquire(std::min(available - remaining, d.bucket->capacity()));
        }
    }

    /// Empties `d`'s bucket (after a 429 on it). Requires mutex_.
    static void drain(dimension& d) {
        if (!d.bucket) return;
        const std::int64_t left = d.bucket->available();
        if (left > 0) (void)d.bucket->try_acquire(left);
    }

    /// Was `quota` the one exceeded, by the remaining count it reports?
    static bool exhausted(const std::optional<quota_state>& quota, std::int64_t needed) {
        return quota && quota->remaining && *quota->remaining < std::max<std::int64_t>(needed, 1);
    }

    /// Settles a completed ticket: reconciles usage, follows headers, backs off on 429.
    void settle(const request_cost& cost, int http_status, const quota_snapshot& quota, std::optional<usage> used) {
        std::lock_guard lock(mutex_);
        const time_point now = clock_.now();
        --stats_.in_flight;
        const bool ok = http_status >= 200 && http_status < 300;
        if (ok) {
            ++stats_.completed;
        } else if (http_status == 429) {
            ++stats_.throttled;
        } else {
            ++stats_.failed;
        }
        if (used && (used->input_tokens < 0 || used->output_tokens < 0)) used.reset();  // nonsense: unknown
        if (ok && used) {
            add_to(stats_.tokens_used, used->total());
            if (used->total() < cost.total()) add_to(stats_.tokens_refunded, cost.total() - used->total());
            if (used->total() > cost.total()) add_to(stats_.tokens_overrun, used->total() - cost.total());
            settle_dimension(tokens_, cost.total(), used->total(), now);
            settle_dimension(input_tokens_, cost.input_tokens, used->input_tokens, now);
            settle_dimension(output_tokens_, cost.max_output_tokens, used->output_tokens, now);
        }
        if (config_.follow_headers) {
            follow(requests_, quota.requests);
            follow(tokens_, quota.tokens);
            follow(input_tokens_, quota.input_tokens);
            follow(output_tokens_, quota.output_tokens);
        }
        if (http_status == 429) back_off(cost, quota, now);
        wake_head();
    }

    /// After a 429: pause every admission until the retry time (at most
    /// max_pause) and empty the bucket(s) the server says ran out (all of
    /// them when it does not say).
    void back_off(const request_cost& cost, const quota_snapshot& quota, time_point now) {
        std::chrono::nanoseconds retry = quota.retry_after.value_or(config_.default_retry_after);
        const bool requests_out = exhausted(quota.requests, 1);
        const bool tokens_out = exhausted(quota.tokens, cost.total()) ||
                                exhausted(quota.input_tokens, cost.input_tokens) ||
                                exhausted(quota.output_tokens, cost.max_output_tokens);
        if (!quota.retry_after) {  // no retry time: wait for the exhausted dimension's reset, if given
            if (requests_out && quota.requests->reset_after) retry = std::max(retry, *quota.requests->reset_after);
            if (tokens_out && quota.tokens && quota.tokens->reset_after) retry = std::max(retry, *quota.tokens->reset_after);
        }
        retry = std::clamp(retry, std::chrono::nanoseconds::zero(), config_.max_pause);
        const time_point until{detail::saturating_add(now.time_since_epoch(), std::chrono::duration_cast<duration>(retry))};
        pause_until_ = std::max(pause_until_, until);
        if (requests_out || !tokens_out) drain(requests_);
        if (tokens_out || !requests_out) {
            drain(tokens_);
            drain(input_tokens_);
            drain(output_tokens_);
        }
    }

    void abandon() {
        std::lock_guard lock(mutex_);
        --stats_.in_flight;
        ++stats_.abandoned;
        wake_head();
    }

    gate_config config_;
    [[no_unique_address]] Clock clock_;
    std::optional<concurrency_limiter<Clock>> slots_;
    mutable std::mutex mutex_;
    dimension requests_{"requests"};
    dimension tokens_{"tokens"};
    dimension input_tokens_{"input tokens"};
    dimension output_tokens_{"output tokens"};
    time_point pause_until_{};
    stats stats_;
    waiter* line_head_ = nullptr;  // callers waiting for the quota, first come first served
    waiter* line_tail_ = nullptr;
    std::int64_t line_length_ = 0;
    std::int64_t ticket_waiters_ = 0;       // callers in ticket::wait
    std::condition_variable ready_wake_;    // ticket::wait sleeps on it; close() wakes it
    bool closed_ = false;
    std::optional<slot_type> spare_slot_;   // see the constructor; released by close()

public:
    /// Admission for one request: holds its concurrency slot until complete()
    /// or destruction. Dropped without complete() (an exception, a cancelled
    /// request), it frees the slot and counts the request as sent with its
    /// full estimate. Move-only; must not outlive its gate.
    class [[nodiscard]] ticket {
    public:
        ticket(ticket&& other) noexcept
            : gate_(std::exchange(other.gate_, nullptr)), cost_(other.cost_), ready_at_(other.ready_at_),
              slot_(std::move(other.slot_)) {}
        ticket& operator=(ticket&& other) noexcept {
            if (this != &other) {
                finish_abandoned();
                gate_ = std::exchange(other.gate_, nullptr);
                cost_ = other.cost_;
                ready_at_ = other.ready_at_;
                slot_ = std::move(other.slot_);
            }
            return *this;
        }
        ticket(const ticket&) = delete;
        ticket& operator=(const ticket&) = delete;
        ~ticket() { finish_abandoned(); }

        /// When the request may be sent.
        [[nodiscard]] time_point ready_at() const noexcept { return ready_at_; }
        /// What was reserved for it.
        [[nodiscard]] request_cost cost() const noexcept { return cost_; }
        /// True until complete() (or a move) ends it.
        [[nodiscard]] bool active() const noexcept { return gate_ != nullptr; }

        /// Sleeps until ready_at() and the end of any 429 pause that began
        /// since. Throws gate_closed when the gate is closed before then.
        void wait() {
            if (gate_ == nullptr) return;
            gate_->wait_ready(ready_at_);
        }

        /// Ends the request: `http_status` and the response `headers` (any range
        /// of name/value pairs) and, for a success, the reported `used` tokens.
        template <std::ranges::range Headers>
        void complete(int http_status, const Headers& headers, std::optional<usage> used = std::nullopt) {
            if (gate_ == nullptr) return;
            const quota_snapshot quota = parse_rate_limit_headers(headers);
            finish(http_status, quota, used);
        }

        /// Ends the request when there are no headers to follow.
        void complete(int http_status, std::optional<usage> used = std::nullopt) {
            if (gate_ == nullptr) return;
            finish(http_status, quota_snapshot{}, used);
        }

    private:
        friend class gate;
        ticket(gate* owner, request_cost cost, time_point ready_at, std::optional<slot_type> slot) noexcept
            : gate_(owner), cost_(cost), ready_at_(ready_at), slot_(std::move(slot)) {}

        void finish(int http_status, const quota_snapshot& quota, std::optional<usage> used) {
            gate* owner = std::exchange(gate_, nullptr);
            slot_.reset();  // free the slot first: the request is over
            owner->settle(cost_, http_status, quota, used);
        }

        void finish_abandoned() noexcept {
            if (gate_ == nullptr) return;
            gate* owner = std::exchange(gate_, nullptr);
            slot_.reset();
            owner->abandon();
        }

        gate* gate_ = nullptr;
        request_cost cost_;
        time_point ready_at_;
        std::optional<slot_type> slot_;
    };
};

}  // namespace ratelimit::llm
