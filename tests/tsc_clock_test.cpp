// tsc_clock: a clock, monotonic, close to steady_clock, and usable by a limiter.

#include <chrono>
#include <cstdint>
#include <thread>

#include <ratelimit/token_bucket.hpp>
#include <ratelimit/tsc_clock.hpp>

#include "support/catch.hpp"

using namespace std::chrono_literals;
using ratelimit::tsc_clock;

TEST_CASE("tsc_clock meets the clock concept and costs a limiter no space", "[tsc_clock]") {
    STATIC_REQUIRE(ratelimit::clock<tsc_clock>);
    STATIC_REQUIRE(sizeof(ratelimit::token_bucket<tsc_clock>) ==
                   sizeof(ratelimit::token_bucket<std::chrono::steady_clock>));
    INFO("reads the invariant TSC: " << tsc_clock::uses_tsc());
    SUCCEED();
}

TEST_CASE("tsc_clock never goes back on one thread", "[tsc_clock]") {
    auto previous = tsc_clock::now();
    for (int i = 0; i < 200'000; ++i) {
        const auto now = tsc_clock::now();
        REQUIRE(now >= previous);
        previous = now;
    }
}

TEST_CASE("tsc_clock tracks steady_clock", "[tsc_clock]") {
    // Generous: a loaded machine may deschedule us between the two reads.
    const auto steady_start = std::chrono::steady_clock::now();
    const auto tsc_start = tsc_clock::now();
    CHECK(std::chrono::abs(tsc_start.time_since_epoch() - steady_start.time_since_epoch()) < 50ms);
    std::this_thread::sleep_for(100ms);
    const auto steady_elapsed = std::chrono::steady_clock::now() - steady_start;
    const auto tsc_elapsed = tsc_clock::now() - tsc_start;
    CHECK(std::chrono::abs(tsc_elapsed - steady_elapsed) < 20ms);
}

TEST_CASE("a token bucket runs on tsc_clock", "[tsc_clock]") {
    ratelimit::token_bucket<tsc_clock> bucket(ratelimit::rate::per_hour(1), 3);
    CHECK(bucket.try_acquire(3));
    CHECK_FALSE(bucket.try_acquire(1));
    CHECK(bucket.time_until_available(1) > 59min);
}
