// keyed<token_bucket<>> holding 100,000 keys: the cost of try_acquire on a key
// already present, looked up by std::string_view (keys visited in a shuffled
// order, so the table is walked as a real server's would be), and the heap
// bytes each key holds (counted by the replaced operator new).
#include <ratelimit/keyed.hpp>
#include <ratelimit/token_bucket.hpp>

#include "alloc_counter.hpp"
#include "bench_support.hpp"

#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <random>
#include <string>
#include <string_view>
#include <vector>

namespace {

using ratelimit::rate;
using per_key = ratelimit::keyed<ratelimit::token_bucket<>>;

constexpr std::size_t key_count = 100'000;

/// "user-000000" ... "user-099999", in a fixed shuffled order.
const std::vector<std::string>& keys() {
    static const std::vector<std::string> all = [] {
        std::vector<std::string> k;
        k.reserve(key_count);
        for (std::size_t i = 0; i < key_count; ++i) {
            std::string digits = std::to_string(i);
            k.push_back("user-" + std::string(6 - digits.size(), '0') + digits);
        }
        std::shuffle(k.begin(), k.end(), std::mt19937_64{20260101});
        return k;
    }();
    return all;
}

// Room for every key (shards fill unevenly) and no at-rest sweeping, so the
// measured calls only ever find existing keys.
ratelimit::keyed_options roomy() {
    ratelimit::keyed_options options;
    options.max_keys = 4 * key_count;
    options.sweep_per_insert = 0;
    return options;
}

struct filled {
    per_key* table;
    double bytes_per_key;
};

/// Inserts every key with one try_acquire, measuring the live heap bytes added.
filled fill(per_key& table) {
    const std::vector<std::string>& k = keys();  // the keys' own storage is not counted
    const std::int64_t before = ratelimit_bench::live_bytes();
    for (const std::string& key : k) (void)table.try_acquire(key, 1);
    const std::int64_t after = ratelimit_bench::live_bytes();
    return {&table, static_cast<double>(after - before) / static_cast<double>(k.size())};
}

void run_keyed(benchmark::State& state, const filled& f) {
    const std::vector<std::string>& k = keys();
    // Each thread starts at its own place in the shuffled order.
    std::size_t i = static_cast<std::size_t>(state.thread_index()) * (key_count / 4);
    per_key& table = *f.table;
    ratelimit_bench::measure(state, [&] {
        const std::string_view key = k[i];
        i = i + 1 == key_count ? 0 : i + 1;
        return table.try_acquire(key, 1);
    });
    // The same value from every thread: averaged over threads, not summed.
    state.counters["keys"] = benchmark::Counter(static_cast<double>(table.size()), benchmark::Counter::kAvgThreads);
    state.counters["bytes_per_key"] = benchmark::Counter(f.bytes_per_key, benchmark::Counter::kAvgThreads);
}

void keyed_token_bucket_allow(benchmark::State& state) {
    static per_key table([] { return ratelimit::token_bucket<>(rate::per_second(1e12), 1'000'000'000); }, roomy());
    static const filled f = fill(table);
    run_keyed(state, f);
}
BENCHMARK(keyed_token_bucket_allow)->ThreadRange(1, 4);

// Each key's bucket holds one permit an hour, taken when the key was inserted.
void keyed_token_bucket_deny(benchmark::State& state) {
    static per_key table([] { return ratelimit::token_bucket<>(rate::per_hour(1), 1); }, roomy());
    static const filled f = fill(table);
    run_keyed(state, f);
}
BENCHMARK(keyed_token_bucket_deny)->ThreadRange(1, 4);

}  // namespace
