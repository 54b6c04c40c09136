// sliding_window_log and leaky_bucket under many threads: on a clock standing
// still (exact counts), on a manual clock moved by the sleepers, and on the
// real steady_clock (bounded loops, well under a second each).

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

#include <ratelimit/leaky_bucket.hpp>
#include <ratelimit/sliding_window_log.hpp>

#include "support/catch.hpp"

using namespace std::chrono_literals;
using ratelimit::manual_clock;

namespace {

constexpr int threads = 8;

/// Runs `body(thread_index)` on `threads` threads released together.
template <class Body>
void race(Body body) {
    std::atomic<bool> go{false};
    std::vector<std::thread> workers;
    for (int i = 0; i < threads; ++i) {
        workers.emplace_back([&, i] {
            while (!go.load()) std::this_thread::yield();
            body(i);
        });
    }
    go.store(true);
    for (auto& worker : workers) worker.join();
}

/// n permits granted at `time` (nanoseconds on the limiter's clock).
struct granted {
    std::int64_t time;
    std::int64_t n;
};

/// The most permits in any half-open window [g, g + window) starting at a grant.
std::int64_t fullest_window(std::vector<granted> grants, std::int64_t window) {
    std::sort(grants.begin(), grants.end(), [](const granted& a, const granted& b) { return a.time < b.time; });
    std::int64_t fullest = 0;
    std::size_t end = 0;
    std::int64_t inside = 0;
    for (std::size_t i = 0; i < grants.size(); ++i) {
        while (end < grants.size() && grants[end].time < grants[i].time + window) inside += grants[end++].n;
        fullest = std::max(fullest, inside);
        inside -= grants[i].n;
    }
    return fullest;
}

template <class TimePoint>
std::int64_t ns_of(TimePoint t) {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}

}  // namespace

TEST_CASE("on a clock standing still the log grants exactly limit permits across 8 threads", "[thread][sliding_window_log]") {
    manual_clock clock;
    ratelimit::sliding_window_log<manual_clock> log(37, 1s, clock);
    std::atomic<std::int64_t> permits{0};
    race([&](int i) {
        for (int attempt = 0; attempt < 500; ++attempt) {
            const std::int64_t n = 1 + (attempt + i) % 3;
            if (log.try_acquire(n)) permits.fetch_add(n);
        }
        // Whatever a larger n could not take, single permits take.
        for (int attempt = 0; attempt < 50; ++attempt) {
            if (log.try_acquire(1)) permits.fetch_add(1);
        }
    });
    CHECK(permits.load() == 37);
    CHECK(log.available() == 0);
}

TEST_CASE("threads sleeping on a manual clock never push the log over its limit in any window",
          "[thread][sliding_window_log]") {
    manual_clock clock;
    constexpr std::int64_t limit = 5;
    constexpr auto window = 1000ns;
    ratelimit::sliding_window_log<manual_clock> log(limit, window, clock);
    std::mutex mutex;
    std::vector<granted> grants;
    race([&](int i) {
        std::vector<granted> mine;
        for (int round = 0; round < 200; ++round) {
            const std::int64_t n = 1 + (round * 7 + i) % limit;
            if (round % 3 == 0) {
                if (log.try_acquire_for(n, 300ns)) {
                    // Not recorded: its grant time is internal; it still counts in the log.
                }
                continue;
            }
            auto r = log.reserve(n);
            if (round % 11 == 0) {
                r.cancel();  // may or may not give back; either way it is not used
                continue;
            }
            mine.push_back({ns_of(r.ready_at()), n});
            r.wait();
        }
        std::lock_guard<std::mutex> lock(mutex);
        grants.insert(grants.end(), mine.begin(), mine.end());
    });
    CHECK(fullest_window(grants, window.count()) <= limit);
    CHECK(grants.size() > 0);
}

TEST_CASE("on the real clock the log keeps every window within its limit across 8 threads", "[thread][sliding_window_log]") {
    constexpr std::int64_t limit = 4;
    constexpr auto window = 10ms;
    ratelimit::sliding_window_log<> log(limit, window);
    std::mutex mutex;
    std::vector<granted> grants;
    std::atomic<std::int64_t> quick{0};
    race([&](int i) {
        std::vector<granted> mine;
        for (int round = 0; round < 10; ++round) {
            if (log.try_acquire()) quick.fetch_add(1);  // unrecorded, but counted by the log
            auto r = log.reserve(1 + (round + i) % 2);
            mine.push_back({ns_of(r.ready_at()), r.count()});
            r.wait();
        }
        std::lock_guard<std::mutex> lock(mutex);
        grants.insert(grants.end(), mine.begin(), mine.end());
    });
    CHECK(fullest_window(grants, std::chrono::nanoseconds{window}.count()) <= limit);
    std::int64_t recorded = 0;
    for (const granted& g : grants) recorded += g.n;
    CHECK(recorded == 8 * (5 * 1 + 5 * 2));
    // The recorded permits alone need (recorded / limit - 1) windows.
    const auto [first, last] = std::minmax_element(grants.begin(), grants.end(),
                                                   [](const granted& a, const granted& b) { return a.time < b.time; });
    CHECK(last->time - first->time >= (recorded / limit - 1) * std::chrono::nanoseconds{window}.count());
}

TEST_CASE("on a clock standing still 8 threads get exactly one leaky permit", "[thread][leaky_bucket]") {
    manual_clock clock;
    ratelimit::leaky_bucket<manual_clock> bucket(ratelimit::rate::per_second(10), 6, clock);
    std::atomic<std::int64_t> granted_count{0};
    race([&](int) {
        for (int attempt = 0; attempt < 300; ++attempt) {
            if (bucket.try_acquire()) granted_count.fetch_add(1);
        }
    });
    CHECK(granted_count.load() == 1);
}

TEST_CASE("the leaky queue bound holds with 8 threads racing to reserve on a clock standing still",
          "[thread][leaky_bucket]") {
    manual_clock clock;
    constexpr std::int64_t max_queue = 13;
    const auto interval = 100ms;
    ratelimit::leaky_bucket<manual_clock> bucket(ratelimit::rate::every(interval), max_queue, clock);
    std::mutex mutex;
    std::vector<manual_clock::time_point> slots;
    std::atomic<std::int64_t> refused{0};
    race([&](int) {
        std::vector<manual_clock::time_point> mine;
        for (int attempt = 0; attempt < 50; ++attempt) {
            try {
                auto r = bucket.reserve();
                mine.push_back(r.ready_at());
            } catch (const ratelimit::queue_full&) {
                refused.fetch_add(1);
            }
        }
        std::lock_guard<std::mutex> lock(mutex);
        slots.insert(slots.end(), mine.begin(), mine.end());
    });
    // One served now and max_queue waiting, on consecutive slots; everyone else refused.
    REQUIRE(slots.size() == static_cast<std::size_t>(max_queue + 1));
    CHECK(refused.load() == threads * 50 - (max_queue + 1));
    std::sort(slots.begin(), slots.end());
    for (std::size_t i = 0; i < slots.size(); ++i) CHECK(slots[i] == manual_clock::time_point{static_cast<int>(i) * interval});
    CHECK(bucket.queue_size() == max_queue);
}

TEST_CASE("threads sleeping on a manual clock get leaky slots at least an interval apart", "[thread][leaky_bucket]") {
    manual_clock clock;
    constexpr std::int64_t max_queue = 3;
    const auto interval = 50ns;
    ratelimit::leaky_bucket<manual_clock> bucket(ratelimit::rate::every(interval), max_queue, clock);
    std::mutex mutex;
    std::vector<granted> grants;
    race([&](int i) {
        std::vector<granted> mine;
        for (int round = 0; round < 200; ++round) {
            const std::int64_t n = 1 + (round + i) % 2;
            try {
                auto r = bucket.reserve(n);
                mine.push_back({ns_of(r.ready_at()), n});
                r.wait();
            } catch (const ratelimit::queue_full&) {
                clock.advance(interval / 2);  // let the schedule drain a little
            }
        }
        std::lock_guard<std::mutex> lock(mutex);
        grants.insert(grants.end(), mine.begin(), mine.end());
    });
    std::sort(grants.begin(), grants.end(), [](const granted& a, const granted& b) { return a.time < b.time; });
    REQUIRE(grants.size() > 10);
    for (std::size_t k = 1; k < grants.size(); ++k) {
        INFO("grant " << k);
        CHECK(grants[k].time - grants[k - 1].time >= grants[k].n * interval.count());
    }
}

TEST_CASE("on the real clock 8 threads are paced an interval apart and never wait beyond the queue",
          "[thread][leaky_bucket]") {
    constexpr std::int64_t max_queue = 3;
    const auto interval = 2ms;
    ratelimit::leaky_bucket<> bucket(ratelimit::rate::every(interval), max_queue);
    std::mutex mutex;
    std::vector<std::int64_t> slots;
    std::atomic<bool> done{false};
    std::atomic<std::int64_t> most_waiting{0};
    std::thread monitor([&] {
        while (!done.load()) {
            const std::int64_t waiting = bucket.queue_size();
            std::int64_t seen = most_waiting.load();
            while (waiting > seen && !most_waiting.compare_exchange_weak(seen, waiting)) {
            }
            std::this_thread::yield();
        }
    });
    std::atomic<std::int64_t> too_long{0};
    race([&](int) {
        std::vector<std::int64_t> mine;
        for (int round = 0; round < 12; ++round) {
            try {
                auto r = bucket.reserve();
                const auto after = std::chrono::steady_clock::now();
                if (r.ready_at() - after > max_queue * interval) too_long.fetch_add(1);
                mine.push_back(ns_of(r.ready_at()));
                r.wait();
            } catch (const ratelimit::queue_full&) {
                std::this_thread::sleep_for(interval);
            }
        }
        std::lock_guard<std::mutex> lock(mutex);
        slots.insert(slots.end(), mine.begin(), mine.end());
    });
    done.store(true);
    monitor.join();
    CHECK(too_long.load() == 0);
    CHECK(most_waiting.load() <= max_queue);
    std::sort(slots.begin(), slots.end());
    REQUIRE(slots.size() > 10);
    for (std::size_t k = 1; k < slots.size(); ++k) CHECK(slots[k] - slots[k - 1] >= std::chrono::nanoseconds{interval}.count());
}
