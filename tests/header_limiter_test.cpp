// header_limiter on manual_clock: follows remaining/reset, merges conservatively, pauses on retry-after.

#include <chrono>
#include <optional>

#include <ratelimit/header_limiter.hpp>

#include "support/catch.hpp"

using namespace std::chrono_literals;
using ratelimit::header_limiter;
using ratelimit::manual_clock;
using ratelimit::quota_snapshot;
using ratelimit::quota_state;

namespace {

quota_snapshot requests(std::optional<std::int64_t> limit, std::optional<std::int64_t> remaining,
                        std::optional<std::chrono::nanoseconds> reset_after) {
    quota_snapshot s;
    s.requests = quota_state{limit, remaining, reset_after};
    return s;
}

}  // namespace

TEST_CASE("before any snapshot every request is granted", "[header_limiter]") {
    manual_clock clock;
    header_limiter<manual_clock> limiter(clock);
    for (int i = 0; i < 1000; ++i) REQUIRE(limiter.try_acquire(5));
    CHECK_FALSE(limiter.remaining());
}

TEST_CASE("grants while the server's remaining count allows, then waits for the reset", "[header_limiter]") {
    manual_clock clock;
    header_limiter<manual_clock> limiter(clock);
    limiter.update(requests(10, 3, 2s));
    CHECK(limiter.try_acquire(2));
    CHECK(limiter.try_acquire(1));
    CHECK_FALSE(limiter.try_acquire(1));
    const auto start = clock.now();
    CHECK(limiter.acquire(4) == 2s);  // the count resets to the limit of 10 after 2 s
    CHECK(clock.now() - start == 2s);
    CHECK(limiter.remaining() == 6);
}

TEST_CASE("try_acquire_for fails at once when the reset comes after the deadline", "[header_limiter]") {
    manual_clock clock;
    header_limiter<manual_clock> limiter(clock);
    limiter.update(requests(10, 0, 5s));
    const auto start = clock.now();
    CHECK_FALSE(limiter.try_acquire_for(1, 4s));
    CHECK(clock.now() == start);
    CHECK(limiter.try_acquire_for(1, 5s));
    CHECK(clock.now() - start == 5s);
}

TEST_CASE("an older response arriving after a newer one does not raise remaining", "[header_limiter]") {
    manual_clock clock;
    header_limiter<manual_clock> limiter(clock);
    limiter.update(requests(100, 40, 30s));  // the newer response
    limiter.update(requests(100, 55, 31s));  // an older one, late
    CHECK(limiter.remaining() == 40);
    limiter.update(requests(100, 20, 30s));  // lower: believed
    CHECK(limiter.remaining() == 20);
}

TEST_CASE("a window whose reset passed starts over from the server's new count", "[header_limiter]") {
    manual_clock clock;
    header_limiter<manual_clock> limiter(clock);
    limiter.update(requests(100, 0, 1s));
    clock.advance(1s);
    CHECK(limiter.remaining() == 100);
    limiter.update(requests(100, 97, 60s));
    CHECK(limiter.remaining() == 97);
}

TEST_CASE("retry-after pauses every grant", "[header_limiter]") {
    manual_clock clock;
    header_limiter<manual_clock> limiter(clock);
    quota_snapshot s;
    s.retry_after = 3s;
    limiter.update(s);
    CHECK_FALSE(limiter.try_acquire());
    clock.advance(3s);
    CHECK(limiter.try_acquire());
}

TEST_CASE("n above the known limit never blocks", "[header_limiter]") {
    manual_clock clock;
    header_limiter<manual_clock> limiter(clock);
    limiter.update(requests(5, 5, 1s));
    CHECK_FALSE(limiter.try_acquire(6));
    CHECK_FALSE(limiter.try_acquire_for(6, 1h));
    CHECK_THROWS_AS(limiter.acquire(6), ratelimit::capacity_exceeded);
    CHECK(limiter.remaining() == 5);
}

TEST_CASE("refund gives back up to the limit", "[header_limiter]") {
    manual_clock clock;
    header_limiter<manual_clock> limiter(clock);
    limiter.update(requests(5, 2, 10s));
    REQUIRE(limiter.try_acquire(2));
    limiter.refund(10);
    CHECK(limiter.remaining() == 5);
}

TEST_CASE("a remaining count without a reset time resets after the fallback", "[header_limiter]") {
    manual_clock clock;
    ratelimit::header_limiter_options options;
    options.fallback_reset = 2s;
    header_limiter<manual_clock> limiter(options, clock);
    limiter.update(requests(std::nullopt, 0, std::nullopt));
    CHECK_FALSE(limiter.try_acquire());
    clock.advance(2s);
    CHECK(limiter.try_acquire());  // the limit is unknown: after the reset nothing is known
}

TEST_CASE("the tokens dimension is followed when asked", "[header_limiter]") {
    manual_clock clock;
    ratelimit::header_limiter_options options;
    options.dimension = ratelimit::quota_dimension::tokens;
    header_limiter<manual_clock> limiter(options, clock);
    quota_snapshot s;
    s.tokens = quota_state{1000, 300, 1s};
    s.requests = quota_state{10, 0, 1s};
    limiter.update(s);
    CHECK(limiter.try_acquire(300));
    CHECK_FALSE(limiter.try_acquire(1));
}
