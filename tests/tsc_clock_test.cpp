// tsc_clock: a clock, monotonic, close to steady_clock, and usable by a limiter.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <thread>

#include <ratelimit/token_bucket.hpp>
#include <ratelimit/tsc_clock.hpp>

#include "support/catch.hpp"

using namespace std::chrono_literals;
using ratelimit::tsc_clock;

namespace {

/// The CPU's spin-wait hint (x86 `pause`); nothing elsewhere.
void spin_pause() noexcept {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

}  // namespace

TEST_CASE("tsc_clock meets the clock concept and costs a limiter no space", "[tsc_clock]") {
    STATIC_REQUIRE(ratelimit::clock<tsc_clock>);
    STATIC_REQUIRE(sizeof(ratelimit::token_bucket<tsc_clock>) ==
                   sizeof(ratelimit::token_bucket<std::chrono::steady_clock>));
    INFO("reads the invariant TSC: " << tsc_clock::uses_tsc());
    SUCCEED();
}

TEST_CASE("tsc_clock never goes back on one thread", "[tsc_clock]") {
    auto previous = tsc_clock::now();
    for (int i = 0; i < 200'000; ++i) {
        const auto now = tsc_clock::now();
        REQUIRE(now >= previous);
        previous = now;
    }
}

TEST_CASE("a tsc_clock read after another thread's read is never earlier", "[tsc_clock][thread]") {
    // Two threads pass a baton through `turn`, 25,000 times per round, 8 rounds
    // of fresh threads (so the scheduler places them anew). Each, when it holds
    // the baton, loads the other's last reading (the acquire on `turn` orders
    // it), reads the clock, checks its reading is not earlier, and stores its
    // own. No timing window: every hand-off is a happens-before edge, so any
    // earlier reading is a clock that is not ordered across threads. The
    // pause in the wait loop makes the hand-off land while the reader's load
    // is still in flight, where an unfenced rdtsc can run ahead of it: a bare
    // rdtsc on this project's VMs gives thousands of earlier readings here.
    constexpr int rounds = 8;
    constexpr int hand_offs = 25'000;
    std::int64_t earlier = 0;
    std::int64_t handed = 0;
    for (int round = 0; round < rounds; ++round) {
        std::atomic<int> turn{0};
        std::atomic<std::int64_t> last{tsc_clock::now().time_since_epoch().count()};
        const auto play = [&](int parity) {
            std::int64_t count = 0;
            for (int i = parity; i < hand_offs; i += 2) {
                for (int spins = 0; turn.load(std::memory_order_acquire) != i; ++spins) {
                    spin_pause();
                    if (spins > 64) std::this_thread::yield();  // two cores shared by many: let the other run
                }
                const std::int64_t seen = last.load(std::memory_order_relaxed);
                const std::int64_t now = tsc_clock::now().time_since_epoch().count();
                if (now < seen) ++count;
                last.store(now, std::memory_order_relaxed);
                turn.store(i + 1, std::memory_order_release);
            }
            return count;
        };
        std::int64_t earlier_on_b = 0;
        std::thread b([&] { earlier_on_b = play(1); });
        earlier += play(0);
        b.join();
        earlier += earlier_on_b;
        handed += turn.load();
    }
    INFO("reads the invariant TSC: " << tsc_clock::uses_tsc());
    CHECK(handed == rounds * hand_offs);
    CHECK(earlier == 0);
}

TEST_CASE("tsc_clock tracks steady_clock", "[tsc_clock]") {
    // Generous: a loaded machine may deschedule us between the two reads.
    const auto steady_start = std::chrono::steady_clock::now();
    const auto tsc_start = tsc_clock::now();
    CHECK(std::chrono::abs(tsc_start.time_since_epoch() - steady_start.time_since_epoch()) < 50ms);
    std::this_thread::sleep_for(100ms);
    const auto steady_elapsed = std::chrono::steady_clock::now() - steady_start;
    const auto tsc_elapsed = tsc_clock::now() - tsc_start;
    CHECK(std::chrono::abs(tsc_elapsed - steady_elapsed) < 20ms);
}

TEST_CASE("a token bucket runs on tsc_clock", "[tsc_clock]") {
    ratelimit::token_bucket<tsc_clock> bucket(ratelimit::rate::per_hour(1), 3);
    CHECK(bucket.try_acquire(3));
    CHECK_FALSE(bucket.try_acquire(1));
    CHECK(bucket.time_until_available(1) > 59min);
}
