#pragma once
// ratelimit::tsc_clock: a steady clock read from the CPU's time-stamp counter.

#include <chrono>
#include <cstdint>
#include <thread>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#include <x86intrin.h>
#define RATELIMIT_HAS_TSC 1
#else
#define RATELIMIT_HAS_TSC 0
#endif

namespace ratelimit {

/// A steady clock that reads the x86-64 invariant time-stamp counter
/// (`lfence; rdtsc`, about 20 ns on this project's virtual machines, 11 ns
/// without the fence) instead of asking the kernel's clock source (about
/// 26 ns for steady_clock there, most of a limiter's cost). Its nanoseconds
/// count from steady_clock's epoch.
///
/// Calibration: on first use, the counter is timed against steady_clock over
/// 20 ms, and time is then steady_clock at calibration plus counter ticks
/// times that frequency (fixed point, 2^-32 ns per tick). It is used only
/// when the CPU reports an invariant TSC (CPUID 0x80000007, EDX bit 8: same
/// rate in every core and power state); otherwise, and off x86-64, now() is
/// steady_clock::now(). uses_tsc() tells which.
///
/// Guarantee: monotonic on one thread, and ordered across threads: a read
/// that happens after another thread's read (through any synchronisation,
/// e.g. an acquire load of a value it stored) is not earlier, as far as the
/// hardware synchronises the counters (invariant TSCs are). A bare `rdtsc`
/// is not ordered: the CPU may execute it before the load that observed the
/// other thread's reading, and then it returns an earlier time (seen on this
/// project's AMD EPYC VMs in up to 1 of 4 hand-offs, by up to ~170 ns). The
/// `lfence` before it (dispatch-serialising on Intel, and on AMD as Linux
/// configures it) waits for those loads; `rdtscp` would do the same but is
/// not offered by every hypervisor (it is not on ours). It drifts from
/// steady_clock by the calibration's error, a few parts per million: fine for
/// rate limits, not for wall time.
///
/// Empty type with a static now(): a limiter holding it costs no space for it.
class tsc_clock {
public:
    using rep = std::int64_t;
    using period = std::nano;
    using duration = std::chrono::nanoseconds;
    using time_point = std::chrono::time_point<tsc_clock, duration>;
    static constexpr bool is_steady = true;

    /// The current time: steady_clock's nanoseconds, read through the TSC when it is invariant.
    static time_point now() noexcept {
#if RATELIMIT_HAS_TSC
        const calibration& c = calibrated();
        if (c.usable) {
            const std::uint64_t ticks = ordered_ticks() - c.base_ticks;
            __extension__ using wide = unsigned __int128;
            const auto ns = static_cast<rep>((static_cast<wide>(ticks) * c.ns_per_tick_q32) >> 32);
            return time_point{duration{c.base_ns + ns}};
        }
#endif
        return time_point{std::chrono::duration_cast<duration>(std::chrono::steady_clock::now().time_since_epoch())};
    }

    /// True when now() reads the invariant TSC, false when it falls back to steady_clock.
    static bool uses_tsc() noexcept {
#if RATELIMIT_HAS_TSC
        return calibrated().usable;
#else
        return false;
#endif
    }

private:
#if RATELIMIT_HAS_TSC
    struct calibration {
        bool usable = false;
        std::uint64_t base_ticks = 0;
        rep base_ns = 0;
        std::uint64_t ns_per_tick_q32 = 0;  // nanoseconds per tick, times 2^32
    };

    /// The counter, read only after every earlier load has completed.
    static std::uint64_t ordered_ticks() noexcept {
        _mm_lfence();
        return __rdtsc();
    }

    static bool invariant_tsc() noexcept {
        unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
        if (__get_cpuid(0x80000000U, &eax, &ebx, &ecx, &edx) == 0 || eax < 0x80000007U) return false;
        if (__get_cpuid(0x80000007U, &eax, &ebx, &ecx, &edx) == 0) return false;
        return (edx & (1U << 8)) != 0;
    }

    static rep steady_ns() noexcept {
        return std::chrono::duration_cast<duration>(std::chrono::steady_clock::now().time_since_epoch()).count();
    }

    static calibration measure() noexcept {
        calibration c;
        if (!invariant_tsc()) return c;
        const rep start_ns = steady_ns();
        const std::uint64_t start_ticks = ordered_ticks();
        std::this_thread::sleep_for(std::chrono::milliseconds{20});
        const rep end_ns = steady_ns();
        const std::uint64_t end_ticks = ordered_ticks();
        if (end_ticks <= start_ticks || end_ns <= start_ns) return c;
        __extension__ using wide = unsigned __int128;
        c.ns_per_tick_q32 = static_cast<std::uint64_t>((static_cast<wide>(end_ns - start_ns) << 32) / (end_ticks - start_ticks));
        c.base_ticks = end_ticks;
        c.base_ns = end_ns;
        c.usable = c.ns_per_tick_q32 != 0;
        return c;
    }

    static const calibration& calibrated() noexcept {
        static const calibration c = measure();
        return c;
    }
#endif
};

}  // namespace ratelimit
