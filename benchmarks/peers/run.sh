#!/usr/bin/env bash
# ratelimit's token_bucket against its peers on the same machine in one run:
# Go's golang.org/x/time/rate (Limiter.Allow) and Guava's RateLimiter
# (tryAcquire), each beside its own language's clock read. Installs what is
# missing (Debian packages only, no network for Go modules or Maven), builds
# the three programs (C++ Release; Go in GOPATH mode against Debian's source;
# javac against Debian's guava.jar) into the build directory, runs them in
# rounds with the order rotated, and prints markdown tables. Takes about
# 1.5-2 minutes (less once built).
#
#   benchmarks/peers/run.sh
#   RATELIMIT_PEERS_BUILD=/tmp/p RATELIMIT_PEERS_ROUNDS=5 benchmarks/peers/run.sh
#
# Method, the same in the three programs (cpp/main.cpp, go/main.go,
# java/GuavaPeers.java): T threads (goroutines) share ONE limiter, start
# together and make calls/T calls each. Per repetition (~RATELIMIT_PEERS_MS,
# 100 ms, after a discarded warm-up, and 1 s of JIT warm-up per operation in
# Java) they report CPU ns per call (the threads' CPU time summed / all calls:
# Google Benchmark's measure, and the one other load on the machine disturbs
# least) and wall ns per call (wall time until the last thread ends / all
# calls: at 2 and 4 threads, 1 / throughput). Each round runs the three
# programs once (RATELIMIT_PEERS_REPS, 5, repetitions each), in a rotated
# order; the tables show medians over all RATELIMIT_PEERS_ROUNDS (3) rounds'
# repetitions. Raw rows stay in $build/raw.tsv.
set -euo pipefail
case "${1:-}" in
  -h|--help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  ?*) echo "run.sh: no arguments expected (see --help)" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/../.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
ensure_packages cmake ninja-build g++ golang-go golang-golang-x-time-dev libguava-java default-jdk-headless || exit 1

build=$(realpath -m "${RATELIMIT_PEERS_BUILD:-build/peers}")
rounds=${RATELIMIT_PEERS_ROUNDS:-3}
reps=${RATELIMIT_PEERS_REPS:-5}
ms=${RATELIMIT_PEERS_MS:-100}
guava_jar=/usr/share/java/guava.jar
mkdir -p "$build/go" "$build/java"

echo "building (C++ Release, Go, Java) in $build ..." >&2
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_COMPILER="${CXX:-g++}" \
  -DRATELIMIT_BUILD_TESTS=OFF -DRATELIMIT_BUILD_EXAMPLES=OFF -DRATELIMIT_BUILD_BENCHMARKS=ON >"$build/configure.log" 2>&1 \
  || { cat "$build/configure.log"; exit 1; }
cmake --build "$build" -j "${RATELIMIT_BENCH_JOBS:-2}" --target ratelimit_peers >"$build/build.log" 2>&1 \
  || { grep -E 'error|FAILED' -A5 "$build/build.log" | head -60; exit 1; }
# GOPATH mode, offline: golang.org/x/time/rate comes from /usr/share/gocode/src.
(cd benchmarks/peers/go && GO111MODULE=off GOPATH=/usr/share/gocode GOPROXY=off GOFLAGS='' \
  GOCACHE="${GOCACHE:-$build/go/cache}" go build -o "$build/go/peers_go" main.go)
javac -Xlint:all -cp "$guava_jar" -d "$build/java" benchmarks/peers/java/GuavaPeers.java

run_cpp() { "$build/benchmarks/ratelimit_peers" --reps "$reps" --ms "$ms" | sed 's/^/cpp\t/'; }
run_go() { "$build/go/peers_go" -reps "$reps" -ms "$ms" | sed 's/^/go\t/'; }
run_java() { java -cp "$guava_jar:$build/java" GuavaPeers --reps "$reps" --ms "$ms" | sed 's/^/java\t/'; }

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
: >"$build/raw.tsv"
orders=("cpp go java" "go java cpp" "java cpp go")
for ((round = 0; round < rounds; round++)); do
  for lang in ${orders[round % 3]}; do
    echo "round $((round + 1))/$rounds: $lang ..." >&2
    "run_$lang" >>"$build/raw.tsv"
  done
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

# Per (language, operation, threads), over every repetition of every round:
# median CPU and wall ns per call, lowest and highest CPU ns, mean share granted.
grep -P '^\w+\trep\t' "$build/raw.tsv" | cut -f1,3- | awk -F'\t' -v OFS='\t' '
  function median(list,    n, v, i, j, x) {
    n = split(list, v, " ")
    for (i = 2; i <= n; i++) { x = v[i] + 0; for (j = i - 1; j >= 1 && v[j] + 0 > x; j--) v[j + 1] = v[j]; v[j + 1] = x }
    low = v[1]; high = v[n]
    return n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
  }
  { k = $1 OFS $2 OFS $3
    if (!(k in cpu)) order[++keys] = k
    cpu[k] = cpu[k] " " $4; wall[k] = wall[k] " " $5
    if ($6 != "-") { granted[k] += $6; count[k]++ } }
  END {
    for (i = 1; i <= keys; i++) {
      k = order[i]
      w = median(wall[k]); c = median(cpu[k])
      print k, c, w, low, high, (k in count) ? sprintf("%.3f", granted[k] / count[k]) : "-"
    }
  }' >"$build/summary.tsv"

cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
echo "## ratelimit against its peers, $(date -u '+%Y-%m-%d %H:%M UTC')"
echo
echo "Host: $(nproc) CPUs ($cpu), load average $load_before before, $load_after after."
echo "Programs: $(grep -h '^[a-z]*	#' "$build/raw.tsv" | cut -f2- | sed 's/^# //' | sort -u | paste -sd';' | sed 's/;/; /g')."
echo "Packages: golang-golang-x-time-dev $(dpkg-query -W -f='${Version}' golang-golang-x-time-dev), libguava-java $(dpkg-query -W -f='${Version}' libguava-java)."
echo "Threads (goroutines) share one limiter. Medians over $rounds rounds x $reps repetitions of ~$ms ms. Lower is better;"
echo "a ratio above 1 means ratelimit is faster."
echo
awk -F'\t' '
  { cpu[$1, $2, $3] = $4; wall[$1, $2, $3] = $5; low[$1, $2, $3] = $6; high[$1, $2, $3] = $7; granted[$1, $2, $3] = $8 }
  function f(x) { return x == "" ? "" : sprintf(x < 100 ? "%.1f" : "%.0f", x) }
  function ratio(a, b) { return (a == "" || b == "" || b <= 0) ? "" : sprintf("%.2f", a / b) }
  function line(label, c, g, j) { printf "| %s | %s | %s | %s | %s | %s |\n", label, f(c), f(g), f(j), ratio(g, c), ratio(j, c) }
  function row(label, cop, op, threads) { line(label, cpu["cpp", cop, threads], cpu["go", op, threads], cpu["java", op, threads]) }
  function net(label, cop, cclock, op) {
    line(label, cpu["cpp", cop, 1] - cpu["cpp", cclock, 1], cpu["go", op, 1] - cpu["go", "clock", 1],
         cpu["java", op, 1] - cpu["java", "clock", 1])
  }
  function spread(label, lang, op, threads) {
    return sprintf("%s-%s (%s)", f(low[lang, op, threads]), f(high[lang, op, threads]), granted[lang, op, threads])
  }
  function spreads(label, cop, op, threads) {
    printf "| %s | %s | %s | %s |\n", label, spread(label, "cpp", cop, threads), spread(label, "go", op, threads),
      spread(label, "java", op, threads)
  }
  function throughput(threads) {
    printf "| grant, %d thread%s | %s | %s | %s | %s | %s | %s |\n", threads, (threads > 1 ? "s" : ""),
      f(wall["cpp", "grant", threads]), f(wall["cpp", "tsc_grant", threads]), f(wall["go", "grant", threads]),
      f(wall["java", "grant", threads]), ratio(wall["go", "grant", threads], wall["cpp", "grant", threads]),
      ratio(wall["java", "grant", threads], wall["cpp", "grant", threads])
  }
  END {
    print "CPU ns per call (the threads'\'' CPU time / all calls; at 2 and 4 threads, the CPU each call costs under contention):"
    print ""
    print "| operation | ratelimit (ns/op) | Go x/time/rate | Guava | ratio Go/ratelimit | ratio Guava/ratelimit |"
    print "|---|---:|---:|---:|---:|---:|"
    row("clock read alone: `steady_clock::now()` / `time.Now()` / `System.nanoTime()`", "clock", "clock", 1)
    row("grant, 1 thread: `try_acquire(1)` / `Allow()` / `tryAcquire()`", "grant", "grant", 1)
    row("refuse, 1 thread", "refuse", "refuse", 1)
    row("grant, 2 threads, one limiter", "grant", "grant", 2)
    row("grant, 4 threads, one limiter", "grant", "grant", 4)
    net("grant minus the clock read, 1 thread", "grant", "clock", "grant")
    net("refuse minus the clock read, 1 thread", "refuse", "clock", "refuse")
    row("ratelimit on `tsc_clock`: clock read alone (`tsc_clock::now()`)", "tsc_clock", "clock", 1)
    row("`token_bucket<tsc_clock>`: grant, 1 thread", "tsc_grant", "grant", 1)
    row("`token_bucket<tsc_clock>`: refuse, 1 thread", "tsc_refuse", "refuse", 1)
    row("`token_bucket<tsc_clock>`: grant, 2 threads", "tsc_grant", "grant", 2)
    row("`token_bucket<tsc_clock>`: grant, 4 threads", "tsc_grant", "grant", 4)
    print ""
    print "Throughput: wall ns per call, all threads together (1 / calls per ns; at 4 threads, 2 run at a time on 2 CPUs):"
    print ""
    print "| operation | ratelimit | ratelimit, `tsc_clock` | Go x/time/rate | Guava | ratio Go/ratelimit | ratio Guava/ratelimit |"
    print "|---|---:|---:|---:|---:|---:|---:|"
    throughput(1); throughput(2); throughput(4)
    print ""
    print "Spread: lowest-highest CPU ns per call of any repetition (share of calls granted: 1 on a grant path, 0 on a refuse path):"
    print ""
    print "| operation | ratelimit | Go x/time/rate | Guava |"
    print "|---|---|---|---|"
    spreads("clock read", "clock", "clock", 1)
    spreads("grant, 1 thread", "grant", "grant", 1)
    spreads("refuse, 1 thread", "refuse", "refuse", 1)
    spreads("grant, 2 threads", "grant", "grant", 2)
    spreads("grant, 4 threads", "grant", "grant", 4)
    spreads("`tsc_clock`: clock read", "tsc_clock", "clock", 1)
    spreads("`tsc_clock`: grant, 1 thread", "tsc_grant", "grant", 1)
    spreads("`tsc_clock`: refuse, 1 thread", "tsc_refuse", "refuse", 1)
    spreads("`tsc_clock`: grant, 2 threads", "tsc_grant", "grant", 2)
    spreads("`tsc_clock`: grant, 4 threads", "tsc_grant", "grant", 4)
  }' "$build/summary.tsv"
