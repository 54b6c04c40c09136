// ratelimit::leaky_bucket on manual_clock: exact, instant, no sleeps.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include <ratelimit/detail/leaky.hpp>
#include <ratelimit/leaky_bucket.hpp>

#include "support/catch.hpp"
#include "support/scripted_clock.hpp"

using namespace std::chrono_literals;
using ratelimit::manual_clock;
using ratelimit::rate;
using bucket = ratelimit::leaky_bucket<manual_clock>;

static_assert(ratelimit::limiter<bucket>);
static_assert(ratelimit::reservable_limiter<bucket>);
static_assert(ratelimit::limiter<ratelimit::leaky_bucket<>>);

namespace {

manual_clock::time_point at(manual_clock::duration d) { return manual_clock::time_point{d}; }

}  // namespace

TEST_CASE("a fresh bucket grants one permit at once and then refuses: no burst", "[leaky_bucket]") {
    manual_clock clock;
    bucket b(rate::per_second(10), 5, clock);  // one permit every 100ms
    CHECK(b.try_acquire());
    CHECK_FALSE(b.try_acquire());
    CHECK(b.time_until_available() == 100ms);
}

TEST_CASE("waiting callers are granted exactly r.interval() apart", "[leaky_bucket]") {
    manual_clock clock;
    const rate r = rate::per_second(10);
    REQUIRE(r.interval() == 100ms);
    bucket b(r, 3, clock);
    auto first = b.reserve();
    auto second = b.reserve();
    auto third = b.reserve();
    auto fourth = b.reserve();
    CHECK(first.ready_at() == at(0ms));
    CHECK(second.ready_at() == at(1 * r.interval()));
    CHECK(third.ready_at() == at(2 * r.interval()));
    CHECK(fourth.ready_at() == at(3 * r.interval()));
}

TEST_CASE("acquire on a busy schedule waits exactly one interval after the previous grant", "[leaky_bucket]") {
    manual_clock clock;
    bucket b(rate::every(7ms), 2, clock);
    CHECK(b.acquire() == 0ms);
    clock.advance(3ms);
    CHECK(b.acquire() == 4ms);  // 7ms after the grant at 0
    CHECK(clock.now() == at(7ms));
    CHECK(b.acquire() == 7ms);
    CHECK(clock.now() == at(14ms));
}

TEST_CASE("idle time is not banked: after a pause, one at once and the next a full interval later",
          "[leaky_bucket]") {
    manual_clock clock;
    bucket b(rate::per_second(10), 5, clock);
    REQUIRE(b.try_acquire());
    clock.advance(1h);
    CHECK(b.try_acquire());
    CHECK_FALSE(b.try_acquire());
    CHECK(b.time_until_available() == 100ms);
    auto next = b.reserve();
    CHECK(next.ready_at() == at(1h + 100ms));
}

TEST_CASE("a grant between slots waits only for the rest of the interval", "[leaky_bucket]") {
    manual_clock clock;
    bucket b(rate::per_second(10), 5, clock);
    REQUIRE(b.try_acquire());  // at 0: the next slot is 100ms
    clock.advance(30ms);
    CHECK(b.time_until_available() == 70ms);
    clock.advance(70ms);
    CHECK(b.try_acquire());
}

TEST_CASE("n permits take n slots and are granted at the last one", "[leaky_bucket]") {
    manual_clock clock;
    bucket b(rate::per_second(10), 4, clock);
    // Idle: slots at 0, 100, 200ms; the three come together at 200ms.
    auto three = b.reserve(3);
    CHECK(three.ready_at() == at(200ms));
    // The next single permit has the slot after them.
    auto next = b.reserve(1);
    CHECK(next.ready_at() == at(300ms));
    CHECK(b.time_until_available(2) == 500ms);  // slots 400 and 500ms
}

TEST_CASE("try_acquire never grants more than one permit at once", "[leaky_bucket]") {
    manual_clock clock;
    bucket b(rate::per_second(10), 4, clock);
    CHECK_FALSE(b.try_acquire(2));  // its second slot is 100ms away
    CHECK(b.time_until_available(2) == 100ms);
    CHECK(b.try_acquire_for(2, 100ms));
    CHECK(clock.now() == at(100ms));
}

TEST_CASE("the queue is full at max_queue waiters: the next caller is refused at once", "[leaky_bucket]") {
    manual_clock clock;
    bucket b(rate::per_second(10), 2, clock);
    auto served = b.reserve();  // at 0: not waiting
    auto w1 = b.reserve();      // 100ms
    auto w2 = b.reserve();      // 200ms
    CHECK(b.queue_size() == 2);
    CHECK_THROWS_AS(b.reserve(), ratelimit::queue_full);
    CHECK_THROWS_AS(b.acquire(), ratelimit::queue_full);
    CHECK_FALSE(b.try_acquire_for(1, 1h));
    CHECK_FALSE(b.try_acquire_until(1, at(1h)));
    CHECK(clock.now() == at(0ms));  // refused without sleeping
    // Nothing changed: the next free slot is still 300ms.
    CHECK(b.time_until_available() == 300ms);
    CHECK(w2.ready_at() == at(200ms));
}

TEST_CASE("a waiter stops counting at its ready time", "[leaky_bucket]") {
    manual_clock clock;
    bucket b(rate::per_second(10), 2, clock);
    auto served = b.reserve();  // 0
    auto w1 = b.reserve();      // 100ms
    auto w2 = b.reserve();      // 200ms
    clock.set(at(100ms - 1ns));
    CHECK(b.queue_size() == 2);
    CHECK_THROWS_AS(b.reserve(), ratelimit::queue_full);
    clock.set(at(100ms));  // w1's slot: it is served, w2 still waits
    CHECK(b.queue_size() == 1);
    auto w3 = b.reserve();
    CHECK(w3.ready_at() == at(300ms));
    CHECK(b.queue_size() == 2);
    clock.set(at(300ms));
    CHECK(b.queue_size() == 0);
}

TEST_CASE("queue_full counts a request for n as n callers", "[leaky_bucket]") {
    manual_clock clock;
    bucket b(rate::per_second(10), 3, clock);
    auto three = b.reserve(3);  // slots 0, 100, 200ms: two permits wait behind the first
    CHECK(b.queue_size() == 2);
    auto one = b.reserve(1);  // slot 300ms: the third waiting
    CHECK(b.queue_size() == 3);
    CHECK_THROWS_AS(b.reserve(1), ratelimit::queue_full);
}

TEST_CASE("max_queue 0 allows only immediate single grants", "[leaky_bucket]") {
    manual_clock clock;
    bucket b(rate::per_second(10), 0, clock);
    CHECK(b.capacity() == 1);
    CHECK(b.acquire() == 0ms);
    CHECK_THROWS_AS(b.acquire(), ratelimit::queue_full);
    CHECK_FALSE(b.try_acquire_for(1, 1h));
    CHECK(clock.now() == at(0ms));
    clock.advance(100ms);
    CHECK(b.try_acquire());
    CHECK_THROWS_AS(b.acquire(2), ratelimit::capacity_exceeded);
}

TEST_CASE("n above max_queue + 1 can never be granted", "[leaky_bucket]") {
    manual_clock clock;
    bucket b(rate::per_second(10), 4, clock);
    CHECK(b.capacity() == 5);
    CHECK_FALSE(b.try_acquire(6));
    CHECK_FALSE(b.try_acquire_for(6, 1h));
    CHECK_THROWS_AS(b.acquire(6), ratelimit::capacity_exceeded);
    try {
        (void)b.reserve(6);
        FAIL("no exception");
    } catch (const ratelimit::capacity_exceeded& e) {
        CHECK(e.requested() == 6);
        CHECK(e.capacity() == 5);
    }
    CHECK(b.time_until_available(6) == manual_clock::duration::max());
    CHECK(clock.now() == at(0ms));
    CHECK(b.acquire(5) == 400ms);  // the whole bucket: slots 0 to 400ms
}

TEST_CASE("try_acquire_for fails at once when the slot lies beyond the deadline, and changes nothing",
          "[leaky_bucket]") {
    manual_clock clock;
    bucket b(rate::per_second(10), 5, clock);
    REQUIRE(b.try_acquire());
    CHECK_FALSE(b.try_acquire_for(1, 100ms - 1ns));
    CHECK_FALSE(b.try_acquire_until(1, at(100ms - 1ns)));
    CHECK(clock.now() == at(0ms));
    CHECK(b.queue_size() == 0);
    CHECK(b.time_until_available() == 100ms);
}

TEST_CASE("try_acquire_for within the deadline sleeps exactly until its slot", "[leaky_bucket]") {
    manual_clock clock;
    bucket b(rate::per_second(10), 5, clock);
    REQUIRE(b.try_acquire());
    CHECK(b.try_acquire_for(1, 100ms));
    CHECK(clock.now() == at(100ms));
    CHECK(b.try_acquire_until(1, at(250ms)));
    CHECK(clock.now() == at(200ms));
}

TEST_CASE("a deadline already past behaves as try_acquire", "[leaky_bucket]") {
    manual_clock clock{at(1h)};
    bucket b(rate::per_second(10), 5, clock);
    CHECK(b.try_acquire_until(1, at(1h - 1s)));
    CHECK_FALSE(b.try_acquire_until(1, at(1h - 1s)));
    CHECK_FALSE(b.try_acquire_for(1, -1s));
    CHECK(clock.now() == at(1h));
}

TEST_CASE("n == 0 always succeeds at once, even with a full queue", "[leaky_bucket]") {
    manual_clock clock;
    bucket b(rate::per_second(10), 0, clock);
    REQUIRE(b.try_acquire());
    CHECK(b.try_acquire(0));
    CHECK(b.try_acquire_for(0, 0s));
    CHECK(b.acquire(0) == 0s);
    CHECK(b.reserve(0).ready_at() == clock.now());
    CHECK(b.time_until_available(0) == 0s);
    CHECK(clock.now() == at(0ms));
}

TEST_CASE("a negative n throws invalid_argument naming the value", "[leaky_bucket]") {
    manual_clock clock;
    bucket b(rate::per_second(10), 1, clock);
    CHECK_THROWS_AS(b.try_acquire(-1), std::invalid_argument);
    CHECK_THROWS_AS(b.try_acquire_for(-1, 1s), std::invalid_argument);
    CHECK_THROWS_AS(b.try_acquire_until(-1, clock.now()), std::invalid_argument);
    CHECK_THROWS_AS(b.acquire(-1), std::invalid_argument);
    CHECK_THROWS_AS(b.reserve(-1), std::invalid_argument);
    try {
        (void)b.try_acquire(-4);
        FAIL("no exception");
    } catch (const std::invalid_argument& e) {
        CHECK(std::string(e.what()).find("-4") != std::string::npos);
    }
    CHECK(b.try_acquire());
}

TEST_CASE("a negative max_queue throws invalid_argument naming it", "[leaky_bucket]") {
    try {
        bucket b(rate::per_second(10), -1, manual_clock{});
        FAIL("no exception");
    } catch (const std::invalid_argument& e) {
        CHECK(std::string(e.what()).find("max_queue must be >= 0") != std::string::npos);
        CHECK(std::string(e.what()).find("got -1") != std::string::npos);
    }
    CHECK_THROWS_AS(bucket(rate::per_second(10), INT64_MAX, manual_clock{}), std::invalid_argument);
}

TEST_CASE("max_queue(), capacity() and current_rate() report the configuration", "[leaky_bucket]") {
    bucket b(rate::per_minute(90), 7, manual_clock{});
    CHECK(b.max_queue() == 7);
    CHECK(b.capacity() == 8);
    CHECK(b.current_rate() == rate::per_minute(90));
    CHECK(b.queue_size() == 0);
}

TEST_CASE("a fractional interval is kept: k slots span k intervals, rounded up, never less", "[leaky_bucket]") {
    manual_clock clock;
    bucket b(rate::per_second(3), 3, clock);  // 333333333.33...ns
    std::vector<manual_clock::time_point> slots;
    for (int i = 0; i < 4; ++i) slots.push_back(b.reserve().ready_at());
    CHECK(slots[0] == at(0ns));
    CHECK(slots[1] == at(333333334ns));  // 1/3 s rounded up (to the 1/16 ns tick, then the ns)
    CHECK(slots[2] == at(666666667ns));
    CHECK(slots[3] == at(1000000001ns));  // one tick of rounding per interval: 3/16 ns, up to 1 ns
    for (std::size_t i = 1; i < slots.size(); ++i) CHECK(slots[i] - slots[i - 1] >= 333333333ns);
}

TEST_CASE("cancel gives back the slot when no later reservation took the ones after it", "[leaky_bucket]") {
    manual_clock clock;
    bucket b(rate::per_second(10), 3, clock);
    REQUIRE(b.try_acquire());  // 0
    auto waiting = b.reserve();  // 100ms
    waiting.cancel();
    CHECK(b.queue_size() == 0);
    CHECK(b.reserve().ready_at() == at(100ms));  // the same slot again
}

TEST_CASE("cancel gives back nothing when a later reservation holds the following slots", "[leaky_bucket]") {
    manual_clock clock;
    bucket b(rate::per_second(10), 4, clock);
    REQUIRE(b.try_acquire());   // 0
    auto first = b.reserve();   // 100ms
    auto second = b.reserve();  // 200ms
    first.cancel();  // reusing 100ms would leave the next grant and `second` less than 100ms apart
    CHECK(b.queue_size() == 2);
    CHECK(b.reserve().ready_at() == at(300ms));
    clock.set(at(300ms));       // the schedule ends at 400ms
    auto three = b.reserve(3);  // slots 400, 500, 600ms
    auto one = b.reserve(1);    // 700ms
    three.cancel();
    CHECK(one.ready_at() == at(700ms));
    CHECK(b.time_until_available() == 500ms);  // the schedule still ends at 800ms
}

TEST_CASE("cancel after some slots have passed restarts the schedule at now", "[leaky_bucket]") {
    manual_clock clock;
    bucket b(rate::per_second(10), 4, clock);
    auto three = b.reserve(3);  // slots 0, 100, 200ms; ready at 200ms
    clock.advance(150ms);
    three.cancel();
    CHECK(b.try_acquire());  // at 150ms, not at 0: the past is not given back
    CHECK(b.time_until_available() == 100ms);
}

TEST_CASE("cancel gives back nothing after ready_at", "[leaky_bucket]") {
    manual_clock clock;
    bucket b(rate::per_second(10), 3, clock);
    auto r = b.reserve();  // 0
    clock.advance(1ns);
    r.cancel();
    CHECK(b.time_until_available() == 100ms - 1ns);
}

TEST_CASE("acquire returns the time it waited for its slot", "[leaky_bucket]") {
    manual_clock clock;
    bucket b(rate::per_second(4), 3, clock);  // 250ms
    CHECK(b.acquire() == 0ms);
    CHECK(b.acquire() == 250ms);
    CHECK(b.acquire(2) == 500ms);  // slots 500 and 750ms, from 250ms
    CHECK(clock.now() == at(750ms));
}

TEST_CASE("a clock that jumps back before construction counts as construction time", "[leaky_bucket]") {
    manual_clock clock{at(10s)};
    bucket b(rate::per_second(10), 2, clock);
    REQUIRE(b.try_acquire());
    clock.set(at(5s));
    CHECK_FALSE(b.try_acquire());
    CHECK(b.time_until_available() == 5s + 100ms);
}

TEST_CASE("the leaky math: admission by the whole bucket, grant at the last slot", "[leaky_bucket][detail]") {
    namespace lk = ratelimit::detail::leaky;
    constexpr auto p = lk::params(16, 2);  // 16 ticks per permit, 2 may wait: 3 in the bucket
    STATIC_REQUIRE(p.capacity == 3);
    // Idle (tat 0 <= now 100): one permit now, the schedule ends one interval later.
    STATIC_REQUIRE(lk::decide(p, 0, 100, 1, 100).outcome == lk::verdict::granted);
    STATIC_REQUIRE(lk::decide(p, 0, 100, 1, 100).ready_at == 100);
    STATIC_REQUIRE(lk::decide(p, 0, 100, 1, 100).tat == 116);
    // Three at once: slots 100, 116, 132; granted at 132.
    STATIC_REQUIRE(lk::decide(p, 0, 100, 3, 1000).ready_at == 132);
    STATIC_REQUIRE(lk::decide(p, 0, 100, 3, 1000).tat == 148);
    STATIC_REQUIRE(lk::decide(p, 0, 100, 3, 131).outcome == lk::verdict::too_late);
    STATIC_REQUIRE(lk::decide(p, 0, 100, 4, 1000).outcome == lk::verdict::never);
    // Schedule ends at 148 (two waiting at now 100): one more would make three waiting.
    STATIC_REQUIRE(lk::decide(p, 148, 100, 1, 1000).outcome == lk::verdict::queue_full);
    STATIC_REQUIRE(lk::decide(p, 148, 116, 1, 1000).outcome == lk::verdict::granted);
    STATIC_REQUIRE(lk::decide(p, 148, 116, 1, 1000).ready_at == 148);
    STATIC_REQUIRE(lk::queue_size(p, 148, 100) == 2);
    STATIC_REQUIRE(lk::queue_size(p, 148, 116) == 1);
    STATIC_REQUIRE(lk::queue_size(p, 148, 117) == 1);
    STATIC_REQUIRE(lk::queue_size(p, 148, 132) == 0);
    STATIC_REQUIRE(lk::queue_size(p, 148, 500) == 0);
}

namespace {

/// A simulated clock counting whole milliseconds, to check rounding on coarse clocks.
struct millisecond_clock {
    using rep = std::int64_t;
    using period = std::milli;
    using duration = std::chrono::milliseconds;
    using time_point = std::chrono::time_point<millisecond_clock, duration>;
    std::shared_ptr<std::atomic<rep>> ms = std::make_shared<std::atomic<rep>>(0);
    [[nodiscard]] time_point now() const noexcept { return time_point{duration{ms->load()}}; }
    void sleep_until(time_point t) noexcept { ms->store(std::max(ms->load(), t.time_since_epoch().count())); }
};

}  // namespace

TEST_CASE("on a millisecond clock slots are rounded up to the next tick, never early", "[leaky_bucket]") {
    millisecond_clock clock;
    ratelimit::leaky_bucket<millisecond_clock> b(rate::per_second(3), 3, clock);  // 333.33...ms
    using ms_point = millisecond_clock::time_point;
    CHECK(b.reserve().ready_at() == ms_point{0ms});
    CHECK(b.reserve().ready_at() == ms_point{334ms});
    CHECK(b.reserve().ready_at() == ms_point{667ms});
    CHECK(b.reserve().ready_at() == ms_point{1001ms});  // 3 intervals = 1000000000.125ns, rounded up
    CHECK(b.acquire(0) == 0ms);
    CHECK(b.time_until_available() == 1334ms);
}

TEST_CASE("the schedule carries over exactly when the tick origin moves (every 4.5 years)", "[leaky_bucket]") {
    // The tick is 1/16 ns, and the state holds 2^61 ticks from the origin: 2^57 ns.
    constexpr auto horizon = std::chrono::nanoseconds{std::int64_t{1} << 57};
    manual_clock clock;
    bucket b(rate::per_second(10), 3, clock);
    clock.set(at(horizon - 150ms));
    auto first = b.reserve();   // horizon - 150ms
    auto second = b.reserve();  // horizon - 50ms
    auto third = b.reserve();   // horizon + 50ms
    CHECK(third.ready_at() == at(horizon + 50ms));
    clock.set(at(horizon));  // the next call moves the origin
    CHECK(b.queue_size() == 1);
    auto fourth = b.reserve();
    CHECK(fourth.ready_at() == at(horizon + 150ms));
    CHECK(b.time_until_available() == 250ms);
    clock.advance(1h);
    CHECK(b.try_acquire());
    CHECK_FALSE(b.try_acquire());
    CHECK(b.time_until_available() == 100ms);
}

TEST_CASE("a clock that jumps 2^58 ns ahead and back between two reads does not livelock the leaky bucket",
          "[leaky_bucket]") {
    // try_acquire reads a time past the tick range; every later read is back
    // at 1 s. Rebasing to a fresh read never reached the caller's time.
    using clock_type = ratelimit_test::scripted_clock;
    clock_type clock;
    clock.set(clock_type::time_point{1s});
    ratelimit::leaky_bucket<clock_type> b(rate::per_second(10), 4, clock);
    REQUIRE(b.try_acquire(1));
    clock.set(clock_type::time_point{std::chrono::nanoseconds{std::int64_t{1} << 58}});
    clock.then_set(clock_type::time_point{1s});
    clock.allow_reads(1000);
    CHECK(b.try_acquire(1));
    CHECK_FALSE(b.try_acquire(1));  // back at 1 s, which counts as the far time: paced
    CHECK(clock.reads() < 1000);
}

TEST_CASE("a leaky bucket is at rest (and idle) only once its schedule has drained", "[leaky_bucket]") {
    // 10/s: a grant at 0 schedules the next slot at 100 ms; until then a fresh
    // bucket would act differently (it would grant at once).
    manual_clock clock;
    bucket b(rate::per_second(10), 2, clock);
    CHECK(b.is_at_rest());
    REQUIRE(b.try_acquire(1));
    CHECK_FALSE(b.is_at_rest());
    CHECK_FALSE(b.is_idle());
    clock.advance(99ms);
    CHECK_FALSE(b.is_idle());
    clock.advance(1ms);
    CHECK(b.is_at_rest());
    CHECK(b.is_idle());
}
