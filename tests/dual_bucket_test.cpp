// dual_bucket: one request and n tokens per call, all or nothing in both
// directions, waiting for the later bucket, on manual_clock.

#include <ratelimit/dual_bucket.hpp>

#include <chrono>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "support/catch.hpp"

using namespace std::chrono_literals;
using ratelimit::manual_clock;
using ratelimit::rate;
using bucket_type = ratelimit::dual_bucket<manual_clock>;

TEST_CASE("a dual bucket meets the limiter, refundable and reservable concepts", "[dual_bucket]") {
    STATIC_REQUIRE(ratelimit::limiter<bucket_type>);
    STATIC_REQUIRE(ratelimit::refundable_limiter<bucket_type>);
    STATIC_REQUIRE(ratelimit::reservable_limiter<bucket_type>);
    STATIC_REQUIRE(ratelimit::limiter<ratelimit::dual_bucket<>>);
}

TEST_CASE("non-positive capacities throw and name the argument", "[dual_bucket]") {
    manual_clock clock;
    try {
        bucket_type bad(rate::per_second(1), 0, rate::per_second(1), 10, clock);
        FAIL("no exception");
    } catch (const std::invalid_argument& e) {
        CHECK(std::string(e.what()).find("request_capacity must be > 0, got 0") != std::string::npos);
    }
    try {
        bucket_type bad(rate::per_second(1), 10, rate::per_second(1), -5, clock);
        FAIL("no exception");
    } catch (const std::invalid_argument& e) {
        CHECK(std::string(e.what()).find("token_capacity must be > 0, got -5") != std::string::npos);
    }
}

TEST_CASE("each call charges one request and n tokens", "[dual_bucket]") {
    manual_clock clock;
    bucket_type bucket(rate::per_second(10), 10, rate::per_second(100), 100, clock);
    CHECK(bucket.try_acquire(30));
    CHECK(bucket.available_requests() == 10 - 1);
    CHECK(bucket.available_tokens() == 100 - 30);
    CHECK(bucket.try_acquire(1));
    CHECK(bucket.available_requests() == 10 - 2);
    CHECK(bucket.available_tokens() == 100 - 31);
}

TEST_CASE("a call refused for lack of tokens leaves the request bucket as it was", "[dual_bucket]") {
    manual_clock clock;
    bucket_type bucket(rate::per_second(10), 10, rate::per_second(100), 100, clock);
    REQUIRE(bucket.try_acquire(80));
    CHECK_FALSE(bucket.try_acquire(30));               // 30 > 100 - 80
    CHECK_FALSE(bucket.try_acquire_for(30, 99ms));     // 10 more tokens take 100 ms
    CHECK_FALSE(bucket.try_acquire_until(30, clock.now()));
    CHECK(bucket.available_requests() == 10 - 1);  // only the first call's request
    CHECK(bucket.available_tokens() == 20);
}

TEST_CASE("a call refused for lack of requests leaves the token bucket as it was", "[dual_bucket]") {
    manual_clock clock;
    bucket_type bucket(rate::per_second(1), 2, rate::per_second(100), 100, clock);
    REQUIRE(bucket.try_acquire(1));
    REQUIRE(bucket.try_acquire(1));
    CHECK_FALSE(bucket.try_acquire(1));              // both requests spent
    CHECK_FALSE(bucket.try_acquire_for(1, 999ms));   // the next request comes after 1 s
    CHECK(bucket.available_tokens() == 100 - 2);
    CHECK(bucket.available_requests() == 0);
}

TEST_CASE("a call with zero tokens still charges one request", "[dual_bucket]") {
    manual_clock clock;
    bucket_type bucket(rate::per_second(1), 2, rate::per_second(100), 100, clock);
    CHECK(bucket.try_acquire(0));
    CHECK(bucket.available_requests() == 2 - 1);
    CHECK(bucket.available_tokens() == 100);
    CHECK(bucket.acquire(0) == 0s);
    CHECK(bucket.available_requests() == 0);
    CHECK_FALSE(bucket.try_acquire(0));  // no request left: even a call without tokens waits
    CHECK(bucket.acquire(0) == 1s);      // one request per second
}

TEST_CASE("a timed call waits for the later of the two buckets", "[dual_bucket]") {
    manual_clock clock;
    // 1 request per second, 10 tokens per second.
    bucket_type bucket(rate::per_second(1), 1, rate::per_second(10), 10, clock);
    REQUIRE(bucket.try_acquire(10));  // both empty
    // Next request at 1 s; 5 tokens at 0.5 s: the request is later.
    CHECK(bucket.time_until_available(5) == 1s);
    const auto start = clock.now();
    CHECK(bucket.try_acquire_for(5, 2s));
    CHECK(clock.now() - start == 1s);
    // At 1 s: the next request comes at 2 s, 10 tokens (5 there + 5 more) at 1.5 s.
    CHECK(bucket.time_until_available(10) == 1s);
    CHECK(bucket.available_tokens() == 10 - 5);  // refilled 10 by 1 s, took 5
}

TEST_CASE("a deadline before the later bucket fails at once and takes nothing", "[dual_bucket]") {
    manual_clock clock;
    bucket_type bucket(rate::per_second(1), 1, rate::per_second(10), 10, clock);
    REQUIRE(bucket.try_acquire(10));
    const auto start = clock.now();
    CHECK_FALSE(bucket.try_acquire_for(5, 999ms));  // tokens ready at 500 ms, the request at 1 s
    CHECK(clock.now() == start);
    CHECK(bucket.time_until_available(5) == 1s);  // nothing was taken from either bucket
    CHECK(bucket.time_until_available(0) == 1s);
    CHECK(bucket.available_tokens() == 0);
}

TEST_CASE("acquire sleeps until the later bucket is ready and returns that time", "[dual_bucket]") {
    manual_clock clock;
    // 10 requests per second, 100 tokens per second.
    bucket_type bucket(rate::per_second(10), 10, rate::per_second(100), 100, clock);
    REQUIRE(bucket.try_acquire(100));
    const auto start = clock.now();
    CHECK(bucket.acquire(50) == 500ms);  // tokens: 50 / 100 per second; the request is there
    CHECK(clock.now() - start == 500ms);
    CHECK(bucket.acquire(0) == 0s);  // 8 requests + 5 refilled by 500 ms; no tokens needed
}

TEST_CASE("blocking callers are served in arrival order: each reservation is ready after the last",
          "[dual_bucket]") {
    manual_clock clock;
    bucket_type bucket(rate::per_second(10), 10, rate::per_second(100), 100, clock);
    REQUIRE(bucket.try_acquire(100));
    auto first = bucket.reserve(50);
    auto second = bucket.reserve(10);
    CHECK(first.ready_at() - clock.now() == 500ms);
    CHECK(second.ready_at() - clock.now() == 600ms);  // behind the first, although smaller
    CHECK(first.count() == 50);
    second.wait();
    CHECK(clock.now().time_since_epoch() == 600ms);
}

TEST_CASE("cancelling a reservation gives back its request and its tokens", "[dual_bucket]") {
    manual_clock clock;
    bucket_type bucket(rate::per_second(10), 10, rate::per_second(100), 100, clock);
    REQUIRE(bucket.try_acquire(100));
    auto r = bucket.reserve(50);
    CHECK(bucket.available_tokens() == -50);
    CHECK(bucket.available_requests() == 8);
    r.cancel();
    CHECK(bucket.available_tokens() == 0);
    CHECK(bucket.available_requests() == 9);
}

TEST_CASE("n above the token capacity never blocks", "[dual_bucket]") {
    manual_clock clock;
    bucket_type bucket(rate::per_second(10), 10, rate::per_second(100), 100, clock);
    const auto start = clock.now();
    CHECK_FALSE(bucket.try_acquire(101));
    CHECK_FALSE(bucket.try_acquire_for(101, 1h));
    CHECK_THROWS_AS(bucket.acquire(101), ratelimit::capacity_exceeded);
    CHECK_THROWS_AS((void)bucket.reserve(101), ratelimit::capacity_exceeded);
    CHECK(bucket.time_until_available(101) == bucket_type::duration::max());
    CHECK(clock.now() == start);
    CHECK(bucket.available_requests() == 10);
    CHECK(bucket.available_tokens() == 100);
    CHECK(bucket.try_acquire(100));  // the capacity itself is fine
}

TEST_CASE("refund_tokens gives back tokens only; refund gives back the whole call", "[dual_bucket]") {
    manual_clock clock;
    bucket_type bucket(rate::per_second(10), 10, rate::per_second(100), 100, clock);
    REQUIRE(bucket.try_acquire(60));
    bucket.refund_tokens(20);  // estimated 60, used 40
    CHECK(bucket.available_tokens() == 100 - 40);
    CHECK(bucket.available_requests() == 10 - 1);
    bucket.refund(40);  // the call was never made
    CHECK(bucket.available_tokens() == 100);
    CHECK(bucket.available_requests() == 10);
    bucket.refund(40);  // never beyond full
    CHECK(bucket.available_tokens() == 100);
    CHECK(bucket.available_requests() == 10);
    CHECK_THROWS_AS(bucket.refund_tokens(-1), std::invalid_argument);
}

TEST_CASE("the two buckets' rates and capacities are reported and can be changed", "[dual_bucket]") {
    manual_clock clock;
    bucket_type bucket(rate::per_minute(60), 5, rate::per_minute(6000), 1000, clock);
    CHECK(bucket.request_rate() == rate::per_second(1));
    CHECK(bucket.token_rate() == rate::per_second(100));
    CHECK(bucket.request_capacity() == 5);
    CHECK(bucket.token_capacity() == 1000);
    CHECK(bucket.capacity() == 1000);
    bucket.set_token_capacity(200);
    CHECK(bucket.available_tokens() == 200);  // a full bucket capped at the new capacity
    CHECK_FALSE(bucket.try_acquire(201));
    bucket.set_request_rate(rate::per_second(2));
    REQUIRE(bucket.try_acquire(200));
    CHECK(bucket.acquire(0) == 0s);  // 5 requests: 3 left
    bucket.set_request_capacity(1);  // 3 requests capped at 1
    CHECK(bucket.available_requests() == 1);
    bucket.set_token_rate(rate::per_second(400));
    CHECK(bucket.time_until_available(200) == 500ms);  // 200 tokens at 400 per second
    CHECK_THROWS_AS(bucket.set_request_capacity(0), std::invalid_argument);
}
