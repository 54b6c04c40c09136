// header_limiter on manual_clock: follows remaining/reset, merges conservatively, pauses on retry-after.

#include <chrono>
#include <limits>
#include <optional>
#include <stdexcept>
#include <string>

#include <ratelimit/header_limiter.hpp>
#include <ratelimit/tsc_clock.hpp>

#include "support/catch.hpp"

using namespace std::chrono_literals;
using ratelimit::header_limiter;
using ratelimit::manual_clock;
using ratelimit::quota_snapshot;
using ratelimit::quota_state;

namespace {

quota_snapshot requests(std::optional<std::int64_t> limit, std::optional<std::int64_t> remaining,
                        std::optional<std::chrono::nanoseconds> reset_after) {
    quota_snapshot s;
    s.requests = quota_state{limit, remaining, reset_after};
    return s;
}

}  // namespace

TEST_CASE("before any snapshot every request is granted", "[header_limiter]") {
    manual_clock clock;
    header_limiter<manual_clock> limiter(clock);
    for (int i = 0; i < 1000; ++i) REQUIRE(limiter.try_acquire(5));
    CHECK_FALSE(limiter.remaining());
}

TEST_CASE("grants while the server's remaining count allows, then waits for the reset", "[header_limiter]") {
    manual_clock clock;
    header_limiter<manual_clock> limiter(clock);
    limiter.update(requests(10, 3, 2s));
    CHECK(limiter.try_acquire(2));
    CHECK(limiter.try_acquire(1));
    CHECK_FALSE(limiter.try_acquire(1));
    const auto start = clock.now();
    CHECK(limiter.acquire(4) == 2s);  // the count resets to the limit of 10 after 2 s
    CHECK(clock.now() - start == 2s);
    CHECK(limiter.remaining() == 6);
}

TEST_CASE("try_acquire_for fails at once when the reset comes after the deadline", "[header_limiter]") {
    manual_clock clock;
    header_limiter<manual_clock> limiter(clock);
    limiter.update(requests(10, 0, 5s));
    const auto start = clock.now();
    CHECK_FALSE(limiter.try_acquire_for(1, 4s));
    CHECK(clock.now() == start);
    CHECK(limiter.try_acquire_for(1, 5s));
    CHECK(clock.now() - start == 5s);
}

TEST_CASE("an older response arriving after a newer one does not raise remaining", "[header_limiter]") {
    manual_clock clock;
    header_limiter<manual_clock> limiter(clock);
    limiter.update(requests(100, 40, 30s));  // the newer response
    limiter.update(requests(100, 55, 31s));  // an older one, late
    CHECK(limiter.remaining() == 40);
    limiter.update(requests(100, 20, 30s));  // lower: believed
    CHECK(limiter.remaining() == 20);
}

TEST_CASE("a window whose reset passed starts over from the server's new count", "[header_limiter]") {
    manual_clock clock;
    header_limiter<manual_clock> limiter(clock);
    limiter.update(requests(100, 0, 1s));
    clock.advance(1s);
    CHECK(limiter.remaining() == 100);
    limiter.update(requests(100, 97, 60s));
    CHECK(limiter.remaining() == 97);
}

TEST_CASE("retry-after pauses every grant", "[header_limiter]") {
    manual_clock clock;
    header_limiter<manual_clock> limiter(clock);
    quota_snapshot s;
    s.retry_after = 3s;
    limiter.update(s);
    CHECK_FALSE(limiter.try_acquire());
    clock.advance(3s);
    CHECK(limiter.try_acquire());
}

TEST_CASE("n above the known limit never blocks", "[header_limiter]") {
    manual_clock clock;
    header_limiter<manual_clock> limiter(clock);
    limiter.update(requests(5, 5, 1s));
    CHECK_FALSE(limiter.try_acquire(6));
    CHECK_FALSE(limiter.try_acquire_for(6, 1h));
    CHECK_THROWS_AS(limiter.acquire(6), ratelimit::capacity_exceeded);
    CHECK(limiter.remaining() == 5);
}

TEST_CASE("refund gives back up to the limit", "[header_limiter]") {
    manual_clock clock;
    header_limiter<manual_clock> limiter(clock);
    limiter.update(requests(5, 2, 10s));
    REQUIRE(limiter.try_acquire(2));
    limiter.refund(10);
    CHECK(limiter.remaining() == 5);
}

TEST_CASE("a remaining count without a reset time resets after the fallback", "[header_limiter]") {
    manual_clock clock;
    ratelimit::header_limiter_options options;
    options.fallback_reset = 2s;
    header_limiter<manual_clock> limiter(options, clock);
    limiter.update(requests(std::nullopt, 0, std::nullopt));
    CHECK_FALSE(limiter.try_acquire());
    clock.advance(2s);
    CHECK(limiter.try_acquire());  // the limit is unknown: after the reset nothing is known
}

TEST_CASE("the tokens dimension is followed when asked", "[header_limiter]") {
    manual_clock clock;
    ratelimit::header_limiter_options options;
    options.dimension = ratelimit::quota_dimension::tokens;
    header_limiter<manual_clock> limiter(options, clock);
    quota_snapshot s;
    s.tokens = quota_state{1000, 300, 1s};
    s.requests = quota_state{10, 0, 1s};
    limiter.update(s);
    CHECK(limiter.try_acquire(300));
    CHECK_FALSE(limiter.try_acquire(1));
}

// ---- issue 12: hostile numbers, hostile pauses, max() deadlines, clock jumps ----

namespace {

constexpr std::int64_t int64_max = std::numeric_limits<std::int64_t>::max();

// Singles granted at one instant, stopping one past `most`.
template <class L>
std::int64_t grant_singles(L& limiter, std::int64_t most) {
    std::int64_t granted = 0;
    while (granted < most + 1 && limiter.try_acquire(1)) ++granted;
    return granted;
}

}  // namespace

TEST_CASE("refund(INT64_MAX) saturates at the known limit", "[header_limiter][overflow]") {
    manual_clock clock;
    header_limiter<manual_clock> limiter(clock);
    limiter.update(requests(10, 5, 1s));
    limiter.refund(int64_max);  // 5 + INT64_MAX does not fit: the count is capped at the limit of 10
    CHECK(limiter.remaining() == 10);
    CHECK(grant_singles(limiter, 10) == 10);
}

TEST_CASE("refund(INT64_MAX) with no known limit saturates at INT64_MAX", "[header_limiter][overflow]") {
    manual_clock clock;
    header_limiter<manual_clock> limiter(clock);
    limiter.update(requests(std::nullopt, 5, 1s));
    limiter.refund(int64_max);
    CHECK(limiter.remaining() == int64_max);
    limiter.refund(1);
    CHECK(limiter.remaining() == int64_max);
}

TEST_CASE("a limit and remaining count of INT64_MAX grant INT64_MAX once and then nothing",
          "[header_limiter][overflow]") {
    manual_clock clock;
    header_limiter<manual_clock> limiter(clock);
    limiter.update(requests(int64_max, int64_max, 1s));
    CHECK(limiter.try_acquire(int64_max));
    CHECK_FALSE(limiter.try_acquire(1));
    CHECK(limiter.remaining() == 0);
    CHECK_FALSE(limiter.try_acquire_for(int64_max, 1s - 1ns));  // the reset at 1 s is past the deadline
}

TEST_CASE("a remaining count above the known limit is held to the limit", "[header_limiter][overflow]") {
    manual_clock clock;
    header_limiter<manual_clock> limiter(clock);
    limiter.update(requests(5, int64_max, 1s));  // a count the limit makes impossible
    CHECK(limiter.remaining() == 5);
    CHECK(grant_singles(limiter, 5) == 5);
}

TEST_CASE("a negative remaining count reads as zero", "[header_limiter][overflow]") {
    manual_clock clock;
    header_limiter<manual_clock> limiter(clock);
    limiter.update(requests(10, std::numeric_limits<std::int64_t>::min(), 1s));
    CHECK(limiter.remaining() == 0);
    CHECK_FALSE(limiter.try_acquire());
    limiter.refund(3);  // 0 + 3, where INT64_MIN + 3 would still refuse
    CHECK(limiter.remaining() == 3);
}

TEST_CASE("a reset time of zero does not refill the count on every call", "[header_limiter]") {
    manual_clock clock;
    header_limiter<manual_clock> limiter(clock);
    limiter.update(requests(5, 0, 0s));  // reset now: a new window of 5 starts, lasting fallback_reset (1 s)
    CHECK(grant_singles(limiter, 5) == 5);
    clock.advance(1s - 1ns);
    CHECK_FALSE(limiter.try_acquire());
    clock.advance(1ns);
    CHECK(grant_singles(limiter, 5) == 5);
}

TEST_CASE("a hostile retry-after pauses for max_pause, 10 minutes by default", "[header_limiter][pause]") {
    manual_clock clock;
    header_limiter<manual_clock> limiter(clock);
    quota_snapshot s;
    s.retry_after = std::chrono::seconds{9'000'000'000};  // 285 years
    limiter.update(s);
    CHECK(limiter.paused_until() == clock.now() + 10min);
    clock.advance(10min - 1ns);
    CHECK_FALSE(limiter.try_acquire());
    clock.advance(1ns);
    CHECK(limiter.try_acquire());
}

TEST_CASE("max_pause caps the retry-after pause where the options set it", "[header_limiter][pause]") {
    manual_clock clock;
    ratelimit::header_limiter_options options;
    options.max_pause = 30s;
    header_limiter<manual_clock> limiter(options, clock);
    quota_snapshot s;
    s.retry_after = 1h;
    limiter.update(s);
    CHECK(limiter.paused_until() == clock.now() + 30s);
    s.retry_after = 20s;  // shorter than the cap: kept as asked
    clock.advance(25s);
    limiter.update(s);
    CHECK(limiter.paused_until() == clock.now() + 20s);
}

TEST_CASE("a max_pause of zero or less is refused, naming it", "[header_limiter][pause]") {
    for (const std::chrono::nanoseconds bad : {std::chrono::nanoseconds{0}, std::chrono::nanoseconds{-1}}) {
        ratelimit::header_limiter_options options;
        options.max_pause = bad;
        try {
            header_limiter<manual_clock> limiter(options, manual_clock{});
            FAIL("no exception");
        } catch (const std::invalid_argument& e) {
            CHECK(std::string(e.what()).find("max_pause must be > 0, got " + std::to_string(bad.count())) !=
                  std::string::npos);
        }
    }
}

TEST_CASE("deadlines at time_point::max() and duration::max() return on manual_clock", "[header_limiter][max]") {
    manual_clock clock;
    header_limiter<manual_clock> limiter(clock);
    limiter.update(requests(5, 0, 2s));
    CHECK_FALSE(limiter.try_acquire_until(6, manual_clock::time_point::max()));  // above the limit: at once
    CHECK_FALSE(limiter.try_acquire_for(6, manual_clock::duration::max()));
    CHECK(clock.now() == manual_clock::time_point{});
    CHECK(limiter.try_acquire_until(5, manual_clock::time_point::max()));  // sleeps until the reset at 2 s
    CHECK(clock.now() == manual_clock::time_point{2s});
    CHECK(limiter.try_acquire_for(5, manual_clock::duration::max()));      // and the next, at 4 s
    CHECK(clock.now() == manual_clock::time_point{4s});
}

TEST_CASE("deadlines at max() return on tsc_clock", "[header_limiter][max]") {
    using tsc = ratelimit::tsc_clock;
    header_limiter<tsc> limiter;
    limiter.update(requests(5, 5, 1h));
    CHECK(limiter.try_acquire_until(5, tsc::time_point::max()));  // granted at once
    CHECK_FALSE(limiter.try_acquire_until(6, tsc::time_point::max()));  // above the limit: refused at once
    CHECK_FALSE(limiter.try_acquire_for(6, tsc::duration::max()));
    CHECK_FALSE(limiter.try_acquire_for(1, tsc::duration::zero()));  // the count is spent until the reset in 1 h
    CHECK(limiter.try_acquire_for(0, tsc::duration::max()));
}

TEST_CASE("a clock that jumps 2^57 ns ahead and back: every call returns and the count holds",
          "[header_limiter][clock_jump]") {
    manual_clock clock;
    header_limiter<manual_clock> limiter(clock);
    limiter.update(requests(5, 5, 1s));
    REQUIRE(limiter.try_acquire(2));
    const auto start = clock.now();
    clock.set(start + std::chrono::nanoseconds{std::int64_t{1} << 57});  // 4.6 years ahead: the window reset
    CHECK(grant_singles(limiter, 5) == 5);
    clock.set(start);  // corrected back: the window that began 4.6 years ahead still holds its count
    CHECK_FALSE(limiter.try_acquire());
    CHECK_FALSE(limiter.try_acquire_for(1, 1h));
    CHECK(limiter.remaining() == 0);
    limiter.update(requests(5, 3, 1s));  // the server's word lowers it no further than 0
    CHECK(grant_singles(limiter, 5) == 0);
    CHECK(limiter.acquire(1) >= 0ns);  // sleeps until the later window's reset, and returns
    CHECK(clock.now() >= start + std::chrono::nanoseconds{std::int64_t{1} << 57});
}

TEST_CASE("a lower limit holds the remaining count to it", "[header_limiter]") {
    manual_clock clock;
    header_limiter<manual_clock> limiter(clock);
    limiter.update(requests(100, 80, 10s));
    limiter.update(requests(20, std::nullopt, std::nullopt));  // the limit alone, lowered to 20
    CHECK(limiter.remaining() == 20);
}

TEST_CASE("a negative limit is taken as unknown", "[header_limiter][overflow]") {
    manual_clock clock;
    header_limiter<manual_clock> limiter(clock);
    limiter.update(requests(-1, 3, 1s));
    CHECK_FALSE(limiter.limit());
    CHECK(limiter.try_acquire(3));  // the count still holds; n is not "above a limit of -1"
    CHECK_FALSE(limiter.try_acquire(1));
    CHECK(limiter.acquire(1) == 1s);  // waits for the reset instead of throwing capacity_exceeded
}

TEST_CASE("a deadline between the pause's end and the reset fails without sleeping", "[header_limiter][pause]") {
    manual_clock clock;
    header_limiter<manual_clock> limiter(clock);
    quota_snapshot s = requests(10, 0, 5s);  // spent until the reset at 5 s
    s.retry_after = 1s;                       // and paused until 1 s
    limiter.update(s);
    const auto start = clock.now();
    CHECK_FALSE(limiter.try_acquire_for(1, 3s));  // 1 s < 3 s < 5 s
    CHECK(clock.now() == start);
    CHECK(limiter.try_acquire_for(1, 5s));
    CHECK(clock.now() - start == 5s);
}

TEST_CASE("n = INT64_MAX and a reset at nanoseconds::max(): no overflow, no wait in vain", "[header_limiter][overflow]") {
    manual_clock clock;
    header_limiter<manual_clock> limiter(clock);
    limiter.update(requests(5, 0, std::chrono::nanoseconds::max()));  // spent until the end of time
    CHECK_FALSE(limiter.try_acquire(int64_max));
    CHECK_FALSE(limiter.try_acquire_for(int64_max, manual_clock::duration::max()));
    CHECK_THROWS_AS(limiter.acquire(int64_max), ratelimit::capacity_exceeded);
    CHECK_FALSE(limiter.try_acquire_for(1, 1h));
    CHECK(clock.now() == manual_clock::time_point{});
    CHECK(limiter.reset_at() == manual_clock::time_point::max());
    limiter.refund(int64_max);
    CHECK(limiter.remaining() == 5);
}

TEST_CASE("a header limiter is idle only when no retry-after pause is in force", "[header_limiter]") {
    ratelimit::manual_clock clock;
    header_limiter<ratelimit::manual_clock> limiter(clock);
    CHECK(limiter.is_idle());
    ratelimit::quota_snapshot s;
    s.retry_after = 3s;
    limiter.update(s);
    CHECK_FALSE(limiter.is_idle());
    clock.advance(3s);
    CHECK(limiter.is_idle());
}
