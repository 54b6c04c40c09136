// concurrency_limiter: the counting contract, release errors, permits (RAII,
// moves) and the first come, first served queue, on manual_clock.

#include <ratelimit/concurrency_limiter.hpp>
#include <ratelimit/tsc_clock.hpp>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <chrono>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>

#include "support/catch.hpp"

using namespace std::chrono_literals;
using ratelimit::manual_clock;
using limiter_type = ratelimit::concurrency_limiter<manual_clock>;

namespace {

// Spins (really sleeping, bounded) until `done()`; false after 10 s.
template <class Predicate>
bool eventually(Predicate done) {
    const auto give_up = std::chrono::steady_clock::now() + 10s;
    while (!done()) {
        if (std::chrono::steady_clock::now() > give_up) return false;
        std::this_thread::sleep_for(1ms);
    }
    return true;
}

}  // namespace

TEST_CASE("a concurrency limiter meets the limiter concept", "[concurrency_limiter]") {
    STATIC_REQUIRE(ratelimit::limiter<limiter_type>);
    STATIC_REQUIRE(ratelimit::limiter<ratelimit::concurrency_limiter<>>);
    STATIC_REQUIRE_FALSE(std::is_copy_constructible_v<limiter_type::permit>);
    STATIC_REQUIRE_FALSE(std::is_copy_assignable_v<limiter_type::permit>);
    STATIC_REQUIRE(std::is_nothrow_move_constructible_v<limiter_type::permit>);
}

TEST_CASE("max_concurrent must be positive and the error names it", "[concurrency_limiter]") {
    CHECK_THROWS_AS(limiter_type(0), std::invalid_argument);
    try {
        limiter_type bad(-3);
        FAIL("no exception");
    } catch (const std::invalid_argument& e) {
        const std::string what = e.what();
        CHECK(what.find("max_concurrent") != std::string::npos);
        CHECK(what.find("-3") != std::string::npos);
    }
}

TEST_CASE("at most max_concurrent permits are held at once", "[concurrency_limiter]") {
    manual_clock clock;
    limiter_type limiter(3, clock);
    CHECK(limiter.try_acquire(2));
    CHECK(limiter.try_acquire(1));  // 2 + 1 == 3
    CHECK_FALSE(limiter.try_acquire(1));
    CHECK(limiter.in_use() == 3);
    CHECK(limiter.available() == 0);
    CHECK(limiter.max_concurrent() == 3);
    CHECK(limiter.capacity() == 3);
}

TEST_CASE("time alone gives nothing back; release does", "[concurrency_limiter]") {
    manual_clock clock;
    limiter_type limiter(3, clock);
    REQUIRE(limiter.try_acquire(3));
    clock.advance(1h);
    CHECK_FALSE(limiter.try_acquire(1));
    limiter.release(2);
    CHECK(limiter.in_use() == 1);
    CHECK(limiter.try_acquire(2));  // 1 + 2 == 3
    CHECK_FALSE(limiter.try_acquire(1));
}

TEST_CASE("releasing more than is in use throws logic_error naming both numbers and changes nothing",
          "[concurrency_limiter]") {
    manual_clock clock;
    limiter_type limiter(5, clock);
    REQUIRE(limiter.try_acquire(2));
    try {
        limiter.release(3);
        FAIL("no exception");
    } catch (const std::logic_error& e) {
        const std::string what = e.what();
        CHECK(what.find("n = 3") != std::string::npos);
        CHECK(what.find("the 2 permits in use") != std::string::npos);
    }
    CHECK(limiter.in_use() == 2);
    limiter.release(2);
    CHECK(limiter.in_use() == 0);
    CHECK_THROWS_AS(limiter.release(1), std::logic_error);  // nothing held at all
}

TEST_CASE("release(0) does nothing and a negative release throws invalid_argument", "[concurrency_limiter]") {
    manual_clock clock;
    limiter_type limiter(2, clock);
    REQUIRE(limiter.try_acquire(1));
    limiter.release(0);
    CHECK(limiter.in_use() == 1);
    CHECK_THROWS_AS(limiter.release(-1), std::invalid_argument);
    CHECK(limiter.in_use() == 1);
}

TEST_CASE("n above max_concurrent is refused at once and acquire and lease throw capacity_exceeded",
          "[concurrency_limiter]") {
    manual_clock clock;
    limiter_type limiter(4, clock);
    const auto before = clock.now();
    CHECK_FALSE(limiter.try_acquire(5));
    CHECK_FALSE(limiter.try_acquire_for(5, 1h));
    CHECK_FALSE(limiter.try_acquire_until(5, before + 1h));
    CHECK_THROWS_AS(limiter.acquire(5), ratelimit::capacity_exceeded);
    CHECK_THROWS_AS((void)limiter.lease(5), ratelimit::capacity_exceeded);
    CHECK_FALSE(limiter.try_lease(5).has_value());
    CHECK(clock.now() == before);
    CHECK(limiter.in_use() == 0);
}

TEST_CASE("a timed wait on an exhausted limiter sleeps the manual clock to its deadline and fails",
          "[concurrency_limiter]") {
    manual_clock clock;
    limiter_type limiter(2, clock);
    REQUIRE(limiter.try_acquire(2));
    const auto start = clock.now();
    CHECK_FALSE(limiter.try_acquire_for(1, 250ms));
    CHECK(clock.now() - start == 250ms);  // slept to the deadline, on the limiter's clock
    CHECK_FALSE(limiter.try_acquire_until(1, start + 1s));
    CHECK(clock.now() - start == 1s);
    CHECK(limiter.in_use() == 2);
    CHECK(limiter.waiting() == 0);  // the waiter left the line
}

TEST_CASE("a timed wait with room succeeds at once without moving the clock", "[concurrency_limiter]") {
    manual_clock clock;
    limiter_type limiter(2, clock);
    const auto start = clock.now();
    CHECK(limiter.try_acquire_for(2, 1s));
    CHECK(clock.now() == start);
    CHECK(limiter.in_use() == 2);
}

TEST_CASE("a permit releases its permits when destroyed", "[concurrency_limiter]") {
    manual_clock clock;
    limiter_type limiter(3, clock);
    {
        const limiter_type::permit p = limiter.lease(2);
        CHECK(p.count() == 2);
        CHECK(static_cast<bool>(p));
        CHECK(limiter.in_use() == 2);
    }
    CHECK(limiter.in_use() == 0);
}

TEST_CASE("a permit released early gives back once", "[concurrency_limiter]") {
    manual_clock clock;
    limiter_type limiter(3, clock);
    REQUIRE(limiter.try_acquire(1));  // held by hand, not by the permit
    {
        limiter_type::permit p = limiter.lease(2);
        p.release();
        CHECK(p.count() == 0);
        CHECK_FALSE(static_cast<bool>(p));
        CHECK(limiter.in_use() == 1);
        p.release();  // does nothing the second time
        CHECK(limiter.in_use() == 1);
    }
    CHECK(limiter.in_use() == 1);  // nor when destroyed
}

TEST_CASE("moving a permit moves ownership; only the last owner releases", "[concurrency_limiter]") {
    manual_clock clock;
    limiter_type limiter(3, clock);
    limiter_type::permit first = limiter.lease(2);
    {
        limiter_type::permit second = std::move(first);
        CHECK(first.count() == 0);  // NOLINT(bugprone-use-after-move): moved-from state is specified
        CHECK(second.count() == 2);
        CHECK(limiter.in_use() == 2);
        first = limiter_type::permit{};  // destroying or resetting the moved-from one releases nothing
        CHECK(limiter.in_use() == 2);
    }
    CHECK(limiter.in_use() == 0);
}

TEST_CASE("move-assigning a permit releases what the target held", "[concurrency_limiter]") {
    manual_clock clock;
    limiter_type limiter(5, clock);
    limiter_type::permit big = limiter.lease(3);
    limiter_type::permit small = limiter.lease(1);
    REQUIRE(limiter.in_use() == 4);
    big = std::move(small);  // the 3 go back, the 1 stays held by `big`
    CHECK(limiter.in_use() == 1);
    CHECK(big.count() == 1);
}

TEST_CASE("try_lease gives a permit when there is room and nothing when there is not", "[concurrency_limiter]") {
    manual_clock clock;
    limiter_type limiter(2, clock);
    std::optional<limiter_type::permit> p = limiter.try_lease(2);
    REQUIRE(p.has_value());
    CHECK(p->count() == 2);
    CHECK_FALSE(limiter.try_lease(1).has_value());
    const auto start = clock.now();
    CHECK_FALSE(limiter.try_lease_for(1, 10ms).has_value());
    CHECK(clock.now() - start == 10ms);
    p.reset();
    CHECK(limiter.in_use() == 0);
    CHECK(limiter.try_lease_until(1, clock.now()).has_value());  // the temporary released it again
    CHECK(limiter.in_use() == 0);
}

TEST_CASE("releasing a permit's permits by hand makes the permit's own release throw", "[concurrency_limiter]") {
    manual_clock clock;
    limiter_type limiter(2, clock);
    limiter_type::permit p = limiter.lease(2);
    limiter.release(2);  // a bug: the permit still believes it holds them
    CHECK_THROWS_AS(p.release(), std::logic_error);
    CHECK(p.count() == 0);  // and it no longer does; its destructor does nothing
}

TEST_CASE("acquire blocks until another thread releases and returns the time waited on the clock",
          "[concurrency_limiter]") {
    manual_clock clock;
    limiter_type limiter(1, clock);
    REQUIRE(limiter.try_acquire(1));
    std::atomic<bool> done{false};
    limiter_type::duration waited{};
    std::thread waiter([&] {
        waited = limiter.acquire(1);
        done = true;
    });
    REQUIRE(eventually([&] { return limiter.waiting() == 1; }));
    CHECK_FALSE(done.load());
    clock.advance(5s);  // simulated time passes while it waits
    limiter.release(1);
    REQUIRE(eventually([&] { return done.load(); }));
    waiter.join();
    CHECK(waited == 5s);
    CHECK(limiter.in_use() == 1);  // handed over, not freed
    CHECK(limiter.waiting() == 0);
}

TEST_CASE("a waiter is never overtaken by a later, smaller request", "[concurrency_limiter]") {
    manual_clock clock;
    limiter_type limiter(4, clock);
    REQUIRE(limiter.try_acquire(4));
    std::atomic<int> big_done{0};
    std::atomic<int> small_done{0};
    std::thread big([&] {
        (void)limiter.acquire(3);
        big_done = 1;
    });
    REQUIRE(eventually([&] { return limiter.waiting() == 1; }));
    std::thread small([&] {
        (void)limiter.acquire(1);
        small_done = 1;
    });
    REQUIRE(eventually([&] { return limiter.waiting() == 2; }));

    limiter.release(1);  // in use 3: room for the small one, but the big one is first
    CHECK(limiter.in_use() == 3);
    CHECK_FALSE(limiter.try_acquire(1));  // nor may a newcomer jump the line
    CHECK(limiter.waiting() == 2);

    limiter.release(2);  // in use 1: the big one fits (1 + 3 == 4), the small one no longer does
    REQUIRE(eventually([&] { return big_done.load() == 1; }));  // (a failure here aborts: no hang)
    big.join();
    CHECK(limiter.in_use() == 4);
    CHECK(small_done.load() == 0);
    CHECK(limiter.waiting() == 1);

    limiter.release(1);
    REQUIRE(eventually([&] { return small_done.load() == 1; }));
    small.join();
    CHECK(limiter.in_use() == 4);
    CHECK(limiter.waiting() == 0);
    CHECK_FALSE(limiter.try_acquire(1));
    limiter.release(4);
    CHECK(limiter.try_acquire(1));  // the line is empty again: try_acquire works
}

TEST_CASE("one release hands permits to every waiter at the front that fits", "[concurrency_limiter]") {
    manual_clock clock;
    limiter_type limiter(3, clock);
    REQUIRE(limiter.try_acquire(3));
    std::atomic<int> done{0};
    std::thread a([&] {
        (void)limiter.acquire(1);
        ++done;
    });
    REQUIRE(eventually([&] { return limiter.waiting() == 1; }));
    std::thread b([&] {
        (void)limiter.acquire(2);
        ++done;
    });
    REQUIRE(eventually([&] { return limiter.waiting() == 2; }));
    limiter.release(3);  // 1 + 2 == 3: both fit, in order
    REQUIRE(eventually([&] { return done.load() == 2; }));
    a.join();
    b.join();
    CHECK(limiter.in_use() == 3);
    CHECK(limiter.waiting() == 0);
}

TEST_CASE("a timed waiter on the manual clock takes permits released while it was in line",
          "[concurrency_limiter]") {
    manual_clock clock;
    limiter_type limiter(1, clock);
    REQUIRE(limiter.try_acquire(1));
    // A blocked acquire sits in line first; the release goes to it, not to the timed caller.
    std::thread first([&] { (void)limiter.acquire(1); });
    REQUIRE(eventually([&] { return limiter.waiting() == 1; }));
    limiter.release(1);
    first.join();
    const auto start = clock.now();
    CHECK_FALSE(limiter.try_acquire_for(1, 2s));
    CHECK(clock.now() - start == 2s);
    limiter.release(1);
    CHECK(limiter.try_acquire_for(1, 2s));
    CHECK(clock.now() - start == 2s);  // granted at once: no sleep
}

namespace {

/// A std::chrono clock other than steady/system whose epoch is its start, so
/// time_point::max() is far from now (as with tsc_clock): libstdc++'s
/// condition_variable::wait_until converts such a deadline through
/// steady_clock and overflows.
struct fresh_epoch_clock {
    using rep = std::int64_t;
    using period = std::nano;
    using duration = std::chrono::nanoseconds;
    using time_point = std::chrono::time_point<fresh_epoch_clock>;
    [[maybe_unused]] static constexpr bool is_steady = true;
    static time_point now() noexcept {
        static const auto start = std::chrono::steady_clock::now();
        return time_point{std::chrono::steady_clock::now() - start};
    }
};

/// Runs `wait` on a thread and releases one permit once it waits; true when
/// the waiter took it. A waiter that spins holding the mutex makes release()
/// block: after 20 s that is reported as a failure (and the process exits,
/// since the stuck thread cannot be joined).
template <class Limiter, class Wait>
bool released_waiter_takes_the_permit(Limiter& limiter, Wait wait) {
    std::atomic<bool> done{false};
    std::atomic<bool> granted{false};
    std::thread waiter([&] {
        granted = wait();
        done = true;
    });
    std::atomic<bool> released{false};
    std::thread watchdog([&] {
        const auto give_up = std::chrono::steady_clock::now() + 20s;
        while (!done.load()) {
            if (std::chrono::steady_clock::now() > give_up) {
                std::fprintf(stderr, "a waiter to time_point::max() never returned (released: %d)\n",
                             static_cast<int>(released.load()));
                std::_Exit(1);
            }
            std::this_thread::sleep_for(1ms);
        }
    });
    const bool queued = eventually([&] { return limiter.waiting() == 1; });
    limiter.release(1);
    released = true;
    waiter.join();
    watchdog.join();
    return queued && granted.load();
}

}  // namespace

TEMPLATE_TEST_CASE("a wait to time_point::max() on any clock is a plain wait that a release ends",
                   "[concurrency_limiter]", fresh_epoch_clock, ratelimit::tsc_clock, std::chrono::steady_clock) {
    ratelimit::concurrency_limiter<TestType> limiter(1);
    REQUIRE(limiter.try_acquire(1));
    CHECK(released_waiter_takes_the_permit(limiter, [&] { return limiter.try_acquire_until(1, TestType::time_point::max()); }));
    CHECK(limiter.in_use() == 1);
    CHECK(released_waiter_takes_the_permit(limiter, [&] { return limiter.try_acquire_for(1, TestType::duration::max()); }));
    CHECK(limiter.in_use() == 1);
}

TEST_CASE("a wait to time_point::max() on a manual clock waits for a release instead of ending time",
          "[concurrency_limiter]") {
    manual_clock clock;
    limiter_type limiter(1, clock);
    REQUIRE(limiter.try_acquire(1));
    CHECK(released_waiter_takes_the_permit(limiter, [&] { return limiter.try_acquire_until(1, manual_clock::time_point::max()); }));
    CHECK(clock.now() == manual_clock::time_point{});
}
