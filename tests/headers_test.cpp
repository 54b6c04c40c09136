// ratelimit::parse_rate_limit_headers: provider header sets as OpenAI, Azure
// OpenAI, Anthropic and the IETF draft document them, and what hostile or
// malformed input does (nothing: the field stays empty). Also the pure
// parsers underneath (include/ratelimit/detail/header_parse.hpp).

#include <array>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <ratelimit/detail/header_parse.hpp>
#include <ratelimit/headers.hpp>

#include "../fuzz/header_input.hpp"
#include "support/catch.hpp"

using namespace std::chrono_literals;
using ratelimit::parse_rate_limit_headers;
using ratelimit::quota_snapshot;
using ratelimit::quota_state;
using headers = std::vector<std::pair<std::string, std::string>>;
namespace hp = ratelimit::detail::header;

namespace {

using std::chrono::nanoseconds;
using sys_time = std::chrono::system_clock::time_point;

// The wall clock of every test: 2024-07-01T12:00:00Z.
const sys_time noon = std::chrono::sys_days{std::chrono::year{2024} / 7 / 1} + 12h;

std::int64_t epoch_seconds(sys_time t) {
    return std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()).count();
}

quota_snapshot parse(const headers& h, sys_time now = noon) { return parse_rate_limit_headers(h, now); }

std::optional<nanoseconds> ns(nanoseconds d) { return d; }

}  // namespace

// ------------------------------------------------------------------ OpenAI

TEST_CASE("OpenAI's documented header set fills requests and tokens", "[headers][openai]") {
    // platform.openai.com/docs/guides/rate-limits, "Rate limits in headers".
    const quota_snapshot s = parse({{"x-ratelimit-limit-requests", "60"},
                                    {"x-ratelimit-limit-tokens", "150000"},
                                    {"x-ratelimit-remaining-requests", "59"},
                                    {"x-ratelimit-remaining-tokens", "149984"},
                                    {"x-ratelimit-reset-requests", "1s"},
                                    {"x-ratelimit-reset-tokens", "6m0s"}});
    REQUIRE(s.requests);
    CHECK(s.requests->limit == 60);
    CHECK(s.requests->remaining == 59);
    CHECK(s.requests->reset_after == ns(1s));
    REQUIRE(s.tokens);
    CHECK(s.tokens->limit == 150000);
    CHECK(s.tokens->remaining == 149984);
    CHECK(s.tokens->reset_after == ns(6min));
    CHECK_FALSE(s.input_tokens);
    CHECK_FALSE(s.output_tokens);
    CHECK_FALSE(s.retry_after);
}

TEST_CASE("OpenAI resets in milliseconds and fractional seconds are exact", "[headers][openai]") {
    const quota_snapshot s = parse({{"x-ratelimit-reset-requests", "12ms"}, {"x-ratelimit-reset-tokens", "1m26.4s"}});
    CHECK(s.requests->reset_after == ns(12ms));
    CHECK(s.tokens->reset_after == ns(86400ms));  // 60 s + 26.4 s
}

TEST_CASE("usage-based variants OpenAI also sends are not mistaken for the token quota", "[headers][openai]") {
    const quota_snapshot s = parse({{"x-ratelimit-limit-tokens_usage_based", "160000"},
                                    {"x-ratelimit-remaining-tokens_usage_based", "159976"},
                                    {"x-ratelimit-reset-tokens_usage_based", "9ms"}});
    CHECK_FALSE(s.tokens);
}

// ------------------------------------------------------------------ Azure OpenAI

TEST_CASE("Azure's bare-second resets read as seconds", "[headers][azure]") {
    const quota_snapshot s = parse({{"x-ratelimit-remaining-requests", "19"},
                                    {"x-ratelimit-remaining-tokens", "19913"},
                                    {"x-ratelimit-reset-requests", "30"},
                                    {"x-ratelimit-reset-tokens", "0.5"}});
    CHECK(s.requests->remaining == 19);
    CHECK(s.requests->reset_after == ns(30s));
    CHECK(s.tokens->remaining == 19913);
    CHECK(s.tokens->reset_after == ns(500ms));
}

TEST_CASE("Azure's -1 means unknown, not a count", "[headers][azure]") {
    // As reported for the Azure OpenAI Responses API: limit and remaining -1, reset 0.
    const quota_snapshot s =
        parse({{"x-ratelimit-limit-tokens", "-1"}, {"x-ratelimit-remaining-tokens", "-1"}, {"x-ratelimit-reset-tokens", "0"}});
    REQUIRE(s.tokens);
    CHECK_FALSE(s.tokens->limit);
    CHECK_FALSE(s.tokens->remaining);
    CHECK(s.tokens->reset_after == ns(0s));
}

TEST_CASE("retry-after-ms takes precedence over Retry-After", "[headers][azure][retry]") {
    CHECK(parse({{"Retry-After", "2"}, {"retry-after-ms", "1500"}}).retry_after == ns(1500ms));
    CHECK(parse({{"retry-after-ms", "1500"}, {"Retry-After", "2"}}).retry_after == ns(1500ms));
    CHECK(parse({{"retry-after-ms", "12.5"}}).retry_after == ns(12500us));
}

TEST_CASE("a malformed retry-after-ms falls back to Retry-After", "[headers][azure][retry]") {
    CHECK(parse({{"retry-after-ms", "soon"}, {"Retry-After", "2"}}).retry_after == ns(2s));
    CHECK(parse({{"retry-after-ms", "-5"}, {"Retry-After", "2"}}).retry_after == ns(2s));
}

// ------------------------------------------------------------------ Anthropic

TEST_CASE("Anthropic's four dimensions read with RFC 3339 resets", "[headers][anthropic]") {
    // docs.anthropic.com/en/api/rate-limits, "Response headers".
    const quota_snapshot s = parse({{"anthropic-ratelimit-requests-limit", "50"},
                                    {"anthropic-ratelimit-requests-remaining", "49"},
                                    {"anthropic-ratelimit-requests-reset", "2024-07-01T12:00:01Z"},
                                    {"anthropic-ratelimit-tokens-limit", "48000"},
                                    {"anthropic-ratelimit-tokens-remaining", "47000"},
                                    {"anthropic-ratelimit-tokens-reset", "2024-07-01T12:00:02Z"},
                                    {"anthropic-ratelimit-input-tokens-limit", "40000"},
                                    {"anthropic-ratelimit-input-tokens-remaining", "39500"},
                                    {"anthropic-ratelimit-input-tokens-reset", "2024-07-01T12:00:03Z"},
                                    {"anthropic-ratelimit-output-tokens-limit", "8000"},
                                    {"anthropic-ratelimit-output-tokens-remaining", "7500"},
                                    {"anthropic-ratelimit-output-tokens-reset", "2024-07-01T12:00:30Z"},
                                    {"retry-after", "30"}});
    CHECK(s.requests == quota_state{50, 49, 1s});
    CHECK(s.tokens == quota_state{48000, 47000, 2s});
    CHECK(s.input_tokens == quota_state{40000, 39500, 3s});
    CHECK(s.output_tokens == quota_state{8000, 7500, 30s});
    CHECK(s.retry_after == ns(30s));
}

TEST_CASE("RFC 3339 offsets and fractions give the same instant", "[headers][anthropic]") {
    // Each is 12:00:30Z, 30 s after noon, written differently.
    for (const char* reset : {"2024-07-01T12:00:30Z", "2024-07-01T14:00:30+02:00", "2024-07-01T06:30:30-05:30",
                              "2024-07-01t12:00:30z", "2024-07-01 12:00:30Z", "2024-07-01T12:00:30.000000000Z",
                              "2024-07-02T00:00:30+12:00"}) {
        INFO(reset);
        CHECK(parse({{"anthropic-ratelimit-requests-reset", reset}}).requests->reset_after == ns(30s));
    }
    CHECK(parse({{"anthropic-ratelimit-requests-reset", "2024-07-01T12:00:30.25Z"}}).requests->reset_after ==
          ns(30250ms));
    // Digits past the nanosecond are dropped, not rounded.
    CHECK(parse({{"anthropic-ratelimit-requests-reset", "2024-07-01T12:00:00.0000000019Z"}}).requests->reset_after ==
          ns(1ns));
}

TEST_CASE("a reset already past reads as zero", "[headers][anthropic][past]") {
    CHECK(parse({{"anthropic-ratelimit-tokens-reset", "2024-07-01T11:59:59Z"}}).tokens->reset_after == ns(0s));
    CHECK(parse({{"anthropic-ratelimit-tokens-reset", "1999-01-01T00:00:00Z"}}).tokens->reset_after == ns(0s));
    CHECK(parse({{"anthropic-ratelimit-tokens-reset", "2024-07-01T12:00:00Z"}}).tokens->reset_after == ns(0s));
}

TEST_CASE("an impossible RFC 3339 date is malformed", "[headers][anthropic]") {
    for (const char* bad : {"2024-02-30T00:00:00Z", "2023-02-29T00:00:00Z", "2024-13-01T00:00:00Z",
                            "2024-07-01T24:00:00Z", "2024-07-01T12:60:00Z", "2024-07-01T12:00:61Z",
                            "2024-07-01T12:00:30", "2024-07-01T12:00:30+0200", "2024-07-01T12:00:30+24:00",
                            "2024-07-01T12:00:30.Z", "2024-7-01T12:00:30Z", "2024-07-01T12:00:30Z trailing"}) {
        INFO(bad);
        CHECK_FALSE(parse({{"anthropic-ratelimit-tokens-reset", bad}}).tokens);
    }
    // A leap day exists in 2024, and second 60 (a leap second) is allowed.
    CHECK(parse({{"anthropic-ratelimit-tokens-reset", "2024-02-29T00:00:00Z"}}).tokens->reset_after == ns(0s));
    CHECK(parse({{"anthropic-ratelimit-tokens-reset", "2024-07-01T12:00:60Z"}}).tokens->reset_after == ns(60s));
}

TEST_CASE("a reset too far away for nanoseconds is unknown, not clamped", "[headers][anthropic][overflow]") {
    // 9999-12-31 is about 7975 years away; nanoseconds::max() is about 292 years.
    CHECK_FALSE(parse({{"anthropic-ratelimit-tokens-reset", "9999-12-31T23:59:59Z"}}).tokens);
    CHECK(parse({{"anthropic-ratelimit-tokens-reset", "2200-01-01T00:00:00Z"}}).tokens->reset_after > 175 * 8760h);
}

// ------------------------------------------------------------------ the Date header

TEST_CASE("absolute resets are read against the response's Date, not the local clock", "[headers][date]") {
    // The server's clock says 12:00:10; ours says noon or 13:00: the reset is 20 s away either way.
    const headers h = {{"Date", "Mon, 01 Jul 2024 12:00:10 GMT"},
                       {"anthropic-ratelimit-requests-reset", "2024-07-01T12:00:30Z"}};
    CHECK(parse(h, noon).requests->reset_after == ns(20s));
    CHECK(parse(h, noon + 1h).requests->reset_after == ns(20s));
}

TEST_CASE("the Date header counts wherever it appears among the headers", "[headers][date]") {
    const headers h = {{"anthropic-ratelimit-requests-reset", "2024-07-01T12:00:30Z"},
                       {"date", "Mon, 01 Jul 2024 12:00:10 GMT"}};
    CHECK(parse(h).requests->reset_after == ns(20s));
}

TEST_CASE("a malformed Date header is ignored and the local clock used", "[headers][date]") {
    const headers h = {{"Date", "yesterday"}, {"anthropic-ratelimit-requests-reset", "2024-07-01T12:00:30Z"}};
    CHECK(parse(h).requests->reset_after == ns(30s));
}

TEST_CASE("relative resets ignore the Date header", "[headers][date]") {
    const headers h = {{"Date", "Mon, 01 Jul 2024 11:00:00 GMT"}, {"x-ratelimit-reset-requests", "1s"}};
    CHECK(parse(h).requests->reset_after == ns(1s));
}

// ------------------------------------------------------------------ Retry-After

TEST_CASE("Retry-After as delay-seconds, fractional seconds or an HTTP-date", "[headers][retry]") {
    CHECK(parse({{"Retry-After", "120"}}).retry_after == ns(120s));
    CHECK(parse({{"Retry-After", "0"}}).retry_after == ns(0s));
    CHECK(parse({{"Retry-After", "1.5"}}).retry_after == ns(1500ms));
    // Noon plus 37 s, in each HTTP-date form.
    for (const char* date : {"Mon, 01 Jul 2024 12:00:37 GMT", "Monday, 01-Jul-24 12:00:37 GMT",
                             "Mon Jul  1 12:00:37 2024"}) {
        INFO(date);
        CHECK(parse({{"Retry-After", date}}).retry_after == ns(37s));
    }
}

TEST_CASE("a Retry-After date is read against the Date header", "[headers][retry][date]") {
    // The IETF draft's example B.1.4: a 429 with Date and Retry-After 5 s apart, years ago.
    const quota_snapshot s = parse({{"Date", "Mon, 05 Aug 2019 09:27:00 GMT"},
                                    {"Retry-After", "Mon, 05 Aug 2019 09:27:05 GMT"},
                                    {"RateLimit", "\"default\";r=0;t=5"}});
    CHECK(s.retry_after == ns(5s));
    CHECK(s.requests == quota_state{std::nullopt, 0, 5s});
}

TEST_CASE("a Retry-After date already past reads as zero", "[headers][retry][past]") {
    CHECK(parse({{"Retry-After", "Sun, 06 Nov 1994 08:49:37 GMT"}}).retry_after == ns(0s));
}

TEST_CASE("a malformed Retry-After is ignored", "[headers][retry]") {
    for (const char* bad : {"-1", "soon", "1e3", "0x10", "Mon, 01 Jul 2024 12:00:37 UTC", "Mon, 32 Jul 2024 12:00:37 GMT",
                            "Mon, 01 Jul 2024 12:00:37", "Mon Jul 1 12:00:37 2024", "99999999999"}) {
        INFO(bad);
        CHECK_FALSE(parse({{"Retry-After", bad}}).retry_after);
    }
}

// ------------------------------------------------------------------ IETF RateLimit / RateLimit-Policy

TEST_CASE("RateLimit alone gives remaining and reset for requests", "[headers][ietf]") {
    const quota_snapshot s = parse({{"RateLimit", "\"default\";r=50;t=30"}});
    CHECK(s.requests == quota_state{std::nullopt, 50, 30s});
    CHECK_FALSE(s.tokens);
}

TEST_CASE("RateLimit-Policy's q becomes the limit of its named service limit", "[headers][ietf]") {
    const quota_snapshot s = parse({{"RateLimit-Policy", "\"fixedwindow\";q=100;w=60"}, {"RateLimit", "\"fixedwindow\";r=99;t=50"}});
    CHECK(s.requests == quota_state{100, 99, 50s});
}

TEST_CASE("with several policies the limit is the one the service limit names", "[headers][ietf]") {
    // The draft's example B.3.2: hourly and daily policies, the daily one reported.
    const quota_snapshot s = parse(
        {{"RateLimit-Policy", "\"hour\";q=1000;w=3600, \"day\";q=5000;w=86400"}, {"RateLimit", "\"day\";r=100;t=36000"}});
    CHECK(s.requests == quota_state{5000, 100, 10h});
}

TEST_CASE("of several service limits for one dimension the tightest is reported", "[headers][ietf]") {
    const quota_snapshot s = parse({{"RateLimit-Policy", "\"permin\";q=50;w=60,\"perhr\";q=1000;w=3600"},
                                    {"RateLimit", "\"perhr\";r=400;t=1800, \"permin\";r=3;t=20"}});
    CHECK(s.requests == quota_state{50, 3, 20s});
}

TEST_CASE("equal remaining picks the later reset", "[headers][ietf]") {
    const quota_snapshot s = parse({{"RateLimit", "a;r=0;t=5, b;r=0;t=50, c;r=0;t=7"}});
    CHECK(s.requests == quota_state{std::nullopt, 0, 50s});
}

TEST_CASE("token names without quotes and a service limit without r", "[headers][ietf]") {
    // The draft's example B.3.1.
    const quota_snapshot s = parse({{"RateLimit-Policy", "quota;q=100;w=1"}, {"RateLimit", "quota;t=1"}});
    CHECK(s.requests == quota_state{100, std::nullopt, 1s});
}

TEST_CASE("partition keys, vendor parameters and spaces after separators are accepted", "[headers][ietf]") {
    const quota_snapshot s = parse({{"RateLimit-Policy", "\"peruser\";q=100;w=60;pk=:cHsdsRa894==:;acme-burst=5"},
                                    {"RateLimit", "\"peruser\"; r=42; t=9; pk=:cHsdsRa894==:,  \"other\";r=999"}});
    CHECK(s.requests == quota_state{100, 42, 9s});
}

TEST_CASE("whitespace before ';' and around '=' is tolerated", "[headers][ietf]") {
    CHECK(parse({{"RateLimit", "\"default\" ; r = 7 ;t=3"}}).requests == quota_state{std::nullopt, 7, 3s});
}

TEST_CASE("a quota unit of tokens maps to the token dimension", "[headers][ietf]") {
    const quota_snapshot s = parse({{"RateLimit-Policy", "\"rpm\";q=60;w=60, \"tpm\";q=90000;w=60;qu=\"tokens\""},
                                    {"RateLimit", "\"rpm\";r=59;t=1, \"tpm\";r=88000;t=1"}});
    CHECK(s.requests == quota_state{60, 59, 1s});
    CHECK(s.tokens == quota_state{90000, 88000, 1s});
}

TEST_CASE("a policy name saying tokens maps to the token dimensions", "[headers][ietf]") {
    const quota_snapshot s =
        parse({{"RateLimit", "\"tokens\";r=500;t=10, \"input-tokens\";r=400;t=10, \"output_tokens_per_min\";r=80;t=10"}});
    CHECK_FALSE(s.requests);
    CHECK(s.tokens == quota_state{std::nullopt, 500, 10s});
    CHECK(s.input_tokens == quota_state{std::nullopt, 400, 10s});
    CHECK(s.output_tokens == quota_state{std::nullopt, 80, 10s});
}

TEST_CASE("content-bytes, concurrent-requests and unknown units are not counted as requests", "[headers][ietf]") {
    const quota_snapshot s = parse({{"RateLimit-Policy",
                                     "\"bw\";q=65535;qu=\"content-bytes\";w=10, \"conc\";q=4;qu=\"concurrent-requests\", "
                                     "\"w\";q=9;qu=\"widgets\""},
                                    {"RateLimit", "\"bw\";r=300000000;t=60, \"conc\";r=1, \"w\";r=2;t=1"}});
    CHECK_FALSE(s.requests);
    CHECK_FALSE(s.tokens);
}

TEST_CASE("an explicit requests unit is requests whatever the name", "[headers][ietf]") {
    const quota_snapshot s = parse({{"RateLimit-Policy", "\"tokens\";q=10;qu=\"requests\""}, {"RateLimit", "\"tokens\";r=4"}});
    CHECK(s.requests == quota_state{10, 4, std::nullopt});
    CHECK_FALSE(s.tokens);
}

TEST_CASE("a policy without a service limit still gives the limit", "[headers][ietf]") {
    CHECK(parse({{"RateLimit-Policy", "\"default\";q=100;w=60"}}).requests == quota_state{100, std::nullopt, std::nullopt});
}

TEST_CASE("lists split over several fields combine", "[headers][ietf][multimap]") {
    std::multimap<std::string, std::string> h = {{"RateLimit-Policy", "\"a\";q=100;w=60"},
                                                 {"RateLimit-Policy", "\"b\";q=10;w=1"},
                                                 {"RateLimit", "\"a\";r=80;t=30"},
                                                 {"RateLimit", "\"b\";r=2;t=1"}};
    CHECK(parse_rate_limit_headers(h, noon).requests == quota_state{10, 2, 1s});
}

TEST_CASE("a malformed RateLimit field is ignored entirely", "[headers][ietf]") {
    for (const char* bad : {"\"default\";r=50;t=30,", "\"default\";r=50;;t=30", "\"default\";R=50", "\"unterminated;r=1",
                            "\"default\";r=50 t=30", "default;r=1234567890123456", "\"a\";r=1, , \"b\";r=2",
                            "\"default\";r=\"5\"", "{\"json\": 1}"}) {
        INFO(bad);
        const quota_snapshot s = parse({{"RateLimit", bad}});
        CHECK((!s.requests || !s.requests->remaining));
    }
    // A valid parameter of the wrong type or sign leaves just that value unknown.
    CHECK(parse({{"RateLimit", "\"default\";r=-1;t=30"}}).requests == quota_state{std::nullopt, std::nullopt, 30s});
    CHECK(parse({{"RateLimit", "\"default\";r=5;t=?1"}}).requests == quota_state{std::nullopt, 5, std::nullopt});
}

TEST_CASE("inner lists and non-string items are skipped, not fatal", "[headers][ietf]") {
    CHECK(parse({{"RateLimit", "(\"a\" \"b\");r=1, 5;r=2, \"c\";r=3"}}).requests == quota_state{std::nullopt, 3, std::nullopt});
}

// ------------------------------------------------------------------ RateLimit-* and X-RateLimit-*

TEST_CASE("the older RateLimit trio reads as requests with a delay reset", "[headers][trio]") {
    const quota_snapshot s = parse({{"RateLimit-Limit", "100"}, {"RateLimit-Remaining", "99"}, {"RateLimit-Reset", "30"}});
    CHECK(s.requests == quota_state{100, 99, 30s});
}

TEST_CASE("X-RateLimit-Reset as epoch seconds is relative to now", "[headers][x-ratelimit]") {
    const std::string in_90s = std::to_string(epoch_seconds(noon) + 90);
    const quota_snapshot s =
        parse({{"X-RateLimit-Limit", "5000"}, {"X-RateLimit-Remaining", "4999"}, {"X-RateLimit-Reset", in_90s}});
    CHECK(s.requests == quota_state{5000, 4999, 90s});
}

TEST_CASE("X-RateLimit-Reset as a delay, epoch milliseconds, or past epoch", "[headers][x-ratelimit]") {
    CHECK(parse({{"X-RateLimit-Reset", "60"}}).requests->reset_after == ns(60s));
    CHECK(parse({{"X-RateLimit-Reset", "999999999"}}).requests->reset_after == ns(999999999s));  // just below 1e9: a delay
    const std::string in_1500ms = std::to_string(epoch_seconds(noon) * 1000 + 1500);
    CHECK(parse({{"X-RateLimit-Reset", in_1500ms}}).requests->reset_after == ns(1500ms));
    const std::string fractional = std::to_string(epoch_seconds(noon) + 2) + ".25";  // Discord style
    CHECK(parse({{"X-RateLimit-Reset", fractional}}).requests->reset_after == ns(2250ms));
    CHECK(parse({{"X-RateLimit-Reset", "1000000000"}}).requests->reset_after == ns(0s));  // 2001: past
}

TEST_CASE("an epoch RateLimit-Reset (GitLab) is read as one", "[headers][trio]") {
    const std::string in_10s = std::to_string(epoch_seconds(noon) + 10);
    CHECK(parse({{"RateLimit-Reset", in_10s}}).requests->reset_after == ns(10s));
}

TEST_CASE("an HTTP-date reset is accepted too", "[headers][x-ratelimit]") {
    CHECK(parse({{"X-RateLimit-Reset", "Mon, 01 Jul 2024 12:01:00 GMT"}}).requests->reset_after == ns(60s));
}

TEST_CASE("RateLimit-Policy is not read as part of the trio", "[headers][trio]") {
    CHECK(parse({{"RateLimit-Policy", "100"}}).requests == std::nullopt);  // a bare Integer item has no name
}

// ------------------------------------------------------------------ families together

TEST_CASE("a provider's own headers win over the generic ones, all fields together", "[headers][precedence]") {
    const quota_snapshot s = parse({{"RateLimit", "\"default\";r=1;t=1"},
                                    {"X-RateLimit-Limit", "7"},
                                    {"x-ratelimit-limit-requests", "60"},
                                    {"x-ratelimit-remaining-requests", "59"}});
    // OpenAI's said nothing of the reset, and the reset is not borrowed from another family.
    CHECK(s.requests == quota_state{60, 59, std::nullopt});
}

TEST_CASE("the IETF fields win over the older trio and X-RateLimit-*", "[headers][precedence]") {
    const quota_snapshot s =
        parse({{"X-RateLimit-Remaining", "1"}, {"RateLimit-Remaining", "2"}, {"RateLimit", "\"default\";r=3;t=4"}});
    CHECK(s.requests == quota_state{std::nullopt, 3, 4s});
    CHECK(parse({{"X-RateLimit-Remaining", "1"}, {"RateLimit-Remaining", "2"}}).requests->remaining == 2);
}

TEST_CASE("a family with only malformed values does not hide the next one", "[headers][precedence]") {
    const quota_snapshot s = parse({{"x-ratelimit-remaining-requests", "-1"}, {"RateLimit-Remaining", "2"}});
    CHECK(s.requests->remaining == 2);
}

// ------------------------------------------------------------------ hostile input

TEST_CASE("no headers, or none about rate limits, give an empty snapshot", "[headers][missing]") {
    CHECK(parse({}) == quota_snapshot{});
    CHECK(parse({{"Content-Type", "application/json"}, {"Server", "nginx"}, {"X-Request-Id", "abc"}}) == quota_snapshot{});
}

TEST_CASE("a dimension is engaged by any one valid field", "[headers][missing]") {
    const quota_snapshot s = parse({{"x-ratelimit-remaining-tokens", "5"}});
    CHECK_FALSE(s.requests);
    CHECK(s.tokens == quota_state{std::nullopt, 5, std::nullopt});
}

TEST_CASE("names match case-insensitively", "[headers][case]") {
    const quota_snapshot s = parse({{"X-RATELIMIT-REMAINING-REQUESTS", "3"},
                                    {"Anthropic-RateLimit-Tokens-Limit", "9"},
                                    {"RETRY-AFTER", "4"},
                                    {"rAtElImIt", "\"x\";r=1"}});
    CHECK(s.requests->remaining == 3);
    CHECK(s.tokens->limit == 9);
    CHECK(s.retry_after == ns(4s));
}

TEST_CASE("surrounding whitespace in values and names is trimmed", "[headers][whitespace]") {
    const quota_snapshot s = parse({{" x-ratelimit-remaining-requests ", " \t59 \r\n"}, {"x-ratelimit-reset-requests", " 1s "}});
    CHECK(s.requests == quota_state{std::nullopt, 59, 1s});
}

TEST_CASE("-1, negative numbers and garbage leave a field empty", "[headers][hostile]") {
    for (const char* bad : {"-1", "-0", "+5", "5.0", "1e3", "0x10", "five", "5 5", "", " ", "nan", "inf", "٣"}) {
        INFO(bad);
        CHECK_FALSE(parse({{"x-ratelimit-remaining-requests", bad}}).requests);
    }
}

TEST_CASE("integers beyond int64 are unknown, not clamped", "[headers][hostile][overflow]") {
    CHECK_FALSE(parse({{"x-ratelimit-limit-requests", "9223372036854775808"}}).requests);
    CHECK_FALSE(parse({{"x-ratelimit-limit-requests", "99999999999999999999999999999"}}).requests);
    CHECK(parse({{"x-ratelimit-limit-requests", "9223372036854775807"}}).requests->limit ==
          std::numeric_limits<std::int64_t>::max());
    // Durations beyond nanoseconds::max() likewise.
    CHECK_FALSE(parse({{"x-ratelimit-reset-requests", "9999999999999h"}}).requests);
    CHECK_FALSE(parse({{"Retry-After", "9223372037"}}).retry_after);  // 1 s more than nanoseconds::max()
    CHECK(parse({{"Retry-After", "9223372036"}}).retry_after == ns(9223372036s));
    CHECK_FALSE(parse({{"retry-after-ms", "9223372036855"}}).retry_after);  // 1 ms more than nanoseconds::max()
    CHECK(parse({{"retry-after-ms", "9223372036854"}}).retry_after == ns(9223372036854ms));
}

TEST_CASE("embedded NULs make a value malformed", "[headers][hostile]") {
    using namespace std::string_literals;
    CHECK_FALSE(parse({{"x-ratelimit-remaining-requests", "5\0"s}}).requests);
    CHECK_FALSE(parse({{"x-ratelimit-reset-requests", "1\0s"s}}).requests);
    CHECK_FALSE(parse({{"Retry-After", "\0"s}}).retry_after);
    CHECK_FALSE(parse({{"x-ratelimit-remaining-requests\0"s, "5"}}).requests);
}

TEST_CASE("very long values are rejected without trouble", "[headers][hostile]") {
    const std::string digits(1'000'000, '9');
    const std::string zeros = std::string(1'000'000, '0') + "42";
    const quota_snapshot s = parse({{"x-ratelimit-limit-requests", digits},
                                    {"x-ratelimit-remaining-requests", zeros},
                                    {"Retry-After", digits},
                                    {"RateLimit", std::string(1'000'000, '"')},
                                    {"anthropic-ratelimit-tokens-reset", std::string(1'000'000, '-')}});
    CHECK(s.requests == quota_state{std::nullopt, 42, std::nullopt});  // leading zeros are fine
    CHECK_FALSE(s.retry_after);
    CHECK_FALSE(s.tokens);
}

TEST_CASE("a repeated field keeps its last valid value", "[headers][repeat]") {
    std::multimap<std::string, std::string> h = {
        {"x-ratelimit-remaining-requests", "5"}, {"x-ratelimit-remaining-requests", "4"}, {"x-ratelimit-remaining-requests", "bad"}};
    CHECK(parse_rate_limit_headers(h, noon).requests->remaining == 4);
}

TEST_CASE("a now at the ends of the clock's range is harmless", "[headers][hostile]") {
    const headers h = {{"anthropic-ratelimit-tokens-reset", "2024-07-01T12:00:30Z"},
                       {"X-RateLimit-Reset", "9223372036854775807"},
                       {"Retry-After", "Mon, 01 Jul 2024 12:00:37 GMT"},
                       {"Date", "Sun, 06 Nov 1994 08:49:37 GMT"}};
    for (const sys_time now : {sys_time::min(), sys_time::max(), sys_time{}}) {
        const quota_snapshot s = parse(h, now);
        if (s.tokens && s.tokens->reset_after) CHECK(*s.tokens->reset_after >= 0ns);
        if (s.requests && s.requests->reset_after) CHECK(*s.requests->reset_after >= 0ns);
        if (s.retry_after) CHECK(*s.retry_after >= 0ns);
    }
    // The Date (1994) wins over any now: 2024-07-01T12:00:30Z is then some 30 years later.
    CHECK(parse(h, sys_time::min()).tokens->reset_after > 29 * 8760h);
}

// ------------------------------------------------------------------ containers

TEST_CASE("std::map, std::multimap, vector, span and array all work", "[headers][containers]") {
    const headers vec = {{"x-ratelimit-remaining-requests", "3"}, {"retry-after", "2"}};
    const std::map<std::string, std::string> map(vec.begin(), vec.end());
    const std::multimap<std::string, std::string> multimap(vec.begin(), vec.end());
    const std::array<std::pair<std::string_view, std::string_view>, 2> views = {
        {{"x-ratelimit-remaining-requests", "3"}, {"retry-after", "2"}}};
    const std::span<const std::pair<std::string_view, std::string_view>> span(views);
    const std::vector<std::pair<const char*, const char*>> c_strings = {{"x-ratelimit-remaining-requests", "3"},
                                                                        {"retry-after", "2"}, {nullptr, nullptr}};
    const quota_snapshot expected = parse(vec);
    CHECK(expected.requests->remaining == 3);
    CHECK(expected.retry_after == ns(2s));
    CHECK(parse_rate_limit_headers(map, noon) == expected);
    CHECK(parse_rate_limit_headers(multimap, noon) == expected);
    CHECK(parse_rate_limit_headers(views, noon) == expected);
    CHECK(parse_rate_limit_headers(span, noon) == expected);
    CHECK(parse_rate_limit_headers(c_strings, noon) == expected);
}

TEST_CASE("the default now is the system clock", "[headers][containers]") {
    const std::string in_60s = std::to_string(epoch_seconds(std::chrono::system_clock::now()) + 60);
    const quota_snapshot s = parse_rate_limit_headers(headers{{"X-RateLimit-Reset", in_60s}});
    CHECK(s.requests->reset_after <= ns(60s));
    CHECK(s.requests->reset_after > ns(50s));
}

static_assert(ratelimit::header_range<const std::map<std::string, std::string>>);
static_assert(ratelimit::header_range<std::span<const std::pair<std::string_view, std::string_view>>>);
static_assert(!ratelimit::header_range<std::vector<int>>);
static_assert(!ratelimit::header_range<std::vector<std::pair<int, int>>>);

// ------------------------------------------------------------------ the pure parsers

TEST_CASE("the three HTTP-date forms name the same instant", "[header_parse][http-date]") {
    const hp::timestamp expected{784111777, 0};  // 1994-11-06T08:49:37Z, RFC 9110's example
    CHECK(hp::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT", 2024) == expected);
    CHECK(hp::parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT", 2024) == expected);
    CHECK(hp::parse_http_date("Sun Nov  6 08:49:37 1994", 2024) == expected);
    CHECK(hp::parse_http_date("sun, 06 nov 1994 08:49:37 gmt", 2024) == expected);
}

TEST_CASE("an RFC 850 two-digit year is at most 50 years ahead", "[header_parse][http-date]") {
    // In 2024, "94" is 1994 (2094 is more than 50 years ahead) and "30" is 2030.
    CHECK(hp::parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT", 2024)->seconds == 784111777);
    CHECK(hp::parse_http_date("Wednesday, 06-Nov-30 08:49:37 GMT", 2024)->seconds ==
          hp::days_from_civil(2030, 11, 6) * 86400 + 8 * 3600 + 49 * 60 + 37);
    CHECK(hp::parse_http_date("Wednesday, 06-Nov-74 08:49:37 GMT", 2024)->seconds ==
          hp::days_from_civil(2074, 11, 6) * 86400 + 8 * 3600 + 49 * 60 + 37);
    CHECK(hp::parse_http_date("Wednesday, 06-Nov-75 08:49:37 GMT", 2024)->seconds ==
          hp::days_from_civil(1975, 11, 6) * 86400 + 8 * 3600 + 49 * 60 + 37);
}

TEST_CASE("malformed HTTP-dates are rejected", "[header_parse][http-date]") {
    for (const char* bad : {"", "Sun, 06 Nov 1994 08:49:37", "Sun, 6 Nov 1994 08:49:37 GMT", "Sun, 06 Nov 94 08:49:37 GMT",
                            "Sun, 06 Foo 1994 08:49:37 GMT", "Xyz, 06 Nov 1994 08:49:37 GMT", "Sun, 31 Nov 1994 08:49:37 GMT",
                            "Sun, 06 Nov 1994 25:49:37 GMT", "Sun,  06 Nov 1994 08:49:37 GMT", "Sun Nov 6 08:49:37 1994",
                            "Sunday, 06-Nov-1994 08:49:37 GMT", "Sun, 06 Nov 1994 08:49:37 GMT ", "1994-11-06T08:49:37Z"}) {
        INFO(bad);
        CHECK_FALSE(hp::parse_http_date(bad, 2024));
    }
}

TEST_CASE("RFC 3339 timestamps count leap years and offsets", "[header_parse][rfc3339]") {
    CHECK(hp::parse_rfc3339("1970-01-01T00:00:00Z") == hp::timestamp{0, 0});
    CHECK(hp::parse_rfc3339("2000-03-01T00:00:00Z")->seconds == 951868800);  // after 2000's leap day
    CHECK(hp::parse_rfc3339("1969-12-31T23:59:59.5Z") == hp::timestamp{-1, 500'000'000});
    CHECK(hp::parse_rfc3339("1970-01-01T01:00:00+01:00") == hp::timestamp{0, 0});
    CHECK(hp::parse_rfc3339("1969-12-31T23:00:00-01:00") == hp::timestamp{0, 0});
    CHECK(hp::parse_rfc3339("0000-01-01T00:00:00Z")->seconds == -62167219200);
    CHECK(hp::parse_rfc3339("9999-12-31T23:59:59Z")->seconds == 253402300799);
}

TEST_CASE("ns_until is zero for the past and nothing beyond nanoseconds::max()", "[header_parse]") {
    const hp::timestamp base{100, 500};
    CHECK(hp::ns_until({100, 400}, base) == 0);
    CHECK(hp::ns_until({100, 500}, base) == 0);
    CHECK(hp::ns_until({101, 0}, base) == 999'999'500);
    CHECK(hp::ns_until({std::numeric_limits<std::int64_t>::min(), 0}, {std::numeric_limits<std::int64_t>::max(), 0}) == 0);
    CHECK_FALSE(hp::ns_until({std::numeric_limits<std::int64_t>::max(), 0}, {std::numeric_limits<std::int64_t>::min(), 0}));
    CHECK_FALSE(hp::ns_until({9'223'372'037, 0}, {0, 0}));
}

TEST_CASE("decimal seconds scale exactly in integers", "[header_parse][decimal]") {
    CHECK(hp::parse_decimal_ns("1.5", hp::seconds_unit) == 1'500'000'000);
    CHECK(hp::parse_decimal_ns(".000000001", hp::seconds_unit) == 1);
    CHECK(hp::parse_decimal_ns("5.", hp::seconds_unit) == 5'000'000'000);
    CHECK(hp::parse_decimal_ns("0.1", hp::milliseconds_unit) == 100'000);
    CHECK_FALSE(hp::parse_decimal_ns(".", hp::seconds_unit));
    CHECK_FALSE(hp::parse_decimal_ns("1.2.3", hp::seconds_unit));
    CHECK_FALSE(hp::parse_decimal_ns("-1", hp::seconds_unit));
    CHECK_FALSE(hp::parse_decimal_ns("1e9", hp::seconds_unit));
}

TEST_CASE("structured-field lists parse every bare item type", "[header_parse][sf]") {
    std::vector<hp::sf_kind> kinds;
    const bool valid = hp::for_each_sf_member(
        R"(1, -2.5, "s\"q", tok/en:x, :aGk=:, ?0, @1659578233, %"caf%c3%a9", ("a" b);p=1, *k;a;b=?1)",
        [&](const hp::sf_member& m) { kinds.push_back(m.value.kind); });
    REQUIRE(valid);
    using k = hp::sf_kind;
    CHECK(kinds == std::vector<k>{k::integer, k::decimal, k::string, k::token, k::byte_sequence, k::boolean, k::date,
                                  k::display_string, k::boolean /* inner list */, k::token});
}

TEST_CASE("structured-field parameters: the last of a repeated key wins, a bare key is true", "[header_parse][sf]") {
    std::optional<hp::sf_member> member;
    REQUIRE(hp::for_each_sf_member("\"p\";q=1;flag;q=2", [&](const hp::sf_member& m) { member = m; }));
    REQUIRE(member);
    CHECK(std::string(hp::sf_parameter(member->parameters, "q")->text) == "2");
    CHECK(hp::sf_parameter(member->parameters, "flag")->kind == hp::sf_kind::boolean);
    CHECK_FALSE(hp::sf_parameter(member->parameters, "w"));
}

TEST_CASE("a structured-field syntax error anywhere reports no member at all", "[header_parse][sf]") {
    for (const char* bad : {"a, b,", "a,,b", "\"x", "1.2345", "1234567890123456", "a;B=1", "a;=1", "?2", ":a b:", "(a b",
                            "@1.5", "%\"%C3\"", "\"\x01\"", "a b"}) {
        INFO(bad);
        int members = 0;
        CHECK_FALSE(hp::for_each_sf_member(bad, [&](const hp::sf_member&) { ++members; }));
        CHECK(members == 0);
    }
}

// ------------------------------------------------------------------ the fuzz corpus

TEST_CASE("every seed of the header fuzz corpus parses to non-negative values", "[headers][corpus]") {
    const std::filesystem::path dir = std::filesystem::path(__FILE__).parent_path() / "fuzz_corpus" / "headers";
    REQUIRE(std::filesystem::is_directory(dir));
    int files = 0;
    for (const auto& entry : std::filesystem::directory_iterator(dir)) {
        std::ifstream in(entry.path(), std::ios::binary);
        const std::string data{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
        const ratelimit_fuzz::header_input input = ratelimit_fuzz::split_header_input(data);
        const quota_snapshot s = parse_rate_limit_headers(input.headers, input.now);
        INFO(entry.path().filename().string());
        for (const auto* q : {&s.requests, &s.tokens, &s.input_tokens, &s.output_tokens}) {
            if (!*q) continue;
            CHECK((*q)->limit.value_or(0) >= 0);
            CHECK((*q)->remaining.value_or(0) >= 0);
            CHECK((*q)->reset_after.value_or(0ns) >= 0ns);
        }
        CHECK(s.retry_after.value_or(0ns) >= 0ns);
        ++files;
    }
    CHECK(files >= 20);
}
