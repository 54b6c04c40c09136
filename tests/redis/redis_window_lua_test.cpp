// The Lua window math in redis/window_script.hpp (detail/window.hpp mirrored)
// and redis/sliding_window_log.hpp (detail/sliding_window_log.hpp's decision)
// against the C++: first the hand-computed vectors of
// tests/support/window_vectors.hpp, then seeded random rows checked against
// the C++ functions themselves, all run by a real redis-server.

#include <cstdint>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <ratelimit/detail/sliding_window_log.hpp>
#include <ratelimit/detail/window.hpp>
#include <ratelimit/redis/connection.hpp>
#include <ratelimit/redis/fixed_window.hpp>
#include <ratelimit/redis/sliding_window_counter.hpp>
#include <ratelimit/redis/sliding_window_log.hpp>

#include "support/catch.hpp"
#include "support/redis_server.hpp"
#include "support/window_vectors.hpp"

namespace {

using namespace ratelimit_test::window_vectors;
namespace lua = ratelimit::redis::detail::lua;
namespace window = ratelimit::detail::window;
namespace window_log = ratelimit::detail::window_log;

constexpr std::int64_t lua_exact = std::int64_t{1} << 53;  // the scripts' numbers stay below
constexpr std::int64_t lua_never = lua_exact - 1;          // a deadline that never comes, in Lua

ratelimit::redis::connection& server_connection() {
    static ratelimit::redis::connection c("127.0.0.1", ratelimit_test::redis_server::shared().port(),
                                          {std::chrono::milliseconds(1000), std::chrono::milliseconds(5000)});
    return c;
}

// Runs `call` (a Lua expression over a[1..k], e.g. "fixed_decide(a[1], ...)")
// once per row of k numbers after the Lua `math`, all in one script call (the
// rows travel as one text argument), and returns every result, row after row.
std::vector<long long> run_rows(std::string_view math, const std::string& call, std::size_t k,
                                const std::vector<std::vector<std::int64_t>>& rows) {
    std::ostringstream text;
    for (const auto& row : rows) {
        REQUIRE(row.size() == k);
        for (std::int64_t v : row) text << v << ' ';
    }
    const std::string source = std::string(math) +
                               "\nlocal numbers = {}\n"
                               "for word in string.gmatch(ARGV[1], '%S+') do numbers[#numbers + 1] = tonumber(word) end\n"
                               "local out = {}\n"
                               "for i = 1, #numbers, " + std::to_string(k) + " do\n"
                               "  local a = {}\n"
                               "  for j = 1, " + std::to_string(k) + " do a[j] = numbers[i + j - 1] end\n"
                               "  local r = {" + call + "}\n"
                               "  for _, v in ipairs(r) do out[#out + 1] = v end\n"
                               "end\n"
                               "return out\n";
    const ratelimit::redis::script s(source);
    const std::string argument = text.str();
    const std::string_view args[] = {argument};
    const ratelimit::redis::reply r = server_connection().eval(s, {}, args);
    INFO(r.error());
    REQUIRE(r.ok());
    std::vector<long long> out;
    for (std::size_t i = 0; i < r.get()->elements; ++i) out.push_back(r.integer_at(i, -999));
    return out;
}

// One row's results.
std::vector<long long> run_one(std::string_view math, const std::string& call, std::vector<std::int64_t> row) {
    const std::size_t k = row.size();
    return run_rows(math, call, k, {std::move(row)});
}

std::int64_t lua_deadline(std::int64_t deadline) { return deadline == never_deadline ? lua_never : deadline; }

const std::string fixed_decide_call = "fixed_decide(a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8])";
const std::string sliding_decide_call = "sliding_decide(a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9])";

}  // namespace

TEST_CASE("the Lua fixed_decide agrees with every fixed window vector") {
    int checked = 0;
    for (const fixed_decide_vector& v : fixed_decide_vectors) {
        INFO(v.name);
        const auto got = run_one(lua::window_math, fixed_decide_call,
                                 {v.limit, v.window_ns, lua_never, v.window, v.count, v.now, v.n, lua_deadline(v.deadline)});
        REQUIRE(got.size() == 4);
        CHECK(got[0] == static_cast<long long>(v.outcome));
        CHECK(got[1] == v.next_window);
        CHECK(got[2] == v.next_count);
        CHECK(got[3] == v.ready_at);
        ++checked;
    }
    CHECK(checked == static_cast<int>(std::size(fixed_decide_vectors)));
}

TEST_CASE("the Lua fixed_available and fixed_refund agree with the fixed window vectors") {
    for (const fixed_available_vector& v : fixed_available_vectors) {
        INFO(v.name);
        const auto got = run_one(lua::window_math, "fixed_available(a[1], a[2], a[3], a[4], a[5])",
                                 {v.limit, v.window_ns, v.window, v.count, v.now});
        CHECK(got.at(0) == v.expected);
    }
    for (const fixed_refund_vector& v : fixed_refund_vectors) {
        INFO(v.name);
        const auto got = run_one(lua::window_math, "fixed_refund(a[1], a[2], a[3], a[4], a[5], a[6])",
                                 {v.limit, v.window_ns, v.window, v.count, v.now, v.n});
        REQUIRE(got.size() == 2);
        CHECK(got[0] == v.next_window);
        CHECK(got[1] == v.next_count);
    }
}

TEST_CASE("the Lua sliding_decide agrees with every sliding window vector whose products fit in 2^53") {
    int checked = 0;
    for (const sliding_decide_vector& v : sliding_decide_vectors) {
        // limit · W bounds every product the decision takes (previous, room <= limit).
        if (v.limit > lua_exact / v.window_ns) continue;
        INFO(v.name);
        const auto got = run_one(lua::window_math, sliding_decide_call,
                                 {v.limit, v.window_ns, lua_never, v.window, v.current, v.previous, v.now, v.n,
                                  lua_deadline(v.deadline)});
        REQUIRE(got.size() == 5);
        CHECK(got[0] == static_cast<long long>(v.outcome));
        CHECK(got[1] == v.next_window);
        CHECK(got[2] == v.next_current);
        CHECK(got[3] == v.next_previous);
        CHECK(got[4] == v.ready_at);
        ++checked;
    }
    // Only "large limit and window" (67108863 · 3.6e12 > 2^53) is left out.
    CHECK(checked == static_cast<int>(std::size(sliding_decide_vectors)) - 1);
}

TEST_CASE("the Lua sliding_available and sliding_refund agree with the sliding window vectors") {
    for (const sliding_available_vector& v : sliding_available_vectors) {
        INFO(v.name);
        const auto got = run_one(lua::window_math, "sliding_available(a[1], a[2], a[3], a[4], a[5], a[6])",
                                 {v.limit, v.window_ns, v.window, v.current, v.previous, v.now});
        CHECK(got.at(0) == v.expected);
    }
    for (const sliding_refund_vector& v : sliding_refund_vectors) {
        INFO(v.name);
        const auto got = run_one(lua::window_math, "sliding_refund(a[1], a[2], a[3], a[4], a[5], a[6], a[7])",
                                 {v.limit, v.window_ns, v.window, v.current, v.previous, v.now, v.n});
        REQUIRE(got.size() == 3);
        CHECK(got[0] == v.next_window);
        CHECK(got[1] == v.next_current);
        CHECK(got[2] == v.next_previous);
    }
}

TEST_CASE("the Lua fixed window math agrees with the C++ on 20000 seeded random rows, out of range included") {
    std::mt19937_64 random(20240607);
    const auto pick = [&](std::int64_t low, std::int64_t high) {
        return std::uniform_int_distribution<std::int64_t>(low, high)(random);
    };
    std::vector<std::vector<std::int64_t>> rows;
    std::vector<window::fixed::decision> expected;
    std::vector<std::int64_t> expected_available;
    for (int i = 0; i < 20000; ++i) {
        const window::params p{pick(1, 9), pick(1, 3) == 1 ? pick(1, 3) : pick(4, 5000), pick(2, 12)};
        const window::fixed::state s{pick(0, p.max_window), pick(0, p.limit)};
        const std::int64_t now = pick(0, (p.max_window + 2) * p.window);
        const std::int64_t n = pick(0, p.limit + 1);
        const std::int64_t deadline = pick(1, 4) == 1 ? never_deadline : pick(0, now + 3 * p.window);
        rows.push_back({p.limit, p.window, p.max_window, s.window, s.count, now, n, lua_deadline(deadline)});
        expected.push_back(window::fixed::decide(p, s, now, n, deadline));
        expected_available.push_back(window::fixed::available(p, s, now));
    }
    // Only a Lua call's last expression in a list keeps all its values: available goes first.
    const auto got = run_rows(lua::window_math, "fixed_available(a[1], a[2], a[4], a[5], a[6]), " + fixed_decide_call,
                              8, rows);
    REQUIRE(got.size() == 5 * rows.size());
    int mismatches = 0;
    std::size_t outcomes[4] = {};
    for (std::size_t i = 0; i < rows.size(); ++i) {
        const window::fixed::decision& d = expected[i];
        ++outcomes[static_cast<std::size_t>(d.outcome)];
        const bool same = got[5 * i] == expected_available[i] && got[5 * i + 1] == static_cast<long long>(d.outcome) &&
                          got[5 * i + 2] == d.next.window && got[5 * i + 3] == d.next.count &&
                          got[5 * i + 4] == d.ready_at;
        if (!same && ++mismatches <= 5) {
            INFO("row " << i);
            CHECK(got[5 * i + 1] == static_cast<long long>(d.outcome));
            CHECK(got[5 * i + 4] == d.ready_at);
        }
    }
    CHECK(mismatches == 0);
    // Every verdict is common enough to be checked.
    CHECK(outcomes[0] > 1000);
    CHECK(outcomes[1] > 1000);
    CHECK(outcomes[2] > 100);
    CHECK(outcomes[3] > 100);
}

TEST_CASE("the Lua sliding window math agrees with the C++ on 20000 seeded random rows, out of range included") {
    std::mt19937_64 random(7);
    const auto pick = [&](std::int64_t low, std::int64_t high) {
        return std::uniform_int_distribution<std::int64_t>(low, high)(random);
    };
    std::vector<std::vector<std::int64_t>> rows;
    std::vector<window::sliding::decision> expected;
    std::vector<std::int64_t> expected_available;
    for (int i = 0; i < 20000; ++i) {
        const window::params p{pick(1, 12), pick(1, 3) == 1 ? pick(1, 7) : pick(8, 100000), pick(2, 12)};
        const window::sliding::state s{pick(0, p.max_window), pick(0, p.limit), pick(0, p.limit)};
        const std::int64_t now = pick(0, (p.max_window + 2) * p.window);
        const std::int64_t n = pick(0, p.limit + 1);
        const std::int64_t deadline = pick(1, 4) == 1 ? never_deadline : pick(0, now + 3 * p.window);
        rows.push_back(
            {p.limit, p.window, p.max_window, s.window, s.current, s.previous, now, n, lua_deadline(deadline)});
        expected.push_back(window::sliding::decide(p, s, now, n, deadline));
        expected_available.push_back(window::sliding::available(p, s, now));
    }
    const auto got = run_rows(lua::window_math,
                              "sliding_available(a[1], a[2], a[4], a[5], a[6], a[7]), " + sliding_decide_call, 9, rows);
    REQUIRE(got.size() == 6 * rows.size());
    int mismatches = 0;
    std::size_t outcomes[4] = {};
    for (std::size_t i = 0; i < rows.size(); ++i) {
        const window::sliding::decision& d = expected[i];
        ++outcomes[static_cast<std::size_t>(d.outcome)];
        const bool same = got[6 * i] == expected_available[i] && got[6 * i + 1] == static_cast<long long>(d.outcome) &&
                          got[6 * i + 2] == d.next.window && got[6 * i + 3] == d.next.current &&
                          got[6 * i + 4] == d.next.previous && got[6 * i + 5] == d.ready_at;
        if (!same && ++mismatches <= 5) {
            INFO("row " << i);
            CHECK(got[6 * i + 1] == static_cast<long long>(d.outcome));
            CHECK(got[6 * i + 5] == d.ready_at);
        }
    }
    CHECK(mismatches == 0);
    CHECK(outcomes[0] > 1000);
    CHECK(outcomes[1] > 1000);
    CHECK(outcomes[2] > 100);
    CHECK(outcomes[3] > 100);
}

TEST_CASE("the Lua sliding window math stays exact at limit · window just below 2^52") {
    // The largest limit for an hour counted in µs: limit · W = 1250999 · 3.6e9, just below 2^52.
    const std::int64_t w = 3'600'000'000;                    // one hour in µs
    const std::int64_t limit = ((std::int64_t{1} << 52) - 1) / w;  // 1250999
    const window::params p{limit, w, 1000};
    std::mt19937_64 random(52);
    std::vector<std::vector<std::int64_t>> rows;
    std::vector<window::sliding::decision> expected;
    for (int i = 0; i < 2000; ++i) {
        const window::sliding::state s{5, std::uniform_int_distribution<std::int64_t>(0, limit)(random),
                                       std::uniform_int_distribution<std::int64_t>(0, limit)(random)};
        const std::int64_t now = 5 * w + std::uniform_int_distribution<std::int64_t>(0, 2 * w)(random);
        const std::int64_t n = std::uniform_int_distribution<std::int64_t>(1, limit)(random);
        rows.push_back({p.limit, p.window, p.max_window, s.window, s.current, s.previous, now, n, lua_never});
        expected.push_back(window::sliding::decide(p, s, now, n, never_deadline));
    }
    const auto got = run_rows(lua::window_math, sliding_decide_call, 9, rows);
    REQUIRE(got.size() == 5 * rows.size());
    int mismatches = 0;
    for (std::size_t i = 0; i < rows.size(); ++i) {
        const window::sliding::decision& d = expected[i];
        if (got[5 * i] != static_cast<long long>(d.outcome) || got[5 * i + 1] != d.next.window ||
            got[5 * i + 2] != d.next.current || got[5 * i + 3] != d.next.previous || got[5 * i + 4] != d.ready_at) {
            ++mismatches;
        }
    }
    CHECK(mismatches == 0);
}

TEST_CASE("the Lua log decide agrees with detail::window_log::decide on hand rows") {
    // limit 3, window 1000: the n-th oldest leaves at its time + 1000.
    constexpr std::int64_t unused = window_log::unused_slot;
    struct row {
        const char* name;
        std::int64_t nth_oldest, newest, now, n, deadline;
        window_log::verdict outcome;
        std::int64_t start;
    };
    const row rows[] = {
        {"an unused slot grants now", unused, unused, 500, 1, 500, window_log::verdict::granted, 500},
        {"an expired entry grants now", 400, 450, 1400, 2, 1400, window_log::verdict::granted, 1400},
        {"at exactly its time + window the entry has left (half-open)", 400, 450, 1400, 1, 1400,
         window_log::verdict::granted, 1400},
        {"a live entry refuses until it leaves", 400, 900, 1000, 1, 1000, window_log::verdict::too_late, 1400},
        {"a deadline at that time grants there", 400, 900, 1000, 1, 1400, window_log::verdict::granted, 1400},
        {"no grant before the newest (a clock gone back)", unused, 2000, 1500, 1, 1500, window_log::verdict::too_late,
         2000},
        {"a deadline before now means now", unused, unused, 700, 1, 100, window_log::verdict::granted, 700},
        {"n above the limit is never granted", unused, unused, 0, 4, never_deadline, window_log::verdict::never, 0},
    };
    for (const row& r : rows) {
        INFO(r.name);
        const window_log::decision cpp = window_log::decide(3, 1000, r.nth_oldest, r.newest, r.now, r.n, r.deadline);
        REQUIRE(cpp.outcome == r.outcome);
        REQUIRE(cpp.start == r.start);
        const auto to_lua = [](std::int64_t t) { return t == unused ? -lua_exact : t; };
        const auto got = run_one(lua::window_log_math, "decide(a[1], a[2], a[3], a[4], a[5], a[6], a[7])",
                                 {3, 1000, to_lua(r.nth_oldest), to_lua(r.newest), r.now, r.n, lua_deadline(r.deadline)});
        REQUIRE(got.size() == 2);
        CHECK(got[0] == static_cast<long long>(r.outcome));
        CHECK(got[1] == r.start);
    }
}

TEST_CASE("the Lua log decide and available agree with the C++ on 5000 seeded random rows") {
    std::mt19937_64 random(11);
    const auto pick = [&](std::int64_t low, std::int64_t high) {
        return std::uniform_int_distribution<std::int64_t>(low, high)(random);
    };
    std::vector<std::vector<std::int64_t>> rows;
    std::vector<window_log::decision> expected;
    std::vector<std::int64_t> expected_available;
    for (int i = 0; i < 5000; ++i) {
        const std::int64_t limit = pick(1, 8);
        const std::int64_t w = pick(1, 2000);
        const std::int64_t now = pick(0, 10000);
        const bool unused = pick(0, 4) == 0;
        const std::int64_t nth = unused ? window_log::unused_slot : pick(std::max<std::int64_t>(0, now - 2 * w), now);
        const std::int64_t newest = unused && pick(0, 1) == 0 ? window_log::unused_slot : pick(nth == window_log::unused_slot ? 0 : nth, now + 50);
        const std::int64_t n = pick(1, limit + 1);
        const std::int64_t deadline = pick(0, 3) == 0 ? never_deadline : pick(0, now + 2 * w);
        const std::int64_t expired_count = pick(0, limit);
        const auto to_lua = [](std::int64_t t) { return t == window_log::unused_slot ? -lua_exact : t; };
        rows.push_back({limit, w, to_lua(nth), to_lua(newest), now, n, lua_deadline(deadline), expired_count});
        expected.push_back(window_log::decide(limit, w, nth, newest, now, n, deadline));
        expected_available.push_back(window_log::available(expired_count, newest, now));
    }
    const auto got = run_rows(lua::window_log_math,
                              "available(a[8], a[4], a[5]), decide(a[1], a[2], a[3], a[4], a[5], a[6], a[7])", 8, rows);
    REQUIRE(got.size() == 3 * rows.size());
    int mismatches = 0;
    for (std::size_t i = 0; i < rows.size(); ++i) {
        const bool same = got[3 * i] == expected_available[i] &&
                          got[3 * i + 1] == static_cast<long long>(expected[i].outcome) &&
                          (expected[i].outcome == window_log::verdict::never || got[3 * i + 2] == expected[i].start);
        if (!same) ++mismatches;
    }
    CHECK(mismatches == 0);
}

TEST_CASE("the Lua window and log math match every overflow row at its own top, 2^53") {
    // The rows of window_vectors.hpp's at_top, run at the doubles' top (where the
    // C++ runs them at INT64_MAX); max_window is the top too.
    using lua_top = at_top<lua_exact>;
    for (const fixed_decide_vector& v : lua_top::fixed_decide) {
        INFO(v.name);
        const auto got = run_one(lua::window_math, fixed_decide_call,
                                 {v.limit, v.window_ns, lua_exact, v.window, v.count, v.now, v.n, v.deadline});
        REQUIRE(got.size() == 4);
        CHECK(got[0] == static_cast<long long>(v.outcome));
        CHECK(got[1] == v.next_window);
        CHECK(got[2] == v.next_count);
        CHECK(got[3] == v.ready_at);
    }
    for (const sliding_decide_vector& v : lua_top::sliding_decide) {
        INFO(v.name);
        const auto got = run_one(lua::window_math, sliding_decide_call,
                                 {v.limit, v.window_ns, lua_exact, v.window, v.current, v.previous, v.now, v.n, v.deadline});
        REQUIRE(got.size() == 5);
        CHECK(got[0] == static_cast<long long>(v.outcome));
        CHECK(got[1] == v.next_window);
        CHECK(got[2] == v.next_current);
        CHECK(got[3] == v.next_previous);
        CHECK(got[4] == v.ready_at);
    }
    for (const sliding_available_vector& v : lua_top::sliding_available) {
        INFO(v.name);
        const auto got = run_one(lua::window_math, "sliding_available(a[1], a[2], a[3], a[4], a[5], a[6])",
                                 {v.limit, v.window_ns, v.window, v.current, v.previous, v.now});
        CHECK(got.at(0) == v.expected);
    }
    for (const log_decide_vector& v : lua_top::log_decide) {
        INFO(v.name);
        const auto got = run_one(lua::window_log_math, "decide(a[1], a[2], a[3], a[4], a[5], a[6], a[7])",
                                 {v.limit, v.window_ns, v.nth_oldest, v.newest, v.now, v.n, v.deadline});
        REQUIRE(got.size() == 2);
        CHECK(got[0] == static_cast<long long>(v.outcome));
        CHECK(got[1] == v.start);
    }
}

TEST_CASE("the window scripts' SHA-1s are the names Redis gives them") {
    for (const ratelimit::redis::script* s :
         {&lua::fixed_window_script(), &lua::sliding_window_counter_script(), &lua::sliding_window_log_script()}) {
        const ratelimit::redis::reply r = server_connection().command({"SCRIPT", "LOAD", s->source()});
        INFO(r.error());
        REQUIRE(r.ok());
        CHECK(std::string(r.get()->str, r.get()->len) == s->sha1());
    }
}
