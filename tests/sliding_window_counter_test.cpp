// ratelimit::sliding_window_counter on manual_clock: the contract with exact values.
//
// Unless a test says otherwise: limit 10 per 1 s window. At offset e into a
// window the estimate is current + ceil(previous · (1 s − e) / 1 s), and n
// permits fit when estimate + n <= 10.

#include <chrono>
#include <cstdint>
#include <limits>
#include <random>
#include <ratelimit/detail/window.hpp>
#include <ratelimit/sliding_window_counter.hpp>
#include <ratelimit/tsc_clock.hpp>
#include <stdexcept>
#include <string>

#include "support/catch.hpp"

using namespace std::chrono_literals;
using ratelimit::manual_clock;
using counter = ratelimit::sliding_window_counter<manual_clock>;
namespace sliding = ratelimit::detail::window::sliding;

namespace {

std::string message_of(std::int64_t limit, manual_clock::duration window) {
    try {
        counter limiter(limit, window, manual_clock{});
    } catch (const std::invalid_argument& e) {
        return e.what();
    }
    return "no exception";
}

std::int64_t take_singles(counter& limiter) {
    std::int64_t granted = 0;
    while (granted < 1000 && limiter.try_acquire(1)) ++granted;
    return granted;
}

manual_clock::time_point at(manual_clock::duration d) { return manual_clock::time_point{d}; }

}  // namespace

TEST_CASE("sliding_window_counter meets the limiter and refundable_limiter concepts", "[sliding_window_counter]") {
    STATIC_REQUIRE(ratelimit::limiter<counter>);
    STATIC_REQUIRE(ratelimit::refundable_limiter<counter>);
    STATIC_REQUIRE(ratelimit::limiter<ratelimit::sliding_window_counter<>>);
    STATIC_REQUIRE(std::is_same_v<ratelimit::sliding_window_counter<>::clock_type, std::chrono::steady_clock>);
}

TEST_CASE("a fresh counter grants the whole limit at once, then refuses", "[sliding_window_counter]") {
    manual_clock clock;
    counter limiter(10, 1s, clock);
    CHECK(take_singles(limiter) == 10);
    CHECK(limiter.available() == 0);
}

TEST_CASE("after a full window the previous count's weight frees one permit per tenth of a window",
          "[sliding_window_counter]") {
    manual_clock clock;
    counter limiter(10, 1s, clock);
    CHECK(limiter.try_acquire(10));
    clock.set(at(1s));  // window 1: 0 + ceil(10 · 1000/1000) = 10
    CHECK(limiter.available() == 0);
    clock.set(at(1100ms - 1ns));  // ceil(10 · 900.000001/1000) = 10
    CHECK_FALSE(limiter.try_acquire());
    clock.set(at(1100ms));  // 10 · 900/1000 = 9: one fits
    CHECK(limiter.try_acquire());
    CHECK_FALSE(limiter.try_acquire());
    clock.set(at(1250ms));  // 1 + ceil(10 · 750/1000) = 1 + 8 = 9
    CHECK(limiter.available() == 1);
    clock.set(at(1500ms));  // 1 + 5 = 6
    CHECK(limiter.available() == 4);
    clock.set(at(2s));  // window 2: 0 + ceil(1 · 1000/1000) = 1
    CHECK(limiter.available() == 9);
    clock.set(at(3s));  // window 3: both counts gone
    CHECK(limiter.available() == 10);
}

TEST_CASE("the weighted previous count is rounded up, never down", "[sliding_window_counter]") {
    manual_clock clock;
    counter limiter(10, 1s, clock);
    CHECK(limiter.try_acquire(3));
    clock.set(at(1s + 1ns));  // ceil(3 · 999999999/1e9) = ceil(2.999999997) = 3
    CHECK(limiter.available() == 7);
    CHECK_FALSE(limiter.try_acquire(8));
    // 8 fit once 3 · (1 s − e) <= 2 · 1 s: e = 1 s − floor(2e9/3) ns = 333333334 ns.
    CHECK(limiter.time_until_available(8) == 333333334ns - 1ns);
    clock.set(at(1s + 333333333ns));
    CHECK_FALSE(limiter.try_acquire(8));
    clock.set(at(1s + 333333334ns));
    CHECK(limiter.try_acquire(8));
}

TEST_CASE("acquire sleeps exactly until the formula lets n in and returns the time waited",
          "[sliding_window_counter]") {
    manual_clock clock;
    counter limiter(10, 1s, clock);
    CHECK(limiter.acquire(10) == 0ns);
    // Window 1: the k-th permit needs (k − 1) + 10 · (1 s − e)/1 s + 1 <= 10, e = k · 100 ms.
    CHECK(limiter.acquire() == 1100ms);
    CHECK(clock.now() == at(1100ms));
    for (int k = 2; k <= 9; ++k) {
        INFO("permit " << k);
        CHECK(limiter.acquire() == 100ms);
        CHECK(clock.now() == at(1s + k * 100ms));
    }
    // The tenth: 9 + 10 · (1 s − e)/1 s + 1 <= 10 only at e = 1 s, that is at
    // window 2, where 0 + 9 · 1 + 1 <= 10 already.
    CHECK(limiter.acquire() == 100ms);
    CHECK(clock.now() == at(2s));
}

TEST_CASE("n that cannot fit beside the current count waits for the next window", "[sliding_window_counter]") {
    manual_clock clock;
    counter limiter(10, 1s, clock);
    CHECK(limiter.try_acquire(5));
    clock.set(at(999ms));
    // 5 + 6 > 10 whatever the previous weight: window 1, where 5 · (1 s − e)/1 s + 6 <= 10
    // from e = 1 s − floor(4 · 1 s / 5) = 200 ms.
    CHECK(limiter.time_until_available(6) == 201ms);
    CHECK(limiter.acquire(6) == 201ms);
    CHECK(clock.now() == at(1200ms));
}

TEST_CASE("n equal to the limit behind a non-empty window waits two windows", "[sliding_window_counter]") {
    manual_clock clock;
    counter limiter(10, 1s, clock);
    CHECK(limiter.try_acquire(5));
    clock.set(at(500ms));
    // Window 1 would need 5 · (1 s − e) <= 0: only window 2 will do.
    CHECK(limiter.time_until_available(10) == 1500ms);
    CHECK(limiter.acquire(10) == 1500ms);
    CHECK(clock.now() == at(2s));
    CHECK(limiter.available() == 0);
}

TEST_CASE("n permits are granted only all together", "[sliding_window_counter]") {
    manual_clock clock;
    counter limiter(10, 1s, clock);
    CHECK(limiter.try_acquire(6));
    CHECK_FALSE(limiter.try_acquire(5));  // 6 + 5 > 10
    CHECK(limiter.available() == 4);      // nothing taken by the failure
    CHECK(limiter.try_acquire(4));
}

TEST_CASE("n == 0 succeeds at once even with no room", "[sliding_window_counter]") {
    manual_clock clock;
    counter limiter(2, 1s, clock);
    CHECK(limiter.try_acquire(2));
    CHECK(limiter.try_acquire(0));
    CHECK(limiter.try_acquire_until(0, at(0ns)));
    CHECK(limiter.acquire(0) == 0ns);
    CHECK(limiter.time_until_available(0) == 0ns);
    CHECK(clock.now() == at(0ns));
}

TEST_CASE("a negative n throws invalid_argument naming n and its value", "[sliding_window_counter]") {
    manual_clock clock;
    counter limiter(2, 1s, clock);
    CHECK_THROWS_AS(limiter.try_acquire(-1), std::invalid_argument);
    CHECK_THROWS_AS(limiter.try_acquire_for(-1, 1s), std::invalid_argument);
    CHECK_THROWS_AS(limiter.try_acquire_until(-1, clock.now()), std::invalid_argument);
    CHECK_THROWS_AS(limiter.acquire(-1), std::invalid_argument);
    CHECK_THROWS_AS(limiter.refund(-1), std::invalid_argument);
    CHECK_THROWS_AS(limiter.time_until_available(-1), std::invalid_argument);
    try {
        (void)limiter.acquire(-3);
        FAIL("no exception");
    } catch (const std::invalid_argument& e) {
        CHECK(std::string(e.what()).find("n must be >= 0, got -3") != std::string::npos);
    }
    CHECK(limiter.available() == 2);
}

TEST_CASE("n above the limit never blocks and never succeeds", "[sliding_window_counter]") {
    manual_clock clock;
    counter limiter(10, 1s, clock);
    CHECK_FALSE(limiter.try_acquire(11));
    CHECK_FALSE(limiter.try_acquire_for(11, 1h));
    CHECK_FALSE(limiter.try_acquire_until(11, clock.now() + 1h));
    CHECK(limiter.time_until_available(11) == manual_clock::duration::max());
    try {
        (void)limiter.acquire(11);
        FAIL("no exception");
    } catch (const ratelimit::capacity_exceeded& e) {
        CHECK(e.requested() == 11);
        CHECK(e.capacity() == 10);
    }
    CHECK(clock.now() == at(0ns));
    CHECK(limiter.available() == 10);
}

TEST_CASE("a bad limit or window throws, naming the argument and value", "[sliding_window_counter]") {
    CHECK(message_of(0, 1s).find("limit must be > 0, got 0") != std::string::npos);
    CHECK(message_of(-2, 1s).find("limit must be > 0, got -2") != std::string::npos);
    CHECK(message_of(3, 0s).find("window must be > 0, got 0ns") != std::string::npos);
    CHECK(message_of(3, -1ms).find("window must be > 0, got -1000000ns") != std::string::npos);
    CHECK(message_of(counter::max_limit + 1, 1s).find("limit must be <= 67108863, got 67108864") != std::string::npos);
    CHECK(message_of(counter::max_limit, 1s) == "no exception");
}

TEST_CASE("try_acquire_for fails at once when the estimate has no room by the deadline", "[sliding_window_counter]") {
    manual_clock clock;
    counter limiter(10, 1s, clock);
    CHECK(limiter.try_acquire(10));
    clock.set(at(1s));
    // The next permit fits at 1.1 s, 100 ms from now.
    CHECK_FALSE(limiter.try_acquire_for(1, 100ms - 1ns));
    CHECK(clock.now() == at(1s));  // did not sleep in vain
    CHECK(limiter.try_acquire_for(1, 100ms));
    CHECK(clock.now() == at(1100ms));  // slept exactly until it fit
}

TEST_CASE("try_acquire_until fails at once before the earliest fit and waits for one at it",
          "[sliding_window_counter]") {
    manual_clock clock;
    counter limiter(10, 1s, clock);
    CHECK(limiter.try_acquire(10));
    CHECK_FALSE(limiter.try_acquire_until(2, at(1200ms - 1ns)));  // 2 fit at 1 s + 200 ms
    CHECK(clock.now() == at(0ns));
    CHECK(limiter.try_acquire_until(2, at(1200ms)));
    CHECK(clock.now() == at(1200ms));
    CHECK(limiter.available() == 0);  // 2 + ceil(10 · 800/1000) = 10
}

TEST_CASE("a deadline already past behaves as try_acquire", "[sliding_window_counter]") {
    manual_clock clock{at(1h)};
    counter limiter(1, 1s, clock);
    CHECK(limiter.try_acquire_until(1, at(0ns)));
    CHECK_FALSE(limiter.try_acquire_until(1, at(0ns)));
    CHECK_FALSE(limiter.try_acquire_for(1, -5s));
    CHECK(clock.now() == at(1h));
}

TEST_CASE("while a caller waits for a later window, later callers queue behind it", "[sliding_window_counter]") {
    manual_clock clock;
    counter limiter(10, 1s, clock);
    CHECK(limiter.try_acquire(5));
    CHECK(limiter.acquire(6) == 1200ms);  // window 1 at e = 200 ms (see above)
    clock.set(at(500ms));                 // look back at the moment of the wait
    CHECK(limiter.available() == 0);
    CHECK_FALSE(limiter.try_acquire(1));  // window 0's room is not granted past the waiter
    // From 1 s: 6 + ceil(5 · (1 s − e)/1 s) + 1 <= 10 at e = 1 s − floor(3 · 1 s/5) = 400 ms.
    CHECK(limiter.time_until_available(1) == 900ms);
}

TEST_CASE("refund lowers the current window's count, never below zero", "[sliding_window_counter]") {
    manual_clock clock;
    counter limiter(10, 1s, clock);
    CHECK(limiter.try_acquire(8));
    limiter.refund(3);
    CHECK(limiter.available() == 5);  // 10 − (8 − 3)
    limiter.refund(100);
    CHECK(limiter.available() == 10);
    CHECK(limiter.try_acquire(10));
}

TEST_CASE("refund gives nothing back to a window that has ended", "[sliding_window_counter]") {
    manual_clock clock;
    counter limiter(10, 1s, clock);
    CHECK(limiter.try_acquire(10));
    clock.set(at(1500ms));  // window 0's 10 now weigh ceil(10 · 500/1000) = 5
    limiter.refund(10);
    CHECK(limiter.available() == 5);
    CHECK(limiter.try_acquire(2));  // 2 in window 1
    limiter.refund(1);
    CHECK(limiter.available() == 4);  // 10 − (1 + 5)
}

TEST_CASE("limit and window report the construction arguments", "[sliding_window_counter]") {
    counter limiter(42, 1500ms, manual_clock{});
    CHECK(limiter.limit() == 42);
    CHECK(limiter.window() == 1500ms);
}

TEST_CASE("a clock standing still keeps one estimate", "[sliding_window_counter]") {
    manual_clock clock{at(10s)};
    counter limiter(3, 1s, clock);
    CHECK(take_singles(limiter) == 3);
    for (int i = 0; i < 100; ++i) CHECK_FALSE(limiter.try_acquire());
    // 3 · (1 s − e)/1 s + 1 <= 3 from e = 1 s − floor(2 · 1 s/3) = 333333334 ns into window 1.
    CHECK(limiter.time_until_available(1) == 1s + 333333334ns);
}

TEST_CASE("a clock that goes back grants nothing until it reaches the last window again", "[sliding_window_counter]") {
    manual_clock clock;
    counter limiter(10, 1s, clock);
    clock.set(at(2500ms));
    CHECK(limiter.try_acquire(4));
    clock.set(at(1500ms));  // window 1: before the window last granted in
    CHECK_FALSE(limiter.try_acquire());
    CHECK(limiter.available() == 0);
    CHECK(limiter.time_until_available(1) == 500ms);  // window 2 at 2 s: 4 + 0 + 1 <= 10
    clock.set(at(2s));
    CHECK(limiter.try_acquire(6));
    CHECK_FALSE(limiter.try_acquire());
}

TEST_CASE("a time before construction counts as construction time", "[sliding_window_counter]") {
    manual_clock clock{at(10s)};
    counter limiter(2, 1s, clock);
    clock.set(at(4s));
    CHECK(limiter.try_acquire(2));
    // Window 1 starts at 11 s: 2 · (1 s − e)/1 s + 1 <= 2 from e = 500 ms.
    CHECK(limiter.time_until_available(1) == 7500ms);
}

TEST_CASE("the largest limit counts exactly", "[sliding_window_counter]") {
    constexpr std::int64_t limit = counter::max_limit;  // 2^26 − 1
    manual_clock clock;
    counter limiter(limit, 1h, clock);
    CHECK(limiter.try_acquire(limit));
    clock.set(at(1h + 30min));
    // ceil((2^26 − 1) / 2) = 2^25 weigh in; 2^25 − 1 are free.
    CHECK(limiter.available() == (std::int64_t{1} << 25) - 1);
    CHECK_FALSE(limiter.try_acquire(std::int64_t{1} << 25));
    CHECK(limiter.try_acquire((std::int64_t{1} << 25) - 1));
}

namespace {

/// Drives a counter and the pure math side by side on one seeded random
/// schedule, with jumps far enough to move the word's base many times.
void check_against_the_math(std::int64_t limit, std::chrono::nanoseconds window, std::uint64_t seed, int steps,
                            std::int64_t longest_jump_windows) {
    manual_clock clock{at(3s)};
    counter limiter(limit, window, clock);
    const ratelimit::detail::window::params p{limit, window.count()};
    const manual_clock::time_point origin = clock.now();
    sliding::state model{};
    std::mt19937_64 random(seed);
    for (int step = 0; step < steps; ++step) {
        const int kind = static_cast<int>(random() % 100);
        if (kind < 70) {
            clock.advance(std::chrono::nanoseconds{static_cast<std::int64_t>(random() % (window.count() / 4 + 1))});
        } else if (kind < 75) {
            const auto windows = static_cast<std::int64_t>(random() % static_cast<std::uint64_t>(longest_jump_windows));
            clock.advance(window * windows);
        }
        const std::int64_t now = (clock.now() - origin).count();
        const std::int64_t n = 1 + static_cast<std::int64_t>(random() % static_cast<std::uint64_t>(limit));
        const int op = static_cast<int>(random() % 10);
        INFO("step " << step << ", now " << now << ", n " << n << ", op " << op);
        if (op < 5) {
            const sliding::decision d = sliding::decide(p, model, now, n, now);
            const bool granted = d.outcome == ratelimit::detail::window::verdict::granted;
            REQUIRE(limiter.try_acquire(n) == granted);
            if (granted) model = d.next;
        } else if (op < 7) {
            const sliding::decision d = sliding::decide(p, model, now, n, std::numeric_limits<std::int64_t>::max());
            REQUIRE(limiter.acquire(n) == std::chrono::nanoseconds{d.ready_at - now});
            REQUIRE(clock.now() - origin == std::chrono::nanoseconds{d.ready_at});
            model = d.next;
        } else if (op < 8) {
            limiter.refund(n);
            model = sliding::refund(p, model, now, n);
        } else if (op < 9) {
            REQUIRE(limiter.available() == sliding::available(p, model, now));
        } else {
            const sliding::decision d = sliding::decide(p, model, now, n, std::numeric_limits<std::int64_t>::max());
            REQUIRE(limiter.time_until_available(n) == std::chrono::nanoseconds{d.ready_at - now});
        }
    }
}

}  // namespace

TEST_CASE("the packed word decides exactly as the pure math, across many moves of its base",
          "[sliding_window_counter]") {
    // limit 2^26 − 1: 26 bits per count leave 10 index bits, so the base moves
    // every 256+ windows; jumps of up to 5000 windows move it often.
    check_against_the_math(counter::max_limit, 1000ns, 1, 20000, 5000);
    // limit 2^25: 26 bits as well, with 1 ns windows.
    check_against_the_math(std::int64_t{1} << 25, 4ns, 2, 20000, 3000);
    // Small limits: 3 bits per count, 56 index bits, the base never moves.
    check_against_the_math(5, 1ms, 3, 20000, std::int64_t{1} << 20);
    check_against_the_math(1, 1ns, 4, 20000, 1000);
}

// Overflow, max() deadlines and clocks that jump (issue 12).

TEST_CASE("a limit near INT64_MAX throws, naming the limit", "[sliding_window_counter][overflow]") {
    CHECK(message_of(INT64_MAX, 1s).find("limit must be <= 67108863, got 9223372036854775807") != std::string::npos);
}

TEST_CASE("n = INT64_MAX never blocks and takes nothing", "[sliding_window_counter][overflow]") {
    manual_clock clock;
    counter limiter(3, 1s, clock);
    CHECK_FALSE(limiter.try_acquire(INT64_MAX));
    CHECK_FALSE(limiter.try_acquire_for(INT64_MAX, manual_clock::duration::max()));
    CHECK_FALSE(limiter.try_acquire_until(INT64_MAX, manual_clock::time_point::max()));
    CHECK_THROWS_AS(limiter.acquire(INT64_MAX), ratelimit::capacity_exceeded);
    CHECK(limiter.time_until_available(INT64_MAX) == manual_clock::duration::max());
    limiter.refund(INT64_MAX);
    CHECK(limiter.available() == 3);
    CHECK(clock.now() == manual_clock::time_point{});
}

TEST_CASE("the largest limit with the longest window counts exactly", "[sliding_window_counter][overflow]") {
    manual_clock clock;
    counter limiter(counter::max_limit, manual_clock::duration::max(), clock);
    CHECK(limiter.try_acquire(counter::max_limit));
    CHECK_FALSE(limiter.try_acquire(1));
    CHECK(limiter.available() == 0);
}

TEST_CASE("a grant that would be usable after the clock's last time is refused at once, even for a max() deadline",
          "[sliding_window_counter][overflow]") {
    // Window nanoseconds::max(): window 1 starts at INT64_MAX ns, and one more permit
    // behind 5 needs an offset into it, past time_point::max().
    manual_clock clock;
    counter limiter(5, manual_clock::duration::max(), clock);
    CHECK(limiter.try_acquire(5));
    CHECK_FALSE(limiter.try_acquire_for(1, manual_clock::duration::max()));
    CHECK_FALSE(limiter.try_acquire_until(1, manual_clock::time_point::max()));
    CHECK_THROWS_AS(limiter.acquire(1), std::overflow_error);
    CHECK(limiter.time_until_available(1) == manual_clock::duration::max());
    CHECK(clock.now() == manual_clock::time_point{});  // nothing slept
}

TEST_CASE("a clock stuck at its last time grants one window's limit, then nothing",
          "[sliding_window_counter][overflow]") {
    manual_clock clock;
    counter limiter(3, 1s, clock);
    clock.set(manual_clock::time_point::max());
    CHECK(take_singles(limiter) == 3);
    CHECK_FALSE(limiter.try_acquire_for(1, 1h));
    CHECK_FALSE(limiter.try_acquire_until(1, manual_clock::time_point::max()));
    CHECK(limiter.available() == 0);
}

TEST_CASE("a clock stuck at its last time with one-nanosecond windows grants once, then nothing",
          "[sliding_window_counter][overflow]") {
    manual_clock clock;
    counter limiter(1, 1ns, clock);
    clock.set(manual_clock::time_point::max());  // window INT64_MAX: the last; no window after it
    CHECK(take_singles(limiter) == 1);
    CHECK_FALSE(limiter.try_acquire_until(1, manual_clock::time_point::max()));
}

TEST_CASE("max() deadlines return on tsc_clock", "[sliding_window_counter][tsc_clock]") {
    // A 1 ms window: the one real wait below is at most 2 ms.
    ratelimit::sliding_window_counter<ratelimit::tsc_clock> limiter(1, std::chrono::milliseconds{1});
    CHECK(limiter.try_acquire_for(1, ratelimit::tsc_clock::duration::max()));
    CHECK(limiter.try_acquire_until(1, ratelimit::tsc_clock::time_point::max()));
    CHECK_FALSE(limiter.try_acquire_for(2, ratelimit::tsc_clock::duration::max()));
    CHECK_FALSE(limiter.try_acquire_until(2, ratelimit::tsc_clock::time_point::max()));
}

TEST_CASE("a clock that jumps 2^57 ns ahead and back: every call returns and no window exceeds the limit",
          "[sliding_window_counter]") {
    // One-nanosecond windows: 2^57 windows ahead is past the word's index range,
    // so the jump also moves the base (rebase).
    constexpr manual_clock::duration jump{std::int64_t{1} << 57};
    for (const manual_clock::duration w : {manual_clock::duration{1s}, manual_clock::duration{1ns}}) {
        INFO("window " << w.count() << " ns");
        manual_clock clock;
        counter limiter(5, w, clock);
        CHECK(limiter.try_acquire(2));
        clock.advance(jump);
        CHECK(take_singles(limiter) == 5);  // two windows after the last grant: a fresh estimate
        const auto ahead = clock.now();
        clock.set(manual_clock::time_point{500ms});  // corrected back
        CHECK_FALSE(limiter.try_acquire(1));
        CHECK_FALSE(limiter.try_acquire_for(1, 1h));
        CHECK(limiter.available() == 0);
        CHECK(limiter.time_until_available(1) > jump - 1s);
        CHECK(take_singles(limiter) == 0);
        clock.set(ahead + 2 * w);  // caught up, two windows on: the counts have gone
        CHECK(take_singles(limiter) == 5);
        clock.set(manual_clock::time_point::max());
        CHECK(take_singles(limiter) == 5);  // the last window: its limit, then nothing
        clock.set(manual_clock::time_point{});
        CHECK(take_singles(limiter) == 0);
    }
}
