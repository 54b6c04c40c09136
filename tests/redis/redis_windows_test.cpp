// redis::fixed_window, redis::sliding_window_log and
// redis::sliding_window_counter against a real redis-server: the shared
// limiter contract, shared quotas, TTLs, the outage policies, and each
// algorithm's own guarantee.
//
// Real time on the server's clock: windows of 200 ms to 2 s, generous
// tolerances (the machine is shared), and each test its own key. Fixed and
// counter windows are aligned at the Unix epoch on the server's clock, so a
// test that needs a whole window first waits for one to start
// (start_of_window below).

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <ratelimit/clock.hpp>
#include <ratelimit/limiter.hpp>
#include <ratelimit/redis/connection.hpp>
#include <ratelimit/redis/fixed_window.hpp>
#include <ratelimit/redis/options.hpp>
#include <ratelimit/redis/sliding_window_counter.hpp>
#include <ratelimit/redis/sliding_window_log.hpp>

#include "support/catch.hpp"
#include "support/redis_server.hpp"

namespace {

using namespace std::chrono_literals;
using std::chrono::steady_clock;
namespace redis = ratelimit::redis;

using fixed = redis::fixed_window<>;
using counter = redis::sliding_window_counter<>;
using log_limiter = redis::sliding_window_log<>;

static_assert(ratelimit::limiter<fixed>);
static_assert(ratelimit::limiter<counter>);
static_assert(ratelimit::limiter<log_limiter>);
static_assert(ratelimit::limiter<redis::fixed_window<ratelimit::manual_clock>>);
static_assert(ratelimit::limiter<redis::sliding_window_counter<ratelimit::manual_clock>>);
static_assert(ratelimit::limiter<redis::sliding_window_log<ratelimit::manual_clock>>);
static_assert(ratelimit::refundable_limiter<fixed>);
static_assert(ratelimit::refundable_limiter<counter>);

redis::connection& server_connection() {
    static redis::connection c("127.0.0.1", ratelimit_test::redis_server::shared().port(),
                               {std::chrono::milliseconds(1000), std::chrono::milliseconds(2000), 8});
    return c;
}

// A key no other test (or earlier run) uses.
std::string unique_key(const std::string& test) {
    static std::atomic<int> counter{0};
    return "windows-" + test + "-" + std::to_string(::getpid()) + "-" + std::to_string(counter.fetch_add(1)) + "-" +
           std::to_string(steady_clock::now().time_since_epoch().count());
}

// The server's clock, in µs since the epoch.
std::int64_t server_us() {
    const redis::reply r = server_connection().command({"TIME"});
    REQUIRE(r.ok());
    const auto field = [&](std::size_t i) { return std::stoll(std::string(r.get()->element[i]->str, r.get()->element[i]->len)); };
    return field(0) * 1'000'000 + field(1);
}

// Sleeps until a window of length `window` (aligned at the Unix epoch on the
// server's clock) has at least `needed` left, plus a 5 ms margin past its start.
void start_of_window(std::chrono::microseconds window, std::chrono::microseconds needed) {
    const std::int64_t w = window.count();
    const std::int64_t offset = server_us() % w;
    if (w - offset < needed.count()) std::this_thread::sleep_for(std::chrono::microseconds(w - offset + 5000));
}

long long pttl(const std::string& key) {
    const redis::reply r = server_connection().command({"PTTL", key});
    REQUIRE(r.ok());
    return r.get()->integer;
}

template <class L>
std::string kind_name() {
    if constexpr (std::is_same_v<L, fixed>) return "fixed_window";
    if constexpr (std::is_same_v<L, counter>) return "sliding_window_counter";
    return "sliding_window_log";
}

std::int64_t microseconds_in(steady_clock::duration d) {
    return std::chrono::duration_cast<std::chrono::microseconds>(d).count();
}

double ms_since(steady_clock::time_point start) {
    return std::chrono::duration<double, std::milli>(steady_clock::now() - start).count();
}

}  // namespace

// --- construction -----------------------------------------------------------

TEMPLATE_TEST_CASE("a bad limit, window, key or share throws invalid_argument naming it", "", fixed, counter,
                   log_limiter) {
    redis::connection& c = server_connection();
    const auto message = [&](auto&& make) -> std::string {
        try {
            make();
        } catch (const std::invalid_argument& e) {
            return e.what();
        }
        return "(nothing thrown)";
    };
    CHECK_THAT(message([&] { TestType l(c, "k", 0, 1s); }), Catch::Contains("limit must be > 0, got 0"));
    CHECK_THAT(message([&] { TestType l(c, "k", -3, 1s); }), Catch::Contains("limit must be > 0, got -3"));
    CHECK_THAT(message([&] { TestType l(c, "k", 5, 0s); }), Catch::Contains("window must be > 0, got 0ns"));
    CHECK_THAT(message([&] { TestType l(c, "k", 5, -2ms); }), Catch::Contains("window must be > 0, got -2000000ns"));
    CHECK_THAT(message([&] { TestType l(c, "k", 5, std::chrono::hours(24 * 365 * 40)); }),
               Catch::Contains("window must be <= 2^50 us"));
    CHECK_THAT(message([&] { TestType l(c, "a{b}", 5, 1s); }), Catch::Contains("key must be non-empty"));
    CHECK_THAT(message([&] { TestType l(c, "", 5, 1s); }), Catch::Contains("key must be non-empty"));
    CHECK_THAT(message([&] { TestType l(c, "k", 5, 1s, {redis::on_error::local_fallback, "ratelimit", 0.0}); }),
               Catch::Contains("fallback_share must be in (0, 1], got 0"));
    CHECK_THAT(message([&] { TestType l(c, "k", 5, 1s, {redis::on_error::fail_closed, "ratelimit", 1.5}); }),
               Catch::Contains("fallback_share must be in (0, 1], got 1.5"));
}

TEST_CASE("each limiter's precision limit throws naming the argument and the bound") {
    redis::connection& c = server_connection();
    CHECK_THROWS_WITH(fixed(c, "k", std::int64_t{1} << 52, 1s), Catch::Contains("limit must be < 2^52") &&
                                                                     Catch::Contains("4503599627370496"));
    CHECK_NOTHROW(fixed(c, "k", (std::int64_t{1} << 52) - 1, 1s));
    CHECK_THROWS_WITH(log_limiter(c, "k", 32769, 1s), Catch::Contains("limit must be <= 32768") &&
                                                          Catch::Contains("got 32769"));
    CHECK_NOTHROW(log_limiter(c, "k", 32768, 1s));
    // limit · window must stay below 2^52 ticks: 10^12 permits per day is 8.64·10^19 ms.
    CHECK_THROWS_WITH(counter(c, "k", 1'000'000'000'000, 24h),
                      Catch::Contains("limit · window must be < 2^52 ms") &&
                          Catch::Contains("limit 1000000000000 and window 86400000ms"));
}

TEST_CASE("the sliding window counter counts in µs while limit · window_µs < 2^52, else in ms") {
    redis::connection& c = server_connection();
    // (2^52 − 1) / 3.6e9 µs = 1250999.9: 1250999 per hour fits in µs, 1251000 needs ms.
    CHECK(counter(c, "k", 1'250'999, 1h).tick_microseconds() == 1);
    CHECK(counter(c, "k", 1'251'000, 1h).tick_microseconds() == 1000);
    // (2^52 − 1) / 8.64e7 ms = 52124995.7 per day.
    CHECK(counter(c, "k", 52'124'995, 24h).tick_microseconds() == 1000);
    CHECK_THROWS_AS(counter(c, "k", 52'124'996, 24h), std::invalid_argument);
}

TEMPLATE_TEST_CASE("keys carry the hash tag and the kind, and the accessors return what was given", "", fixed,
                   counter, log_limiter) {
    TestType l(server_connection(), "user-42", 7, 1500ms, {redis::on_error::fail_closed, "app"});
    CHECK(l.key().starts_with("app:{user-42}:"));
    CHECK(l.limit() == 7);
    CHECK(l.window() == 1500ms);
    CHECK(l.outages() == 0);
}

// --- the shared contract on a live server -------------------------------------

TEMPLATE_TEST_CASE("a fresh key grants exactly limit permits at once and then refuses", "", fixed, counter,
                   log_limiter) {
    start_of_window(2s, 1500ms);
    TestType l(server_connection(), unique_key("exact-" + kind_name<TestType>()), 5, 2s);
    CHECK(l.available() == 5);
    for (int i = 0; i < 5; ++i) CHECK(l.try_acquire());
    CHECK_FALSE(l.try_acquire());
    CHECK(l.available() == 0);
    CHECK(l.outages() == 0);
}

TEMPLATE_TEST_CASE("a refused n takes nothing: all or nothing", "", fixed, counter, log_limiter) {
    start_of_window(2s, 1500ms);
    TestType l(server_connection(), unique_key("all-or-nothing-" + kind_name<TestType>()), 5, 2s);
    CHECK(l.try_acquire(3));
    CHECK(l.available() == 2);
    CHECK_FALSE(l.try_acquire(3));  // 3 + 3 > 5
    CHECK(l.available() == 2);      // the refusal took nothing
    CHECK(l.try_acquire(2));        // so 3 + 2 = 5 still fit
    CHECK_FALSE(l.try_acquire(1));
}

TEMPLATE_TEST_CASE("n == 0 succeeds at once even on a full window, and n < 0 throws naming n", "", fixed, counter,
                   log_limiter) {
    start_of_window(2s, 1500ms);
    TestType l(server_connection(), unique_key("zero-" + kind_name<TestType>()), 2, 2s);
    CHECK(l.try_acquire(2));
    const auto start = steady_clock::now();
    CHECK(l.try_acquire(0));
    CHECK(l.try_acquire_for(0, 0s));
    CHECK(l.try_acquire_until(0, steady_clock::now() - 1s));
    CHECK(l.acquire(0) == steady_clock::duration::zero());
    CHECK(ms_since(start) < 100);
    CHECK_THROWS_WITH(l.try_acquire(-1), Catch::Contains("n must be >= 0, got -1"));
    CHECK_THROWS_WITH(l.try_acquire_for(-2, 1s), Catch::Contains("n must be >= 0, got -2"));
    CHECK_THROWS_WITH(l.acquire(-3), Catch::Contains("n must be >= 0, got -3"));
    CHECK_THROWS_AS(l.acquire(-3), std::invalid_argument);
}

TEMPLATE_TEST_CASE("n above the limit returns false at once, without asking Redis, and acquire throws capacity_exceeded",
                   "", fixed, counter, log_limiter) {
    // On a dead server under fail_open: an n that reached Redis would count an outage and be granted.
    auto server = ratelimit_test::redis_server::start();
    redis::connection dead("127.0.0.1", server->port(), {100ms, 100ms, 1});
    server->kill9();
    TestType l(dead, "over", 4, 1s, {redis::on_error::fail_open});
    const auto start = steady_clock::now();
    CHECK_FALSE(l.try_acquire(5));
    CHECK_FALSE(l.try_acquire_for(5, 10s));
    CHECK_FALSE(l.try_acquire_until(5, steady_clock::now() + 10s));
    CHECK_THROWS_AS(l.acquire(5), ratelimit::capacity_exceeded);
    CHECK(ms_since(start) < 50);
    CHECK(l.outages() == 0);
}

TEMPLATE_TEST_CASE("try_acquire_for returns false at once when the wait would pass the deadline, and waits when it fits",
                   "", fixed, counter, log_limiter) {
    // limit 3 per 400 ms, full. fixed: room at the next window (< 400 ms);
    // counter: at 400/3 ms into the next one (< 534 ms); log: when the first
    // grant leaves (400 ms).
    start_of_window(400ms, 350ms);
    TestType l(server_connection(), unique_key("deadline-" + kind_name<TestType>()), 3, 400ms);
    CHECK(l.try_acquire(3));
    auto start = steady_clock::now();
    CHECK_FALSE(l.try_acquire_for(1, 5ms));
    CHECK_FALSE(l.try_acquire_until(1, steady_clock::now() + 5ms));
    CHECK(ms_since(start) < 200);  // two round trips, no sleep (the next room is ~300 ms away)
    start = steady_clock::now();
    CHECK(l.try_acquire_for(1, 2s));
    const double waited = ms_since(start);
    CHECK(waited > 5);
    CHECK(waited < 534 + 400);  // wide: sanitizer builds on a loaded machine
    CHECK(l.outages() == 0);
}

TEMPLATE_TEST_CASE("acquire waits for room and returns the time it waited", "", fixed, counter, log_limiter) {
    start_of_window(300ms, 250ms);
    TestType l(server_connection(), unique_key("acquire-" + kind_name<TestType>()), 2, 300ms);
    CHECK(l.acquire(2) < 200ms);  // room now: one round trip
    const auto start = steady_clock::now();
    const auto waited = l.acquire(1);
    const double elapsed = ms_since(start);
    CHECK(waited > 5ms);
    CHECK(std::chrono::duration<double, std::milli>(waited).count() <= elapsed + 1);
    CHECK(elapsed < 450 + 400);  // counter: within 300 + 300/2 ms, plus a wide margin
}

TEMPLATE_TEST_CASE("two limiter objects on one key share one quota", "", fixed, counter, log_limiter) {
    start_of_window(2s, 1500ms);
    const std::string key = unique_key("shared-" + kind_name<TestType>());
    TestType a(server_connection(), key, 5, 2s);
    TestType b(server_connection(), key, 5, 2s);
    CHECK(a.key() == b.key());
    CHECK(a.try_acquire(3));
    CHECK(b.available() == 2);
    CHECK_FALSE(b.try_acquire(3));
    CHECK(b.try_acquire(2));
    CHECK_FALSE(a.try_acquire());
    CHECK_FALSE(b.try_acquire());
}

TEMPLATE_TEST_CASE("every key written has a TTL no longer than the state needs", "", fixed, counter, log_limiter) {
    start_of_window(1s, 800ms);
    TestType l(server_connection(), unique_key("ttl-" + kind_name<TestType>()), 5, 1s);
    CHECK(pttl(l.key()) == -2);  // nothing written yet
    CHECK(l.try_acquire(2));
    const long long ttl = pttl(l.key());
    CHECK(ttl > 0);  // -1 would be a key without expiry
    // fixed: until its window ends (< 1 s); counter: until the next one ends
    // (< 2 s); log: a window after the newest grant (1 s + 1 ms).
    CHECK(ttl <= (std::is_same_v<TestType, counter> ? 2001 : 1001));
    if constexpr (std::is_same_v<TestType, log_limiter>) CHECK(ttl > 900);
}

TEMPLATE_TEST_CASE("the outage policy answers within connect_timeout + command_timeout", "", fixed, counter,
                   log_limiter) {
    auto server = ratelimit_test::redis_server::start();
    redis::connection c("127.0.0.1", server->port(), {100ms, 100ms, 2});
    server->kill9();
    constexpr double bound_ms = 100 + 100 + 100;  // both timeouts and slack

    SECTION("fail_open grants") {
        TestType l(c, "outage", 10, 10s, {redis::on_error::fail_open});
        for (int i = 0; i < 20; ++i) {
            const auto start = steady_clock::now();
            CHECK(l.try_acquire(3));
            CHECK(ms_since(start) < bound_ms);
        }
        const auto start = steady_clock::now();
        CHECK(l.acquire(10) < 1ms + std::chrono::milliseconds(static_cast<int>(bound_ms)));
        CHECK(ms_since(start) < bound_ms);
        CHECK(l.outages() == 21);
    }
    SECTION("fail_closed refuses, and acquire throws unavailable") {
        TestType l(c, "outage", 10, 10s, {redis::on_error::fail_closed});
        const auto start = steady_clock::now();
        CHECK_FALSE(l.try_acquire());
        CHECK_FALSE(l.try_acquire_for(1, 2s));  // refused at once, not after 2 s
        CHECK(ms_since(start) < 2 * bound_ms);
        CHECK_THROWS_AS(l.acquire(1), redis::unavailable);
        CHECK(l.available() == std::nullopt);
        CHECK(l.outages() == 3);
    }
    SECTION("local_fallback answers as the in-process limiter at the share") {
        // 10 · 0.3 = 3 permits per 10 s, in-process.
        TestType l(c, "outage", 10, 10s, {redis::on_error::local_fallback, "ratelimit", 0.3});
        for (int i = 0; i < 3; ++i) {
            const auto start = steady_clock::now();
            CHECK(l.try_acquire());
            CHECK(ms_since(start) < bound_ms);
        }
        const auto start = steady_clock::now();
        CHECK_FALSE(l.try_acquire());
        CHECK_FALSE(l.try_acquire_for(1, 50ms));  // the local window is 10 s
        CHECK(ms_since(start) < 2 * bound_ms);
        CHECK(l.outages() == 5);
    }
    SECTION("a share so small it rounds to nothing still allows one permit") {
        TestType l(c, "outage", 10, 10s, {redis::on_error::local_fallback, "ratelimit", 0.01});
        CHECK(l.try_acquire());
        CHECK_FALSE(l.try_acquire());
    }
}

TEMPLATE_TEST_CASE("the same limiter uses Redis again once the server is back", "", fixed, counter, log_limiter) {
    auto server = ratelimit_test::redis_server::start();
    redis::connection c("127.0.0.1", server->port(), {100ms, 200ms, 2, 50ms});
    TestType l(c, "recover", 2, 10s, {redis::on_error::fail_open});
    CHECK(l.try_acquire(2));
    server->kill9();
    CHECK(l.try_acquire(2));  // fail_open
    CHECK(l.outages() == 1);
    server->restart();  // an empty server: the state is gone
    std::this_thread::sleep_for(100ms);  // past the breaker's cooldown
    CHECK(l.try_acquire(2));
    CHECK_FALSE(l.try_acquire());  // Redis answers again: 2 of 2 taken
    CHECK(l.outages() == 1);
}

// --- fixed_window and sliding_window_counter ------------------------------------

TEMPLATE_TEST_CASE("refund gives permits back to the current window", "", fixed, counter) {
    start_of_window(2s, 1500ms);
    TestType l(server_connection(), unique_key("refund-" + kind_name<TestType>()), 5, 2s);
    CHECK(l.try_acquire(5));
    l.refund(2);
    CHECK(l.available() == 2);
    CHECK(l.try_acquire(2));
    CHECK_FALSE(l.try_acquire());
    l.refund(9);  // never below zero
    CHECK(l.available() == 5);
    CHECK_THROWS_WITH(l.refund(-1), Catch::Contains("n must be >= 0, got -1"));
}

TEST_CASE("fixed windows are aligned at the Unix epoch on the server's clock") {
    start_of_window(1s, 800ms);
    fixed l(server_connection(), unique_key("aligned"), 3, 1s);
    CHECK(l.try_acquire(3));
    // The next window starts at the next whole second of the server's clock;
    // the script read that clock between `before` and `after`.
    const std::int64_t before = server_us();
    const auto until = l.time_until_available(1);
    const std::int64_t after = server_us();
    REQUIRE(until.has_value());
    const std::int64_t next_start = (before / 1'000'000 + 1) * 1'000'000;
    CHECK(microseconds_in(*until) >= next_start - after);
    CHECK(microseconds_in(*until) <= next_start - before);
    CHECK(l.time_until_available(4) == steady_clock::duration::max());
}

TEST_CASE("fixed window: a waiting caller takes its permits in the next window, and the current one grants nothing more") {
    start_of_window(600ms, 500ms);
    const std::string key = unique_key("ahead");
    fixed a(server_connection(), key, 2, 600ms);
    fixed b(server_connection(), key, 2, 600ms);
    CHECK(a.try_acquire(1));
    // 1 + 2 > 2: these two go to the next window, taken now (one round trip).
    std::atomic<bool> granted{false};
    std::thread waiter([&] { granted = a.try_acquire_for(2, 2s); });
    std::this_thread::sleep_for(50ms);
    CHECK_FALSE(granted.load());
    // The current window still has room for one, but a caller waits for the
    // next window, so nothing is granted now (first come, first served)...
    CHECK_FALSE(b.try_acquire());
    // ...and the next window is full already.
    CHECK(b.time_until_available(1) > std::optional<steady_clock::duration>(600ms));
    waiter.join();
    CHECK(granted.load());
    CHECK_FALSE(b.try_acquire());
}

TEST_CASE("sliding window counter: after a full window the previous count's weight frees permits gradually") {
    // limit 10 per 1 s, 10 taken at the start of window k. In window k + 1 at
    // offset e the estimate is ceil(10 · (1000 − e) / 1000): one permit fits from
    // e = 100 ms, so the wait is the rest of window k plus 100 ms; five need
    // 10 · (1000 − e) <= 5 · 1000: e = 500 ms.
    start_of_window(1s, 900ms);
    counter l(server_connection(), unique_key("weighted"), 10, 1s);
    CHECK(l.try_acquire(10));
    const std::int64_t before = server_us();
    const auto one = l.time_until_available(1);
    const auto five = l.time_until_available(5);
    const std::int64_t after = server_us();
    REQUIRE(one.has_value());
    REQUIRE(five.has_value());
    const std::int64_t next_start = (before / 1'000'000 + 1) * 1'000'000;
    CHECK(microseconds_in(*one) >= next_start + 100'000 - after);
    CHECK(microseconds_in(*one) <= next_start + 100'000 - before);
    CHECK(microseconds_in(*five) >= next_start + 500'000 - after);
    CHECK(microseconds_in(*five) <= next_start + 500'000 - before);
}

TEST_CASE("sliding window counter: in millisecond ticks the script keeps the same contract") {
    // 1251000 per hour: limit · 3.6e9 µs reaches 2^52, so the script counts in ms.
    counter l(server_connection(), unique_key("ms-ticks"), 1'251'000, 1h);
    REQUIRE(l.tick_microseconds() == 1000);
    CHECK(l.try_acquire(1'250'000));
    CHECK_FALSE(l.try_acquire(1001));  // all or nothing
    CHECK(l.available() == 1000);
    CHECK(l.try_acquire(1000));
    CHECK_FALSE(l.try_acquire());
    l.refund(10);
    CHECK(l.available() == 10);
    const long long ttl = pttl(l.key());
    CHECK(ttl > 0);
    CHECK(ttl <= 2 * 3'600'000 + 1);
}

// --- sliding_window_log -----------------------------------------------------------

TEST_CASE("sliding window log: the whole max_limit goes in one call, one member per permit") {
    // 32768 members, added in batches of 1000 (the last one 768).
    log_limiter l(server_connection(), unique_key("log-max"), log_limiter::max_limit, 10s);
    CHECK(l.try_acquire(log_limiter::max_limit));
    CHECK_FALSE(l.try_acquire());
    const redis::reply r = server_connection().command({"ZCARD", l.key()});
    REQUIRE(r.ok());
    CHECK(r.get()->integer == log_limiter::max_limit);
    CHECK(l.available() == 0);
}

TEST_CASE("sliding window log: a waiting caller sleeps until the oldest entry leaves the window") {
    // limit 3 per 300 ms: one grant, then two ~100 ms later. The first leaves
    // the window 300 ms after it was stamped, the other two ~100 ms after that.
    // A stamp lies between the times read before and after its call, so each
    // answer is checked against the bracket those times give (1 ms of slack
    // for the two clocks).
    log_limiter l(server_connection(), unique_key("log-wait"), 3, 300ms);
    const auto first_before = steady_clock::now();
    CHECK(l.try_acquire());
    const auto first_after = steady_clock::now();
    std::this_thread::sleep_for(100ms);
    const auto second_before = steady_clock::now();
    CHECK(l.try_acquire(2));
    const auto second_after = steady_clock::now();

    const auto ask_before = steady_clock::now();
    const auto one = l.time_until_available(1);
    const auto two = l.time_until_available(2);
    const auto ask_after = steady_clock::now();
    REQUIRE(one.has_value());
    REQUIRE(two.has_value());
    CHECK(*one >= first_before + 300ms - ask_after - 1ms);
    CHECK(*one <= first_after + 300ms - ask_before + 1ms);
    CHECK(*two >= second_before + 300ms - ask_after - 1ms);
    CHECK(*two <= second_after + 300ms - ask_before + 1ms);

    CHECK(l.try_acquire_for(1, 1s));
    const auto granted = steady_clock::now();
    CHECK(granted >= first_before + 300ms - 1ms);   // not before the first grant left
    CHECK(granted <= first_after + 300ms + 250ms);  // nor much after (oversleep)
    CHECK_FALSE(l.try_acquire());  // the other two still count
}

TEST_CASE("sliding window log: threads hammering one key get exactly limit permits in a long window") {
    constexpr std::int64_t limit = 40;
    const std::string key = unique_key("log-exact");
    const log_limiter probe(server_connection(), key, limit, 30s);
    std::atomic<std::int64_t> granted{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
        threads.emplace_back([&] {
            log_limiter l(server_connection(), key, limit, 30s);  // one object per thread: as separate processes
            for (int i = 0; i < 30; ++i) {
                if (l.try_acquire(1 + i % 2)) granted += 1 + i % 2;
            }
        });
    }
    for (auto& t : threads) t.join();
    CHECK(granted.load() <= limit);
    CHECK(granted.load() >= limit - 1);  // a refused 2 may leave one unused
    const redis::reply r = server_connection().command({"ZCARD", probe.key()});
    REQUIRE(r.ok());
    CHECK(r.get()->integer == granted.load());
}

TEST_CASE("sliding window log: no window of the recorded grant times holds more than limit") {
    // 4 threads, limit 5 per 300 ms, each grant timed when acquire returns.
    // A grant is stamped on the server before the client hears of it, so a
    // client time is the stamp plus a delay: the reply's way back plus any
    // scheduling delay (the machine is shared). Two grants stamped a window
    // apart can look up to that delay closer, so the check slides a window
    // `slack` shorter than 300 ms: only a delay above 60 ms could fail it
    // wrongly, while a limiter that admitted a 6th permit in some window
    // would fail it for every delay.
    constexpr std::int64_t limit = 5;
    constexpr auto window = 300ms;
    constexpr auto slack = 60ms;
    const std::string key = unique_key("log-sliding");
    std::mutex mutex;
    std::vector<steady_clock::time_point> grants;
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
        threads.emplace_back([&] {
            log_limiter l(server_connection(), key, limit, window);
            for (int i = 0; i < 12; ++i) {
                l.acquire(1);
                const auto at = steady_clock::now();
                std::lock_guard lock(mutex);
                grants.push_back(at);
            }
        });
    }
    for (auto& t : threads) t.join();
    REQUIRE(grants.size() == 48);
    std::sort(grants.begin(), grants.end());
    std::int64_t most = 0;
    for (std::size_t i = 0; i < grants.size(); ++i) {
        const auto end = grants[i] + window - slack;
        const auto count = std::lower_bound(grants.begin() + static_cast<std::ptrdiff_t>(i), grants.end(), end) -
                           (grants.begin() + static_cast<std::ptrdiff_t>(i));
        most = std::max<std::int64_t>(most, count);
    }
    CHECK(most <= limit);
    // And the limiter is not merely slow: 48 grants at 5 per 300 ms take about
    // (48 / 5 − 1) · 300 ms = 2.6 s; all 5 in most windows of that length.
    const double total_ms = std::chrono::duration<double, std::milli>(grants.back() - grants.front()).count();
    CHECK(total_ms > 2400);
    CHECK(total_ms < 6000);
}

// --- overflow (issue 12) --------------------------------------------------------

TEMPLATE_TEST_CASE("n = INT64_MAX never blocks and takes nothing", "", fixed, counter, log_limiter) {
    TestType l(server_connection(), unique_key("n-max"), 3, 10s);
    CHECK_FALSE(l.try_acquire(INT64_MAX));
    CHECK_FALSE(l.try_acquire_for(INT64_MAX, steady_clock::duration::max()));
    CHECK_FALSE(l.try_acquire_until(INT64_MAX, steady_clock::time_point::max()));
    CHECK_THROWS_AS(l.acquire(INT64_MAX), ratelimit::capacity_exceeded);
    CHECK(l.time_until_available(INT64_MAX) == steady_clock::duration::max());
    CHECK(l.available() == std::optional<std::int64_t>(3));
}

TEMPLATE_TEST_CASE("a limit of INT64_MAX throws, naming the limit", "", fixed, counter, log_limiter) {
    try {
        TestType l(server_connection(), "k", INT64_MAX, 1s);
        FAIL("no exception");
    } catch (const std::invalid_argument& e) {
        CHECK_THAT(std::string(e.what()), Catch::Contains("limit") && Catch::Contains("9223372036854775807"));
    }
}

TEMPLATE_TEST_CASE("a window of nanoseconds::max() throws, naming the window", "", fixed, counter, log_limiter) {
    // 2^63 − 1 ns is 9.2·10^15 µs, above the scripts' 2^50 µs.
    try {
        TestType l(server_connection(), "k", 5, std::chrono::nanoseconds::max());
        FAIL("no exception");
    } catch (const std::invalid_argument& e) {
        CHECK_THAT(std::string(e.what()), Catch::Contains("window must be <= 2^50 us") &&
                                              Catch::Contains("9223372036854776us"));
    }
}

TEST_CASE("fixed window: the largest limit with the longest window counts exactly") {
    // limit 2^52 − 1 in a window of 2^50 µs: count + n stays exact in the script's doubles.
    fixed l(server_connection(), unique_key("fixed-top"), fixed::max_limit,
            std::chrono::microseconds{std::int64_t{1} << 50});
    CHECK(l.try_acquire(fixed::max_limit - 1));
    CHECK(l.try_acquire(1));
    CHECK_FALSE(l.try_acquire(1));
    CHECK(l.available() == std::optional<std::int64_t>(0));
}

TEST_CASE("sliding window counter: a state at the end of the script's range answers at once, never a wrapped delay") {
    // 1251000 per hour counts in ms. A state in window 2^52 / 3.6e6 − 2 (ms ticks; as
    // if callers had queued a hundred thousand years ahead) would put the next
    // window's start at ~2^52 ms, a delay of ~4.5e21 ns that no integer reply
    // holds. The script refuses it as out of range: try_acquire returns false at
    // once instead of retrying a wrapped delay.
    const std::string key = unique_key("counter-top");
    counter l(server_connection(), key, 1'251'000, 1h);
    REQUIRE(l.tick_microseconds() == 1000);
    const std::int64_t window_ms = 3'600'000;
    const std::int64_t far = (std::int64_t{1} << 52) / window_ms - 2;
    const redis::reply r = server_connection().command(
        {"HSET", "ratelimit:{" + key + "}:swc", "w", std::to_string(far), "c", "1251000", "p", "1251000"});
    REQUIRE(r.ok());
    CHECK_FALSE(l.try_acquire(1));
    CHECK_FALSE(l.try_acquire_for(1, 1s));
    CHECK(l.time_until_available(1) == std::optional<steady_clock::duration>(steady_clock::duration::max()));
}
