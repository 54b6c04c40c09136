// asio_gate: a thousand C++20 coroutines on ONE thread share one LLM gate.
// Each reserves its quota at once and awaits the reservation on an Asio timer
// instead of sleeping, so the single io thread never blocks: it runs whichever
// request's time has come, and the gate's limits hold across all of them.
//
//   asio_gate [--tasks N] [--rpm N] [--tpm N] [--latency-ms N]

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <string>
#include <thread>

// Asio before 1.24 (Debian 12 ships 1.22) turns co_await support on for
// clang only with <experimental/coroutine>; clang 14 has C++20's <coroutine>.
#if defined(__clang__) && defined(__cpp_impl_coroutine) && !defined(ASIO_HAS_CO_AWAIT)
#define ASIO_HAS_CO_AWAIT 1
#endif
#include <asio.hpp>
#include <ratelimit/llm/gate.hpp>

#include "../common/flags.hpp"

namespace {

// Asio's steady_timer runs on std::chrono::steady_clock, so a ticket's
// ready_at() is a time point the timer takes as is.
using clock_type = std::chrono::steady_clock;
using gate_type = ratelimit::llm::gate<clock_type>;
using ratelimit::llm::request_cost;
using ratelimit::llm::usage;

/// What the tasks saw. Only the io thread touches it, so it needs no lock.
struct observations {
    std::thread::id io_thread = std::this_thread::get_id();
    std::int64_t finished = 0;
    std::int64_t off_thread = 0;  ///< tasks that ran on another thread: must stay 0
    std::int64_t in_flight = 0;
    std::int64_t peak_in_flight = 0;
    clock_type::duration longest_reserve{};
    clock_type::time_point last_send{};
    std::exception_ptr error;
};

/// Task i's estimate (prompt + most output) and what its response reports using.
constexpr request_cost cost_of(std::int64_t i) { return {50 + (i % 7) * 10, 64}; }
constexpr usage usage_of(std::int64_t i) { return {cost_of(i).input_tokens, 16 + i % 32}; }
constexpr std::int64_t largest_cost = cost_of(6).total();

/// One request: reserve, await the reservation on a timer, "send", complete.
asio::awaitable<void> request(gate_type& gate, std::int64_t i, std::chrono::milliseconds latency,
                              observations& seen) {
    asio::steady_timer timer(co_await asio::this_coro::executor);

    const clock_type::time_point before = clock_type::now();
    gate_type::ticket ticket = gate.reserve(cost_of(i));  // never waits here: see main()
    seen.longest_reserve = std::max(seen.longest_reserve, clock_type::now() - before);

    // ticket.wait() would sleep the thread; await the same moment on the
    // timer instead: ready_at(), or the end of a 429 pause that began since.
    for (;;) {
        const clock_type::time_point until = std::max(ticket.ready_at(), gate.paused_until());
        if (until <= clock_type::now()) break;
        timer.expires_at(until);
        co_await timer.async_wait(asio::use_awaitable);
    }

    // "Send" it: a real client would co_await its HTTP call here.
    if (std::this_thread::get_id() != seen.io_thread) ++seen.off_thread;
    seen.last_send = std::max(seen.last_send, clock_type::now());
    seen.peak_in_flight = std::max(seen.peak_in_flight, ++seen.in_flight);
    timer.expires_after(latency);
    co_await timer.async_wait(asio::use_awaitable);
    --seen.in_flight;

    ticket.complete(200, usage_of(i));  // refunds the unused part of the estimate
    ++seen.finished;
}

double seconds(clock_type::duration d) { return std::chrono::duration<double>(d).count(); }

}  // namespace

int main(int argc, char** argv) {
    std::int64_t tasks = 1000;
    std::int64_t rpm = 30'000;
    std::int64_t tpm = 6'000'000;
    std::int64_t latency_ms = 20;
    examples::flags::parser flags("asio_gate",
                                  "Runs N coroutines on one thread, each awaiting its LLM gate reservation on an "
                                  "Asio timer,\nthen sending a simulated request; prints the rate achieved.");
    flags.integer("tasks", tasks, "N", "requests, one coroutine each (default 1000)", std::int64_t{1},
                  std::int64_t{1'000'000});
    flags.integer("rpm", rpm, "N", "requests per minute (default 30000)", std::int64_t{1},
                  std::int64_t{1'000'000'000});
    flags.integer("tpm", tpm, "N", "tokens per minute (default 6000000)", std::int64_t{1},
                  std::int64_t{1'000'000'000'000});
    flags.integer("latency-ms", latency_ms, "N", "simulated response time (default 20)", std::int64_t{0},
                  std::int64_t{60'000});
    examples::flags::parse_or_exit(flags, argc, argv);
    if (tpm < largest_cost) {
        examples::flags::usage_failure(flags, "--tpm must be at least " + std::to_string(largest_cost) +
                                                  ", the largest request's estimate");
    }

    ratelimit::llm::gate_config config;
    config.requests_per_minute = rpm;
    config.tokens_per_minute = tpm;
    // No concurrency bound. reserve() blocks only to wait for a concurrency
    // slot; the quota it reserves at once and reports as ready_at(). With a
    // bound, the first coroutine beyond it would block the only thread, and
    // the requests holding the slots, which need that thread to finish,
    // never would: a deadlock. Bound concurrency in the coroutines instead.
    config.max_concurrent = 0;
    gate_type gate(config);

    // The gate's buckets, as it sizes them: headroom · limit per minute,
    // holding a burst_window's share of that (at least 1).
    const double allowed_per_second = static_cast<double>(rpm) * config.headroom / 60.0;
    const double allowed_tokens_per_second = static_cast<double>(tpm) * config.headroom / 60.0;
    const double window = std::chrono::duration<double>(config.burst_window).count();
    const double request_burst = std::max(1.0, std::floor(allowed_per_second * window));
    const double token_burst = std::max(1.0, std::floor(allowed_tokens_per_second * window));

    asio::io_context io;  // one context, run below on this (the main) thread only
    observations seen;
    const clock_type::time_point start = clock_type::now();
    for (std::int64_t i = 0; i < tasks; ++i) {
        asio::co_spawn(io, request(gate, i, std::chrono::milliseconds{latency_ms}, seen),
                       [&seen](std::exception_ptr e) {
                           if (e && !seen.error) seen.error = e;
                       });
    }
    io.run();
    const double elapsed = seconds(clock_type::now() - start);

    if (seen.error) {
        try {
            std::rethrow_exception(seen.error);
        } catch (const std::exception& e) {
            std::fprintf(stderr, "asio_gate: a task failed: %s\n", e.what());
            return 1;
        }
    }

    const ratelimit::llm::stats s = gate.snapshot();
    const double span = seconds(seen.last_send - start);  // until the last send
    const double bound = request_burst + allowed_per_second * span;
    // The rate after the initial burst, (sent - burst) / T, as text.
    const auto after_burst = [span](double total, double burst) -> std::string {
        if (total <= burst || span <= 0) return "all within the initial burst";
        char text[64];
        std::snprintf(text, sizeof text, "%.1f/s achieved after the burst", (total - burst) / span);
        return text;
    };
    std::printf("asio_gate: %lld tasks on one thread; limits %lld requests/min, %lld tokens/min "
                "(the gate keeps %.0f%%)\n",
                static_cast<long long>(tasks), static_cast<long long>(rpm), static_cast<long long>(tpm),
                config.headroom * 100);
    std::printf("finished %lld/%lld tasks in %.3f s (peak %lld in flight)\n", static_cast<long long>(seen.finished),
                static_cast<long long>(tasks), elapsed, static_cast<long long>(seen.peak_in_flight));
    std::printf("requests: %lld sent within %.3f s <= burst + rate*T = %.0f + %.1f/s * %.3f s = %.1f\n",
                static_cast<long long>(s.admitted), span, request_burst, allowed_per_second, span, bound);
    std::printf("  %s (allowed %.1f/s, limit %.1f/s)\n",
                after_burst(static_cast<double>(s.admitted), request_burst).c_str(), allowed_per_second,
                static_cast<double>(rpm) / 60.0);
    std::printf("tokens: %lld reserved (estimates), %s (allowed %.0f/s, limit %.0f/s)\n",
                static_cast<long long>(s.tokens_reserved),
                after_burst(static_cast<double>(s.tokens_reserved), token_burst).c_str(), allowed_tokens_per_second,
                static_cast<double>(tpm) / 60.0);
    std::printf("  %lld used, %lld refunded; mean wait for the quota %.3f s\n", static_cast<long long>(s.tokens_used),
                static_cast<long long>(s.tokens_refunded),
                s.admitted > 0 ? seconds(s.total_wait) / static_cast<double>(s.admitted) : 0.0);
    std::printf("no thread blocked: the io thread ran all %lld tasks; the longest gate.reserve() took %.3f ms\n",
                static_cast<long long>(seen.finished - seen.off_thread),
                std::chrono::duration<double, std::milli>(seen.longest_reserve).count());

    if (seen.finished != tasks || seen.off_thread != 0 || static_cast<double>(s.admitted) > bound + 1) {
        std::fprintf(stderr, "asio_gate: FAILED (finished %lld of %lld, %lld off the io thread, %lld sent > %.1f)\n",
                     static_cast<long long>(seen.finished), static_cast<long long>(tasks),
                     static_cast<long long>(seen.off_thread), static_cast<long long>(s.admitted), bound + 1);
        return 1;
    }
    return 0;
}
