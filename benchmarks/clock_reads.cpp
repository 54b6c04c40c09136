// How many times each limiter reads its clock per try_acquire, on the allow
// and the deny path: the clock read is the floor of every timed limiter
// (see baseline_now in ratelimit_bench), so this count explains most of the
// differences in the benchmark table. Uses an empty clock that forwards to
// steady_clock and counts its calls.
#include <ratelimit/ratelimit.hpp>

#include <chrono>
#include <cstdint>
#include <cstdio>

namespace {

using namespace std::chrono_literals;
using ratelimit::rate;

std::int64_t reads = 0;

/// steady_clock, counted.
struct counting_clock {
    using rep = std::int64_t;
    using period = std::nano;
    using duration = std::chrono::nanoseconds;
    using time_point = std::chrono::time_point<counting_clock, duration>;
    [[nodiscard]] time_point now() const noexcept {
        ++reads;
        return time_point{std::chrono::duration_cast<duration>(std::chrono::steady_clock::now().time_since_epoch())};
    }
};
static_assert(ratelimit::clock<counting_clock>);
static_assert(std::is_empty_v<counting_clock>);

constexpr int calls = 1000;

/// Average clock reads over `calls` calls of f, and the share of them granted.
template <class F>
void row(const char* name, F f) {
    int granted = 0;
    const std::int64_t before = reads;
    for (int i = 0; i < calls; ++i) granted += f() ? 1 : 0;
    std::printf("| %s | %.2f | %.2f |\n", name, static_cast<double>(reads - before) / calls,
                static_cast<double>(granted) / calls);
}

template <class L>
L& drained(L& l) {
    while (l.try_acquire(1)) {
    }
    return l;
}

ratelimit::adaptive_config adaptive_at(rate r, std::int64_t capacity) {
    ratelimit::adaptive_config cfg;
    cfg.initial_rate = cfg.min_rate = cfg.max_rate = r;
    cfg.capacity = capacity;
    return cfg;
}

ratelimit::quota_snapshot remaining_for_an_hour(std::int64_t remaining) {
    ratelimit::quota_snapshot snapshot;
    snapshot.requests = ratelimit::quota_state{std::int64_t{1} << 62, remaining, std::chrono::nanoseconds{1h}};
    return snapshot;
}

}  // namespace

int main() {
    using C = counting_clock;
    const rate fast = rate::per_second(1e12);
    const std::int64_t big = 1'000'000'000;
    std::printf("| limiter, path | clock reads per try_acquire | granted |\n|---|---:|---:|\n");

    ratelimit::token_bucket<C> tb_allow(fast, big), tb_deny(rate::per_hour(1), 1);
    drained(tb_deny);
    row("token_bucket allow", [&] { return tb_allow.try_acquire(1); });
    row("token_bucket deny", [&] { return tb_deny.try_acquire(1); });

    ratelimit::dual_bucket<C> db_allow(fast, big, fast, big), db_deny(fast, big, rate::per_hour(1), 1);
    drained(db_deny);
    row("dual_bucket allow", [&] { return db_allow.try_acquire(1); });
    row("dual_bucket deny", [&] { return db_deny.try_acquire(1); });

    ratelimit::leaky_bucket<C> lb_allow(fast, 1'000'000), lb_deny(rate::per_hour(1), 0);
    drained(lb_deny);
    row("leaky_bucket allow", [&] { return lb_allow.try_acquire(1); });
    row("leaky_bucket deny", [&] { return lb_deny.try_acquire(1); });

    ratelimit::fixed_window<C> fw_allow(std::int64_t{1} << 30, 10s), fw_deny(1, 1h);
    drained(fw_deny);
    row("fixed_window allow", [&] { return fw_allow.try_acquire(1); });
    row("fixed_window deny", [&] { return fw_deny.try_acquire(1); });

    ratelimit::sliding_window_log<C> sl_allow(std::int64_t{1} << 20, 1ms), sl_deny(1, 1h);
    drained(sl_deny);
    row("sliding_window_log allow", [&] { return sl_allow.try_acquire(1); });
    row("sliding_window_log deny", [&] { return sl_deny.try_acquire(1); });

    ratelimit::sliding_window_counter<C> sc_allow(ratelimit::sliding_window_counter<C>::max_limit, 100ms),
        sc_deny(1, 1h);
    drained(sc_deny);
    row("sliding_window_counter allow", [&] { return sc_allow.try_acquire(1); });
    row("sliding_window_counter deny", [&] { return sc_deny.try_acquire(1); });

    ratelimit::concurrency_limiter<C> cl_allow(1000), cl_deny(1);
    drained(cl_deny);
    row("concurrency_limiter allow (+ release)", [&] {
        const bool ok = cl_allow.try_acquire(1);
        if (ok) cl_allow.release(1);
        return ok;
    });
    row("concurrency_limiter deny", [&] { return cl_deny.try_acquire(1); });

    ratelimit::token_bucket<C> a(fast, big), b(fast, big), plenty(fast, big), empty(rate::per_hour(1), 1);
    drained(empty);
    auto all_allow = ratelimit::all_of(a, b);
    auto all_deny = ratelimit::all_of(plenty, empty);
    row("all_of(token_bucket x2) allow", [&] { return all_allow.try_acquire(1); });
    row("all_of(token_bucket x2) deny", [&] { return all_deny.try_acquire(1); });

    ratelimit::adaptive_limiter<C> ad_allow(adaptive_at(fast, big)), ad_deny(adaptive_at(rate::per_hour(1), 1));
    drained(ad_deny);
    row("adaptive_limiter allow", [&] { return ad_allow.try_acquire(1); });
    row("adaptive_limiter deny", [&] { return ad_deny.try_acquire(1); });

    ratelimit::header_limiter<C> hl_allow, hl_deny;
    hl_allow.update(remaining_for_an_hour(std::int64_t{1} << 62));
    hl_deny.update(remaining_for_an_hour(0));
    row("header_limiter allow", [&] { return hl_allow.try_acquire(1); });
    row("header_limiter deny", [&] { return hl_deny.try_acquire(1); });

    ratelimit::keyed<ratelimit::token_bucket<C>> k_allow([] { return ratelimit::token_bucket<C>(rate::per_second(1e12), 1'000'000'000); });
    ratelimit::keyed<ratelimit::token_bucket<C>> k_deny([] { return ratelimit::token_bucket<C>(rate::per_hour(1), 1); });
    (void)k_allow.try_acquire("user-000001", 1);
    (void)k_deny.try_acquire("user-000001", 1);
    row("keyed<token_bucket> allow (existing key)", [&] { return k_allow.try_acquire("user-000001", 1); });
    row("keyed<token_bucket> deny (existing key)", [&] { return k_deny.try_acquire("user-000001", 1); });
    return 0;
}
