#pragma once
// The loop every limiter benchmark runs: one call per iteration, counting the
// calls granted (grant_ratio: 1 on an allow path, 0 on a deny path, so a
// benchmark that measures the wrong path shows it) and the allocations made
// inside the timed loop (allocs_per_op: the target is 0 on every hot path).

#include "alloc_counter.hpp"

#include <benchmark/benchmark.h>

#include <cstdint>

namespace ratelimit_bench {

/// Takes single permits until the limiter refuses; for the deny paths (run once, from a static's initializer).
template <class Limiter>
bool drain(Limiter& limiter) {
    while (limiter.try_acquire(1)) {
    }
    return true;
}

template <class Call>
void measure(benchmark::State& state, Call call) {
    std::int64_t granted = 0;
    const std::uint64_t before = allocations();
    for (auto _ : state) {
        const bool ok = call();
        benchmark::DoNotOptimize(ok);
        granted += ok ? 1 : 0;
    }
    const std::uint64_t made = allocations() - before;
    // Each thread adds its own counts; kAvgIterations divides the sum by all threads' iterations.
    state.counters["allocs_per_op"] = benchmark::Counter(static_cast<double>(made), benchmark::Counter::kAvgIterations);
    state.counters["grant_ratio"] = benchmark::Counter(static_cast<double>(granted), benchmark::Counter::kAvgIterations);
}

}  // namespace ratelimit_bench
