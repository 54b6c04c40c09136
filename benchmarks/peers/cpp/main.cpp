// ratelimit's side of benchmarks/peers/run.sh: token_bucket's grant and refuse
// paths and the clock read, timed by the same loop as the Go (go/main.go) and
// Java (java/GuavaPeers.java) programs, so the three columns of the table are
// measured alike.
//
// Method (the same in the three programs): for each operation and thread
// count, one repetition starts T threads at once, each making calls/T calls on
// ONE shared limiter. It reports the CPU time the threads spent (each thread's
// own CPU clock, summed) per call, which is what Google Benchmark reports and
// what other processes on the machine disturb least, and the wall time from
// the start until the last thread finishes per call (at 2 and 4 threads the
// inverse of the throughput). One repetition lasts about --ms milliseconds; a
// warm-up repetition is discarded; benchmarks/peers/run.sh takes the medians.
//
//   ratelimit_peers [--reps N] [--ms M]
//
// Output: tab-separated lines `rep <op> <threads> <cpu ns/call> <wall ns/call> <granted>`,
// one per repetition (granted: the share of calls granted, "-" for a clock
// read); lines starting with # are comments.
#include <ratelimit/token_bucket.hpp>
#include <ratelimit/tsc_clock.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>
#include <thread>
#include <vector>

#include <time.h>

namespace {

using wall = std::chrono::steady_clock;

struct settings {
    int reps = 9;
    int ms = 100;
};

/// Keeps a value alive without a store the compiler could drop.
template <class T>
void keep(const T& value) {
    asm volatile("" : : "r,m"(value) : "memory");
}

/// This thread's CPU time in ns.
std::int64_t thread_cpu_ns() {
    timespec ts{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return std::int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

struct outcome {
    std::int64_t wall_ns = 0;  // from the start to the last thread's end
    std::int64_t cpu_ns = 0;   // summed over the threads
    std::int64_t sum = 0;      // of the calls' results
};

/// One repetition: `threads` threads make `calls_per_thread` calls each, started together.
template <class Call>
outcome repetition(int threads, std::int64_t calls_per_thread, Call call) {
    std::atomic<int> ready{0};
    std::atomic<bool> go{false};
    std::vector<std::int64_t> ends(static_cast<std::size_t>(threads));
    std::vector<std::int64_t> cpus(static_cast<std::size_t>(threads));
    std::vector<std::int64_t> sums(static_cast<std::size_t>(threads));
    std::vector<std::thread> workers;
    for (int t = 0; t < threads; ++t) {
        workers.emplace_back([&, t] {
            ready.fetch_add(1);
            while (!go.load(std::memory_order_acquire)) std::this_thread::yield();
            const std::int64_t cpu_start = thread_cpu_ns();
            std::int64_t local = 0;
            for (std::int64_t i = 0; i < calls_per_thread; ++i) local += call();
            keep(local);
            const auto index = static_cast<std::size_t>(t);
            cpus[index] = thread_cpu_ns() - cpu_start;
            ends[index] = wall::now().time_since_epoch().count();
            sums[index] = local;
        });
    }
    while (ready.load() < threads) std::this_thread::yield();
    const std::int64_t start = wall::now().time_since_epoch().count();
    go.store(true, std::memory_order_release);
    for (auto& w : workers) w.join();
    outcome result;
    result.wall_ns = *std::max_element(ends.begin(), ends.end()) - start;
    for (std::size_t i = 0; i < workers.size(); ++i) {
        result.cpu_ns += cpus[i];
        result.sum += sums[i];
    }
    return result;
}

/// Times `call` at `threads` threads and prints a row per repetition. `is_limiter`: the call returns 1 if granted, 0 if refused.
template <class Call>
void measure(const settings& s, const char* op, int threads, bool is_limiter, Call call) {
    // Calibrate on one thread: double the calls until a run takes 20 ms.
    std::int64_t calls = 1000;
    std::int64_t took = 0;
    while ((took = repetition(1, calls, call).wall_ns) < 20'000'000) calls *= 2;
    const double ns_per_call = static_cast<double>(took) / static_cast<double>(calls);
    const auto total = static_cast<std::int64_t>(s.ms * 1e6 / ns_per_call);
    const std::int64_t per_thread = std::max<std::int64_t>(1, total / threads);
    const auto all_calls = static_cast<double>(per_thread * threads);

    repetition(threads, per_thread, call);  // warm-up, discarded
    for (int r = 0; r < s.reps; ++r) {
        const outcome o = repetition(threads, per_thread, call);
        char granted[32] = "-";
        if (is_limiter) std::snprintf(granted, sizeof granted, "%.3f", static_cast<double>(o.sum) / all_calls);
        std::printf("rep\t%s\t%d\t%.2f\t%.2f\t%s\n", op, threads, static_cast<double>(o.cpu_ns) / all_calls,
                    static_cast<double>(o.wall_ns) / all_calls, granted);
    }
    std::fflush(stdout);
}

/// The grant path: a bucket that never runs dry (10^12 permits/s, 10^9 of burst), as token_bucket_allow.
template <class Clock>
void grant_rows(const settings& s, const char* op) {
    for (const int threads : {1, 2, 4}) {
        ratelimit::token_bucket<Clock> bucket(ratelimit::rate::per_second(1e12), 1'000'000'000);
        measure(s, op, threads, true, [&bucket]() -> std::int64_t { return bucket.try_acquire(1) ? 1 : 0; });
    }
}

/// The refuse path: an empty bucket refilled once an hour, as token_bucket_deny.
template <class Clock>
void refuse_row(const settings& s, const char* op) {
    ratelimit::token_bucket<Clock> bucket(ratelimit::rate::per_hour(1), 1);
    while (bucket.try_acquire(1)) {
    }
    measure(s, op, 1, true, [&bucket]() -> std::int64_t { return bucket.try_acquire(1) ? 1 : 0; });
}

int usage(std::FILE* to, int status) {
    std::fputs("usage: ratelimit_peers [--reps N] [--ms M]\n"
               "  times token_bucket's grant and refuse paths and the clock read (see benchmarks/peers/run.sh)\n",
               to);
    return status;
}

}  // namespace

int main(int argc, char** argv) {
    settings s;
    for (int i = 1; i < argc; ++i) {
        const std::string_view arg = argv[i];
        if (arg == "--help") return usage(stdout, 0);
        if ((arg == "--reps" || arg == "--ms") && i + 1 < argc) {
            const int value = std::atoi(argv[++i]);
            if (value <= 0) {
                std::fprintf(stderr, "ratelimit_peers: %s must be a positive integer\n", argv[i - 1]);
                return 2;
            }
            (arg == "--reps" ? s.reps : s.ms) = value;
            continue;
        }
        std::fprintf(stderr, "ratelimit_peers: unknown or incomplete flag '%s' (see --help)\n", argv[i]);
        return 2;
    }
    std::printf("# ratelimit token_bucket, C++ %s, tsc_clock %s, %d reps of ~%d ms\n",
#if defined(__clang__)
                "clang++ " __clang_version__,
#else
                "g++ " __VERSION__,
#endif
                ratelimit::tsc_clock::uses_tsc() ? "reads the TSC" : "falls back to steady_clock", s.reps, s.ms);
    measure(s, "clock", 1, false, [] { return static_cast<std::int64_t>(wall::now().time_since_epoch().count()); });
    grant_rows<wall>(s, "grant");
    refuse_row<wall>(s, "refuse");
    measure(s, "tsc_clock", 1, false,
            [] { return static_cast<std::int64_t>(ratelimit::tsc_clock::now().time_since_epoch().count()); });
    grant_rows<ratelimit::tsc_clock>(s, "tsc_grant");
    refuse_row<ratelimit::tsc_clock>(s, "tsc_refuse");
    return 0;
}
