#!/usr/bin/env bash
# Before/after: builds the limiter benchmarks at BASE (a git revision) and at
# the working tree, runs them alternately ROUNDS times (default 2) in one
# session, and prints one markdown table of single-thread medians (CPU ns per
# call) with the after/before ratio of the means of the runs' medians.
#
#   benchmarks/compare.sh f83d90c
#   ROUNDS=3 benchmarks/compare.sh HEAD~5 --benchmark_filter='token_bucket|baseline'
#
# Extra arguments go to both benchmark binaries (default filter: one thread).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
ensure_packages cmake ninja-build g++ libbenchmark-dev jq git || exit 1
base=${1:?usage: benchmarks/compare.sh BASE-REVISION [benchmark args]}
shift
rounds=${ROUNDS:-2}
filter=(--benchmark_filter='threads:1$|tsc_clock_now')
[ $# -gt 0 ] && filter=("$@")
work=${RATELIMIT_COMPARE_BUILD:-build/compare}
rm -rf "$work/base-src"
mkdir -p "$work/base-src"
git archive "$base" | tar -x -C "$work/base-src"
for side in base after; do
  src=$PWD
  [ "$side" = base ] && src=$work/base-src
  cmake -S "$src" -B "$work/$side" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_COMPILER="${CXX:-g++}" \
    -DRATELIMIT_BUILD_TESTS=OFF -DRATELIMIT_BUILD_EXAMPLES=OFF -DRATELIMIT_BUILD_BENCHMARKS=ON >"$work/$side.configure.log" 2>&1 \
    || { cat "$work/$side.configure.log"; exit 1; }
  cmake --build "$work/$side" -j "${RATELIMIT_BENCH_JOBS:-2}" --target ratelimit_bench >"$work/$side.build.log" 2>&1 \
    || { grep -E 'error|FAILED' -A5 "$work/$side.build.log" | head -40; exit 1; }
done
for round in $(seq 1 "$rounds"); do
  for side in base after; do
    echo "round $round: $side ..." >&2
    "$work/$side/benchmarks/ratelimit_bench" "${filter[@]}" --benchmark_repetitions=5 \
      --benchmark_report_aggregates_only=true --benchmark_min_time=0.2 \
      --benchmark_out="$work/$side-$round.json" --benchmark_out_format=json >/dev/null
  done
done
echo "Before: $base ($(git rev-parse --short "$base")); after: the working tree on $(git rev-parse --short HEAD)."
echo "Host: $(jq -r '"\(.context.num_cpus) CPUs, load \(.context.load_avg | map(. * 100 | round / 100) | join(" "))"' "$work/after-1.json"); $rounds alternating rounds, medians of 5 repetitions each, CPU ns per call."
echo
jq -rn --argjson rounds "$rounds" '
  def medians: [.benchmarks[] | select(.aggregate_name == "median") | {key: .run_name, value: .cpu_time}] | from_entries;
  def fmt: (. * 10 | round) / 10 | tostring;
  [inputs | {side: (input_filename | capture("(?<s>base|after)-[0-9]+\\.json$").s), m: medians}] as $runs
  | ($runs | map(select(.side == "base") | .m)) as $b | ($runs | map(select(.side == "after") | .m)) as $a
  | "| benchmark | " + ([range(1; $rounds + 1) | "before \(.)"] + [range(1; $rounds + 1) | "after \(.)"] | join(" | ")) + " | after / before |",
    "|---|" + ([range(0; 2 * $rounds + 1)] | map("---:") | join("|")) + "|",
    ($a[0] | keys_unsorted[] as $k
     | select(all($b[]; has($k)))
     | ([$b[][$k]] | add / length) as $mb | ([$a[][$k]] | add / length) as $ma
     | "| \($k | sub("/threads:1$"; "")) | " + ([$b[][$k], $a[][$k]] | map(fmt) | join(" | ")) + " | \(($ma / $mb * 100 | round) / 100) |")
' $(for r in $(seq 1 "$rounds"); do echo "$work/base-$r.json" "$work/after-$r.json"; done)
