// redis::token_bucket against a real redis-server: the limiter contract on
// the server's clock. Times are real, so waits are checked with wide margins.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>

#include <ratelimit/redis.hpp>

#include "support/catch.hpp"
#include "support/redis_server.hpp"

namespace {

using namespace std::chrono_literals;
using ratelimit::rate;
using bucket = ratelimit::redis::token_bucket<>;

static_assert(ratelimit::limiter<bucket>);
static_assert(ratelimit::refundable_limiter<bucket>);
static_assert(ratelimit::reservable_limiter<bucket>);

ratelimit::redis::connection& shared_connection() {
    static ratelimit::redis::connection c("127.0.0.1", ratelimit_test::redis_server::shared().port(),
                                          {1000ms, 1000ms, 4});
    return c;
}

/// A key no other test (or earlier run) uses.
std::string unique_key(const std::string& name) {
    static std::atomic<int> counter{0};
    return name + "-" + std::to_string(::getpid()) + "-" + std::to_string(counter++);
}

std::int64_t grants(bucket& b, int attempts) {
    std::int64_t granted = 0;
    for (int i = 0; i < attempts; ++i) granted += b.try_acquire() ? 1 : 0;
    return granted;
}

double elapsed_ms(std::chrono::steady_clock::time_point since) {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - since).count();
}

}  // namespace

TEST_CASE("a fresh bucket grants its capacity at once, then refuses") {
    bucket b(shared_connection(), unique_key("fresh"), rate::per_hour(1), 5);
    CHECK(grants(b, 8) == 5);
    CHECK(b.outages() == 0);
}

TEST_CASE("two limiters on one key share one bucket") {
    const std::string key = unique_key("shared");
    bucket a(shared_connection(), key, rate::per_hour(1), 6);
    bucket b(shared_connection(), key, rate::per_hour(1), 6);
    CHECK(a.try_acquire(4));
    CHECK_FALSE(b.try_acquire(3));  // 2 left
    CHECK(b.try_acquire(2));
    CHECK_FALSE(a.try_acquire());
}

TEST_CASE("a refused request takes nothing (all or nothing)") {
    bucket b(shared_connection(), unique_key("all-or-nothing"), rate::per_hour(1), 5);
    CHECK(b.try_acquire(3));
    CHECK_FALSE(b.try_acquire(3));
    CHECK(b.available() == 2);
    CHECK(b.try_acquire(2));
}

TEST_CASE("n == 0, n < 0 and n above capacity follow the shared contract") {
    bucket b(shared_connection(), unique_key("arguments"), rate::per_hour(1), 3);
    CHECK(b.try_acquire(0));
    CHECK(b.acquire(0) == bucket::duration::zero());
    CHECK_THROWS_WITH(b.try_acquire(-1), Catch::Contains("n must be >= 0, got -1"));
    const auto start = std::chrono::steady_clock::now();
    CHECK_FALSE(b.try_acquire_for(4, 10s));
    CHECK(elapsed_ms(start) < 1000);
    CHECK_THROWS_AS(b.acquire(4), ratelimit::capacity_exceeded);
    CHECK(b.available() == 3);
}

TEST_CASE("bad construction arguments name themselves") {
    CHECK_THROWS_WITH(bucket(shared_connection(), "k", rate::per_second(1), 0), Catch::Contains("capacity must be > 0"));
    CHECK_THROWS_WITH(bucket(shared_connection(), "", rate::per_second(1), 1), Catch::Contains("key must be"));
    CHECK_THROWS_WITH(bucket(shared_connection(), "a{b}", rate::per_second(1), 1), Catch::Contains("key must be"));
    ratelimit::redis::options bad;
    bad.fallback_share = 1.5;
    CHECK_THROWS_WITH(bucket(shared_connection(), "k", rate::per_second(1), 1, bad),
                      Catch::Contains("fallback_share must be in (0, 1]"));
    CHECK_THROWS_WITH(ratelimit::redis::connection("127.0.0.1", 0), Catch::Contains("port must be in [1, 65535], got 0"));
}

TEST_CASE("try_acquire_for waits for the refill, and refuses at once when the deadline is too near") {
    // Wide margins: the sanitizer builds on a loaded machine take milliseconds per call.
    bucket b(shared_connection(), unique_key("wait"), rate::per_second(1), 1);  // one permit a second
    CHECK(b.try_acquire());
    auto start = std::chrono::steady_clock::now();
    CHECK_FALSE(b.try_acquire_for(1, 200ms));  // the next permit is ~1 s away
    CHECK(elapsed_ms(start) < 200);            // did not sleep in vain
    start = std::chrono::steady_clock::now();
    CHECK(b.try_acquire_for(1, 3s));
    const double waited = elapsed_ms(start);
    CHECK(waited > 400);
    CHECK(waited < 2500);
}

TEST_CASE("acquire reserves and sleeps: n waiters are spaced by the interval") {
    bucket b(shared_connection(), unique_key("acquire"), rate::per_second(50), 1);  // 20 ms apart
    CHECK(b.try_acquire());
    const auto start = std::chrono::steady_clock::now();
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
        threads.emplace_back([&] {
            for (int i = 0; i < 3; ++i) (void)b.acquire();
        });
    }
    for (auto& t : threads) t.join();
    // 12 permits at 20 ms apart after an empty start: at least 11 intervals.
    CHECK(elapsed_ms(start) >= 200);
}

TEST_CASE("refund gives permits back, never beyond a full bucket") {
    bucket b(shared_connection(), unique_key("refund"), rate::per_hour(1), 4);
    CHECK(b.try_acquire(3));
    b.refund(2);
    CHECK(b.available() == 3);
    b.refund(10);
    CHECK(b.available() == 4);
    CHECK_THROWS_WITH(b.refund(-1), Catch::Contains("n must be >= 0"));
}

TEST_CASE("the state key carries a hash tag and a TTL until the bucket is full again") {
    bucket b(shared_connection(), unique_key("ttl"), rate::per_second(1), 10);
    CHECK(b.key().find(":{") != std::string::npos);
    CHECK(b.try_acquire(3));  // full again in 3 s
    const ratelimit::redis::reply r = shared_connection().command({"PTTL", b.key()});
    REQUIRE(r.ok());
    CHECK(r.get()->integer > 1000);
    CHECK(r.get()->integer <= 3002);
}

TEST_CASE("time_until_available reports the wait without taking anything") {
    bucket b(shared_connection(), unique_key("until"), rate::per_second(1), 2);
    CHECK(b.time_until_available(2) == bucket::duration::zero());
    CHECK(b.try_acquire(2));
    const auto wait = b.time_until_available(1);
    REQUIRE(wait.has_value());
    CHECK(*wait > 500ms);  // 1 s less the time since try_acquire
    CHECK(*wait <= 1s);
    CHECK(b.available() == 0);
}

TEST_CASE("after SCRIPT FLUSH the next call loads the script again and decides as before") {
    bucket b(shared_connection(), unique_key("flush"), rate::per_hour(1), 3);
    CHECK(b.try_acquire(2));
    REQUIRE(shared_connection().command({"SCRIPT", "FLUSH"}).ok());
    CHECK(b.try_acquire());
    CHECK_FALSE(b.try_acquire());
    CHECK(b.outages() == 0);
}

TEST_CASE("over one real second a fast bucket grants no more than capacity + rate * T") {
    bucket b(shared_connection(), unique_key("rate"), rate::per_second(200), 10);
    const auto start = std::chrono::steady_clock::now();
    std::int64_t granted = 0;
    while (std::chrono::steady_clock::now() - start < 500ms) granted += b.try_acquire() ? 1 : 0;
    const double seconds = elapsed_ms(start) / 1000.0;
    CHECK(granted <= 10 + static_cast<std::int64_t>(200 * seconds) + 1);
    CHECK(granted >= 50);  // it does refill (wide margin for a loaded machine)
}

TEST_CASE("reserve takes permits ahead of time and says when they are usable") {
    bucket b(shared_connection(), unique_key("reserve"), rate::per_second(2), 1);  // one permit every 500 ms
    REQUIRE(b.try_acquire());
    const auto before = std::chrono::steady_clock::now();
    ratelimit::reservation<std::chrono::steady_clock> r = b.reserve(1);
    CHECK(r.count() == 1);
    CHECK(r.ready_at() - before > 250ms);
    CHECK(r.ready_at() - before <= 600ms);
    CHECK_FALSE(b.try_acquire());  // the next permit is this reservation's
    r.wait();
    CHECK(std::chrono::steady_clock::now() >= r.ready_at());
    CHECK_THROWS_AS(b.reserve(2), ratelimit::capacity_exceeded);
}

TEST_CASE("cancel gives back what later reservations did not take (x/time/rate's rule, on the server)") {
    bucket b(shared_connection(), unique_key("cancel"), rate::per_second(2), 1);  // 500 ms apart
    REQUIRE(b.try_acquire());
    auto first = b.reserve(1);   // ready in ~500 ms
    auto second = b.reserve(1);  // ready in ~1000 ms
    const auto wait_before = b.time_until_available(1);
    REQUIRE(wait_before.has_value());
    CHECK(*wait_before > 1000ms);  // the next free slot is ~1500 ms away
    first.cancel();                // a later reservation took the slot after it: nothing comes back
    CHECK(*b.time_until_available(1) > 1000ms);
    second.cancel();               // the last reservation gives back all of it
    const auto wait_after = b.time_until_available(1);
    CHECK(*wait_after <= 1000ms);
    CHECK(*wait_after > 500ms);
    second.cancel();  // acts once
    CHECK(*b.time_until_available(1) > 500ms);
}

TEST_CASE("a reservation past its ready time gives nothing back") {
    bucket b(shared_connection(), unique_key("cancel-late"), rate::per_hour(1), 2);
    auto r = b.reserve(2);  // ready at once: its ready time is this call's server time
    CHECK(b.available() == 0);
    r.cancel();  // a later round trip: the server's now is past ready_at
    CHECK(b.available() == 0);  // the permits stay taken
}

TEST_CASE("after 2^51 ticks of continuous debt the state's origin moves to now and the debt is kept") {
    // A bucket saturated for 39 hours keeps its first origin (it is never full).
    // Craft that state: origin 2^51 ticks + 1 s ago, one permit (10^9 ns = 1.6e10
    // ticks at the finest tick, 2^-4 ns) of debt.
    bucket b(shared_connection(), unique_key("rebase"), rate::per_second(1), 3);
    const ratelimit::redis::reply time = shared_connection().command({"TIME"});
    REQUIRE(time.ok());
    const std::int64_t now_us = std::stoll(std::string(time.get()->element[0]->str, time.get()->element[0]->len)) *
                                    1'000'000 +
                                std::stoll(std::string(time.get()->element[1]->str, time.get()->element[1]->len));
    const std::int64_t ticks_per_us = 16'000;
    const std::int64_t age_us = (std::int64_t{1} << 51) / ticks_per_us + 1'000'000;
    const std::int64_t origin_us = now_us - age_us;
    const std::int64_t now_ticks = age_us * ticks_per_us;
    const std::int64_t tat = now_ticks + 16'000'000'000;  // one permit of debt: 2 of 3 left
    REQUIRE(shared_connection()
                .command({"HSET", b.key(), "o", std::to_string(origin_us), "s", "4", "t", std::to_string(tat)})
                .ok());
    REQUIRE(shared_connection().command({"PEXPIRE", b.key(), "60000"}).ok());

    CHECK(b.try_acquire());  // rebases, then takes one: 1 left
    const ratelimit::redis::reply state = shared_connection().command({"HMGET", b.key(), "o", "t"});
    REQUIRE(state.ok());
    const std::int64_t new_origin = std::stoll(std::string(state.get()->element[0]->str, state.get()->element[0]->len));
    const std::int64_t new_tat = std::stoll(std::string(state.get()->element[1]->str, state.get()->element[1]->len));
    CHECK(new_origin >= now_us);                // moved to the call's now
    CHECK(new_origin - now_us < 5'000'000);
    CHECK(new_tat >= 2 * 16'000'000'000 - std::int64_t{16'000} * 5'000'000);  // two permits of debt from the new origin
    CHECK(new_tat <= 2 * 16'000'000'000);
    CHECK(b.available() == 1);
    CHECK(b.try_acquire());
    CHECK_FALSE(b.try_acquire());
}
