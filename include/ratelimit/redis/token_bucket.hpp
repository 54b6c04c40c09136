#pragma once
// ratelimit::redis::token_bucket: the GCRA token bucket with its state in Redis.

#include <chrono>
#include <cstdint>
#include <limits>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

#include "../clock.hpp"
#include "../detail/gcra.hpp"
#include "../detail/text.hpp"
#include "../rate.hpp"
#include "../token_bucket.hpp"
#include "connection.hpp"
#include "options.hpp"
#include "remote.hpp"

namespace ratelimit::redis {
namespace detail::lua {

/// The largest tick count the script's doubles hold exactly, and the limits
/// derived from it as in detail/gcra.hpp: the state stays below 2^52, a
/// bucket's tolerance below 2^49, and the origin moves at 2^51.
inline constexpr std::int64_t gcra_max_tat = (std::int64_t{1} << 52) - 1;
inline constexpr std::int64_t gcra_max_tolerance = std::int64_t{1} << 49;

/// detail/gcra.hpp in Lua, function for function (numbers are doubles that
/// stay below 2^53, so integer arithmetic is exact; divisions are floored
/// and then corrected to be exact).
inline const std::string gcra_math = std::string(prelude) + R"lua(
local MAX_TAT = 4503599627370495

local function decide(interval, capacity, tat, now, n, deadline)
  if n > capacity then return NEVER, tat, now end
  local base = math.max(tat, now)
  local cost = n * interval
  if base > MAX_TAT - cost then return OUT_OF_RANGE, tat, now end
  local new_tat = base + cost
  local tolerance = interval * capacity
  local ready_at = now
  if new_tat - now > tolerance then ready_at = new_tat - tolerance end
  if ready_at > math.max(deadline, now) then return TOO_LATE, tat, ready_at end
  return GRANTED, new_tat, ready_at
end

local function available(interval, capacity, tat, now)
  return floor_div(interval * capacity - (math.max(tat, now) - now), interval)
end

local function refund(interval, capacity, tat, now, n)
  if tat <= now or n <= 0 or tat - now > interval * capacity then return tat end
  return math.max(tat - math.min(n, capacity) * interval, now)
end

local function cancel(interval, capacity, tat, now, n, reserved_end, ready_at)
  if now > ready_at or tat <= now then return tat end
  local reserved_after = math.max(0, tat - reserved_end)
  local own = math.min(n, capacity) * interval
  if own <= reserved_after then return tat end
  return math.max(tat - (own - reserved_after), now)
end
)lua";

/// The token bucket script. KEYS[1]: a hash {o = origin (server µs), s = tick
/// shift, t = tat in ticks from o}. ARGV: op ("take", "peek", "refund",
/// "cancel"), interval ticks, capacity, shift, n, wait_ns, and for "cancel"
/// the reservation's {end tick, origin, ready tick}. Returns {verdict,
/// delay_ns, available, end tick, origin, ready tick}; the key expires when
/// the bucket would be full again.
inline constexpr std::string_view token_bucket_body = R"lua(
local op = ARGV[1]
local interval, capacity, shift = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local n, wait_ns = tonumber(ARGV[5]), tonumber(ARGV[6])
local clock = redis.call('TIME')
local now_us = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local stored = redis.call('HMGET', KEYS[1], 'o', 's', 't')
local origin, stored_shift, tat = tonumber(stored[1]), tonumber(stored[2]), tonumber(stored[3])
local fresh = origin == nil or stored_shift == nil or tat == nil
if fresh then
  origin, stored_shift, tat = now_us, shift, 0
end
local same_ticks = stored_shift == shift
-- Another client counting in other ticks: keep the time tat stands for (rounded later).
if not same_ticks then
  tat = math.ceil(tat * 2 ^ (shift - stored_shift))
end
local function ticks_from_ns(ns)
  if ns <= 0 then return 0 end
  if shift >= 0 then return math.min(ns * 2 ^ shift, MAX_TAT) end
  return math.floor(ns / 2 ^ (-shift))
end
local function ns_from_ticks(t)
  if t <= 0 then return 0 end
  if shift >= 0 then return math.ceil(t / 2 ^ shift) end
  return math.min(t * 2 ^ (-shift), 9000000000000000000)
end
local now = ticks_from_ns((now_us - origin) * 1000)
local function save(new_tat)
  if new_tat <= now then
    redis.call('DEL', KEYS[1])
    return
  end
  redis.call('HSET', KEYS[1], 'o', string.format('%.0f', origin), 's', shift, 't', string.format('%.0f', new_tat))
  redis.call('PEXPIRE', KEYS[1], math.ceil(ns_from_ticks(new_tat - now) / 1000000) + 1)
end
if op == 'cancel' then
  -- A reservation counts from the origin it was made under; when the origin
  -- or the tick moved since, the bucket was full meanwhile (or rescaled by
  -- another client): nothing is owed back.
  local back = tat
  if not fresh and same_ticks and origin == tonumber(ARGV[8]) then
    back = cancel(interval, capacity, tat, now, n, tonumber(ARGV[7]), tonumber(ARGV[9]))
    if back ~= tat then save(back) end
  end
  return {GRANTED, 0, available(interval, capacity, back, now), 0, 0, 0}
end
-- Past 2^51 ticks the origin moves to now (tat moves at most one tick later).
if now > 2251799813685248 or tat <= now then
  if tat <= now then tat = 0 else tat = tat - now end
  origin, now = now_us, 0
end
if op == 'refund' then
  local back = refund(interval, capacity, tat, now, n)
  if back ~= tat then save(back) end
  return {GRANTED, 0, available(interval, capacity, back, now), 0, 0, 0}
end
local deadline = now + ticks_from_ns(wait_ns)
local verdict, new_tat, ready_at = decide(interval, capacity, tat, now, n, deadline)
if verdict == GRANTED and op == 'take' then save(new_tat) end
if verdict ~= GRANTED then new_tat = tat end
return {verdict, ns_from_ticks(ready_at - now), available(interval, capacity, new_tat, now), new_tat, origin, ready_at}
)lua";

/// The whole script as sent to Redis.
inline const script& token_bucket_script() {
    static const script s(std::string(gcra_math) + std::string(token_bucket_body));
    return s;
}

}  // namespace detail::lua

/// A token bucket of `capacity` permits, initially full, refilled at rate `r`,
/// whose state lives in Redis under one key, so every process and machine
/// using the same key shares one bucket. The math is detail/gcra.hpp's, run
/// as a Lua script on the server's clock (TIME).
///
/// Guarantee: across all clients, in any interval of length T at most
/// `capacity + r·T` permits are granted (the interval rounded up to a whole
/// tick, 2^-shift ns with shift chosen as in-process but with the state below
/// 2^52 ticks), counting permits taken ahead at the time they may be used.
/// Blocking callers reserve and then sleep on `Clock`: one round trip per call,
/// no polling. `reserve(n)` hands out the same reservation as in-process;
/// its cancel() is judged by the script on the server's clock.
///
/// Thread-safe; one EVALSHA round trip per call (none for n == 0 or n above
/// capacity). When Redis does not answer, the options' policy answers
/// within connect_timeout + command_timeout (see options.hpp);
/// local_fallback asks an in-process token_bucket at fallback_share of the
/// rate and of the capacity (at least 1), empty when the outage begins
/// after Redis has answered, and the permits it grants are taken from the
/// shared bucket when Redis answers again (remote.hpp). Across an outage,
/// P processes at a share s with P·s <= 1 therefore keep the same bound,
/// capacity + r·T in any interval of length T (the exceptions, an outage
/// from a process's start and one Redis never comes back from, are in
/// remote.hpp).
///
/// Edge cases: as the in-process token_bucket. Clients sharing a key should
/// use the same rate and capacity; when they do not, each call applies its
/// own, and the state keeps the time at which the bucket is full. The state's
/// origin moves forward whenever the bucket is full, and after 2^51 ticks
/// of continuous debt (39 hours at the finest tick), so the script's doubles
/// stay exact. capacity · interval must fit 2^49 ticks (std::invalid_argument
/// otherwise).
template <clock Clock = std::chrono::steady_clock>
class token_bucket : public detail::script_limiter<token_bucket<Clock>, Clock, ratelimit::token_bucket<Clock>> {
    using base = detail::script_limiter<token_bucket<Clock>, Clock, ratelimit::token_bucket<Clock>>;
    friend base;

public:
    /// The bucket named `key` on `c`: `capacity` permits (> 0) refilled at `r`.
    token_bucket(connection& c, std::string key, rate r, std::int64_t capacity, options o = {}, Clock clock = {})
        : base(name, c, key, "tb", o, std::move(clock), capacity, fallback_rate(r, o.fallback_share),
               detail::fallback_limit(capacity, o.fallback_share)),
          rate_(r),
          params_(make_params(r, capacity)) {}

    /// Gives back n unused permits, never beyond a full bucket (nothing while
    /// reservations run ahead). Ignored during an outage.
    void refund(std::int64_t n) { this->refund_permits(n); }

    /// Takes n permits now, possibly ahead of time (one round trip); the
    /// reservation says when they may be used, and its cancel() gives back by
    /// x/time/rate's rule, judged on the server's clock (one more round trip;
    /// nothing during an outage). Throws capacity_exceeded when n >
    /// capacity(). During an outage: fail_open gives a reservation ready now,
    /// local_fallback the local bucket's, fail_closed throws unavailable.
    reservation<Clock> reserve(std::int64_t n = 1) {
        ratelimit::detail::check_count(name, n);
        if (n > capacity()) throw capacity_exceeded(name, n, capacity());
        Clock& clock = this->shared().clock();
        const typename base::time_point now = clock.now();
        if (n == 0) return reservation<Clock>(clock, now, 0);
        auto take = [this](std::int64_t k, std::int64_t wait_ns) { return run("take", k, wait_ns); };
        detail::answer a = this->shared().pay_debt(take);  // never too_late: the bucket takes ahead
        if (a.reached) a = take(n, std::numeric_limits<std::int64_t>::max());
        if (!a.reached) {
            if (this->shared().opts().policy == on_error::local_fallback) {
                reservation<Clock> local = this->shared().outage_fallback().reserve(n);
                this->shared().owe(n);  // owed even if cancelled later: the conservative side
                return local;
            }
            this->shared().on_outage_blocking(n);  // fail_open returns; fail_closed throws
            return reservation<Clock>(clock, now, n);
        }
        this->shared().note_reached();
        if (a.outcome != detail::verdict::granted) {
            throw std::overflow_error(std::string(name) + ": n = " + std::to_string(n) +
                                      " would be ready beyond the representable time range");
        }
        const auto ready = ratelimit::detail::deadline_after(
            now, ratelimit::detail::duration_from_ns<typename base::duration>(a.delay_ns));
        return reservation<Clock>(clock, ready, n, {this, &give_back, a.record});
    }

    [[nodiscard]] std::int64_t capacity() const noexcept { return params_.capacity; }
    [[nodiscard]] rate current_rate() const noexcept { return rate_; }

private:
    static constexpr const char* name = "ratelimit::redis::token_bucket";

    struct script_params {
        std::int64_t interval;
        std::int64_t capacity;
        int shift;
    };

    static script_params make_params(rate r, std::int64_t capacity) {
        ratelimit::detail::check_positive(name, "capacity", capacity);
        const long double interval_ns = r.exact_interval().count();
        const std::optional<int> shift =
            capacity > detail::lua::gcra_max_tolerance
                ? std::nullopt
                : ratelimit::detail::gcra::finest_fitting_shift(interval_ns, capacity, detail::lua::gcra_max_tolerance);
        if (!shift) {
            throw std::invalid_argument(std::string(name) + ": capacity " + std::to_string(capacity) +
                                        " at one permit every " +
                                        ratelimit::detail::number_text(static_cast<double>(interval_ns)) +
                                        "ns spans more time than the state can hold");
        }
        const std::int64_t interval = std::min(ratelimit::detail::gcra::interval_ticks(interval_ns, *shift),
                                               detail::lua::gcra_max_tolerance);
        return {interval, capacity, *shift};
    }

    static rate fallback_rate(rate r, double share) {
        return rate::per_second(std::max(r.per_second_value() * share, std::numeric_limits<double>::min()));
    }

    using record_type = std::array<std::int64_t, 3>;

    /// The one script call ("take", "peek", "refund", or "cancel" with the
    /// reservation's record).
    detail::answer run(std::string_view op, std::int64_t n, std::int64_t wait_ns, const record_type& record = {}) {
        const std::string_view keys[] = {this->key()};
        const detail::number_args<8> numbers{params_.interval, params_.capacity, params_.shift, n, wait_ns,
                                             record[0], record[1], record[2]};
        std::array<std::string_view, 9> args{};
        args[0] = op;
        std::copy(numbers.view().begin(), numbers.view().end(), args.begin() + 1);
        return detail::call(this->shared().conn(), detail::lua::token_bucket_script(), keys, args);
    }

    /// A reservation's cancel(): the script applies x/time/rate's rule on the
    /// server's clock; an outage gives nothing back (the permits stay taken).
    static void give_back(void* owner, std::int64_t n, typename base::time_point, const record_type& record) noexcept {
        try {
            (void)static_cast<token_bucket*>(owner)->run("cancel", n, 0, record);
        } catch (...) {  // allocation failure: keep the permits taken, the conservative side
        }
    }

    rate rate_;
    script_params params_;
};

}  // namespace ratelimit::redis
