// ratelimit::parse_go_duration: Go's time.ParseDuration syntax, exactly, in
// integer nanoseconds, with a sign rejected.

#include <chrono>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>

#include <ratelimit/headers.hpp>

#include "support/catch.hpp"

using namespace std::chrono_literals;
using ratelimit::parse_go_duration;

namespace {

constexpr std::int64_t ns_per_s = 1'000'000'000;

struct exact_case {
    std::string_view text;
    std::int64_t ns;
};

// Every value worked out by hand; the comment shows the arithmetic.
constexpr exact_case exact_cases[] = {
    {"6m0s", 6 * 60 * ns_per_s},
    {"1s", ns_per_s},
    {"20ms", 20 * 1'000'000},
    {"1m30.5s", 90 * ns_per_s + ns_per_s / 2},
    {"1m26.4s", 86'400'000'000},                                  // 86.4 s, no float rounding
    {"1.5h", 5400 * ns_per_s},                                    // 90 minutes
    {"0.1h", 360 * ns_per_s},                                     // 6 minutes
    {"1h2m3.004005006s", 3723 * ns_per_s + 4'005'006},            // 3600 + 120 + 3 s
    {".5s", ns_per_s / 2},
    {"5.s", 5 * ns_per_s},                                        // Go accepts an empty fraction
    {"0", 0},                                                     // "0" alone needs no unit
    {"0s", 0},
    {"000s", 0},
    {"1ns", 1},
    {"1us", 1'000},
    {"1\xC2\xB5s", 1'000},                                        // U+00B5 MICRO SIGN
    {"1\xCE\xBCs", 1'000},                                        // U+03BC GREEK SMALL LETTER MU
    {"1.9ns", 1},                                                 // rounded down to whole ns
    {"1.0000000019s", ns_per_s + 1},                              // digits past ns are dropped
    {"1h1h", 2 * 3600 * ns_per_s},                                // repeated units add up, as in Go
    {"1.5m", 90 * ns_per_s},
    {"2h45m", (2 * 3600 + 45 * 60) * ns_per_s},
    {"300ms", 300'000'000},
    {"0.00000000000028h", 1},                                     // 2.8e-13 h = 1.008 ns
    // 1/36 h is 100 s exactly; a decimal just below it must not round up to 100 s,
    // one just above must not round down.
    {"0.0277777777777777777777777777777h", 100 * ns_per_s - 1},
    {"0.0277777777777777777777777777778h", 100 * ns_per_s},
    {"2562047h47m16.854775807s", std::numeric_limits<std::int64_t>::max()},  // the largest duration
    {"9223372036854775807ns", std::numeric_limits<std::int64_t>::max()},
};

constexpr bool all_exact_cases_hold() {
    for (const exact_case& c : exact_cases) {
        const std::optional<std::chrono::nanoseconds> d = parse_go_duration(c.text);
        if (!d || d->count() != c.ns) return false;
    }
    return true;
}

}  // namespace

static_assert(all_exact_cases_hold(), "parse_go_duration is constexpr: the table is checked at compile time too");

TEST_CASE("Go durations parse to the exact nanosecond count", "[go_duration]") {
    for (const exact_case& c : exact_cases) {
        INFO(std::string(c.text));
        const std::optional<std::chrono::nanoseconds> d = parse_go_duration(c.text);
        REQUIRE(d.has_value());
        CHECK(d->count() == c.ns);
    }
}

TEST_CASE("OpenAI's documented reset values read as the durations they name", "[go_duration]") {
    CHECK(parse_go_duration("6m0s") == std::optional{6min});
    CHECK(parse_go_duration("1s") == std::optional<std::chrono::nanoseconds>{1s});
    CHECK(parse_go_duration("12ms") == std::optional<std::chrono::nanoseconds>{12ms});
    CHECK(parse_go_duration("17.28s") == std::optional<std::chrono::nanoseconds>{17280ms});
}

TEST_CASE("a sign is rejected, unlike Go", "[go_duration]") {
    CHECK_FALSE(parse_go_duration("-1s"));
    CHECK_FALSE(parse_go_duration("+1s"));
    CHECK_FALSE(parse_go_duration("-0"));
    CHECK_FALSE(parse_go_duration("1h-1s"));
}

TEST_CASE("empty strings, missing units and unknown units are rejected", "[go_duration]") {
    for (const std::string_view bad : {"", "1", "00", "1x", "1S", "1sec", "1 s", " 1s", "1s ", ".", ".s", "s", "1.5.s",
                                       "1e3s", "1,5s", "0x10s", "1\xB5s", "1\xCE", "nan", "inf", "1s\n"}) {
        INFO(std::string(bad));
        CHECK_FALSE(parse_go_duration(bad));
    }
}

TEST_CASE("an embedded NUL makes a duration malformed", "[go_duration]") {
    using namespace std::string_view_literals;
    CHECK_FALSE(parse_go_duration("1s\0"sv));
    CHECK_FALSE(parse_go_duration("1\0s"sv));
}

TEST_CASE("a duration beyond nanoseconds::max() is rejected, not wrapped or clamped", "[go_duration]") {
    CHECK_FALSE(parse_go_duration("9999999999999h"));             // 3.6e25 ns
    CHECK_FALSE(parse_go_duration("2562047h47m16.854775808s"));   // max + 1 ns
    CHECK_FALSE(parse_go_duration("9223372036854775808ns"));      // max + 1 ns
    CHECK_FALSE(parse_go_duration("2562048h"));                   // 9.2233748e18 ns
    CHECK_FALSE(parse_go_duration("99999999999999999999999ns"));  // beyond 64 bits before scaling
    CHECK_FALSE(parse_go_duration("2562047h2562047h"));           // each fits, the sum does not
}

TEST_CASE("a fraction of any length is read exactly and in linear time", "[go_duration]") {
    // 0.5 followed by a million zeros and a 1: still 0.5 s, rounded down.
    const std::string long_fraction = "0.5" + std::string(1'000'000, '0') + "1s";
    CHECK(parse_go_duration(long_fraction) == std::optional<std::chrono::nanoseconds>{500ms});
    // A million leading zeros in the whole part are harmless too.
    const std::string long_whole = std::string(1'000'000, '0') + "7ms";
    CHECK(parse_go_duration(long_whole) == std::optional<std::chrono::nanoseconds>{7ms});
}
