// The shared contract of ratelimit::limiter, checked on every limiter type.
// Each type's construction lives in tests/support/fixtures/<limiter>.hpp.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <limits>
#include <vector>

#include "support/catch.hpp"
#include "support/fixtures/adaptive_limiter.hpp"
#include "support/fixtures/all_of.hpp"
#include "support/fixtures/batched.hpp"
#include "support/fixtures/concurrency_limiter.hpp"
#include "support/fixtures/dual_bucket.hpp"
#include "support/fixtures/fixed_window.hpp"
#include "support/fixtures/header_limiter.hpp"
#include "support/fixtures/leaky_bucket.hpp"
#include "support/fixtures/sliding_window_counter.hpp"
#include "support/fixtures/sliding_window_log.hpp"
#include "support/fixtures/token_bucket.hpp"

using namespace std::chrono_literals;
using ratelimit::manual_clock;
using ratelimit_test::fixture;

#define RATELIMIT_CONFORMING_TYPES                                                                             \
    ratelimit::token_bucket<manual_clock>, ratelimit::dual_bucket<manual_clock>,                                  \
    ratelimit::leaky_bucket<manual_clock>, ratelimit::fixed_window<manual_clock>,                                 \
    ratelimit::sliding_window_log<manual_clock>, ratelimit::sliding_window_counter<manual_clock>,                 \
    ratelimit::concurrency_limiter<manual_clock>, ratelimit_test::owned_all_of,                                   \
    ratelimit::adaptive_limiter<manual_clock>, ratelimit::header_limiter<manual_clock>,                          \
    ratelimit_test::owned_batched

namespace {

/// Limiters whose permits come back with time (all but the concurrency limiter,
/// whose come back only by release).
template <class L>
constexpr bool refills_with_time = !std::is_same_v<L, ratelimit::concurrency_limiter<manual_clock>>;

template <class L>
std::int64_t grant_singles(L& limiter, std::int64_t most) {
    std::int64_t granted = 0;
    while (granted < most + 1 && limiter.try_acquire(1)) ++granted;
    return granted;
}

}  // namespace

TEMPLATE_TEST_CASE("every limiter meets the limiter concept", "[conformance]", RATELIMIT_CONFORMING_TYPES) {
    STATIC_REQUIRE(ratelimit::limiter<TestType>);
    STATIC_REQUIRE(std::is_same_v<typename TestType::clock_type, manual_clock>);
}

TEMPLATE_TEST_CASE("a fresh limiter grants exactly its burst at one instant", "[conformance]",
                   RATELIMIT_CONFORMING_TYPES) {
    manual_clock clock;
    auto limiter = fixture<TestType>::make(clock);
    CHECK(grant_singles(*limiter, fixture<TestType>::burst) == fixture<TestType>::burst);
    CHECK_FALSE(limiter->try_acquire(1));
}

TEMPLATE_TEST_CASE("n == 0 always succeeds at once, even when exhausted", "[conformance]",
                   RATELIMIT_CONFORMING_TYPES) {
    manual_clock clock;
    auto limiter = fixture<TestType>::make(clock);
    grant_singles(*limiter, fixture<TestType>::burst);
    const auto before = clock.now();
    CHECK(limiter->try_acquire(0));
    CHECK(limiter->try_acquire_for(0, 0ns));
    CHECK(limiter->try_acquire_until(0, before - 1s));
    CHECK(limiter->acquire(0) == TestType::duration::zero());
    CHECK(clock.now() == before);
}

TEMPLATE_TEST_CASE("a negative n throws invalid_argument naming n", "[conformance]", RATELIMIT_CONFORMING_TYPES) {
    manual_clock clock;
    auto limiter = fixture<TestType>::make(clock);
    CHECK_THROWS_AS(limiter->try_acquire(-1), std::invalid_argument);
    CHECK_THROWS_AS(limiter->try_acquire_for(-1, 1s), std::invalid_argument);
    CHECK_THROWS_AS(limiter->try_acquire_until(-1, clock.now() + 1s), std::invalid_argument);
    CHECK_THROWS_AS(limiter->acquire(-1), std::invalid_argument);
    try {
        (void)limiter->try_acquire(-7);
        FAIL("no exception");
    } catch (const std::invalid_argument& e) {
        CHECK(std::string(e.what()).find("-7") != std::string::npos);
    }
    CHECK(grant_singles(*limiter, fixture<TestType>::burst) == fixture<TestType>::burst);  // nothing taken
}

TEMPLATE_TEST_CASE("n above capacity never blocks and never succeeds", "[conformance]", RATELIMIT_CONFORMING_TYPES) {
    manual_clock clock;
    auto limiter = fixture<TestType>::make(clock);
    const std::int64_t too_many = fixture<TestType>::max_n + 1;
    const auto before = clock.now();
    CHECK_FALSE(limiter->try_acquire(too_many));
    CHECK_FALSE(limiter->try_acquire_for(too_many, 1h));
    CHECK_FALSE(limiter->try_acquire_until(too_many, before + 1h));
    CHECK_THROWS_AS(limiter->acquire(too_many), ratelimit::capacity_exceeded);
    CHECK(clock.now() == before);
    CHECK(grant_singles(*limiter, fixture<TestType>::burst) == fixture<TestType>::burst);  // nothing taken
}

TEMPLATE_TEST_CASE("the largest n is granted to a fresh limiter", "[conformance]", RATELIMIT_CONFORMING_TYPES) {
    manual_clock clock;
    auto limiter = fixture<TestType>::make(clock);
    (void)limiter->acquire(fixture<TestType>::max_n);
    CHECK_FALSE(limiter->try_acquire(1));
}

TEMPLATE_TEST_CASE("a failed call changes nothing", "[conformance]", RATELIMIT_CONFORMING_TYPES) {
    manual_clock clock;
    auto limiter = fixture<TestType>::make(clock);
    const std::int64_t burst = fixture<TestType>::burst;
    for (std::int64_t i = 0; i < burst - 1; ++i) REQUIRE(limiter->try_acquire(1));
    // One single is left: asking for two fails and leaves it.
    CHECK_FALSE(limiter->try_acquire(2));
    CHECK_FALSE(limiter->try_acquire_for(2, 1ns));
    CHECK_FALSE(limiter->try_acquire_until(2, clock.now()));
    CHECK(limiter->try_acquire(1));
    CHECK_FALSE(limiter->try_acquire(1));
}

TEMPLATE_TEST_CASE("a deadline before the earliest grant fails without sleeping in vain", "[conformance]",
                   RATELIMIT_CONFORMING_TYPES) {
    manual_clock clock;
    auto limiter = fixture<TestType>::make(clock);
    grant_singles(*limiter, fixture<TestType>::burst);
    const auto before = clock.now();
    CHECK_FALSE(limiter->try_acquire_for(1, 1ns));
    CHECK(clock.now() - before <= 1ns);
    CHECK_FALSE(limiter->try_acquire_until(1, clock.now() + 1ns));
    CHECK(clock.now() - before <= 2ns);
}

TEMPLATE_TEST_CASE("a deadline already past behaves as try_acquire", "[conformance]", RATELIMIT_CONFORMING_TYPES) {
    manual_clock clock{manual_clock::time_point{1h}};
    auto limiter = fixture<TestType>::make(clock);
    auto other = fixture<TestType>::make(clock);  // a burst may be a single permit
    const auto before = clock.now();
    CHECK(limiter->try_acquire_until(1, before - 1s));
    CHECK(other->try_acquire_for(1, -1s));
    CHECK(clock.now() == before);
    grant_singles(*limiter, fixture<TestType>::burst);
    CHECK_FALSE(limiter->try_acquire_until(1, before - 1s));
    CHECK(clock.now() == before);
}

TEMPLATE_TEST_CASE("a limiter recovers its burst", "[conformance]", RATELIMIT_CONFORMING_TYPES) {
    manual_clock clock;
    auto limiter = fixture<TestType>::make(clock);
    const std::int64_t burst = fixture<TestType>::burst;
    REQUIRE(grant_singles(*limiter, burst) == burst);
    fixture<TestType>::recover(*limiter, clock);
    CHECK(grant_singles(*limiter, burst) == burst);
}

TEMPLATE_TEST_CASE("threads racing at one instant get exactly the burst", "[conformance][thread]",
                   RATELIMIT_CONFORMING_TYPES) {
    manual_clock clock;
    auto limiter = fixture<TestType>::make(clock);
    constexpr int threads = 8;
    std::atomic<std::int64_t> granted{0};
    std::atomic<bool> go{false};
    std::vector<std::thread> workers;
    for (int i = 0; i < threads; ++i) {
        workers.emplace_back([&] {
            while (!go.load()) std::this_thread::yield();
            for (int attempt = 0; attempt < 200; ++attempt) {
                if (limiter->try_acquire(1)) granted.fetch_add(1);
            }
        });
    }
    go.store(true);
    for (auto& worker : workers) worker.join();
    CHECK(granted.load() == fixture<TestType>::burst);
}

TEMPLATE_TEST_CASE("n = INT64_MAX is refused at once on every path, with any deadline, and takes nothing",
                   "[conformance]", RATELIMIT_CONFORMING_TYPES) {
    constexpr std::int64_t huge = std::numeric_limits<std::int64_t>::max();
    manual_clock clock;
    auto limiter = fixture<TestType>::make(clock);
    const auto before = clock.now();
    for (const std::int64_t n : {huge, huge - 1, huge / 2 + 1}) {
        CHECK_FALSE(limiter->try_acquire(n));
        CHECK_FALSE(limiter->try_acquire_for(n, TestType::duration::max()));
        CHECK_FALSE(limiter->try_acquire_until(n, TestType::time_point::max()));
        CHECK_THROWS_AS(limiter->acquire(n), ratelimit::capacity_exceeded);
    }
    CHECK(clock.now() == before);
    CHECK(grant_singles(*limiter, fixture<TestType>::burst) == fixture<TestType>::burst);  // nothing taken
}

TEMPLATE_TEST_CASE("deadlines of time_point::max() and duration::max() grant at once when there is room",
                   "[conformance]", RATELIMIT_CONFORMING_TYPES) {
    manual_clock clock;
    auto limiter = fixture<TestType>::make(clock);
    auto other = fixture<TestType>::make(clock);  // a burst may be a single permit
    const auto before = clock.now();
    CHECK(limiter->try_acquire_until(1, TestType::time_point::max()));
    CHECK(other->try_acquire_for(1, TestType::duration::max()));
    CHECK(clock.now() == before);
}

TEMPLATE_TEST_CASE("a deadline of time_point::max() waits only until the permits come back", "[conformance]",
                   RATELIMIT_CONFORMING_TYPES) {
    if constexpr (refills_with_time<TestType>) {
        manual_clock clock;
        auto limiter = fixture<TestType>::make(clock);
        grant_singles(*limiter, fixture<TestType>::burst);
        const auto before = clock.now();
        CHECK(limiter->try_acquire_until(1, TestType::time_point::max()));
        CHECK(clock.now() - before <= std::chrono::nanoseconds{std::chrono::hours{1}});
        const auto second = clock.now();
        grant_singles(*limiter, fixture<TestType>::burst);
        CHECK(limiter->try_acquire_for(1, TestType::duration::max()));
        CHECK(clock.now() - second <= std::chrono::nanoseconds{std::chrono::hours{1}});
    }
}

TEMPLATE_TEST_CASE("a clock that jumps 2^58 ns ahead and back keeps every call returning and the burst bound",
                   "[conformance]", RATELIMIT_CONFORMING_TYPES) {
    // Exhausted at 1 h; the clock jumps 9 years ahead (past the token
    // buckets' tick range, so they move their origin) and back to 1 h. A time
    // earlier than one already seen counts as that later time, so the jump
    // back adds nothing to what the jump ahead allowed: at most one burst.
    const manual_clock::time_point start{std::chrono::hours{1}};
    manual_clock clock{start};
    auto limiter = fixture<TestType>::make(clock);
    const std::int64_t burst = fixture<TestType>::burst;
    REQUIRE(grant_singles(*limiter, burst) == burst);
    clock.set(start + std::chrono::nanoseconds{std::int64_t{1} << 58});
    const std::int64_t ahead = grant_singles(*limiter, burst);
    if constexpr (refills_with_time<TestType>) CHECK(ahead >= 1);
    clock.set(start);
    const std::int64_t back = grant_singles(*limiter, burst);
    CHECK(ahead + back <= burst);
    CHECK_FALSE(limiter->try_acquire_for(1, 1ns));
    CHECK(limiter->try_acquire(0));
}
