#pragma once
// What the Redis window limiters share (fixed_window, sliding_window_counter,
// and for its window checks sliding_window_log): detail/window.hpp in Lua,
// the scripts' time units, and the one call every window script makes.

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>

#include "../detail/chrono.hpp"
#include "../detail/text.hpp"
#include "../detail/window.hpp"
#include "connection.hpp"
#include "remote.hpp"

namespace ratelimit::redis::detail {


/// Every number the window scripts keep stays below 2^52 (their doubles are
/// exact below 2^53; the bit left over covers a sum or a quotient check).
inline constexpr std::int64_t window_state_max = std::int64_t{1} << 52;
/// The longest window: 2^50 µs, about 35.7 years.
inline constexpr std::int64_t window_max_us = std::int64_t{1} << 50;

/// `window` in whole microseconds, rounded up (a shorter window would grant
/// more). Throws std::invalid_argument naming `window` unless 0 < window <= 2^50 µs.
template <class Rep, class Period>
std::int64_t window_microseconds(const char* where, std::chrono::duration<Rep, Period> window) {
    if (window <= std::chrono::duration<Rep, Period>::zero()) {
        throw std::invalid_argument(std::string(where) + ": window must be > 0, got " +
                                    std::to_string(ratelimit::detail::saturating_ns(window)) + "ns");
    }
    const long double us = std::chrono::duration<long double, std::micro>(window).count();
    if (!(us <= static_cast<long double>(window_max_us))) {
        throw std::invalid_argument(std::string(where) + ": window must be <= 2^50 us (about 35 years), got " +
                                    ratelimit::detail::number_text(static_cast<double>(us)) + "us");
    }
    const std::int64_t whole = static_cast<std::int64_t>(us);
    return static_cast<long double>(whole) < us ? whole + 1 : whole;
}

/// What a window script counts in: windows of `ticks` ticks of `tick_us` µs
/// each, on the server's clock (TIME, µs since the Unix epoch), window k
/// covering [k·ticks, (k+1)·ticks) ticks since the epoch.
struct window_ticks {
    std::int64_t ticks;
    std::int64_t tick_us;
};

namespace lua {

/// detail/window.hpp in Lua, function for function. Times are ticks since
/// the Unix epoch; numbers are doubles kept below 2^53 (the scripts keep
/// them below 2^52), so integer arithmetic is exact; divisions are floored
/// and then corrected to be exact. Saturation is at 2^53 instead of INT64_MAX:
/// the overflow rules of detail/window.hpp hold with EXACT = 2^53 in place of
/// INT64_MAX (n <= limit − count, a saturating weighted count, and a window
/// or time past EXACT is out_of_range). The limiters reject what the doubles
/// cannot count exactly (limit or limit · window at 2^52 and above, naming
/// the argument), so the script never sees such a number.
inline const std::string window_math = std::string(prelude) + R"lua(
local EXACT = 9007199254740992

local function index_of(t, window)
  if t <= 0 then return 0 end
  return floor_div(t, window)
end

local function start_of(index, window)
  if index <= 0 then return 0 end
  if index > floor_div(EXACT, window) then return EXACT end
  return index * window
end

local function add_saturating(a, b)
  if a > EXACT - b then return EXACT end
  return a + b
end

-- the last window whose start is below EXACT and which the state can hold
local function last_window(max_window, window)
  return math.min(max_window, floor_div(EXACT, window))
end

local function mul_div_floor(a, b, c)
  return floor_div(a * b, c)
end

local function mul_div_ceil(a, b, c)
  local product = a * b
  local q = floor_div(product, c)
  if q * c < product then q = q + 1 end
  return q
end

-- fixed: state {w = window, c = count}; returns verdict, next w, next c, ready_at
local function fixed_decide(limit, window, max_window, w, c, now, n, deadline)
  if n == 0 then return GRANTED, w, c, now end
  if n > limit then return NEVER, w, c, now end
  local first = math.max(w, index_of(now, window))
  local count = 0
  if w == first then count = c end
  local fits = n <= limit - count
  local ahead = 1
  if fits then ahead = 0 end
  if first > last_window(max_window, window) - ahead then return OUT_OF_RANGE, w, c, now end
  local next_w, next_c = first, count + n
  if not fits then next_w, next_c = first + 1, n end
  local ready_at = math.max(now, next_w * window)
  if ready_at > math.max(deadline, now) then return TOO_LATE, w, c, ready_at end
  return GRANTED, next_w, next_c, ready_at
end

local function fixed_available(limit, window, w, c, now)
  local current = index_of(now, window)
  if w > current then return 0 end
  if w == current then return limit - c end
  return limit
end

local function fixed_refund(limit, window, w, c, now, n)
  if n <= 0 or w ~= index_of(now, window) then return w, c end
  return w, c - math.min(n, c)
end

-- sliding: state {w = window, c = current, p = previous}
local function roll(w, c, p, to)
  if to <= w then return w, c, p end
  if to == w + 1 then return to, 0, c end
  return to, 0, 0
end

-- returns the rolled state (w, c, p), time, offset
local function locate(window, w, c, p, now)
  local current = index_of(now, window)
  if w >= current then
    local start = start_of(w, window)
    local time = math.max(now, start)
    return w, c, p, time, time - start
  end
  local rw, rc, rp = roll(w, c, p, current)
  return rw, rc, rp, now, now - start_of(current, window)
end

local function weighted_count(window, c, p, offset)
  return add_saturating(c, mul_div_ceil(p, window - offset, window))
end

local function earliest_offset(window, previous, room)
  if previous <= room then return 0 end
  return window - mul_div_floor(room, window, previous)
end

-- returns verdict, next w, next c, next p, ready_at
local function sliding_decide(limit, window, max_window, w, c, p, now, n, deadline)
  if n == 0 then return GRANTED, w, c, p, now end
  if n > limit then return NEVER, w, c, p, now end
  local aw, ac, ap, _, offset_now = locate(window, w, c, p, now)
  local ahead, next_c, next_p, offset = 0, ac + n, ap, 0
  local room = limit - ac - n
  local here = window
  if room >= 0 then here = math.max(offset_now, earliest_offset(window, ap, room)) end
  if here < window then
    offset = here
  else
    local there = earliest_offset(window, ac, limit - n)
    if there < window then
      ahead, next_c, next_p, offset = 1, n, ac, there
    else
      ahead, next_c, next_p = 2, n, 0
    end
  end
  if aw > last_window(max_window, window) - ahead then return OUT_OF_RANGE, w, c, p, now end
  local next_w = aw + ahead
  local start = next_w * window
  if offset > EXACT - start then return OUT_OF_RANGE, w, c, p, now end
  local ready_at = math.max(now, start + offset)
  if ready_at > math.max(deadline, now) then return TOO_LATE, w, c, p, ready_at end
  return GRANTED, next_w, next_c, next_p, ready_at
end

local function sliding_available(limit, window, w, c, p, now)
  local aw, ac, ap, time, offset = locate(window, w, c, p, now)
  if time > now then return 0 end
  return math.max(0, limit - weighted_count(window, ac, ap, offset))
end

local function sliding_refund(limit, window, w, c, p, now, n)
  if n <= 0 or w ~= index_of(now, window) then return w, c, p end
  return w, c - math.min(n, c), p
end
)lua";

/// What both window scripts do first. ARGV: op ("take", "peek", "refund"),
/// limit, window ticks, µs per tick, n, wait_ns. Reads the server's clock
/// and defines the helpers the bodies use.
inline constexpr std::string_view window_prelude = R"lua(
local STATE_MAX = 4503599627370496
local op = ARGV[1]
local limit, window, tick_us = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local n, wait_ns = tonumber(ARGV[5]), tonumber(ARGV[6])
local clock = redis.call('TIME')
local now_us = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local now = floor_div(now_us, tick_us)
-- windows start below 2^52 µs, so delay_ns stays below 2^62 ns whatever the tick
local max_window = floor_div(floor_div(STATE_MAX, tick_us), window)
-- numbers above 1e14 lose digits in Lua's default number-to-string
local function text(x) return string.format('%.0f', x) end
-- the deadline in ticks: the last tick that starts by now + wait
local function deadline_after(wait)
  if wait <= 0 then return now end
  return floor_div(math.min(now_us + floor_div(math.min(wait, EXACT), 1000), STATE_MAX), tick_us)
end
-- ns from now until tick `ready` starts (0 when it is now's tick)
local function delay_ns(ready)
  if ready <= now then return 0 end
  return (ready * tick_us - now_us) * 1000
end
-- the key lives until tick `until_tick`, and at least a millisecond
local function expire_at(until_tick)
  local ms = math.ceil((until_tick * tick_us - now_us) / 1000)
  redis.call('PEXPIRE', KEYS[1], text(math.max(ms, 0) + 1))
end
)lua";

}  // namespace lua

/// Runs a window script once: op, limit, window ticks, µs per tick, n, wait_ns.
inline answer call_window(connection& c, const script& s, const std::string& key, std::string_view op,
                          std::int64_t limit, window_ticks w, std::int64_t n, std::int64_t wait_ns) {
    const std::string_view keys[] = {key};
    const number_args<5> numbers{limit, w.ticks, w.tick_us, n, wait_ns};
    std::array<std::string_view, 6> args{};
    args[0] = op;
    std::copy(numbers.view().begin(), numbers.view().end(), args.begin() + 1);
    return call(c, s, keys, args);
}

}  // namespace ratelimit::redis::detail
