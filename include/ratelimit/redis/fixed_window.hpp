#pragma once
// ratelimit::redis::fixed_window: at most `limit` permits per window, the
// count in Redis.

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <limits>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

#include "../clock.hpp"
#include "../detail/chrono.hpp"
#include "../detail/text.hpp"
#include "../detail/window.hpp"
#include "../fixed_window.hpp"
#include "../limiter.hpp"
#include "connection.hpp"
#include "options.hpp"
#include "remote.hpp"
#include "window_script.hpp"

namespace ratelimit::redis {
namespace detail {
namespace lua {

/// The fixed window script. KEYS[1]: a hash {w = window index, c = count}.
/// Returns {verdict, delay_ns, available}; the key expires when the window
/// it counts ends.
inline constexpr std::string_view fixed_window_body = R"lua(
local stored = redis.call('HMGET', KEYS[1], 'w', 'c')
local w, c = tonumber(stored[1]), tonumber(stored[2])
if w == nil or c == nil then w, c = 0, 0 end
local function save(next_w, next_c)
  redis.call('HSET', KEYS[1], 'w', text(next_w), 'c', text(next_c))
  expire_at(start_of(next_w + 1, window))
end
if op == 'refund' then
  local back_w, back_c = fixed_refund(limit, window, w, c, now, n)
  if back_c ~= c then save(back_w, back_c) end
  return {GRANTED, 0, math.max(0, fixed_available(limit, window, back_w, back_c, now))}
end
local verdict, next_w, next_c, ready_at = fixed_decide(limit, window, max_window, w, c, now, n, deadline_after(wait_ns))
if verdict == GRANTED and op == 'take' and n > 0 then save(next_w, next_c) end
if verdict ~= GRANTED or op ~= 'take' then next_w, next_c = w, c end
return {verdict, delay_ns(ready_at), math.max(0, fixed_available(limit, window, next_w, next_c, now))}
)lua";

/// The whole script as sent to Redis.
inline const script& fixed_window_script() {
    static const script s(std::string(window_math) + std::string(window_prelude) + std::string(fixed_window_body));
    return s;
}

}  // namespace lua

}  // namespace detail

/// A fixed window limiter whose count lives in Redis under one key, so every
/// process and machine using the key shares it: time is cut into windows of
/// length `window` on the Redis server's clock, aligned at the Unix epoch
/// (window k covers [k·window, (k+1)·window) since 1970-01-01, so a one-minute
/// window is a calendar minute), and each window grants at most `limit`
/// permits. The math is detail/window.hpp's, run as a Lua script.
///
/// Guarantee: across all clients, at most `limit` permits are granted for each
/// window, counting permits a caller waited for in the window they became
/// usable in. An interval of length `window` that straddles a boundary may see
/// up to 2·limit. Waiting callers take their permits in the first window with
/// room and then sleep until it starts: one round trip, no polling; while one
/// waits, the current window grants nothing more (first come, first served).
///
/// Thread-safe; one EVALSHA round trip per call (none for n == 0 or n above
/// limit), one hash {w, c} per key, expiring when its window ends. When
/// Redis does not answer, the options' policy answers within connect_timeout
/// + command_timeout; local_fallback asks an in-process ratelimit::fixed_window
/// at max(1, limit·fallback_share) (aligned at its construction), its current
/// window full when the outage begins after Redis has answered, and its
/// grants are counted in Redis when it answers again, in the first window
/// with room (remote.hpp): with P processes at a share s and P·s <= 1, a
/// window during an outage may see up to `limit` more, which the windows
/// after it give up.
///
/// Edge cases: as the in-process fixed_window: n == 0 succeeds at once, n < 0
/// throws std::invalid_argument, n > limit() never blocks (`try_*` return
/// false, `acquire` throws capacity_exceeded). limit must be in [1, 2^52) and
/// window in (0, 2^50 µs] (the script's doubles); the window is rounded up to
/// a whole microsecond. A server clock that goes back reopens no window
/// already counted. Clients sharing a key must use the same window (the
/// limit may differ: each call applies its own).
template <clock Clock = std::chrono::steady_clock>
class fixed_window : public detail::script_limiter<fixed_window<Clock>, Clock, ratelimit::fixed_window<Clock>> {
    using base = detail::script_limiter<fixed_window<Clock>, Clock, ratelimit::fixed_window<Clock>>;
    friend base;

public:
    using typename base::duration;

    /// The largest limit the script's doubles count exactly (2^52 − 1).
    static constexpr std::int64_t max_limit = detail::window_state_max - 1;

    /// The window named `key` on `c`: at most `limit` (in [1, max_limit])
    /// permits per `window` (in (0, 2^50 µs]).
    fixed_window(connection& c, std::string key, std::int64_t limit, duration window, options o = {},
                 Clock clock = {})
        : base(name, c, key, "fw", o, std::move(clock), limit,
               // checked before anything computes with it (fallback_limit would convert it to double and back)
               detail::fallback_limit(checked_limit(limit), o.fallback_share, ratelimit::detail::saturating_ns(window)),
               window),
          window_(window),
          ticks_{detail::window_microseconds(name, window), 1} {}

    /// Gives back n unused permits to the current window (never below zero);
    /// nothing once it has ended, while a caller waits for the next, or during an outage.
    void refund(std::int64_t n) { this->refund_permits(n); }

    /// The most permits one window grants.
    [[nodiscard]] std::int64_t limit() const noexcept { return this->shared().capacity(); }
    /// The length of a window, as given (the script rounds it up to whole µs).
    [[nodiscard]] duration window() const noexcept { return window_; }

private:
    static constexpr const char* name = "ratelimit::redis::fixed_window";

    static std::int64_t checked_limit(std::int64_t limit) {
        ratelimit::detail::check_positive(name, "limit", limit);
        if (limit > max_limit) {
            throw std::invalid_argument(std::string(name) + ": limit must be < 2^52 (the script's doubles), got " +
                                        std::to_string(limit));
        }
        return limit;
    }

    detail::answer run(std::string_view op, std::int64_t n, std::int64_t wait_ns) {
        return detail::call_window(this->shared().conn(), detail::lua::fixed_window_script(), this->key(), op, limit(), ticks_, n,
                                   wait_ns);
    }

    duration window_;
    detail::window_ticks ticks_;
};

}  // namespace ratelimit::redis
