// Seeded random schedules on token_bucket<manual_clock>: the bound
// "in any interval of length T at most capacity + rate·T permits" over every
// grant (reserved permits counted at ready_at), exact agreement with a
// reference token bucket, and convergence to the rate under sustained load.

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <ratelimit/detail/gcra.hpp>
#include <ratelimit/token_bucket.hpp>

#include "support/catch.hpp"

using namespace std::chrono_literals;
using ratelimit::manual_clock;
using ratelimit::rate;
using bucket = ratelimit::token_bucket<manual_clock>;
using time_point = manual_clock::time_point;

namespace {

struct grant {
    std::int64_t at_ns;  ///< when the permits are usable
    std::int64_t n;
};

struct window_report {
    long double worst_excess;  ///< max over windows of count - (capacity + rate·T); <= 0 when the bound holds
    std::int64_t from_ns;
    std::int64_t to_ns;
    std::int64_t total;
};

/// The largest excess of any window [t_i, t_j] between two grants over
/// capacity + T / interval. Prefix sums make it O(n log n): for each window
/// end j, the worst start is the i <= j minimizing S_i - t_i / interval.
window_report worst_window(std::vector<grant> grants, std::int64_t capacity, long double interval_ns) {
    std::sort(grants.begin(), grants.end(), [](const grant& a, const grant& b) { return a.at_ns < b.at_ns; });
    window_report report{-std::numeric_limits<long double>::infinity(), 0, 0, 0};
    long double best_start = std::numeric_limits<long double>::infinity();
    std::int64_t best_start_ns = 0;
    std::int64_t before = 0;  // permits granted before grant j
    for (const grant& g : grants) {
        const long double refill = static_cast<long double>(g.at_ns) / interval_ns;
        const long double start = static_cast<long double>(before) - refill;
        if (start < best_start) {
            best_start = start;
            best_start_ns = g.at_ns;
        }
        before += g.n;
        const long double excess = (static_cast<long double>(before) - refill) - best_start - capacity;
        if (excess > report.worst_excess) report = {excess, best_start_ns, g.at_ns, 0};
    }
    report.total = before;
    return report;
}

struct scenario {
    const char* name;
    rate r;
    std::int64_t capacity;
};

std::vector<scenario> scenarios() {
    return {
        {"10/s, capacity 1", rate::per_second(10), 1},
        {"10/s, capacity 5", rate::per_second(10), 5},
        {"0.7/s, capacity 3", rate::per_second(0.7), 3},
        {"90000/min, capacity 1", rate::per_minute(90000), 1},
        {"90000/min, capacity 50", rate::per_minute(90000), 50},
        {"3/s, capacity 7", rate::per_second(3), 7},
        {"every 1.3 s, capacity 2", rate::every(1300ms), 2},
        {"7/h, capacity 4", rate::per_hour(7), 4},
        {"1e6/s, capacity 1000", rate::per_second(1e6), 1000},
        {"2.5/s, capacity 10", rate::per_second(2.5), 10},
    };
}

/// Runs a random schedule of try_acquire, reserve, try_acquire_for,
/// try_acquire_until and acquire, recording every grant at the time its
/// permits are usable. No refunds, no cancels.
std::vector<grant> random_schedule(const scenario& s, std::uint64_t seed, int steps, bool only_try_acquire) {
    std::mt19937_64 random(seed);
    manual_clock clock;
    bucket b(s.r, s.capacity, clock);
    const auto interval_ns = static_cast<std::int64_t>(std::ceil(s.r.exact_interval().count()));
    const std::int64_t mean_n = (s.capacity + 1) / 2;
    std::uniform_int_distribution<std::int64_t> pick_n(1, s.capacity);
    std::uniform_int_distribution<int> percent(0, 99);
    std::uniform_int_distribution<std::int64_t> short_gap(0, 2 * mean_n * interval_ns);
    std::uniform_int_distribution<std::int64_t> idle_gap(0, 3 * s.capacity * interval_ns);
    std::uniform_int_distribution<std::int64_t> patience(0, 2 * s.capacity * interval_ns);

    std::vector<grant> grants;
    auto now_ns = [&] { return clock.now().time_since_epoch().count(); };
    for (int step = 0; step < steps; ++step) {
        const int gap_kind = percent(random);
        if (gap_kind < 40) {
            // same instant: a burst of calls
        } else if (gap_kind < 90) {
            clock.advance(std::chrono::nanoseconds{short_gap(random)});
        } else {
            clock.advance(std::chrono::nanoseconds{idle_gap(random)});
        }
        const std::int64_t n = percent(random) < 3 ? s.capacity + 1 : pick_n(random);
        const int action = only_try_acquire ? (percent(random) < 75 ? 0 : 85) : percent(random);
        if (n > s.capacity) {
            // Never granted, never blocks.
            const time_point before = clock.now();
            REQUIRE_FALSE(b.try_acquire(n));
            REQUIRE_FALSE(b.try_acquire_for(n, 1h));
            REQUIRE(clock.now() == before);
        } else if (action < 45) {
            if (b.try_acquire(n)) grants.push_back({now_ns(), n});
        } else if (action < 60) {
            if (b.available() >= -s.capacity) {  // keep the debt bounded
                auto r = b.reserve(n);
                grants.push_back({r.ready_at().time_since_epoch().count(), n});
            }
        } else if (action < 80) {
            const std::chrono::nanoseconds d{patience(random)};
            const time_point before = clock.now();
            if (b.try_acquire_for(n, d)) {
                REQUIRE(clock.now() <= before + d);
                grants.push_back({now_ns(), n});
            } else {
                REQUIRE(clock.now() == before);  // refused at once, never slept in vain
            }
        } else if (action < 90) {
            const time_point before = clock.now();
            if (b.try_acquire_until(n, before - 1s)) grants.push_back({now_ns(), n});
            REQUIRE(clock.now() == before);
        } else {
            if (b.available() >= -s.capacity) {
                const time_point before = clock.now();
                const auto waited = b.acquire(n);
                REQUIRE(clock.now() == before + waited);
                grants.push_back({now_ns(), n});
            }
        }
    }
    return grants;
}

}  // namespace

TEST_CASE("the window checker finds an excess of one permit", "[property]") {
    // Capacity 2, one permit per 100 ns: [0, 100] may hold 2 + 1 = 3 permits.
    const std::vector<grant> fine{{0, 2}, {100, 1}, {200, 1}};
    CHECK(worst_window(fine, 2, 100).worst_excess <= 0);
    const std::vector<grant> over{{0, 2}, {100, 1}, {150, 1}};  // 4 in [0, 150] > 2 + 1.5
    const window_report report = worst_window(over, 2, 100);
    CHECK(report.worst_excess == Approx(0.5L));
    CHECK(report.from_ns == 0);
    CHECK(report.to_ns == 150);
    const std::vector<grant> late_window{{0, 1}, {1000, 2}, {1050, 1}};  // the window [1000, 1050]
    CHECK(worst_window(late_window, 2, 100).worst_excess == Approx(0.5L));
}

TEST_CASE("random try_acquire schedules never grant more than capacity + rate·T in any window", "[property]") {
    // Every grant here happens at a whole nanosecond, where the bucket's tick
    // is exact, so the bound holds with no slack at all.
    for (const scenario& s : scenarios()) {
        for (std::uint64_t seed : {1ULL, 2ULL, 3ULL, 20240607ULL}) {
            INFO(s.name << ", seed " << seed);
            const std::vector<grant> grants = random_schedule(s, seed, 4000, true);
            const window_report report = worst_window(grants, s.capacity, s.r.exact_interval().count());
            INFO("worst window [" << report.from_ns << ", " << report.to_ns << "] ns exceeds by "
                                  << static_cast<double>(report.worst_excess) << " permits; " << report.total
                                  << " permits granted");
            CHECK(report.worst_excess <= 1e-12L);
            CHECK(report.total > s.capacity);  // the schedule did exercise the bucket
        }
    }
}

TEST_CASE("random mixed schedules never grant more than capacity + rate·(T + 1 ns) in any window", "[property]") {
    // Reserved and waited-for permits are counted at ready_at(), which is the
    // bucket's tick rounded up to the clock's nanosecond: a window that starts
    // at such a rounded-up time may be up to 1 ns shorter than the same window
    // in ticks, so the bound on whole-nanosecond times allows 1 ns more refill
    // (90000/min: 1.5e-6 permit). The schedules below do hit that slack.
    for (const scenario& s : scenarios()) {
        for (std::uint64_t seed : {1ULL, 2ULL, 3ULL, 20240607ULL}) {
            INFO(s.name << ", seed " << seed);
            const std::vector<grant> grants = random_schedule(s, seed, 4000, false);
            const long double interval = s.r.exact_interval().count();
            const window_report report = worst_window(grants, s.capacity, interval);
            INFO("worst window [" << report.from_ns << ", " << report.to_ns << "] ns exceeds by "
                                  << static_cast<double>(report.worst_excess) << " permits; " << report.total
                                  << " permits granted");
            CHECK(report.worst_excess <= 1.0L / interval + 1e-12L);
            CHECK(report.total > s.capacity);
        }
    }
}

TEST_CASE("random schedules decide exactly as a reference token bucket counting the same ticks", "[property]") {
    // The reference is x/time/rate's algorithm on integers: `tokens` in ticks
    // (one permit = interval ticks), refilled by elapsed ticks up to
    // capacity * interval, allowed below zero by reservations. The bucket's
    // tick and interval come from the same rounding (1/16 ns ticks for these
    // rates, the interval rounded up to a whole tick).
    namespace gcra = ratelimit::detail::gcra;
    for (const scenario& s : {scenario{"10/s, capacity 5", rate::per_second(10), 5},
                              scenario{"0.7/s, capacity 3", rate::per_second(0.7), 3},
                              scenario{"90000/min, capacity 50", rate::per_minute(90000), 50},
                              scenario{"3/s, capacity 7", rate::per_second(3), 7}}) {
        const long double exact_ns = s.r.exact_interval().count();
        REQUIRE(gcra::finest_fitting_shift(exact_ns, s.capacity) == 4);
        const std::int64_t interval = gcra::interval_ticks(exact_ns, 4);
        const std::int64_t full = s.capacity * interval;
        for (std::uint64_t seed : {7ULL, 8ULL, 9ULL}) {
            INFO(s.name << ", seed " << seed);
            std::mt19937_64 random(seed);
            manual_clock clock;
            bucket b(s.r, s.capacity, clock);
            std::int64_t tokens = full;
            std::int64_t last = 0;
            auto ticks_now = [&] { return clock.now().time_since_epoch().count() * 16; };
            auto refill = [&] {
                const std::int64_t now = ticks_now();
                if (now > last) {
                    tokens = std::min(full, tokens + (now - last));
                    last = now;
                }
            };
            auto ns_of = [](std::int64_t ticks) { return ticks / 16 + (ticks % 16 != 0 ? 1 : 0); };
            std::uniform_int_distribution<std::int64_t> pick_n(1, s.capacity);
            std::uniform_int_distribution<int> percent(0, 99);
            const auto interval_ns = static_cast<std::int64_t>(std::ceil(exact_ns));
            std::uniform_int_distribution<std::int64_t> gap(0, s.capacity * interval_ns);
            std::uniform_int_distribution<std::int64_t> patience(0, s.capacity * interval_ns);
            for (int step = 0; step < 3000; ++step) {
                if (percent(random) < 60) clock.advance(std::chrono::nanoseconds{gap(random)});
                const std::int64_t n = pick_n(random);
                const int action = percent(random);
                INFO("step " << step << ", n " << n << ", action " << action);
                refill();
                REQUIRE(b.available() == (tokens >= 0 ? tokens / interval : -((-tokens + interval - 1) / interval)));
                if (action < 50) {
                    const bool want = tokens >= n * interval;
                    REQUIRE(b.try_acquire(n) == want);
                    if (want) tokens -= n * interval;
                } else if (action < 70) {
                    if (tokens < -full) continue;  // keep the debt bounded
                    const std::int64_t now = ticks_now();
                    auto r = b.reserve(n);
                    tokens -= n * interval;
                    const std::int64_t ready = tokens < 0 ? now - tokens : now;
                    REQUIRE(r.ready_at().time_since_epoch().count() == ns_of(ready));
                } else {
                    const std::int64_t d_ns = patience(random);
                    const std::int64_t now = ticks_now();
                    const std::int64_t wait = std::max<std::int64_t>(0, n * interval - tokens);
                    const bool want = wait <= d_ns * 16;
                    REQUIRE(b.try_acquire_for(n, std::chrono::nanoseconds{d_ns}) == want);
                    if (want) {
                        tokens -= n * interval;
                        REQUIRE(clock.now().time_since_epoch().count() == (wait == 0 ? now / 16 : ns_of(now + wait)));
                    } else {
                        REQUIRE(ticks_now() == now);
                    }
                }
            }
        }
    }
}

TEST_CASE("sustained acquire(1) converges to capacity + rate·T within one permit", "[property]") {
    struct run {
        const char* name;
        rate r;
        std::int64_t capacity;
        std::chrono::nanoseconds length;
    };
    for (const run& c : {run{"10/s, capacity 5, 1 h", rate::per_second(10), 5, 1h},
                         run{"0.7/s, capacity 3, 10 h", rate::per_second(0.7), 3, 10h},
                         run{"90000/min, capacity 1, 2 min", rate::per_minute(90000), 1, 2min},
                         run{"3/s, capacity 7, 1 h", rate::per_second(3), 7, 1h},
                         run{"every 1.3 s, capacity 2, 24 h", rate::every(1300ms), 2, 24h},
                         run{"7/h, capacity 4, 1 year", rate::per_hour(7), 4, 24h * 365},
                         run{"1e6/s, capacity 1000, 0.5 s", rate::per_second(1e6), 1000, 500ms}}) {
        INFO(c.name);
        manual_clock clock;
        bucket b(c.r, c.capacity, clock);
        const time_point end{c.length};
        std::int64_t granted = 0;
        for (;;) {
            (void)b.acquire(1);
            if (clock.now() > end) break;
            ++granted;
        }
        const long double ideal = static_cast<long double>(c.capacity) +
                                  static_cast<long double>(c.length.count()) / c.r.exact_interval().count();
        INFO("granted " << granted << ", ideal " << static_cast<double>(ideal));
        CHECK(std::abs(static_cast<long double>(granted) - ideal) <= 1.0L);
    }
}

TEST_CASE("sustained acquire of random n stays within one request of capacity + rate·T", "[property]") {
    for (const scenario& s : scenarios()) {
        INFO(s.name);
        std::mt19937_64 random(42);
        std::uniform_int_distribution<std::int64_t> pick_n(1, s.capacity);
        manual_clock clock;
        bucket b(s.r, s.capacity, clock);
        const long double interval = s.r.exact_interval().count();
        const std::int64_t permits_wanted = 20'000;
        const time_point end{std::chrono::nanoseconds{static_cast<std::int64_t>(interval * permits_wanted)}};
        std::int64_t granted = 0;
        std::int64_t last_n = 0;
        for (;;) {
            last_n = pick_n(random);
            (void)b.acquire(last_n);
            if (clock.now() > end) break;
            granted += last_n;
        }
        const long double ideal = static_cast<long double>(s.capacity) +
                                  static_cast<long double>(end.time_since_epoch().count()) / interval;
        INFO("granted " << granted << ", ideal " << static_cast<double>(ideal) << ", last request " << last_n);
        CHECK(static_cast<long double>(granted) <= ideal + 1e-9L);
        CHECK(static_cast<long double>(granted) > ideal - static_cast<long double>(last_n) - 1.0L);
    }
}

namespace {

/// A schedule that also changes the rate and capacity, cancels reservations
/// and refunds permits, with what the checker needs to state the bound.
struct reconfigured_schedule {
    struct point {
        std::int64_t at_ns;
        std::int64_t n;  ///< permits granted (usable at at_ns), or minus permits refunded
        std::int64_t reserved_at_capacity = 0;  ///< for a reservation: the capacity when it was made
    };
    struct setting {
        std::int64_t from_ns;
        long double per_ns;  ///< permits per ns
        std::int64_t capacity;
    };
    struct reserved {
        std::int64_t made_ns;
        std::int64_t ready_ns;
        long double per_ns;  ///< the rate in force when it was made
    };
    std::vector<point> points;
    std::vector<setting> settings;
    std::vector<reserved> reservations;
};

/// The bound across set_rate and set_capacity, refunds and cancels: in any
/// interval [a, b], the permits usable in it, less those refunded in it, are
/// at most the largest capacity in force over it plus the integral of the
/// rate over it. A permit reserved ahead keeps the ready time it was given,
/// so while it is outstanding the rate it was reserved at counts too (the
/// integral takes the larger), and so does the capacity it was reserved at
/// when it falls in the interval. Returns the worst excess over that bound.
long double worst_reconfigured_excess(const reconfigured_schedule& s) {
    using setting = reconfigured_schedule::setting;
    // Breakpoints of the effective rate, and its integral at each.
    std::vector<std::int64_t> breaks;
    for (const setting& c : s.settings) breaks.push_back(c.from_ns);
    for (const auto& r : s.reservations) {
        breaks.push_back(r.made_ns);
        breaks.push_back(r.ready_ns);
    }
    std::sort(breaks.begin(), breaks.end());
    breaks.erase(std::unique(breaks.begin(), breaks.end()), breaks.end());
    auto setting_at = [&](std::int64_t t) -> const setting& {  // the one in force from t on
        const setting* in_force = &s.settings.front();
        for (const setting& c : s.settings) {
            if (c.from_ns <= t) in_force = &c;
        }
        return *in_force;
    };
    std::vector<long double> rate_from(breaks.size());
    std::vector<long double> integral(breaks.size(), 0);
    for (std::size_t k = 0; k < breaks.size(); ++k) {
        long double r = setting_at(breaks[k]).per_ns;
        for (const auto& res : s.reservations) {
            if (res.made_ns <= breaks[k] && breaks[k] < res.ready_ns) r = std::max(r, res.per_ns);
        }
        rate_from[k] = r;
        if (k > 0) integral[k] = integral[k - 1] + rate_from[k - 1] * static_cast<long double>(breaks[k] - breaks[k - 1]);
    }
    auto integral_at = [&](std::int64_t t) {
        const auto it = std::upper_bound(breaks.begin(), breaks.end(), t);
        if (it == breaks.begin()) return 0.0L;
        const std::size_t k = static_cast<std::size_t>(it - breaks.begin()) - 1;
        return integral[k] + rate_from[k] * static_cast<long double>(t - breaks[k]);
    };
    auto capacity_before = [&](std::int64_t t) {  // in force just before t
        std::int64_t cap = s.settings.front().capacity;
        for (const setting& c : s.settings) {
            if (c.from_ns < t) cap = c.capacity;
        }
        return cap;
    };
    long double fastest = 0;
    for (const setting& c : s.settings) fastest = std::max(fastest, c.per_ns);

    std::vector<reconfigured_schedule::point> points = s.points;
    std::sort(points.begin(), points.end(), [](const auto& a, const auto& b) { return a.at_ns < b.at_ns; });
    long double worst = -std::numeric_limits<long double>::infinity();
    for (std::size_t i = 0; i < points.size(); ++i) {
        if (i > 0 && points[i - 1].at_ns == points[i].at_ns) continue;  // a window starts before all at its time
        if (points[i].n <= 0) continue;
        std::int64_t largest_capacity = std::max(capacity_before(points[i].at_ns), setting_at(points[i].at_ns).capacity);
        std::size_t next_setting = 0;
        while (next_setting < s.settings.size() && s.settings[next_setting].from_ns <= points[i].at_ns) ++next_setting;
        std::int64_t net = 0;
        for (std::size_t j = i; j < points.size(); ++j) {
            while (next_setting < s.settings.size() && s.settings[next_setting].from_ns <= points[j].at_ns) {
                largest_capacity = std::max(largest_capacity, s.settings[next_setting].capacity);
                ++next_setting;
            }
            net += points[j].n;
            largest_capacity = std::max(largest_capacity, points[j].reserved_at_capacity);
            if (j + 1 < points.size() && points[j + 1].at_ns == points[j].at_ns) continue;  // whole instants only
            const long double allowed = static_cast<long double>(largest_capacity) +
                                        (integral_at(points[j].at_ns) - integral_at(points[i].at_ns)) +
                                        2 * fastest;  // ready_at rounds a tick up to the next ns
            worst = std::max(worst, static_cast<long double>(net) - allowed);
        }
    }
    return worst;
}

reconfigured_schedule random_reconfigured_schedule(const scenario& sc, std::uint64_t seed, int steps) {
    std::mt19937_64 random(seed);
    manual_clock clock;
    bucket b(sc.r, sc.capacity, clock);
    const long double base_interval = sc.r.exact_interval().count();
    std::uniform_int_distribution<int> percent(0, 99);
    reconfigured_schedule out;
    rate current = sc.r;
    std::int64_t capacity = sc.capacity;
    out.settings.push_back({0, 1.0L / base_interval, capacity});
    auto now_ns = [&] { return clock.now().time_since_epoch().count(); };
    struct pending {
        ratelimit::reservation<manual_clock> r;
        std::size_t point;  ///< its entry in out.points
    };
    std::vector<pending> outstanding;
    std::int64_t refundable = 0;  // permits granted at once and not yet refunded
    for (int step = 0; step < steps; ++step) {
        const long double interval = current.exact_interval().count();
        const int gap = percent(random);
        if (gap >= 40) {
            const auto span = static_cast<std::int64_t>(interval * static_cast<long double>(gap < 90 ? capacity : 3 * capacity));
            clock.advance(std::chrono::nanoseconds{std::uniform_int_distribution<std::int64_t>(0, std::max<std::int64_t>(span, 1))(random)});
        }
        const std::int64_t n = std::uniform_int_distribution<std::int64_t>(1, capacity)(random);
        const int action = percent(random);
        if (action < 35) {
            if (b.try_acquire(n)) {
                out.points.push_back({now_ns(), n});
                refundable += n;
            }
        } else if (action < 50) {
            if (outstanding.size() < 4 && b.available() >= -capacity) {
                auto r = b.reserve(n);
                out.points.push_back({r.ready_at().time_since_epoch().count(), n, capacity});
                out.reservations.push_back({now_ns(), r.ready_at().time_since_epoch().count(), 1.0L / interval});
                outstanding.push_back({std::move(r), out.points.size() - 1});
            }
        } else if (action < 60) {
            if (!outstanding.empty()) {
                const std::size_t k = std::uniform_int_distribution<std::size_t>(0, outstanding.size() - 1)(random);
                outstanding[k].r.cancel();
                out.points[outstanding[k].point].n = 0;  // never used
                outstanding.erase(outstanding.begin() + static_cast<std::ptrdiff_t>(k));
            }
        } else if (action < 65) {
            outstanding.clear();  // dropped: the permits stay taken and count at ready_at
        } else if (action < 72) {
            if (refundable > 0) {
                const std::int64_t back = std::uniform_int_distribution<std::int64_t>(1, refundable)(random);
                b.refund(back);
                refundable -= back;
                out.points.push_back({now_ns(), -back});
            }
        } else if (action < 80) {
            const double factor = std::array{0.25, 0.5, 2.0, 4.0, 10.0}[std::uniform_int_distribution<int>(0, 4)(random)];
            const long double next_interval = base_interval / factor;
            current = rate::every(std::chrono::nanoseconds{static_cast<std::int64_t>(std::ceil(next_interval))});
            b.set_rate(current);
            out.settings.push_back({now_ns(), 1.0L / current.exact_interval().count(), capacity});
        } else if (action < 86) {
            capacity = std::uniform_int_distribution<std::int64_t>(1, 2 * sc.capacity)(random);
            b.set_capacity(capacity);
            out.settings.push_back({now_ns(), 1.0L / current.exact_interval().count(), capacity});
        } else {
            const std::chrono::nanoseconds patience{
                std::uniform_int_distribution<std::int64_t>(0, static_cast<std::int64_t>(interval * static_cast<long double>(capacity)))(random)};
            if (b.try_acquire_for(n, patience)) {
                out.points.push_back({now_ns(), n});
                refundable += n;
            }
        }
    }
    return out;
}

}  // namespace

TEST_CASE("the reconfigured-bound checker finds an excess of one permit", "[property]") {
    reconfigured_schedule s;
    s.settings = {{0, 0.01L, 2}};  // one permit per 100 ns, capacity 2
    s.points = {{0, 2}, {100, 1}, {200, 1}};
    CHECK(worst_reconfigured_excess(s) <= 0.03L);
    s.points = {{0, 2}, {100, 2}};  // 4 in [0, 100] > 2 + 1
    CHECK(worst_reconfigured_excess(s) == Approx(1.0L - 0.02L));
    s.points = {{0, 2}, {50, -1}, {100, 2}};  // the refund makes room for one
    CHECK(worst_reconfigured_excess(s) <= 0.03L);
    s.settings = {{0, 0.01L, 2}, {100, 0.1L, 2}};  // 10x faster from 100 ns: [100, 110] holds 2 + 1
    s.points = {{0, 2}, {200, 2}, {210, 1}};
    CHECK(worst_reconfigured_excess(s) <= 0.3L);
    s.points = {{0, 2}, {200, 2}, {205, 2}};  // 4 in [200, 205] > 2 + 0.5
    CHECK(worst_reconfigured_excess(s) == Approx(1.5L - 0.2L));
}

TEST_CASE("random schedules mixing set_rate, set_capacity, reserve, cancel and refund keep the bound",
          "[property]") {
    // 300 schedules. The bound: in any interval, permits usable in it less
    // those refunded in it <= the largest capacity in force over it + the
    // integral of the rate (a reserved permit keeps its ready time, so the
    // rate and capacity it was reserved at count while it is outstanding).
    int schedules = 0;
    for (const scenario& s : scenarios()) {
        for (std::uint64_t seed = 1; seed <= 30; ++seed) {
            INFO(s.name << ", seed " << seed);
            const reconfigured_schedule schedule = random_reconfigured_schedule(s, seed, 600);
            CHECK(worst_reconfigured_excess(schedule) <= 1e-9L);
            CHECK(schedule.settings.size() > 10);  // it did reconfigure
            ++schedules;
        }
    }
    CHECK(schedules == 300);
}
