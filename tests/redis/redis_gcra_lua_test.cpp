// The Lua GCRA in redis/token_bucket.hpp against the same vectors as
// detail/gcra.hpp (tests/support/gcra_vectors.hpp), run by a real redis-server.

#include <cstdint>
#include <string>
#include <vector>

#include <ratelimit/redis/connection.hpp>
#include <ratelimit/redis/token_bucket.hpp>

#include "support/catch.hpp"
#include "support/gcra_vectors.hpp"
#include "support/redis_server.hpp"

namespace {

using namespace ratelimit_test::gcra_vectors;
namespace lua = ratelimit::redis::detail::lua;

constexpr std::int64_t lua_exact = std::int64_t{1} << 52;  // the script's numbers stay below

// Runs the Lua `expression` (a call into the GCRA functions on ARGV) and returns its numbers.
std::vector<long long> run_lua(ratelimit::redis::connection& c, const std::string& expression,
                               const std::vector<std::int64_t>& numbers) {
    const ratelimit::redis::script s(std::string(lua::gcra_math) + "\nlocal a = {}\nfor i, v in ipairs(ARGV) do a[i] = tonumber(v) end\nreturn {" +
                                     expression + "}\n");
    std::vector<std::string> text;
    for (std::int64_t v : numbers) text.push_back(std::to_string(v));
    std::vector<std::string_view> args(text.begin(), text.end());
    const ratelimit::redis::reply r = c.eval(s, {}, args);
    INFO(r.error());
    REQUIRE(r.ok());
    std::vector<long long> out;
    for (std::size_t i = 0; i < r.get()->elements; ++i) out.push_back(r.integer_at(i, -999));
    return out;
}

bool fits(std::initializer_list<std::int64_t> values) {
    for (std::int64_t v : values) {
        if (v >= lua_exact || v <= -lua_exact) return false;
    }
    return true;
}

ratelimit::redis::connection& server_connection() {
    static ratelimit::redis::connection c("127.0.0.1", ratelimit_test::redis_server::shared().port(),
                                          {std::chrono::milliseconds(1000), std::chrono::milliseconds(2000)});
    return c;
}

}  // namespace

TEST_CASE("the Lua decide agrees with detail::gcra::decide on every vector within 2^52") {
    int checked = 0;
    for (const decide_vector& v : decide_vectors) {
        if (!fits({v.tat, v.now, v.deadline == never_deadline ? 0 : v.deadline, v.new_tat, v.ready_at})) continue;
        const std::int64_t deadline = v.deadline == never_deadline ? lua_exact : v.deadline;
        INFO(v.name);
        const auto got = run_lua(server_connection(), "decide(a[1], a[2], a[3], a[4], a[5], a[6])",
                                 {v.interval, v.capacity, v.tat, v.now, v.n, deadline});
        REQUIRE(got.size() == 3);
        CHECK(got[0] == static_cast<long long>(v.outcome));
        CHECK(got[1] == v.new_tat);
        CHECK(got[2] == v.ready_at);
        ++checked;
    }
    CHECK(checked >= 15);
}

TEST_CASE("the Lua decide refuses past its own max_tat as out of range") {
    const std::int64_t max_tat = lua::gcra_max_tat;
    const auto edge = run_lua(server_connection(), "decide(a[1], a[2], a[3], a[4], a[5], a[6])",
                              {10, 3, max_tat - 10, 100, 1, lua_exact});
    CHECK(edge[0] == static_cast<long long>(verdict::granted));
    CHECK(edge[1] == max_tat);
    const auto past = run_lua(server_connection(), "decide(a[1], a[2], a[3], a[4], a[5], a[6])",
                              {10, 3, max_tat - 5, 100, 1, lua_exact});
    CHECK(past[0] == static_cast<long long>(verdict::out_of_range));
    CHECK(past[1] == max_tat - 5);
}

TEST_CASE("the Lua available, refund and cancel agree with the C++ vectors") {
    for (const available_vector& v : available_vectors) {
        INFO(v.name);
        const auto got = run_lua(server_connection(), "available(a[1], a[2], a[3], a[4])",
                                 {v.interval, v.capacity, v.tat, v.now});
        CHECK(got.at(0) == v.expected);
    }
    for (const refund_vector& v : refund_vectors) {
        INFO(v.name);
        const auto got = run_lua(server_connection(), "refund(a[1], a[2], a[3], a[4], a[5])",
                                 {v.interval, v.capacity, v.tat, v.now, v.n});
        CHECK(got.at(0) == v.expected);
    }
    for (const cancel_vector& v : cancel_vectors) {
        INFO(v.name);
        const auto got = run_lua(server_connection(), "cancel(a[1], a[2], a[3], a[4], a[5], a[6], a[7])",
                                 {v.interval, v.capacity, v.tat, v.now, v.n, v.reserved_end, v.ready_at});
        CHECK(got.at(0) == v.expected);
    }
}

TEST_CASE("the script's SHA-1 is the name Redis gives it") {
    const ratelimit::redis::script& s = lua::token_bucket_script();
    const ratelimit::redis::reply r =
        server_connection().command({"SCRIPT", "LOAD", s.source()});
    INFO(r.error());
    REQUIRE(r.ok());
    CHECK(std::string(r.get()->str, r.get()->len) == s.sha1());
}
