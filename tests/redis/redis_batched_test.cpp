// redis::batched: the pool's arithmetic on manual_clock over an in-process
// token bucket (exact, instant), then over redis::token_bucket on a real
// server: round trips per call, and the documented bound on permits used in
// any window by two "processes".

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <ratelimit/clock.hpp>
#include <ratelimit/rate.hpp>
#include <ratelimit/redis/batched.hpp>
#include <ratelimit/redis/connection.hpp>
#include <ratelimit/redis/token_bucket.hpp>
#include <ratelimit/token_bucket.hpp>

#include "support/catch.hpp"
#include "support/redis_server.hpp"

namespace {

using namespace std::chrono_literals;
using ratelimit::manual_clock;
using ratelimit::rate;
using ratelimit::redis::batched;
using steady = std::chrono::steady_clock;

/// Forwards to a limiter and counts the calls that reach it (for a Redis
/// limiter: one round trip each).
template <class L>
class counting {
public:
    using clock_type = typename L::clock_type;
    using duration = typename L::duration;
    using time_point = typename L::time_point;

    explicit counting(L& inner) : inner_(inner) {}

    bool try_acquire(std::int64_t n) {
        calls.fetch_add(1);
        return inner_.try_acquire(n);
    }
    bool try_acquire_for(std::int64_t n, duration d) {
        calls.fetch_add(1);
        return inner_.try_acquire_for(n, d);
    }
    bool try_acquire_until(std::int64_t n, time_point t) {
        calls.fetch_add(1);
        return inner_.try_acquire_until(n, t);
    }
    duration acquire(std::int64_t n) {
        calls.fetch_add(1);
        return inner_.acquire(n);
    }
    void refund(std::int64_t n) {
        refunds.fetch_add(1);
        inner_.refund(n);
    }
    [[nodiscard]] std::int64_t capacity() const { return inner_.capacity(); }

    std::atomic<std::int64_t> calls{0};
    std::atomic<std::int64_t> refunds{0};

private:
    L& inner_;
};

using local_bucket = ratelimit::token_bucket<manual_clock>;

const ratelimit::redis::connection_options patient{1000ms, 2000ms};

std::string unique_key(const std::string& name) { return name + "-" + std::to_string(::getpid()); }

}  // namespace

// --- the pool, exactly, on manual_clock --------------------------------------

TEST_CASE("k single-permit calls cost ceil(k / batch) calls into the wrapped limiter") {
    manual_clock clock;
    local_bucket bucket(rate::per_hour(1), 1000, clock);
    counting<local_bucket> inner(bucket);
    batched<counting<local_bucket>> pool(inner, 10, 1s, clock);
    for (int i = 0; i < 95; ++i) REQUIRE(pool.try_acquire(1));
    CHECK(inner.calls == 10);                // ceil(95 / 10)
    CHECK(pool.refills() == 10);
    CHECK(bucket.available() == 1000 - 100);  // 10 batches of 10 taken
    CHECK(pool.pooled() == 100 - 95);
}

TEST_CASE("pooled permits expire max_hold after they were asked for") {
    manual_clock clock;
    local_bucket bucket(rate::per_hour(1), 1000, clock);
    counting<local_bucket> inner(bucket);
    batched<counting<local_bucket>> pool(inner, 10, 100ms, clock);
    REQUIRE(pool.try_acquire(1));  // a batch of 10: 1 used, 9 pooled
    CHECK(pool.pooled() == 9);
    clock.advance(100ms - 1ns);
    REQUIRE(pool.try_acquire(1));  // still within max_hold: from the pool
    CHECK(inner.calls == 1);
    CHECK(pool.pooled() == 8);
    clock.advance(1ns);  // exactly max_hold after the batch was asked for
    CHECK(pool.pooled() == 0);
    REQUIRE(pool.try_acquire(1));  // the 8 left are dropped, a new batch taken
    CHECK(inner.calls == 2);
    CHECK(pool.pooled() == 9);
    CHECK(bucket.available() == 1000 - 20);
}

TEST_CASE("the wrapped limiter's clock is used when it exposes one") {
    manual_clock clock;
    local_bucket bucket(rate::per_hour(1), 100, clock);
    batched<local_bucket> pool(bucket, 10, 100ms);  // no clock given: bucket.get_clock()
    REQUIRE(pool.try_acquire(1));
    clock.advance(100ms);
    CHECK(pool.pooled() == 0);  // expired on the manual clock, not on a default one
}

TEST_CASE("n above batch goes straight to the wrapped limiter") {
    manual_clock clock;
    local_bucket bucket(rate::per_hour(1), 100, clock);
    counting<local_bucket> inner(bucket);
    batched<counting<local_bucket>> pool(inner, 5, 1s, clock);
    REQUIRE(pool.try_acquire(6));
    CHECK(inner.calls == 1);
    CHECK(pool.pooled() == 0);
    CHECK(bucket.available() == 100 - 6);
    CHECK_FALSE(pool.try_acquire(101));  // above the capacity: refused by the wrapped limiter
    CHECK_THROWS_AS(pool.acquire(101), ratelimit::capacity_exceeded);
}

TEST_CASE("a refused batch falls back to the caller's n and skips batches for max_hold") {
    manual_clock clock;
    local_bucket bucket(rate::per_second(1), 10, clock);
    counting<local_bucket> inner(bucket);
    batched<counting<local_bucket>> pool(inner, 10, 1s, clock);
    REQUIRE(bucket.try_acquire(5));  // another client took 5: a batch of 10 cannot fit
    CHECK(pool.try_acquire(1));      // batch refused, then 1 granted: 2 calls
    CHECK(inner.calls == 2);
    CHECK(pool.try_acquire(1));  // within max_hold of the refusal: straight to the wrapped limiter
    CHECK(inner.calls == 3);
    CHECK(bucket.available() == 3);  // 10 - 5 - 1 - 1
    clock.advance(1s);               // max_hold later (the bucket refilled 1: 4)
    CHECK(pool.try_acquire(1));      // batch tried again (refused), then 1: 2 calls
    CHECK(inner.calls == 5);
    CHECK(bucket.available() == 3);
}

TEST_CASE("a call the pool and the wrapped limiter refuse changes nothing") {
    manual_clock clock;
    local_bucket bucket(rate::per_hour(1), 3, clock);
    batched<local_bucket> pool(bucket, 3, 1s, clock);
    REQUIRE(pool.try_acquire(1));  // batch of 3: 1 used, 2 pooled, 0 in the bucket
    CHECK_FALSE(pool.try_acquire(3));  // 2 pooled < 3, batch refused, 3 refused
    CHECK(pool.pooled() == 2);
    CHECK(pool.try_acquire(2));
    CHECK(pool.pooled() == 0);
}

TEST_CASE("acquire waits in the wrapped limiter when the pool is empty") {
    manual_clock clock;
    local_bucket bucket(rate::per_second(10), 2, clock);  // one permit every 100 ms
    batched<local_bucket> pool(bucket, 2, 1s, clock);
    CHECK(pool.acquire(1) == 0ns);  // a batch of 2
    CHECK(pool.acquire(1) == 0ns);  // from the pool
    CHECK(pool.acquire(1) == 100ms);  // batch refused; the bucket's acquire sleeps 100 ms
    CHECK(clock.now().time_since_epoch() == 100ms);
    CHECK(pool.acquire(0) == 0ns);
}

TEST_CASE("try_acquire_for beyond the pool waits in the wrapped limiter, never in vain") {
    manual_clock clock;
    local_bucket bucket(rate::per_second(10), 1, clock);  // one permit every 100 ms
    batched<local_bucket> pool(bucket, 1, 1s, clock);
    REQUIRE(pool.try_acquire(1));
    CHECK_FALSE(pool.try_acquire_for(1, 50ms));  // the earliest grant is 100 ms away
    CHECK(clock.now().time_since_epoch() == 0ns);  // refused at once, no sleep
    CHECK(pool.try_acquire_for(1, 100ms));
    CHECK(clock.now().time_since_epoch() == 100ms);
    CHECK(pool.try_acquire_until(0, clock.now()));
}

TEST_CASE("flush gives the pool back to a refundable limiter") {
    manual_clock clock;
    local_bucket bucket(rate::per_hour(1), 10, clock);
    counting<local_bucket> inner(bucket);
    batched<counting<local_bucket>> pool(inner, 10, 1s, clock);
    REQUIRE(pool.try_acquire(1));
    CHECK(bucket.available() == 0);
    pool.flush();
    CHECK(pool.pooled() == 0);
    CHECK(inner.refunds == 1);
    CHECK(bucket.available() == 9);  // the 9 never used
    pool.flush();                    // nothing left: no refund
    CHECK(inner.refunds == 1);
}

TEST_CASE("batched arguments are checked and named") {
    manual_clock clock;
    local_bucket bucket(rate::per_hour(1), 10, clock);
    CHECK_THROWS_WITH(batched<local_bucket>(bucket, 0, 1s), Catch::Contains("batch") && Catch::Contains("0"));
    CHECK_THROWS_WITH(batched<local_bucket>(bucket, 11, 1s), Catch::Contains("batch") && Catch::Contains("11"));
    CHECK_THROWS_WITH(batched<local_bucket>(bucket, 5, 0s), Catch::Contains("max_hold"));
    batched<local_bucket> pool(bucket, 5, 1s);
    CHECK_THROWS_AS(pool.try_acquire(-1), std::invalid_argument);
    CHECK_THROWS_AS(pool.acquire(-1), std::invalid_argument);
    CHECK(pool.try_acquire(0));
    CHECK(bucket.available() == 10);  // n == 0 took nothing
    CHECK(pool.capacity() == 10);
}

TEST_CASE("threads share one pool: every batch is used up before the next") {
    manual_clock clock;
    local_bucket bucket(rate::per_hour(1), 100000, clock);
    counting<local_bucket> inner(bucket);
    batched<counting<local_bucket>> pool(inner, 7, 1s, clock);
    std::atomic<int> granted{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
        threads.emplace_back([&] {
            for (int i = 0; i < 1000; ++i) {
                if (pool.try_acquire(1)) granted.fetch_add(1);
            }
        });
    }
    for (std::thread& t : threads) t.join();
    CHECK(granted == 4000);
    CHECK(inner.calls == (4000 + 6) / 7);  // ceil(4000 / 7) = 572: refills only when the pool is empty
    CHECK(bucket.available() == 100000 - 7 * inner.calls);
    CHECK(pool.pooled() == 7 * inner.calls - 4000);
}

// --- over redis::token_bucket on a real server -------------------------------

TEST_CASE("with Redis, k calls from several threads cost k / batch round trips") {
    ratelimit::redis::connection c("127.0.0.1", ratelimit_test::redis_server::shared().port(), patient);
    ratelimit::redis::token_bucket<> bucket(c, unique_key("batched-trips"), rate::per_second(100000), 100000);
    counting<ratelimit::redis::token_bucket<>> inner(bucket);
    batched<counting<ratelimit::redis::token_bucket<>>> pool(inner, 50, 10s);
    std::atomic<int> granted{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
        threads.emplace_back([&] {
            for (int i = 0; i < 250; ++i) {
                if (pool.try_acquire(1)) granted.fetch_add(1);
            }
        });
    }
    for (std::thread& t : threads) t.join();
    CHECK(granted == 1000);
    CHECK(inner.calls == 1000 / 50);  // 20 round trips instead of 1000
}

namespace {

/// The most of `times` (sorted) falling in any window [t, t + width).
std::int64_t most_in_window(const std::vector<steady::time_point>& times, steady::duration width) {
    std::int64_t most = 0;
    std::size_t begin = 0;
    for (std::size_t end = 0; end < times.size(); ++end) {
        while (times[end] - times[begin] >= width) ++begin;
        most = std::max<std::int64_t>(most, static_cast<std::int64_t>(end - begin + 1));
    }
    return most;
}

struct bound_case {
    std::int64_t batch;
    std::chrono::milliseconds max_hold;
};

/// Two "processes" (own connection, own redis::token_bucket, own batched) on
/// one key. Each takes one permit (pooling batch - 1), then all wait until the
/// bucket is full again, then two threads per process ask for single permits
/// as fast as they can for `run`: the burst in which pooled permits and a full
/// bucket are used together. Returns every use's time, sorted.
std::vector<steady::time_point> hammer(const std::string& key, rate r, std::int64_t capacity, bound_case bc,
                                       steady::duration refill, steady::duration run) {
    const int port = ratelimit_test::redis_server::shared().port();
    ratelimit::redis::connection c1("127.0.0.1", port, patient);
    ratelimit::redis::connection c2("127.0.0.1", port, patient);
    ratelimit::redis::token_bucket<> b1(c1, key, r, capacity);
    ratelimit::redis::token_bucket<> b2(c2, key, r, capacity);
    batched<ratelimit::redis::token_bucket<>> p1(b1, bc.batch, bc.max_hold);
    batched<ratelimit::redis::token_bucket<>> p2(b2, bc.batch, bc.max_hold);
    std::vector<std::vector<steady::time_point>> uses(4);
    if (p1.try_acquire(1)) uses[0].push_back(steady::now());
    if (p2.try_acquire(1)) uses[1].push_back(steady::now());
    std::this_thread::sleep_for(refill);
    const auto stop = steady::now() + run;
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
        threads.emplace_back([&, t] {
            batched<ratelimit::redis::token_bucket<>>& mine = t % 2 == 0 ? p1 : p2;
            for (int i = 0; i < 100000 && steady::now() < stop; ++i) {
                if (mine.try_acquire(1)) uses[t].push_back(steady::now());
                std::this_thread::sleep_for(200us);
            }
        });
    }
    for (std::thread& t : threads) t.join();
    std::vector<steady::time_point> all;
    for (const auto& u : uses) all.insert(all.end(), u.begin(), u.end());
    std::sort(all.begin(), all.end());
    return all;
}

}  // namespace

TEST_CASE("two processes' uses in any window stay within min(B(T + max_hold), B(T + rho) + P(batch - 1))") {
    // Token bucket: B(T) = capacity + r T with r = 100/s, capacity = 20; P = 2, batch = 10.
    constexpr std::int64_t capacity = 20;
    constexpr double r = 100.0;
    constexpr std::int64_t processes = 2;
    constexpr double rho = 0.1;  // reply delay and the lag of noting a use's time: generous on a loaded machine
    const bound_case cases[] = {
        {10, 1000ms},  // P (batch - 1) = 18 < r max_hold = 100: the pools bind
        {10, 50ms},    // r max_hold = 5 < P (batch - 1) = 18: the expiry binds
    };
    int index = 0;
    for (const bound_case bc : cases) {
        const std::string key = unique_key("batched-bound-" + std::to_string(index++));
        // 300 ms refills the bucket's 20 (100/s), and the first case's pools (9 each) survive it.
        const auto uses = hammer(key, rate::per_second(r), capacity, bc, 300ms, 1200ms);
        REQUIRE(!uses.empty());
        const double hold = std::chrono::duration<double>(bc.max_hold).count();
        const double excess = std::min(r * hold, static_cast<double>(processes * (bc.batch - 1)));
        for (const auto width : {50ms, 100ms, 250ms, 500ms, 1000ms, 2000ms}) {
            const double t = std::chrono::duration<double>(width).count();
            const double bound = capacity + r * (t + rho) + excess;
            const std::int64_t most = most_in_window(uses, width);
            INFO("batch " << bc.batch << ", max_hold " << bc.max_hold.count() << "ms, window " << width.count()
                          << "ms: " << most << " uses, bound " << bound);
            CHECK(static_cast<double>(most) <= bound);
        }
        if (bc.max_hold == 1000ms) {
            // The excess is real: the burst uses both pools (9 + 9) and the full
            // bucket (20), more than an unbatched client's capacity + r T = 30 in 100 ms.
            CHECK(most_in_window(uses, 100ms) > capacity + 10);
        }
        CHECK(uses.size() >= 100);  // busy: 20 + 100/s over 1.2 s were there to take
    }
}
