// What the Redis limiters do when Redis is gone or slow: the configured
// policy answers within connect_timeout + command_timeout, the circuit
// breaker spares later calls the timeout, and the same connection recovers.
// Each test runs its own redis-server, which it kills (-9) or pauses.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <limits>
#include <optional>
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

// --- an outage that begins mid-run (issue 14, item 17) ------------------------
// Redis is stopped (SIGSTOP) after it has granted, the local fallback answers on
// a manual clock, and Redis comes back with its state. The local limiter must
// start empty (what Redis granted is in use already) and what it grants must be
// taken from the shared state when Redis answers again, so that the processes
// together keep the shared bound across the outage.

namespace {

/// Waits (real time, bounded) until the breaker lets the next call probe the server.
void until_circuit_closes(const ratelimit::redis::connection& c) {
    for (int i = 0; i < 200 && c.circuit_open(); ++i) std::this_thread::sleep_for(10ms);
    REQUIRE_FALSE(c.circuit_open());
}

}  // namespace

TEST_CASE("local_fallback: a token bucket whose outage begins after Redis granted starts empty, refills at the share, and Redis is charged for it") {
    auto server = ratelimit_test::redis_server::start();
    ratelimit::redis::connection c("127.0.0.1", server->port(), quick);
    ratelimit::manual_clock clock;
    // Shared: 10 permits, 10 per hour (no refill worth a permit in the test's real seconds).
    // Local at share 0.5: 5 permits, 5 per hour = one every 12 minutes.
    ratelimit::redis::token_bucket<ratelimit::manual_clock> b(c, "mid-run-tb", rate::per_hour(10), 10,
                                                              with(on_error::local_fallback, 0.5), clock);
    REQUIRE(b.try_acquire(8));  // Redis: 2 left
    server->pause();
    CHECK_FALSE(b.try_acquire());  // the local bucket starts empty, not with 5 on top of Redis's 8
    CHECK(b.outages() == 1);
    clock.advance(12min);
    CHECK(b.try_acquire());  // refilled at the share: 1 permit per 12 minutes
    CHECK_FALSE(b.try_acquire());
    clock.advance(12min);
    CHECK(b.try_acquire());  // 8 from Redis + 2 local = 10: the shared capacity
    server->resume();
    until_circuit_closes(c);
    // Redis first takes the 2 local grants: 2 - 2 = 0 left for this call.
    CHECK_FALSE(b.try_acquire());
    REQUIRE(b.available().has_value());
    CHECK(*b.available() <= 0);
}

namespace {

/// The same scenario for a window limiter: limit 10 per 48 h (Redis's window
/// aligned at the epoch, so no boundary passes in the test's real seconds),
/// the local one 5 per 48 h aligned at the manual clock's start.
template <class Window>
void check_window_outage(const char* key) {
    auto server = ratelimit_test::redis_server::start();
    ratelimit::redis::connection c("127.0.0.1", server->port(), quick);
    ratelimit::manual_clock clock;
    Window w(c, key, 10, 48h, with(on_error::local_fallback, 0.5), clock);
    REQUIRE(w.try_acquire(8));  // Redis: 2 left in this window
    server->pause();
    CHECK_FALSE(w.try_acquire());  // the local window starts full: Redis's 8 are in use
    CHECK(w.outages() == 1);
    clock.advance(96h);            // two local windows later (the counter weighs the previous one)
    CHECK(w.try_acquire(2));       // owed to Redis
    server->resume();
    until_circuit_closes(c);
    CHECK_FALSE(w.try_acquire());  // Redis: 8 + the 2 owed = 10, full
}

}  // namespace

TEST_CASE("local_fallback: a fixed window whose outage begins mid-run starts full locally and is charged after") {
    check_window_outage<ratelimit::redis::fixed_window<ratelimit::manual_clock>>("mid-run-fw");
}

TEST_CASE("local_fallback: a sliding window log whose outage begins mid-run starts full locally and is charged after") {
    check_window_outage<ratelimit::redis::sliding_window_log<ratelimit::manual_clock>>("mid-run-swl");
}

TEST_CASE("local_fallback: a sliding window counter whose outage begins mid-run starts full locally and is charged after") {
    check_window_outage<ratelimit::redis::sliding_window_counter<ratelimit::manual_clock>>("mid-run-swc");
}

TEST_CASE("local_fallback: batched takes its batches from the wrapped limiter's fallback, which starts empty mid-run") {
    auto server = ratelimit_test::redis_server::start();
    ratelimit::redis::connection c("127.0.0.1", server->port(), quick);
    ratelimit::manual_clock clock;
    ratelimit::redis::token_bucket<ratelimit::manual_clock> b(c, "mid-run-batched", rate::per_hour(10), 10,
                                                              with(on_error::local_fallback, 0.5), clock);
    ratelimit::redis::batched<ratelimit::redis::token_bucket<ratelimit::manual_clock>> pooled(b, 4, 1h, clock);
    REQUIRE(pooled.try_acquire());  // a batch of 4 from Redis, 3 pooled
    REQUIRE(b.try_acquire(6));      // Redis: 0 left
    REQUIRE(pooled.try_acquire(3)); // the pool
    server->pause();
    CHECK_FALSE(pooled.try_acquire());  // neither a batch nor 1 from the local bucket: it starts empty
    clock.advance(12min);
    CHECK(pooled.try_acquire());  // 1 refilled locally (a batch of 4 is not there yet)
    CHECK_FALSE(pooled.try_acquire());
}

TEST_CASE("local_fallback: a concurrency limiter whose outage begins mid-run lends locally only the leases it gives back") {
    auto server = ratelimit_test::redis_server::start();
    ratelimit::redis::connection c("127.0.0.1", server->port(), quick);
    ratelimit::manual_clock clock;
    // Shared: 4 at once. Local at share 0.5: 2 at once.
    ratelimit::redis::concurrency_limiter<ratelimit::manual_clock> l(c, "mid-run-leases", 4, std::chrono::hours(1),
                                                                     with(on_error::local_fallback, 0.5), clock);
    REQUIRE(l.try_acquire(2));  // 2 Redis leases, live through the outage
    server->pause();
    CHECK_FALSE(l.try_acquire());  // not 2 more locally on top of the 2 Redis still counts
    l.release(1);                  // a lease given back (its removal waits for Redis)
    CHECK(l.try_acquire());        // its place, locally
    CHECK_FALSE(l.try_acquire());
    CHECK(l.held() == 2);
    server->resume();
    until_circuit_closes(c);
    REQUIRE(l.in_use() == std::optional<std::int64_t>(1));  // the removal reached Redis; the local permit is not a lease
    l.release(2);  // the local permit and the last lease
    CHECK(l.held() == 0);
}
