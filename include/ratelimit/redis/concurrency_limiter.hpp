#pragma once
// ratelimit::redis::concurrency_limiter: at most N permits held at once across
// every process sharing a key, as leases in a Redis sorted set that expire
// when their holder stops renewing them (a crashed holder's permits come back).

#include <algorithm>
#include <array>
#include <atomic>
#include <charconv>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <mutex>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "../clock.hpp"
#include "../concurrency_limiter.hpp"
#include "../detail/chrono.hpp"
#include "../limiter.hpp"
#include "connection.hpp"
#include "options.hpp"
#include "remote.hpp"

namespace ratelimit::redis {
namespace detail {

/// The one admission decision of a lease set: may n more leases join the
/// `in_use` live ones under `max_concurrent`? When not yet, `expiries` says
/// how many of the live leases must expire first (the earliest grant, absent
/// any release, is when the `expiries`-th earliest lease expires).
struct lease_decision {
    verdict outcome = verdict::never;
    std::int64_t expiries = 0;
};

/// Plain integers, no clock; mirrored function for function by the Lua `decide`.
[[nodiscard]] constexpr lease_decision decide_leases(std::int64_t in_use, std::int64_t max_concurrent,
                                                     std::int64_t n) noexcept {
    if (n > max_concurrent) return {verdict::never, 0};
    if (n <= max_concurrent - in_use) return {verdict::granted, 0};
    return {verdict::too_late, in_use + n - max_concurrent};
}

namespace lua {

/// detail::decide_leases in Lua.
inline const std::string lease_math = std::string(prelude) + R"lua(

local function decide(in_use, max, n)
  if n > max then return NEVER, 0 end
  if n <= max - in_use then return GRANTED, 0 end
  return TOO_LATE, in_use + n - max
end
)lua";

/// The lease script. KEYS[1]: a sorted set of leases, score = expiry in
/// server µs, member = "<owner>:<counter>". ARGV: op ("take", "renew",
/// "count"), max_concurrent, n, lease_ttl µs, owner, first counter, this
/// owner's leases to renew and leases to remove, each as "first:count,..."
/// ranges of counters. Every call first drops expired leases and the leases to
/// remove. "take" adds members first .. first+n-1 expiring at now + lease_ttl
/// when they fit, else returns the wait until enough leases expire; "renew"
/// moves the listed leases still live to now + lease_ttl. Returns {verdict,
/// delay_ns, value}: value is the live leases after the call ("renew": the
/// leases renewed). The key lives lease_ttl past its latest expiry.
inline constexpr std::string_view lease_body = R"lua(
local op = ARGV[1]
local max, n, ttl = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local owner, first = ARGV[5], tonumber(ARGV[6])
local mine, gone = ARGV[7], ARGV[8]
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local function text(x) return string.format('%.0f', x) end
-- Calls fn with this owner's member names, at most 256 at a time.
local function each_chunk(ranges, fn)
  local chunk = {}
  for f, c in string.gmatch(ranges, '(%d+):(%d+)') do
    f, c = tonumber(f), tonumber(c)
    for i = 0, c - 1 do
      chunk[#chunk + 1] = owner .. ':' .. text(f + i)
      if #chunk == 256 then fn(chunk); chunk = {} end
    end
  end
  if #chunk > 0 then fn(chunk) end
end
local function keep_key()
  local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
  if last[2] then
    redis.call('PEXPIRE', KEYS[1], text(math.ceil((tonumber(last[2]) - now + ttl) / 1000)))
  end
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', text(now))
if gone ~= '' then
  each_chunk(gone, function(m) redis.call('ZREM', KEYS[1], unpack(m)) end)
end
local expiry = text(now + ttl)
if op == 'renew' then
  local renewed = 0
  each_chunk(mine, function(m)
    local scores = redis.call('ZMSCORE', KEYS[1], unpack(m))
    local args = {}
    for i = 1, #m do
      if scores[i] then args[#args + 1] = expiry; args[#args + 1] = m[i] end
    end
    if #args > 0 then
      redis.call('ZADD', KEYS[1], 'XX', unpack(args))
      renewed = renewed + #args / 2
    end
  end)
  if renewed > 0 then keep_key() end
  return {GRANTED, 0, renewed}
end
local in_use = redis.call('ZCARD', KEYS[1])
if op ~= 'take' then return {GRANTED, 0, in_use} end
local verdict, expiries = decide(in_use, max, n)
if verdict == TOO_LATE then
  local at = redis.call('ZRANGE', KEYS[1], expiries - 1, expiries - 1, 'WITHSCORES')
  return {TOO_LATE, (tonumber(at[2]) - now) * 1000, in_use}
end
if verdict ~= GRANTED then return {verdict, 0, in_use} end
each_chunk(text(first) .. ':' .. text(n), function(m)
  local args = {}
  for i = 1, #m do args[2 * i - 1] = expiry; args[2 * i] = m[i] end
  redis.call('ZADD', KEYS[1], unpack(args))
end)
keep_key()
return {GRANTED, 0, in_use + n}
)lua";

/// The whole script as sent to Redis.
inline const script& lease_script() {
    static const script s(std::string(lease_math) + std::string(lease_body));
    return s;
}

}  // namespace lua
}  // namespace detail

/// At most `max_concurrent` permits held at once by all clients sharing a key.
/// Each permit is a lease in a Redis sorted set (score: its expiry on the
/// server's clock; member: this object's random 64-bit id and a counter), so
/// a holder that dies without releasing loses its permits `lease_ttl` after
/// it took (or last renewed) them. Every call first drops expired leases.
///
/// Guarantee: at every instant of the server's clock, the live leases number
/// at most `max_concurrent` (all clients using the same maximum). A permit is
/// protected only while its lease lives: a holder that keeps permits longer
/// than `lease_ttl` must `renew()` within each `lease_ttl`, or others may be
/// granted its permits while it still works.
///
/// Waiting. A caller that finds the set full sleeps until the earliest time
/// its n could fit without any release (when enough leases expire), its
/// deadline, or a release through this same object, whichever comes first,
/// and then asks again; a release by another process or object is noticed at
/// the next of those wake-ups (nothing is published). `try_acquire_for/until`
/// wait until their deadline when nothing frees up (as the in-process
/// concurrency_limiter: a release may come at any time, so no earliest grant
/// is known), and never beyond it. Waiters are not served in arrival order.
///
/// Thread-safe. One EVALSHA round trip per attempt (none for n == 0 or n above
/// max_concurrent); `release` and `renew` one each. Unlike the in-process
/// limiters this one allocates: it remembers the counters of the leases it
/// holds (a small vector under a mutex, one entry per grant) so that it can
/// release and renew exactly its own, and `release`/`renew` send them as text.
/// Redis memory: one member (~30 bytes) per live lease; the key expires
/// lease_ttl after its latest lease does.
///
/// Outages. When Redis does not answer, the options' policy answers as for
/// every Redis-backed limiter (remote.hpp); `local_fallback` grants from an
/// in-process concurrency_limiter of max(1, max_concurrent·fallback_share).
/// An outage that begins after Redis has answered this object starts that
/// limiter with every permit held in place of this object's Redis leases:
/// each lease the object releases during the outage frees one local permit,
/// so across P processes with P·fallback_share <= 1 the live leases and the
/// local permits together stay within max_concurrent; when Redis answers
/// again the local limiter is whole again (local permits still held are then
/// not counted by Redis until released).
/// Each grant remembers where it came from, and a release goes back there: a
/// local permit to the in-process limiter, a Redis lease to Redis. A Redis
/// release that fails (or a take whose answer was lost) is remembered and
/// sent with this object's next call that reaches Redis; meanwhile, or if
/// this object is gone, the lease expires by itself within lease_ttl.
/// Grants made by fail_open hold nothing, but count for release(n).
///
/// Edge cases: n == 0 succeeds at once; n < 0 throws std::invalid_argument;
/// n > max_concurrent never blocks (`try_*` return false, `acquire` and `lease`
/// throw capacity_exceeded). Releasing more than this object holds throws
/// std::logic_error and changes nothing. Destroying the object releases
/// nothing (its leases expire). `Clock` only measures waits and deadlines;
/// lease times are the server's (TIME).
template <clock Clock = std::chrono::steady_clock>
class concurrency_limiter {
public:
    using clock_type = Clock;
    using duration = typename Clock::duration;
    using time_point = typename Clock::time_point;

    class permit;

    /// The lease set named `key` on `c`: at most `max_concurrent` (> 0)
    /// permits held at once, each lease lasting `lease_ttl` (> 0, at most
    /// 2^52 µs) unless renewed.
    concurrency_limiter(connection& c, std::string key, std::int64_t max_concurrent,
                        std::chrono::milliseconds lease_ttl, options o = {}, Clock clock = {})
        : key_(detail::state_key(name, o.prefix, key, "leases")),
          owner_(make_owner()),
          max_(checked_max(max_concurrent)),
          ttl_(checked_ttl(lease_ttl)),
          remote_(name, c, o, std::move(clock), max_concurrent, detail::fallback_limit(max_concurrent, o.fallback_share)) {
        held_.reserve(16);
    }
    concurrency_limiter(const concurrency_limiter&) = delete;
    concurrency_limiter& operator=(const concurrency_limiter&) = delete;
    ~concurrency_limiter() = default;

    /// Takes n permits if they fit now; one round trip, never waits.
    bool try_acquire(std::int64_t n = 1) { return try_acquire_until(n, remote_.clock().now()); }
    /// Takes n permits, waiting at most `d` for them (see "Waiting").
    bool try_acquire_for(std::int64_t n, duration d) {
        const time_point now = remote_.clock().now();
        return try_acquire_until(n, ratelimit::detail::deadline_after(now, d));
    }
    /// Takes n permits, waiting until `t` at most; a past `t` acts as try_acquire.
    bool try_acquire_until(std::int64_t n, time_point t) { return record(obtain(n, t)); }
    /// Takes n permits, waiting as long as it takes; returns the time waited.
    /// Throws capacity_exceeded when n > max_concurrent(), and unavailable
    /// when Redis does not answer under on_error::fail_closed.
    duration acquire(std::int64_t n = 1) {
        ratelimit::detail::check_count(name, n);
        if (n == 0) return duration::zero();
        const time_point start = remote_.clock().now();
        record(obtain(n, std::nullopt));
        const time_point end = remote_.clock().now();
        return end > start ? std::chrono::duration_cast<duration>(end - start) : duration::zero();
    }

    /// Gives back n of this object's permits, the most recently taken first,
    /// each to where it came from. Throws std::logic_error, changing nothing,
    /// when n > held().
    void release(std::int64_t n = 1) {
        ratelimit::detail::check_count(name, n);
        if (n == 0) return;
        std::string ranges;
        std::int64_t local = 0;
        std::int64_t remote = 0;
        {
            std::lock_guard lock(held_mutex_);
            if (n > held_count_) {
                throw std::logic_error(std::string(name) + "::release: n = " + std::to_string(n) +
                                       " exceeds the " + std::to_string(held_count_) + " permits this object holds");
            }
            for (std::int64_t left = n; left > 0;) {
                grant& g = held_.back();
                const std::int64_t k = std::min(left, g.count);
                if (g.from == source::redis) {
                    append_range(ranges, g.first + static_cast<std::uint64_t>(g.count - k), k);
                    remote += k;
                }
                if (g.from == source::local) local += k;
                g.count -= k;
                left -= k;
                if (g.count == 0) held_.pop_back();
            }
            held_count_ -= n;
        }
        give_back(local, remote, std::move(ranges));
    }

    /// Takes n permits as `acquire` does and returns them as a permit that
    /// releases them when destroyed. Throws capacity_exceeded when n > max_concurrent().
    [[nodiscard]] permit lease(std::int64_t n = 1) {
        const std::optional<grant> g = obtain(n, std::nullopt);  // never empty: it throws instead
        record(g);
        return permit(this, *g);
    }
    /// A permit for n if `try_acquire(n)` succeeds, else nothing.
    [[nodiscard]] std::optional<permit> try_lease(std::int64_t n = 1) {
        return try_lease_until(n, remote_.clock().now());
    }
    /// A permit for n if `try_acquire_for(n, d)` succeeds, else nothing.
    [[nodiscard]] std::optional<permit> try_lease_for(std::int64_t n, duration d) {
        const time_point now = remote_.clock().now();
        return try_lease_until(n, ratelimit::detail::deadline_after(now, d));
    }
    /// A permit for n if `try_acquire_until(n, t)` succeeds, else nothing.
    [[nodiscard]] std::optional<permit> try_lease_until(std::int64_t n, time_point t) {
        const std::optional<grant> g = obtain(n, t);
        if (!record(g)) return std::nullopt;
        return permit(this, *g);
    }

    /// Moves every Redis lease this object holds to expire lease_ttl from
    /// now, in one round trip (call it more often than every lease_ttl), and
    /// returns how many were renewed: fewer than held() when some had already
    /// expired (those permits may now be held by others) or were granted
    /// locally. Nothing when Redis does not answer; 0 without a round trip
    /// when this object holds no Redis lease.
    std::optional<std::int64_t> renew() {
        std::string mine;
        {
            std::lock_guard lock(held_mutex_);
            for (const grant& g : held_) {
                if (g.from == source::redis) append_range(mine, g.first, g.count);
            }
        }
        if (mine.empty() && !has_pending_.load(std::memory_order_acquire)) return 0;
        const detail::answer a = run("renew", 0, 0, mine, {});
        if (!a.reached) return std::nullopt;
        return a.value;
    }

    /// Live leases of all clients now (after dropping expired ones), or
    /// nothing when Redis does not answer.
    [[nodiscard]] std::optional<std::int64_t> in_use() {
        const detail::answer a = run("count", 0, 0, {}, {});
        if (!a.reached) return std::nullopt;
        return a.value;
    }
    /// Permits this object holds (from Redis, the local fallback or fail_open).
    [[nodiscard]] std::int64_t held() const {
        std::lock_guard lock(held_mutex_);
        return held_count_;
    }
    /// The most permits held at once.
    [[nodiscard]] std::int64_t max_concurrent() const noexcept { return max_; }
    /// The largest n one call can be granted: max_concurrent().
    [[nodiscard]] std::int64_t capacity() const noexcept { return max_; }
    /// How long a lease lives unless renewed.
    [[nodiscard]] std::chrono::milliseconds lease_ttl() const noexcept { return ttl_; }
    /// The Redis key holding the leases.
    [[nodiscard]] const std::string& key() const noexcept { return key_; }
    /// This object's lease owner id (16 hex digits) in member names "<owner>:<counter>".
    [[nodiscard]] const std::string& owner() const noexcept { return owner_; }
    /// Calls answered by the outage policy instead of Redis.
    [[nodiscard]] std::uint64_t outages() const noexcept { return remote_.outages(); }

private:
    static constexpr const char* name = "ratelimit::redis::concurrency_limiter";
    /// Lease times are µs in Lua doubles beside a server time near 2^51: keep the sum below 2^53.
    static constexpr std::int64_t max_ttl_us = std::int64_t{1} << 52;
    /// Text of failed removals kept for the next call; beyond this, leases just expire.
    static constexpr std::size_t max_pending_chars = std::size_t{1} << 16;

    enum class source : std::uint8_t {
        redis,  ///< leases in the sorted set
        local,  ///< permits of the in-process fallback
        none,   ///< granted by fail_open: nothing held anywhere
    };
    /// Permits taken by one call: counters first .. first+count-1.
    struct grant {
        std::uint64_t first = 0;
        std::int64_t count = 0;
        source from = source::none;
    };

    static std::int64_t checked_max(std::int64_t max_concurrent) {
        ratelimit::detail::check_positive(name, "max_concurrent", max_concurrent);
        return max_concurrent;
    }
    static std::chrono::milliseconds checked_ttl(std::chrono::milliseconds ttl) {
        if (ttl.count() <= 0 || ttl.count() > max_ttl_us / 1000) {
            throw std::invalid_argument(std::string(name) + ": lease_ttl must be in [1, " +
                                        std::to_string(max_ttl_us / 1000) + "] ms, got " +
                                        std::to_string(ttl.count()) + "ms");
        }
        return ttl;
    }
    static std::string make_owner() {
        std::random_device device;
        const std::uint64_t id = (std::uint64_t{device()} << 32) ^ std::uint64_t{device()} ^
                                 static_cast<std::uint64_t>(
                                     std::chrono::steady_clock::now().time_since_epoch().count());
        std::array<char, 17> text{};
        std::snprintf(text.data(), text.size(), "%016llx", static_cast<unsigned long long>(id));
        return std::string(text.data(), 16);
    }
    static void append_range(std::string& out, std::uint64_t first, std::int64_t count) {
        std::array<char, 48> text{};
        char* end = std::to_chars(text.data(), text.data() + 20, first).ptr;
        *end++ = ':';
        end = std::to_chars(end, text.data() + 46, count).ptr;
        *end++ = ',';
        out.append(text.data(), static_cast<std::size_t>(end - text.data()));
    }

    /// One script call, carrying (and on failure keeping) the removals not yet sent.
    detail::answer run(std::string_view op, std::int64_t n, std::uint64_t first, std::string_view mine,
                       std::string gone) {
        if (has_pending_.load(std::memory_order_acquire)) {
            std::lock_guard lock(held_mutex_);
            gone += pending_;
            pending_.clear();
            has_pending_.store(false, std::memory_order_release);
        }
        const std::string_view keys[] = {key_};
        const detail::number_args<4> numbers{max_, n, ttl_.count() * 1000, static_cast<std::int64_t>(first)};
        const auto number = numbers.view();
        const std::array<std::string_view, 8> args{op, number[0], number[1], number[2], owner_, number[3], mine, gone};
        const bool may_be_sent = !remote_.conn().circuit_open();
        const detail::answer a = detail::call(remote_.conn(), detail::lua::lease_script(), keys, args);
        if (a.reached) remote_.note_reached();
        if (!a.reached) {
            // A take whose answer was lost may have run: remove its leases next time.
            if (op == "take" && may_be_sent) append_range(gone, first, n);
            if (!gone.empty()) {
                std::lock_guard lock(held_mutex_);
                if (pending_.size() + gone.size() <= max_pending_chars) pending_ += gone;
                has_pending_.store(!pending_.empty(), std::memory_order_release);
            }
        }
        return a;
    }

    /// The one path every acquisition takes: n permits by `deadline` (none:
    /// no deadline, throwing instead of refusing); nothing when refused.
    std::optional<grant> obtain(std::int64_t n, std::optional<time_point> deadline) {
        ratelimit::detail::check_count(name, n);
        if (n == 0) return grant{};
        if (n > max_) {
            if (deadline) return std::nullopt;
            throw capacity_exceeded(name, n, max_);
        }
        const std::uint64_t first = next_.fetch_add(static_cast<std::uint64_t>(n), std::memory_order_relaxed);
        for (;;) {
            const time_point now = remote_.clock().now();
            const std::uint64_t seen = releases_.load(std::memory_order_acquire);
            const detail::answer a = run("take", n, first, {}, {});
            if (!a.reached) return outage(n, first, deadline);
            if (a.outcome == detail::verdict::granted) return grant{first, n, source::redis};
            if (a.outcome != detail::verdict::too_late) {
                if (deadline) return std::nullopt;
                throw capacity_exceeded(name, n, max_);
            }
            if (deadline && *deadline <= now) return std::nullopt;
            const duration delay = ratelimit::detail::duration_from_ns<duration>(std::max<std::int64_t>(a.delay_ns, 1));
            time_point wake = ratelimit::detail::deadline_after(now, delay);
            if (deadline && *deadline < wake) wake = *deadline;
            sleep_until_release(seen, wake);
        }
    }

    /// The outage policy's answer, remembering where a grant came from.
    std::optional<grant> outage(std::int64_t n, std::uint64_t first, std::optional<time_point> deadline) {
        if (deadline) {
            if (!remote_.on_outage(n, *deadline)) return std::nullopt;
        } else {
            remote_.on_outage_blocking(n);
        }
        return grant{first, n, remote_.opts().policy == on_error::local_fallback ? source::local : source::none};
    }

    /// Notes a grant as held; false for a refusal.
    bool record(const std::optional<grant>& g) {
        if (!g) return false;
        if (g->count == 0) return true;
        std::lock_guard lock(held_mutex_);
        held_.push_back(*g);
        held_count_ += g->count;
        return true;
    }

    /// Gives back one permit's grant exactly (a permit's release).
    void release_grant(std::uint64_t first, std::int64_t count) {
        std::int64_t local = 0;
        std::int64_t remote = 0;
        std::string ranges;
        {
            std::lock_guard lock(held_mutex_);
            const auto it = std::find_if(held_.rbegin(), held_.rend(), [&](const grant& g) { return g.first == first; });
            if (it == held_.rend() || it->count != count) {
                throw std::logic_error(std::string(name) + "::permit::release: its " + std::to_string(count) +
                                       " permits were already given back through release(n)");
            }
            if (it->from == source::redis) {
                append_range(ranges, first, count);
                remote = count;
            }
            if (it->from == source::local) local = count;
            held_.erase(std::next(it).base());
            held_count_ -= count;
        }
        give_back(local, remote, std::move(ranges));
    }

    /// Returns local permits to the fallback and Redis leases to Redis, then
    /// wakes this object's waiters.
    void give_back(std::int64_t local, std::int64_t remote, std::string ranges) {
        if (local > 0) remote_.fallback()->release(local);
        if (!ranges.empty() && !run("count", 0, 0, {}, std::move(ranges)).reached) remote_.released_remote(remote);
        {
            std::lock_guard lock(wake_mutex_);
            releases_.fetch_add(1, std::memory_order_acq_rel);
        }
        released_.notify_all();
    }

    /// Sleeps until `wake` or, on a std::chrono clock, until this object
    /// releases something after `seen`. A clock that sleeps itself (manual_clock) just sleeps.
    void sleep_until_release(std::uint64_t seen, time_point wake) {
        if constexpr (!requires(Clock& c) { c.sleep_until(wake); } && std::chrono::is_clock_v<Clock>) {
            std::unique_lock lock(wake_mutex_);
            released_.wait_until(lock, wake, [&] { return releases_.load(std::memory_order_acquire) != seen; });
        } else {
            ratelimit::sleep_until(remote_.clock(), wake);
        }
    }

    std::string key_;
    std::string owner_;
    std::int64_t max_;
    std::chrono::milliseconds ttl_;
    detail::remote<Clock, ratelimit::concurrency_limiter<Clock>> remote_;
    std::atomic<std::uint64_t> next_{0};  // the next lease counter

    mutable std::mutex held_mutex_;
    std::vector<grant> held_;       // guarded by held_mutex_
    std::int64_t held_count_ = 0;   // guarded by held_mutex_
    std::string pending_;           // guarded by held_mutex_: removals Redis has not heard yet
    std::atomic<bool> has_pending_{false};

    std::mutex wake_mutex_;
    std::condition_variable released_;
    std::atomic<std::uint64_t> releases_{0};  // bumped under wake_mutex_ by every release
};

/// n permits of a redis::concurrency_limiter, given back when released or destroyed.
///
/// Move-only; a moved-from or released permit holds nothing. Must not outlive
/// its limiter. Its release goes to where its permits came from (Redis or the
/// local fallback). If they were already given back by hand through
/// `concurrency_limiter::release`, `release()` throws std::logic_error, and the
/// destructor (which cannot throw) terminates: a double release is a bug.
template <clock Clock>
class concurrency_limiter<Clock>::permit {
public:
    /// A permit that holds nothing.
    permit() noexcept = default;
    permit(permit&& other) noexcept
        : owner_(std::exchange(other.owner_, nullptr)),
          first_(std::exchange(other.first_, 0)),
          n_(std::exchange(other.n_, 0)) {}
    /// Releases what this permit holds, then takes over `other`'s permits.
    permit& operator=(permit&& other) noexcept {
        if (this != &other) {
            release_noexcept();
            owner_ = std::exchange(other.owner_, nullptr);
            first_ = std::exchange(other.first_, 0);
            n_ = std::exchange(other.n_, 0);
        }
        return *this;
    }
    permit(const permit&) = delete;
    permit& operator=(const permit&) = delete;
    ~permit() { release_noexcept(); }

    /// Gives the permits back now (one round trip for Redis leases); later calls do nothing.
    void release() {
        concurrency_limiter* const owner = std::exchange(owner_, nullptr);
        const std::int64_t n = std::exchange(n_, 0);
        if (owner != nullptr) owner->release_grant(first_, n);
    }
    /// Permits held: n until released or moved from, then 0.
    [[nodiscard]] std::int64_t count() const noexcept { return n_; }
    /// True while permits are held.
    explicit operator bool() const noexcept { return n_ > 0; }

private:
    friend class concurrency_limiter;
    permit(concurrency_limiter* owner, const grant& g) noexcept
        : owner_(g.count > 0 ? owner : nullptr), first_(g.first), n_(g.count) {}

    void release_noexcept() noexcept { release(); }

    concurrency_limiter* owner_ = nullptr;
    std::uint64_t first_ = 0;
    std::int64_t n_ = 0;
};

}  // namespace ratelimit::redis
