// token_bucket against the physical floor: reading the clock, and reading it plus one CAS.
#include <ratelimit/ratelimit.hpp>

#include <benchmark/benchmark.h>

#include <atomic>
#include <chrono>
#include <cstdint>

namespace {

void clock_now(benchmark::State& state) {
    for (auto _ : state) benchmark::DoNotOptimize(std::chrono::steady_clock::now());
}
BENCHMARK(clock_now);

void clock_now_plus_cas(benchmark::State& state) {
    static std::atomic<std::int64_t> word{0};
    for (auto _ : state) {
        const auto now = std::chrono::steady_clock::now().time_since_epoch().count();
        std::int64_t seen = word.load(std::memory_order_relaxed);
        benchmark::DoNotOptimize(word.compare_exchange_weak(seen, now));
    }
}
BENCHMARK(clock_now_plus_cas)->ThreadRange(1, 2);

void token_bucket_grant(benchmark::State& state) {
    static ratelimit::token_bucket<> bucket(ratelimit::rate::per_second(1e12), 1'000'000'000);
    for (auto _ : state) benchmark::DoNotOptimize(bucket.try_acquire(1));
}
BENCHMARK(token_bucket_grant)->ThreadRange(1, 2);

void token_bucket_refuse(benchmark::State& state) {
    static ratelimit::token_bucket<> bucket(ratelimit::rate::per_hour(1), 1);
    (void)bucket.try_acquire(1);
    for (auto _ : state) benchmark::DoNotOptimize(bucket.try_acquire(1));
}
BENCHMARK(token_bucket_refuse)->ThreadRange(1, 2);

}  // namespace

BENCHMARK_MAIN();
