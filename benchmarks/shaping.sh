#!/usr/bin/env bash
# Builds benchmarks/shaping.cpp (Release), offers its bursty load to every
# in-process rate limiter on simulated time, and plots what each admitted
# (benchmarks/shaping.gp) into one PNG. Deterministic: the same data on
# every machine. Takes about 20 s (most of it the build).
#
#   benchmarks/shaping.sh                      # writes docs/shaping.png
#   benchmarks/shaping.sh /tmp/shaping.png     # or there
#   RATELIMIT_SHAPING_BUILD=/tmp/b benchmarks/shaping.sh
#
# The CSV behind the picture stays in $RATELIMIT_SHAPING_BUILD/shaping.csv.
set -euo pipefail
case "${1:-}" in
  -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  -*) echo "shaping.sh: unknown flag '$1' (see --help)" >&2; exit 2 ;;
esac
[ $# -le 1 ] || { echo "shaping.sh: one PNG path at most (see --help)" >&2; exit 2; }
out=$(realpath -m "${1:-$(dirname "$0")/../docs/shaping.png}")
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
ensure_packages cmake ninja-build g++ gnuplot-nox || exit 1

build=$(realpath -m "${RATELIMIT_SHAPING_BUILD:-build/shaping}")
mkdir -p "$build" "$(dirname "$out")"
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_COMPILER="${CXX:-g++}" \
  -DRATELIMIT_BUILD_TESTS=OFF -DRATELIMIT_BUILD_EXAMPLES=OFF -DRATELIMIT_BUILD_BENCHMARKS=ON >"$build/configure.log" 2>&1 \
  || { cat "$build/configure.log"; exit 1; }
cmake --build "$build" -j "${RATELIMIT_BENCH_JOBS:-2}" --target ratelimit_shaping >"$build/build.log" 2>&1 \
  || { grep -E 'error|FAILED' -A5 "$build/build.log" | head -60; exit 1; }

"$build/benchmarks/ratelimit_shaping" "$build/shaping.csv"
gnuplot -e "csv='$build/shaping.csv'; out='$out'" benchmarks/shaping.gp
echo "wrote $out ($(stat -c %s "$out") bytes; data in $build/shaping.csv)"
