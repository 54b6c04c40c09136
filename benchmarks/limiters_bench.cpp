// The allow path and the deny path of try_acquire for every in-process
// limiter, on steady_clock, with 1, 2 and 4 threads sharing one limiter.
// Allow paths use limits no run can exhaust; deny paths use a limiter drained
// once and refilled (at most) once an hour. The grant_ratio counter shows
// which path was measured.
#include <ratelimit/adaptive_limiter.hpp>
#include <ratelimit/all_of.hpp>
#include <ratelimit/concurrency_limiter.hpp>
#include <ratelimit/dual_bucket.hpp>
#include <ratelimit/fixed_window.hpp>
#include <ratelimit/header_limiter.hpp>
#include <ratelimit/leaky_bucket.hpp>
#include <ratelimit/sliding_window_counter.hpp>
#include <ratelimit/sliding_window_log.hpp>
#include <ratelimit/token_bucket.hpp>

#include "bench_support.hpp"

#include <benchmark/benchmark.h>

#include <chrono>
#include <cstdint>

namespace {

using namespace std::chrono_literals;
using ratelimit::rate;
using ratelimit_bench::drain;
using ratelimit_bench::measure;

constexpr double unlimited_per_second = 1e12;
constexpr std::int64_t huge_burst = 1'000'000'000;

// ---- dual_bucket: 1 request and n tokens, all or nothing

void dual_bucket_allow(benchmark::State& state) {
    static ratelimit::dual_bucket<> limiter(rate::per_second(unlimited_per_second), huge_burst,
                                            rate::per_second(unlimited_per_second), huge_burst);
    measure(state, [] { return limiter.try_acquire(1); });
}
BENCHMARK(dual_bucket_allow)->ThreadRange(1, 4);

// Requests plentiful, tokens exhausted.
void dual_bucket_deny(benchmark::State& state) {
    static ratelimit::dual_bucket<> limiter(rate::per_second(unlimited_per_second), huge_burst, rate::per_hour(1), 1);
    static const bool empty = drain(limiter);
    benchmark::DoNotOptimize(empty);
    measure(state, [] { return limiter.try_acquire(1); });
}
BENCHMARK(dual_bucket_deny)->ThreadRange(1, 4);

// ---- leaky_bucket: slots 1/16 ns apart (the finest tick), so each call finds its slot due

void leaky_bucket_allow(benchmark::State& state) {
    static ratelimit::leaky_bucket<> limiter(rate::per_second(unlimited_per_second), 1'000'000);
    measure(state, [] { return limiter.try_acquire(1); });
}
BENCHMARK(leaky_bucket_allow)->ThreadRange(1, 4);

// One slot an hour, no queue: after the first grant every call is refused.
void leaky_bucket_deny(benchmark::State& state) {
    static ratelimit::leaky_bucket<> limiter(rate::per_hour(1), 0);
    static const bool empty = drain(limiter);
    benchmark::DoNotOptimize(empty);
    measure(state, [] { return limiter.try_acquire(1); });
}
BENCHMARK(leaky_bucket_deny)->ThreadRange(1, 4);

// ---- fixed_window

void fixed_window_allow(benchmark::State& state) {
    static ratelimit::fixed_window<> limiter(std::int64_t{1} << 30, 10s);
    measure(state, [] { return limiter.try_acquire(1); });
}
BENCHMARK(fixed_window_allow)->ThreadRange(1, 4);

void fixed_window_deny(benchmark::State& state) {
    static ratelimit::fixed_window<> limiter(1, 1h);
    static const bool empty = drain(limiter);
    benchmark::DoNotOptimize(empty);
    measure(state, [] { return limiter.try_acquire(1); });
}
BENCHMARK(fixed_window_deny)->ThreadRange(1, 4);

// ---- sliding_window_log: 2^20 slots (8 MiB) per millisecond, more than any thread can take

void sliding_window_log_allow(benchmark::State& state) {
    static ratelimit::sliding_window_log<> limiter(std::int64_t{1} << 20, 1ms);
    measure(state, [] { return limiter.try_acquire(1); });
}
BENCHMARK(sliding_window_log_allow)->ThreadRange(1, 4);

void sliding_window_log_deny(benchmark::State& state) {
    static ratelimit::sliding_window_log<> limiter(1, 1h);
    static const bool empty = drain(limiter);
    benchmark::DoNotOptimize(empty);
    measure(state, [] { return limiter.try_acquire(1); });
}
BENCHMARK(sliding_window_log_deny)->ThreadRange(1, 4);

// ---- sliding_window_counter: the largest limit over 100 ms

void sliding_window_counter_allow(benchmark::State& state) {
    static ratelimit::sliding_window_counter<> limiter(ratelimit::sliding_window_counter<>::max_limit, 100ms);
    measure(state, [] { return limiter.try_acquire(1); });
}
BENCHMARK(sliding_window_counter_allow)->ThreadRange(1, 4);

void sliding_window_counter_deny(benchmark::State& state) {
    static ratelimit::sliding_window_counter<> limiter(1, 1h);
    static const bool empty = drain(limiter);
    benchmark::DoNotOptimize(empty);
    measure(state, [] { return limiter.try_acquire(1); });
}
BENCHMARK(sliding_window_counter_deny)->ThreadRange(1, 4);

// ---- concurrency_limiter: a try_acquire and release pair per iteration

void concurrency_limiter_allow(benchmark::State& state) {
    static ratelimit::concurrency_limiter<> limiter(1000);
    measure(state, [] {
        const bool ok = limiter.try_acquire(1);
        if (ok) limiter.release(1);
        return ok;
    });
}
BENCHMARK(concurrency_limiter_allow)->ThreadRange(1, 4);

// The one slot is held for the whole run.
void concurrency_limiter_deny(benchmark::State& state) {
    static ratelimit::concurrency_limiter<> limiter(1);
    static const bool full = drain(limiter);
    benchmark::DoNotOptimize(full);
    measure(state, [] { return limiter.try_acquire(1); });
}
BENCHMARK(concurrency_limiter_deny)->ThreadRange(1, 4);

// ---- all_of two token buckets

void all_of_allow(benchmark::State& state) {
    static ratelimit::token_bucket<> per_second(rate::per_second(unlimited_per_second), huge_burst);
    static ratelimit::token_bucket<> per_minute(rate::per_minute(60 * unlimited_per_second), huge_burst);
    static auto both = ratelimit::all_of(per_second, per_minute);
    measure(state, [] { return both.try_acquire(1); });
}
BENCHMARK(all_of_allow)->ThreadRange(1, 4);

// The first part would grant; the second is empty.
void all_of_deny(benchmark::State& state) {
    static ratelimit::token_bucket<> plenty(rate::per_second(unlimited_per_second), huge_burst);
    static ratelimit::token_bucket<> empty_bucket(rate::per_hour(1), 1);
    static const bool empty = drain(empty_bucket);
    benchmark::DoNotOptimize(empty);
    static auto both = ratelimit::all_of(plenty, empty_bucket);
    measure(state, [] { return both.try_acquire(1); });
}
BENCHMARK(all_of_deny)->ThreadRange(1, 4);

// ---- adaptive_limiter

ratelimit::adaptive_config adaptive_at(rate r, std::int64_t capacity) {
    ratelimit::adaptive_config cfg;
    cfg.initial_rate = r;
    cfg.min_rate = r;
    cfg.max_rate = r;
    cfg.capacity = capacity;
    return cfg;
}

void adaptive_limiter_allow(benchmark::State& state) {
    static ratelimit::adaptive_limiter<> limiter(adaptive_at(rate::per_second(unlimited_per_second), huge_burst));
    measure(state, [] { return limiter.try_acquire(1); });
}
BENCHMARK(adaptive_limiter_allow)->ThreadRange(1, 4);

void adaptive_limiter_deny(benchmark::State& state) {
    static ratelimit::adaptive_limiter<> limiter(adaptive_at(rate::per_hour(1), 1));
    static const bool empty = drain(limiter);
    benchmark::DoNotOptimize(empty);
    measure(state, [] { return limiter.try_acquire(1); });
}
BENCHMARK(adaptive_limiter_deny)->ThreadRange(1, 4);

// ---- header_limiter: following a server that reported `remaining` for the next hour

ratelimit::quota_snapshot remaining_for_an_hour(std::int64_t remaining) {
    ratelimit::quota_snapshot snapshot;
    snapshot.requests = ratelimit::quota_state{std::int64_t{1} << 62, remaining, std::chrono::nanoseconds{1h}};
    return snapshot;
}

void header_limiter_allow(benchmark::State& state) {
    static ratelimit::header_limiter<> limiter;
    static const bool told = (limiter.update(remaining_for_an_hour(std::int64_t{1} << 62)), true);
    benchmark::DoNotOptimize(told);
    measure(state, [] { return limiter.try_acquire(1); });
}
BENCHMARK(header_limiter_allow)->ThreadRange(1, 4);

void header_limiter_deny(benchmark::State& state) {
    static ratelimit::header_limiter<> limiter;
    static const bool told = (limiter.update(remaining_for_an_hour(0)), true);
    benchmark::DoNotOptimize(told);
    measure(state, [] { return limiter.try_acquire(1); });
}
BENCHMARK(header_limiter_deny)->ThreadRange(1, 4);

}  // namespace
