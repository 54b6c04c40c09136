// Shaping: what each limiter does to one bursty load. Every in-process rate
// limiter, configured for the same average rate (10 permits per second, a
// burst or window limit of 10 per second), is offered the SAME requests on a
// simulated clock (ratelimit::manual_clock, so the run is exact, instant and
// the same on every machine), each request asking try_acquire(1) once, never
// retried. Writes a CSV: per 100 ms bucket, the requests offered and the
// requests each limiter admitted. benchmarks/shaping.sh plots it.
//
//   ratelimit_shaping OUT.csv [--seed N]
//
// The load (10 s; random times from a seeded mt19937_64, whose output the C++
// standard fixes, turned into times by our own arithmetic rather than by
// std:: distributions, whose output differs between standard libraries):
//   - a trickle throughout: Poisson arrivals at 4 requests/s;
//   - bursts of 30 requests at random times within 100 ms of t = 1, 3 and 5 s,
//     each straddling a window boundary (windows are aligned at t = 0);
//   - a flood from t = 6.5 s to 8.5 s: Poisson arrivals at 30 requests/s more.
#include <ratelimit/fixed_window.hpp>
#include <ratelimit/leaky_bucket.hpp>
#include <ratelimit/sliding_window_counter.hpp>
#include <ratelimit/sliding_window_log.hpp>
#include <ratelimit/token_bucket.hpp>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <random>
#include <string>
#include <string_view>
#include <vector>

namespace {

using namespace std::chrono_literals;
using ratelimit::manual_clock;
using ratelimit::rate;

constexpr std::chrono::nanoseconds run_length = 10s;
constexpr std::chrono::nanoseconds bucket = 100ms;
constexpr std::int64_t buckets = run_length / bucket;

/// A uniform double in [0, 1) from the engine's 53 high bits.
double uniform(std::mt19937_64& random) { return static_cast<double>(random() >> 11) * 0x1.0p-53; }

/// Arrival times (ns) of a Poisson process at `per_second` from `from` to `to`.
void poisson(std::mt19937_64& random, double per_second, std::chrono::nanoseconds from, std::chrono::nanoseconds to,
             std::vector<std::int64_t>& times) {
    double t = static_cast<double>(from.count());
    for (;;) {
        t += -std::log(1.0 - uniform(random)) / per_second * 1e9;
        if (t >= static_cast<double>(to.count())) return;
        times.push_back(static_cast<std::int64_t>(t));
    }
}

/// `count` arrival times uniform within `spread` of `center`.
void burst(std::mt19937_64& random, std::int64_t count, std::chrono::nanoseconds center,
           std::chrono::nanoseconds spread, std::vector<std::int64_t>& times) {
    for (std::int64_t i = 0; i < count; ++i) {
        const double offset = (2 * uniform(random) - 1) * static_cast<double>(spread.count());
        times.push_back(center.count() + static_cast<std::int64_t>(offset));
    }
}

std::vector<std::int64_t> offered_load(std::uint64_t seed) {
    std::mt19937_64 random(seed);
    std::vector<std::int64_t> times;
    poisson(random, 4, 0s, run_length, times);
    for (const auto center : {1s, 3s, 5s}) burst(random, 30, center, 100ms, times);
    poisson(random, 30, 6500ms, 8500ms, times);
    std::sort(times.begin(), times.end());
    return times;
}

struct column {
    const char* name;
    std::function<bool()> try_acquire_one;
    std::array<std::int64_t, buckets> admitted{};
};

int usage(std::FILE* to, int status) {
    std::fputs("usage: ratelimit_shaping OUT.csv [--seed N]\n"
               "  offers one bursty load (10 s, simulated time) to every rate limiter at 10/s and writes,\n"
               "  per 100 ms, the requests offered and admitted by each to OUT.csv\n",
               to);
    return status;
}

}  // namespace

int main(int argc, char** argv) {
    std::string out_path;
    std::uint64_t seed = 8;
    for (int i = 1; i < argc; ++i) {
        const std::string_view arg = argv[i];
        if (arg == "--help") return usage(stdout, 0);
        if (arg == "--seed" && i + 1 < argc) {
            const std::string value = argv[++i];
            if (value.empty() || value.find_first_not_of("0123456789") != std::string::npos || value.size() > 19) {
                std::fprintf(stderr, "ratelimit_shaping: --seed must be a non-negative integer, got '%s'\n", value.c_str());
                return 2;
            }
            seed = std::stoull(value);
        } else if (!arg.starts_with("-") && out_path.empty()) {
            out_path = arg;
        } else {
            std::fprintf(stderr, "ratelimit_shaping: unexpected argument '%s' (see --help)\n", argv[i]);
            return 2;
        }
    }
    if (out_path.empty()) {
        std::fputs("ratelimit_shaping: missing OUT.csv (see --help)\n", stderr);
        return 2;
    }

    manual_clock clock;  // t = 0: windows align here, buckets start full
    ratelimit::token_bucket<manual_clock> token_bucket(rate::per_second(10), 10, clock);
    ratelimit::leaky_bucket<manual_clock> leaky_bucket(rate::per_second(10), 10, clock);
    ratelimit::fixed_window<manual_clock> fixed_window(10, 1s, clock);
    ratelimit::sliding_window_log<manual_clock> sliding_window_log(10, 1s, clock);
    ratelimit::sliding_window_counter<manual_clock> sliding_window_counter(10, 1s, clock);
    std::vector<column> columns;
    columns.push_back({"token_bucket", [&] { return token_bucket.try_acquire(1); }});
    columns.push_back({"leaky_bucket", [&] { return leaky_bucket.try_acquire(1); }});
    columns.push_back({"fixed_window", [&] { return fixed_window.try_acquire(1); }});
    columns.push_back({"sliding_window_log", [&] { return sliding_window_log.try_acquire(1); }});
    columns.push_back({"sliding_window_counter", [&] { return sliding_window_counter.try_acquire(1); }});

    std::array<std::int64_t, buckets> offered{};
    for (const std::int64_t t : offered_load(seed)) {
        clock.set(manual_clock::time_point{std::chrono::nanoseconds{t}});
        const auto index = static_cast<std::size_t>(t / bucket.count());
        ++offered[index];
        for (column& c : columns) c.admitted[index] += c.try_acquire_one() ? 1 : 0;
    }

    std::FILE* out = std::fopen(out_path.c_str(), "w");
    if (out == nullptr) {
        std::fprintf(stderr, "ratelimit_shaping: cannot write '%s'\n", out_path.c_str());
        return 2;
    }
    std::fputs("t_s,offered", out);
    for (const column& c : columns) std::fprintf(out, ",%s", c.name);
    std::fputs("\n", out);
    for (std::size_t i = 0; i < offered.size(); ++i) {
        std::fprintf(out, "%.1f,%lld", static_cast<double>(i) * 0.1, static_cast<long long>(offered[i]));
        for (const column& c : columns) std::fprintf(out, ",%lld", static_cast<long long>(c.admitted[i]));
        std::fputs("\n", out);
    }
    if (std::fclose(out) != 0) {
        std::fprintf(stderr, "ratelimit_shaping: cannot write '%s'\n", out_path.c_str());
        return 2;
    }
    return 0;
}
