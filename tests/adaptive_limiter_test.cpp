// adaptive_limiter: AIMD on the rate, pauses on throttle, recovery.

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <ratelimit/adaptive_limiter.hpp>
#include <ratelimit/tsc_clock.hpp>

#include "support/catch.hpp"

using namespace std::chrono_literals;
using ratelimit::adaptive_config;
using ratelimit::adaptive_limiter;
using ratelimit::adaptive_state;
using ratelimit::manual_clock;
using ratelimit::rate;

namespace {

adaptive_config config_10_per_second() {
    adaptive_config cfg;
    cfg.initial_rate = rate::per_second(10);
    cfg.min_rate = rate::per_second(1);
    cfg.max_rate = rate::per_second(20);
    cfg.increase_factor = 1.5;
    cfg.decrease_factor = 0.5;
    cfg.recovery_time = 30s;
    return cfg;
}

}  // namespace

TEST_CASE("on_success multiplies the rate by increase_factor up to max_rate", "[adaptive]") {
    manual_clock clock;
    adaptive_limiter<manual_clock> limiter(config_10_per_second(), clock);
    limiter.on_success();
    CHECK(limiter.current_rate().per_second_value() == Approx(15.0));  // 10 · 1.5
    limiter.on_success();
    CHECK(limiter.current_rate().per_second_value() == Approx(20.0));  // 22.5 capped at 20
    CHECK(limiter.state() == adaptive_state::normal);
}

TEST_CASE("on_throttle halves the rate, floored at min_rate", "[adaptive]") {
    manual_clock clock;
    adaptive_limiter<manual_clock> limiter(config_10_per_second(), clock);
    limiter.on_throttle();
    CHECK(limiter.current_rate().per_second_value() == Approx(5.0));
    limiter.on_throttle();
    limiter.on_throttle();
    CHECK(limiter.current_rate().per_second_value() == Approx(1.25));
    limiter.on_throttle();
    CHECK(limiter.current_rate().per_second_value() == Approx(1.0));  // 0.625 floored at 1
}

TEST_CASE("a throttle pauses every acquisition until retry_after has passed", "[adaptive]") {
    manual_clock clock;
    adaptive_limiter<manual_clock> limiter(config_10_per_second(), clock);
    limiter.on_throttle(2s);
    CHECK(limiter.state() == adaptive_state::throttled);
    CHECK_FALSE(limiter.try_acquire());
    const auto before = clock.now();
    CHECK_FALSE(limiter.try_acquire_for(1, 1s));  // the pause outlasts the deadline
    CHECK(clock.now() == before);                  // and nothing slept in vain
    clock.advance(2s - 1ns);
    CHECK_FALSE(limiter.try_acquire());
    clock.advance(1ns);
    CHECK(limiter.try_acquire());
    CHECK(limiter.state() == adaptive_state::recovering);
}

TEST_CASE("acquire sleeps out the pause, then the bucket's wait", "[adaptive]") {
    manual_clock clock;
    adaptive_limiter<manual_clock> limiter(config_10_per_second(), clock);
    CHECK(limiter.acquire() == 0ns);  // the bucket holds one permit
    limiter.on_throttle(3s);          // rate 5/s, paused for 3 s
    CHECK(limiter.acquire() == 3s);   // the bucket refilled during the pause
    CHECK(limiter.acquire() == 200ms);  // then one permit every 1/5 s
}

TEST_CASE("try_acquire_until sleeps out a pause that ends before the deadline", "[adaptive]") {
    manual_clock clock;
    adaptive_limiter<manual_clock> limiter(config_10_per_second(), clock);
    limiter.on_throttle(1s);
    const auto start = clock.now();
    CHECK(limiter.try_acquire_until(1, start + 2s));
    CHECK(clock.now() - start == 1s);
}

TEST_CASE("successes do not raise the rate during the pause or the recovery", "[adaptive]") {
    manual_clock clock;
    adaptive_limiter<manual_clock> limiter(config_10_per_second(), clock);
    limiter.on_throttle(1s);  // 5/s
    limiter.on_success();
    CHECK(limiter.current_rate().per_second_value() == Approx(5.0));
    clock.advance(1s);
    CHECK(limiter.state() == adaptive_state::recovering);
    limiter.on_success();
    CHECK(limiter.current_rate().per_second_value() == Approx(5.0));
    clock.advance(30s);  // pause end + recovery_time
    CHECK(limiter.state() == adaptive_state::normal);
    limiter.on_success();
    CHECK(limiter.current_rate().per_second_value() == Approx(7.5));
}

TEST_CASE("a later throttle extends a pause and never shortens it", "[adaptive]") {
    manual_clock clock;
    adaptive_limiter<manual_clock> limiter(config_10_per_second(), clock);
    limiter.on_throttle(10s);
    limiter.on_throttle(1s);
    CHECK(limiter.paused_until() == clock.now() + 10s);
    limiter.on_throttle(20s);
    CHECK(limiter.paused_until() == clock.now() + 20s);
}

TEST_CASE("the bucket follows the adapted rate", "[adaptive]") {
    manual_clock clock;
    adaptive_limiter<manual_clock> limiter(config_10_per_second(), clock);
    REQUIRE(limiter.try_acquire());
    limiter.on_success();  // 15/s
    limiter.on_success();  // 20/s
    clock.advance(50ms);   // one permit at 20/s
    CHECK(limiter.try_acquire());
    CHECK_FALSE(limiter.try_acquire());
}

TEST_CASE("bad configurations name the field", "[adaptive]") {
    auto cfg = config_10_per_second();
    auto expect_message = [](const adaptive_config& c, const char* field) {
        try {
            adaptive_limiter<manual_clock> limiter(c, manual_clock{});
            FAIL("no exception");
        } catch (const std::invalid_argument& e) {
            CHECK(std::string(e.what()).find(field) != std::string::npos);
        }
    };
    auto c1 = cfg;
    c1.min_rate = rate::per_second(30);
    expect_message(c1, "min_rate");
    auto c2 = cfg;
    c2.initial_rate = rate::per_second(100);
    expect_message(c2, "initial_rate");
    auto c3 = cfg;
    c3.increase_factor = 0.9;
    expect_message(c3, "increase_factor");
    auto c4 = cfg;
    c4.decrease_factor = 0;
    expect_message(c4, "decrease_factor");
    auto c5 = cfg;
    c5.recovery_time = -1s;
    expect_message(c5, "recovery_time");
    auto c6 = cfg;
    c6.capacity = 0;
    expect_message(c6, "capacity");
}

TEST_CASE("feedback from many threads never blocks and keeps the rate in bounds", "[adaptive][thread]") {
    adaptive_config cfg = config_10_per_second();
    cfg.capacity = 1000;
    cfg.max_rate = rate::per_second(1e6);
    cfg.initial_rate = rate::per_second(1000);
    adaptive_limiter<> limiter(cfg);
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
        threads.emplace_back([&limiter, t] {
            for (int i = 0; i < 2000; ++i) {
                if (t == 0 && i % 100 == 0) {
                    limiter.on_throttle(std::chrono::microseconds{10});
                } else {
                    limiter.on_success();
                }
                (void)limiter.try_acquire();
            }
        });
    }
    for (auto& thread : threads) thread.join();
    const double final_rate = limiter.current_rate().per_second_value();
    CHECK(final_rate >= 1.0);
    CHECK(final_rate <= 1e6);
}

// ---- issue 12: pauses that begin while a caller sleeps, unrepresentable rates, hostile pauses ----

namespace {

/// manual_clock whose first sleep_until is held: the sleeper says it is
/// asleep (and until when), then waits for the test to release it before the
/// time jumps to its target as manual_clock's does. Later sleeps pass through
/// unless the release asks to hold the next one too. Copies share the time
/// and the hold, as the limiter's copies must. No timing window: the test
/// acts only once the sleeper is known to sleep.
class held_clock {
public:
    using rep = manual_clock::rep;
    using period = manual_clock::period;
    using duration = manual_clock::duration;
    using time_point = manual_clock::time_point;

    [[nodiscard]] time_point now() const noexcept { return time_.now(); }
    void advance(duration d) { time_.advance(d); }

    void sleep_until(time_point t) {
        {
            std::unique_lock lock(hold_->mutex);
            if (hold_->armed) {
                hold_->armed = false;
                hold_->asleep = true;
                hold_->target = t;
                hold_->changed.notify_all();
                hold_->changed.wait(lock, [this] { return !hold_->asleep; });
            }
        }
        time_.sleep_until(t);
    }

    /// Waits until a caller is held asleep (true, with its wake-up time in
    /// `target`) or `done()` says the caller returned instead (false).
    bool wait_for_sleeper(time_point& target) {
        std::unique_lock lock(hold_->mutex);
        hold_->changed.wait(lock, [this] { return hold_->asleep || hold_->done; });
        target = hold_->target;
        return hold_->asleep;
    }
    /// Lets the held sleeper go on; `hold_next` holds its next sleep as well.
    void release(bool hold_next = false) {
        std::lock_guard lock(hold_->mutex);
        hold_->asleep = false;
        hold_->armed = hold_next;
        hold_->changed.notify_all();
    }
    /// Called by the caller's thread when its call has returned.
    void done() {
        std::lock_guard lock(hold_->mutex);
        hold_->done = true;
        hold_->changed.notify_all();
    }

private:
    struct hold {
        std::mutex mutex;
        std::condition_variable changed;
        bool armed = true, asleep = false, done = false;
        time_point target{};
    };
    manual_clock time_;
    std::shared_ptr<hold> hold_ = std::make_shared<hold>();
};

/// 5 permits a second, capacity 1; a throttle halves the rate.
adaptive_config config_5_per_second() {
    adaptive_config cfg;
    cfg.initial_rate = rate::per_second(5);
    cfg.min_rate = rate::per_second(1);
    cfg.max_rate = rate::per_second(10);
    return cfg;
}

/// What the constructor says about `cfg`: its exception's message, or "no exception".
std::string construction_error(const adaptive_config& cfg) {
    try {
        adaptive_limiter<manual_clock> limiter(cfg, manual_clock{});
    } catch (const std::invalid_argument& e) {
        return e.what();
    }
    return "no exception";
}

constexpr std::int64_t int64_max = std::numeric_limits<std::int64_t>::max();

}  // namespace

TEST_CASE("a caller asleep in acquire when a throttle arrives waits out the pause", "[adaptive][pause]") {
    held_clock clock;
    adaptive_limiter<held_clock> limiter(config_5_per_second(), clock);
    const auto start = clock.now();
    REQUIRE(limiter.try_acquire());  // the bucket is empty: the next permit comes at 1/5 s = 200 ms
    std::chrono::nanoseconds waited{-1};
    std::thread caller([&] {
        waited = limiter.acquire();
        clock.done();
    });
    held_clock::time_point wakes{};
    const bool asleep = clock.wait_for_sleeper(wakes);
    CHECK(asleep);
    CHECK(wakes == start + 200ms);
    clock.advance(50ms);
    limiter.on_throttle(1s);  // paused until 50 ms + 1 s = 1050 ms
    clock.release();
    caller.join();
    CHECK(waited == 1050ms);
    CHECK(clock.now() == start + 1050ms);
}

TEST_CASE("a throttle that comes while a caller sleeps out a pause extends its wait", "[adaptive][pause]") {
    held_clock clock;
    adaptive_limiter<held_clock> limiter(config_5_per_second(), clock);
    const auto start = clock.now();
    REQUIRE(limiter.try_acquire());  // next permit at 200 ms
    std::chrono::nanoseconds waited{-1};
    std::thread caller([&] {
        waited = limiter.acquire();
        clock.done();
    });
    held_clock::time_point wakes{};
    CHECK(clock.wait_for_sleeper(wakes));  // asleep until its permit at 200 ms
    clock.advance(50ms);
    limiter.on_throttle(1s);  // paused until 1050 ms
    clock.release(true);
    CHECK(clock.wait_for_sleeper(wakes));  // woke at 200 ms, asleep again until the pause's end
    CHECK(wakes == start + 1050ms);
    clock.advance(300ms);
    limiter.on_throttle(2s);  // at 500 ms: paused until 2500 ms
    clock.release();
    caller.join();
    CHECK(waited == 2500ms);
    CHECK(clock.now() == start + 2500ms);
}

TEST_CASE("a caller asleep in try_acquire_for when a throttle arrives waits out the pause within its deadline",
          "[adaptive][pause]") {
    held_clock clock;
    adaptive_limiter<held_clock> limiter(config_5_per_second(), clock);
    const auto start = clock.now();
    REQUIRE(limiter.try_acquire());  // next permit at 200 ms
    bool granted = false;
    std::thread caller([&] {
        granted = limiter.try_acquire_for(1, 5s);
        clock.done();
    });
    held_clock::time_point wakes{};
    CHECK(clock.wait_for_sleeper(wakes));
    CHECK(wakes == start + 200ms);
    clock.advance(50ms);
    limiter.on_throttle(1s);  // paused until 1050 ms, inside the 5 s deadline
    clock.release();
    caller.join();
    CHECK(granted);
    CHECK(clock.now() == start + 1050ms);
}

TEST_CASE("a try_acquire_for whose deadline falls inside a pause begun while it slept fails and gives its permit back",
          "[adaptive][pause]") {
    adaptive_config cfg;  // 1 permit a second, capacity 4; a throttle only pauses (decrease_factor 1)
    cfg.initial_rate = cfg.min_rate = cfg.max_rate = rate::per_second(1);
    cfg.decrease_factor = 1;
    cfg.capacity = 4;
    held_clock clock;
    adaptive_limiter<held_clock> limiter(cfg, clock);
    const auto start = clock.now();
    REQUIRE(limiter.try_acquire(4));  // empty: the next permit comes at 1 s
    bool granted = true;
    std::thread caller([&] {
        granted = limiter.try_acquire_for(1, 2s);  // its permit at 1 s is inside the deadline
        clock.done();
    });
    held_clock::time_point wakes{};
    CHECK(clock.wait_for_sleeper(wakes));
    CHECK(wakes == start + 1s);
    clock.advance(500ms);
    limiter.on_throttle(2s);  // paused until 2.5 s, past the deadline at 2 s
    clock.release();
    caller.join();
    CHECK_FALSE(granted);
    CHECK(clock.now() == start + 1s);  // no sleep past its own wait
    clock.advance(1500ms);              // the pause ends at 2.5 s: 2.5 permits refilled since 0, none kept
    CHECK(limiter.try_acquire(2));
    CHECK_FALSE(limiter.try_acquire(1));
}

TEST_CASE("try_acquire_for fails at once when the bucket cannot refill by the deadline even after the pause",
          "[adaptive][pause]") {
    adaptive_config cfg;  // 1 permit a second, capacity 1; a throttle only pauses
    cfg.initial_rate = cfg.min_rate = cfg.max_rate = rate::per_second(1);
    cfg.decrease_factor = 1;
    manual_clock clock;
    adaptive_limiter<manual_clock> limiter(cfg, clock);
    REQUIRE(limiter.try_acquire());  // next permit at 1 s
    limiter.on_throttle(500ms);      // paused until 500 ms
    const auto start = clock.now();
    CHECK_FALSE(limiter.try_acquire_for(1, 800ms));  // 500 ms < 800 ms < 1 s
    CHECK(clock.now() == start);
    CHECK(limiter.try_acquire_for(1, 1s));
    CHECK(clock.now() - start == 1s);
}

TEST_CASE("a min_rate the bucket cannot represent is refused at construction, naming it", "[adaptive][config]") {
    adaptive_config cfg = config_10_per_second();
    cfg.min_rate = rate::per_second(1e-40);  // one permit every 3·10^32 years
    const std::string message = construction_error(cfg);
    CHECK(message.find("min_rate") != std::string::npos);
    CHECK(message.find("1e-40") != std::string::npos);
}

TEST_CASE("a min_rate too slow for the capacity is refused, naming both", "[adaptive][config]") {
    adaptive_config cfg = config_10_per_second();
    cfg.min_rate = rate::per_second(1e-20);  // 10^29 ns a permit: fits 2^121 ns (2.7·10^36) alone
    CHECK(construction_error(cfg) == "no exception");
    cfg.capacity = 100'000'000;  // but not 10^8 of them (10^37 ns)
    const std::string message = construction_error(cfg);
    CHECK(message.find("min_rate") != std::string::npos);
    CHECK(message.find("capacity 100000000") != std::string::npos);
}

TEST_CASE("a max_rate faster than the bucket's tick is accepted, as token_bucket accepts it", "[adaptive][config]") {
    adaptive_config cfg = config_10_per_second();
    cfg.max_rate = rate::per_second(1e12);  // a permit every 0.001 ns: the bucket runs it at one per 1/16 ns tick
    cfg.capacity = 1'000'000'000;
    CHECK(construction_error(cfg) == "no exception");
}

TEST_CASE("a capacity above the bucket's 2^59 is refused, naming it", "[adaptive][config]") {
    adaptive_config cfg = config_10_per_second();
    cfg.capacity = int64_max;
    const std::string message = construction_error(cfg);
    CHECK(message.find("ratelimit::adaptive_limiter") != std::string::npos);
    CHECK(message.find("capacity") != std::string::npos);
}

TEST_CASE("throttles down to the slowest min_rate never throw and the rate rests on it", "[adaptive][config]") {
    adaptive_config cfg = config_10_per_second();
    cfg.min_rate = rate::per_second(1e-27);  // 10^36 ns a permit: just inside the bucket's 2^121 ns
    manual_clock clock;
    adaptive_limiter<manual_clock> limiter(cfg, clock);
    for (int i = 0; i < 200; ++i) limiter.on_throttle();  // 10 · 2^-200 is far below the floor
    CHECK(limiter.current_rate() == rate::per_second(1e-27));
    clock.advance(31s);  // past the recovery: successes raise it again, by 1.5 each
    limiter.on_success();
    CHECK(limiter.current_rate().per_second_value() == Approx(1.5e-27));
}

TEST_CASE("a hostile retry_after pauses for max_pause, 10 minutes by default", "[adaptive][pause]") {
    manual_clock clock;
    adaptive_limiter<manual_clock> limiter(config_10_per_second(), clock);
    limiter.on_throttle(std::chrono::seconds{9'000'000'000});  // 285 years
    CHECK(limiter.paused_until() == clock.now() + 10min);
    clock.advance(10min - 1ns);
    CHECK_FALSE(limiter.try_acquire());
    clock.advance(1ns);
    CHECK(limiter.try_acquire());
}

TEST_CASE("max_pause caps the pause where the config sets it", "[adaptive][pause]") {
    adaptive_config cfg = config_10_per_second();
    cfg.max_pause = 30s;
    manual_clock clock;
    adaptive_limiter<manual_clock> limiter(cfg, clock);
    limiter.on_throttle(1h);
    CHECK(limiter.paused_until() == clock.now() + 30s);
    CHECK(limiter.state() == adaptive_state::throttled);
    clock.advance(30s);
    CHECK(limiter.state() == adaptive_state::recovering);  // the recovery runs from the capped end
    clock.advance(30s);
    CHECK(limiter.state() == adaptive_state::normal);
    cfg.max_pause = 0ns;
    CHECK(construction_error(cfg).find("max_pause must be > 0, got 0") != std::string::npos);
}

TEST_CASE("n = INT64_MAX and arguments near it: no overflow, no over-admission", "[adaptive][overflow]") {
    manual_clock clock;
    adaptive_limiter<manual_clock> limiter(config_10_per_second(), clock);
    CHECK_FALSE(limiter.try_acquire(int64_max));
    CHECK_FALSE(limiter.try_acquire_for(int64_max, manual_clock::duration::max()));
    CHECK_THROWS_AS(limiter.acquire(int64_max), ratelimit::capacity_exceeded);
    REQUIRE(limiter.try_acquire());
    limiter.refund(int64_max);  // back to full (1), not beyond
    CHECK(limiter.try_acquire());
    CHECK_FALSE(limiter.try_acquire());
    limiter.on_throttle(std::chrono::nanoseconds::max());
    CHECK(limiter.paused_until() == clock.now() + 10min);
}

TEST_CASE("deadlines at time_point::max() and duration::max() return on manual_clock", "[adaptive][max]") {
    manual_clock clock;
    adaptive_limiter<manual_clock> limiter(config_10_per_second(), clock);  // 10/s, capacity 1
    const auto start = clock.now();
    CHECK(limiter.try_acquire_until(1, manual_clock::time_point::max()));
    CHECK(limiter.try_acquire_until(1, manual_clock::time_point::max()));  // sleeps 100 ms for the next
    CHECK(clock.now() - start == 100ms);
    limiter.on_throttle(2s);  // 5/s, paused until 2.1 s
    CHECK(limiter.try_acquire_for(1, manual_clock::duration::max()));
    CHECK(clock.now() - start == 2100ms);
    CHECK(limiter.acquire() == 200ms);
}

TEST_CASE("deadlines at max() return on tsc_clock", "[adaptive][max]") {
    using tsc = ratelimit::tsc_clock;
    adaptive_config cfg = config_10_per_second();
    cfg.capacity = 2;
    adaptive_limiter<tsc> limiter(cfg);
    CHECK(limiter.try_acquire_until(2, tsc::time_point::max()));  // a full bucket: at once
    CHECK_FALSE(limiter.try_acquire_until(3, tsc::time_point::max()));  // above capacity: at once
    CHECK_FALSE(limiter.try_acquire_for(3, tsc::duration::max()));
    limiter.on_throttle(1h);
    CHECK_FALSE(limiter.try_acquire_for(1, 1min));  // the pause outlasts the deadline: at once
    CHECK(limiter.try_acquire_for(0, tsc::duration::max()));
}

TEST_CASE("a clock that jumps 2^57 ns ahead and back: every call returns and the bound holds",
          "[adaptive][clock_jump]") {
    manual_clock clock;
    adaptive_config cfg = config_10_per_second();  // 10/s
    cfg.capacity = 4;
    adaptive_limiter<manual_clock> limiter(cfg, clock);
    const auto start = clock.now();
    const auto ahead = start + std::chrono::nanoseconds{std::int64_t{1} << 57};  // 4.6 years
    clock.set(ahead);
    CHECK(limiter.try_acquire(4));
    CHECK_FALSE(limiter.try_acquire());
    clock.set(start);  // corrected back: counts as the later time, so nothing refills
    CHECK_FALSE(limiter.try_acquire());
    CHECK_FALSE(limiter.try_acquire_for(1, 1s));
    limiter.on_throttle(1s);
    CHECK(limiter.state() == adaptive_state::throttled);
    clock.set(ahead);
    CHECK_FALSE(limiter.try_acquire());  // nothing refilled while the clock was behind
    CHECK(limiter.acquire() == 200ms);   // 5/s after the throttle: one permit 200 ms on
}

TEST_CASE("an adaptive limiter is idle and at rest only with no pause in force and nothing owed", "[adaptive]") {
    // keyed drops an entry only when it is at rest and evicts only idle ones:
    // a paused limiter must be neither, or its key would forget the 429.
    manual_clock clock;
    adaptive_config cfg;
    cfg.initial_rate = rate::per_second(4);
    cfg.min_rate = rate::per_second(1);
    cfg.max_rate = rate::per_second(16);
    cfg.capacity = 4;
    adaptive_limiter<manual_clock> limiter(cfg, clock);
    CHECK(limiter.is_at_rest());
    CHECK(limiter.is_idle());
    REQUIRE(limiter.try_acquire(1));
    CHECK_FALSE(limiter.is_at_rest());  // a permit short of full
    CHECK(limiter.is_idle());
    limiter.on_throttle(2s);
    CHECK_FALSE(limiter.is_idle());
    CHECK_FALSE(limiter.is_at_rest());
    clock.advance(2s);
    CHECK(limiter.is_idle());
    CHECK_FALSE(limiter.is_at_rest());  // recovering, at half the initial rate
}
