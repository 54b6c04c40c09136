// The shared limiter contract, checked on every Redis-backed limiter against a
// real server: n == 0, bad arguments, capacity_exceeded, all or nothing,
// deadlines that are too near, and threads. Each type says how to build a
// fresh limiter whose whole burst is available now and does not refill
// during a test (see redis_fixture below).

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>

#include <ratelimit/redis.hpp>

#include "support/catch.hpp"
#include "support/redis_server.hpp"

namespace {

using namespace std::chrono_literals;

ratelimit::redis::connection& shared_connection() {
    static ratelimit::redis::connection c("127.0.0.1", ratelimit_test::redis_server::shared().port(),
                                          {1000ms, 1000ms, 8});
    return c;
}

std::string unique_key() {
    static std::atomic<int> counter{0};
    return "conformance-" + std::to_string(::getpid()) + "-" + std::to_string(counter++);
}

template <class L>
struct redis_fixture;

/// A bucket of 5 refilled once an hour.
template <>
struct redis_fixture<ratelimit::redis::token_bucket<>> {
    static constexpr std::int64_t burst = 5;
    static std::unique_ptr<ratelimit::redis::token_bucket<>> make() {
        return std::make_unique<ratelimit::redis::token_bucket<>>(shared_connection(), unique_key(),
                                                                   ratelimit::rate::per_hour(1), burst);
    }
};

/// 5 per day (windows aligned at the epoch): a new window starts during a test only at midnight UTC.
template <class L>
struct window_fixture {
    static constexpr std::int64_t burst = 5;
    static std::unique_ptr<L> make() {
        return std::make_unique<L>(shared_connection(), unique_key(), burst, std::chrono::hours(24));
    }
};
template <>
struct redis_fixture<ratelimit::redis::fixed_window<>> : window_fixture<ratelimit::redis::fixed_window<>> {};
template <>
struct redis_fixture<ratelimit::redis::sliding_window_log<>> : window_fixture<ratelimit::redis::sliding_window_log<>> {};
template <>
struct redis_fixture<ratelimit::redis::sliding_window_counter<>>
    : window_fixture<ratelimit::redis::sliding_window_counter<>> {};

/// 5 slots whose leases outlive the test.
template <>
struct redis_fixture<ratelimit::redis::concurrency_limiter<>> {
    static constexpr std::int64_t burst = 5;
    static constexpr bool waits_for_release = true;  // a release may come any time: waits to the deadline
    static std::unique_ptr<ratelimit::redis::concurrency_limiter<>> make() {
        return std::make_unique<ratelimit::redis::concurrency_limiter<>>(shared_connection(), unique_key(), burst,
                                                                          std::chrono::hours(1));
    }
};

template <class L>
constexpr bool waits_for_release() {
    if constexpr (requires { redis_fixture<L>::waits_for_release; }) {
        return redis_fixture<L>::waits_for_release;
    } else {
        return false;
    }
}

double elapsed_ms(std::chrono::steady_clock::time_point since) {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - since).count();
}

}  // namespace

#define RATELIMIT_REDIS_TYPES                                                                          \
    ratelimit::redis::token_bucket<>, ratelimit::redis::concurrency_limiter<>, ratelimit::redis::fixed_window<>, \
    ratelimit::redis::sliding_window_log<>, ratelimit::redis::sliding_window_counter<>

TEMPLATE_TEST_CASE("a Redis limiter meets the limiter concept", "[conformance]", RATELIMIT_REDIS_TYPES) {
    STATIC_REQUIRE(ratelimit::limiter<TestType>);
}

TEMPLATE_TEST_CASE("a fresh Redis limiter grants its burst, then refuses", "[conformance]", RATELIMIT_REDIS_TYPES) {
    auto l = redis_fixture<TestType>::make();
    for (std::int64_t i = 0; i < redis_fixture<TestType>::burst; ++i) CHECK(l->try_acquire());
    CHECK_FALSE(l->try_acquire());
    CHECK(l->outages() == 0);
}

TEMPLATE_TEST_CASE("n == 0 always succeeds at once, even when empty", "[conformance]", RATELIMIT_REDIS_TYPES) {
    auto l = redis_fixture<TestType>::make();
    REQUIRE(l->try_acquire(redis_fixture<TestType>::burst));
    CHECK(l->try_acquire(0));
    CHECK(l->try_acquire_for(0, 0ms));
    CHECK(l->acquire(0) == TestType::duration::zero());
}

TEMPLATE_TEST_CASE("n < 0 throws invalid_argument naming n", "[conformance]", RATELIMIT_REDIS_TYPES) {
    auto l = redis_fixture<TestType>::make();
    CHECK_THROWS_WITH(l->try_acquire(-1), Catch::Contains("n must be >= 0, got -1"));
    CHECK_THROWS_WITH(l->try_acquire_for(-2, 1s), Catch::Contains("got -2"));
    CHECK_THROWS_WITH(l->acquire(-3), Catch::Contains("got -3"));
}

TEMPLATE_TEST_CASE("n above the burst never blocks: false at once, acquire throws", "[conformance]",
                   RATELIMIT_REDIS_TYPES) {
    auto l = redis_fixture<TestType>::make();
    const std::int64_t too_many = redis_fixture<TestType>::burst + 1;
    const auto start = std::chrono::steady_clock::now();
    CHECK_FALSE(l->try_acquire(too_many));
    CHECK_FALSE(l->try_acquire_for(too_many, 10s));
    CHECK(elapsed_ms(start) < 1000);
    CHECK_THROWS_AS(l->acquire(too_many), ratelimit::capacity_exceeded);
    CHECK(l->try_acquire(redis_fixture<TestType>::burst));  // nothing was taken
}

TEMPLATE_TEST_CASE("a failed request takes nothing", "[conformance]", RATELIMIT_REDIS_TYPES) {
    auto l = redis_fixture<TestType>::make();
    const std::int64_t burst = redis_fixture<TestType>::burst;
    REQUIRE(l->try_acquire(burst - 1));
    CHECK_FALSE(l->try_acquire(2));
    CHECK(l->try_acquire(1));
    CHECK_FALSE(l->try_acquire(1));
}

TEMPLATE_TEST_CASE("a deadline too near returns false at once instead of sleeping in vain", "[conformance]",
                   RATELIMIT_REDIS_TYPES) {
    auto l = redis_fixture<TestType>::make();
    REQUIRE(l->try_acquire(redis_fixture<TestType>::burst));
    auto start = std::chrono::steady_clock::now();
    if constexpr (waits_for_release<TestType>()) {
        CHECK_FALSE(l->try_acquire_for(1, 200ms));  // no release comes: waits to the deadline, not beyond
        CHECK(elapsed_ms(start) >= 150);
        CHECK(elapsed_ms(start) < 1500);
    } else {
        CHECK_FALSE(l->try_acquire_for(1, 2s));  // the next permit is far away
        CHECK(elapsed_ms(start) < 1000);
    }
    start = std::chrono::steady_clock::now();
    CHECK_FALSE(l->try_acquire_until(1, std::chrono::steady_clock::now() - 1s));  // a past deadline acts as now
    CHECK(elapsed_ms(start) < 1000);
}

TEMPLATE_TEST_CASE("threads together are granted exactly the burst", "[conformance][threads]",
                   RATELIMIT_REDIS_TYPES) {
    auto l = redis_fixture<TestType>::make();
    std::atomic<std::int64_t> granted{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 8; ++t) {
        threads.emplace_back([&] {
            for (int i = 0; i < 20; ++i) granted += l->try_acquire() ? 1 : 0;
        });
    }
    for (auto& t : threads) t.join();
    CHECK(granted == redis_fixture<TestType>::burst);
}
