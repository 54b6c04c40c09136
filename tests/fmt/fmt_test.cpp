// fmt formatters: exact text for stats, rates and reported quotas.

#include <chrono>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <ratelimit/fmt.hpp>

#include "support/catch.hpp"

using namespace std::chrono_literals;
using ratelimit::manual_clock;
using ratelimit::quota_snapshot;
using ratelimit::quota_state;
using ratelimit::rate;
using ratelimit::llm::gate;
using ratelimit::llm::gate_config;
using ratelimit::llm::request_cost;
using ratelimit::llm::stats;
using ratelimit::llm::usage;

TEST_CASE("stats print every counter, the limits and the waits on one line") {
    stats s;
    s.admitted = 120;
    s.completed = 118;
    s.throttled = 0;
    s.failed = 1;
    s.abandoned = 1;
    s.in_flight = 0;
    s.tokens_reserved = 50'000;
    s.tokens_used = 30'000;
    s.tokens_refunded = 20'000;
    s.tokens_overrun = 0;
    s.requests_per_minute = 600;
    s.tokens_per_minute = 90'000;
    s.total_wait = 1250ms;
    s.paused_for = 0s;
    CHECK(fmt::format("{}", s) ==
          "admitted=120 completed=118 throttled=0 failed=1 abandoned=1 in_flight=0 "
          "tokens reserved=50000 used=30000 refunded=20000 overrun=0 "
          "limits rpm=600 tpm=90000 wait=1.25s paused=0s");
}

TEST_CASE("a limit of 0 in stats prints as unknown") {
    stats s;  // all zero: nothing configured, nothing learned
    CHECK(fmt::format("{}", s) ==
          "admitted=0 completed=0 throttled=0 failed=0 abandoned=0 in_flight=0 "
          "tokens reserved=0 used=0 refunded=0 overrun=0 limits rpm=unknown tpm=unknown wait=0s paused=0s");
}

TEST_CASE("a gate's snapshot prints what its tickets did") {
    manual_clock clock;
    gate_config config;
    config.requests_per_minute = 600;  // buckets of 10 requests and 1,000 tokens (1 s sub-window)
    config.tokens_per_minute = 60'000;
    config.headroom = 1.0;
    gate<manual_clock> g(config, clock);
    {
        auto first = g.acquire(request_cost{600, 400});   // 1000 tokens: the whole token bucket
        first.complete(200, usage{600, 100});             // used 700: 300 refunded
        auto second = g.reserve(request_cost{200, 200});  // 400 tokens, 300 available: ready in 0.1 s
        auto third = g.acquire(request_cost{0, 0});       // no tokens: goes at once
        third.complete(500);
    }  // second dropped without complete(): abandoned
    CHECK(fmt::format("{}", g.snapshot()) ==
          "admitted=3 completed=1 throttled=0 failed=1 abandoned=1 in_flight=0 "
          "tokens reserved=1400 used=700 refunded=300 overrun=0 limits rpm=600 tpm=60000 wait=0.1s paused=0s");
}

TEST_CASE("stats print the current 429 pause in exact seconds") {
    stats s;
    s.total_wait = 3s + 1ns;
    s.paused_for = 20s;
    const std::string text = fmt::format("{}", s);
    CHECK(text.ends_with("wait=3.000000001s paused=20s"));
}

TEST_CASE("a rate prints its permits per the largest whole unit of its period") {
    CHECK(fmt::format("{}", rate::per_second(10)) == "10/s");
    CHECK(fmt::format("{}", rate::per_minute(90'000)) == "90000/min");
    CHECK(fmt::format("{}", rate::per_hour(5'000)) == "5000/h");
    CHECK(fmt::format("{}", rate::per_second(0.5)) == "0.5/s");
    CHECK(fmt::format("{}", rate::per_minute(588.6)) == "588.6/min");  // 600 · 0.981, as given
    CHECK(fmt::format("{}", rate::every(250ms)) == "1/250ms");
    CHECK(fmt::format("{}", rate::every(2min)) == "1/2min");
    CHECK(fmt::format("{}", rate::every(90s)) == "1/90s");  // 1.5 min: seconds are the largest whole unit
    CHECK(fmt::format("{}", rate::every(1500ns)) == "1/1500ns");
}

TEST_CASE("a formatter honours fill, alignment and width on the whole text") {
    CHECK(fmt::format("[{:>12}]", rate::per_second(10)) == "[        10/s]");
    CHECK(fmt::format("[{:*<10}]", rate::per_minute(600)) == "[600/min***]");
    CHECK(fmt::format("[{:^9}]", quota_state{}) == "[ unknown ]");
}

TEST_CASE("a quota state shows only the fields the response reported") {
    CHECK(fmt::format("{}", quota_state{600, 599, 100ms}) == "limit=600 remaining=599 reset=0.1s");
    CHECK(fmt::format("{}", quota_state{std::nullopt, 0, std::nullopt}) == "remaining=0");
    CHECK(fmt::format("{}", quota_state{90'000, std::nullopt, 6s}) == "limit=90000 reset=6s");
    CHECK(fmt::format("{}", quota_state{}) == "unknown");
}

TEST_CASE("a quota snapshot names each reported dimension and the retry time") {
    quota_snapshot s;
    s.requests = quota_state{600, 0, 6s};
    s.tokens = quota_state{std::nullopt, 89'000, std::nullopt};
    s.retry_after = 20s;
    CHECK(fmt::format("{}", s) == "requests(limit=600 remaining=0 reset=6s) tokens(remaining=89000) retry_after=20s");

    quota_snapshot anthropic;
    anthropic.input_tokens = quota_state{40'000, 39'000, 1500ms};
    anthropic.output_tokens = quota_state{8'000, 7'500, 1500ms};
    CHECK(fmt::format("{}", anthropic) ==
          "input_tokens(limit=40000 remaining=39000 reset=1.5s) output_tokens(limit=8000 remaining=7500 reset=1.5s)");

    quota_snapshot retry_only;
    retry_only.retry_after = 0s;
    CHECK(fmt::format("{}", retry_only) == "retry_after=0s");
}

TEST_CASE("an empty quota snapshot prints none") {
    CHECK(fmt::format("{}", quota_snapshot{}) == "none");
}

TEST_CASE("a snapshot parsed from OpenAI headers prints what they said") {
    const std::vector<std::pair<std::string, std::string>> headers = {
        {"x-ratelimit-limit-requests", "600"},      {"x-ratelimit-remaining-requests", "599"},
        {"x-ratelimit-reset-requests", "100ms"},    {"x-ratelimit-limit-tokens", "90000"},
        {"x-ratelimit-remaining-tokens", "89000"},  {"x-ratelimit-reset-tokens", "1m26.4s"},
    };
    CHECK(fmt::format("{}", ratelimit::parse_rate_limit_headers(headers)) ==
          "requests(limit=600 remaining=599 reset=0.1s) tokens(limit=90000 remaining=89000 reset=86.4s)");
}

TEST_CASE("durations print as exact decimal seconds, negative ones with a sign") {
    quota_snapshot s;
    s.retry_after = std::chrono::nanoseconds{1};
    CHECK(fmt::format("{}", s) == "retry_after=0.000000001s");
    s.retry_after = 123456789012ns;
    CHECK(fmt::format("{}", s) == "retry_after=123.456789012s");
    s.retry_after = -1500ms;  // never parsed from headers, but printed faithfully
    CHECK(fmt::format("{}", s) == "retry_after=-1.5s");
    s.retry_after = std::chrono::nanoseconds::min();
    CHECK(fmt::format("{}", s) == "retry_after=-9223372036.854775808s");
}
