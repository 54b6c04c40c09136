// The pure window math (include/ratelimit/detail/window.hpp) against the
// hand-computed vectors in tests/support/window_vectors.hpp, against a
// brute-force search over every nanosecond, and the relations between its
// functions that fixed_window and sliding_window_counter rely on.

#include <cstdint>
#include <limits>
#include <random>
#include <ratelimit/detail/window.hpp>
#include <string>

#include "support/catch.hpp"
#include "support/window_vectors.hpp"

namespace window = ratelimit::detail::window;
namespace fixed = ratelimit::detail::window::fixed;
namespace sliding = ratelimit::detail::window::sliding;
namespace vectors = ratelimit_test::window_vectors;
namespace window_log = ratelimit::detail::window_log;
using cpp_top = vectors::at_top<std::numeric_limits<std::int64_t>::max()>;

namespace {

std::string verdict_name(window::verdict v) {
    switch (v) {
        case window::verdict::granted:
            return "granted";
        case window::verdict::too_late:
            return "too_late";
        case window::verdict::never:
            return "never";
        case window::verdict::out_of_range:
            return "out_of_range";
    }
    return "?";
}

constexpr bool all_fixed_vectors_hold() {
    for (const auto& v : vectors::fixed_decide_vectors) {
        const fixed::decision d = fixed::decide({v.limit, v.window_ns}, {v.window, v.count}, v.now, v.n, v.deadline);
        if (d.outcome != v.outcome || d.next != fixed::state{v.next_window, v.next_count} || d.ready_at != v.ready_at) {
            return false;
        }
    }
    return true;
}

constexpr bool all_sliding_vectors_hold() {
    for (const auto& v : vectors::sliding_decide_vectors) {
        const sliding::decision d =
            sliding::decide({v.limit, v.window_ns}, {v.window, v.current, v.previous}, v.now, v.n, v.deadline);
        if (d.outcome != v.outcome || d.next != sliding::state{v.next_window, v.next_current, v.next_previous} ||
            d.ready_at != v.ready_at) {
            return false;
        }
    }
    return true;
}

/// The earliest time >= max(now, start of s's window) at which n permits fit,
/// found by trying every nanosecond (the estimate compared exactly, in
/// integers scaled by W); and the state it leaves.
struct brute_result {
    std::int64_t ready_at;
    sliding::state next;
};

brute_result sliding_brute_force(std::int64_t limit, std::int64_t w, sliding::state s, std::int64_t now,
                                 std::int64_t n) {
    for (std::int64_t t = std::max(now, s.window * w);; ++t) {
        const std::int64_t index = t / w;
        sliding::state at = s;
        if (index == s.window + 1) at = {index, 0, s.current};
        if (index > s.window + 1) at = {index, 0, 0};
        const std::int64_t e = t - index * w;
        // current + previous·(W − e)/W + n <= limit, times W.
        if ((at.current + n) * w + at.previous * (w - e) <= limit * w) return {t, {index, at.current + n, at.previous}};
    }
}

}  // namespace

constexpr bool all_overflow_rows_hold() {
    for (const auto& v : cpp_top::fixed_decide) {
        const fixed::decision d = fixed::decide({v.limit, v.window_ns}, {v.window, v.count}, v.now, v.n, v.deadline);
        if (d.outcome != v.outcome || d.next != fixed::state{v.next_window, v.next_count} || d.ready_at != v.ready_at) {
            return false;
        }
    }
    for (const auto& v : cpp_top::sliding_decide) {
        const sliding::decision d =
            sliding::decide({v.limit, v.window_ns}, {v.window, v.current, v.previous}, v.now, v.n, v.deadline);
        if (d.outcome != v.outcome || d.next != sliding::state{v.next_window, v.next_current, v.next_previous} ||
            d.ready_at != v.ready_at) {
            return false;
        }
    }
    for (const auto& v : cpp_top::sliding_available) {
        if (sliding::available({v.limit, v.window_ns}, {v.window, v.current, v.previous}, v.now) != v.expected) {
            return false;
        }
    }
    for (const auto& v : cpp_top::log_decide) {
        const window_log::decision d =
            window_log::decide(v.limit, v.window_ns, v.nth_oldest, v.newest, v.now, v.n, v.deadline);
        if (d.outcome != v.outcome || d.start != v.start) return false;
    }
    return true;
}

// decide, available and refund are constexpr: the tables are checked at compile time too
// (where signed overflow is an error, so an overflowing row does not compile).
static_assert(all_fixed_vectors_hold());
static_assert(all_sliding_vectors_hold());
static_assert(all_overflow_rows_hold());

TEST_CASE("a time falls in the window that starts at or before it", "[window]") {
    CHECK(window::index_of(0, 1000) == 0);
    CHECK(window::index_of(999, 1000) == 0);
    CHECK(window::index_of(1000, 1000) == 1);
    CHECK(window::index_of(5500, 1000) == 5);
    CHECK(window::index_of(-7, 1000) == 0);  // before the origin counts as the origin
    CHECK(window::start_of(5, 1000) == 5000);
    CHECK(window::start_of(0, 1000) == 0);
    // 2^62 windows of 4 ns would start at 2^64 ns: saturated.
    CHECK(window::start_of(std::int64_t{1} << 62, 4) == std::numeric_limits<std::int64_t>::max());
}

TEST_CASE("time since the origin is never negative and saturates", "[window]") {
    constexpr std::int64_t max = std::numeric_limits<std::int64_t>::max();
    CHECK(window::since(100, 350) == 250);
    CHECK(window::since(100, 40) == 0);
    CHECK(window::since(-max, max) == max);  // 2^64 − 2 ns apart: saturated
    CHECK(window::add_saturating(max - 5, 10) == max);
    CHECK(window::add_saturating(-20, 10) == -10);
}

TEST_CASE("the 128-bit products are exact where 64 bits would overflow", "[window]") {
    // (2^40 + 1) · (2^40 + 3) = 2^80 + 2^42 + 3 overflows 64 bits; divided by 2^40
    // it is 2^40 + 4 + 3/2^40: floor 2^40 + 4, ceil 2^40 + 5.
    constexpr std::int64_t a = (std::int64_t{1} << 40) + 1;
    constexpr std::int64_t b = (std::int64_t{1} << 40) + 3;
    constexpr std::int64_t c = std::int64_t{1} << 40;
    CHECK(window::mul_div_floor(a, b, c) == c + 4);
    CHECK(window::mul_div_ceil(a, b, c) == c + 5);
    CHECK(window::mul_div_ceil(6, 500, 1000) == 3);  // exact quotients do not round up
}

TEST_CASE("fixed decide matches every hand-computed vector", "[window][fixed]") {
    for (const auto& v : vectors::fixed_decide_vectors) {
        INFO(v.name);
        const fixed::decision d = fixed::decide({v.limit, v.window_ns}, {v.window, v.count}, v.now, v.n, v.deadline);
        CHECK(verdict_name(d.outcome) == verdict_name(v.outcome));
        CHECK(d.next.window == v.next_window);
        CHECK(d.next.count == v.next_count);
        CHECK(d.ready_at == v.ready_at);
    }
}

TEST_CASE("fixed available matches every hand-computed vector", "[window][fixed]") {
    for (const auto& v : vectors::fixed_available_vectors) {
        INFO(v.name);
        CHECK(fixed::available({v.limit, v.window_ns}, {v.window, v.count}, v.now) == v.expected);
    }
}

TEST_CASE("fixed refund matches every hand-computed vector", "[window][fixed]") {
    for (const auto& v : vectors::fixed_refund_vectors) {
        INFO(v.name);
        const fixed::state s = fixed::refund({v.limit, v.window_ns}, {v.window, v.count}, v.now, v.n);
        CHECK(s.window == v.next_window);
        CHECK(s.count == v.next_count);
    }
}

TEST_CASE("sliding decide matches every hand-computed vector", "[window][sliding]") {
    for (const auto& v : vectors::sliding_decide_vectors) {
        INFO(v.name);
        const sliding::decision d =
            sliding::decide({v.limit, v.window_ns}, {v.window, v.current, v.previous}, v.now, v.n, v.deadline);
        CHECK(verdict_name(d.outcome) == verdict_name(v.outcome));
        CHECK(d.next.window == v.next_window);
        CHECK(d.next.current == v.next_current);
        CHECK(d.next.previous == v.next_previous);
        CHECK(d.ready_at == v.ready_at);
    }
}

TEST_CASE("sliding available matches every hand-computed vector", "[window][sliding]") {
    for (const auto& v : vectors::sliding_available_vectors) {
        INFO(v.name);
        CHECK(sliding::available({v.limit, v.window_ns}, {v.window, v.current, v.previous}, v.now) == v.expected);
    }
}

TEST_CASE("sliding refund matches every hand-computed vector", "[window][sliding]") {
    for (const auto& v : vectors::sliding_refund_vectors) {
        INFO(v.name);
        const sliding::state s = sliding::refund({v.limit, v.window_ns}, {v.window, v.current, v.previous}, v.now, v.n);
        CHECK(s.window == v.next_window);
        CHECK(s.current == v.next_current);
        CHECK(s.previous == v.next_previous);
    }
}

TEST_CASE("a window rolled on by one keeps its count as the previous one", "[window][sliding]") {
    CHECK(sliding::roll({4, 7, 3}, 4) == sliding::state{4, 7, 3});
    CHECK(sliding::roll({4, 7, 3}, 5) == sliding::state{5, 0, 7});
    CHECK(sliding::roll({4, 7, 3}, 6) == sliding::state{6, 0, 0});
    CHECK(sliding::roll({4, 7, 3}, 2) == sliding::state{4, 7, 3});  // never backwards
}

TEST_CASE("earliest_offset is the exact first offset at which the room suffices", "[window][sliding]") {
    constexpr std::int64_t w = 1000;
    for (std::int64_t previous = 0; previous <= 12; ++previous) {
        for (std::int64_t room = 0; room <= 12; ++room) {
            INFO("previous " << previous << ", room " << room);
            const std::int64_t e = sliding::earliest_offset(w, previous, room);
            REQUIRE(e >= 0);
            REQUIRE(e <= w);
            if (e < w) CHECK(previous * (w - e) <= room * w);
            if (e > 0) CHECK(previous * (w - (e - 1)) > room * w);
        }
    }
}

TEST_CASE("a request fits now exactly when available() covers it", "[window]") {
    // Both algorithms: decide with the deadline at now grants n iff n <= available.
    constexpr window::params p{7, 100};
    for (std::int64_t now = 0; now < 400; now += 7) {
        for (std::int64_t w = 0; w <= 4; ++w) {
            for (std::int64_t count = 0; count <= 7; ++count) {
                for (std::int64_t n = 1; n <= 7; ++n) {
                    const bool fits = fixed::decide(p, {w, count}, now, n, now).outcome == window::verdict::granted;
                    CHECK(fits == (n <= fixed::available(p, {w, count}, now)));
                    for (std::int64_t previous = 0; previous <= 7; previous += 3) {
                        const sliding::state s{w, count, previous};
                        const bool fits_sliding =
                            sliding::decide(p, s, now, n, now).outcome == window::verdict::granted;
                        CHECK(fits_sliding == (n <= sliding::available(p, s, now)));
                    }
                }
            }
        }
    }
}

TEST_CASE("sliding decide agrees with a brute-force search over every nanosecond", "[window][sliding]") {
    std::mt19937_64 random(20240611);
    for (int round = 0; round < 3000; ++round) {
        const std::int64_t limit = std::uniform_int_distribution<std::int64_t>(1, 12)(random);
        const std::int64_t w = std::uniform_int_distribution<std::int64_t>(1, 60)(random);
        const std::int64_t current = std::uniform_int_distribution<std::int64_t>(0, limit)(random);
        const std::int64_t previous = std::uniform_int_distribution<std::int64_t>(0, limit)(random);
        const std::int64_t index = std::uniform_int_distribution<std::int64_t>(0, 4)(random);
        const std::int64_t now = std::uniform_int_distribution<std::int64_t>(0, 6 * w)(random);
        const std::int64_t n = std::uniform_int_distribution<std::int64_t>(1, limit)(random);
        const sliding::state s{index, current, previous};
        INFO("limit " << limit << ", W " << w << ", state {" << index << ", " << current << ", " << previous
                      << "}, now " << now << ", n " << n);
        const sliding::decision d = sliding::decide({limit, w}, s, now, n, std::numeric_limits<std::int64_t>::max());
        const brute_result expected = sliding_brute_force(limit, w, s, now, n);
        REQUIRE(verdict_name(d.outcome) == "granted");
        CHECK(d.ready_at == expected.ready_at);
        CHECK(d.next == expected.next);
    }
}

TEST_CASE("fixed decide takes the first window with room, from the later of now's and the state's", "[window][fixed]") {
    std::mt19937_64 random(7);
    for (int round = 0; round < 3000; ++round) {
        const std::int64_t limit = std::uniform_int_distribution<std::int64_t>(1, 9)(random);
        const std::int64_t w = std::uniform_int_distribution<std::int64_t>(1, 50)(random);
        const fixed::state s{std::uniform_int_distribution<std::int64_t>(0, 4)(random),
                             std::uniform_int_distribution<std::int64_t>(0, limit)(random)};
        const std::int64_t now = std::uniform_int_distribution<std::int64_t>(0, 6 * w)(random);
        const std::int64_t n = std::uniform_int_distribution<std::int64_t>(1, limit)(random);
        // Walk the windows one by one.
        std::int64_t index = std::max(s.window, now / w);
        if ((index == s.window ? s.count : 0) + n > limit) ++index;
        const fixed::decision d = fixed::decide({limit, w}, s, now, n, std::numeric_limits<std::int64_t>::max());
        INFO("limit " << limit << ", W " << w << ", state {" << s.window << ", " << s.count << "}, now " << now
                      << ", n " << n);
        CHECK(d.next.window == index);
        CHECK(d.next.count == (index == s.window ? s.count : 0) + n);
        CHECK(d.ready_at == std::max(now, index * w));
    }
}

TEST_CASE("a window past max_window is out of range and changes nothing", "[window]") {
    // The state holds windows 0..2 only.
    constexpr window::params p{3, 1000, 2};
    const fixed::decision f = fixed::decide(p, {2, 3}, 2500, 1, vectors::never_deadline);
    CHECK(verdict_name(f.outcome) == "out_of_range");
    CHECK(f.next == fixed::state{2, 3});
    CHECK(verdict_name(fixed::decide(p, {2, 2}, 2500, 1, vectors::never_deadline).outcome) == "granted");

    const sliding::decision s = sliding::decide(p, {2, 3, 0}, 2500, 1, vectors::never_deadline);
    CHECK(verdict_name(s.outcome) == "out_of_range");
    CHECK(s.next == sliding::state{2, 3, 0});
}

TEST_CASE("a grant never lets an aligned window count more than the limit", "[window]") {
    // Exhaustive over small states: whatever decide grants keeps count <= limit
    // (fixed) and current <= limit (sliding), and ready_at lies in the state's window.
    constexpr window::params p{4, 10};
    for (std::int64_t now = 0; now < 40; ++now) {
        for (std::int64_t count = 0; count <= 4; ++count) {
            for (std::int64_t previous = 0; previous <= 4; ++previous) {
                for (std::int64_t n = 1; n <= 4; ++n) {
                    const fixed::decision f = fixed::decide(p, {1, count}, now, n, vectors::never_deadline);
                    CHECK(f.next.count <= p.limit);
                    CHECK(window::index_of(f.ready_at, p.window) == f.next.window);
                    const sliding::decision s =
                        sliding::decide(p, {1, count, previous}, now, n, vectors::never_deadline);
                    CHECK(s.next.current <= p.limit);
                    CHECK(window::index_of(s.ready_at, p.window) == s.next.window);
                }
            }
        }
    }
}

TEST_CASE("fixed decide matches every overflow row at INT64_MAX", "[window][fixed][overflow]") {
    for (const auto& v : cpp_top::fixed_decide) {
        INFO(v.name);
        const fixed::decision d = fixed::decide({v.limit, v.window_ns}, {v.window, v.count}, v.now, v.n, v.deadline);
        CHECK(verdict_name(d.outcome) == verdict_name(v.outcome));
        CHECK(d.next == fixed::state{v.next_window, v.next_count});
        CHECK(d.ready_at == v.ready_at);
    }
}

TEST_CASE("sliding decide and available match every overflow row at INT64_MAX", "[window][sliding][overflow]") {
    for (const auto& v : cpp_top::sliding_decide) {
        INFO(v.name);
        const sliding::decision d =
            sliding::decide({v.limit, v.window_ns}, {v.window, v.current, v.previous}, v.now, v.n, v.deadline);
        CHECK(verdict_name(d.outcome) == verdict_name(v.outcome));
        CHECK(d.next == sliding::state{v.next_window, v.next_current, v.next_previous});
        CHECK(d.ready_at == v.ready_at);
    }
    for (const auto& v : cpp_top::sliding_available) {
        INFO(v.name);
        CHECK(sliding::available({v.limit, v.window_ns}, {v.window, v.current, v.previous}, v.now) == v.expected);
    }
}

TEST_CASE("the log's decide matches every overflow row at INT64_MAX", "[window][log][overflow]") {
    for (const auto& v : cpp_top::log_decide) {
        INFO(v.name);
        const window_log::decision d =
            window_log::decide(v.limit, v.window_ns, v.nth_oldest, v.newest, v.now, v.n, v.deadline);
        CHECK(d.outcome == v.outcome);
        CHECK(d.start == v.start);
    }
}

TEST_CASE("no decision overflows or over-admits at the end of the time range", "[window][overflow]") {
    // Limits, windows and times near INT64_MAX, four permits one by one: each
    // grant keeps the count <= limit and lands in a window at or before
    // last_window with an exact ready_at (never a saturated stand-in); anything
    // else is out_of_range and changes nothing.
    constexpr std::int64_t max = std::numeric_limits<std::int64_t>::max();
    const std::int64_t values[] = {1, 2, 3, 1000, max / 3, max / 2, max - 1, max};
    for (std::int64_t limit : values) {
        for (std::int64_t w : values) {
            for (std::int64_t now : values) {
                const std::int64_t last = window::last_window({limit, w});
                fixed::state fs{window::index_of(now, w), std::max<std::int64_t>(0, limit - 2)};
                sliding::state ss{window::index_of(now, w), std::max<std::int64_t>(0, limit - 2), limit};
                for (int step = 0; step < 4; ++step) {
                    INFO("limit " << limit << ", W " << w << ", now " << now << ", step " << step);
                    const fixed::decision f = fixed::decide({limit, w}, fs, now, 1, max);
                    if (f.outcome == window::verdict::granted) {
                        REQUIRE(f.next.count <= limit);
                        REQUIRE(f.next.window <= last);
                        REQUIRE(f.ready_at == std::max(now, f.next.window * w));
                        fs = f.next;
                    } else {
                        REQUIRE(verdict_name(f.outcome) == "out_of_range");
                        REQUIRE(f.next == fs);
                    }
                    const sliding::decision s = sliding::decide({limit, w}, ss, now, 1, max);
                    if (s.outcome == window::verdict::granted) {
                        REQUIRE(s.next.current <= limit);
                        REQUIRE(s.next.window <= last);
                        REQUIRE(window::index_of(s.ready_at, w) == s.next.window);
                        ss = s.next;
                    } else {
                        REQUIRE(verdict_name(s.outcome) == "out_of_range");
                        REQUIRE(s.next == ss);
                    }
                    CHECK(sliding::available({limit, w}, ss, now) >= 0);
                }
            }
        }
    }
}

TEST_CASE("a window or time after params::end is out of range", "[window][overflow]") {
    // end = 2500: window 3 (limit 3, W = 1000) would start at 3000.
    constexpr window::params p{3, 1000, std::numeric_limits<std::int64_t>::max(), 2500};
    CHECK(window::last_window(p) == 2);
    CHECK(verdict_name(fixed::decide(p, {2, 3}, 2400, 1, vectors::never_deadline).outcome) == "out_of_range");
    CHECK(verdict_name(fixed::decide(p, {2, 2}, 2400, 1, vectors::never_deadline).outcome) == "granted");
    // limit 10 full in window 0: one more fits at 1000 + 100 (10·(1000 − e) <= 9·1000);
    // an end at 1099 leaves no such time, one at 1100 does.
    constexpr window::params q{10, 1000, std::numeric_limits<std::int64_t>::max(), 1099};
    const sliding::decision late = sliding::decide(q, {0, 10, 0}, 999, 1, vectors::never_deadline);
    CHECK(verdict_name(late.outcome) == "out_of_range");
    CHECK(late.next == sliding::state{0, 10, 0});
    constexpr window::params r{10, 1000, std::numeric_limits<std::int64_t>::max(), 1100};
    CHECK(sliding::decide(r, {0, 10, 0}, 999, 1, vectors::never_deadline).ready_at == 1100);
}
