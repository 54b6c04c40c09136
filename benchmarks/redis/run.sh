#!/usr/bin/env bash
# The Redis-backed limiters' per-call cost beside redis-benchmark's SET, on the
# same machine, against the same private redis-server, in one run: builds
# ratelimit_redis_bench (Release), starts a throwaway redis-server on a free
# loopback port, runs `redis-benchmark -t set -c 1` and `-c 8` (100000
# requests each), then redis_bench.cpp (PING, SET, token_bucket::try_acquire
# granted and refused, at 1, 4 and 8 threads on one connection with
# pool_size = threads; 3 repetitions of 0.5 s each, taking turns), and prints
# one markdown table. About 1 minute once built (the first build adds 30 s).
#
#   benchmarks/redis/run.sh
#   RATELIMIT_REDIS_BENCH_BUILD=/tmp/b RATELIMIT_REDIS_BENCH_SECONDS=1 benchmarks/redis/run.sh
#
# p50/p99 are per-call latencies: redis-benchmark's own percentiles, and ours
# from every call timed and sorted. calls/s is all clients' calls per wall
# second (ours: the median repetition). Client, server and all threads share
# the machine's cores, so more threads than cores measure contention as much
# as Redis: compare rows of one run, not absolute numbers.
set -euo pipefail
case "${1:-}" in
  -h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  ?*) echo "run.sh: no arguments expected (see --help)" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/../.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
ensure_packages cmake ninja-build g++ pkg-config "${RATELIMIT_REDIS_PACKAGES[@]}" || exit 1

build=$(realpath -m "${RATELIMIT_REDIS_BENCH_BUILD:-build/bench-redis}")
seconds=${RATELIMIT_REDIS_BENCH_SECONDS:-0.5}
requests=${RATELIMIT_REDIS_BENCH_REQUESTS:-100000}
mkdir -p "$build"

echo "building ratelimit_redis_bench (Release) in $build ..." >&2
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_COMPILER="${CXX:-g++}" \
  -DRATELIMIT_BUILD_TESTS=OFF -DRATELIMIT_BUILD_EXAMPLES=OFF -DRATELIMIT_BUILD_BENCHMARKS=ON >"$build/configure.log" 2>&1 \
  || { cat "$build/configure.log"; exit 1; }
cmake --build "$build" -j "${RATELIMIT_BENCH_JOBS:-2}" --target ratelimit_redis_bench >"$build/build.log" 2>&1 \
  || { grep -E 'error|FAILED' -A5 "$build/build.log" | head -60; exit 1; }

start_redis
trap stop_redis EXIT
port=$RATELIMIT_REDIS_PORT

# redis-benchmark --csv: "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms",
# "p95_latency_ms","p99_latency_ms","max_latency_ms"; one markdown row from it.
set_row() {
  local clients=$1 csv
  csv=$(redis-benchmark -h 127.0.0.1 -p "$port" -t set -n "$requests" -c "$clients" --csv --precision 3)
  echo "$csv" >"$build/redis-benchmark-c$clients.csv"
  echo "$csv" | awk -F, -v c="$clients" '$1 == "\"SET\"" {
    gsub(/"/, ""); printf "| SET (redis-benchmark -c %d) | %d | %.0f | %.1f | %.1f |\n", c, c, $2, $5 * 1000, $7 * 1000 }'
}

echo "running redis-benchmark (-c 1, -c 8) and ratelimit_redis_bench (3 x $seconds s per row) ..." >&2
rows_set_1=$(set_row 1)
rows_set_8=$(set_row 8)
rows_ours=$("$build/benchmarks/redis/ratelimit_redis_bench" --port "$port" --seconds "$seconds" --repetitions 3 \
  --threads 1,4,8 --no-header)

echo "## Redis limiters per call, beside redis-benchmark's SET ($(date -u +%Y-%m-%dT%H:%M:%SZ))"
echo
echo "Host: $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg); $(redis-server --version | grep -o 'v=[0-9.]*' | sed 's/v=/redis-server /'), loopback TCP."
echo
echo "| operation | clients/threads | calls/s | p50 µs | p99 µs |"
echo "|---|---:|---:|---:|---:|"
echo "$rows_set_1"
echo "$rows_set_8"
echo "$rows_ours"
