// ratelimit::fixed_window on manual_clock: the contract with exact values.

#include <chrono>
#include <cstdint>
#include <limits>
#include <ratelimit/fixed_window.hpp>
#include <ratelimit/tsc_clock.hpp>
#include <stdexcept>
#include <string>

#include "support/catch.hpp"

using namespace std::chrono_literals;
using ratelimit::manual_clock;
using window_limiter = ratelimit::fixed_window<manual_clock>;

namespace {

std::string message_of(std::int64_t limit, manual_clock::duration window) {
    try {
        window_limiter limiter(limit, window, manual_clock{});
    } catch (const std::invalid_argument& e) {
        return e.what();
    }
    return "no exception";
}

std::int64_t take_singles(window_limiter& limiter) {
    std::int64_t granted = 0;
    while (granted < 1000 && limiter.try_acquire(1)) ++granted;
    return granted;
}

}  // namespace

TEST_CASE("fixed_window meets the limiter and refundable_limiter concepts", "[fixed_window]") {
    STATIC_REQUIRE(ratelimit::limiter<window_limiter>);
    STATIC_REQUIRE(ratelimit::refundable_limiter<window_limiter>);
    STATIC_REQUIRE(ratelimit::limiter<ratelimit::fixed_window<>>);
    STATIC_REQUIRE(std::is_same_v<ratelimit::fixed_window<>::clock_type, std::chrono::steady_clock>);
}

TEST_CASE("a window grants exactly the limit, then refuses until the next window", "[fixed_window]") {
    manual_clock clock;
    window_limiter limiter(3, 1s, clock);
    CHECK(take_singles(limiter) == 3);
    clock.advance(999ms);  // still window 0: [0 s, 1 s)
    CHECK_FALSE(limiter.try_acquire());
    clock.advance(1ms);  // window 1 starts at 0 + 1 s
    CHECK(take_singles(limiter) == 3);
}

TEST_CASE("windows are aligned at construction, not at the first request", "[fixed_window]") {
    manual_clock clock{manual_clock::time_point{250ms}};
    window_limiter limiter(3, 1s, clock);  // window k covers [250 ms + k s, 1250 ms + k s)
    clock.advance(700ms);                  // 950 ms: first use, late in window 0
    CHECK(limiter.try_acquire(3));
    clock.advance(299ms);  // 1249 ms: still window 0
    CHECK_FALSE(limiter.try_acquire());
    clock.advance(1ms);  // 1250 ms: window 1, only 300 ms after the first use
    CHECK(limiter.try_acquire(3));
}

TEST_CASE("windows without requests leave the count at zero", "[fixed_window]") {
    manual_clock clock;
    window_limiter limiter(3, 1s, clock);
    CHECK(limiter.try_acquire(3));
    clock.advance(5s + 500ms);  // window 5
    CHECK(limiter.available() == 3);
    CHECK(limiter.try_acquire(3));
    CHECK_FALSE(limiter.try_acquire());
}

TEST_CASE("n permits are granted only all together", "[fixed_window]") {
    manual_clock clock;
    window_limiter limiter(5, 1s, clock);
    CHECK(limiter.try_acquire(3));
    CHECK_FALSE(limiter.try_acquire(3));  // 3 + 3 > 5
    CHECK(limiter.available() == 2);      // the failed call took nothing
    CHECK(limiter.try_acquire(2));        // 3 + 2 = 5
    CHECK(limiter.available() == 0);
}

TEST_CASE("n == 0 succeeds at once even in a full window", "[fixed_window]") {
    manual_clock clock;
    window_limiter limiter(2, 1s, clock);
    CHECK(limiter.try_acquire(2));
    CHECK(limiter.try_acquire(0));
    CHECK(limiter.try_acquire_for(0, 0ns));
    CHECK(limiter.acquire(0) == 0ns);
    CHECK(limiter.time_until_available(0) == 0ns);
    CHECK(clock.now() == manual_clock::time_point{});
}

TEST_CASE("a negative n throws invalid_argument naming n and its value", "[fixed_window]") {
    manual_clock clock;
    window_limiter limiter(2, 1s, clock);
    CHECK_THROWS_AS(limiter.try_acquire(-1), std::invalid_argument);
    CHECK_THROWS_AS(limiter.try_acquire_for(-1, 1s), std::invalid_argument);
    CHECK_THROWS_AS(limiter.try_acquire_until(-1, clock.now()), std::invalid_argument);
    CHECK_THROWS_AS(limiter.acquire(-1), std::invalid_argument);
    CHECK_THROWS_AS(limiter.refund(-1), std::invalid_argument);
    CHECK_THROWS_AS(limiter.time_until_available(-1), std::invalid_argument);
    try {
        limiter.refund(-4);
        FAIL("no exception");
    } catch (const std::invalid_argument& e) {
        CHECK(std::string(e.what()).find("n must be >= 0, got -4") != std::string::npos);
    }
}

TEST_CASE("n above the limit never blocks and never succeeds", "[fixed_window]") {
    manual_clock clock;
    window_limiter limiter(3, 1s, clock);
    CHECK_FALSE(limiter.try_acquire(4));
    CHECK_FALSE(limiter.try_acquire_for(4, 1h));
    CHECK_FALSE(limiter.try_acquire_until(4, clock.now() + 1h));
    CHECK(limiter.time_until_available(4) == manual_clock::duration::max());
    try {
        (void)limiter.acquire(4);
        FAIL("no exception");
    } catch (const ratelimit::capacity_exceeded& e) {
        CHECK(e.requested() == 4);
        CHECK(e.capacity() == 3);
    }
    CHECK(clock.now() == manual_clock::time_point{});
    CHECK(limiter.available() == 3);
}

TEST_CASE("a limit or window that is not positive throws, naming the argument and value", "[fixed_window]") {
    CHECK(message_of(0, 1s).find("limit must be > 0, got 0") != std::string::npos);
    CHECK(message_of(-5, 1s).find("limit must be > 0, got -5") != std::string::npos);
    CHECK(message_of(3, 0ns).find("window must be > 0, got 0ns") != std::string::npos);
    CHECK(message_of(3, -2s).find("window must be > 0, got -2000000000ns") != std::string::npos);
}

TEST_CASE("a limit above the window in nanoseconds throws, naming both", "[fixed_window]") {
    CHECK(message_of(1001, 1000ns).find("limit must be <= the window in nanoseconds (1000), got 1001") !=
          std::string::npos);
    CHECK(message_of(1000, 1000ns) == "no exception");
    CHECK(message_of(1'000'000'000, 1s) == "no exception");
}

TEST_CASE("try_acquire_for fails at once when the next window starts after the deadline", "[fixed_window]") {
    manual_clock clock;
    window_limiter limiter(2, 1s, clock);
    clock.advance(400ms);
    CHECK(limiter.try_acquire(2));
    // The next window starts at 1 s, 600 ms from now.
    CHECK_FALSE(limiter.try_acquire_for(1, 599ms));
    CHECK(clock.now() == manual_clock::time_point{400ms});  // did not sleep in vain
    CHECK(limiter.try_acquire_for(1, 600ms));
    CHECK(clock.now() == manual_clock::time_point{1s});  // slept exactly to the window's start
    CHECK(limiter.available() == 1);                     // the permit counts in window 1
}

TEST_CASE("try_acquire_until fails at once for a deadline before the next window and waits for one at it",
          "[fixed_window]") {
    manual_clock clock;
    window_limiter limiter(1, 1s, clock);
    CHECK(limiter.try_acquire());
    CHECK_FALSE(limiter.try_acquire_until(1, manual_clock::time_point{1s - 1ns}));
    CHECK(clock.now() == manual_clock::time_point{});
    CHECK(limiter.try_acquire_until(1, manual_clock::time_point{1s}));
    CHECK(clock.now() == manual_clock::time_point{1s});
}

TEST_CASE("a deadline already past behaves as try_acquire", "[fixed_window]") {
    manual_clock clock{manual_clock::time_point{1h}};
    window_limiter limiter(1, 1s, clock);
    CHECK(limiter.try_acquire_until(1, manual_clock::time_point{}));
    CHECK_FALSE(limiter.try_acquire_until(1, manual_clock::time_point{}));
    CHECK_FALSE(limiter.try_acquire_for(1, -5s));
    CHECK(clock.now() == manual_clock::time_point{1h});
}

TEST_CASE("acquire in a full window sleeps until the next window and returns the time waited", "[fixed_window]") {
    manual_clock clock;
    window_limiter limiter(2, 1s, clock);
    CHECK(limiter.acquire(2) == 0ns);  // room now: no wait
    clock.advance(300ms);
    CHECK(limiter.acquire(1) == 700ms);  // window 1 starts at 1 s
    CHECK(clock.now() == manual_clock::time_point{1s});
    CHECK(limiter.acquire(1) == 0ns);  // 1 + 1 <= 2 in window 1
    CHECK(limiter.acquire(2) == 1s);   // window 2 starts at 2 s
    CHECK(clock.now() == manual_clock::time_point{2s});
}

TEST_CASE("n that does not fit in the rest of the window waits for the next one whole", "[fixed_window]") {
    manual_clock clock;
    window_limiter limiter(5, 1s, clock);
    CHECK(limiter.try_acquire(3));
    CHECK(limiter.time_until_available(2) == 0ns);  // 3 + 2 <= 5
    CHECK(limiter.time_until_available(3) == 1s);   // 3 + 3 > 5: window 1
    clock.advance(250ms);
    CHECK(limiter.time_until_available(3) == 750ms);
    CHECK(limiter.acquire(3) == 750ms);
    CHECK(limiter.available() == 2);  // 5 - 3 in window 1
}

TEST_CASE("while a caller waits for a later window, later callers queue behind it", "[fixed_window]") {
    // First come, first served: the waiter holds its permits in window 1, so
    // the 2 permits left in window 0 lapse rather than let others jump ahead.
    manual_clock clock;
    window_limiter limiter(5, 1s, clock);
    CHECK(limiter.try_acquire(3));
    CHECK(limiter.acquire(4) == 1s);  // 3 + 4 > 5: taken in window 1, slept until 1 s
    // Look at the moment of the wait: set the clock back to while it slept.
    clock.set(manual_clock::time_point{500ms});
    CHECK(limiter.available() == 0);
    CHECK_FALSE(limiter.try_acquire(1));               // window 0's 2 unused permits are not granted
    CHECK(limiter.time_until_available(1) == 500ms);   // window 1 (1 s) has 5 - 4 = 1 left
    CHECK(limiter.time_until_available(2) == 1500ms);  // 4 + 2 > 5: window 2 at 2 s
}

TEST_CASE("refund gives back permits to the current window, never below zero", "[fixed_window]") {
    manual_clock clock;
    window_limiter limiter(5, 1s, clock);
    CHECK(limiter.try_acquire(4));
    limiter.refund(3);
    CHECK(limiter.available() == 4);  // 5 - (4 - 3)
    limiter.refund(10);               // capped: the count is 0, not -9
    CHECK(limiter.available() == 5);
    CHECK(limiter.try_acquire(5));
    CHECK_FALSE(limiter.try_acquire(1));
}

TEST_CASE("refund gives nothing back once the window has ended", "[fixed_window]") {
    manual_clock clock;
    window_limiter limiter(5, 1s, clock);
    CHECK(limiter.try_acquire(5));
    clock.advance(1s);
    CHECK(limiter.try_acquire(2));  // window 1: 2 taken
    clock.advance(1s);              // window 2
    limiter.refund(2);              // window 1's permits: gone with it
    CHECK(limiter.available() == 5);
    CHECK(limiter.try_acquire(5));
    limiter.refund(0);
    CHECK(limiter.available() == 0);
}

TEST_CASE("available counts the permits left in the current window", "[fixed_window]") {
    manual_clock clock;
    window_limiter limiter(10, 100ms, clock);
    CHECK(limiter.available() == 10);
    CHECK(limiter.try_acquire(7));
    CHECK(limiter.available() == 3);
    clock.advance(99ms);
    CHECK(limiter.available() == 3);
    clock.advance(1ms);
    CHECK(limiter.available() == 10);
}

TEST_CASE("time_until_available is zero with room and the time to the next window without", "[fixed_window]") {
    manual_clock clock;
    window_limiter limiter(4, 1min, clock);
    CHECK(limiter.time_until_available(4) == 0ns);
    CHECK(limiter.try_acquire(4));
    clock.advance(20s);
    CHECK(limiter.time_until_available(1) == 40s);
    CHECK(limiter.time_until_available(4) == 40s);
}

TEST_CASE("limit and window report the construction arguments", "[fixed_window]") {
    window_limiter limiter(42, 1500ms, manual_clock{});
    CHECK(limiter.limit() == 42);
    CHECK(limiter.window() == 1500ms);
}

TEST_CASE("a clock standing still stays in one window", "[fixed_window]") {
    manual_clock clock{manual_clock::time_point{10s}};
    window_limiter limiter(3, 1s, clock);
    CHECK(take_singles(limiter) == 3);
    for (int i = 0; i < 100; ++i) CHECK_FALSE(limiter.try_acquire());
    CHECK(limiter.time_until_available(1) == 1s);
}

TEST_CASE("a clock that goes back grants nothing until it reaches the last window again", "[fixed_window]") {
    manual_clock clock;
    window_limiter limiter(3, 1s, clock);
    clock.advance(2s + 500ms);  // window 2
    CHECK(limiter.try_acquire(2));
    clock.set(manual_clock::time_point{1s + 500ms});  // back to window 1: not a fresh window
    CHECK_FALSE(limiter.try_acquire(1));
    CHECK(limiter.time_until_available(1) == 500ms);  // window 2 (at 2 s) has 3 - 2 = 1 left
    clock.set(manual_clock::time_point{2s});
    CHECK(limiter.try_acquire(1));
    CHECK_FALSE(limiter.try_acquire(1));
}

TEST_CASE("a time before construction counts as construction time", "[fixed_window]") {
    manual_clock clock{manual_clock::time_point{10s}};
    window_limiter limiter(2, 1s, clock);
    clock.set(manual_clock::time_point{3s});  // 7 s before the origin: window 0
    CHECK(limiter.try_acquire(2));
    CHECK_FALSE(limiter.try_acquire(1));
    CHECK(limiter.time_until_available(1) == 8s);  // window 1 starts at 10 s + 1 s
}

TEST_CASE("a one-nanosecond window with limit 1 grants once per nanosecond", "[fixed_window]") {
    manual_clock clock;
    window_limiter limiter(1, 1ns, clock);
    for (int i = 0; i < 1000; ++i) {
        REQUIRE(limiter.try_acquire());
        REQUIRE_FALSE(limiter.try_acquire());
        clock.advance(1ns);
    }
    CHECK(limiter.acquire() == 0ns);
    CHECK(limiter.acquire() == 1ns);
}

TEST_CASE("a limit of 2^40 per window counts exactly", "[fixed_window]") {
    // limit = 2^40 in a window of 2^40 ns: 41 count bits, 23 index bits,
    // enough for (2^63 - 1) / 2^40 < 2^23 windows.
    constexpr std::int64_t limit = std::int64_t{1} << 40;
    manual_clock clock;
    window_limiter limiter(limit, std::chrono::nanoseconds{limit}, clock);
    CHECK(limiter.try_acquire(limit - 1));
    CHECK(limiter.available() == 1);
    CHECK(limiter.try_acquire(1));
    CHECK_FALSE(limiter.try_acquire(1));
    clock.advance(std::chrono::nanoseconds{limit} * 1000);  // window 1000
    CHECK(limiter.try_acquire(limit));
    CHECK(limiter.time_until_available(1) == std::chrono::nanoseconds{limit});
}

TEST_CASE("windows deep into the clock's range keep their index", "[fixed_window]") {
    // 2^62 ns (146 years) after construction, 1 ms windows: index 4.6e12, far
    // beyond 32 bits, still exact (limit 3 leaves 62 index bits).
    manual_clock clock;
    window_limiter limiter(3, 1ms, clock);
    CHECK(limiter.try_acquire(3));
    clock.advance(std::chrono::nanoseconds{std::int64_t{1} << 62});
    CHECK(limiter.try_acquire(3));
    CHECK_FALSE(limiter.try_acquire(1));
    const auto to_next = limiter.time_until_available(1);
    CHECK(to_next == 1ms - std::chrono::nanoseconds{(std::int64_t{1} << 62) % 1'000'000});
}

// Overflow, max() deadlines and clocks that jump (issue 12).

TEST_CASE("a limit of INT64_MAX never over-admits", "[fixed_window][overflow]") {
    manual_clock clock;
    window_limiter limiter(INT64_MAX, manual_clock::duration::max(), clock);
    CHECK(limiter.try_acquire(INT64_MAX));
    // INT64_MAX + 1 does not fit: it would go to window 1, which starts at INT64_MAX ns.
    CHECK_FALSE(limiter.try_acquire(1));
    CHECK(limiter.available() == 0);
    CHECK(limiter.time_until_available(1) == manual_clock::duration::max());
    CHECK(clock.now() == manual_clock::time_point{});
}

TEST_CASE("n = INT64_MAX never blocks and takes nothing", "[fixed_window][overflow]") {
    manual_clock clock;
    window_limiter limiter(3, 1s, clock);
    CHECK_FALSE(limiter.try_acquire(INT64_MAX));
    CHECK_FALSE(limiter.try_acquire_for(INT64_MAX, manual_clock::duration::max()));
    CHECK_FALSE(limiter.try_acquire_until(INT64_MAX, manual_clock::time_point::max()));
    CHECK_THROWS_AS(limiter.acquire(INT64_MAX), ratelimit::capacity_exceeded);
    CHECK(limiter.time_until_available(INT64_MAX) == manual_clock::duration::max());
    limiter.refund(INT64_MAX);  // nothing taken: nothing to give back, and no overflow
    CHECK(limiter.available() == 3);
    CHECK(clock.now() == manual_clock::time_point{});
}

TEST_CASE("a window that would start after the clock's last time is refused at once, even for a max() deadline",
          "[fixed_window][overflow]") {
    // Origin 1 s: window 1 would start at 1 s + INT64_MAX ns, past time_point::max().
    manual_clock clock{manual_clock::time_point{1s}};
    window_limiter limiter(5, manual_clock::duration::max(), clock);
    CHECK(limiter.try_acquire(5));
    CHECK_FALSE(limiter.try_acquire_for(1, manual_clock::duration::max()));
    CHECK_FALSE(limiter.try_acquire_until(1, manual_clock::time_point::max()));
    CHECK_THROWS_AS(limiter.acquire(1), std::overflow_error);
    CHECK(limiter.time_until_available(1) == manual_clock::duration::max());
    CHECK(clock.now() == manual_clock::time_point{1s});  // nothing slept
}

TEST_CASE("a clock stuck at its last time grants one window's limit, then nothing", "[fixed_window][overflow]") {
    manual_clock clock;
    window_limiter limiter(3, 1s, clock);
    clock.set(manual_clock::time_point::max());  // the window of INT64_MAX ns; the next never starts
    CHECK(take_singles(limiter) == 3);
    CHECK_FALSE(limiter.try_acquire_for(1, 1h));
    CHECK_FALSE(limiter.try_acquire_until(1, manual_clock::time_point::max()));
    CHECK(limiter.available() == 0);
}

TEST_CASE("max() deadlines wait exactly for the next window on manual_clock", "[fixed_window]") {
    manual_clock clock;
    window_limiter limiter(3, 1s, clock);
    REQUIRE(limiter.try_acquire(3));
    CHECK(limiter.try_acquire_until(1, manual_clock::time_point::max()));  // window 1, at 1 s
    CHECK(clock.now() == manual_clock::time_point{1s});
    CHECK(limiter.try_acquire_for(2, manual_clock::duration::max()));  // 1 + 2 <= 3: at once
    CHECK(limiter.try_acquire_for(1, manual_clock::duration::max()));  // window 2, at 2 s
    CHECK(clock.now() == manual_clock::time_point{2s});
    CHECK_FALSE(limiter.try_acquire_for(4, manual_clock::duration::max()));  // 4 > 3: at once
    CHECK(clock.now() == manual_clock::time_point{2s});
}

TEST_CASE("max() deadlines return on tsc_clock", "[fixed_window][tsc_clock]") {
    // A 1 ms window: the one real wait below is at most 1 ms.
    ratelimit::fixed_window<ratelimit::tsc_clock> limiter(1, std::chrono::milliseconds{1});
    CHECK(limiter.try_acquire_for(1, ratelimit::tsc_clock::duration::max()));
    CHECK(limiter.try_acquire_until(1, ratelimit::tsc_clock::time_point::max()));  // sleeps into the next window
    CHECK_FALSE(limiter.try_acquire_for(2, ratelimit::tsc_clock::duration::max()));
    CHECK_FALSE(limiter.try_acquire_until(2, ratelimit::tsc_clock::time_point::max()));
}

TEST_CASE("a clock that jumps 2^57 ns ahead and back: every call returns and no window exceeds the limit",
          "[fixed_window]") {
    constexpr manual_clock::duration jump{std::int64_t{1} << 57};  // about 4.6 years
    manual_clock clock;
    window_limiter limiter(5, 1s, clock);
    CHECK(limiter.try_acquire(2));
    clock.advance(jump);  // window floor(2^57 / 1e9) = 144115188
    CHECK(take_singles(limiter) == 5);
    clock.set(manual_clock::time_point{500ms});  // corrected back
    CHECK_FALSE(limiter.try_acquire(1));         // the window last counted is not reopened
    CHECK_FALSE(limiter.try_acquire_for(1, 1h));
    CHECK(limiter.available() == 0);
    CHECK(limiter.time_until_available(1) == 144115189s - 500ms);  // the start of the next window
    limiter.refund(5);  // not the window now falls in: nothing
    CHECK(take_singles(limiter) == 0);
    clock.set(manual_clock::time_point{144115189s});  // the clock catches up
    CHECK(take_singles(limiter) == 5);
    clock.set(manual_clock::time_point::max());  // and jumps to the end of time
    CHECK(take_singles(limiter) == 5);
    clock.set(manual_clock::time_point{});
    CHECK(take_singles(limiter) == 0);
}
