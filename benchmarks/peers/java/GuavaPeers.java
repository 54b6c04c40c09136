// Java's side of benchmarks/peers/run.sh: Guava's RateLimiter.tryAcquire() on
// the grant and refuse paths, and System.nanoTime() alone, timed by the same
// loop as the C++ (cpp/main.cpp) and Go (go/main.go) programs.
//
// Method (the same in the three programs): for each operation and thread
// count, one repetition starts T threads at once, each making calls/T calls on
// ONE shared RateLimiter. It reports the CPU time the threads spent (each
// thread's own CPU clock, ThreadMXBean, summed) per call and the wall time
// from the start until the last thread finishes per call (at 2 and 4 threads
// the inverse of the throughput). One repetition lasts about --ms
// milliseconds; a warm-up repetition is discarded; benchmarks/peers/run.sh
// takes the medians. Before any timing, each loop runs for a second
// (--warmup-ms) so the JIT has compiled it and RateLimiter's methods (C2).
//
//   javac -cp /usr/share/java/guava.jar -d OUT GuavaPeers.java
//   java -cp /usr/share/java/guava.jar:OUT GuavaPeers [--reps N] [--ms M] [--warmup-ms W]
//
// Output: tab-separated lines `rep <op> <threads> <cpu ns/call> <wall ns/call> <granted>`,
// one per repetition (granted: the share of calls granted, "-" for a clock
// read); lines starting with # are comments.

import com.google.common.util.concurrent.RateLimiter;

import java.lang.management.ManagementFactory;
import java.lang.management.ThreadMXBean;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.atomic.AtomicInteger;

public final class GuavaPeers {
    /** One operation's loop: makes n calls and returns the sum of their results. */
    interface Loop {
        long run(long n);
    }

    // One loop per operation, each a direct (monomorphic, inlinable) call, as in C++ and Go.

    static long tryAcquireLoop(RateLimiter limiter, long n) {
        long granted = 0;
        for (long i = 0; i < n; i++) {
            if (limiter.tryAcquire()) granted++;
        }
        return granted;
    }

    static long nanoTimeLoop(long n) {
        long sum = 0;
        for (long i = 0; i < n; i++) sum += System.nanoTime();
        return sum;
    }

    static final ThreadMXBean THREADS = ManagementFactory.getThreadMXBean();

    /**
     * Starts `threads` threads together, each running loop(perThread); returns
     * {wall ns to the last end, CPU ns summed over the threads, sum of the results}.
     */
    static long[] repetition(int threads, long perThread, Loop loop) throws InterruptedException {
        AtomicInteger ready = new AtomicInteger();
        CountDownLatch start = new CountDownLatch(1);
        long[] ends = new long[threads];
        long[] cpus = new long[threads];
        long[] sums = new long[threads];
        Thread[] workers = new Thread[threads];
        for (int t = 0; t < threads; t++) {
            final int index = t;
            workers[t] = new Thread(() -> {
                ready.incrementAndGet();
                try {
                    start.await();
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                    return;
                }
                long cpuStart = THREADS.getCurrentThreadCpuTime();
                sums[index] = loop.run(perThread);
                cpus[index] = THREADS.getCurrentThreadCpuTime() - cpuStart;
                ends[index] = System.nanoTime();
            });
            workers[t].start();
        }
        while (ready.get() < threads) Thread.onSpinWait();
        long begin = System.nanoTime();
        start.countDown();
        long cpu = 0;
        long sum = 0;
        long last = begin;
        for (int t = 0; t < threads; t++) {
            workers[t].join();
            cpu += cpus[t];
            sum += sums[t];
            last = Math.max(last, ends[t]);
        }
        return new long[] {last - begin, cpu, sum};
    }

    static int reps = 9;
    static int ms = 100;
    static int warmupMs = 1000;

    static void measure(String op, int threads, boolean isLimiter, Loop loop) throws InterruptedException {
        // Warm up the JIT: run the loop on one thread for warmupMs.
        long warmEnd = System.nanoTime() + warmupMs * 1_000_000L;
        while (System.nanoTime() < warmEnd) repetition(1, 100_000, loop);
        // Calibrate on one thread: double the calls until a run takes 20 ms.
        long calls = 1000;
        long took;
        while ((took = repetition(1, calls, loop)[0]) < 20_000_000L) calls *= 2;
        double nsPerCall = (double) took / calls;
        long perThread = Math.max(1, (long) (ms * 1e6 / nsPerCall / threads));
        double allCalls = (double) perThread * threads;

        repetition(threads, perThread, loop); // warm-up, discarded
        for (int r = 0; r < reps; r++) {
            long[] result = repetition(threads, perThread, loop);
            String granted = isLimiter ? String.format("%.3f", result[2] / allCalls) : "-";
            System.out.printf("rep\t%s\t%d\t%.2f\t%.2f\t%s%n", op, threads, result[1] / allCalls, result[0] / allCalls, granted);
        }
        System.out.flush();
    }

    static int positive(String flag, String value) {
        int n;
        try {
            n = Integer.parseInt(value);
        } catch (NumberFormatException e) {
            n = 0;
        }
        if (n <= 0) {
            System.err.println("GuavaPeers: " + flag + " must be a positive integer");
            System.exit(2);
        }
        return n;
    }

    public static void main(String[] args) throws InterruptedException {
        for (int i = 0; i < args.length; i++) {
            if (args[i].equals("--help")) {
                System.out.println("usage: GuavaPeers [--reps N] [--ms M] [--warmup-ms W]");
                return;
            } else if (args[i].equals("--reps") && i + 1 < args.length) {
                reps = positive(args[i], args[++i]);
            } else if (args[i].equals("--ms") && i + 1 < args.length) {
                ms = positive(args[i], args[++i]);
            } else if (args[i].equals("--warmup-ms") && i + 1 < args.length) {
                warmupMs = positive(args[i], args[++i]);
            } else {
                System.err.println("GuavaPeers: unknown or incomplete flag '" + args[i] + "' (see --help)");
                System.exit(2);
            }
        }
        System.out.printf("# Guava RateLimiter, Java %s (%s), %d CPUs, %d reps of ~%d ms after %d ms of JIT warm-up%n",
                System.getProperty("java.version"), System.getProperty("java.vm.name"),
                Runtime.getRuntime().availableProcessors(), reps, ms, warmupMs);

        measure("clock", 1, false, GuavaPeers::nanoTimeLoop);
        for (int threads : new int[] {1, 2, 4}) {
            // A limiter that never runs dry: 10^9 permits/s (SmoothBursty, 1 s of burst).
            RateLimiter limiter = RateLimiter.create(1e9);
            measure("grant", threads, true, n -> tryAcquireLoop(limiter, n));
        }
        // An empty limiter refilled once an hour: the first call takes the next
        // permit (Guava grants one ahead), every later call is refused.
        RateLimiter empty = RateLimiter.create(1.0 / 3600);
        empty.tryAcquire();
        measure("refuse", 1, true, n -> tryAcquireLoop(empty, n));
    }
}
