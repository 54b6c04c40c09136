// ratelimit::sliding_window_log on manual_clock: exact, instant, no sleeps.

#include <chrono>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include <ratelimit/detail/sliding_window_log.hpp>
#include <ratelimit/sliding_window_log.hpp>
#include <ratelimit/tsc_clock.hpp>

#include "support/catch.hpp"

using namespace std::chrono_literals;
using ratelimit::manual_clock;
using log_limiter = ratelimit::sliding_window_log<manual_clock>;

static_assert(ratelimit::limiter<log_limiter>);
static_assert(ratelimit::reservable_limiter<log_limiter>);
static_assert(ratelimit::limiter<ratelimit::sliding_window_log<>>);

namespace {

std::string message_of(auto&& construct) {
    try {
        construct();
    } catch (const std::invalid_argument& e) {
        return e.what();
    }
    return "no exception";
}

std::int64_t take_singles(log_limiter& log) {
    std::int64_t granted = 0;
    while (granted < 1000 && log.try_acquire(1)) ++granted;
    return granted;
}

}  // namespace

TEST_CASE("a fresh log grants exactly limit permits at one instant, then refuses", "[sliding_window_log]") {
    manual_clock clock;
    log_limiter log(3, 10s, clock);
    CHECK(log.try_acquire());
    CHECK(log.try_acquire());
    CHECK(log.try_acquire());
    CHECK_FALSE(log.try_acquire());
    CHECK(log.available() == 0);
}

TEST_CASE("a permit leaves the window exactly `window` after its grant (half-open)", "[sliding_window_log]") {
    manual_clock clock;
    log_limiter log(1, 10s, clock);
    REQUIRE(log.try_acquire());  // granted at 0, counts in [0, 10s)
    clock.set(manual_clock::time_point{10s - 1ns});
    CHECK_FALSE(log.try_acquire());
    CHECK(log.time_until_available() == 1ns);
    clock.set(manual_clock::time_point{10s});
    CHECK(log.try_acquire());
}

TEST_CASE("grants made at different times leave the window one by one", "[sliding_window_log]") {
    manual_clock clock;
    log_limiter log(3, 10s, clock);
    REQUIRE(log.try_acquire());  // at 0
    clock.advance(2s);
    REQUIRE(log.try_acquire());  // at 2s
    clock.advance(3s);
    REQUIRE(log.try_acquire());  // at 5s
    CHECK(log.available() == 0);
    clock.set(manual_clock::time_point{10s});  // 0 + 10s: the first has left
    CHECK(log.available() == 1);
    clock.set(manual_clock::time_point{12s});  // 2s + 10s: the second too
    CHECK(log.available() == 2);
    clock.set(manual_clock::time_point{15s});  // 5s + 10s: all three
    CHECK(log.available() == 3);
}

TEST_CASE("the window slides: no double burst across a boundary, unlike a fixed window", "[sliding_window_log]") {
    manual_clock clock{manual_clock::time_point{9s}};
    log_limiter log(2, 10s, clock);
    REQUIRE(log.try_acquire(2));  // both at 9s
    clock.set(manual_clock::time_point{10s});  // a fixed window would start afresh here
    CHECK_FALSE(log.try_acquire());
    clock.set(manual_clock::time_point{19s - 1ns});
    CHECK_FALSE(log.try_acquire());
    clock.set(manual_clock::time_point{19s});  // 9s + 10s
    CHECK(log.try_acquire(2));
}

TEST_CASE("n permits at once take n places of the log, all stamped with one time", "[sliding_window_log]") {
    manual_clock clock;
    log_limiter log(4, 10s, clock);
    REQUIRE(log.try_acquire(3));  // three entries at 0
    CHECK(log.available() == 1);
    clock.advance(1s);
    REQUIRE(log.try_acquire(1));  // one entry at 1s
    clock.set(manual_clock::time_point{10s});  // the three from 0 leave together
    CHECK(log.available() == 3);
    CHECK_FALSE(log.try_acquire(4));
    CHECK(log.time_until_available(4) == 1s);  // the entry at 1s leaves at 11s
}

TEST_CASE("acquire sleeps until exactly the n-th oldest grant leaves the window", "[sliding_window_log]") {
    manual_clock clock;
    log_limiter log(3, 10s, clock);
    REQUIRE(log.try_acquire());  // at 0
    clock.advance(1s);
    REQUIRE(log.try_acquire());  // at 1s
    clock.advance(1s);
    REQUIRE(log.try_acquire());  // at 2s
    clock.advance(1s);           // now 3s
    CHECK(log.time_until_available(2) == 8s);  // the 2nd oldest (1s) leaves at 11s
    CHECK(log.acquire(2) == 8s);
    CHECK(clock.now() == manual_clock::time_point{11s});
    CHECK_FALSE(log.try_acquire());  // 2s, 11s, 11s are in the window
    CHECK(log.time_until_available() == 1s);
}

TEST_CASE("a reservation is logged at its ready time and counts from there", "[sliding_window_log]") {
    manual_clock clock;
    log_limiter log(1, 10s, clock);
    REQUIRE(log.try_acquire());  // at 0
    clock.advance(1s);
    auto r = log.reserve();
    CHECK(r.ready_at() == manual_clock::time_point{10s});
    CHECK(r.delay() == 9s);
    // The reserved permit counts in [10s, 20s): nothing fits before 20s.
    clock.set(manual_clock::time_point{10s});
    CHECK_FALSE(log.try_acquire());
    CHECK(log.time_until_available() == 10s);
    clock.set(manual_clock::time_point{20s});
    CHECK(log.try_acquire());
}

TEST_CASE("blocking callers are served in the order they came", "[sliding_window_log]") {
    manual_clock clock;
    log_limiter log(2, 10s, clock);
    REQUIRE(log.try_acquire());  // at 0
    clock.advance(5s);
    REQUIRE(log.try_acquire());  // at 5s
    clock.advance(1s);           // now 6s, the log holds 0 and 5s
    auto first = log.reserve(2);  // needs both gone: 5s + 10s
    auto second = log.reserve(1);  // behind it: the oldest is then 15s
    CHECK(first.ready_at() == manual_clock::time_point{15s});
    CHECK(second.ready_at() == manual_clock::time_point{25s});
    CHECK(log.available() == 0);  // nothing goes ahead of a waiting reservation
}

TEST_CASE("no grant goes before a waiting reservation, even when the log has room", "[sliding_window_log]") {
    manual_clock clock{manual_clock::time_point{100s}};
    log_limiter log(3, 10s, clock);
    REQUIRE(log.try_acquire());  // at 100s
    clock.set(manual_clock::time_point{50s});  // the clock jumps back
    CHECK(log.available() == 0);
    CHECK_FALSE(log.try_acquire());
    CHECK(log.time_until_available() == 50s);  // not before the latest grant at 100s
    CHECK(log.acquire() == 50s);
}

TEST_CASE("try_acquire_for fails at once when the grant lies beyond the deadline, and changes nothing",
          "[sliding_window_log]") {
    manual_clock clock;
    log_limiter log(1, 10s, clock);
    REQUIRE(log.try_acquire());  // at 0: the next fits at 10s
    CHECK_FALSE(log.try_acquire_for(1, 10s - 1ns));
    CHECK_FALSE(log.try_acquire_until(1, manual_clock::time_point{10s - 1ns}));
    CHECK(clock.now() == manual_clock::time_point{});  // never slept
    CHECK(log.time_until_available() == 10s);        // nothing logged
}

TEST_CASE("try_acquire_for within the deadline sleeps exactly until the grant", "[sliding_window_log]") {
    manual_clock clock;
    log_limiter log(1, 10s, clock);
    REQUIRE(log.try_acquire());
    clock.advance(4s);
    CHECK(log.try_acquire_for(1, 6s));  // fits at 10s = 4s + 6s
    CHECK(clock.now() == manual_clock::time_point{10s});
    CHECK(log.try_acquire_until(1, manual_clock::time_point{20s}));
    CHECK(clock.now() == manual_clock::time_point{20s});
}

TEST_CASE("a deadline already past behaves as try_acquire", "[sliding_window_log]") {
    manual_clock clock{manual_clock::time_point{1h}};
    log_limiter log(1, 10s, clock);
    CHECK(log.try_acquire_until(1, clock.now() - 1s));
    CHECK_FALSE(log.try_acquire_until(1, clock.now() - 1s));
    CHECK_FALSE(log.try_acquire_for(1, -1s));
    CHECK(clock.now() == manual_clock::time_point{1h});
}

TEST_CASE("n == 0 always succeeds at once, even with a full log", "[sliding_window_log]") {
    manual_clock clock;
    log_limiter log(2, 10s, clock);
    REQUIRE(log.try_acquire(2));
    CHECK(log.try_acquire(0));
    CHECK(log.try_acquire_for(0, 0s));
    CHECK(log.acquire(0) == 0s);
    CHECK(log.reserve(0).ready_at() == clock.now());
    CHECK(log.time_until_available(0) == 0s);
    CHECK(clock.now() == manual_clock::time_point{});
}

TEST_CASE("a negative n throws invalid_argument naming the value", "[sliding_window_log]") {
    manual_clock clock;
    log_limiter log(2, 10s, clock);
    CHECK_THROWS_AS(log.try_acquire(-1), std::invalid_argument);
    CHECK_THROWS_AS(log.try_acquire_for(-1, 1s), std::invalid_argument);
    CHECK_THROWS_AS(log.try_acquire_until(-1, clock.now()), std::invalid_argument);
    CHECK_THROWS_AS(log.acquire(-1), std::invalid_argument);
    CHECK_THROWS_AS(log.reserve(-1), std::invalid_argument);
    CHECK_THROWS_AS(log.time_until_available(-1), std::invalid_argument);
    CHECK(message_of([&] { (void)log.try_acquire(-3); }).find("-3") != std::string::npos);
    CHECK(log.available() == 2);
}

TEST_CASE("n above limit never blocks and never succeeds", "[sliding_window_log]") {
    manual_clock clock;
    log_limiter log(3, 10s, clock);
    CHECK_FALSE(log.try_acquire(4));
    CHECK_FALSE(log.try_acquire_for(4, 1h));
    CHECK_THROWS_AS(log.acquire(4), ratelimit::capacity_exceeded);
    try {
        (void)log.reserve(4);
        FAIL("no exception");
    } catch (const ratelimit::capacity_exceeded& e) {
        CHECK(e.requested() == 4);
        CHECK(e.capacity() == 3);
    }
    CHECK(log.time_until_available(4) == manual_clock::duration::max());
    CHECK(clock.now() == manual_clock::time_point{});
    CHECK(log.try_acquire(3));  // nothing was taken
}

TEST_CASE("a bad limit or window throws invalid_argument naming it", "[sliding_window_log]") {
    CHECK(message_of([] { log_limiter(0, 1s); }).find("limit must be > 0, got 0") != std::string::npos);
    CHECK(message_of([] { log_limiter(-5, 1s); }).find("limit must be > 0, got -5") != std::string::npos);
    CHECK(message_of([] { log_limiter(1, 0s); }).find("window must be > 0, got 0") != std::string::npos);
    CHECK(message_of([] { log_limiter(1, -2s); }).find("window must be > 0, got -2000000000ns") !=
          std::string::npos);
    // 2^26 permits is 512 MiB of log; one more is refused with the reason.
    const std::string too_big = message_of([] { log_limiter(log_limiter::max_limit + 1, 1s); });
    CHECK(too_big.find("limit must be <= 67108864") != std::string::npos);
    CHECK(too_big.find("67108865") != std::string::npos);
}

TEST_CASE("limit() and window() report the construction values", "[sliding_window_log]") {
    log_limiter log(7, 90s, manual_clock{});
    CHECK(log.limit() == 7);
    CHECK(log.window() == 90s);
    CHECK(log.available() == 7);
}

TEST_CASE("a clock standing still grants limit permits and then nothing", "[sliding_window_log]") {
    manual_clock clock;
    log_limiter log(5, 1min, clock);
    std::int64_t granted = 0;
    for (int i = 0; i < 100; ++i) granted += log.try_acquire() ? 1 : 0;
    CHECK(granted == 5);
}

TEST_CASE("cancel before ready_at gives the permits back when nothing was granted after them",
          "[sliding_window_log]") {
    manual_clock clock;
    log_limiter log(2, 10s, clock);
    REQUIRE(log.try_acquire(2));  // both at 0
    clock.advance(1s);
    auto r = log.reserve(1);  // at 10s
    REQUIRE(r.ready_at() == manual_clock::time_point{10s});
    r.cancel();
    // The entry it displaced (at 0) comes back: one permit fits at 10s again,
    // and a second one too, since both entries at 0 leave at 10s.
    CHECK(log.time_until_available(2) == 9s);
    clock.set(manual_clock::time_point{10s});
    CHECK(log.try_acquire(2));
}

TEST_CASE("cancel of an immediate grant frees its places at once", "[sliding_window_log]") {
    manual_clock clock;
    log_limiter log(3, 10s, clock);
    auto r = log.reserve(3);
    REQUIRE(r.ready_at() == clock.now());
    CHECK(log.available() == 0);
    r.cancel();
    CHECK(log.available() == 3);
    r.cancel();  // acts once
    CHECK(log.available() == 3);
}

TEST_CASE("cancel gives nothing back once a later grant sits after it", "[sliding_window_log]") {
    manual_clock clock;
    log_limiter log(2, 10s, clock);
    auto first = log.reserve(1);   // at 0
    auto second = log.reserve(1);  // at 0
    first.cancel();                // `second` was logged after it
    CHECK(log.available() == 0);
    second.cancel();  // the newest: gives back
    CHECK(log.available() == 1);
    first.cancel();  // already acted
    CHECK(log.available() == 1);
}

TEST_CASE("cancel gives nothing back after ready_at", "[sliding_window_log]") {
    manual_clock clock;
    log_limiter log(1, 10s, clock);
    auto r = log.reserve(1);  // at 0
    clock.advance(1ns);
    r.cancel();
    CHECK(log.available() == 0);
    CHECK(log.time_until_available() == 10s - 1ns);
}

TEST_CASE("cancel at exactly ready_at still gives back", "[sliding_window_log]") {
    manual_clock clock;
    log_limiter log(1, 10s, clock);
    REQUIRE(log.try_acquire());
    auto r = log.reserve(1);  // at 10s
    clock.set(r.ready_at());
    r.cancel();
    CHECK(log.available() == 1);  // the entry at 0 is back, and has left the window
}

TEST_CASE("a cancelled reservation's place goes to the next caller", "[sliding_window_log]") {
    manual_clock clock;
    log_limiter log(1, 10s, clock);
    REQUIRE(log.try_acquire());  // at 0
    auto waiting = log.reserve();  // at 10s
    waiting.cancel();
    auto next = log.reserve();
    CHECK(next.ready_at() == manual_clock::time_point{10s});  // not 20s
}

TEST_CASE("the log math: decide, expiry and the restored entry", "[sliding_window_log][detail]") {
    namespace wl = ratelimit::detail::window_log;
    constexpr std::int64_t max = INT64_MAX;
    // limit 3, window 10: the 2nd oldest entry at 4 leaves at 14; the newest at 7 is older.
    STATIC_REQUIRE(wl::decide(3, 10, 4, 7, 12, 2, 12).outcome == wl::verdict::too_late);
    STATIC_REQUIRE(wl::decide(3, 10, 4, 7, 12, 2, 12).start == 14);
    STATIC_REQUIRE(wl::decide(3, 10, 4, 7, 12, 2, 14).outcome == wl::verdict::granted);
    STATIC_REQUIRE(wl::decide(3, 10, 4, 7, 12, 4, max).outcome == wl::verdict::never);
    // An empty slot never counts, even at the earliest time.
    STATIC_REQUIRE(wl::decide(3, 10, wl::unused_slot, wl::unused_slot, INT64_MIN + 1, 1, 0).start == INT64_MIN + 1);
    // A future newest grant holds everyone back.
    STATIC_REQUIRE(wl::decide(3, 10, wl::unused_slot, 50, 20, 1, max).start == 50);
    // Saturation: an entry near the end of time cannot expire in range.
    STATIC_REQUIRE(wl::decide(1, 10, max - 5, max - 5, 0, 1, max).outcome == wl::verdict::out_of_range);
    STATIC_REQUIRE(wl::expiry(wl::unused_slot, 10) == wl::unused_slot);
    STATIC_REQUIRE(wl::expiry(max - 5, 10) == max);
    // Restored entries: no later than start - window and the oldest entry kept.
    STATIC_REQUIRE(wl::restored_entry(30, 10, 25) == 20);
    STATIC_REQUIRE(wl::restored_entry(30, 10, 15) == 15);
    STATIC_REQUIRE(wl::restored_entry(INT64_MIN + 3, 10, max) == wl::unused_slot);
    // expired(): a binary search over the sorted log.
    constexpr auto count = [](std::int64_t now) {
        constexpr std::int64_t entries[] = {wl::unused_slot, 3, 3, 8};
        return wl::expired(4, 10, now, [&](std::int64_t i) { return entries[i]; });
    };
    STATIC_REQUIRE(count(12) == 1);
    STATIC_REQUIRE(count(13) == 3);
    STATIC_REQUIRE(count(18) == 4);
}

// Overflow, max() deadlines and clocks that jump (issue 12).

TEST_CASE("a limit near INT64_MAX throws, naming the limit", "[sliding_window_log][overflow]") {
    const std::string message = message_of([] { log_limiter log(INT64_MAX, 1s, manual_clock{}); });
    CHECK(message.find("limit must be <= 67108864") != std::string::npos);
    CHECK(message.find("got 9223372036854775807") != std::string::npos);
}

TEST_CASE("n = INT64_MAX never blocks and takes nothing", "[sliding_window_log][overflow]") {
    manual_clock clock;
    log_limiter log(3, 1s, clock);
    CHECK_FALSE(log.try_acquire(INT64_MAX));
    CHECK_FALSE(log.try_acquire_for(INT64_MAX, manual_clock::duration::max()));
    CHECK_FALSE(log.try_acquire_until(INT64_MAX, manual_clock::time_point::max()));
    CHECK_THROWS_AS(log.acquire(INT64_MAX), ratelimit::capacity_exceeded);
    CHECK_THROWS_AS(log.reserve(INT64_MAX), ratelimit::capacity_exceeded);
    CHECK(log.time_until_available(INT64_MAX) == manual_clock::duration::max());
    CHECK(log.available() == 3);
    CHECK(clock.now() == manual_clock::time_point{});
}

TEST_CASE("a clock stuck at its last time grants the limit, then nothing", "[sliding_window_log][overflow]") {
    // A permit at INT64_MAX ns would leave the window at INT64_MAX + 1 s: never.
    manual_clock clock;
    log_limiter log(3, 1s, clock);
    clock.set(manual_clock::time_point::max());
    CHECK(take_singles(log) == 3);
    CHECK(log.available() == 0);
    CHECK_FALSE(log.try_acquire_until(1, manual_clock::time_point::max()));
    CHECK(log.time_until_available(1) == manual_clock::duration::max());
    CHECK_THROWS_AS(log.reserve(1), std::overflow_error);
}

TEST_CASE("a window of nanoseconds::max() grants the limit once in the clock's range", "[sliding_window_log][overflow]") {
    // Permits at 1 s leave at 1 s + INT64_MAX ns: past time_point::max().
    manual_clock clock{manual_clock::time_point{1s}};
    log_limiter log(5, manual_clock::duration::max(), clock);
    CHECK(log.try_acquire(5));
    CHECK_FALSE(log.try_acquire_for(1, manual_clock::duration::max()));
    clock.set(manual_clock::time_point::max());
    CHECK(take_singles(log) == 0);
    CHECK(log.available() == 0);
}

TEST_CASE("max() deadlines wait exactly for the oldest permit to leave on manual_clock", "[sliding_window_log]") {
    manual_clock clock;
    log_limiter log(2, 1s, clock);
    REQUIRE(log.try_acquire(2));  // at 0: they leave at 1 s
    CHECK(log.try_acquire_until(1, manual_clock::time_point::max()));
    CHECK(clock.now() == manual_clock::time_point{1s});
    CHECK(log.try_acquire_for(1, manual_clock::duration::max()));  // the other left at 1 s too
    CHECK(clock.now() == manual_clock::time_point{1s});
    CHECK_FALSE(log.try_acquire_for(3, manual_clock::duration::max()));  // 3 > 2: at once
    CHECK(clock.now() == manual_clock::time_point{1s});
}

TEST_CASE("max() deadlines return on tsc_clock", "[sliding_window_log][tsc_clock]") {
    // A 1 ms window: the one real wait below is at most 1 ms.
    ratelimit::sliding_window_log<ratelimit::tsc_clock> log(1, std::chrono::milliseconds{1});
    CHECK(log.try_acquire_for(1, ratelimit::tsc_clock::duration::max()));
    CHECK(log.try_acquire_until(1, ratelimit::tsc_clock::time_point::max()));
    CHECK_FALSE(log.try_acquire_for(2, ratelimit::tsc_clock::duration::max()));
    CHECK_FALSE(log.try_acquire_until(2, ratelimit::tsc_clock::time_point::max()));
}

TEST_CASE("a clock that jumps 2^57 ns ahead and back: every call returns and no window exceeds the limit",
          "[sliding_window_log]") {
    constexpr manual_clock::duration jump{std::int64_t{1} << 57};
    manual_clock clock;
    log_limiter log(5, 1s, clock);
    CHECK(log.try_acquire(2));
    clock.advance(jump);
    CHECK(take_singles(log) == 5);
    clock.set(manual_clock::time_point{500ms});  // corrected back: nothing before the newest grant
    CHECK_FALSE(log.try_acquire(1));
    CHECK_FALSE(log.try_acquire_for(1, 1h));
    CHECK(log.available() == 0);
    CHECK(log.time_until_available(1) == jump + 1s - 500ms);  // when the oldest of the 5 leaves
    clock.set(manual_clock::time_point{jump + 1s});
    CHECK(take_singles(log) == 5);
    clock.set(manual_clock::time_point::max());
    CHECK(take_singles(log) == 5);
    clock.set(manual_clock::time_point{});
    CHECK(take_singles(log) == 0);
}
