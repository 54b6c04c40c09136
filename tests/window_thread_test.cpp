// fixed_window and sliding_window_counter under real threads: a clock standing
// still, a clock ticking under the callers, and the real steady_clock. Every
// loop is bounded; the suite must pass under ThreadSanitizer.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <ratelimit/fixed_window.hpp>
#include <ratelimit/sliding_window_counter.hpp>
#include <thread>
#include <vector>

#include "support/catch.hpp"

using namespace std::chrono_literals;
using ratelimit::manual_clock;

namespace {

/// Starts `threads` workers at once and joins them.
template <class Work>
void run_together(int threads, Work work) {
    std::atomic<bool> go{false};
    std::vector<std::thread> workers;
    for (int i = 0; i < threads; ++i) {
        workers.emplace_back([&, i] {
            while (!go.load()) std::this_thread::yield();
            work(i);
        });
    }
    go.store(true);
    for (auto& worker : workers) worker.join();
}

/// Paces callers against a ticking clock: each tick of the clock lets
/// `per_tick` more attempts through, and the clock ticks again only once they
/// have been taken, so the callers see every stretch of time.
class lockstep {
public:
    lockstep(std::int64_t ticks, std::int64_t per_tick) : ticks_(ticks), per_tick_(per_tick) {}

    /// Run by the clock's thread: `advance(tick)` for each tick, in step with the callers.
    template <class Advance>
    void tick(Advance advance) {
        for (std::int64_t tick = 0; tick < ticks_; ++tick) {
            while (claimed_.load() < per_tick_ * tick) std::this_thread::yield();
            advance(tick);
            ticked_.store(tick + 1);
        }
    }

    /// Run by a caller before each attempt: false once every tick is used up.
    bool next() {
        const std::int64_t slot = claimed_.fetch_add(1);
        if (slot >= per_tick_ * ticks_) return false;
        while (ticked_.load() < slot / per_tick_) std::this_thread::yield();
        return true;
    }

private:
    std::int64_t ticks_;
    std::int64_t per_tick_;
    std::atomic<std::int64_t> claimed_{0};
    std::atomic<std::int64_t> ticked_{0};
};

}  // namespace

#define WINDOW_LIMITERS ratelimit::fixed_window<manual_clock>, ratelimit::sliding_window_counter<manual_clock>

TEMPLATE_TEST_CASE("8 threads on a clock standing still get exactly the limit", "[thread]", WINDOW_LIMITERS) {
    // Many rounds, so that a lost update between two racing grants would show.
    for (int round = 0; round < 20; ++round) {
        manual_clock clock;
        TestType limiter(2000, 1s, clock);
        std::atomic<std::int64_t> granted{0};
        run_together(8, [&](int) {
            for (int attempt = 0; attempt < 400; ++attempt) {
                if (limiter.try_acquire(1)) granted.fetch_add(1);
            }
            while (limiter.try_acquire(1)) granted.fetch_add(1);
        });
        INFO("round " << round);
        REQUIRE(granted.load() == 2000);
        REQUIRE(limiter.available() == 0);
    }
}

TEMPLATE_TEST_CASE("8 threads asking for different n on a still clock never split a request", "[thread]",
                   WINDOW_LIMITERS) {
    manual_clock clock;
    TestType limiter(1000, 1s, clock);
    std::atomic<std::int64_t> granted{0};
    run_together(8, [&](int id) {
        for (int attempt = 0; attempt < 300; ++attempt) {
            const std::int64_t n = 1 + (id + attempt) % 7;
            if (limiter.try_acquire(n)) granted.fetch_add(n);
        }
        while (limiter.try_acquire(1)) granted.fetch_add(1);  // then take what is left, one at a time
    });
    CHECK(granted.load() == 1000);
    CHECK(limiter.available() == 0);
}

TEMPLATE_TEST_CASE("concurrent refunds of permits just taken keep the count exact", "[thread]", WINDOW_LIMITERS) {
    manual_clock clock;
    TestType limiter(50, 1s, clock);
    std::atomic<std::int64_t> outstanding{0};
    run_together(8, [&](int id) {
        for (int attempt = 0; attempt < 400; ++attempt) {
            if (!limiter.try_acquire(1)) continue;
            if ((attempt + id) % 2 == 0) {
                limiter.refund(1);
            } else {
                outstanding.fetch_add(1);
            }
        }
    });
    CHECK(outstanding.load() == 50);  // refunds made room until the limit was held for good
    CHECK(limiter.available() == 0);
}

TEMPLATE_TEST_CASE("with a clock ticking under 6 threads no aligned window grants more than the limit", "[thread]",
                   WINDOW_LIMITERS) {
    // The clock moves 97 ns (every 50th tick: 3 windows) per 4 attempts. Each
    // grant is attributed to a window when the clock read before and
    // after the call fall in the same one; those alone must stay within the limit.
    constexpr std::int64_t limit = 20;
    constexpr auto window = 1000ns;
    manual_clock clock;
    TestType limiter(limit, window, clock);
    const manual_clock::time_point origin = clock.now();
    std::mutex mutex;
    std::map<std::int64_t, std::int64_t> per_window;
    std::atomic<std::int64_t> total{0};
    lockstep steps(3000, 4);
    std::thread ticker(
        [&] { steps.tick([&](std::int64_t tick) { clock.advance(tick % 50 == 49 ? 3 * window : 97ns); }); });
    run_together(6, [&](int id) {
        std::map<std::int64_t, std::int64_t> mine;
        for (std::int64_t attempt = 0; steps.next(); ++attempt) {
            const std::int64_t n = 1 + (id + attempt) % 3;
            const std::int64_t before = (clock.now() - origin) / window;
            if (!limiter.try_acquire(n)) continue;
            const std::int64_t after = (clock.now() - origin) / window;
            total.fetch_add(n);
            if (before == after) mine[before] += n;
        }
        const std::lock_guard<std::mutex> lock(mutex);
        for (const auto& [w, n] : mine) per_window[w] += n;
    });
    ticker.join();
    for (const auto& [w, n] : per_window) {
        INFO("window " << w);
        REQUIRE(n <= limit);
    }
    const std::int64_t windows_touched = (clock.now() - origin) / window + 1;
    CHECK(total.load() <= limit * windows_touched);
    CHECK(total.load() > 0);
}

TEST_CASE("the sliding counter's base moves safely under concurrent callers", "[thread][sliding_window_counter]") {
    // limit 2^26 − 1 leaves 10 index bits: the base moves every few hundred
    // windows, here many times while 4 threads take permits.
    using counter = ratelimit::sliding_window_counter<manual_clock>;
    constexpr std::int64_t limit = counter::max_limit;
    constexpr auto window = 1000ns;
    manual_clock clock;
    counter limiter(limit, window, clock);
    const manual_clock::time_point origin = clock.now();
    std::mutex mutex;
    std::map<std::int64_t, std::int64_t> per_window;
    std::atomic<std::int64_t> bad_available{0};
    lockstep steps(2000, 4);
    std::thread ticker([&] {
        // Every tenth tick jumps 300 windows.
        steps.tick([&](std::int64_t tick) { clock.advance(tick % 10 == 9 ? 300 * window : 211ns); });
    });
    run_together(4, [&](int id) {
        std::map<std::int64_t, std::int64_t> mine;
        for (std::int64_t attempt = 0; steps.next(); ++attempt) {
            const std::int64_t n = limit / (2 + (id + attempt) % 5);
            const std::int64_t before = (clock.now() - origin) / window;
            if (attempt % 7 == 0) {
                const std::int64_t room = limiter.available();
                if (room < 0 || room > limit) bad_available.fetch_add(1);
                continue;
            }
            if (!limiter.try_acquire(n)) continue;
            const std::int64_t after = (clock.now() - origin) / window;
            if (before == after) mine[before] += n;
        }
        const std::lock_guard<std::mutex> lock(mutex);
        for (const auto& [w, n] : mine) per_window[w] += n;
    });
    ticker.join();
    CHECK(bad_available.load() == 0);
    for (const auto& [w, n] : per_window) {
        INFO("window " << w);
        REQUIRE(n <= limit);
    }
    CHECK(per_window.size() > 100);  // grants landed in many windows, across many moves of the base
}

TEMPLATE_TEST_CASE("on the real clock, threads hammering try_acquire stay within the limit per window",
                   "[thread][real_clock]", ratelimit::fixed_window<>, ratelimit::sliding_window_counter<>) {
    constexpr std::int64_t limit = 25;
    constexpr auto window = 10ms;
    const auto start = std::chrono::steady_clock::now();
    TestType limiter(limit, window);
    std::atomic<std::int64_t> granted{0};
    run_together(4, [&](int) {
        const auto stop = std::chrono::steady_clock::now() + 60ms;
        for (int attempt = 0; attempt < 200000 && std::chrono::steady_clock::now() < stop; ++attempt) {
            if (limiter.try_acquire(1)) granted.fetch_add(1);
        }
    });
    const auto elapsed = std::chrono::steady_clock::now() - start;
    // Windows start at construction (after `start`): at most elapsed / window + 1 of them were touched.
    const std::int64_t windows_touched = elapsed / window + 1;
    CHECK(granted.load() <= limit * windows_touched);
    CHECK(granted.load() >= limit);  // the first window alone grants the limit
}

TEMPLATE_TEST_CASE("on the real clock, blocking acquires take at least as many windows as the limit requires",
                   "[thread][real_clock]", ratelimit::fixed_window<>, ratelimit::sliding_window_counter<>) {
    // 4 threads × 10 permits at 5 per 15 ms window: each window holds at most 5,
    // so the 40th permit is usable no earlier than window 7, 7 × 15 ms after construction
    // (which is after `start`).
    constexpr std::int64_t limit = 5;
    constexpr auto window = 15ms;
    const auto start = std::chrono::steady_clock::now();
    TestType limiter(limit, window);
    std::atomic<std::int64_t> granted{0};
    std::atomic<std::int64_t> negative_waits{0};
    run_together(4, [&](int) {
        for (int i = 0; i < 10; ++i) {
            if (limiter.acquire(1) < std::chrono::steady_clock::duration::zero()) negative_waits.fetch_add(1);
            granted.fetch_add(1);
        }
    });
    const auto elapsed = std::chrono::steady_clock::now() - start;
    CHECK(negative_waits.load() == 0);
    CHECK(granted.load() == 40);
    CHECK(elapsed >= (40 / limit - 1) * window);
}
