// redis::concurrency_limiter against a real redis-server: leases shared by
// several objects on one key, RAII permits, a crashed holder's leases coming
// back after lease_ttl, renew, waits, and the outage policies.

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <ratelimit/redis/concurrency_limiter.hpp>
#include <ratelimit/redis/connection.hpp>

#include "support/catch.hpp"
#include "support/redis_server.hpp"

namespace {

using namespace std::chrono_literals;
using ratelimit::redis::concurrency_limiter;
using ratelimit::redis::connection;
using ratelimit::redis::detail::verdict;
using steady = std::chrono::steady_clock;

const ratelimit::redis::connection_options patient{1000ms, 2000ms};

connection& server_connection() {
    static connection c("127.0.0.1", ratelimit_test::redis_server::shared().port(), patient);
    return c;
}
/// A second connection: another "process" as far as the server can tell.
connection& other_connection() {
    static connection c("127.0.0.1", ratelimit_test::redis_server::shared().port(), patient);
    return c;
}

/// A key no other test (or concurrent test process) uses.
std::string unique_key(const std::string& name) { return name + "-" + std::to_string(::getpid()); }

double seconds_since(steady::time_point start) {
    return std::chrono::duration<double>(steady::now() - start).count();
}

}  // namespace

TEST_CASE("the Lua decide agrees with detail::decide_leases on every small case") {
    const ratelimit::redis::script s(std::string(ratelimit::redis::detail::lua::lease_math) +
                                     "\nreturn {decide(tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]))}\n");
    int checked = 0;
    for (std::int64_t max = 1; max <= 4; ++max) {
        for (std::int64_t in_use = 0; in_use <= 6; ++in_use) {
            for (std::int64_t n = 0; n <= 6; ++n) {
                const auto expected = ratelimit::redis::detail::decide_leases(in_use, max, n);
                const std::string text[] = {std::to_string(in_use), std::to_string(max), std::to_string(n)};
                const std::string_view args[] = {text[0], text[1], text[2]};
                const ratelimit::redis::reply r = server_connection().eval(s, {}, args);
                INFO("in_use " << in_use << ", max " << max << ", n " << n << ": " << r.error());
                REQUIRE(r.ok());
                CHECK(r.integer_at(0, -1) == static_cast<long long>(expected.outcome));
                CHECK(r.integer_at(1, -1) == expected.expiries);
                ++checked;
            }
        }
    }
    CHECK(checked == 4 * 7 * 7);
    // The arithmetic, once by hand: 3 of max 4 held, 3 more need 3 + 3 - 4 = 2 expiries.
    CHECK(ratelimit::redis::detail::decide_leases(3, 4, 3).outcome == verdict::too_late);
    CHECK(ratelimit::redis::detail::decide_leases(3, 4, 3).expiries == 2);
    CHECK(ratelimit::redis::detail::decide_leases(3, 4, 1).outcome == verdict::granted);
    CHECK(ratelimit::redis::detail::decide_leases(0, 4, 5).outcome == verdict::never);
}

TEST_CASE("two objects on one key share max_concurrent") {
    const std::string key = unique_key("conc-share");
    concurrency_limiter<> a(server_connection(), key, 3, 10s);
    concurrency_limiter<> b(other_connection(), key, 3, 10s);
    REQUIRE(a.try_acquire(2));
    REQUIRE(b.try_acquire(1));  // 2 + 1 = 3 of 3
    CHECK_FALSE(a.try_acquire(1));
    CHECK_FALSE(b.try_acquire(1));
    CHECK(a.in_use() == std::optional<std::int64_t>(3));
    CHECK(b.in_use() == std::optional<std::int64_t>(3));
    CHECK(a.held() == 2);
    CHECK(b.held() == 1);
    a.release(1);  // 3 - 1 = 2: room for one, whoever asks
    CHECK(b.try_acquire(1));
    CHECK_FALSE(a.try_acquire(1));
    a.release(1);
    b.release(2);
    CHECK(a.in_use() == std::optional<std::int64_t>(0));
}

TEST_CASE("threads on two objects never hold more than max_concurrent at once") {
    const std::string key = unique_key("conc-threads");
    constexpr std::int64_t max = 3;
    concurrency_limiter<> a(server_connection(), key, max, 10s);
    concurrency_limiter<> b(other_connection(), key, max, 10s);
    std::atomic<int> inside{0};
    std::atomic<int> most{0};
    std::atomic<int> grants{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 6; ++t) {
        concurrency_limiter<>& mine = t % 2 == 0 ? a : b;
        threads.emplace_back([&] {
            for (int i = 0; i < 40; ++i) {
                if (!mine.try_acquire(1)) continue;
                const int now_inside = inside.fetch_add(1) + 1;
                int seen = most.load();
                while (now_inside > seen && !most.compare_exchange_weak(seen, now_inside)) {
                }
                grants.fetch_add(1);
                std::this_thread::sleep_for(1ms);
                inside.fetch_sub(1);
                mine.release(1);
            }
        });
    }
    for (std::thread& t : threads) t.join();
    CHECK(most.load() <= max);
    CHECK(grants.load() > 0);
    CHECK(a.held() == 0);
    CHECK(b.held() == 0);
    CHECK(a.in_use() == std::optional<std::int64_t>(0));
}

TEST_CASE("a refused try_acquire adds no lease") {
    concurrency_limiter<> limiter(server_connection(), unique_key("conc-refused"), 3, 10s);
    REQUIRE(limiter.try_acquire(2));
    CHECK_FALSE(limiter.try_acquire(2));  // 2 + 2 > 3: all or nothing
    CHECK(limiter.in_use() == std::optional<std::int64_t>(2));
    CHECK(limiter.held() == 2);
    CHECK(limiter.try_acquire(1));  // 2 + 1 = 3
    limiter.release(3);
}

TEST_CASE("n == 0 succeeds at once, n < 0 throws, n above max_concurrent never waits") {
    concurrency_limiter<> limiter(server_connection(), unique_key("conc-edges"), 3, 10s);
    CHECK(limiter.try_acquire(0));
    CHECK(limiter.acquire(0) == steady::duration::zero());
    CHECK(limiter.held() == 0);
    CHECK_THROWS_AS(limiter.try_acquire(-1), std::invalid_argument);
    CHECK_THROWS_AS(limiter.release(-1), std::invalid_argument);
    const auto start = steady::now();
    CHECK_FALSE(limiter.try_acquire_for(4, 10s));
    CHECK(seconds_since(start) < 1.0);
    CHECK_THROWS_AS(limiter.acquire(4), ratelimit::capacity_exceeded);
    CHECK_THROWS_AS((void)limiter.lease(4), ratelimit::capacity_exceeded);
    CHECK(limiter.in_use() == std::optional<std::int64_t>(0));
}

TEST_CASE("constructor arguments are checked and named") {
    connection& c = server_connection();
    CHECK_THROWS_WITH(concurrency_limiter<>(c, "k", 0, 1s), Catch::Contains("max_concurrent") && Catch::Contains("0"));
    CHECK_THROWS_WITH(concurrency_limiter<>(c, "k", 1, 0ms), Catch::Contains("lease_ttl"));
    CHECK_THROWS_WITH(concurrency_limiter<>(c, "k{x}", 1, 1s), Catch::Contains("key"));
    ratelimit::redis::options o;
    o.fallback_share = 0;
    CHECK_THROWS_WITH(concurrency_limiter<>(c, "k", 1, 1s, o), Catch::Contains("fallback_share"));
}

TEST_CASE("the key carries a hash tag and lives lease_ttl past its latest lease") {
    concurrency_limiter<> limiter(server_connection(), unique_key("conc-key"), 2, 5s);
    CHECK(limiter.key() == "ratelimit:{" + unique_key("conc-key") + "}:leases");
    REQUIRE(limiter.try_acquire(1));
    const ratelimit::redis::reply ttl = server_connection().command({"PTTL", limiter.key()});
    REQUIRE(ttl.ok());
    // The lease expires 5 s from now; the key 5 s after that: PTTL in (5000, 10000].
    CHECK(ttl.get()->integer > 5000);
    CHECK(ttl.get()->integer <= 10000);
    const ratelimit::redis::reply members = server_connection().command({"ZRANGE", limiter.key(), "0", "-1"});
    REQUIRE(members.ok());
    REQUIRE(members.get()->elements == 1);
    CHECK(std::string(members.get()->element[0]->str).starts_with(limiter.owner() + ":"));
    limiter.release(1);
    const ratelimit::redis::reply gone = server_connection().command({"EXISTS", limiter.key()});
    CHECK(gone.get()->integer == 0);  // an empty set is no key at all
}

TEST_CASE("a permit releases its leases when destroyed, once") {
    concurrency_limiter<> limiter(server_connection(), unique_key("conc-permit"), 3, 10s);
    {
        auto p = limiter.lease(2);
        CHECK(p.count() == 2);
        CHECK(static_cast<bool>(p));
        CHECK(limiter.in_use() == std::optional<std::int64_t>(2));
        auto moved = std::move(p);
        CHECK(p.count() == 0);  // NOLINT(bugprone-use-after-move): moved-from holds nothing
        CHECK(moved.count() == 2);
        CHECK_FALSE(limiter.try_lease(2).has_value());  // 2 + 2 > 3
    }
    CHECK(limiter.in_use() == std::optional<std::int64_t>(0));
    CHECK(limiter.held() == 0);
    auto q = limiter.try_lease(3);
    REQUIRE(q.has_value());
    q->release();
    q->release();  // the second does nothing
    CHECK(limiter.in_use() == std::optional<std::int64_t>(0));
}

TEST_CASE("a permit releases its own leases, not the most recent ones") {
    concurrency_limiter<> a(server_connection(), unique_key("conc-own"), 4, 10s);
    auto first = a.lease(1);
    REQUIRE(a.try_acquire(2));  // taken by hand after the permit
    first.release();
    CHECK(a.held() == 2);
    CHECK(a.in_use() == std::optional<std::int64_t>(2));
    a.release(2);
    CHECK(a.in_use() == std::optional<std::int64_t>(0));
}

TEST_CASE("release refuses more than this object holds and changes nothing") {
    concurrency_limiter<> a(server_connection(), unique_key("conc-over"), 3, 10s);
    concurrency_limiter<> b(other_connection(), unique_key("conc-over"), 3, 10s);
    REQUIRE(a.try_acquire(2));
    REQUIRE(b.try_acquire(1));
    CHECK_THROWS_AS(a.release(3), std::logic_error);  // a holds 2; b's lease is not a's to give back
    CHECK(a.held() == 2);
    CHECK(a.in_use() == std::optional<std::int64_t>(3));
    a.release(2);
    b.release(1);
}

TEST_CASE("a permit whose leases were released by hand throws on release") {
    concurrency_limiter<> limiter(server_connection(), unique_key("conc-double"), 2, 10s);
    auto p = limiter.lease(1);
    limiter.release(1);
    CHECK_THROWS_AS(p.release(), std::logic_error);
    CHECK(p.count() == 0);  // and its destructor has nothing left to do
}

TEST_CASE("a crashed holder's leases come back after lease_ttl") {
    const std::string key = unique_key("conc-crash");
    const int port = ratelimit_test::redis_server::shared().port();
    const pid_t child = ::fork();
    REQUIRE(child >= 0);
    if (child == 0) {
        // The holder: takes both permits and dies without releasing them.
        connection mine("127.0.0.1", port, patient);
        concurrency_limiter<> holder(mine, key, 3, 400ms);
        ::_exit(holder.try_acquire(2) ? 0 : 1);
    }
    int status = 0;
    REQUIRE(::waitpid(child, &status, 0) == child);
    REQUIRE(WIFEXITED(status));
    REQUIRE(WEXITSTATUS(status) == 0);

    // A live holder with long leases keeps the key itself alive for 20 s, so
    // what frees the dead holder's permits is their leases expiring.
    concurrency_limiter<> keeper(other_connection(), key, 3, 10s);
    REQUIRE(keeper.try_acquire(1));
    concurrency_limiter<> survivor(server_connection(), key, 3, 400ms);
    CHECK_FALSE(survivor.try_acquire(1));  // 2 dead + 1 live = 3 of 3
    const auto start = steady::now();
    CHECK(survivor.try_acquire_for(2, 5s));  // wakes when the dead holder's leases expire
    CHECK(seconds_since(start) < 2.0);
    CHECK(survivor.in_use() == std::optional<std::int64_t>(3));  // the keeper's 1 and the survivor's 2
    survivor.release(2);
    keeper.release(1);
}

TEST_CASE("renew keeps leases alive past lease_ttl; without it they expire") {
    const std::string key = unique_key("conc-renew");
    concurrency_limiter<> keeper(other_connection(), key, 3, 10s);  // keeps the key alive
    concurrency_limiter<> holder(server_connection(), key, 3, 300ms);
    concurrency_limiter<> other(other_connection(), key, 3, 300ms);
    REQUIRE(keeper.try_acquire(1));
    REQUIRE(holder.try_acquire(2));
    const auto start = steady::now();
    for (int i = 0; i < 6; ++i) {  // 6 x 100 ms = 600 ms, twice the lease_ttl
        std::this_thread::sleep_for(100ms);
        CHECK(holder.renew() == std::optional<std::int64_t>(2));
    }
    REQUIRE(seconds_since(start) >= 0.6);
    CHECK_FALSE(other.try_acquire(1));  // still held
    CHECK(other.try_acquire_for(1, 5s));  // renewing stopped: they expire
    CHECK(holder.renew() == std::optional<std::int64_t>(0));  // nothing left to renew
    CHECK(other.in_use() == std::optional<std::int64_t>(2));   // the keeper's and other's
    other.release(1);
    keeper.release(1);
}

TEST_CASE("a release through the same object wakes its waiter before any lease expires") {
    concurrency_limiter<> limiter(server_connection(), unique_key("conc-wake"), 1, 30s);
    REQUIRE(limiter.try_acquire(1));
    std::thread releaser([&] {
        std::this_thread::sleep_for(100ms);
        limiter.release(1);
    });
    const auto start = steady::now();
    const bool got = limiter.try_acquire_for(1, 10s);
    const double waited = seconds_since(start);
    releaser.join();
    CHECK(got);
    CHECK(waited >= 0.05);
    CHECK(waited < 5.0);  // far sooner than the 30 s lease expiry
    limiter.release(1);
}

TEST_CASE("a timed wait on a full set waits until its deadline, then refuses") {
    const std::string key = unique_key("conc-deadline");
    concurrency_limiter<> holder(other_connection(), key, 1, 30s);
    concurrency_limiter<> waiter(server_connection(), key, 1, 30s);
    REQUIRE(holder.try_acquire(1));
    const auto start = steady::now();
    CHECK_FALSE(waiter.try_acquire_for(1, 200ms));
    const double waited = seconds_since(start);
    CHECK(waited >= 0.2);
    CHECK(waited < 2.0);
    CHECK(waiter.held() == 0);
    holder.release(1);
}

TEST_CASE("acquire waits for another holder's lease to expire") {
    const std::string key = unique_key("conc-acquire");
    concurrency_limiter<> holder(other_connection(), key, 1, 300ms);
    concurrency_limiter<> waiter(server_connection(), key, 1, 300ms);
    REQUIRE(holder.try_acquire(1));  // never released
    const auto waited = waiter.acquire(1);
    CHECK(waited > 100ms);
    CHECK(waited < 3s);
    CHECK(waiter.held() == 1);
    waiter.release(1);
}

TEST_CASE("with Redis down, fail_closed refuses, fail_open grants, within the timeouts") {
    auto server = ratelimit_test::redis_server::start();
    connection c("127.0.0.1", server->port(), {100ms, 100ms});
    ratelimit::redis::options open;
    open.policy = ratelimit::redis::on_error::fail_open;
    concurrency_limiter<> closed_limiter(c, "outage", 2, 10s);
    concurrency_limiter<> open_limiter(c, "outage", 2, 10s, open);
    REQUIRE(closed_limiter.try_acquire(1));
    server->kill9();

    const auto start = steady::now();
    CHECK_FALSE(closed_limiter.try_acquire(1));
    CHECK(seconds_since(start) < 1.0);
    CHECK_THROWS_AS(closed_limiter.acquire(1), ratelimit::redis::unavailable);
    CHECK_FALSE(closed_limiter.in_use().has_value());
    CHECK_FALSE(closed_limiter.renew().has_value());
    CHECK(closed_limiter.outages() >= 2);
    closed_limiter.release(1);  // a Redis lease Redis cannot hear about: remembered, never thrown
    CHECK(closed_limiter.held() == 0);

    CHECK(open_limiter.try_acquire(2));
    CHECK(open_limiter.try_acquire(2));  // fail_open holds nothing anywhere, so no limit
    CHECK(open_limiter.held() == 4);
    open_limiter.release(4);  // accounted for, nothing to give back
    CHECK(open_limiter.held() == 0);

    server->restart();
    bool recovered = false;
    for (int i = 0; i < 100 && !recovered; ++i) {  // the breaker lets a probe through after its cooldown
        recovered = closed_limiter.try_acquire(1);
        if (!recovered) std::this_thread::sleep_for(50ms);
    }
    CHECK(recovered);
    CHECK(closed_limiter.in_use() == std::optional<std::int64_t>(1));  // the restarted server starts empty
}

TEST_CASE("under local_fallback each permit goes back to where it came from") {
    auto server = ratelimit_test::redis_server::start();
    connection c("127.0.0.1", server->port(), {100ms, 100ms, 4, 50ms});
    connection watcher_connection("127.0.0.1", server->port(), {100ms, 100ms, 4, 50ms});
    ratelimit::redis::options o;
    o.policy = ratelimit::redis::on_error::local_fallback;
    o.fallback_share = 0.25;  // max(1, 4 * 0.25) = 1 permit locally
    concurrency_limiter<> limiter(c, "fallback", 4, 60s, o);
    concurrency_limiter<> watcher(watcher_connection, "fallback", 4, 60s);
    REQUIRE(limiter.try_acquire(2));  // two leases in Redis

    REQUIRE(server->command("CLIENT PAUSE 2500 ALL"));  // Redis stops answering (the data stays)
    const auto paused = steady::now();
    // The outage began after Redis granted: the local permit is held in place
    // of this object's two leases, which Redis still counts.
    CHECK_FALSE(limiter.try_acquire(1));
    CHECK(limiter.outages() >= 1);
    limiter.release(1);  // a Redis lease: Redis cannot hear it now, so it is remembered; its place frees locally
    CHECK(limiter.try_acquire(1));        // the local fallback's only permit
    CHECK_FALSE(limiter.try_acquire(1));  // local: 1 of 1 held
    limiter.release(1);                   // most recent first: the local permit, to the local limiter
    CHECK(limiter.try_acquire(1));        // so the local limiter has room again
    limiter.release(1);
    CHECK(limiter.held() == 1);  // the other Redis lease
    REQUIRE(seconds_since(paused) < 2.0);  // all of the above happened during the pause

    std::optional<std::int64_t> seen;
    for (int i = 0; i < 100 && !seen; ++i) {  // until the pause ends
        seen = watcher.in_use();
        if (!seen) std::this_thread::sleep_for(50ms);
    }
    CHECK(seen == std::optional<std::int64_t>(2));  // the release has not reached Redis yet
    std::optional<std::int64_t> after;
    for (int i = 0; i < 100 && !after; ++i) {  // the limiter's own breaker closes after its cooldown
        after = limiter.in_use();              // this call carries the remembered release
        if (!after) std::this_thread::sleep_for(50ms);
    }
    CHECK(after == std::optional<std::int64_t>(1));
    limiter.release(1);
    CHECK(watcher.in_use() == std::optional<std::int64_t>(0));
}
