// Go's side of benchmarks/peers/run.sh: golang.org/x/time/rate's Limiter.Allow
// on the grant and refuse paths, and time.Now() alone, timed by the same loop
// as the C++ (cpp/main.cpp) and Java (java/GuavaPeers.java) programs.
//
// Method (the same in the three programs): for each operation and goroutine
// count, one repetition starts G goroutines at once, each making calls/G calls
// on ONE shared Limiter. It reports the CPU time spent per call and the wall
// time from the start until the last goroutine finishes per call (at 2 and 4
// goroutines the inverse of the throughput). A goroutine has no CPU clock of
// its own, so the CPU time is the process's (getrusage: the worker threads,
// plus the runtime's own threads, which idle here, and any Go scheduler
// spinning while goroutines wait for the Limiter's mutex). One repetition
// lasts about -ms milliseconds; a warm-up repetition is discarded;
// benchmarks/peers/run.sh takes the medians.
//
// Built offline against Debian's golang-golang-x-time-dev, in GOPATH mode:
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -o peers_go main.go
//
// Output: tab-separated lines `rep <op> <goroutines> <cpu ns/call> <wall ns/call> <granted>`,
// one per repetition (granted: the share of calls granted, "-" for a clock
// read); lines starting with # are comments.
package main

import (
	"flag"
	"fmt"
	"os"
	"runtime"
	"sync"
	"syscall"
	"time"

	"golang.org/x/time/rate"
)

// processCPU is the CPU time the process has used so far.
func processCPU() time.Duration {
	var usage syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &usage); err != nil {
		panic(err)
	}
	return time.Duration(usage.Utime.Nano() + usage.Stime.Nano())
}

// repetition starts g goroutines together, each running loop(callsPerG), and
// returns the wall time until the last one finishes, the CPU time used meanwhile
// and the sum of their results.
func repetition(g int, callsPerG int64, loop func(int64) int64) (wall, cpu time.Duration, sum int64) {
	var ready, done sync.WaitGroup
	start := make(chan struct{})
	sums := make([]int64, g)
	ends := make([]time.Time, g)
	ready.Add(g)
	done.Add(g)
	for i := 0; i < g; i++ {
		go func(i int) {
			defer done.Done()
			ready.Done()
			<-start
			sums[i] = loop(callsPerG)
			ends[i] = time.Now()
		}(i)
	}
	ready.Wait()
	cpuStart := processCPU()
	begin := time.Now()
	close(start)
	done.Wait()
	cpu = processCPU() - cpuStart
	last := ends[0]
	for i := range ends {
		if ends[i].After(last) {
			last = ends[i]
		}
		sum += sums[i]
	}
	return last.Sub(begin), cpu, sum
}

// The loops: one per operation, so each call is direct and inlinable, as in C++ and Java.

func allowLoop(lim *rate.Limiter) func(int64) int64 {
	return func(n int64) int64 {
		var granted int64
		for i := int64(0); i < n; i++ {
			if lim.Allow() {
				granted++
			}
		}
		return granted
	}
}

func nowLoop(n int64) int64 {
	var sum int64
	for i := int64(0); i < n; i++ {
		sum += time.Now().UnixNano()
	}
	return sum
}

func measure(reps, ms int, op string, g int, isLimiter bool, loop func(int64) int64) {
	// Calibrate on one goroutine: double the calls until a run takes 20 ms.
	calls := int64(1000)
	var took time.Duration
	for {
		took, _, _ = repetition(1, calls, loop)
		if took >= 20*time.Millisecond {
			break
		}
		calls *= 2
	}
	nsPerCall := float64(took.Nanoseconds()) / float64(calls)
	perG := int64(float64(ms) * 1e6 / nsPerCall / float64(g))
	if perG < 1 {
		perG = 1
	}
	allCalls := float64(perG * int64(g))

	repetition(g, perG, loop) // warm-up, discarded
	for r := 0; r < reps; r++ {
		wall, cpu, sum := repetition(g, perG, loop)
		granted := "-"
		if isLimiter {
			granted = fmt.Sprintf("%.3f", float64(sum)/allCalls)
		}
		fmt.Printf("rep\t%s\t%d\t%.2f\t%.2f\t%s\n", op, g, float64(cpu.Nanoseconds())/allCalls,
			float64(wall.Nanoseconds())/allCalls, granted)
	}
}

func main() {
	reps := flag.Int("reps", 9, "repetitions per operation (the median is printed)")
	ms := flag.Int("ms", 100, "milliseconds per repetition, about")
	flag.Parse()
	if *reps <= 0 || *ms <= 0 || flag.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "peers_go: -reps and -ms must be positive, no arguments (see -help)")
		os.Exit(2)
	}
	fmt.Printf("# golang.org/x/time/rate, %s, GOMAXPROCS=%d, %d reps of ~%d ms\n",
		runtime.Version(), runtime.GOMAXPROCS(0), *reps, *ms)

	measure(*reps, *ms, "clock", 1, false, nowLoop)
	for _, g := range []int{1, 2, 4} {
		// A limiter that never runs dry: 10^12 events/s, 10^9 of burst (a finite rate:
		// rate.Inf would take Allow's shortcut that skips the token arithmetic).
		lim := rate.NewLimiter(rate.Limit(1e12), 1_000_000_000)
		measure(*reps, *ms, "grant", g, true, allowLoop(lim))
	}
	// An empty limiter refilled once an hour: every call is refused.
	lim := rate.NewLimiter(rate.Every(time.Hour), 1)
	for lim.Allow() {
	}
	measure(*reps, *ms, "refuse", 1, true, allowLoop(lim))
}
