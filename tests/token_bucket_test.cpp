// ratelimit::token_bucket's own contract, on manual_clock (exact, instant),
// plus the pieces it stands on: ratelimit::rate and ratelimit::manual_clock.

#include <chrono>
#include <cmath>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include <ratelimit/token_bucket.hpp>

#include "support/catch.hpp"
#include "support/scripted_clock.hpp"

using namespace std::chrono_literals;
using ratelimit::capacity_exceeded;
using ratelimit::manual_clock;
using ratelimit::rate;
using bucket = ratelimit::token_bucket<manual_clock>;
using time_point = manual_clock::time_point;

namespace {

/// The message of the std::invalid_argument that `f` throws ("" if none).
template <class F>
std::string invalid_argument_message(F f) {
    try {
        f();
    } catch (const std::invalid_argument& e) {
        return e.what();
    }
    return "";
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

constexpr std::int64_t years_ns(std::int64_t years) { return years * 365 * 24 * 3600 * 1'000'000'000LL; }

}  // namespace

// ---------------------------------------------------------------- arguments

TEST_CASE("n == 0 succeeds at once on every member, even when the bucket is empty", "[token_bucket]") {
    manual_clock clock;
    bucket b(rate::per_second(10), 2, clock);
    REQUIRE(b.try_acquire(2));
    const time_point before = clock.now();
    CHECK(b.try_acquire(0));
    CHECK(b.try_acquire_for(0, 0ns));
    CHECK(b.try_acquire_until(0, before - 1s));
    CHECK(b.acquire(0) == 0ns);
    auto r = b.reserve(0);
    CHECK(r.ready_at() == before);
    CHECK(r.count() == 0);
    CHECK(b.time_until_available(0) == 0ns);
    b.refund(0);
    r.cancel();
    CHECK(clock.now() == before);
    CHECK(b.available() == 0);
}

TEST_CASE("a negative n throws invalid_argument naming n and its value on every member", "[token_bucket]") {
    manual_clock clock;
    bucket b(rate::per_second(10), 2, clock);
    const std::string want = "n must be >= 0, got -3";
    CHECK(contains(invalid_argument_message([&] { (void)b.try_acquire(-3); }), want));
    CHECK(contains(invalid_argument_message([&] { (void)b.try_acquire_for(-3, 1s); }), want));
    CHECK(contains(invalid_argument_message([&] { (void)b.try_acquire_until(-3, clock.now() + 1s); }), want));
    CHECK(contains(invalid_argument_message([&] { (void)b.acquire(-3); }), want));
    CHECK(contains(invalid_argument_message([&] { (void)b.reserve(-3); }), want));
    CHECK(contains(invalid_argument_message([&] { b.refund(-3); }), want));
    CHECK(contains(invalid_argument_message([&] { (void)b.time_until_available(-3); }), want));
    CHECK(b.available() == 2);
}

TEST_CASE("a capacity of 0 or less throws invalid_argument naming capacity", "[token_bucket]") {
    manual_clock clock;
    CHECK(contains(invalid_argument_message([&] { bucket b(rate::per_second(1), 0, clock); }),
                   "capacity must be > 0, got 0"));
    CHECK(contains(invalid_argument_message([&] { bucket b(rate::per_second(1), -5, clock); }),
                   "capacity must be > 0, got -5"));
    bucket b(rate::per_second(1), 3, clock);
    CHECK(contains(invalid_argument_message([&] { b.set_capacity(0); }), "capacity must be > 0, got 0"));
    CHECK(b.capacity() == 3);
    CHECK(b.available() == 3);
}

// ---------------------------------------------------------- n above capacity

TEST_CASE("n above capacity: try_* return false at once without moving the clock", "[token_bucket]") {
    manual_clock clock;
    bucket b(rate::per_second(1), 3, clock);
    const time_point before = clock.now();
    CHECK_FALSE(b.try_acquire(4));
    CHECK_FALSE(b.try_acquire_for(4, 24h));
    CHECK_FALSE(b.try_acquire_until(4, time_point::max()));
    CHECK(clock.now() == before);
    CHECK(b.available() == 3);
    CHECK(b.time_until_available(4) == manual_clock::duration::max());
}

TEST_CASE("n above capacity: acquire and reserve throw capacity_exceeded with the numbers", "[token_bucket]") {
    manual_clock clock;
    bucket b(rate::per_second(1), 3, clock);
    try {
        (void)b.acquire(4);
        FAIL("acquire(4) did not throw");
    } catch (const capacity_exceeded& e) {
        CHECK(e.requested() == 4);
        CHECK(e.capacity() == 3);
        CHECK(contains(e.what(), "n = 4"));
    }
    try {
        (void)b.reserve(7);
        FAIL("reserve(7) did not throw");
    } catch (const capacity_exceeded& e) {
        CHECK(e.requested() == 7);
        CHECK(e.capacity() == 3);
    }
    CHECK(clock.now() == time_point{});
    CHECK(b.available() == 3);
}

TEST_CASE("n above a capacity lowered by set_capacity is refused by the new capacity", "[token_bucket]") {
    manual_clock clock;
    bucket b(rate::per_second(1), 5, clock);
    b.set_capacity(2);
    CHECK_FALSE(b.try_acquire(3));
    try {
        (void)b.acquire(3);
        FAIL("acquire(3) did not throw");
    } catch (const capacity_exceeded& e) {
        CHECK(e.capacity() == 2);
    }
}

// ---------------------------------------------------------------- deadlines

TEST_CASE("try_acquire_for with a deadline before the earliest grant returns false without sleeping",
          "[token_bucket]") {
    manual_clock clock;
    bucket b(rate::per_second(10), 2, clock);  // one permit per 100 ms
    REQUIRE(b.try_acquire(2));
    CHECK_FALSE(b.try_acquire_for(1, 99ms));  // the next permit comes at 100 ms
    CHECK(clock.now() == time_point{});       // the manual clock has not moved
    CHECK_FALSE(b.try_acquire_until(2, time_point{199ms}));  // two come at 200 ms
    CHECK(clock.now() == time_point{});
    CHECK(b.time_until_available(1) == 100ms);  // and nothing was taken
}

TEST_CASE("try_acquire_for with a deadline at the earliest grant sleeps exactly until then", "[token_bucket]") {
    manual_clock clock;
    bucket b(rate::per_second(10), 2, clock);
    REQUIRE(b.try_acquire(2));
    CHECK(b.try_acquire_for(1, 100ms));
    CHECK(clock.now() == time_point{100ms});
    CHECK(b.try_acquire_until(1, time_point{200ms}));
    CHECK(clock.now() == time_point{200ms});
    CHECK(b.available() == 0);
}

TEST_CASE("a past deadline acts as try_acquire", "[token_bucket]") {
    manual_clock clock(time_point{10s});
    bucket b(rate::per_second(10), 2, clock);
    CHECK(b.try_acquire_until(2, time_point{1s}));  // available now: granted
    CHECK_FALSE(b.try_acquire_until(1, time_point{1s}));  // not available now: refused at once
    CHECK_FALSE(b.try_acquire_for(1, -5s));
    CHECK_FALSE(b.try_acquire_for(1, 0ns));
    CHECK(clock.now() == time_point{10s});
}

// ---------------------------------------------------------- all or nothing

TEST_CASE("a failed try_acquire(3) with 2 available leaves 2 available", "[token_bucket]") {
    manual_clock clock;
    bucket b(rate::per_second(1), 5, clock);
    REQUIRE(b.try_acquire(3));
    REQUIRE(b.available() == 2);
    CHECK_FALSE(b.try_acquire(3));
    CHECK(b.available() == 2);
    CHECK_FALSE(b.try_acquire_for(3, 999ms));
    CHECK(b.available() == 2);
    CHECK(b.try_acquire(2));
}

// ------------------------------------------------------------------- refund

TEST_CASE("refund gives permits back, never beyond a full bucket", "[token_bucket]") {
    manual_clock clock;
    bucket b(rate::per_second(1), 5, clock);
    REQUIRE(b.try_acquire(3));
    b.refund(1);
    CHECK(b.available() == 3);
    b.refund(10);
    CHECK(b.available() == 5);
    b.refund(1);  // already full
    CHECK(b.available() == 5);
    CHECK_FALSE(b.try_acquire(6));
}

TEST_CASE("refund gives nothing back while reservations run ahead", "[token_bucket]") {
    // Moving the state back would hand the reserved slots out twice:
    // A takes 5, B reserves 5 for t = 5 s, A refunds 5: C must still not get 5 at t = 5 s.
    manual_clock clock;
    bucket b(rate::per_second(1), 5, clock);
    REQUIRE(b.try_acquire(5));
    auto r = b.reserve(5);
    CHECK(r.ready_at() == clock.now() + 5s);
    CHECK(b.available() == -5);
    b.refund(5);
    CHECK(b.available() == -5);
    clock.advance(5s);
    CHECK_FALSE(b.try_acquire(5));  // B uses its 5 now; nothing else may
}

TEST_CASE("refund into an empty bucket without reservations gives back", "[token_bucket]") {
    manual_clock clock;
    bucket b(rate::per_second(1), 5, clock);
    REQUIRE(b.try_acquire(5));
    b.refund(2);
    CHECK(b.available() == 2);
}

// ------------------------------------------------- available and waiting time

TEST_CASE("available and time_until_available are exact", "[token_bucket]") {
    manual_clock clock;
    bucket b(rate::per_second(10), 5, clock);  // one permit per 100 ms
    CHECK(b.available() == 5);
    CHECK(b.time_until_available(5) == 0ns);
    REQUIRE(b.try_acquire(5));
    CHECK(b.available() == 0);
    CHECK(b.time_until_available(1) == 100ms);
    CHECK(b.time_until_available(3) == 300ms);
    CHECK(b.time_until_available(5) == 500ms);
    clock.advance(150ms);                       // 1.5 permits
    CHECK(b.available() == 1);
    CHECK(b.time_until_available(1) == 0ns);
    CHECK(b.time_until_available(2) == 50ms);   // 2 - 1.5 = 0.5 permit
    CHECK(b.time_until_available(5) == 350ms);  // 5 - 1.5 = 3.5 permits
    clock.advance(1h);
    CHECK(b.available() == 5);  // never beyond capacity
}

TEST_CASE("available goes negative while reservations run ahead of the refill", "[token_bucket]") {
    manual_clock clock;
    bucket b(rate::per_second(10), 2, clock);
    auto r1 = b.reserve(2);
    auto r2 = b.reserve(2);
    auto r3 = b.reserve(1);
    CHECK(b.available() == -3);
    CHECK(b.time_until_available(1) == 400ms);  // 3 of debt + 1
    clock.advance(50ms);  // -2.5: floors to -3
    CHECK(b.available() == -3);
    clock.advance(50ms);
    CHECK(b.available() == -2);
}

// ------------------------------------------------------------------- acquire

TEST_CASE("acquire returns the exact time waited and advances the manual clock by exactly that", "[token_bucket]") {
    manual_clock clock;
    bucket b(rate::per_second(10), 2, clock);
    CHECK(b.acquire(2) == 0ns);
    CHECK(clock.now() == time_point{});
    CHECK(b.acquire(1) == 100ms);
    CHECK(clock.now() == time_point{100ms});
    CHECK(b.acquire(2) == 200ms);
    CHECK(clock.now() == time_point{300ms});
    clock.advance(1s);  // full again
    CHECK(b.acquire(2) == 0ns);
    CHECK(clock.now() == time_point{1300ms});
}

TEST_CASE("acquire at a rate that is not a whole number of ns lands on the tick, rounded up", "[token_bucket]") {
    // 3 per second: 333333333.33 ns = 5333333333.33 ticks of 1/16 ns, rounded
    // up to 5333333334 ticks. Permit k is usable at tick k * 5333333334,
    // i.e. at ceil(k * 5333333334 / 16) ns.
    manual_clock clock;
    bucket b(rate::per_second(3), 1, clock);
    CHECK(b.acquire() == 0ns);
    std::int64_t previous = 0;
    for (std::int64_t k = 1; k <= 9; ++k) {
        const std::int64_t ticks = k * 5'333'333'334;
        const std::int64_t want_ns = ticks / 16 + (ticks % 16 != 0 ? 1 : 0);
        INFO("permit " << k);
        CHECK(b.acquire() == std::chrono::nanoseconds{want_ns - previous});
        CHECK(clock.now() == time_point{std::chrono::nanoseconds{want_ns}});
        previous = want_ns;
    }
    // 9 permits after the first take at least 3 s: never faster than the rate.
    CHECK(clock.now() >= time_point{3s});
    CHECK(clock.now() < time_point{3s + 10ns});
}

// ------------------------------------------------------------- reservations

TEST_CASE("reservations are first come, first served: ready_at strictly increases by the interval",
          "[token_bucket]") {
    manual_clock clock;
    bucket b(rate::per_second(10), 1, clock);
    std::vector<ratelimit::reservation<manual_clock>> queue;
    for (int k = 0; k < 10; ++k) queue.push_back(b.reserve(1));
    for (int k = 0; k < 10; ++k) {
        INFO("reservation " << k);
        CHECK(queue[k].ready_at() == time_point{k * 100ms});
        CHECK(queue[k].delay() == k * 100ms);
    }
    CHECK(clock.now() == time_point{});  // reserving never sleeps
    queue[9].wait();
    CHECK(clock.now() == time_point{900ms});
    CHECK(queue[3].delay() == 0ns);
}

TEST_CASE("a reservation of several permits waits until all of them have refilled", "[token_bucket]") {
    manual_clock clock;
    bucket b(rate::per_second(10), 3, clock);
    REQUIRE(b.try_acquire(1));
    auto r = b.reserve(3);  // 2 left, 1 more needed
    CHECK(r.ready_at() == time_point{100ms});
    auto s = b.reserve(3);
    CHECK(s.ready_at() == time_point{400ms});
}

TEST_CASE("a moved-from reservation cancels nothing; the moved-to one cancels once", "[token_bucket]") {
    manual_clock clock;
    bucket b(rate::per_second(10), 2, clock);
    REQUIRE(b.try_acquire(2));
    auto r = b.reserve(2);
    auto moved = std::move(r);
    r.cancel();  // NOLINT(bugprone-use-after-move): the moved-from reservation is empty
    CHECK(b.available() == -2);
    moved.cancel();
    CHECK(b.available() == 0);
    moved.cancel();
    CHECK(b.available() == 0);
}

TEST_CASE("dropping a reservation keeps its permits taken", "[token_bucket]") {
    manual_clock clock;
    bucket b(rate::per_second(10), 2, clock);
    { auto r = b.reserve(2); }
    CHECK(b.available() == 0);
}

// -------------------------------------------------------------- precision

TEST_CASE("90000 per minute admits 5,400,000 permits in an hour through acquire", "[token_bucket][precision]") {
    // One permit every 666666.67 ns = 10666666.67 ticks of 1/16 ns, rounded up
    // to 10666667 ticks. acquire sleeps (on the manual clock) exactly until
    // each permit: permit k at k * 10666667 / 16 ns, rounded up. Those up to
    // 3.6e12 ns are k = 0 .. 5,399,999 (3.6e12 * 16 / 10666667 = 5399999.8).
    manual_clock clock;
    bucket b(rate::per_minute(90000), 1, clock);
    const time_point end = time_point{1h};
    std::int64_t granted = 0;
    for (;;) {
        (void)b.acquire();
        if (clock.now() > end) break;
        ++granted;
    }
    CHECK(std::abs(granted - 5'400'000) <= 2);
    CHECK(granted == 5'400'000);
}

TEST_CASE("90000 per minute polled by try_acquire every 666667 ns grants at every poll", "[token_bucket][precision]") {
    // The polls come every 666667 ns, no sooner than the permits (666666.69 ns
    // after rounding to ticks), so every poll finds a permit and the count is
    // the count of polls in the hour: 0 .. 5,399,997 (3.6e12 / 666667 = 5399997.3).
    // A bucket whose interval came out even 1 ns slower would refuse every
    // other poll and grant about half.
    manual_clock clock;
    bucket b(rate::per_minute(90000), 1, clock);
    const time_point end = time_point{1h};
    std::int64_t granted = 0;
    std::int64_t polls = 0;
    for (; clock.now() <= end; clock.advance(666'667ns)) {
        ++polls;
        if (b.try_acquire()) ++granted;
    }
    CHECK(polls == 5'399'998);
    CHECK(granted == polls);
    CHECK(std::abs(granted - 5'400'000) <= 2);
}

// ---------------------------------------------------------- extreme values

TEST_CASE("a tiny rate of 1e-10 per second grants the burst and then nothing for centuries", "[token_bucket]") {
    manual_clock clock;
    bucket b(rate::per_second(1e-10), 2, clock);
    CHECK(b.try_acquire(2));
    CHECK_FALSE(b.try_acquire(1));
    // One permit every 1e10 s: beyond what a nanosecond clock can count
    // (2^63 ns is 292 years), so the wait saturates at duration::max().
    CHECK(b.time_until_available(1) == manual_clock::duration::max());
    clock.advance(std::chrono::nanoseconds{years_ns(290)});
    CHECK_FALSE(b.try_acquire(1));
    CHECK(b.available() == 0);
    CHECK_FALSE(b.try_acquire_for(1, 1h));
}

TEST_CASE("a bucket on a clock before its epoch works, even at a tiny rate", "[token_bucket]") {
    manual_clock clock(time_point{-10s});
    bucket b(rate::per_second(1), 1, clock);
    REQUIRE(b.try_acquire());
    CHECK(b.time_until_available(1) == 1s);
    clock.advance(1s);
    CHECK(b.try_acquire());
    bucket slow(rate::per_second(1e-10), 1, clock);
    REQUIRE(slow.try_acquire());
    CHECK(slow.time_until_available(1) == manual_clock::duration::max());  // saturates, no overflow
}

TEST_CASE("a reservation at a tiny rate is ready at the end of time", "[token_bucket]") {
    manual_clock clock;
    bucket b(rate::per_second(1e-10), 1, clock);
    REQUIRE(b.try_acquire(1));
    auto r = b.reserve(1);
    CHECK(r.ready_at() == time_point::max());
}

TEST_CASE("a capacity of 1e15 grants 1e15 at once and refills at the rate", "[token_bucket]") {
    constexpr std::int64_t capacity = 1'000'000'000'000'000;
    SECTION("at one permit per ns (1/16 ns ticks: exact)") {
        manual_clock clock;
        bucket b(rate::per_second(1e9), capacity, clock);
        CHECK(b.available() == capacity);
        CHECK(b.try_acquire(capacity));
        CHECK_FALSE(b.try_acquire(1));
        clock.advance(1s);
        CHECK(b.available() == 1'000'000'000);
        CHECK(b.time_until_available(capacity) == std::chrono::nanoseconds{capacity - 1'000'000'000});
    }
    SECTION("at one permit per second (coarse ticks: never faster than the rate)") {
        // 1e15 s of tolerance must fit 2^59 ticks: ticks of 2^21 ns, so the
        // interval of 1 s rounds up to 477 * 2^21 ns = 1.000341 s.
        manual_clock clock;
        bucket b(rate::per_second(1), capacity, clock);
        CHECK(b.try_acquire(capacity));
        CHECK_FALSE(b.try_acquire(1));
        const auto wait = b.time_until_available(1);
        CHECK(wait >= 1s);
        CHECK(wait == std::chrono::nanoseconds{477LL << 21});
        clock.advance(wait - 1ns);
        CHECK(b.time_until_available(1) == 1ns);  // from the clock's ns, not from the 2 ms tick it falls in
        CHECK_FALSE(b.try_acquire(1));
        clock.advance(1ns);
        CHECK(b.time_until_available(1) == 0ns);
        CHECK(b.try_acquire(1));
    }
}

TEST_CASE("the largest capacity is 2^59; beyond it the constructor names the capacity", "[token_bucket]") {
    constexpr std::int64_t largest = std::int64_t{1} << 59;
    manual_clock clock;
    bucket b(rate::per_second(1e9), largest, clock);
    CHECK(b.try_acquire(largest));
    CHECK_FALSE(b.try_acquire(1));
    constexpr std::int64_t quarter = std::numeric_limits<std::int64_t>::max() / 4;
    const std::string message = invalid_argument_message([&] { bucket huge(rate::per_second(1e9), quarter, clock); });
    CHECK(contains(message, "capacity must be <= 2^59 (576460752303423488), got " + std::to_string(quarter)));
    CHECK(contains(invalid_argument_message([&] { bucket over(rate::per_second(1), largest + 1, clock); }),
                   std::to_string(largest + 1)));
    CHECK(contains(invalid_argument_message([&] { b.set_capacity(largest + 1); }), "capacity"));
    CHECK(b.capacity() == largest);
}

TEST_CASE("a bucket near the end of time keeps working", "[token_bucket][far_future]") {
    const time_point start = time_point::max() - 10s;
    manual_clock clock(start);
    bucket b(rate::per_second(1), 2, clock);
    CHECK(b.try_acquire(2));
    CHECK_FALSE(b.try_acquire(1));
    clock.advance(1s);
    CHECK(b.try_acquire(1));
    CHECK_FALSE(b.try_acquire(1));
    CHECK(b.time_until_available(2) == 2s);
    CHECK(b.acquire(1) == 1s);
    CHECK(clock.now() == start + 2s);
    CHECK(b.try_acquire_for(1, manual_clock::duration::max()));  // the deadline saturates
    CHECK(clock.now() == start + 3s);
    // A reservation at or beyond the end of time is ready at time_point::max().
    clock.set(time_point::max() - 1s);
    REQUIRE(b.try_acquire(2));  // empty until 1 s after the end of time
    auto r = b.reserve(1);
    CHECK(r.ready_at() == time_point::max());
    CHECK(b.available() == -1);
    clock.set(time_point::max());
    CHECK(b.available() == 0);
}

TEST_CASE("a bucket is full after a long idle, even one to the end of time", "[token_bucket][far_future]") {
    manual_clock clock;
    bucket b(rate::per_second(10), 5, clock);
    REQUIRE(b.try_acquire(5));
    auto r = b.reserve(5);  // deep in debt
    clock.set(time_point::max() - 1s);
    CHECK(b.available() == 5);
    CHECK(b.try_acquire(5));
    CHECK_FALSE(b.try_acquire(1));
    clock.advance(100ms);
    CHECK(b.try_acquire(1));
}

TEST_CASE("the bucket keeps its count across the 2^61-tick rebase point", "[token_bucket][far_future]") {
    // At 1/16 ns ticks the origin moves forward once now passes 2^61 ticks,
    // i.e. 2^57 ns (4.6 years) after it.
    const time_point rebase{std::chrono::nanoseconds{std::int64_t{1} << 57}};
    manual_clock clock;
    bucket b(rate::per_second(1), 10, clock);
    clock.set(rebase - 3s);
    REQUIRE(b.try_acquire(10));  // empty until rebase + 7 s
    clock.advance(5s);           // past the rebase point: 5 refilled
    CHECK(b.available() == 5);
    CHECK(b.time_until_available(10) == 5s);
    CHECK(b.try_acquire(5));
    CHECK_FALSE(b.try_acquire(1));
    clock.advance(1s);
    CHECK(b.try_acquire(1));
    CHECK(b.acquire(3) == 3s);
    CHECK(clock.now() == rebase + 6s);
}

TEST_CASE("the bucket keeps working through every rebase up to the end of time", "[token_bucket][far_future]") {
    // 63 jumps of 2^57 ns + 1 s each cross the rebase point every time.
    const manual_clock::duration jump = std::chrono::nanoseconds{std::int64_t{1} << 57} + 1s;
    manual_clock clock;
    bucket b(rate::per_second(1), 3, clock);
    for (int i = 0; i < 63; ++i) {
        INFO("jump " << i);
        clock.advance(jump);
        REQUIRE(b.available() == 3);  // full after the idle
        REQUIRE(b.try_acquire(3));
        REQUIRE_FALSE(b.try_acquire(1));
        clock.advance(1s);
        REQUIRE(b.available() == 1);
        REQUIRE(b.acquire(2) == 1s);
    }
    CHECK(clock.now().time_since_epoch().count() > (std::int64_t{63} << 57));
}

TEST_CASE("a reservation made before the rebase point can be cancelled after it", "[token_bucket][far_future]") {
    const time_point rebase{std::chrono::nanoseconds{std::int64_t{1} << 57}};
    manual_clock clock;
    bucket b(rate::per_second(1), 10, clock);  // tick 0 at 0 ns
    clock.set(rebase - 3s);
    REQUIRE(b.try_acquire(10));  // tat = rebase + 7 s
    auto r = b.reserve(5);       // tat = rebase + 12 s, ready at rebase + 2 s
    CHECK(r.ready_at() == rebase + 2s);
    clock.set(rebase + 1s);
    CHECK(b.available() == -1);  // (moves the origin) 10 - 11 s of debt
    r.cancel();                  // nothing reserved after it: all 5 back
    CHECK(b.available() == 4);
}

TEST_CASE("a clock jumping back before construction counts as construction time", "[token_bucket]") {
    manual_clock clock(time_point{10s});
    bucket b(rate::per_second(1), 5, clock);
    clock.set(time_point{5s});
    CHECK(b.available() == 5);
    CHECK(b.try_acquire(5));  // as if at 10 s: empty until 15 s
    CHECK(b.time_until_available(1) == 6s);  // the clock must still get from 5 s to 11 s
    clock.set(time_point{12s});
    CHECK(b.available() == 2);
    clock.set(time_point{16s});
    CHECK(b.available() == 5);
}

TEST_CASE("set_rate on a clock that jumped back before construction refills nothing twice", "[token_bucket]") {
    manual_clock clock(time_point{10s});
    bucket b(rate::per_second(1), 5, clock);
    clock.set(time_point{5s});
    REQUIRE(b.try_acquire(5));  // as if at 10 s: empty until 15 s
    b.set_rate(rate::per_second(1));
    b.set_capacity(5);
    clock.set(time_point{12s});
    CHECK(b.available() == 2);  // as without the changes: 5 s to 10 s is not refilled
    CHECK(b.time_until_available(5) == 3s);
}

TEST_CASE("a clock jumping back counts the permits taken later as debt", "[token_bucket]") {
    manual_clock clock;
    bucket b(rate::per_second(1), 5, clock);
    clock.set(time_point{20s});
    REQUIRE(b.try_acquire(5));  // empty until 25 s
    clock.set(time_point{15s});
    CHECK(b.available() == -5);
    CHECK_FALSE(b.try_acquire(1));
    CHECK(b.time_until_available(1) == 6s);  // the permit after 25 s
    clock.set(time_point{26s});
    CHECK(b.available() == 5);
}

// ------------------------------------------------- set_rate and set_capacity

TEST_CASE("set_rate keeps the permit count and refills at the new rate", "[token_bucket]") {
    manual_clock clock;
    bucket b(rate::per_second(10), 10, clock);
    REQUIRE(b.try_acquire(7));  // 3 left
    b.set_rate(rate::per_second(1));
    CHECK(b.current_rate() == rate::per_second(1));
    CHECK(b.available() == 3);
    clock.advance(999ms);
    CHECK(b.available() == 3);
    clock.advance(1ms);
    CHECK(b.available() == 4);
}

TEST_CASE("set_rate keeps a debt's reserved slots: the bucket refills at the new rate after the last", "[token_bucket]") {
    // Emptied at 10/s and 2 reserved: usable at 200 ms. At 1/s those permits
    // still go at 200 ms; the bucket is empty then and holds 1 at 1.2 s
    // (x/time/rate would keep -2 permits at the new rate, 3 s; at a faster
    // rate that would let new permits go before the reserved ones).
    manual_clock clock;
    bucket b(rate::per_second(10), 2, clock);
    REQUIRE(b.try_acquire(2));
    auto r = b.reserve(2);
    CHECK(r.ready_at() == time_point{200ms});
    b.set_rate(rate::per_second(1));
    CHECK(b.available() == -1);  // 0.2 s of debt at 1/s: -0.2, floored
    CHECK(b.time_until_available(1) == 1200ms);
}

TEST_CASE("set_capacity keeps the count, capped at the new capacity", "[token_bucket]") {
    manual_clock clock;
    bucket b(rate::per_second(1), 10, clock);
    REQUIRE(b.try_acquire(4));  // 6 left
    b.set_capacity(20);
    CHECK(b.capacity() == 20);
    CHECK(b.available() == 6);  // not filled up
    b.set_capacity(4);
    CHECK(b.available() == 4);  // capped
    b.set_capacity(8);
    CHECK(b.available() == 4);
    clock.advance(4s);
    CHECK(b.available() == 8);
    clock.advance(1h);
    CHECK(b.available() == 8);
}

TEST_CASE("set_capacity on a full bucket keeps the count, not the fullness", "[token_bucket]") {
    manual_clock clock;
    bucket b(rate::per_second(1), 2, clock);
    b.set_capacity(5);
    CHECK(b.available() == 2);
    CHECK_FALSE(b.try_acquire(3));
    CHECK(b.time_until_available(5) == 3s);
}

// --------------------------------------------------------------------- rate

TEST_CASE("rate factories give the interval between permits", "[rate]") {
    CHECK(rate::per_second(10).interval() == 100ms);
    CHECK(rate::per_minute(60).interval() == 1s);
    CHECK(rate::per_hour(1).interval() == 1h);
    CHECK(rate::every(250ms).interval() == 250ms);
    CHECK(rate::per_second(10).per_second_value() == 10);
    CHECK(rate::per_minute(90000).interval() == 666'667ns);  // 666666.67 rounded to nearest
    CHECK(rate::per_second(3).interval() == 333'333'333ns);
    CHECK(rate::per_second(1e-10).interval() == std::chrono::nanoseconds::max());  // saturates
}

TEST_CASE("rate keeps the fractional interval exactly for integer inputs", "[rate]") {
    const auto exact = rate::per_minute(90000).exact_interval().count();
    CHECK(exact == 60e9L / 90000);
    CHECK(exact * 90000 == Approx(60e9).epsilon(1e-15));
    CHECK(rate::per_minute(90000).permits() == 90000);
    CHECK(rate::per_minute(90000).period() == 1min);
    CHECK(rate::every(std::chrono::duration<double, std::nano>{0.5}).exact_interval().count() == 0.5L);
    CHECK(rate::every(std::chrono::duration<double, std::nano>{0.5}).per_second_value() == 2e9);
}

TEST_CASE("rates are equal when their intervals are", "[rate]") {
    CHECK(rate::per_second(1) == rate::per_minute(60));
    CHECK(rate::per_minute(60) == rate::per_hour(3600));
    CHECK(rate::every(250ms) == rate::per_second(4));
    CHECK(rate::per_second(0.5) == rate::every(2s));
    CHECK_FALSE(rate::per_second(2) == rate::per_second(1));
    CHECK_FALSE(rate::per_minute(90001) == rate::per_minute(90000));
}

TEST_CASE("rate rejects 0, negative, NaN and infinite permits, naming the argument", "[rate]") {
    const double nan = std::numeric_limits<double>::quiet_NaN();
    const double inf = std::numeric_limits<double>::infinity();
    const std::string zero = invalid_argument_message([] { (void)rate::per_second(0); });
    CHECK(contains(zero, "per_second"));
    CHECK(contains(zero, "permits must be finite and > 0, got 0"));
    CHECK(contains(invalid_argument_message([] { (void)rate::per_minute(-2); }),
                   "permits must be finite and > 0, got -2"));
    CHECK(contains(invalid_argument_message([nan] { (void)rate::per_hour(nan); }), "got nan"));
    CHECK(contains(invalid_argument_message([inf] { (void)rate::per_second(inf); }), "got inf"));
    CHECK(contains(invalid_argument_message([inf] { (void)rate::per_second(-inf); }), "got -inf"));
}

TEST_CASE("rate::every rejects a zero or negative interval, naming d", "[rate]") {
    CHECK(contains(invalid_argument_message([] { (void)rate::every(0ns); }), "d must be > 0 and finite, got 0ns"));
    CHECK(contains(invalid_argument_message([] { (void)rate::every(-1s); }), "got -1e+09ns"));
    const double nan = std::numeric_limits<double>::quiet_NaN();
    const double inf = std::numeric_limits<double>::infinity();
    using seconds = std::chrono::duration<double>;
    CHECK(contains(invalid_argument_message([nan] { (void)rate::every(seconds{nan}); }), "got nan"));
    CHECK(contains(invalid_argument_message([inf] { (void)rate::every(seconds{inf}); }), "got inf"));
}

// ------------------------------------------------------------- manual_clock

TEST_CASE("manual_clock copies share one time", "[manual_clock]") {
    manual_clock a;
    manual_clock b = a;
    CHECK(a.now() == time_point{});
    a.advance(5s);
    CHECK(b.now() == time_point{5s});
    b.set(time_point{2s});
    CHECK(a.now() == time_point{2s});
    manual_clock other;  // a fresh clock has its own time
    CHECK(other.now() == time_point{});
}

TEST_CASE("manual_clock starts where told and advances exactly", "[manual_clock]") {
    manual_clock clock(time_point{7s});
    CHECK(clock.now() == time_point{7s});
    clock.advance(1ns);
    CHECK(clock.now() == time_point{7s + 1ns});
    clock.advance(0ns);
    CHECK(clock.now() == time_point{7s + 1ns});
    clock.sleep_for(1s);
    CHECK(clock.now() == time_point{8s + 1ns});
    clock.sleep_for(-1s);  // a negative sleep is no sleep
    CHECK(clock.now() == time_point{8s + 1ns});
}

TEST_CASE("manual_clock::set moves time back and forth", "[manual_clock]") {
    manual_clock clock(time_point{10s});
    clock.set(time_point{3s});
    CHECK(clock.now() == time_point{3s});
    clock.set(time_point{30s});
    CHECK(clock.now() == time_point{30s});
}

TEST_CASE("manual_clock::sleep_until moves time forward and never back", "[manual_clock]") {
    manual_clock clock(time_point{10s});
    clock.sleep_until(time_point{12s});
    CHECK(clock.now() == time_point{12s});
    clock.sleep_until(time_point{11s});
    CHECK(clock.now() == time_point{12s});
    ratelimit::sleep_until(clock, time_point{13s});
    CHECK(clock.now() == time_point{13s});
}

TEST_CASE("manual_clock::advance(-1ns) throws invalid_argument naming d", "[manual_clock]") {
    manual_clock clock(time_point{10s});
    CHECK(contains(invalid_argument_message([&] { clock.advance(-1ns); }), "d must be >= 0, got -1ns"));
    CHECK(clock.now() == time_point{10s});
}

TEST_CASE("manual_clock saturates at time_point::max()", "[manual_clock]") {
    manual_clock clock(time_point::max() - 1s);
    clock.advance(1h);
    CHECK(clock.now() == time_point::max());
    clock.sleep_for(1h);
    CHECK(clock.now() == time_point::max());
}

TEST_CASE("token_bucket meets the limiter concepts", "[token_bucket]") {
    STATIC_REQUIRE(ratelimit::limiter<bucket>);
    STATIC_REQUIRE(ratelimit::refundable_limiter<bucket>);
    STATIC_REQUIRE(ratelimit::reservable_limiter<bucket>);
    STATIC_REQUIRE(ratelimit::limiter<ratelimit::token_bucket<>>);
    STATIC_REQUIRE(std::is_same_v<ratelimit::token_bucket<>::clock_type, std::chrono::steady_clock>);
}

// Regressions found by trying to break the bucket (issue 12).

TEST_CASE("cancel after a faster set_rate never lets two permits go at one instant at capacity 1", "[token_bucket]") {
    // Capacity 1 at 1/s: the grant at 0 empties it; the reservation is ready
    // at 1 s. After set_rate(1000/s) and a cancel at 10 ms, at most one permit
    // may go at 10 ms (the bound: capacity + rate·0). The cancel used to give
    // back debt the faster refill had already repaid: two went.
    manual_clock clock;
    bucket b(rate::per_second(1), 1, clock);
    REQUIRE(b.try_acquire());
    auto r = b.reserve(1);
    CHECK(r.ready_at() == time_point{1s});
    b.set_rate(rate::per_second(1000));
    clock.advance(10ms);
    int granted = b.try_acquire() ? 1 : 0;
    r.cancel();
    granted += b.try_acquire() ? 1 : 0;
    CHECK(granted <= 1);
    clock.set(time_point{1s + 1ms});
    CHECK(b.try_acquire());  // 1000/s from the reserved slot on
    CHECK_FALSE(b.try_acquire());
}

TEST_CASE("a reservation made before set_rate keeps its slot: a faster rate starts after it", "[token_bucket]") {
    // Capacity 2 at 1/s, emptied at 0 and 2 reserved: ready at 1 s and 2 s. At
    // 10/s the reserved permits still go at 1 s and 2 s, so the bucket is empty
    // at 2 s and refills at 10/s from there: nothing new before 2.1 s.
    manual_clock clock;
    bucket b(rate::per_second(1), 2, clock);
    REQUIRE(b.try_acquire(2));
    auto first = b.reserve(1);
    auto second = b.reserve(1);
    CHECK(second.ready_at() == time_point{2s});
    b.set_rate(rate::per_second(10));
    clock.set(time_point{2s});
    CHECK_FALSE(b.try_acquire());
    clock.set(time_point{2100ms});
    CHECK(b.try_acquire());
    CHECK_FALSE(b.try_acquire());
}

TEST_CASE("set_rate converts the state at a time read after it, not before", "[token_bucket]") {
    // The hook runs inside set_rate's clock read: another caller takes the
    // full bucket of 10 at 10 s. Converted at the stale 0 s, that grant would
    // look 10 s old, and the faster rate would hand out 10 more at 10 s.
    ratelimit_test::scripted_clock clock;
    ratelimit::token_bucket<ratelimit_test::scripted_clock> b(rate::per_second(1), 10, clock);
    clock.on_next_read([&] {
        clock.set(ratelimit_test::scripted_clock::time_point{10s});
        REQUIRE(b.try_acquire(10));
    });
    b.set_rate(rate::per_second(10));
    CHECK_FALSE(b.try_acquire());
    clock.advance(100ms);
    CHECK(b.try_acquire());
    CHECK_FALSE(b.try_acquire());
}

TEST_CASE("available() never counts a grant made after its clock read as debt", "[token_bucket]") {
    // Capacity 10 at 1/s, full. Inside available()'s clock read another
    // caller takes all 10 at 5 s; seen at a stale 0 s, that grant would read as
    // 5 permits of debt with nothing reserved.
    ratelimit_test::scripted_clock clock;
    ratelimit::token_bucket<ratelimit_test::scripted_clock> b(rate::per_second(1), 10, clock);
    clock.on_next_read([&] {
        clock.set(ratelimit_test::scripted_clock::time_point{5s});
        REQUIRE(b.try_acquire(10));
    });
    CHECK(b.available() >= 0);
    CHECK(b.available() == 0);
}

TEST_CASE("a clock that jumps 2^58 ns ahead and back between two reads does not livelock the bucket",
          "[token_bucket]") {
    // try_acquire reads a time past the tick range (it must move the origin);
    // every later read is back at 1 s. Rebasing to a fresh read never reached
    // the caller's time and looped forever.
    ratelimit_test::scripted_clock clock;
    clock.set(ratelimit_test::scripted_clock::time_point{1s});
    ratelimit::token_bucket<ratelimit_test::scripted_clock> b(rate::per_second(10), 5, clock);
    REQUIRE(b.try_acquire(5));
    const auto far = ratelimit_test::scripted_clock::time_point{std::chrono::nanoseconds{std::int64_t{1} << 58}};
    clock.set(far);
    clock.then_set(ratelimit_test::scripted_clock::time_point{1s});
    clock.allow_reads(1000);
    CHECK(b.try_acquire(5));  // refilled by the jump ahead
    // Back at 1 s, which counts as the latest time seen: nothing more.
    CHECK_FALSE(b.try_acquire(1));
    CHECK(b.available() == 0);
    CHECK(clock.reads() < 1000);
}

TEST_CASE("refund and cancel on a clock that jumped past the tick range return", "[token_bucket]") {
    ratelimit_test::scripted_clock clock;
    ratelimit::token_bucket<ratelimit_test::scripted_clock> b(rate::per_second(10), 5, clock);
    REQUIRE(b.try_acquire(5));
    auto r = b.reserve(1);
    clock.set(ratelimit_test::scripted_clock::time_point{std::chrono::nanoseconds{std::int64_t{1} << 60}});
    clock.allow_reads(1000);
    b.refund(2);
    r.cancel();
    CHECK(b.available() == 5);
    CHECK(b.time_until_available(5) == std::chrono::nanoseconds::zero());
}
