// The scenarios of Go's golang.org/x/time/rate test suite (rate/rate_test.go),
// ported to ratelimit::token_bucket<manual_clock>.
//
// Mapping: Go's Limit r is rate::per_second(r) and burst b the capacity;
// AllowN(t, n) sets the manual clock to t and calls try_acquire(n);
// TokensAt(t) is available() (whole permits: every value Go's tests expect is
// whole); reserveN(t, n, InfDuration) is reserve(n) and its timeToAct is
// ready_at(); reserveN(t, n, maxReserve) is try_acquire_for(n, maxReserve);
// CancelAt(t) sets the clock and calls cancel(); WaitN is acquire(n) or
// try_acquire_until(n, deadline); SetLimitAt/SetBurstAt set the clock and call
// set_rate/set_capacity.
//
// Go's tests run on time.Now() and compare in multiples of d = 100 ms rounded
// to the nearest; on the manual clock every time here is exact, so the ported
// checks compare exactly. Where our contract differs from Go's, the test
// asserts ours and a comment gives Go's answer and the reason.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <initializer_list>
#include <stdexcept>
#include <thread>
#include <vector>

#include <ratelimit/token_bucket.hpp>

#include "support/catch.hpp"

using namespace std::chrono_literals;
using ratelimit::capacity_exceeded;
using ratelimit::manual_clock;
using ratelimit::rate;
using bucket = ratelimit::token_bucket<manual_clock>;

namespace {

constexpr manual_clock::duration d = 100ms;
constexpr manual_clock::time_point t0{1000s};

/// Go's t0..t9: t0 + k·d.
constexpr manual_clock::time_point at(int k) { return t0 + k * d; }

/// One of Go's limiters: a token bucket on a manual clock that reads t0 when made.
struct go_limiter {
    explicit go_limiter(double limit, std::int64_t burst, manual_clock::time_point start = t0)
        : clock(start), lim(rate::per_second(limit), burst, clock) {}

    manual_clock clock;
    bucket lim;
};

/// Go's `allow` row: at t_k, TokensAt is toks, and AllowN(n) answers ok.
struct allow {
    int k;
    std::int64_t toks;
    std::int64_t n;
    bool ok;
};

/// Go's run(): each step checks the token count, then AllowN.
void run(go_limiter& g, std::initializer_list<allow> steps) {
    int step = 0;
    for (const allow& a : steps) {
        INFO("step " << step << ": t" << a.k << " n=" << a.n);
        g.clock.set(at(a.k));
        CHECK(g.lim.available() == a.toks);
        CHECK(g.lim.try_acquire(a.n) == a.ok);
        ++step;
    }
}

/// Go's runReserve(t, n) expecting (act, ok = true): ready_at() must be exactly t_act.
ratelimit::reservation<manual_clock> reserve_at(go_limiter& g, int k, std::int64_t n, int act) {
    g.clock.set(at(k));
    auto r = g.lim.reserve(n);
    INFO("reserve t" << k << " n=" << n << ": ready at " << (r.ready_at() - t0) / 1ms << " ms after t0, want t"
                     << act);
    CHECK(r.ready_at() == at(act));
    CHECK(r.count() == n);
    return r;
}

/// Go's runReserve expecting ok = false because n > burst: ours throws and changes nothing.
void reserve_above_burst_at(go_limiter& g, int k, std::int64_t n) {
    g.clock.set(at(k));
    const std::int64_t before = g.lim.available();
    CHECK_THROWS_AS(g.lim.reserve(n), capacity_exceeded);
    CHECK(g.lim.available() == before);
}

/// CancelAt(t_k).
void cancel_at(go_limiter& g, ratelimit::reservation<manual_clock>& r, int k) {
    g.clock.set(at(k));
    r.cancel();
}

}  // namespace

// TestEvery. Go's Every(0) and Every(-1) are Inf; we have no infinite rate and
// reject them (see "rate::every rejects a zero or negative interval").
TEST_CASE("go: Every(interval) is the reciprocal of the interval", "[go]") {
    struct every_case {
        manual_clock::duration interval;
        double per_second;
    };
    const every_case cases[] = {
        {1ns, 1e9},
        {1us, 1e6},
        {1ms, 1e3},
        {10ms, 100},
        {100ms, 10},
        {1s, 1},
        {2s, 0.5},
        {2500ms, 0.4},
        {4s, 0.25},
        {10s, 0.1},
        {manual_clock::duration::max(), 1e9 / static_cast<double>(manual_clock::duration::max().count())},
    };
    for (const auto& c : cases) {
        INFO(c.interval.count() << " ns");
        const rate r = rate::every(c.interval);
        CHECK(r.per_second_value() == Approx(c.per_second).epsilon(1e-12));
        CHECK(r.interval() == c.interval);
    }
}

TEST_CASE("go: Every(0) and Every(-1) are rejected instead of meaning Inf", "[go]") {
    CHECK_THROWS_AS(rate::every(0ns), std::invalid_argument);
    CHECK_THROWS_AS(rate::every(-1ns), std::invalid_argument);
}

// TestLimiterBurst1.
TEST_CASE("go: burst 1 grants one permit per interval", "[go]") {
    go_limiter g(10, 1);
    run(g, {
               {0, 1, 1, true},
               {0, 0, 1, false},
               {0, 0, 1, false},
               {1, 1, 1, true},
               {1, 0, 1, false},
               {1, 0, 1, false},
               {2, 1, 2, false},  // burst size is 1, so n=2 always fails
               {2, 1, 1, true},
               {2, 0, 1, false},
           });
}

// TestLimiterBurst3.
TEST_CASE("go: burst 3 grants up to 3 at once and refills one per interval", "[go]") {
    go_limiter g(10, 3);
    run(g, {
               {0, 3, 2, true},
               {0, 1, 2, false},
               {0, 1, 1, true},
               {0, 0, 1, false},
               {1, 1, 4, false},
               {2, 2, 1, true},
               {3, 2, 1, true},
               {4, 2, 1, true},
               {4, 1, 1, true},
               {4, 0, 1, false},
               {4, 0, 1, false},
               {9, 3, 3, true},
               {9, 0, 0, true},
           });
}

// TestLimiterJumpBackwards. Go moves its "last" time back with the clock, so
// the interval t0..t1 refills twice: after the grant at t1, Go sees 2 tokens
// at t0 and another at t1 again. Our state is an absolute time (GCRA): at t0
// the bucket is short the permit taken at t1 and the refill that paid for it,
// so it holds one token less, and time spent before a backward jump is never
// refilled twice. That keeps "at most capacity + rate·T in any interval T".
TEST_CASE("go: a clock jumping backwards counts the permits taken later (differs from Go)", "[go]") {
    SECTION("the bucket was made at t0") {
        go_limiter g(10, 3);
        run(g, {
                   {1, 3, 1, true},   // start at t1
                   {0, 1, 1, true},   // jump back to t0: Go has 2 tokens, we have 3 - 1 - 1 refill = 1
                   {0, 0, 1, false},  // Go: true (its second token)
                   {0, 0, 1, false},
                   {0, 0, 1, false},
                   {1, 1, 1, true},  // got a token
                   {1, 0, 1, false},
                   {1, 0, 1, false},
                   {2, 1, 1, true},  // got another token
                   {2, 0, 1, false},
                   {2, 0, 1, false},
               });
    }
    SECTION("the bucket was made at t1: earlier times count as t1") {
        go_limiter g(10, 3, at(1));
        run(g, {
                   {1, 3, 1, true},   // start at t1
                   {0, 2, 1, true},   // jump back to t0, two tokens remain (as in Go: t0 reads as t1)
                   {0, 1, 1, true},
                   {0, 0, 1, false},
                   {0, 0, 1, false},
                   {1, 0, 1, false},  // Go: true, having refilled t0..t1 a second time
                   {1, 0, 1, false},
                   {1, 0, 1, false},
                   {2, 1, 1, true},  // got another token
                   {2, 0, 1, false},
                   {2, 0, 1, false},
               });
    }
}

// TestLimiter_noTruncationErrors (golang.org/issues/34861).
TEST_CASE("go: a fractional rate of 0.7692307692307693 per second grants the first permit", "[go]") {
    manual_clock clock;
    bucket lim(rate::per_second(0.7692307692307693), 1, clock);
    CHECK(lim.try_acquire());
    CHECK_FALSE(lim.try_acquire());
    // One permit every 1 / 0.7692307692307693 s = 1.3 s (rounded up to 1/16 ns).
    clock.advance(1299ms);
    CHECK_FALSE(lim.try_acquire());
    clock.advance(1ms);
    CHECK(lim.try_acquire());
}

// TestSimultaneousRequests, on a manual clock so that no refill can happen.
TEST_CASE("go: 15 simultaneous requests on a burst of 5 get exactly 5 permits", "[go]") {
    constexpr std::int64_t burst = 5;
    constexpr int requests = 15;
    manual_clock clock;
    bucket lim(rate::per_second(1), burst, clock);
    std::atomic<int> ok{0};
    std::vector<std::thread> threads;
    for (int i = 0; i < requests; ++i) {
        threads.emplace_back([&] {
            if (lim.try_acquire()) ok.fetch_add(1, std::memory_order_relaxed);
        });
    }
    for (auto& t : threads) t.join();
    CHECK(ok.load() == burst);
}

// TestLongRunningQPS, on simulated time as in Go's current test.
TEST_CASE("go: a long run of requests every 2 ms gets the ideal count", "[go]") {
    constexpr std::int64_t limit = 100;
    constexpr std::int64_t burst = 100;
    manual_clock clock(t0);
    bucket lim(rate::per_second(limit), burst, clock);
    std::int64_t ok = 0;
    const auto start = clock.now();
    const auto end = start + 5s;
    while (clock.now() < end) {
        if (lim.try_acquire()) ++ok;
        clock.advance(2ms);
    }
    const double elapsed_s = std::chrono::duration<double>(clock.now() - start).count();
    const double ideal = burst + limit * elapsed_s;  // 100 + 100 * 5 = 600
    CHECK(ok <= static_cast<std::int64_t>(ideal + 1));
    CHECK(ok >= static_cast<std::int64_t>(0.999 * ideal));
    // Exactly: permit k (from 0) is usable at (k - 99) * 10 ms. Polls at 0, 2, ..
    // 4998 ms take one each until k = 123 (at 246 ms); from then on permit k
    // comes at (k - 99) * 10 ms, the last one, k = 598, at 4990 ms.
    CHECK(ok == 599);
}

// TestSimpleReserve.
TEST_CASE("go: simple reservations queue one behind the other", "[go]") {
    go_limiter g(10, 2);
    auto a = reserve_at(g, 0, 2, 0);
    auto b = reserve_at(g, 0, 2, 2);
    auto c = reserve_at(g, 3, 2, 4);
}

// TestMix. Go's reserveN(n > burst) returns a not-ok reservation; ours throws capacity_exceeded.
TEST_CASE("go: reservations and AllowN mix", "[go]") {
    go_limiter g(10, 2);
    reserve_above_burst_at(g, 0, 3);  // should fail because n > burst
    auto a = reserve_at(g, 0, 2, 0);
    run(g, {{1, 1, 2, false}});  // not enough tokens - don't allow
    auto b = reserve_at(g, 1, 2, 2);
    run(g, {{1, -1, 1, false}});  // negative tokens - don't allow
    run(g, {{3, 1, 1, true}});
}

// TestCancelInvalid. Go cancels its not-ok reservation to no effect; ours has
// no reservation to cancel (reserve threw), and the state is unchanged.
TEST_CASE("go: a refused reservation gives back nothing", "[go]") {
    go_limiter g(10, 2);
    auto a = reserve_at(g, 0, 2, 0);
    reserve_above_burst_at(g, 0, 3);
    auto b = reserve_at(g, 0, 2, 2);  // did not get extra tokens
}

// TestCancelLast.
TEST_CASE("go: cancelling the last reservation gives all of it back", "[go]") {
    go_limiter g(10, 2);
    auto a = reserve_at(g, 0, 2, 0);
    auto r = reserve_at(g, 0, 2, 2);
    cancel_at(g, r, 1);  // got 2 tokens back
    auto b = reserve_at(g, 1, 2, 2);
}

// TestCancelTooLate.
TEST_CASE("go: cancelling after ready_at gives nothing back", "[go]") {
    go_limiter g(10, 2);
    auto a = reserve_at(g, 0, 2, 0);
    auto r = reserve_at(g, 0, 2, 2);
    cancel_at(g, r, 3);  // too late to cancel - should have no effect
    auto b = reserve_at(g, 3, 2, 4);
}

// TestCancel0Tokens.
TEST_CASE("go: cancel gives back nothing when a later reservation took as many", "[go]") {
    go_limiter g(10, 2);
    auto a = reserve_at(g, 0, 2, 0);
    auto r = reserve_at(g, 0, 1, 1);
    auto b = reserve_at(g, 0, 1, 2);
    cancel_at(g, r, 0);  // got 0 tokens back
    auto c = reserve_at(g, 0, 1, 3);
}

// TestCancel1Token.
TEST_CASE("go: cancel gives back n minus what later reservations took", "[go]") {
    go_limiter g(10, 2);
    auto a = reserve_at(g, 0, 2, 0);
    auto r = reserve_at(g, 0, 2, 2);
    auto b = reserve_at(g, 0, 1, 3);
    cancel_at(g, r, 2);  // got 1 token back (at exactly ready_at it still gives back)
    auto c = reserve_at(g, 2, 2, 4);
}

// TestCancelMulti.
TEST_CASE("go: cancels of several reservations each count only later reservations", "[go]") {
    go_limiter g(10, 4);
    auto a = reserve_at(g, 0, 4, 0);
    auto ra = reserve_at(g, 0, 3, 3);
    auto b = reserve_at(g, 0, 1, 4);
    auto rc = reserve_at(g, 0, 1, 5);
    cancel_at(g, rc, 1);  // get 1 token back
    cancel_at(g, ra, 1);  // get 2 tokens back, as if C was never reserved
    auto c = reserve_at(g, 1, 3, 5);
}

// The brief's "partial" and "several" cancels, in Go's notation.
TEST_CASE("go: a partial cancel leaves later reservations where they were", "[go]") {
    go_limiter g(10, 3);
    auto a = reserve_at(g, 0, 3, 0);
    auto r = reserve_at(g, 0, 3, 3);
    auto b = reserve_at(g, 0, 2, 5);
    cancel_at(g, r, 1);  // 3 - 2 = 1 token back
    CHECK(b.ready_at() == at(5));
    auto c = reserve_at(g, 1, 1, 5);  // as in Go: -5 + 1 refilled + 1 back - 1 = -4 tokens at t1
}

TEST_CASE("go: cancelling every reservation in reverse order restores the full bucket", "[go]") {
    go_limiter g(10, 2);
    auto a = reserve_at(g, 0, 2, 0);
    auto b = reserve_at(g, 0, 1, 1);
    auto c = reserve_at(g, 0, 1, 2);
    cancel_at(g, c, 0);
    cancel_at(g, b, 0);
    cancel_at(g, a, 0);
    run(g, {{0, 2, 2, true}});
}

TEST_CASE("go: cancel acts once", "[go]") {
    go_limiter g(10, 2);
    auto a = reserve_at(g, 0, 2, 0);
    auto r = reserve_at(g, 0, 2, 2);
    cancel_at(g, r, 0);
    cancel_at(g, r, 0);  // no second refund
    run(g, {{0, 0, 1, false}});
}

// TestReserveJumpBack. Go lets the backward jump refill t0..t1 a second time
// ("should violate Limit,Burst"); we do not, so every later reservation is one
// interval later than Go's.
TEST_CASE("go: reserving after a backward jump queues behind earlier reservations (differs from Go)", "[go]") {
    go_limiter g(10, 2);
    auto a = reserve_at(g, 1, 2, 1);  // start at t1
    auto b = reserve_at(g, 0, 1, 2);  // Go: t1, which violates Limit,Burst
    auto c = reserve_at(g, 2, 2, 4);  // Go: t3
    // burst size is 2, so n=3 always fails, and the state of lim should not be changed
    reserve_above_burst_at(g, 0, 3);
    auto e = reserve_at(g, 2, 1, 5);  // Go: t4
    // the maxReserve is not enough so it fails, and the state of lim should not be changed
    g.clock.set(at(0));
    CHECK_FALSE(g.lim.try_acquire_for(2, d));
    CHECK(g.clock.now() == at(0));
    auto f = reserve_at(g, 2, 1, 6);  // Go: t5
}

// TestReserveJumpBackCancel.
TEST_CASE("go: cancelling at an earlier time after a backward jump (differs from Go)", "[go]") {
    go_limiter g(10, 2);
    auto a = reserve_at(g, 1, 2, 1);  // start at t1
    auto r = reserve_at(g, 1, 2, 3);
    auto b = reserve_at(g, 1, 1, 4);
    cancel_at(g, r, 0);               // cancel at t0, get 1 token back
    auto c = reserve_at(g, 1, 2, 5);  // Go: t4 ("should violate Limit,Burst"): Go refills t0..t1 twice
}

// TestReserveSetLimit. Departure: Go keeps -1 token at t2 and at 10/s puts c
// at t4, beside b's 2 permits: 3 at one instant with a burst of 2 ("violates
// Limit and Burst", Go's test says). Here b keeps its slot at t4, the bucket
// is empty then and refills at 10/s: c at t5.
TEST_CASE("go: a new limit applies after the slots of earlier reservations", "[go]") {
    go_limiter g(5, 2);
    auto a = reserve_at(g, 0, 2, 0);
    auto b = reserve_at(g, 0, 2, 4);
    g.clock.set(at(2));
    g.lim.set_rate(rate::per_second(10));  // b at t4, then 2 permits of tolerance at 10/s: -2 at t2
    CHECK(g.lim.available() == -2);
    auto c = reserve_at(g, 2, 1, 5);
}

// TestReserveSetBurst. Go reserves at t0 after setting the burst at t3 and gets
// t9 from the backward jump; we count t0 as t3 (the change of burst starts a
// new configuration there) and answer t12, which is what Go answers at t3.
TEST_CASE("go: a new burst applies to the debt left by earlier reservations", "[go]") {
    go_limiter g(5, 2);
    auto a = reserve_at(g, 0, 2, 0);
    auto b = reserve_at(g, 0, 2, 4);
    g.clock.set(at(3));
    g.lim.set_capacity(4);  // -0.5 tokens at t3, kept
    CHECK(g.lim.available() == -1);
    auto c = reserve_at(g, 0, 4, 12);  // Go: t9 (from t0 after jumping back); -4.5 tokens at 5/s from t3
}

TEST_CASE("go: a new burst applies to the debt, reserving at the time of the change", "[go]") {
    go_limiter g(5, 2);
    auto a = reserve_at(g, 0, 2, 0);
    auto b = reserve_at(g, 0, 2, 4);
    g.clock.set(at(3));
    g.lim.set_capacity(4);
    auto c = reserve_at(g, 3, 4, 12);  // Go too: -0.5 - 4 = -4.5 tokens, 0.9 s after t3
}

// TestReserveSetLimitCancel. Departure: Go gives r's 2 tokens back at the new
// limit and b goes at t3. Here a reservation made before a change of rate or
// capacity gives nothing back (the change converted the state with its debt
// inside; a faster refill may have repaid it already, and giving it back then
// over-admits: token_bucket_test's "cancel after a faster set_rate ..."). r
// keeps its slot at t4; b takes the next 2 at 10/s: t6.
TEST_CASE("go: a reservation made before a new limit gives nothing back when cancelled", "[go]") {
    go_limiter g(5, 2);
    auto a = reserve_at(g, 0, 2, 0);
    auto r = reserve_at(g, 0, 2, 4);
    g.clock.set(at(2));
    g.lim.set_rate(rate::per_second(10));
    cancel_at(g, r, 2);
    auto b = reserve_at(g, 2, 2, 6);
}

// TestReserveMax: reserveN with maxReserve = d is try_acquire_for(n, d), which
// sleeps (on the manual clock: advances it) until the permits are usable.
TEST_CASE("go: a reservation is refused when it would wait longer than the maximum", "[go]") {
    go_limiter g(10, 2);
    g.clock.set(at(0));
    CHECK(g.lim.try_acquire_for(2, d));
    CHECK(g.clock.now() == at(0));
    CHECK(g.lim.try_acquire_for(1, d));  // reserve for close future
    CHECK(g.clock.now() == at(1));       // slept until t1
    g.clock.set(at(0));
    CHECK_FALSE(g.lim.try_acquire_for(1, d));  // time to act too far in the future (t2)
    CHECK(g.clock.now() == at(0));             // and no time was spent finding out
}

// TestWaitSimple. "already-cancelled" has no counterpart: we take no context.
TEST_CASE("go: WaitN acts now, later, or refuses n above burst", "[go]") {
    go_limiter g(10, 3);
    // exceed-burst-error
    CHECK_THROWS_AS(g.lim.acquire(4), capacity_exceeded);
    CHECK_FALSE(g.lim.try_acquire_until(4, at(100)));
    CHECK(g.clock.now() == at(0));
    // act-now
    CHECK(g.lim.acquire(2) == 0ns);
    CHECK(g.clock.now() == at(0));
    // act-later: 3 tokens with 1 left: 2 intervals
    CHECK(g.lim.acquire(3) == 2 * d);
    CHECK(g.clock.now() == at(2));
}

// TestWaitCancel: Go cancels the context while WaitN sleeps and gets the
// tokens back. Ours: reserve, then cancel before ready_at.
TEST_CASE("go: a wait cancelled before its time gives its tokens back", "[go]") {
    go_limiter g(10, 3);
    CHECK(g.lim.acquire(2) == 0ns);  // act-now: after this 1 token is left
    auto r = g.lim.reserve(3);       // will-cancel: would be ready at t2
    CHECK(r.ready_at() == at(2));
    g.clock.advance(d);
    r.cancel();  // should get 3 tokens back, and have 2 tokens at t1
    CHECK(g.lim.available() == 2);
    CHECK(g.lim.acquire(2) == 0ns);  // act-now-after-cancel
    CHECK(g.clock.now() == at(1));
}

// TestWaitTimeout: a context deadline of d is try_acquire_until(n, t0 + d).
TEST_CASE("go: a wait that cannot finish by the deadline fails at once", "[go]") {
    go_limiter g(10, 3);
    const auto deadline = at(1);
    CHECK(g.lim.try_acquire_until(2, deadline));  // act-now
    CHECK(g.clock.now() == at(0));
    CHECK_FALSE(g.lim.try_acquire_until(3, deadline));  // w-timeout-err: needs t2
    CHECK(g.clock.now() == at(0));                      // failed at once, without sleeping
    CHECK(g.lim.available() == 1);                      // and took nothing
}

// TestWaitInf: Go's Inf limit with burst 0 allows any n. We have neither an
// infinite rate nor a zero capacity (n above capacity always throws); the
// nearest is the fastest rate with a capacity that covers n.
TEST_CASE("go: the Inf-equivalent limiter waits for nothing", "[go]") {
    manual_clock clock(t0);
    bucket lim(rate::per_second(1e9), 3, clock);
    CHECK(lim.acquire(3) == 0ns);  // exceed-burst-no-error
    CHECK(lim.acquire(3) == 3ns);  // at one permit per ns, the next 3 take 3 ns
    CHECK(clock.now() == t0 + 3ns);
    CHECK_THROWS_AS(lim.acquire(4), capacity_exceeded);  // where Go would not fail
}

// TestZeroLimit: we reject a zero rate; the nearest is a tiny one.
TEST_CASE("go: a zero limit is rejected; a tiny one allows the burst once", "[go]") {
    CHECK_THROWS_AS(rate::per_second(0), std::invalid_argument);
    manual_clock clock;
    bucket lim(rate::per_second(1e-10), 1, clock);
    CHECK(lim.try_acquire());        // want true when first used
    CHECK_FALSE(lim.try_acquire());  // want false when already used
}

// TestSetAfterZeroLimit.
TEST_CASE("go: setting a real limit after a tiny one waits one interval of the new limit", "[go]") {
    manual_clock clock(t0);
    bucket lim(rate::per_second(1e-10), 1, clock);
    CHECK(lim.try_acquire());
    CHECK_FALSE(lim.try_acquire());
    lim.set_rate(rate::per_second(10));
    // We set the limit to 10/s so expect to get another token in 100ms.
    CHECK(lim.acquire(1) == 100ms);
    CHECK(clock.now() == t0 + 100ms);
}

// TestTinyLimit (golang.org/issue/71154: durationFromTokens overflowed).
TEST_CASE("go: a tiny limit never grants more than the burst", "[go]") {
    SECTION("burst 1") {
        manual_clock clock;
        bucket lim(rate::per_second(1e-10), 1, clock);
        CHECK(lim.try_acquire());
        CHECK_FALSE(lim.try_acquire());
    }
    SECTION("burst 2") {
        manual_clock clock;
        bucket lim(rate::per_second(1e-10), 2, clock);
        CHECK(lim.try_acquire(2));
        CHECK_FALSE(lim.try_acquire(1));
        // One permit every 1e10 s (317 years): not even 290 years refill one.
        clock.advance(std::chrono::hours{24 * 365 * 290});
        CHECK_FALSE(lim.try_acquire(1));
        CHECK(lim.available() == 0);
    }
}

// SetLimitAt / SetBurstAt keep the token count (x/time/rate's rule).
TEST_CASE("go: SetLimit keeps the token count and refills at the new limit from then on", "[go]") {
    go_limiter g(10, 4);
    run(g, {{0, 4, 3, true}});  // 1 left
    g.clock.set(at(1));         // 2 tokens
    g.lim.set_rate(rate::per_second(5));
    CHECK(g.lim.available() == 2);
    g.clock.set(at(3));  // + 0.2 s * 5/s = 1
    CHECK(g.lim.available() == 3);
    g.lim.set_rate(rate::per_second(20));
    g.clock.set(at(3) + 50ms);  // + 0.05 s * 20/s = 1
    CHECK(g.lim.available() == 4);
}

TEST_CASE("go: SetBurst keeps the token count: a larger burst is not filled at once", "[go]") {
    SECTION("after taking some") {
        go_limiter g(10, 2);
        run(g, {{0, 2, 1, true}});
        g.lim.set_capacity(8);
        CHECK(g.lim.available() == 1);
        CHECK(g.lim.capacity() == 8);
        run(g, {{5, 6, 6, true}});  // 1 + 5 refilled
    }
    SECTION("when full") {
        go_limiter g(10, 2);
        g.lim.set_capacity(4);
        CHECK(g.lim.available() == 2);
        run(g, {{0, 2, 3, false}, {2, 4, 4, true}});
    }
}

TEST_CASE("go: SetBurst below the token count caps the count at the new burst", "[go]") {
    go_limiter g(10, 4);
    g.lim.set_capacity(2);
    CHECK(g.lim.available() == 2);
    run(g, {{0, 2, 2, true}, {0, 0, 1, false}, {5, 2, 3, false}});
}
