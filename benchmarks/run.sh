#!/usr/bin/env bash
# Builds the benchmarks (Release), runs them once (5 repetitions each, medians
# reported) and prints a markdown table: each benchmark's median CPU ns per
# call, its ratio to the now()+CAS baseline at the same thread count measured
# in the same run, and its excess over now() alone. Takes about 2-3 minutes.
#
#   benchmarks/run.sh                        # build tree: build/bench
#   RATELIMIT_BENCH_BUILD=/tmp/b benchmarks/run.sh --benchmark_filter=token_bucket
#
# Extra arguments go to the benchmark binary. The raw results stay in
# $RATELIMIT_BENCH_BUILD/bench.json (Google Benchmark JSON) and bench.txt.
# Machines are noisy: compare ratios within one run, not absolute numbers.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
ensure_packages cmake ninja-build g++ libbenchmark-dev jq || exit 1

build=${RATELIMIT_BENCH_BUILD:-build/bench}
mkdir -p "$build"
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_COMPILER="${CXX:-g++}" \
  -DRATELIMIT_BUILD_TESTS=OFF -DRATELIMIT_BUILD_EXAMPLES=OFF -DRATELIMIT_BUILD_BENCHMARKS=ON >"$build/configure.log" 2>&1 \
  || { cat "$build/configure.log"; exit 1; }
cmake --build "$build" -j "${RATELIMIT_BENCH_JOBS:-2}" --target ratelimit_bench ratelimit_sizes ratelimit_clock_reads >"$build/build.log" 2>&1 \
  || { grep -E 'error|FAILED' -A5 "$build/build.log" | head -60; exit 1; }

echo "## Space: an empty clock costs nothing (static_assert in benchmarks/sizes.cpp)"
echo
"$build/benchmarks/ratelimit_sizes"
echo

echo "## Clock reads per try_acquire (benchmarks/clock_reads.cpp)"
echo
"$build/benchmarks/ratelimit_clock_reads"
echo

echo "running the benchmarks (about 2-3 minutes; console output in $build/bench.txt) ..." >&2
"$build/benchmarks/ratelimit_bench" \
  --benchmark_repetitions=5 --benchmark_report_aggregates_only=true --benchmark_min_time=0.2 \
  --benchmark_out="$build/bench.json" --benchmark_out_format=json "$@" >"$build/bench.txt"

echo "## Time: median over the repetitions (the single run without --benchmark_repetitions), CPU ns per call, $(jq -r '.context.date' "$build/bench.json")"
echo
echo "Host: $(jq -r '"\(.context.num_cpus) CPUs at \(.context.mhz_per_cpu) MHz, load \(.context.load_avg | map(. * 100 | round / 100) | join(" "))"' "$build/bench.json")."
echo "x CAS: ratio to now()+CAS at the same thread count; - now(): ns above now() alone at the same thread count."
echo
jq -r '
  def ns: if .time_unit == "us" then .cpu_time * 1e3 elif .time_unit == "ms" then .cpu_time * 1e6
          elif .time_unit == "s" then .cpu_time * 1e9 else .cpu_time end;
  def fmt(d): (. * pow(10; d) | round) / pow(10; d) | tostring;
  (any(.benchmarks[]; .aggregate_name == "median")) as $medians
  | [.benchmarks[] | select(if $medians then .aggregate_name == "median" else .run_type == "iteration" end)
   | {name: (.run_name | sub("/threads:[0-9]+$"; "")), threads: (.threads // 1), ns: ns,
      allocs: (.allocs_per_op // null), grant: (.grant_ratio // null), bytes: (.bytes_per_key // null)}] as $rows
  | ($rows | map(select(.name == "baseline_now_cas") | {key: (.threads | tostring), value: .ns}) | from_entries) as $cas
  | ($rows | map(select(.name == "baseline_now") | {key: (.threads | tostring), value: .ns}) | from_entries) as $now
  | "| benchmark | threads | ns/call | x CAS | - now() ns | allocs/call | granted | bytes/key |",
    "|---|---:|---:|---:|---:|---:|---:|---:|",
    ($rows[] | "| \(.name) | \(.threads) | \(.ns | fmt(1)) | \(if $cas[.threads|tostring] then (.ns / $cas[.threads|tostring]) | fmt(2) else "" end)"
      + " | \(if $now[.threads|tostring] then (.ns - $now[.threads|tostring]) | fmt(1) else "" end)"
      + " | \(if .allocs == null then "" else .allocs | fmt(3) end) | \(if .grant == null then "" else .grant | fmt(3) end)"
      + " | \(if .bytes == null then "" else .bytes | fmt(0) end) |")
' "$build/bench.json"
