// llm::gate under hostile input (issue 12): costs that can never fit, costs and
// usage that overflow, exceptions while waiting in line, waits with no deadline
// on clocks other than steady/system, and hostile retry-after and usage reports.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <ratelimit/llm/gate.hpp>
#include <ratelimit/tsc_clock.hpp>

#include "support/catch.hpp"

using namespace std::chrono_literals;
using ratelimit::capacity_exceeded;
using ratelimit::manual_clock;
using ratelimit::llm::gate;
using ratelimit::llm::gate_config;
using ratelimit::llm::request_cost;
using ratelimit::llm::usage;
using headers = std::vector<std::pair<std::string, std::string>>;

namespace {

constexpr std::int64_t int64_max = std::numeric_limits<std::int64_t>::max();

// 600 requests and 60,000 tokens per minute, exact (no headroom), 1 s sub-windows:
// buckets of 10 requests and 1,000 tokens, refilled at 10 requests and 1,000 tokens per second.
gate_config exact(std::int64_t rpm = 600, std::int64_t tpm = 60'000, std::int64_t concurrent = 0) {
    gate_config c;
    c.requests_per_minute = rpm;
    c.tokens_per_minute = tpm;
    c.max_concurrent = concurrent;
    c.headroom = 1.0;
    return c;
}

// A manual clock whose next sleep throws, when armed: an exception raised
// while a caller waits in the gate's line.
class throwing_clock {
public:
    using rep = manual_clock::rep;
    using period = manual_clock::period;
    using duration = manual_clock::duration;
    using time_point = std::chrono::time_point<throwing_clock, duration>;

    [[nodiscard]] time_point now() const noexcept { return time_point{time_.now().time_since_epoch()}; }
    void sleep_until(time_point t) {
        if (armed_->exchange(false)) throw std::runtime_error("throwing_clock: sleep interrupted");
        time_.sleep_until(manual_clock::time_point{t.time_since_epoch()});
    }
    void arm() { armed_->store(true); }

private:
    manual_clock time_;
    std::shared_ptr<std::atomic<bool>> armed_ = std::make_shared<std::atomic<bool>>(false);
};

// A std::chrono clock (is_clock_v, static now(), no sleep_until) that counts
// the reads made by two watched threads. With FromFirstRead it counts from its
// first reading, far below steady_clock's count, so libstdc++'s
// condition_variable::wait_until(time_point::max()) overflows converting to
// steady_clock on every call; otherwise it is Base shifted by nothing
// (tsc_clock counts from steady_clock's epoch: it overflows now and then).
template <class Base, bool FromFirstRead>
struct watched_clock {
    using rep = std::int64_t;
    using period = std::nano;
    using duration = std::chrono::nanoseconds;
    using time_point = std::chrono::time_point<watched_clock, duration>;
    static constexpr bool is_steady = true;

    static time_point now() noexcept {
        static const duration origin = FromFirstRead ? since_epoch() : duration::zero();
        const std::thread::id self = std::this_thread::get_id();
        for (int i = 0; i < 2; ++i) {
            if (watched[i].load() == self) reads[i].fetch_add(1);
        }
        return time_point{since_epoch() - origin};
    }
    static duration since_epoch() noexcept {
        return std::chrono::duration_cast<duration>(Base::now().time_since_epoch());
    }
    static void reset() {
        for (int i = 0; i < 2; ++i) {
            watched[i].store(std::thread::id{});
            reads[i].store(0);
        }
    }

    static inline std::atomic<std::thread::id> watched[2]{};
    static inline std::atomic<long> reads[2]{};
};

using late_epoch_clock = watched_clock<std::chrono::steady_clock, true>;
using watched_tsc_clock = watched_clock<ratelimit::tsc_clock, false>;

// Fails the test (aborts the process, which Catch reports against the running
// test) when its scope is not left within `limit`: a hang fails, never blocks the suite.
class watchdog {
public:
    watchdog(std::chrono::seconds limit, const char* what)
        : thread_([this, limit, what] {
              std::unique_lock lock(mutex_);
              if (!done_changed_.wait_for(lock, limit, [this] { return done_; })) {
                  std::fprintf(stderr, "watchdog: %s did not finish within %lld s\n", what,
                               static_cast<long long>(limit.count()));
                  std::abort();
              }
          }) {}
    watchdog(const watchdog&) = delete;
    watchdog& operator=(const watchdog&) = delete;
    ~watchdog() {
        {
            std::lock_guard lock(mutex_);
            done_ = true;
        }
        done_changed_.notify_one();
        thread_.join();
    }

private:
    std::mutex mutex_;
    std::condition_variable done_changed_;
    bool done_ = false;
    std::thread thread_;
};

}  // namespace

// ---- 1. a cost that can never fit ---------------------------------------------------

TEST_CASE("a cost above the per-minute limit throws capacity_exceeded, not gate_timeout, under max_wait", "[gate][reliability]") {
    manual_clock clock;
    auto c = exact(600, 1'000);
    c.max_wait = 5s;
    gate<manual_clock> g(c, clock);
    const auto start = clock.now();
    CHECK_THROWS_AS(g.acquire({2'000, 0}), capacity_exceeded);  // 2,000 > 1,000 per minute
    CHECK(clock.now() == start);                                  // at once
}

TEST_CASE("a cost that can never fit is refused before waiting for a busy slot", "[gate][reliability]") {
    manual_clock clock;
    auto c = exact(600, 1'000, 1);
    c.max_wait = 1500ms;
    gate<manual_clock> g(c, clock);
    auto busy = g.acquire({10, 0});  // the only slot
    const auto start = clock.now();
    CHECK_THROWS_AS(g.acquire({2'000, 0}), capacity_exceeded);
    CHECK_FALSE(g.try_acquire_until({2'000, 0}, start + 1500ms));
    CHECK_THROWS_AS(g.reserve({2'000, 0}), capacity_exceeded);
    CHECK(clock.now() == start);  // none of them waited the 1.5 s for the slot
}

// ---- 2. costs and usage that overflow -----------------------------------------------

TEST_CASE("request_cost::total and usage::total saturate instead of overflowing", "[gate][reliability]") {
    CHECK(request_cost{100, int64_max}.total() == int64_max);        // 100 + (2^63 - 1)
    CHECK(request_cost{int64_max, int64_max}.total() == int64_max);
    CHECK(usage{1, int64_max}.total() == int64_max);
    CHECK(request_cost{100, 900}.total() == 1'000);                    // ordinary sums unchanged
}

TEST_CASE("a cost of INT64_MAX output tokens (no cap) is capacity_exceeded on every path, at once", "[gate][reliability]") {
    manual_clock clock;
    gate<manual_clock> g(exact(), clock);
    const auto start = clock.now();
    constexpr request_cost no_cap{100, int64_max};  // saturates to INT64_MAX > 60,000 per minute
    CHECK_THROWS_AS(g.acquire(no_cap), capacity_exceeded);
    CHECK_THROWS_AS(g.reserve(no_cap), capacity_exceeded);
    CHECK_FALSE(g.try_acquire(no_cap));
    CHECK_FALSE(g.try_acquire_until(no_cap, start + 3s));
    CHECK(clock.now() == start);
    CHECK(g.try_acquire({1'000, 0}));  // nothing was taken: the whole 1,000-token bucket is there
    CHECK(g.snapshot().admitted == 1);
}

TEST_CASE("an exception while waiting in line leaves the line as it was", "[gate][reliability][thread]") {
    throwing_clock clock;
    gate<throwing_clock> g(exact(), clock);
    auto all = g.try_acquire({1'000, 0});  // empties the 1,000-token bucket
    REQUIRE(all);
    const auto start = clock.now();
    clock.arm();
    // On a thread of its own (its stack is gone afterwards): 500 tokens come
    // back in 500 ms, so the caller queues as head and sleeps; the sleep throws.
    bool thrown = false;
    std::thread caller([&] {
        try {
            (void)g.try_acquire_until({500, 0}, start + 1s);
        } catch (const std::runtime_error&) {
            thrown = true;
        }
    });
    caller.join();
    CHECK(thrown);
    CHECK(clock.now() == start);
    // Nobody is in line now: 10 tokens come back in 10 ms and this caller is
    // served then, not refused after the whole 3 s behind a dead waiter.
    auto next = g.try_acquire_until({10, 0}, start + 3s);
    CHECK(next);
    CHECK(clock.now() - start == 10ms);
}

TEST_CASE("usage above the estimate is charged at most one minute's limit", "[gate][reliability]") {
    manual_clock clock;
    gate<manual_clock> g(exact(), clock);
    auto t = g.acquire({100, 0});        // 900 of 1,000 tokens left
    t.complete(200, usage{1'000'000'000, 0});  // 10^9 reported: the overrun is charged as 60,000, one minute's limit
    const auto start = clock.now();
    auto next = g.acquire({1'000, 0});  // 900 − 60,000 = −59,100 left: 60,100 tokens to refill at 1,000/s
    CHECK(clock.now() - start == 60'100ms);
}

TEST_CASE("a usage report that overflows is charged one minute's limit, not given back", "[gate][reliability]") {
    manual_clock clock;
    gate<manual_clock> g(exact(), clock);
    auto t = g.acquire({1'000, 0});  // the bucket is empty
    t.complete(200, usage{int64_max, int64_max});  // total saturates: an overrun, charged as 60,000
    CHECK_FALSE(g.try_acquire({1, 0}));
    const auto start = clock.now();
    auto next = g.acquire({1'000, 0});  // 0 − 60,000 left: 61,000 tokens to refill at 1,000/s
    CHECK(clock.now() - start == 61s);
    CHECK(g.snapshot().tokens_used == int64_max);
}

TEST_CASE("a usage with a negative count is ignored, not refunded", "[gate][reliability]") {
    manual_clock clock;
    gate<manual_clock> g(exact(), clock);
    auto t = g.acquire({1'000, 0});  // the bucket is empty
    t.complete(200, usage{-500, 0});  // nonsense: treated as no usage reported, the estimate stays charged
    CHECK_FALSE(g.try_acquire({1, 0}));
    const auto s = g.snapshot();
    CHECK(s.tokens_used == 0);
    CHECK(s.tokens_refunded == 0);
}

TEST_CASE("a remaining count of INT64_MAX in the headers while in debt changes nothing", "[gate][reliability]") {
    manual_clock clock;
    gate<manual_clock> g(exact(), clock);
    auto t = g.acquire({3'000, 0});  // 1,000 in the bucket, 2,000 in debt
    t.complete(200, headers{{"x-ratelimit-remaining-tokens", "9223372036854775807"}});
    const auto start = clock.now();
    auto next = g.acquire({1'000, 0});  // −2,000 left: 3,000 tokens to refill at 1,000/s
    CHECK(clock.now() - start == 3s);
}

// ---- hostile retry-after ------------------------------------------------------------

TEST_CASE("a hostile retry-after pauses the gate at most max_pause, 10 min by default", "[gate][reliability]") {
    manual_clock clock;
    gate<manual_clock> g(exact(), clock);
    auto t = g.acquire({10, 0});
    t.complete(429, headers{{"retry-after", "9000000000"}});  // 285 years
    CHECK(g.paused_until() == clock.now() + 10min);
    CHECK(g.snapshot().paused_for == 10min);
}

TEST_CASE("max_pause caps every 429 pause, also the reset of an exhausted limit", "[gate][reliability]") {
    manual_clock clock;
    auto c = exact();
    c.max_pause = 30s;
    gate<manual_clock> g(c, clock);
    auto a = g.acquire({10, 0});
    a.complete(429, headers{{"retry-after", "45"}});
    CHECK(g.paused_until() == clock.now() + 30s);
    clock.advance(30s);
    auto b = g.acquire({10, 0});
    b.complete(429, headers{{"x-ratelimit-remaining-requests", "0"}, {"x-ratelimit-reset-requests", "2h"}});
    CHECK(g.paused_until() == clock.now() + 30s);
    clock.advance(30s);
    CHECK(g.try_acquire({10, 0}));
}

TEST_CASE("max_pause must be positive and the error names it", "[gate][reliability]") {
    auto message_of = [](std::chrono::nanoseconds pause) -> std::string {
        gate_config c = exact();
        c.max_pause = pause;
        try {
            gate<manual_clock> g(c);
        } catch (const std::invalid_argument& e) {
            return e.what();
        }
        return "";
    };
    CHECK_THAT(message_of(0s), Catch::Contains("max_pause"));
    CHECK_THAT(message_of(-1s), Catch::Contains("max_pause"));
    CHECK(message_of(1ns).empty());
}

// ---- 6. waits without a deadline ----------------------------------------------------

TEST_CASE("try_acquire_until(time_point::max()) on a manual clock waits for the quota, not to the end of time", "[gate][reliability]") {
    manual_clock clock;
    gate<manual_clock> g(exact(600, 60'000, 1), clock);
    auto all = g.try_acquire({1'000, 0});
    REQUIRE(all);
    all->complete(200);  // the slot is free again, the tokens stay charged
    const auto start = clock.now();
    auto t = g.try_acquire_until({500, 0}, manual_clock::time_point::max());
    CHECK(t);
    CHECK(clock.now() - start == 500ms);  // 500 tokens at 1,000/s
}

TEST_CASE("try_acquire_until(time_point::max()) waits for a busy slot without moving a manual clock to the end of time", "[gate][reliability][thread]") {
    // The only slot is held; a second thread waits for it with no deadline and
    // gets it when the holder completes. A timed wait to time_point::max() on a
    // manual clock would sleep the clock to the end of time and give up.
    manual_clock clock;
    gate<manual_clock> g(exact(600, 60'000, 1), clock);
    auto held = g.try_acquire({10, 0});
    REQUIRE(held);
    const auto start = clock.now();
    watchdog guard(60s, "a waiter for a slot with no deadline");
    std::atomic<bool> started{false};
    std::optional<gate<manual_clock>::ticket> second;
    std::thread waiter([&] {
        started.store(true);
        second = g.try_acquire_until({10, 0}, manual_clock::time_point::max());
    });
    while (!started.load()) std::this_thread::yield();
    held->complete(200);  // before or after the waiter queues: either way it must get the slot
    waiter.join();
    CHECK(second);
    CHECK(clock.now() == start);
}

TEMPLATE_TEST_CASE("on a chrono clock other than steady/system, a waiter behind the head with no deadline sleeps until woken",
                   "[gate][reliability][thread]", late_epoch_clock, watched_tsc_clock) {
    // 60 tokens per minute over 1 min sub-windows: a 60-token bucket refilled at 1 token/s.
    using clock_type = TestType;
    using ticket = typename gate<clock_type>::ticket;
    static_assert(std::chrono::is_clock_v<clock_type>);
    clock_type::reset();
    gate_config c = exact(600, 60);
    c.burst_window = 1min;
    gate<clock_type> g(c);
    auto all = g.try_acquire({0, 60});  // the whole bucket
    REQUIRE(all);
    const bool behind_with_acquire = GENERATE(true, false);
    CAPTURE(behind_with_acquire);

    // The watchdog fires at 20 s, before the 30 s refill could serve anyone:
    // only the completion below can, so a waiter that never wakes fails the test.
    watchdog guard(20s, "waiters in the gate's line");
    std::optional<ticket> head;
    std::optional<ticket> behind;
    // A caller's first clock read is in the gate's line, under the gate's
    // mutex, which it holds until it sleeps: once the read is seen,
    // snapshot() (which takes that mutex) returns only after it sleeps.
    const auto wait_until_asleep_in_line = [&g](int i) {
        while (clock_type::reads[i].load() == 0) std::this_thread::yield();
        (void)g.snapshot();
    };
    std::thread first([&] {
        clock_type::watched[0].store(std::this_thread::get_id());
        head.emplace(g.acquire({30, 0}));  // alone it waits 30 s for the refill
    });
    wait_until_asleep_in_line(0);
    std::thread second([&] {
        clock_type::watched[1].store(std::this_thread::get_id());
        if (behind_with_acquire) {
            behind.emplace(g.acquire({30, 0}));  // no max_wait: no deadline
        } else {
            behind = g.try_acquire_until({30, 0}, clock_type::time_point::max());
        }
    });
    wait_until_asleep_in_line(1);
    const long reads_before = clock_type::reads[1].load();
    all->complete(200, usage{0, 0});  // 60 tokens back: 30 for the head, then 30 for the one behind
    first.join();
    second.join();
    CHECK(head);
    CHECK(behind);
    // A waiter that slept reads the clock a few times after waking; one spinning
    // on a wait that times out at once reads it on every turn.
    CHECK(reads_before < 20);
    CHECK(clock_type::reads[1].load() - reads_before < 50);
}

// ---- hostile limits ----------------------------------------------------------------

TEST_CASE("a learned limit too large for any bucket is ignored, and complete does not throw", "[gate][reliability]") {
    manual_clock clock;
    gate_config c;
    c.headroom = 1.0;
    c.burst_window = 1min;  // a bucket of a whole minute's limit: INT64_MAX tokens cannot be held (2^59 at most)
    gate<manual_clock> g(c, clock);
    auto t = g.acquire({10, 0});
    CHECK_NOTHROW(t.complete(200, headers{{"x-ratelimit-limit-tokens", "9223372036854775807"},
                                          {"x-ratelimit-limit-requests", "60"}}));
    const auto s = g.snapshot();
    CHECK(s.tokens_per_minute == 0);      // still unknown
    CHECK(s.requests_per_minute == 60);   // the rest of the headers was followed
    CHECK(s.in_flight == 0);
}

TEST_CASE("a configured limit too large for any bucket is rejected naming the field", "[gate][reliability]") {
    gate_config c;
    c.burst_window = 1min;
    c.tokens_per_minute = std::int64_t{1} << 62;  // 0.98 · 2^62 per 1 min bucket > 2^59
    std::string message;
    try {
        gate<manual_clock> g(c);
    } catch (const std::invalid_argument& e) {
        message = e.what();
    }
    CHECK_THAT(message, Catch::Contains("tokens_per_minute"));
}

// ---------------------------------------------------------------------------
// close(): a stopping program wakes every waiter (issue 14 item 3)
// ---------------------------------------------------------------------------

TEST_CASE("a closed gate refuses every call at once: acquire and reserve throw gate_closed, try_* give nothing",
          "[gate][reliability][close]") {
    manual_clock clock;
    gate<manual_clock> g(exact(600, 60'000, 2), clock);
    auto held = g.acquire({10, 10});
    CHECK_FALSE(g.closed());
    g.close();
    g.close();  // idempotent
    CHECK(g.closed());
    const auto before = clock.now();
    CHECK_THROWS_AS(g.acquire({10, 10}), ratelimit::llm::gate_closed);
    CHECK_THROWS_AS(g.reserve({10, 10}), ratelimit::llm::gate_closed);
    CHECK_FALSE(g.try_acquire({10, 10}));
    CHECK_FALSE(g.try_acquire_until({10, 10}, clock.now() + 5s));
    CHECK(clock.now() == before);  // nobody slept
    // A ticket handed out before the close still settles.
    held.complete(200, usage{10, 5});
    const auto s = g.snapshot();
    CHECK(s.completed == 1);
    CHECK(s.in_flight == 0);
    CHECK(s.waiting == 0);
}

TEST_CASE("ticket::wait on a closed gate throws gate_closed instead of sleeping to ready_at or through a pause",
          "[gate][reliability][close]") {
    manual_clock clock;
    gate<manual_clock> g(exact(60, 60'000), clock);  // a bucket of 1 request, 1 per second
    auto first = g.acquire({1, 1});
    auto second = g.reserve({1, 1});  // the bucket is empty: ready 1 s from now
    CHECK(second.ready_at() == clock.now() + 1s);
    first.complete(429, headers{{"retry-after", "20"}});  // and a 20 s pause on top
    g.close();
    const auto before = clock.now();
    CHECK_THROWS_AS(second.wait(), ratelimit::llm::gate_closed);
    CHECK(clock.now() == before);  // a manual clock would have moved 20 s had it slept
    second.complete(200);
    CHECK(g.snapshot().completed == 1);
}

TEST_CASE("ticket::wait on an open gate still sleeps through a pause, and a ready ticket does not throw after close",
          "[gate][reliability][close]") {
    manual_clock clock;
    gate<manual_clock> g(exact(60, 60'000), clock);
    auto first = g.acquire({1, 1});
    auto second = g.reserve({1, 1});
    first.complete(429, headers{{"retry-after", "20"}});
    const auto start = clock.now();
    second.wait();
    CHECK(clock.now() - start == 20s);
    g.close();
    CHECK_NOTHROW(second.wait());  // nothing left to wait for
}

TEST_CASE("close wakes at once the callers waiting for a slot, in line during a 429 pause and in ticket::wait",
          "[gate][reliability][close][thread]") {
    using steady = std::chrono::steady_clock;
    gate<steady> slots(exact(600'000, 60'000'000, 1));  // one slot
    auto held = slots.acquire({1, 1});
    gate<steady> paused(exact(60, 60'000));  // a bucket of 1 request
    auto throttled = paused.acquire({1, 1});
    throttled.complete(429, headers{{"retry-after", "120"}});  // a 2-minute pause
    auto reserved = paused.reserve({1, 1});                     // ready after the pause

    std::atomic<int> closed_seen{0};
    std::atomic<int> other{0};
    const auto expect_closed = [&](auto call) {
        return [&, call] {
            try {
                call();
                ++other;
            } catch (const ratelimit::llm::gate_closed&) {
                ++closed_seen;
            } catch (...) {
                ++other;
            }
        };
    };
    std::atomic<int> try_gave_nothing{0};
    std::vector<std::thread> threads;
    threads.emplace_back(expect_closed([&] { (void)slots.acquire({1, 1}); }));   // waits for the slot
    threads.emplace_back(expect_closed([&] { (void)slots.reserve({1, 1}); }));   // waits for the slot too
    threads.emplace_back(expect_closed([&] { (void)paused.acquire({1, 1}); }));  // head of the line, paused
    threads.emplace_back(expect_closed([&] { (void)paused.acquire({1, 1}); }));  // behind it
    threads.emplace_back(expect_closed([&] { reserved.wait(); }));               // in ticket::wait
    threads.emplace_back([&] {
        if (!paused.try_acquire_until({1, 1}, steady::now() + 10min)) ++try_gave_nothing;
    });
    // Every caller is blocked before the close (a bounded wait, not a timing assertion).
    const auto give_up = steady::now() + 20s;
    while ((slots.snapshot().waiting < 2 || paused.snapshot().waiting < 4) && steady::now() < give_up) {
        std::this_thread::sleep_for(1ms);
    }
    REQUIRE(slots.snapshot().waiting == 2);
    REQUIRE(paused.snapshot().waiting == 4);

    const auto closed_at = steady::now();
    slots.close();
    paused.close();
    for (std::thread& t : threads) t.join();
    // Woken, not released by the pause's end 2 minutes on (the bound is loose on purpose).
    CHECK(steady::now() - closed_at < 60s);
    CHECK(closed_seen == 5);
    CHECK(other == 0);
    CHECK(try_gave_nothing == 1);
    CHECK(slots.snapshot().waiting == 0);
    CHECK(paused.snapshot().waiting == 0);
    held.complete(200);
    reserved.complete(200);
}
