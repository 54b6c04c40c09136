// mock_upstream: its limit arithmetic on explicit times, then the real server over
// loopback HTTP (every server on a free port), then the program itself.
#include "support/catch.hpp"
#include "support/process.hpp"

#include "mock_upstream.hpp"
#include "raw_http.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <future>
#include <regex>
#include <string>
#include <vector>

namespace {

using namespace std::chrono_literals;
using mock_upstream::json;
using mock_upstream::limit_kind;

const auto t0 = std::chrono::steady_clock::time_point{} + 1h;

// A client writing to a connection the server closed must get EPIPE, not die.
const bool sigpipe_ignored = [] { return std::signal(SIGPIPE, SIG_IGN) != SIG_ERR; }();

// A test server: no latency unless asked, on a free port, stopped at scope exit.
mock_upstream::config test_config() {
    mock_upstream::config c;
    c.port = 0;
    c.min_latency_ms = 0;
    c.max_latency_ms = 0;
    return c;
}

struct running_server {
    explicit running_server(mock_upstream::config c) : server(std::move(c)), port(server.start()) {}
    httplib::Client client() const {
        httplib::Client c("127.0.0.1", port);
        c.set_connection_timeout(2s);
        c.set_read_timeout(10s);
        return c;
    }
    mock_upstream::server server;
    int port;
};

std::string chat_body(const std::string& content, std::optional<std::int64_t> max_tokens = std::nullopt) {
    json body = {{"model", "gpt-test"}, {"messages", json::array({{{"role", "user"}, {"content", content}}})}};
    if (max_tokens) body["max_tokens"] = *max_tokens;
    return body.dump();
}

httplib::Result post_chat(httplib::Client& client, const std::string& body) {
    return client.Post("/v1/chat/completions", body, "application/json");
}

std::int64_t header_int(const httplib::Result& r, const char* name) {
    REQUIRE(r->has_header(name));
    return std::stoll(r->get_header_value(name));
}

// Go duration ("20ms", "1.5s", "1m0s") to milliseconds; enough for the mock's output.
std::int64_t go_ms(const std::string& text) {
    const std::regex form(R"(^(?:(\d+)h)?(?:(\d+)m(?!s))?(?:(\d+(?:\.\d+)?)s)?(?:(\d+)ms)?$)");
    std::smatch m;
    REQUIRE(std::regex_match(text, m, form));
    double ms = 0;
    if (m[1].matched) ms += std::stod(m[1]) * 3'600'000;
    if (m[2].matched) ms += std::stod(m[2]) * 60'000;
    if (m[3].matched) ms += std::stod(m[3]) * 1000;
    if (m[4].matched) ms += std::stod(m[4]);
    return static_cast<std::int64_t>(std::llround(ms));
}

}  // namespace

// ---------------------------------------------------------------------------
// Pure parts
// ---------------------------------------------------------------------------

TEST_CASE("prompt tokens are ceil(bytes / 4) + 4 per message", "[mock_upstream]") {
    const json messages = json::parse(R"([
        {"role": "system", "content": "abcde"},
        {"role": "user", "content": "hello world!"},
        {"role": "user", "content": [{"type": "text", "text": "abcdefgh"}, {"type": "image_url"}]},
        {"role": "assistant", "content": null}
    ])");
    // (ceil(5/4) + 4) + (ceil(12/4) + 4) + (ceil(8/4) + 4) + (0 + 4) = 6 + 7 + 6 + 4
    CHECK(mock_upstream::estimate_prompt_tokens(messages) == 23);
}

TEST_CASE("reset durations are written the way Go prints them", "[mock_upstream]") {
    using mock_upstream::go_duration;
    CHECK(go_duration(0) == "0s");
    CHECK(go_duration(20) == "20ms");
    CHECK(go_duration(999) == "999ms");
    CHECK(go_duration(1000) == "1s");
    CHECK(go_duration(1500) == "1.5s");
    CHECK(go_duration(8640) == "8.64s");
    CHECK(go_duration(86'400) == "1m26.4s");
    CHECK(go_duration(360'000) == "6m0s");
    CHECK(go_duration(3'600'000) == "1h0m0s");
    CHECK(mock_upstream::ceil_ms(0.0001) == 1);
    CHECK(mock_upstream::ceil_ms(0.5) == 500);
}

TEST_CASE("the request bucket holds rpm * burst / 60 and refills at rpm / 60 per second", "[mock_upstream]") {
    mock_upstream::quota q(120, 1'000'000, 2.0, t0);  // capacity 120 * 2 / 60 = 4, refill 2 per second
    for (int i = 0; i < 4; ++i) REQUIRE(q.admit(1, 1, t0).admitted);
    const auto refused = q.admit(1, 1, t0);
    CHECK_FALSE(refused.admitted);
    CHECK(refused.limited_by == limit_kind::requests);
    CHECK(refused.retry_after_seconds == Approx(0.5));  // 1 request at 2 per second
    CHECK_FALSE(q.admit(1, 1, t0 + 499ms).admitted);
    CHECK(q.admit(1, 1, t0 + 500ms).admitted);
}

TEST_CASE("a bucket smaller than one request holds one", "[mock_upstream]") {
    mock_upstream::quota q(30, 1'000'000, 1.0, t0);  // 30 * 1 / 60 = 0.5, raised to 1; refill 0.5 per second
    CHECK(q.admit(1, 1, t0).admitted);
    const auto refused = q.admit(1, 1, t0);
    CHECK_FALSE(refused.admitted);
    CHECK(refused.retry_after_seconds == Approx(2.0));
}

TEST_CASE("tokens are charged prompt + max_tokens and the unused part is given back", "[mock_upstream]") {
    mock_upstream::quota q(6000, 600, 1.0, t0);  // tokens: capacity 600 / 60 = 10, refill 10 per second
    const auto admitted = q.admit(3, 5, t0);
    REQUIRE(admitted.admitted);
    CHECK(admitted.cost == 8);
    CHECK(admitted.after.tokens.remaining == 10 - 8);
    const auto settled = q.settle(5 - 1, t0);  // 1 completion token used of 5
    CHECK(settled.tokens.remaining == 2 + 4);
    CHECK(q.settle(100, t0).tokens.remaining == 10);  // never above capacity
}

TEST_CASE("a refused request changes nothing and is told when it fits", "[mock_upstream]") {
    mock_upstream::quota q(6000, 600, 1.0, t0);  // requests: capacity 100; tokens: capacity 10, 10 per second
    REQUIRE(q.admit(3, 5, t0).admitted);         // tokens 2 left, requests 99
    const auto refused = q.admit(1, 2, t0);      // needs 3 tokens
    CHECK_FALSE(refused.admitted);
    CHECK(refused.limited_by == limit_kind::tokens);
    CHECK(refused.retry_after_seconds == Approx((3 - 2) / 10.0));
    CHECK(refused.after.requests.remaining == 99);
    CHECK(refused.after.tokens.remaining == 2);
    CHECK(q.admit(1, 2, t0 + 100ms).admitted);
}

TEST_CASE("a cost above the token capacity is refused as too large, with no retry time", "[mock_upstream]") {
    mock_upstream::quota q(6000, 600, 1.0, t0);  // token capacity 10
    const auto refused = q.admit(5, 6, t0);      // 11 > 10
    CHECK_FALSE(refused.admitted);
    CHECK(refused.too_large);
    CHECK(refused.limited_by == limit_kind::tokens);
    CHECK(refused.retry_after_seconds == 0);
    CHECK(refused.after.tokens.remaining == 10);
}

TEST_CASE("when both limits refuse, the one with the longer wait is named", "[mock_upstream]") {
    mock_upstream::quota q(60, 600, 1.0, t0);  // requests: capacity 1, 1 per second; tokens: 10, 10 per second
    REQUIRE(q.admit(3, 5, t0).admitted);        // requests 0, tokens 2
    const auto refused = q.admit(5, 5, t0);     // requests wait 1 s, tokens wait (10 - 2) / 10 = 0.8 s
    CHECK(refused.limited_by == limit_kind::requests);
    CHECK(refused.retry_after_seconds == Approx(1.0));
}

TEST_CASE("reset is the time until the bucket is full again", "[mock_upstream]") {
    mock_upstream::quota q(120, 600, 2.0, t0);  // requests: 4, 2 per second; tokens: 20, 10 per second
    const auto d = q.admit(3, 5, t0);
    REQUIRE(d.admitted);
    CHECK(d.after.requests.seconds_until_full == Approx(1 / 2.0));
    CHECK(d.after.tokens.seconds_until_full == Approx(8 / 10.0));
    CHECK(mock_upstream::go_duration(mock_upstream::ceil_ms(d.after.tokens.seconds_until_full)) == "800ms");
    CHECK(q.view(t0 + 800ms).tokens.seconds_until_full == Approx(0).margin(1e-9));
}

TEST_CASE("per-request draws depend only on seed, request number and purpose", "[mock_upstream]") {
    using mock_upstream::unit_draw;
    CHECK(unit_draw(7, 3, 1) == unit_draw(7, 3, 1));
    CHECK(unit_draw(7, 3, 1) != unit_draw(8, 3, 1));
    CHECK(unit_draw(7, 3, 1) != unit_draw(7, 4, 1));
    CHECK(unit_draw(7, 3, 1) != unit_draw(7, 3, 2));
    double low = 1, high = 0;
    for (std::uint64_t i = 0; i < 1000; ++i) {
        const double u = unit_draw(1, i, 1);
        REQUIRE(u >= 0);
        REQUIRE(u < 1);
        low = std::min(low, u);
        high = std::max(high, u);
    }
    CHECK(low < 0.01);
    CHECK(high > 0.99);
}

TEST_CASE("flags are parsed GNU style and bad ones are named", "[mock_upstream]") {
    using mock_upstream::parse_flags;
    const auto c = parse_flags({"--port", "0", "--rpm", "60", "--tpm=6000", "--burst-seconds", "2.5", "--latency-ms",
                                "5:10", "--header-style", "anthropic", "--host", "::1", "--seed", "42",
                                "--error-rate", "0.25", "--drop-rate", "0.5", "--threads", "8"});
    REQUIRE(c);
    CHECK(c->port == 0);
    CHECK(c->requests_per_minute == 60);
    CHECK(c->tokens_per_minute == 6000);
    CHECK(c->burst_seconds == 2.5);
    CHECK(c->min_latency_ms == 5);
    CHECK(c->max_latency_ms == 10);
    CHECK(c->headers == mock_upstream::header_style::anthropic);
    CHECK(c->host == "::1");
    CHECK(c->seed == 42);
    CHECK(c->error_rate == 0.25);
    CHECK(c->drop_rate == 0.5);
    CHECK(c->threads == 8);
    CHECK_FALSE(parse_flags({"--port", "1", "--help"}));

    const auto defaults = parse_flags({"--port", "8080"});
    REQUIRE(defaults);
    CHECK(defaults->requests_per_minute == 1200);
    CHECK(defaults->tokens_per_minute == 400000);
    CHECK(defaults->burst_seconds == 1);
    CHECK(defaults->host == "127.0.0.1");
    CHECK(defaults->headers == mock_upstream::header_style::openai);

    CHECK_THROWS_WITH(parse_flags({}), Catch::Contains("--port"));
    CHECK_THROWS_WITH(parse_flags({"--port", "0", "--rpm", "0"}), Catch::Contains("--rpm"));
    CHECK_THROWS_WITH(parse_flags({"--port", "0", "--tpm", "abc"}), Catch::Contains("--tpm") && Catch::Contains("abc"));
    CHECK_THROWS_WITH(parse_flags({"--port", "70000"}), Catch::Contains("--port"));
    CHECK_THROWS_WITH(parse_flags({"--port", "0", "--burst-seconds", "0"}), Catch::Contains("--burst-seconds"));
    CHECK_THROWS_WITH(parse_flags({"--port", "0", "--latency-ms", "80:20"}), Catch::Contains("--latency-ms"));
    CHECK_THROWS_WITH(parse_flags({"--port", "0", "--header-style", "xml"}), Catch::Contains("xml"));
    CHECK_THROWS_WITH(parse_flags({"--port", "0", "--error-rate", "1.5"}), Catch::Contains("--error-rate"));
    CHECK_THROWS_WITH(parse_flags({"--port", "0", "--bogus"}), Catch::Contains("--bogus"));
    CHECK_THROWS_WITH(parse_flags({"--port"}), Catch::Contains("missing value"));
}

// ---------------------------------------------------------------------------
// The server over loopback HTTP
// ---------------------------------------------------------------------------

TEST_CASE("a chat request gets a 200 chat.completion with consistent usage", "[mock_upstream][http]") {
    running_server s(test_config());
    auto client = s.client();
    const auto r = post_chat(client, chat_body("hello world!", 50));  // 12 bytes: 3 + 4 = 7 prompt tokens
    REQUIRE(r);
    REQUIRE(r->status == 200);
    CHECK(r->get_header_value("Content-Type") == "application/json");
    const json body = json::parse(r->body);
    CHECK(body["object"] == "chat.completion");
    CHECK(body["model"] == "gpt-test");
    CHECK(body["choices"][0]["message"]["role"] == "assistant");
    const auto usage = body["usage"];
    CHECK(usage["prompt_tokens"] == 7);
    const std::int64_t completion = usage["completion_tokens"];
    CHECK(completion >= 1);
    CHECK(completion <= 50);
    CHECK(usage["total_tokens"] == 7 + completion);
    // the text is `completion` words of "tok", so the estimate of the reply is its size again
    CHECK((body["choices"][0]["message"]["content"].get<std::string>().size() + 3) / 4 ==
          static_cast<std::size_t>(completion));
}

TEST_CASE("malformed JSON and a missing messages field get 400 with an OpenAI-shaped error", "[mock_upstream][http]") {
    running_server s(test_config());
    auto client = s.client();
    const auto malformed = post_chat(client, "{\"messages\": [");
    REQUIRE(malformed);
    CHECK(malformed->status == 400);
    const json error = json::parse(malformed->body)["error"];
    CHECK(error["type"] == "invalid_request_error");
    CHECK(error["message"].is_string());
    CHECK(error.contains("code"));

    const auto missing = post_chat(client, R"({"model": "gpt-test"})");
    REQUIRE(missing);
    CHECK(missing->status == 400);
    CHECK(json::parse(missing->body)["error"]["param"] == "messages");

    const auto bad_max = post_chat(client, R"({"messages": [{"role": "user", "content": "x"}], "max_tokens": 0})");
    REQUIRE(bad_max);
    CHECK(bad_max->status == 400);
    CHECK(s.server.totals().bad_requests_400 == 3);
    CHECK(s.server.totals().admitted == 0);
}

TEST_CASE("openai headers report the per-minute limits and a remaining count that decreases", "[mock_upstream][http]") {
    auto c = test_config();
    c.requests_per_minute = 60;  // burst 60 s: capacity 60 requests, refill 1 per second
    c.tokens_per_minute = 6000;  // capacity 6000 tokens
    c.burst_seconds = 60;
    running_server s(c);
    auto client = s.client();
    const auto first = post_chat(client, chat_body("hi", 10));
    const auto second = post_chat(client, chat_body("hi", 10));
    REQUIRE(first);
    REQUIRE(second);
    REQUIRE(first->status == 200);
    REQUIRE(second->status == 200);
    for (const auto* r : {&first, &second}) {
        CHECK(header_int(*r, "x-ratelimit-limit-requests") == 60);
        CHECK(header_int(*r, "x-ratelimit-limit-tokens") == 6000);
    }
    CHECK(header_int(first, "x-ratelimit-remaining-requests") == 59);
    CHECK(header_int(second, "x-ratelimit-remaining-requests") == 58);
    CHECK(header_int(second, "x-ratelimit-remaining-tokens") < header_int(first, "x-ratelimit-remaining-tokens"));
    // two requests short of full at 1 per second: about 2 s to reset
    const auto reset = go_ms(second->get_header_value("x-ratelimit-reset-requests"));
    CHECK(reset > 1000);
    CHECK(reset <= 2000);
    CHECK(go_ms(second->get_header_value("x-ratelimit-reset-tokens")) > 0);
}

TEST_CASE("at 60 rpm with a 1 s burst the second immediate request is 429 with retry-after", "[mock_upstream][http]") {
    auto c = test_config();
    c.requests_per_minute = 60;  // capacity 1 request, refill 1 per second
    running_server s(c);
    auto client = s.client();
    const auto ok = post_chat(client, chat_body("hi"));
    REQUIRE(ok);
    REQUIRE(ok->status == 200);
    const auto throttled = post_chat(client, chat_body("hi"));
    REQUIRE(throttled);
    REQUIRE(throttled->status == 429);
    CHECK(throttled->get_header_value("retry-after") == "1");
    const auto retry_ms = header_int(throttled, "retry-after-ms");
    CHECK(retry_ms > 0);
    CHECK(retry_ms <= 1000);
    CHECK(header_int(throttled, "x-ratelimit-remaining-requests") == 0);
    CHECK(header_int(throttled, "x-ratelimit-limit-requests") == 60);
    const json error = json::parse(throttled->body)["error"];
    CHECK(error["type"] == "requests");
    CHECK(error["code"] == "rate_limit_exceeded");
    CHECK_THAT(error["message"].get<std::string>(), Catch::Contains("requests per min"));

    std::this_thread::sleep_for(std::chrono::milliseconds(retry_ms));
    const auto after_wait = post_chat(client, chat_body("hi"));
    REQUIRE(after_wait);
    CHECK(after_wait->status == 200);
}

TEST_CASE("a request above the token bucket is 429 naming tokens, and never fits", "[mock_upstream][http]") {
    auto c = test_config();
    c.tokens_per_minute = 600;  // capacity 10 tokens
    running_server s(c);
    auto client = s.client();
    const auto r = post_chat(client, chat_body("hi", 20));  // 5 + 20 = 25 > 10
    REQUIRE(r);
    REQUIRE(r->status == 429);
    CHECK_FALSE(r->has_header("retry-after"));
    const json error = json::parse(r->body)["error"];
    CHECK(error["type"] == "tokens");
    CHECK_THAT(error["message"].get<std::string>(), Catch::Contains("tokens per min") && Catch::Contains("25"));
    CHECK(header_int(r, "x-ratelimit-remaining-tokens") == 10);
}

TEST_CASE("unused tokens are given back when the reply completes", "[mock_upstream][http]") {
    auto c = test_config();
    c.tokens_per_minute = 60;  // burst 60 s: capacity 60 tokens, refill 1 per second
    c.burst_seconds = 60;
    running_server s(c);
    auto client = s.client();
    const auto r = post_chat(client, chat_body("hi", 40));  // 5 prompt + 40 max = 45 charged at admission
    REQUIRE(r);
    REQUIRE(r->status == 200);
    const std::int64_t used = json::parse(r->body)["usage"]["completion_tokens"];
    REQUIRE(used < 40);  // true for seed 1; otherwise nothing would be given back
    // 60 - 45 + (40 - used), plus under one token of refill in the milliseconds this took
    CHECK(header_int(r, "x-ratelimit-remaining-tokens") == 60 - 5 - used);

    // What is left now is all that can be charged: a request for one token more is refused.
    const std::int64_t left = 60 - 5 - used;
    const auto too_much = post_chat(client, chat_body("hi", left - 5 + 1));
    REQUIRE(too_much);
    REQUIRE(too_much->status == 429);
    CHECK(json::parse(too_much->body)["error"]["type"] == "tokens");
    CHECK(too_much->has_header("retry-after"));
    CHECK(header_int(too_much, "retry-after-ms") <= 1000);  // one token at 1 per second
}

TEST_CASE("/stats counts requests by outcome, tokens, and per second", "[mock_upstream][http]") {
    auto c = test_config();
    c.requests_per_minute = 60;  // one request, then 429
    running_server s(c);
    auto client = s.client();
    const auto ok = post_chat(client, chat_body("hello world!", 30));
    REQUIRE(ok);
    REQUIRE(ok->status == 200);
    REQUIRE(post_chat(client, chat_body("hi"))->status == 429);
    REQUIRE(post_chat(client, "not json")->status == 400);
    const std::int64_t completion = json::parse(ok->body)["usage"]["completion_tokens"];

    const auto r = client.Get("/stats");
    REQUIRE(r);
    REQUIRE(r->status == 200);
    const json stats = json::parse(r->body);
    CHECK(stats["requests_total"] == 3);
    CHECK(stats["admitted"] == 1);
    CHECK(stats["throttled_429"] == 1);
    CHECK(stats["bad_requests_400"] == 1);
    CHECK(stats["errors_500"] == 0);
    CHECK(stats["dropped"] == 0);
    CHECK(stats["tokens_admitted"] == 7 + 30);
    CHECK(stats["tokens_used"] == 7 + completion);
    CHECK(stats["in_flight"] == 0);
    CHECK(stats["started_at"].get<std::string>().size() == 20);
    CHECK(stats["limits"]["requests_per_minute"] == 60);
    std::int64_t requests = 0, tokens = 0, throttled = 0;
    for (const json& second : stats["per_second"]) {
        requests += second["requests"].get<std::int64_t>();
        tokens += second["tokens"].get<std::int64_t>();
        throttled += second["throttled"].get<std::int64_t>();
    }
    CHECK(requests == 1);
    CHECK(tokens == 7 + completion);  // net of what was given back
    CHECK(throttled == 1);
    CHECK(client.Get("/health")->body == "ok");
    const auto unknown = client.Get("/v1/nothing");
    REQUIRE(unknown);
    CHECK(unknown->status == 404);
    CHECK(json::parse(unknown->body)["error"]["code"] == "unknown_url");
}

TEST_CASE("anthropic style sends anthropic-ratelimit-* with RFC 3339 resets", "[mock_upstream][http]") {
    auto c = test_config();
    c.requests_per_minute = 60;
    c.tokens_per_minute = 6000;
    c.headers = mock_upstream::header_style::anthropic;
    running_server s(c);
    auto client = s.client();
    const auto ok = post_chat(client, chat_body("hi", 10));
    REQUIRE(ok);
    REQUIRE(ok->status == 200);
    CHECK(header_int(ok, "anthropic-ratelimit-requests-limit") == 60);
    CHECK(header_int(ok, "anthropic-ratelimit-requests-remaining") == 0);
    CHECK(header_int(ok, "anthropic-ratelimit-tokens-limit") == 6000);
    const std::regex rfc3339(R"(^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$)");
    CHECK(std::regex_match(ok->get_header_value("anthropic-ratelimit-requests-reset"), rfc3339));
    CHECK(std::regex_match(ok->get_header_value("anthropic-ratelimit-tokens-reset"), rfc3339));
    CHECK_FALSE(ok->has_header("x-ratelimit-limit-requests"));

    const auto throttled = post_chat(client, chat_body("hi", 10));
    REQUIRE(throttled);
    REQUIRE(throttled->status == 429);
    CHECK(throttled->get_header_value("retry-after") == "1");
    CHECK_FALSE(throttled->has_header("retry-after-ms"));
}

TEST_CASE("header style none sends no rate-limit headers, only retry-after on 429", "[mock_upstream][http]") {
    auto c = test_config();
    c.requests_per_minute = 60;
    c.headers = mock_upstream::header_style::none;
    running_server s(c);
    auto client = s.client();
    const auto ok = post_chat(client, chat_body("hi"));
    const auto throttled = post_chat(client, chat_body("hi"));
    REQUIRE(ok);
    REQUIRE(throttled);
    REQUIRE(ok->status == 200);
    REQUIRE(throttled->status == 429);
    for (const auto* r : {&ok, &throttled})
        for (const auto& [name, value] : (*r)->headers) {
            CHECK(name.find("ratelimit") == std::string::npos);
            CHECK(name != "retry-after-ms");
        }
    CHECK(throttled->get_header_value("retry-after") == "1");
}

TEST_CASE("error and drop rates answer 500 or close the connection, the same way for the same seed",
          "[mock_upstream][http]") {
    auto outcomes = [](std::uint64_t seed) {
        auto c = test_config();
        c.seed = seed;
        c.error_rate = 0.3;
        c.drop_rate = 0.3;
        running_server s(c);
        std::string seen;
        for (int i = 0; i < 40; ++i) {
            auto client = s.client();  // a fresh connection: a drop closes the old one
            const auto r = post_chat(client, chat_body("hi"));
            if (!r) {
                seen += 'D';
            } else if (r->status == 500) {
                CHECK(json::parse(r->body)["error"]["type"] == "server_error");
                seen += 'E';
            } else {
                CHECK(r->status == 200);
                seen += 'K';
            }
        }
        const auto totals = s.server.totals();
        CHECK(totals.dropped == std::count(seen.begin(), seen.end(), 'D'));
        CHECK(totals.errors_500 == std::count(seen.begin(), seen.end(), 'E'));
        CHECK(totals.admitted == std::count(seen.begin(), seen.end(), 'K'));
        return seen;
    };
    const std::string first = outcomes(11);
    CHECK(first == outcomes(11));
    CHECK(first != outcomes(12));
    CHECK(first.find('D') != std::string::npos);
    CHECK(first.find('E') != std::string::npos);
    CHECK(first.find('K') != std::string::npos);
}

TEST_CASE("latency is slept outside any lock: concurrent requests overlap", "[mock_upstream][http]") {
    auto c = test_config();
    c.min_latency_ms = 300;
    c.max_latency_ms = 300;
    running_server s(c);
    const auto start = std::chrono::steady_clock::now();
    std::vector<std::future<int>> answers;
    for (int i = 0; i < 16; ++i)
        answers.push_back(std::async(std::launch::async, [&s] {
            auto client = s.client();
            const auto r = post_chat(client, chat_body("hi", 10));
            return r ? r->status : -1;
        }));
    for (auto& a : answers) CHECK(a.get() == 200);
    const auto took = std::chrono::steady_clock::now() - start;
    CHECK(took >= 300ms);
    CHECK(took < 16 * 300ms / 4);  // served one at a time this would take 4.8 s
}

TEST_CASE("stop ends the server promptly, even with an idle keep-alive connection", "[mock_upstream][http]") {
    auto c = test_config();
    c.min_latency_ms = 60'000;  // a request sleeping a minute is woken by stop
    c.max_latency_ms = 60'000;
    auto s = std::make_unique<running_server>(c);
    auto idle = s->client();
    idle.set_keep_alive(true);
    REQUIRE(idle.Get("/health"));
    auto sleeping = std::async(std::launch::async, [&s] {
        auto client = s->client();
        return post_chat(client, chat_body("hi")).error();
    });
    for (int i = 0; i < 5000 && s->server.totals().in_flight == 0; ++i) std::this_thread::sleep_for(1ms);
    REQUIRE(s->server.totals().in_flight == 1);
    const auto start = std::chrono::steady_clock::now();
    s->server.stop();
    CHECK(std::chrono::steady_clock::now() - start < 2s);
    sleeping.get();
    s.reset();
}

// ---------------------------------------------------------------------------
// The program
// ---------------------------------------------------------------------------

namespace {

using ratelimit_test::child;
using ratelimit_test::read_all;
using ratelimit_test::read_line;

child spawn(std::vector<std::string> args) { return ratelimit_test::spawn(MOCK_UPSTREAM_BINARY, std::move(args)); }

int wait_exit(pid_t pid) {
    const int status = ratelimit_test::exit_status(pid);
    REQUIRE(status >= 0);
    return status;
}

}  // namespace

TEST_CASE("the program prints its port, serves, and exits 0 on SIGTERM", "[mock_upstream][program]") {
    child c = spawn({"--port", "0", "--latency-ms", "0:0"});
    const std::string line = read_line(c.out);
    std::smatch m;
    REQUIRE(std::regex_match(line, m, std::regex(R"(^listening on 127\.0\.0\.1:(\d+)$)")));
    httplib::Client client("127.0.0.1", std::stoi(m[1]));
    client.set_connection_timeout(2s);
    const auto health = client.Get("/health");
    CHECK(health);
    if (health) CHECK(health->body == "ok");
    const auto chat = post_chat(client, chat_body("hi"));
    CHECK(chat);
    if (chat) CHECK(chat->status == 200);
    ::kill(c.pid, SIGTERM);
    CHECK(wait_exit(c.pid) == 0);
    CHECK(read_all(c.out).empty());  // exactly one line
    ::close(c.out);
    ::close(c.err);
}

TEST_CASE("the program rejects a bad flag with one line on stderr and status 2", "[mock_upstream][program]") {
    for (const auto& args : std::vector<std::vector<std::string>>{
             {"--port", "0", "--rpm", "-5"}, {"--port", "0", "--nope"}, {"--rpm", "60"}}) {
        child c = spawn(args);
        CHECK(wait_exit(c.pid) == 2);
        const std::string err = read_all(c.err);
        CHECK(std::count(err.begin(), err.end(), '\n') == 1);
        CHECK(err.rfind("mock_upstream: ", 0) == 0);
        CHECK(read_all(c.out).empty());
        ::close(c.out);
        ::close(c.err);
    }
    child help = spawn({"--help"});
    CHECK(wait_exit(help.pid) == 0);
    CHECK_THAT(read_all(help.out), Catch::Contains("--header-style"));
    ::close(help.out);
    ::close(help.err);
}

TEST_CASE("the program answers a body above 16 MiB before it is sent whole, chunked or not, with memory bounded",
          "[mock_upstream][program][issue14]") {
    child c = spawn({"--port", "0", "--latency-ms", "0:0"});
    const std::string line = read_line(c.out);
    std::smatch m;
    REQUIRE(std::regex_match(line, m, std::regex(R"(^listening on 127\.0\.0\.1:(\d+)$)")));
    const int port = std::stoi(m[1]);
    constexpr std::uint64_t total = 200ull << 20;  // 200 MiB of zeros
    const std::string head = "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n";
    for (const bool chunked : {true, false}) {
        INFO("chunked " << chunked);
        const std::string framing = chunked ? "Transfer-Encoding: chunked\r\n" : "Content-Length: " + std::to_string(total) + "\r\n";
        const raw_http::upload u = raw_http::send_large_body(port, head + framing + "\r\n", total, chunked, 20s);
        CHECK(u.answer.rfind("HTTP/1.1 413", 0) == 0);
        CHECK(u.body_bytes_sent < total / 2);
    }
    const long peak = raw_http::peak_rss_kib(c.pid);
    INFO("mock_upstream VmHWM " << peak << " KiB");
    CHECK(peak > 0);
    CHECK(peak < 96 * 1024);  // the 16 MiB limit and buffers, not the 200 MiB body
    ::kill(c.pid, SIGTERM);
    CHECK(wait_exit(c.pid) == 0);
    ::close(c.out);
    ::close(c.err);
}

TEST_CASE("disagreeing Content-Length headers are refused with 400 and the connection ends", "[mock_upstream][http][issue14]") {
    mock_upstream::config cfg;
    cfg.min_latency_ms = cfg.max_latency_ms = 0;
    mock_upstream::server server(cfg);
    const int port = server.start();
    raw_http::connection conn(port);
    const std::string body = chat_body("hi");
    REQUIRE(conn.send("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: " +
                      std::to_string(body.size()) + "\r\nContent-Length: 0\r\n\r\n" + body));
    bool closed = false;
    const std::string answer = conn.receive_until_closed(5s, closed);
    CHECK(answer.rfind("HTTP/1.1 400", 0) == 0);
    CHECK(raw_http::responses_in(answer) == 1);
    CHECK(closed);
    CHECK(server.totals().requests_total == 0);
}
