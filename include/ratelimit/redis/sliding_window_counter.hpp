#pragma once
// ratelimit::redis::sliding_window_counter: the weighted two-window estimate,
// the counts in Redis.

#include <algorithm>
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
#include "../sliding_window_counter.hpp"
#include "connection.hpp"
#include "options.hpp"
#include "remote.hpp"
#include "window_script.hpp"

namespace ratelimit::redis {
namespace detail::lua {

/// The sliding window counter script. KEYS[1]: a hash {w = window index,
/// c = current count, p = previous count}. Returns {verdict, delay_ns,
/// available}; the key expires when the window after the one it counts ends
/// (when its weight has gone).
inline constexpr std::string_view sliding_window_counter_body = R"lua(
local stored = redis.call('HMGET', KEYS[1], 'w', 'c', 'p')
local w, c, p = tonumber(stored[1]), tonumber(stored[2]), tonumber(stored[3])
if w == nil or c == nil or p == nil then w, c, p = 0, 0, 0 end
local function save(next_w, next_c, next_p)
  redis.call('HSET', KEYS[1], 'w', text(next_w), 'c', text(next_c), 'p', text(next_p))
  expire_at(start_of(next_w + 2, window))
end
if op == 'refund' then
  local back_w, back_c, back_p = sliding_refund(limit, window, w, c, p, now, n)
  if back_c ~= c then save(back_w, back_c, back_p) end
  return {GRANTED, 0, sliding_available(limit, window, back_w, back_c, back_p, now)}
end
local verdict, next_w, next_c, next_p, ready_at =
  sliding_decide(limit, window, max_window, w, c, p, now, n, deadline_after(wait_ns))
if verdict == GRANTED and op == 'take' and n > 0 then save(next_w, next_c, next_p) end
if verdict ~= GRANTED or op ~= 'take' then next_w, next_c, next_p = w, c, p end
return {verdict, delay_ns(ready_at), sliding_available(limit, window, next_w, next_c, next_p, now)}
)lua";

/// The whole script as sent to Redis.
inline const script& sliding_window_counter_script() {
    static const script s(std::string(window_math) + std::string(window_prelude) +
                          std::string(sliding_window_counter_body));
    return s;
}

}  // namespace detail::lua

/// A sliding window counter whose counts live in Redis under one key, so every
/// process and machine using the key shares them: time is cut into windows of
/// length `window` on the Redis server's clock, aligned at the Unix epoch, and
/// at offset e into the current window the permits of the last `window` are
/// estimated as
///     current + ceil(previous · (window − e) / window),
/// granting n when estimate + n <= limit. The math is detail/window.hpp's, run
/// as a Lua script in exact integer arithmetic on ticks of 1 µs, or of 1 ms
/// when limit · window in µs would reach 2^52.
///
/// Guarantee: as the in-process sliding_window_counter, across all clients:
/// each aligned window grants at most `limit` permits, and any interval of
/// length `window` sees fewer than 2·limit (about `limit` under a steady
/// load). Permits a caller waited for count at the time they became usable.
/// Waiting callers take their permits at the earliest time the estimate
/// leaves room for them and then sleep until then: one round trip, no polling.
///
/// Thread-safe; one EVALSHA round trip per call (none for n == 0 or n above
/// limit), one hash {w, c, p} per key, expiring when the window after the one
/// it counts ends. When Redis does not answer, the options' policy answers
/// within connect_timeout + command_timeout; local_fallback asks an in-process
/// ratelimit::sliding_window_counter at max(1, limit·fallback_share) (at most
/// its max_limit, aligned at its construction), its current window full when
/// the outage begins after Redis has answered; its grants are counted in
/// Redis when it answers again, at the earliest time the estimate leaves room
/// (remote.hpp): with P processes at a share s and P·s <= 1, a window during
/// an outage may see up to `limit` more, which later ones give up.
///
/// Edge cases: as the in-process sliding_window_counter: n == 0 succeeds at
/// once, n < 0 throws std::invalid_argument, n > limit() never blocks. The
/// script's doubles need limit · window < 2^52 ticks: with 1 µs ticks that is
/// limit · window_µs < 2^52 (up to 75,059,993 permits per minute, 1,250,999
/// per hour); beyond, the window is counted in whole milliseconds, rounded up
/// (up to 52,124,995 permits per day); beyond that, and for a window outside (0, 2^50 µs],
/// the constructor throws std::invalid_argument naming them. Clients sharing
/// a key must use the same window.
template <clock Clock = std::chrono::steady_clock>
class sliding_window_counter : public detail::script_limiter<sliding_window_counter<Clock>, Clock, ratelimit::sliding_window_counter<Clock>> {
    using base = detail::script_limiter<sliding_window_counter<Clock>, Clock, ratelimit::sliding_window_counter<Clock>>;
    friend base;

public:
    using typename base::duration;

    /// The window named `key` on `c`: about `limit` (> 0) permits per sliding
    /// `window` (> 0), with limit · window below 2^52 ms.
    sliding_window_counter(connection& c, std::string key, std::int64_t limit, duration window, options o = {},
                           Clock clock = {})
        : base(name, c, key, "swc", o, std::move(clock), limit,
               // limit and window checked (make_ticks) before anything computes with them
               detail::fallback_limit(checked_limit(limit, window), o.fallback_share,
                                      ratelimit::sliding_window_counter<Clock>::max_limit),
               window),
          window_(window),
          ticks_(make_ticks(limit, window)) {}

    /// Gives back n unused permits to the current window (never below zero);
    /// nothing once it has ended, while a caller waits for a later one, or during an outage.
    void refund(std::int64_t n) { this->refund_permits(n); }

    /// The most permits the estimate allows per window.
    [[nodiscard]] std::int64_t limit() const noexcept { return this->shared().capacity(); }
    /// The length of a window, as given (the script rounds it up to its tick).
    [[nodiscard]] duration window() const noexcept { return window_; }
    /// The script's tick in microseconds: 1, or 1000 for a large limit · window.
    [[nodiscard]] std::int64_t tick_microseconds() const noexcept { return ticks_.tick_us; }

private:
    static constexpr const char* name = "ratelimit::redis::sliding_window_counter";

    /// `limit`, once make_ticks has accepted it with `window`.
    static std::int64_t checked_limit(std::int64_t limit, duration window) {
        (void)make_ticks(limit, window);
        return limit;
    }

    /// The finest tick (1 µs, else 1 ms) at which limit · window < 2^52.
    static detail::window_ticks make_ticks(std::int64_t limit, duration window) {
        ratelimit::detail::check_positive(name, "limit", limit);
        const std::int64_t us = detail::window_microseconds(name, window);
        const std::int64_t most = detail::window_state_max - 1;
        if (limit <= most / us) return {us, 1};
        const std::int64_t ms = us / 1000 + (us % 1000 != 0 ? 1 : 0);
        if (limit <= most / ms) return {ms, 1000};
        throw std::invalid_argument(std::string(name) + ": limit · window must be < 2^52 ms (the script's doubles), got limit " +
                                    std::to_string(limit) + " and window " + std::to_string(ms) + "ms");
    }

    detail::answer run(std::string_view op, std::int64_t n, std::int64_t wait_ns) {
        return detail::call_window(this->shared().conn(), detail::lua::sliding_window_counter_script(), this->key(), op, limit(),
                                   ticks_, n, wait_ns);
    }

    duration window_;
    detail::window_ticks ticks_;
};

}  // namespace ratelimit::redis
