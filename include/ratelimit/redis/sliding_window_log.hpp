#pragma once
// ratelimit::redis::sliding_window_log: the exact sliding window, the log a
// Redis sorted set.

#include <chrono>
#include <cstdint>
#include <limits>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

#include "../clock.hpp"
#include "../detail/chrono.hpp"
#include "../limiter.hpp"
#include "../sliding_window_log.hpp"
#include "connection.hpp"
#include "options.hpp"
#include "remote.hpp"
#include "window_script.hpp"

namespace ratelimit::redis {
namespace detail::lua {

/// detail/sliding_window_log.hpp's decision in Lua, function for function
/// (the log's search is the sorted set's). Times are µs; a never-used slot
/// is -2^53; a permit whose time + window passes 2^53 never leaves (the C++
/// has INT64_MAX there).
inline const std::string window_log_math = std::string(prelude) + R"lua(
local EXACT = 9007199254740992
local UNUSED = -EXACT

-- returns verdict, start
local function decide(limit, window, nth_oldest, newest, now, n, deadline)
  if n > limit then return NEVER, now end
  -- when the n-th oldest leaves the window; past EXACT it never does
  local leaves = now
  if nth_oldest ~= UNUSED then
    if nth_oldest > EXACT - window then return OUT_OF_RANGE, now end
    leaves = nth_oldest + window
  end
  local start = math.max(now, leaves, newest)
  if start > math.max(deadline, now) then return TOO_LATE, start end
  return GRANTED, start
end

local function available(expired_count, newest, now)
  if newest > now then return 0 end
  return expired_count
end
)lua";

/// The log script. KEYS[1]: a sorted set, one member per permit granted in
/// the last window ("<µs>:<i>", unique), scored by its grant time in server
/// µs. ARGV: op ("take", "peek"), limit, window µs, n. Permits are granted
/// only at the server's now: when they do not fit, the script returns
/// too_late with the delay until they would (the n-th oldest needed entry
/// leaves the window), and the client sleeps that long and asks again.
/// Returns {verdict, delay_ns, available}; the key expires a window after
/// its newest grant.
inline constexpr std::string_view sliding_window_log_body = R"lua(
local op = ARGV[1]
local limit, window, n = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
-- numbers above 1e14 lose digits in Lua's default number-to-string
local function text(x) return string.format('%.0f', x) end
-- a permit granted at t counts until t + window: those at or before now - window have left
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', text(now - window))
local live = redis.call('ZCARD', KEYS[1])
local newest = UNUSED
if live > 0 then newest = tonumber(redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')[2]) end
-- the k-th oldest of the last `limit` grants, never-used slots first
local function nth_oldest(k)
  local rank = live + k - limit - 1
  if rank < 0 then return UNUSED end
  return tonumber(redis.call('ZRANGE', KEYS[1], rank, rank, 'WITHSCORES')[2])
end
if n == 0 then return {GRANTED, 0, available(math.max(0, limit - live), newest, now)} end
-- granted only now: the deadline given to decide is now
local verdict, start = decide(limit, window, nth_oldest(n), newest, now, n, now)
if verdict == GRANTED and op == 'take' then
  local stamp = text(now)
  -- members stamped now are never removed while it is now: number on from them
  local first = redis.call('ZCOUNT', KEYS[1], stamp, stamp)
  -- ZADD in batches of 1000 members (unpack's stack); i is small and prints exactly
  for from = 0, n - 1, 1000 do
    local args, k = {}, 0
    for i = first + from, first + math.min(from + 1000, n) - 1 do
      args[k + 1], args[k + 2], k = stamp, stamp .. ':' .. i, k + 2
    end
    redis.call('ZADD', KEYS[1], unpack(args))
  end
  redis.call('PEXPIRE', KEYS[1], text(math.ceil(window / 1000) + 1))
  live, newest = live + n, now
end
return {verdict, (start - now) * 1000, available(math.max(0, limit - live), newest, now)}
)lua";

/// The whole script as sent to Redis.
inline const script& sliding_window_log_script() {
    static const script s(std::string(window_log_math) + std::string(sliding_window_log_body));
    return s;
}

}  // namespace detail::lua

/// An exact sliding window whose log lives in Redis under one key, so every
/// process and machine using the key shares it: a sorted set of the permits
/// granted in the last `window`, each scored by its grant time on the Redis
/// server's clock (TIME, µs). n permits are granted at the server's now when
/// the set, its entries older than `window` removed, has room for n more; a
/// permit granted at t counts until t + window (half-open).
///
/// Guarantee: across all clients, in any half-open interval of length `window`
/// of the server's clock, at most `limit` permits are granted. A grant is
/// stamped when the script runs, before the client hears of it, so the
/// permits a client uses also keep the bound on its own clock (up to the
/// drift between the clocks over one window). Exact: a request is refused
/// only when granting it now would break the bound. Not first come, first
/// served: a caller that must wait sleeps until the oldest entry it needs
/// leaves the window (the script says when) and asks again, and may lose
/// the permit to another caller then; the deadline still bounds every wait.
///
/// Thread-safe; one EVALSHA round trip per attempt (none for n == 0 or n
/// above limit). Redis memory: one sorted-set member per permit of the last
/// window (about 120 bytes each), the key expiring a window after its newest
/// grant. A grant of n adds n members: O(n log limit) on the server, about
/// 1.4 µs each (measured: n = 2^15 takes 45 ms, the server busy meanwhile). When
/// Redis does not answer, the options' policy answers within connect_timeout
/// + command_timeout; local_fallback asks an in-process
/// ratelimit::sliding_window_log at max(1, limit·fallback_share), full when the
/// outage begins after Redis has answered; its grants are logged in Redis
/// before anything else once it answers again and has room (remote.hpp),
/// stamped when Redis takes them: with P processes at a share s and
/// P·s <= 1, a window during an outage may see up to `limit` more, which
/// the windows after it give up.
///
/// Edge cases: n == 0 succeeds at once, n < 0 throws std::invalid_argument,
/// n > limit() never blocks (`try_*` return false, `acquire` throws
/// capacity_exceeded). limit is at most max_limit = 2^15 = 32768, so that
/// even a grant of the whole limit ends well within the default
/// command_timeout of 100 ms (a script the client stopped waiting for still
/// runs, and would take permits the client counts as an outage); use a
/// sliding_window_counter beyond. window in (0, 2^50 µs], rounded up to a
/// whole µs. A server clock that goes back grants nothing before the newest
/// logged grant. Clients sharing a key must use the same window.
template <clock Clock = std::chrono::steady_clock>
class sliding_window_log : public detail::script_limiter<sliding_window_log<Clock>, Clock, ratelimit::sliding_window_log<Clock>> {
    using base = detail::script_limiter<sliding_window_log<Clock>, Clock, ratelimit::sliding_window_log<Clock>>;
    friend base;

public:
    using typename base::duration;

    /// The largest limit: 2^15 sorted-set members per key (see above).
    static constexpr std::int64_t max_limit = std::int64_t{1} << 15;

    /// The log named `key` on `c`: at most `limit` (in [1, max_limit]) permits
    /// in any `window` (in (0, 2^50 µs]).
    sliding_window_log(connection& c, std::string key, std::int64_t limit, duration window, options o = {},
                       Clock clock = {})
        : base(name, c, key, "swl", o, std::move(clock), limit,
               // checked before anything computes with it
               detail::fallback_limit(checked_limit(limit), o.fallback_share, max_limit), window),
          window_(window),
          window_us_(detail::window_microseconds(name, window)) {}

    /// The most permits granted in any window.
    [[nodiscard]] std::int64_t limit() const noexcept { return this->shared().capacity(); }
    /// The window's length, as given (the script rounds it up to whole µs).
    [[nodiscard]] duration window() const noexcept { return window_; }

private:
    static constexpr const char* name = "ratelimit::redis::sliding_window_log";

    static std::int64_t checked_limit(std::int64_t limit) {
        ratelimit::detail::check_positive(name, "limit", limit);
        if (limit > max_limit) {
            throw std::invalid_argument(std::string(name) + ": limit must be <= " + std::to_string(max_limit) +
                                        " (one sorted-set member per permit; use a sliding_window_counter beyond), got " +
                                        std::to_string(limit));
        }
        return limit;
    }

    /// The one script call ("take" or "peek"; the log cannot take ahead, so no wait).
    detail::answer run(std::string_view op, std::int64_t n, std::int64_t /*wait_ns*/) {
        const std::string_view keys[] = {this->key()};
        const detail::number_args<3> numbers{limit(), window_us_, n};
        std::array<std::string_view, 4> args{};
        args[0] = op;
        std::copy(numbers.view().begin(), numbers.view().end(), args.begin() + 1);
        return detail::call(this->shared().conn(), detail::lua::sliding_window_log_script(), keys, args);
    }

    duration window_;
    std::int64_t window_us_;
};

}  // namespace ratelimit::redis
