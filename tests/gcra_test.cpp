// The pure GCRA math (include/ratelimit/detail/gcra.hpp) against the
// hand-computed vectors in tests/support/gcra_vectors.hpp, plus the relations
// between its functions that the token bucket relies on.

#include <cstdint>
#include <limits>
#include <string>

#include <ratelimit/detail/gcra.hpp>

#include "support/catch.hpp"
#include "support/gcra_vectors.hpp"

namespace gcra = ratelimit::detail::gcra;
namespace vectors = ratelimit_test::gcra_vectors;
using gcra::ticks;

namespace {

std::string verdict_name(gcra::verdict v) {
    switch (v) {
        case gcra::verdict::granted: return "granted";
        case gcra::verdict::too_late: return "too_late";
        case gcra::verdict::never: return "never";
        case gcra::verdict::out_of_range: return "out_of_range";
    }
    return "?";
}

constexpr bool all_decide_vectors_hold() {
    for (const auto& v : vectors::decide_vectors) {
        const gcra::decision d = gcra::decide({v.interval, v.capacity}, v.tat, v.now, v.n, v.deadline);
        if (d.outcome != v.outcome || d.tat != v.new_tat || d.ready_at != v.ready_at) return false;
    }
    return true;
}

}  // namespace

// decide, available, refund and cancel are constexpr: the table is checked at compile time too.
static_assert(all_decide_vectors_hold());

TEST_CASE("decide matches every hand-computed vector", "[gcra]") {
    for (const auto& v : vectors::decide_vectors) {
        INFO(v.name);
        const gcra::decision d = gcra::decide({v.interval, v.capacity}, v.tat, v.now, v.n, v.deadline);
        CHECK(verdict_name(d.outcome) == verdict_name(v.outcome));
        CHECK(d.tat == v.new_tat);
        CHECK(d.ready_at == v.ready_at);
    }
}

TEST_CASE("available matches every hand-computed vector, flooring negative counts", "[gcra]") {
    for (const auto& v : vectors::available_vectors) {
        INFO(v.name);
        CHECK(gcra::available({v.interval, v.capacity}, v.tat, v.now) == v.expected);
    }
}

TEST_CASE("refund matches every hand-computed vector, capped at a full bucket", "[gcra]") {
    for (const auto& v : vectors::refund_vectors) {
        INFO(v.name);
        CHECK(gcra::refund({v.interval, v.capacity}, v.tat, v.now, v.n) == v.expected);
    }
}

TEST_CASE("cancel matches every hand-computed vector of x/time/rate's rule", "[gcra]") {
    for (const auto& v : vectors::cancel_vectors) {
        INFO(v.name);
        CHECK(gcra::cancel({v.interval, v.capacity}, v.tat, v.now, v.n, v.reserved_end, v.ready_at) == v.expected);
    }
}

TEST_CASE("rescale matches every hand-computed vector, keeping the permit count", "[gcra]") {
    for (const auto& v : vectors::rescale_vectors) {
        INFO(v.name);
        CHECK(gcra::rescale({v.from_interval, v.from_capacity}, v.tat, v.now_from, {v.to_interval, v.to_capacity},
                            v.now_to, v.tick_shift) == v.expected);
    }
}

TEST_CASE("to_ticks floors, clamps before the origin and saturates", "[gcra]") {
    for (const auto& v : vectors::to_ticks_vectors) {
        INFO(v.name);
        CHECK(gcra::time_scale{v.origin_ns, v.shift}.to_ticks(v.ns) == v.expected);
    }
}

TEST_CASE("to_ns rounds up and saturates", "[gcra]") {
    for (const auto& v : vectors::to_ns_vectors) {
        INFO(v.name);
        CHECK(gcra::time_scale{v.origin_ns, v.shift}.to_ns(v.t) == v.expected);
    }
}

TEST_CASE("interval_ticks rounds up, to at least one tick and at most max_tat", "[gcra]") {
    for (const auto& v : vectors::interval_vectors) {
        INFO(v.name);
        CHECK(gcra::interval_ticks(v.interval_ns, v.shift) == v.expected);
    }
}

TEST_CASE("finest_fitting_shift picks the finest tick whose tolerance fits 2^59", "[gcra]") {
    for (const auto& v : vectors::shift_vectors) {
        INFO(v.name);
        CHECK(gcra::finest_fitting_shift(v.interval_ns, v.capacity) == v.expected);
        if (v.expected) {
            // It fits at the chosen shift and not at the next finer one.
            const ticks interval = gcra::interval_ticks(v.interval_ns, *v.expected);
            CHECK(interval <= gcra::max_tolerance / v.capacity);
            if (*v.expected < gcra::finest_shift) {
                CHECK(gcra::interval_ticks(v.interval_ns, *v.expected + 1) > gcra::max_tolerance / v.capacity);
            }
        }
    }
}

TEST_CASE("to_ns of to_ticks gives back the nanosecond at ticks of 1/16 ns", "[gcra]") {
    const gcra::time_scale scale{123'456'789, 4};
    for (std::int64_t ns : {std::int64_t{123'456'789}, std::int64_t{123'456'790}, std::int64_t{1'000'000'000'000},
                            std::int64_t{123'456'789} + (std::int64_t{1} << 58)}) {
        INFO(ns);
        CHECK(scale.to_ns(scale.to_ticks(ns)) == ns);
    }
}

TEST_CASE("to_ticks of to_ns never lands before the tick (rounding up is conservative)", "[gcra]") {
    for (int shift : {4, 1, 0, -3, -20}) {
        const gcra::time_scale scale{-5'000, shift};
        for (ticks t : {ticks{0}, ticks{1}, ticks{15}, ticks{17}, ticks{1'000'003}, ticks{1} << 40}) {
            INFO("shift " << shift << " tick " << t);
            CHECK(scale.to_ticks(scale.to_ns(t)) >= t);
        }
    }
}

TEST_CASE("a grant from a non-negative bucket lowers available by exactly n", "[gcra]") {
    const gcra::params p{10, 5};
    for (ticks tat : {ticks{0}, ticks{100}, ticks{105}, ticks{120}, ticks{140}}) {
        const ticks now = 100;
        const std::int64_t before = gcra::available(p, tat, now);
        for (std::int64_t n = 1; n <= before; ++n) {
            INFO("tat " << tat << " n " << n);
            const gcra::decision d = gcra::decide(p, tat, now, n, now);
            REQUIRE(d.outcome == gcra::verdict::granted);
            CHECK(d.ready_at == now);
            CHECK(gcra::available(p, d.tat, now) == before - n);
        }
        // One more than available is not usable now: it would be usable
        // exactly when the missing fraction has refilled.
        const gcra::decision more = gcra::decide(p, tat, now, before + 1, now);
        if (before + 1 <= p.capacity) {
            CHECK(more.outcome == gcra::verdict::too_late);
            CHECK(more.ready_at == std::max(tat, now) + (before + 1) * p.interval - p.tolerance());
            CHECK(more.ready_at > now);
        }
    }
}

TEST_CASE("a refund of what was just taken restores the state", "[gcra]") {
    const gcra::params p{10, 3};
    const ticks now = 100;
    const gcra::decision d = gcra::decide(p, 105, now, 2, now);  // 2.5 permits, take 2
    REQUIRE(d.outcome == gcra::verdict::granted);
    CHECK(d.tat == 125);
    CHECK(gcra::refund(p, d.tat, now, 2) == 105);
}

TEST_CASE("cancelling the last reservation undoes it exactly", "[gcra]") {
    const gcra::params p{10, 3};
    const ticks now = 100;
    const gcra::decision first = gcra::decide(p, 130, now, 3, std::numeric_limits<ticks>::max());
    REQUIRE(first.outcome == gcra::verdict::granted);
    CHECK(first.tat == 160);
    CHECK(first.ready_at == 130);
    CHECK(gcra::cancel(p, first.tat, now, 3, first.tat, first.ready_at) == 130);
}

TEST_CASE("rescaling back and forth between equal configurations is exact", "[gcra]") {
    const gcra::params p{10, 3};
    for (ticks tat : {ticks{0}, ticks{101}, ticks{125}, ticks{130}, ticks{190}}) {
        INFO(tat);
        const ticks there = gcra::rescale(p, tat, 100, p, 7, 0);
        CHECK(gcra::available(p, there, 7) == gcra::available(p, tat, 100));
        CHECK(there - 7 == std::max<ticks>(tat, 100) - 100);
    }
}

TEST_CASE("a rate changed back and forth keeps reservations' ready time instead of inflating the debt", "[gcra]") {
    // Debt 50 of 30 at 10 ticks per permit: the last reservation is usable at
    // +20. Forty round trips between 10 and 1000 ticks per permit leave it there.
    const gcra::params fast{10, 3};
    const gcra::params slow{1000, 3};
    ticks tat = 150;
    for (int i = 0; i < 40; ++i) {
        tat = gcra::rescale(fast, tat, 100, slow, 100, 0);
        tat = gcra::rescale(slow, tat, 100, fast, 100, 0);
    }
    CHECK(tat == 150);
}
