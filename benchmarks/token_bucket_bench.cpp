// The physical floor (reading steady_clock, and reading it plus one
// compare-and-swap) and token_bucket against it, in the same binary and run.
// Targets (checked by benchmarks/run.sh's table, never asserted): token_bucket's
// allow path within 1.5x of now()+CAS uncontended; its deny path within now()
// plus a few ns.
#include <ratelimit/token_bucket.hpp>
#include <ratelimit/tsc_clock.hpp>

#include "bench_support.hpp"

#include <benchmark/benchmark.h>

#include <atomic>
#include <chrono>
#include <cstdint>

namespace {

using ratelimit_bench::measure;

void baseline_now(benchmark::State& state) {
    measure(state, [] {
        benchmark::DoNotOptimize(std::chrono::steady_clock::now());
        return true;
    });
}
BENCHMARK(baseline_now)->ThreadRange(1, 4);

// One shared word, as a limiter's state: read the clock, load, CAS (which
// succeeds unless another thread wrote in between).
void baseline_now_cas(benchmark::State& state) {
    static std::atomic<std::int64_t> word{0};
    measure(state, [] {
        const std::int64_t now = std::chrono::steady_clock::now().time_since_epoch().count();
        std::int64_t seen = word.load(std::memory_order_relaxed);
        return word.compare_exchange_weak(seen, now, std::memory_order_acq_rel, std::memory_order_relaxed);
    });
}
BENCHMARK(baseline_now_cas)->ThreadRange(1, 4);

// A bucket that never runs dry: 10^12 permits/s, 10^9 of burst.
void token_bucket_allow(benchmark::State& state) {
    static ratelimit::token_bucket<> bucket(ratelimit::rate::per_second(1e12), 1'000'000'000);
    measure(state, [] { return bucket.try_acquire(1); });
}
BENCHMARK(token_bucket_allow)->ThreadRange(1, 4);

// An empty bucket refilled once an hour: every call is refused.
void token_bucket_deny(benchmark::State& state) {
    static ratelimit::token_bucket<> bucket(ratelimit::rate::per_hour(1), 1);
    static const bool empty = ratelimit_bench::drain(bucket);
    benchmark::DoNotOptimize(empty);
    measure(state, [] { return bucket.try_acquire(1); });
}
BENCHMARK(token_bucket_deny)->ThreadRange(1, 4);

// The fast clock: the invariant TSC instead of the kernel's clock source.
void tsc_clock_now(benchmark::State& state) {
    measure(state, [] {
        benchmark::DoNotOptimize(ratelimit::tsc_clock::now());
        return true;
    });
}
BENCHMARK(tsc_clock_now);

void token_bucket_tsc_allow(benchmark::State& state) {
    static ratelimit::token_bucket<ratelimit::tsc_clock> bucket(ratelimit::rate::per_second(1e12), 1'000'000'000);
    measure(state, [] { return bucket.try_acquire(1); });
}
BENCHMARK(token_bucket_tsc_allow)->ThreadRange(1, 4);

void token_bucket_tsc_deny(benchmark::State& state) {
    static ratelimit::token_bucket<ratelimit::tsc_clock> bucket(ratelimit::rate::per_hour(1), 1);
    static const bool empty = ratelimit_bench::drain(bucket);
    benchmark::DoNotOptimize(empty);
    measure(state, [] { return bucket.try_acquire(1); });
}
BENCHMARK(token_bucket_tsc_deny)->ThreadRange(1, 4);

}  // namespace

BENCHMARK_MAIN();
