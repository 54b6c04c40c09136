// What the Redis limiters do when Redis is gone or slow: the configured
// policy answers within connect_timeout + command_timeout, the circuit
// breaker spares later calls the timeout, and the same connection recovers.
// Each test runs its own redis-server, which it kills (-9) or pauses.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <limits>
#include <string>
#include <thread>

#include <ratelimit/redis.hpp>

#include "support/catch.hpp"
#include "support/redis_server.hpp"

namespace {

using namespace std::chrono_literals;
using ratelimit::rate;
using ratelimit::redis::on_error;
using bucket = ratelimit::redis::token_bucket<>;

const ratelimit::redis::connection_options quick{100ms, 100ms, 2, 300ms};
// connect + command timeout, plus slack for a loaded machine.
constexpr double bound_ms = 200 + 300;

ratelimit::redis::options with(on_error policy, double share = 1.0) {
    ratelimit::redis::options o;
    o.policy = policy;
    o.fallback_share = share;
    return o;
}

double elapsed_ms(std::chrono::steady_clock::time_point since) {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - since).count();
}

template <class F>
double timed_ms(F&& f) {
    const auto start = std::chrono::steady_clock::now();
    f();
    return elapsed_ms(start);
}

}  // namespace

TEST_CASE("after kill -9, fail_closed refuses within the timeouts and the breaker answers later calls at once") {
    auto server = ratelimit_test::redis_server::start();
    ratelimit::redis::connection c("127.0.0.1", server->port(), quick);
    bucket b(c, "closed", rate::per_hour(1), 100, with(on_error::fail_closed));
    REQUIRE(b.try_acquire());
    server->kill9();

    bool granted = true;
    CHECK(timed_ms([&] { granted = b.try_acquire(); }) < bound_ms);
    CHECK_FALSE(granted);
    CHECK(c.circuit_open());
    int refused = 0;
    const double many = timed_ms([&] {
        for (int i = 0; i < 1000; ++i) refused += b.try_acquire() ? 0 : 1;
    });
    CHECK(refused == 1000);
    CHECK(many < 100);  // no call paid a timeout
    CHECK(b.outages() == 1001);
    CHECK_THROWS_AS(b.acquire(), ratelimit::redis::unavailable);
}

TEST_CASE("after kill -9, fail_open grants and acquire returns at once") {
    auto server = ratelimit_test::redis_server::start();
    ratelimit::redis::connection c("127.0.0.1", server->port(), quick);
    bucket b(c, "open", rate::per_hour(1), 1, with(on_error::fail_open));
    REQUIRE(b.try_acquire());
    REQUIRE_FALSE(b.try_acquire());  // Redis says empty
    server->kill9();
    bool granted = false;
    CHECK(timed_ms([&] { granted = b.try_acquire(); }) < bound_ms);
    CHECK(granted);
    CHECK(timed_ms([&] { (void)b.acquire(); }) < bound_ms);
    CHECK(b.try_acquire_for(1, 10s));
}

TEST_CASE("local_fallback answers with an in-process bucket at fallback_share of the limit") {
    auto server = ratelimit_test::redis_server::start();
    ratelimit::redis::connection c("127.0.0.1", server->port(), quick);
    bucket b(c, "fallback", rate::per_hour(1), 10, with(on_error::local_fallback, 0.5));
    server->kill9();
    int granted = 0;
    CHECK(timed_ms([&] {
              for (int i = 0; i < 20; ++i) granted += b.try_acquire() ? 1 : 0;
          }) < bound_ms);
    CHECK(granted == 5);  // 10 * 0.5
}

TEST_CASE("a connection recovers when the server comes back on the same port") {
    auto server = ratelimit_test::redis_server::start();
    ratelimit::redis::connection c("127.0.0.1", server->port(), quick);
    bucket b(c, "recover", rate::per_hour(1), 3, with(on_error::fail_closed));
    REQUIRE(b.try_acquire(3));
    server->kill9();
    CHECK_FALSE(b.try_acquire());
    server->restart();  // an empty server: the bucket is full again
    int granted = 0;
    for (int i = 0; i < 300 && granted == 0; ++i) {  // the breaker lets a probe through after 300 ms
        granted += b.try_acquire() ? 1 : 0;
        std::this_thread::sleep_for(10ms);
    }
    CHECK(granted == 1);
    CHECK_FALSE(c.circuit_open());
    CHECK(b.try_acquire(2));
    CHECK_FALSE(b.try_acquire());
}

TEST_CASE("a paused server is a slow server: calls time out into the policy, then work again") {
    auto server = ratelimit_test::redis_server::start();
    ratelimit::redis::connection c("127.0.0.1", server->port(), quick);
    bucket b(c, "paused", rate::per_hour(1), 5, with(on_error::fail_open));
    REQUIRE(b.try_acquire(5));
    REQUIRE(server->command("CLIENT PAUSE 700 ALL"));
    bool granted = false;
    CHECK(timed_ms([&] { granted = b.try_acquire(); }) < bound_ms);
    CHECK(granted);  // fail_open during the pause
    CHECK(b.outages() == 1);
    std::this_thread::sleep_for(900ms);  // pause over, breaker cooled down
    CHECK_FALSE(b.try_acquire());        // Redis answers again: still empty
    CHECK(b.outages() == 1);
}

TEST_CASE("threads calling during an outage all return within the bound") {
    auto server = ratelimit_test::redis_server::start();
    ratelimit::redis::connection c("127.0.0.1", server->port(), quick);
    bucket b(c, "threads", rate::per_hour(1), 100, with(on_error::fail_closed));
    REQUIRE(b.try_acquire());
    server->kill9();
    std::atomic<int> granted{0};
    std::atomic<int> slow{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 8; ++t) {
        threads.emplace_back([&] {
            for (int i = 0; i < 50; ++i) {
                bool ok = false;
                if (timed_ms([&] { ok = b.try_acquire(); }) > 2 * bound_ms) ++slow;
                granted += ok ? 1 : 0;
            }
        });
    }
    for (auto& t : threads) t.join();
    CHECK(granted == 0);
    CHECK(slow == 0);
}

TEST_CASE("a server that never existed is an outage, not an exception") {
    ratelimit::redis::connection c("127.0.0.1", 1, quick);  // nothing listens on port 1
    bucket closed(c, "none", rate::per_second(1), 1, with(on_error::fail_closed));
    CHECK_FALSE(closed.try_acquire());
    CHECK_FALSE(closed.available().has_value());
}

TEST_CASE("reserve during an outage follows the policy") {
    auto server = ratelimit_test::redis_server::start();
    ratelimit::redis::connection c("127.0.0.1", server->port(), quick);
    bucket closed(c, "reserve-closed", rate::per_hour(1), 2, with(on_error::fail_closed));
    bucket open(c, "reserve-open", rate::per_hour(1), 2, with(on_error::fail_open));
    bucket local(c, "reserve-local", rate::per_hour(1), 2, with(on_error::local_fallback, 0.5));
    server->kill9();
    CHECK_THROWS_AS(closed.reserve(1), ratelimit::redis::unavailable);
    auto granted = open.reserve(2);
    CHECK(granted.ready_at() <= std::chrono::steady_clock::now());
    auto from_local = local.reserve(1);  // the local bucket holds 2 * 0.5 = 1, refilled every 2 hours
    CHECK(from_local.ready_at() <= std::chrono::steady_clock::now());
    CHECK_FALSE(local.try_acquire());
    auto ahead = local.reserve(1);  // ready in about 2 hours
    CHECK(ahead.ready_at() - std::chrono::steady_clock::now() > 1h);
    ahead.cancel();  // goes back to the local bucket it came from
    auto again = local.reserve(1);
    CHECK(again.ready_at() - ahead.ready_at() < 1min);  // the same slot, not the one after it
    CHECK(local.outages() == 4);
}

TEST_CASE("kill -9 while threads are calling: no call hangs, the policy answers, and calls recover after restart") {
    auto server = ratelimit_test::redis_server::start();
    ratelimit::redis::connection c("127.0.0.1", server->port(), quick);
    bucket b(c, "mid-run", rate::per_second(1000), 1000, with(on_error::fail_closed));
    std::atomic<bool> stop{false};
    std::atomic<int> slow{0};
    std::atomic<std::int64_t> granted_after_restart{0};
    std::atomic<bool> restarted{false};
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
        threads.emplace_back([&] {
            while (!stop) {
                bool ok = false;
                if (timed_ms([&] { ok = b.try_acquire(); }) > 2 * bound_ms) ++slow;
                if (ok && restarted) ++granted_after_restart;
            }
        });
    }
    std::this_thread::sleep_for(300ms);
    server->kill9();  // mid-run: calls are in flight
    std::this_thread::sleep_for(500ms);
    const std::uint64_t outages_while_down = b.outages();
    server->restart();
    restarted = true;
    std::this_thread::sleep_for(1000ms);  // the breaker probes after 300 ms
    stop = true;
    for (auto& t : threads) t.join();
    CHECK(slow == 0);
    CHECK(outages_while_down > 0);
    CHECK(granted_after_restart > 0);
    CHECK_FALSE(c.circuit_open());
}

TEST_CASE("the local fallback's limit is floor(limit · share) within [1, limit], with no overflow at INT64_MAX") {
    using ratelimit::redis::detail::fallback_limit;
    constexpr std::int64_t huge = std::numeric_limits<std::int64_t>::max();
    CHECK(fallback_limit(100, 0.25) == 25);
    CHECK(fallback_limit(3, 0.1) == 1);              // never below 1
    CHECK(fallback_limit(huge, 1.0) == huge);        // 2^63 as a double is not cast back
    CHECK(fallback_limit(huge, 0.999999) < huge);
    CHECK(fallback_limit(huge, 0.5) == huge / 2 + 1);  // 2^62 exactly: the double of INT64_MAX is 2^63
    CHECK(fallback_limit(huge, 1.0, 1000) == 1000);  // at most what the local limiter holds
}
