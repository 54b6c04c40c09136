// Real threads (bounded) on concurrency_limiter, dual_bucket and all_of; run
// under ThreadSanitizer. Counts are checked exactly where the clock stands
// still (manual_clock) and against the rate bound where it is real.

#include <ratelimit/all_of.hpp>
#include <ratelimit/concurrency_limiter.hpp>
#include <ratelimit/dual_bucket.hpp>
#include <ratelimit/token_bucket.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <thread>
#include <vector>

#include "support/catch.hpp"

using namespace std::chrono_literals;
using ratelimit::manual_clock;
using ratelimit::rate;

namespace {

constexpr int thread_count = 8;

// Starts `thread_count` threads running body(index) together and joins them.
template <class Body>
void run_together(Body body) {
    std::atomic<bool> go{false};
    std::vector<std::thread> workers;
    workers.reserve(thread_count);
    for (int i = 0; i < thread_count; ++i) {
        workers.emplace_back([&go, &body, i] {
            while (!go.load()) std::this_thread::yield();
            body(i);
        });
    }
    go.store(true);
    for (auto& worker : workers) worker.join();
}

template <class Predicate>
bool eventually(Predicate done) {
    const auto give_up = std::chrono::steady_clock::now() + 10s;
    while (!done()) {
        if (std::chrono::steady_clock::now() > give_up) return false;
        std::this_thread::sleep_for(1ms);
    }
    return true;
}

// Records the largest value `inside` ever reached.
void note_peak(std::atomic<std::int64_t>& peak, std::int64_t value) {
    std::int64_t seen = peak.load();
    while (value > seen && !peak.compare_exchange_weak(seen, value)) {
    }
}

}  // namespace

TEST_CASE("8 threads never hold more than max_concurrent permits at once", "[thread][concurrency_limiter]") {
    ratelimit::concurrency_limiter<> limiter(3);
    std::atomic<std::int64_t> inside{0};
    std::atomic<std::int64_t> peak{0};
    std::atomic<std::int64_t> entries{0};
    run_together([&](int index) {
        for (int round = 0; round < 200; ++round) {
            const std::int64_t n = 1 + (index + round) % 2;  // 1 or 2 permits
            auto critical = [&] {
                note_peak(peak, inside.fetch_add(n) + n);
                entries.fetch_add(1);
                std::this_thread::yield();
                inside.fetch_sub(n);
            };
            switch (round % 4) {
                case 0: {
                    const auto permit = limiter.lease(n);
                    critical();
                    break;
                }
                case 1:
                    if (limiter.try_acquire(n)) {
                        critical();
                        limiter.release(n);
                    }
                    break;
                case 2:
                    if (limiter.try_acquire_for(n, 5ms)) {
                        critical();
                        limiter.release(n);
                    }
                    break;
                default:
                    (void)limiter.acquire(n);
                    critical();
                    limiter.release(n);
                    break;
            }
        }
    });
    CHECK(peak.load() <= 3);
    CHECK(peak.load() >= 2);            // there was contention at all
    CHECK(entries.load() >= 8 * 100);   // every lease and acquire got in (half the rounds)
    CHECK(limiter.in_use() == 0);
    CHECK(limiter.waiting() == 0);
}

TEST_CASE("every waiter in line completes, large and small alike", "[thread][concurrency_limiter]") {
    ratelimit::concurrency_limiter<> limiter(4);
    std::atomic<std::int64_t> completed{0};
    run_together([&](int index) {
        const std::int64_t n = index % 2 == 0 ? 4 : 1;  // whole-limiter requests among small ones
        for (int round = 0; round < 100; ++round) {
            const auto permit = limiter.lease(n);
            completed.fetch_add(1);
        }
    });
    CHECK(completed.load() == 8 * 100);
    CHECK(limiter.in_use() == 0);
}

TEST_CASE("acquire on an exhausted limiter blocks until another thread releases (real clock)",
          "[thread][concurrency_limiter]") {
    ratelimit::concurrency_limiter<> limiter(1);
    REQUIRE(limiter.try_acquire(1));
    std::atomic<bool> done{false};
    ratelimit::concurrency_limiter<>::duration waited{};
    std::thread waiter([&] {
        waited = limiter.acquire(1);
        done = true;
    });
    REQUIRE(eventually([&] { return limiter.waiting() == 1; }));
    std::this_thread::sleep_for(30ms);
    CHECK_FALSE(done.load());
    limiter.release(1);
    REQUIRE(eventually([&] { return done.load(); }));  // (a failure here aborts: no hang)
    waiter.join();
    CHECK(waited >= 30ms);
    CHECK(limiter.in_use() == 1);
}

TEST_CASE("a timed wait on the real clock gives up at its deadline", "[thread][concurrency_limiter]") {
    ratelimit::concurrency_limiter<> limiter(1);
    REQUIRE(limiter.try_acquire(1));
    const auto start = std::chrono::steady_clock::now();
    CHECK_FALSE(limiter.try_acquire_for(1, 50ms));
    const auto elapsed = std::chrono::steady_clock::now() - start;
    CHECK(elapsed >= 50ms);
    CHECK(elapsed < 5s);
    CHECK(limiter.waiting() == 0);
    CHECK(limiter.in_use() == 1);
}

TEST_CASE("a timed-out waiter at the front lets the waiter behind it in", "[thread][concurrency_limiter]") {
    ratelimit::concurrency_limiter<> limiter(4);
    REQUIRE(limiter.try_acquire(4));
    std::atomic<bool> big_result{true};
    std::atomic<bool> small_done{false};
    std::thread big([&] { big_result = limiter.try_acquire_for(3, 100ms); });
    REQUIRE(eventually([&] { return limiter.waiting() == 1; }));
    std::thread small([&] {
        (void)limiter.acquire(1);
        small_done = true;
    });
    REQUIRE(eventually([&] { return limiter.waiting() == 2; }));
    limiter.release(1);  // in use 3: room for 1, but the 3 is first in line
    REQUIRE(eventually([&] { return small_done.load(); }));  // the 3 gives up after 100 ms, letting the 1 in
    big.join();
    small.join();
    CHECK_FALSE(big_result.load());
    CHECK(limiter.in_use() == 4);
    CHECK(limiter.waiting() == 0);
}

TEST_CASE("racing threads on a dual bucket lose no permit to a refused call", "[thread][dual_bucket]") {
    manual_clock clock;  // standing still: the buckets never refill
    ratelimit::dual_bucket<manual_clock> bucket(rate::per_second(1), 40, rate::per_second(1), 300, clock);
    std::atomic<std::int64_t> calls{0};
    std::atomic<std::int64_t> tokens{0};
    run_together([&](int index) {
        for (int round = 0; round < 100; ++round) {
            const std::int64_t n = (index * 7 + round) % 20;  // 0..19 tokens
            if (bucket.try_acquire(n)) {
                calls.fetch_add(1);
                tokens.fetch_add(n);
            }
        }
    });
    CHECK(calls.load() <= 40);
    CHECK(tokens.load() <= 300);
    // All or nothing: what the buckets lost is exactly what was granted.
    CHECK(bucket.available_requests() == 40 - calls.load());
    CHECK(bucket.available_tokens() == 300 - tokens.load());
    // And the buckets were drained: requests ran out, or tokens fell below the largest ask.
    CHECK((bucket.available_requests() == 0 || bucket.available_tokens() < 19));
}

TEST_CASE("a dual bucket on the real clock stays within both buckets' bounds", "[thread][dual_bucket]") {
    const auto start = std::chrono::steady_clock::now();
    ratelimit::dual_bucket<> bucket(rate::per_second(500), 20, rate::per_second(5000), 200);
    std::atomic<std::int64_t> calls{0};
    std::atomic<std::int64_t> tokens{0};
    run_together([&](int index) {
        const auto stop = std::chrono::steady_clock::now() + 100ms;
        for (int round = 0; round < 100000 && std::chrono::steady_clock::now() < stop; ++round) {
            const std::int64_t n = 1 + (index + round) % 30;
            bool granted = false;
            if (round % 16 == 0) {
                granted = bucket.try_acquire_for(n, 2ms);
            } else {
                granted = bucket.try_acquire(n);
            }
            if (granted) {
                calls.fetch_add(1);
                tokens.fetch_add(n);
            }
        }
    });
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    CHECK(calls.load() > 0);
    CHECK(static_cast<double>(calls.load()) <= 20 + 500 * seconds);
    CHECK(static_cast<double>(tokens.load()) <= 200 + 5000 * seconds);
}

TEST_CASE("blocking dual bucket callers on many threads all complete, paced by the tokens",
          "[thread][dual_bucket]") {
    manual_clock clock;
    // 100 tokens per second, 50 to start with; requests are plentiful.
    ratelimit::dual_bucket<manual_clock> bucket(rate::per_second(1000), 1000, rate::per_second(100), 50, clock);
    std::atomic<std::int64_t> completed{0};
    run_together([&](int) {
        for (int round = 0; round < 10; ++round) {
            (void)bucket.acquire(5);
            completed.fetch_add(1);
        }
    });
    CHECK(completed.load() == 80);
    // 80 * 5 = 400 tokens, 50 at once and 350 at 100 per second: the last is usable at 3.5 s.
    CHECK(clock.now().time_since_epoch() >= 3500ms);
    CHECK(bucket.available_tokens() <= 0);
}

TEST_CASE("racing threads on all_of grant no more than the strictest part and refund exactly",
          "[thread][all_of]") {
    manual_clock clock;
    ratelimit::token_bucket<manual_clock> wide(rate::per_second(1), 100, clock);
    ratelimit::token_bucket<manual_clock> narrow(rate::per_second(1), 37, clock);
    auto both = ratelimit::all_of(wide, narrow);
    std::atomic<std::int64_t> granted{0};
    run_together([&](int index) {
        for (int round = 0; round < 100; ++round) {
            const std::int64_t n = 1 + (index + round) % 3;
            if (both.try_acquire(n)) granted.fetch_add(n);
        }
    });
    CHECK(granted.load() <= 37);
    CHECK(granted.load() >= 35);  // drained: fewer than 3 left
    CHECK(wide.available() == 100 - granted.load());  // every refund was exact
    CHECK(narrow.available() == 37 - granted.load());
}

TEST_CASE("blocking all_of callers on many threads are paced by the slowest part", "[thread][all_of]") {
    manual_clock clock;
    ratelimit::token_bucket<manual_clock> fast(rate::per_second(100), 10, clock);
    ratelimit::token_bucket<manual_clock> slow(rate::per_second(10), 5, clock);
    auto both = ratelimit::all_of(fast, slow);
    std::atomic<std::int64_t> completed{0};
    run_together([&](int) {
        for (int round = 0; round < 5; ++round) {
            (void)both.acquire(1);
            completed.fetch_add(1);
        }
    });
    CHECK(completed.load() == 40);
    // 40 permits from `slow`: 5 at once, 35 at 10 per second: the last at 3.5 s.
    CHECK(clock.now().time_since_epoch() >= 3500ms);
}
