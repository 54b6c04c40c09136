// The per-call cost of the Redis-backed limiters, beside a bare round trip.
//
// For each thread count T, T threads share ONE ratelimit::redis::connection
// with pool_size = T (so each thread has a socket of its own, as
// redis-benchmark's -c T clients do). One repetition of an operation: after
// 100 untimed calls per thread (connect, script load), the threads start
// together and call it for --seconds, timing every call. The operations take
// turns, --repetitions times, in a rotated order, so a slow spell of a shared
// machine does not fall on one of them only. A row gives calls/s (the median
// over the repetitions of all threads' calls per wall second) and the 50th and
// 99th percentile latency (nearest rank over every timed call of every
// repetition).
//
// Operations:
//   PING                 connection::command({"PING"}): the round-trip baseline
//   SET                  connection::command({"SET", k, v}): redis-benchmark's SET through our client
//   try_acquire granted  redis::token_bucket::try_acquire() at 1e9 permits/s: always granted
//                        (one EVALSHA; the script reads TIME, HMGET, then HSET + PEXPIRE)
//   try_acquire refused  the same on an empty bucket refilling once an hour: always refused
//                        (one EVALSHA; TIME, HMGET, no write)
// A run whose granted path is ever refused, whose refused path is ever
// granted, or that sees an outage exits 1: its rows would not measure what
// they say.
//
//   ratelimit_redis_bench --port N [--host H] [--seconds S] [--repetitions N]
//                         [--threads LIST] [--no-header]
//
// Output: a markdown table, | operation | clients/threads | calls/s | p50 µs | p99 µs |
// (benchmarks/redis/run.sh puts redis-benchmark's SET rows above ours).
#include <ratelimit/redis.hpp>

#include "../../examples/common/flags.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <latch>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>

namespace {

using clock_type = std::chrono::steady_clock;
using namespace std::chrono_literals;

struct settings {
    std::string host = "127.0.0.1";
    int port = 0;
    double seconds = 0.5;
    int repetitions = 3;
    std::string threads = "1,4,8";
    bool no_header = false;
};

/// One operation's timed calls, pooled over the repetitions.
struct measurement {
    std::vector<double> rates;            // calls per wall second, one per repetition
    std::vector<std::int64_t> latencies;  // ns, every timed call
    std::int64_t true_answers = 0;        // calls that returned true (granted, or a reply)

    [[nodiscard]] std::int64_t calls() const { return static_cast<std::int64_t>(latencies.size()); }
};

/// The value at quantile q of sorted values (nearest rank).
double percentile(const std::vector<std::int64_t>& sorted, double q) {
    if (sorted.empty()) return 0;
    const auto rank = static_cast<std::size_t>(std::ceil(q * static_cast<double>(sorted.size())));
    return static_cast<double>(sorted[std::min(sorted.size() - 1, rank == 0 ? 0 : rank - 1)]);
}

double median(std::vector<double> v) {
    if (v.empty()) return 0;
    std::sort(v.begin(), v.end());
    const std::size_t mid = v.size() / 2;
    return v.size() % 2 == 1 ? v[mid] : (v[mid - 1] + v[mid]) / 2;
}

/// One repetition: runs `call()` on `threads` threads for `seconds` after
/// `warmup` untimed calls each, and adds every timed call's latency to `into`.
void measure(int threads, double seconds, int warmup, const std::function<bool()>& call, measurement& into) {
    std::vector<std::vector<std::int64_t>> latencies(static_cast<std::size_t>(threads));
    std::vector<std::int64_t> trues(static_cast<std::size_t>(threads), 0);
    std::latch ready(threads + 1);
    std::latch go(1);
    clock_type::time_point deadline{};
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) {
        pool.emplace_back([&, t] {
            auto& mine = latencies[static_cast<std::size_t>(t)];
            mine.reserve(1 << 16);
            for (int i = 0; i < warmup; ++i) call();
            ready.count_down();
            go.wait();
            std::int64_t yes = 0;
            for (auto now = clock_type::now(); now < deadline;) {
                const bool answer = call();
                const auto after = clock_type::now();
                mine.push_back(std::chrono::duration_cast<std::chrono::nanoseconds>(after - now).count());
                yes += answer ? 1 : 0;
                now = after;
            }
            trues[static_cast<std::size_t>(t)] = yes;
        });
    }
    ready.arrive_and_wait();
    const auto start = clock_type::now();
    deadline = start + std::chrono::duration_cast<clock_type::duration>(std::chrono::duration<double>(seconds));
    go.count_down();  // publishes `deadline` to the threads
    for (auto& th : pool) th.join();
    const double wall = std::chrono::duration<double>(clock_type::now() - start).count();

    std::size_t calls = 0;
    for (std::size_t t = 0; t < latencies.size(); ++t) {
        into.latencies.insert(into.latencies.end(), latencies[t].begin(), latencies[t].end());
        into.true_answers += trues[t];
        calls += latencies[t].size();
    }
    into.rates.push_back(static_cast<double>(calls) / wall);
}

std::vector<int> parse_threads(const std::string& list) {
    std::vector<int> counts;
    std::stringstream in(list);
    for (std::string item; std::getline(in, item, ',');) {
        const int n = std::atoi(item.c_str());
        if (n < 1 || n > 256 || std::to_string(n) != item) {
            throw examples::flags::usage_error("--threads: expected a comma-separated list of 1..256, got '" + list +
                                               "'");
        }
        counts.push_back(n);
    }
    if (counts.empty()) throw examples::flags::usage_error("--threads: empty list");
    return counts;
}

void row(const std::string& operation, int threads, measurement& m) {
    std::sort(m.latencies.begin(), m.latencies.end());
    std::printf("| %s | %d | %.0f | %.1f | %.1f |\n", operation.c_str(), threads, median(m.rates),
                percentile(m.latencies, 0.50) / 1000.0, percentile(m.latencies, 0.99) / 1000.0);
    std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
    settings s;
    examples::flags::parser flags("ratelimit_redis_bench",
                                  "Per-call cost of ratelimit::redis::token_bucket beside PING and SET on one "
                                  "connection\n(pool_size = threads), printed as a markdown table.");
    flags.text("host", s.host, "H", "Redis server address (default 127.0.0.1)");
    flags.integer("port", s.port, "N", "Redis server port", 1, 65535).required();
    flags.number("seconds", s.seconds, "S", "timed seconds per repetition (default 0.5)", 0.01, 600);
    flags.integer("repetitions", s.repetitions, "N", "repetitions per operation and thread count (default 3)", 1,
                  100);
    flags.text("threads", s.threads, "LIST", "thread counts (default 1,4,8)");
    flags.toggle("no-header", s.no_header, "print the table rows only");
    examples::flags::parse_or_exit(flags, argc, argv);
    std::vector<int> thread_counts;
    try {
        thread_counts = parse_threads(s.threads);
    } catch (const examples::flags::usage_error& e) {
        examples::flags::usage_failure(flags, e.what());
    }

    const std::string tag = "bench-" + std::to_string(::getpid());
    if (!s.no_header) {
        std::printf("| operation | clients/threads | calls/s | p50 µs | p99 µs |\n|---|---:|---:|---:|---:|\n");
    }
    bool faithful = true;
    for (const int threads : thread_counts) {
        ratelimit::redis::connection_options o;
        o.pool_size = threads;
        o.command_timeout = 2000ms;  // a loaded machine must not turn a slow reply into an outage
        o.connect_timeout = 2000ms;
        ratelimit::redis::connection conn(s.host, s.port, o);
        const std::string set_key = tag + ":set";
        ratelimit::redis::token_bucket<> granting(conn, tag + "-grant-" + std::to_string(threads),
                                                  ratelimit::rate::per_second(1e9), 1'000'000);
        ratelimit::redis::token_bucket<> refusing(conn, tag + "-refuse-" + std::to_string(threads),
                                                  ratelimit::rate::per_hour(1), 1);
        if (!refusing.try_acquire()) faithful = false;  // the one permit; the next comes in an hour

        struct operation {
            std::string name;
            std::function<bool()> call;
            bool always_true;  // what every call must answer for the row to mean what it says
            const ratelimit::redis::token_bucket<>* bucket;
            measurement result;
        };
        std::vector<operation> operations;
        operations.push_back({"PING (connection::command)", [&] { return conn.command({"PING"}).ok(); }, true,
                              nullptr, {}});
        operations.push_back({"SET (connection::command)",
                              [&] { return conn.command({"SET", set_key, "xxx"}).ok(); }, true, nullptr, {}});
        operations.push_back({"token_bucket::try_acquire, granted", [&] { return granting.try_acquire(); }, true,
                              &granting, {}});
        operations.push_back({"token_bucket::try_acquire, refused", [&] { return refusing.try_acquire(); }, false,
                              &refusing, {}});

        // Repetitions in a rotated order, so a slow spell of a shared machine
        // does not fall on one operation only.
        for (int rep = 0; rep < s.repetitions; ++rep) {
            for (std::size_t i = 0; i < operations.size(); ++i) {
                operation& op = operations[(i + static_cast<std::size_t>(rep)) % operations.size()];
                measure(threads, s.seconds, 100, op.call, op.result);
            }
        }
        for (operation& op : operations) {
            const std::int64_t wanted = op.always_true ? op.result.calls() : 0;
            const std::uint64_t outages = op.bucket != nullptr ? op.bucket->outages() : 0;
            if (op.result.true_answers != wanted || outages != 0 || op.result.calls() == 0) {
                std::fprintf(stderr,
                             "ratelimit_redis_bench: %s at %d threads: %lld of %lld calls answered true "
                             "(expected %lld), %llu outages\n",
                             op.name.c_str(), threads, static_cast<long long>(op.result.true_answers),
                             static_cast<long long>(op.result.calls()), static_cast<long long>(wanted),
                             static_cast<unsigned long long>(outages));
                faithful = false;
            }
            row(op.name, threads, op.result);
        }
        conn.command({"DEL", set_key, granting.key(), refusing.key()});
    }
    return faithful ? 0 : 1;
}
