// adaptive_limiter: AIMD on the rate, pauses on throttle, recovery.

#include <chrono>
#include <optional>
#include <stdexcept>
#include <thread>
#include <vector>

#include <ratelimit/adaptive_limiter.hpp>

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
