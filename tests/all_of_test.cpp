// all_of: a composite of same-unit limiters, all or nothing (refunds on
// failure), waiting for the latest part, on manual_clock.

#include <ratelimit/all_of.hpp>
#include <ratelimit/concurrency_limiter.hpp>
#include <ratelimit/token_bucket.hpp>

#include <chrono>
#include <cstdint>
#include <stdexcept>

#include "support/catch.hpp"

using namespace std::chrono_literals;
using ratelimit::manual_clock;
using ratelimit::rate;
using bucket = ratelimit::token_bucket<manual_clock>;

namespace {

// A part that grants whatever is asked while open and refuses while closed;
// it cannot refund, reserve or tell its wait. `calls` counts every attempt.
struct switch_limiter {
    using clock_type = manual_clock;
    using duration = manual_clock::duration;
    using time_point = manual_clock::time_point;
    bool open = true;
    int calls = 0;
    bool try_acquire(std::int64_t = 1) {
        ++calls;
        return open;
    }
    bool try_acquire_for(std::int64_t n, duration) { return try_acquire(n); }
    bool try_acquire_until(std::int64_t n, time_point) { return try_acquire(n); }
    duration acquire(std::int64_t = 1) {
        ++calls;
        if (!open) throw std::runtime_error("closed");
        return duration::zero();
    }
};

// A token bucket that hides time_until_available and capacity, so all_of
// finds its refusals only by trying: this exercises the undo paths.
struct opaque_bucket {
    using clock_type = manual_clock;
    using duration = manual_clock::duration;
    using time_point = manual_clock::time_point;
    bucket& inner;
    bool try_acquire(std::int64_t n = 1) { return inner.try_acquire(n); }
    bool try_acquire_for(std::int64_t n, duration d) { return inner.try_acquire_for(n, d); }
    bool try_acquire_until(std::int64_t n, time_point t) { return inner.try_acquire_until(n, t); }
    duration acquire(std::int64_t n = 1) { return inner.acquire(n); }
    ratelimit::reservation<manual_clock> reserve(std::int64_t n) { return inner.reserve(n); }
    void refund(std::int64_t n) { inner.refund(n); }
    const manual_clock& get_clock() const noexcept { return inner.get_clock(); }
};

}  // namespace

TEST_CASE("all_of meets the limiter concept and is refundable when every part is", "[all_of]") {
    manual_clock clock;
    bucket a(rate::per_second(10), 10, clock);
    bucket b(rate::per_minute(60), 3, clock);
    switch_limiter gate;
    auto both = ratelimit::all_of(a, b);
    auto gated = ratelimit::all_of(a, gate);  // the last part need not be refundable
    STATIC_REQUIRE(ratelimit::limiter<decltype(both)>);
    STATIC_REQUIRE(ratelimit::refundable_limiter<decltype(both)>);
    STATIC_REQUIRE(std::is_same_v<decltype(both)::clock_type, manual_clock>);
    STATIC_REQUIRE(ratelimit::limiter<decltype(gated)>);
    STATIC_REQUIRE_FALSE(ratelimit::refundable_limiter<decltype(gated)>);
}

TEST_CASE("a call is granted only when every part grants it", "[all_of]") {
    manual_clock clock;
    bucket per_second(rate::per_second(10), 10, clock);
    bucket per_minute(rate::per_minute(60), 3, clock);
    auto both = ratelimit::all_of(per_second, per_minute);
    CHECK(both.try_acquire(1));
    CHECK(both.try_acquire(2));
    CHECK_FALSE(both.try_acquire(1));  // per_minute is empty: 3 - 1 - 2 == 0
    CHECK(per_second.available() == 10 - 3);  // the refused call took nothing from per_second
    CHECK(per_minute.available() == 0);
    CHECK(both.available() == 0);
}

TEST_CASE("when a later part refuses, the earlier parts get their permits back", "[all_of]") {
    manual_clock clock;
    bucket first(rate::per_second(10), 10, clock);
    switch_limiter gate;
    auto gated = ratelimit::all_of(first, gate);
    gate.open = false;
    CHECK_FALSE(gated.try_acquire(4));
    CHECK(gate.calls == 1);                 // it was really asked, after `first` granted
    CHECK(first.available() == 10);         // and `first` got its 4 back
    CHECK_FALSE(gated.try_acquire_for(4, 1s));
    CHECK(first.available() == 10);
    CHECK_THROWS_AS(gated.acquire(4), std::runtime_error);  // a part that throws: the others are refunded, then rethrown
    CHECK(first.available() == 10);
    gate.open = true;
    CHECK(gated.try_acquire(4));
    CHECK(first.available() == 10 - 4);
}

TEST_CASE("a refusal found only by trying is undone on the parts that granted", "[all_of]") {
    manual_clock clock;
    bucket first(rate::per_second(10), 10, clock);
    bucket hidden(rate::per_second(1), 2, clock);
    opaque_bucket second{hidden};
    auto both = ratelimit::all_of(first, second);
    CHECK_FALSE(both.try_acquire(3));  // first grants 3, second (holding 2) refuses
    CHECK(first.available() == 10);
    CHECK(hidden.available() == 2);
    CHECK(both.capacity() == 10);  // second does not report a capacity
    // acquire(3) reserves on first, then second throws capacity_exceeded: first is refunded.
    CHECK_THROWS_AS(both.acquire(3), ratelimit::capacity_exceeded);
    CHECK(first.available() == 10);
    CHECK(hidden.available() == 2);
}

TEST_CASE("a reservation that would be ready after the deadline is undone on every part", "[all_of]") {
    manual_clock clock;
    bucket first(rate::per_second(10), 2, clock);
    bucket hidden(rate::per_second(2), 2, clock);
    opaque_bucket second{hidden};
    auto both = ratelimit::all_of(first, second);
    REQUIRE(hidden.try_acquire(2));  // second is empty: its next permit comes at 500 ms
    const auto start = clock.now();
    // first is full (it passes the pre-check); second cannot tell its wait, so
    // all_of reserves on both, sees 500 ms > 100 ms, and gives both back.
    CHECK_FALSE(both.try_acquire_for(1, 100ms));
    CHECK(clock.now() == start);
    CHECK(first.available() == 2);                    // refunded (it was usable at once)
    CHECK(hidden.time_until_available(1) == 500ms);   // cancelled (it lay in the future)
    CHECK(both.try_acquire_for(1, 500ms));
    CHECK(clock.now() - start == 500ms);
}

TEST_CASE("acquire waits for the latest part and serves callers in arrival order", "[all_of]") {
    manual_clock clock;
    bucket fast(rate::per_second(10), 1, clock);  // one permit every 100 ms
    bucket slow(rate::per_second(2), 1, clock);   // one permit every 500 ms
    auto both = ratelimit::all_of(fast, slow);
    const auto start = clock.now();
    CHECK(both.acquire() == 0s);
    CHECK(both.acquire() == 500ms);  // fast is ready at 100 ms, slow at 500 ms
    CHECK(clock.now() - start == 500ms);
    CHECK(both.acquire() == 500ms);  // the next slow permit, at 1 s
    CHECK(clock.now() - start == 1s);
}

TEST_CASE("a deadline before the latest part's earliest grant fails at once and takes nothing", "[all_of]") {
    manual_clock clock;
    bucket fast(rate::per_second(10), 1, clock);
    bucket slow(rate::per_second(2), 1, clock);
    auto both = ratelimit::all_of(fast, slow);
    REQUIRE(both.try_acquire(1));
    const auto start = clock.now();
    CHECK(both.time_until_available(1) == 500ms);
    CHECK_FALSE(both.try_acquire_for(1, 499ms));
    CHECK_FALSE(both.try_acquire_until(1, start + 499ms));
    CHECK(clock.now() == start);
    CHECK(fast.time_until_available(1) == 100ms);  // nothing taken from the fast part either
    CHECK(slow.time_until_available(1) == 500ms);
    CHECK(both.try_acquire_for(1, 500ms));
    CHECK(clock.now() - start == 500ms);
}

TEST_CASE("capacity is the smallest part capacity and n above it never blocks", "[all_of]") {
    manual_clock clock;
    bucket a(rate::per_second(10), 10, clock);
    bucket b(rate::per_minute(60), 3, clock);
    auto both = ratelimit::all_of(a, b);
    CHECK(both.capacity() == 3);
    const auto start = clock.now();
    CHECK_FALSE(both.try_acquire(4));
    CHECK_FALSE(both.try_acquire_for(4, 1h));
    CHECK_THROWS_AS(both.acquire(4), ratelimit::capacity_exceeded);
    CHECK(clock.now() == start);
    CHECK(a.available() == 10);
    CHECK(b.available() == 3);
}

TEST_CASE("refund gives the permits back to every part", "[all_of]") {
    manual_clock clock;
    bucket a(rate::per_second(10), 10, clock);
    bucket b(rate::per_minute(60), 3, clock);
    auto both = ratelimit::all_of(a, b);
    REQUIRE(both.try_acquire(3));
    both.refund(2);
    CHECK(a.available() == 10 - 3 + 2);
    CHECK(b.available() == 3 - 3 + 2);
}

TEST_CASE("time_until_available is the latest part's wait; available the smallest count", "[all_of]") {
    manual_clock clock;
    bucket a(rate::per_second(10), 10, clock);
    bucket b(rate::per_second(1), 5, clock);
    auto both = ratelimit::all_of(a, b);
    REQUIRE(both.try_acquire(5));
    CHECK(both.available() == 0);                 // min(10 - 5, 5 - 5)
    CHECK(both.time_until_available(2) == 2s);     // a: at once; b: 2 permits at 1 per second
    CHECK(both.time_until_available(0) == 0s);
}

TEST_CASE("a part that cannot reserve is taken in turn, and refunds still undo a refusal", "[all_of]") {
    manual_clock clock;
    bucket tokens(rate::per_second(10), 10, clock);
    ratelimit::concurrency_limiter<manual_clock> slots(1, clock);
    auto both = ratelimit::all_of(tokens, slots);
    CHECK(both.capacity() == 1);
    CHECK(both.acquire(1) == 0s);
    CHECK(tokens.available() == 9);
    CHECK(slots.in_use() == 1);
    CHECK_FALSE(both.try_acquire(1));  // no slot: the token is given back
    CHECK(tokens.available() == 9);
    // A timed call: the slot has no known earliest grant, so the call waits
    // (on the manual clock: sleeps) to its deadline, then gives the token back.
    const auto start = clock.now();
    CHECK_FALSE(both.try_acquire_for(1, 1s));
    CHECK(clock.now() - start == 1s);
    CHECK(tokens.available() == 10);  // 9 refilled to 10 during the second
    slots.release(1);
    CHECK(both.try_acquire_for(1, 1s));
    CHECK(slots.in_use() == 1);
    CHECK(tokens.available() == 9);
}
