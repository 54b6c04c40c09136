// llm::gate on manual_clock: requests AND tokens AND concurrency, settling, headers, 429s.

#include <chrono>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>
#include <atomic>
#include <thread>

#include <ratelimit/llm/gate.hpp>

#include "support/catch.hpp"

using namespace std::chrono_literals;
using ratelimit::manual_clock;
using ratelimit::llm::gate;
using ratelimit::llm::gate_config;
using ratelimit::llm::request_cost;
using ratelimit::llm::usage;
using headers = std::vector<std::pair<std::string, std::string>>;

namespace {

// 600 requests and 60,000 tokens per minute, exact (no headroom), 1 s sub-windows:
// buckets of 10 requests and 1,000 tokens, refilled at 10 requests and 1,000 tokens per second.
gate_config exact(std::int64_t rpm = 600, std::int64_t tpm = 60'000, std::int64_t concurrent = 0) {
    gate_config c;
    c.requests_per_minute = rpm;
    c.tokens_per_minute = tpm;
    c.max_concurrent = concurrent;
    c.headroom = 1.0;
    return c;
}

constexpr request_cost small{10, 0};  // 10 tokens

}  // namespace

TEST_CASE("each request takes one request permit and its tokens", "[gate]") {
    manual_clock clock;
    gate<manual_clock> g(exact(), clock);
    std::vector<gate<manual_clock>::ticket> held;
    for (int i = 0; i < 10; ++i) {
        auto t = g.try_acquire(small);
        REQUIRE(t);
        held.push_back(std::move(*t));
    }
    CHECK_FALSE(g.try_acquire(small));  // the 11th request in one sub-window
    clock.advance(100ms);               // one request permit back (10/s)
    CHECK(g.try_acquire(small));
}

TEST_CASE("a refused request takes nothing from any bucket", "[gate]") {
    manual_clock clock;
    gate<manual_clock> g(exact(), clock);
    auto first = g.try_acquire({900, 0});  // 900 of 1,000 tokens
    REQUIRE(first);
    CHECK_FALSE(g.try_acquire({200, 0}));  // 200 > 100 left: refused ...
    for (int i = 0; i < 9; ++i) {          // ... and it took no request permit: 9 remain
        auto t = g.try_acquire({10, 0});
        REQUIRE(t);
        t->complete(200);
    }
    CHECK_FALSE(g.try_acquire({0, 0}));  // now the requests ran out
}

TEST_CASE("a request larger than a sub-window passes when the bucket is full and leaves debt", "[gate]") {
    manual_clock clock;
    gate<manual_clock> g(exact(), clock);
    auto big = g.try_acquire({3'000, 0});  // 3 sub-windows of tokens, under the 60,000 per minute
    REQUIRE(big);
    CHECK(big->ready_at() == clock.now());
    CHECK_FALSE(g.try_acquire(small));  // 2,000 tokens of debt: 2 s until 1 token fits ...
    const auto start = clock.now();
    auto next = g.acquire({1'000, 0});  // ... and 3 s until a full sub-window does
    CHECK(clock.now() - start == 3s);
}

TEST_CASE("a request above the per-minute limit never passes", "[gate]") {
    manual_clock clock;
    gate<manual_clock> g(exact(), clock);
    CHECK_FALSE(g.try_acquire({60'001, 0}));
    CHECK_FALSE(g.try_acquire_until({50'000, 10'001}, clock.now() + 1h));
    CHECK_THROWS_AS(g.acquire({60'000, 1}), ratelimit::capacity_exceeded);
    CHECK_THROWS_AS(g.reserve({60'001, 0}), ratelimit::capacity_exceeded);
    CHECK(g.try_acquire({1'000, 0}));  // nothing was taken
}

TEST_CASE("try_acquire_until fails at once when the quota comes back after the deadline", "[gate]") {
    manual_clock clock;
    gate<manual_clock> g(exact(), clock);
    auto all = g.try_acquire({1'000, 0});
    REQUIRE(all);
    const auto start = clock.now();
    CHECK_FALSE(g.try_acquire_until({500, 0}, start + 400ms));  // 500 tokens need 500 ms
    CHECK(clock.now() == start);
    CHECK(g.try_acquire_until({500, 0}, start + 500ms));
    CHECK(clock.now() - start == 500ms);
}

TEST_CASE("unused tokens are given back when the usage is known", "[gate]") {
    manual_clock clock;
    gate<manual_clock> g(exact(), clock);
    auto t = g.acquire({200, 800});  // reserves 1,000 tokens: the bucket is empty
    CHECK_FALSE(g.try_acquire({700, 0}));
    t.complete(200, usage{200, 100});  // used 300: 700 come back
    CHECK(g.try_acquire({700, 0}));
    const auto s = g.snapshot();
    CHECK(s.tokens_reserved == 1'700);
    CHECK(s.tokens_used == 300);
    CHECK(s.tokens_refunded == 700);
}

TEST_CASE("usage above the estimate is charged late", "[gate]") {
    manual_clock clock;
    gate<manual_clock> g(exact(), clock);
    auto t = g.acquire({100, 100});           // 200 reserved, 800 left
    t.complete(200, usage{100, 600});          // 700 used: 500 more charged, 300 left
    CHECK(g.try_acquire({300, 0}));
    CHECK_FALSE(g.try_acquire({1, 0}));
    CHECK(g.snapshot().tokens_overrun == 500);
}

TEST_CASE("the gate never believes more remains than the server says", "[gate]") {
    manual_clock clock;
    gate<manual_clock> g(exact(), clock);
    auto t = g.acquire(small);  // locally 9 requests remain
    t.complete(200, headers{{"x-ratelimit-remaining-requests", "2"}, {"x-ratelimit-limit-requests", "600"}});
    CHECK(g.try_acquire(small));
    CHECK(g.try_acquire(small));
    CHECK_FALSE(g.try_acquire(small));
}

TEST_CASE("unknown limits are learned from the response headers", "[gate]") {
    manual_clock clock;
    gate_config c;
    c.headroom = 1.0;
    gate<manual_clock> g(c, clock);
    CHECK(g.snapshot().requests_per_minute == 0);
    auto t = g.acquire(small);
    t.complete(200, headers{{"x-ratelimit-limit-requests", "60"}, {"x-ratelimit-limit-tokens", "6000"},
                            {"x-ratelimit-remaining-requests", "59"}, {"x-ratelimit-remaining-tokens", "5990"}});
    const auto s = g.snapshot();
    CHECK(s.requests_per_minute == 60);
    CHECK(s.tokens_per_minute == 6'000);
    // 60 per minute over 1 s sub-windows: one request per second.
    CHECK(g.try_acquire(small));
    CHECK_FALSE(g.try_acquire(small));
    clock.advance(1s);
    CHECK(g.try_acquire(small));
}

TEST_CASE("a configured limit is not raised by the headers", "[gate]") {
    manual_clock clock;
    gate<manual_clock> g(exact(600), clock);
    auto t = g.acquire(small);
    t.complete(200, headers{{"x-ratelimit-limit-requests", "6000"}});
    CHECK(g.snapshot().requests_per_minute == 600);
}

TEST_CASE("a 429 pauses every admission for retry-after and empties the exceeded bucket", "[gate]") {
    manual_clock clock;
    gate<manual_clock> g(exact(), clock);
    auto t = g.acquire(small);
    t.complete(429, headers{{"retry-after", "2"}, {"x-ratelimit-remaining-tokens", "0"}});
    CHECK(g.snapshot().throttled == 1);
    CHECK_FALSE(g.try_acquire(small));
    clock.advance(2s - 1ns);
    CHECK_FALSE(g.try_acquire(small));
    clock.advance(1ns);
    CHECK(g.try_acquire(small));  // tokens refilled for 2 s: 1,000 again
}

TEST_CASE("a 429 without retry-after pauses for the default", "[gate]") {
    manual_clock clock;
    auto c = exact();
    c.default_retry_after = 3s;
    gate<manual_clock> g(c, clock);
    auto t = g.acquire(small);
    t.complete(429);
    CHECK(g.paused_until() == clock.now() + 3s);
}

TEST_CASE("reservations are first come, first served: a large one is not starved", "[gate]") {
    manual_clock clock;
    gate<manual_clock> g(exact(), clock);
    auto drain = g.acquire({1'000, 0});
    auto large = g.reserve({900, 0});
    auto small_one = g.reserve({10, 0});
    CHECK(large.ready_at() == clock.now() + 900ms);
    CHECK(small_one.ready_at() == clock.now() + 910ms);  // behind the large one, not before it
}

TEST_CASE("at most max_concurrent tickets are held at once", "[gate]") {
    manual_clock clock;
    gate<manual_clock> g(exact(600, 60'000, 2), clock);
    auto a = g.try_acquire(small);
    auto b = g.try_acquire(small);
    REQUIRE(a);
    REQUIRE(b);
    CHECK_FALSE(g.try_acquire(small));
    a->complete(200);
    CHECK(g.try_acquire(small));
}

TEST_CASE("a ticket dropped without complete frees its slot and counts as sent", "[gate]") {
    manual_clock clock;
    gate<manual_clock> g(exact(600, 60'000, 1), clock);
    {
        auto t = g.acquire({500, 0});
    }
    const auto s = g.snapshot();
    CHECK(s.abandoned == 1);
    CHECK(s.in_flight == 0);
    CHECK_FALSE(g.try_acquire({600, 0}));  // its 500 tokens stayed charged
    CHECK(g.try_acquire({500, 0}));        // and its slot is free
}

TEST_CASE("headroom scales every limit", "[gate]") {
    manual_clock clock;
    auto c = exact(600, 60'000);
    c.headroom = 0.5;  // 5 requests per sub-window
    gate<manual_clock> g(c, clock);
    int granted = 0;
    while (granted < 20 && g.try_acquire(small)) ++granted;
    CHECK(granted == 5);
}

TEST_CASE("bad configuration and costs name the field", "[gate]") {
    auto message_of = [](auto make) -> std::string {
        try {
            make();
        } catch (const std::invalid_argument& e) {
            return e.what();
        }
        return "";
    };
    CHECK_THAT(message_of([] { gate_config c; c.requests_per_minute = -1; gate<manual_clock> g(c); }),
               Catch::Contains("requests_per_minute"));
    CHECK_THAT(message_of([] { gate_config c; c.headroom = 1.5; gate<manual_clock> g(c); }), Catch::Contains("headroom"));
    CHECK_THAT(message_of([] { gate_config c; c.burst_window = 0s; gate<manual_clock> g(c); }),
               Catch::Contains("burst_window"));
    CHECK_THAT(message_of([] { gate<manual_clock> g(exact()); (void)g.try_acquire({-1, 0}); }),
               Catch::Contains("input_tokens"));
}

TEST_CASE("max_wait turns a long wait into gate_timeout", "[gate]") {
    manual_clock clock;
    auto c = exact();
    c.max_wait = 500ms;
    gate<manual_clock> g(c, clock);
    auto all = g.acquire({1'000, 0});
    CHECK_THROWS_AS(g.acquire({600, 0}), ratelimit::llm::gate_timeout);
    CHECK_NOTHROW(g.acquire({400, 0}));
}

TEST_CASE("estimate_tokens over-estimates English and counts other scripts per character", "[gate]") {
    using ratelimit::llm::estimate_tokens;
    CHECK(estimate_tokens("") == 1);
    const std::string english = "The quick brown fox jumps over the lazy dog.";  // 44 bytes, about 10 tokens
    CHECK(estimate_tokens(english) == (44 + 2) / 3 + 1);
    CHECK(estimate_tokens(english) >= 44 / 4);
    CHECK(estimate_tokens("\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e") == 3 + 1);  // three CJK characters
}

TEST_CASE("tokens given back by a completed request serve the one waiting in line", "[gate][thread]") {
    // Real clock: 6,000 tokens per minute = 100 per second, a 1 s bucket of 100.
    gate_config c = exact(6'000, 6'000);
    gate<> g(c);
    auto first = g.acquire({0, 100});  // takes the whole bucket
    const auto start = std::chrono::steady_clock::now();
    std::chrono::steady_clock::duration waited{};
    std::thread second([&] {
        auto t = g.acquire({50, 0});  // alone it would wait 500 ms for the refill
        waited = std::chrono::steady_clock::now() - start;
        t.complete(200, usage{50, 0});
    });
    std::this_thread::sleep_for(50ms);
    first.complete(200, usage{0, 0});  // 100 tokens come back at once
    second.join();
    CHECK(waited < 400ms);
    CHECK(g.snapshot().tokens_refunded == 100);
}

TEST_CASE("many threads through one gate: every ticket is accounted for", "[gate][thread]") {
    gate_config c = exact(600'000, 60'000'000, 4);
    c.default_retry_after = 1ms;  // each 429 pauses the gate this long
    gate<> g(c);
    std::vector<std::thread> threads;
    std::atomic<int> sent{0};
    for (int i = 0; i < 8; ++i) {
        threads.emplace_back([&g, &sent, i] {
            for (int k = 0; k < 200; ++k) {
                auto t = g.acquire({10, 10});
                sent.fetch_add(1);
                if ((k + i) % 7 == 0) continue;  // dropped without complete
                t.complete((k % 11 == 0) ? 429 : 200, usage{10, 5});
            }
        });
    }
    for (auto& t : threads) t.join();
    const auto s = g.snapshot();
    CHECK(s.admitted == 1'600);
    CHECK(s.in_flight == 0);
    CHECK(s.completed + s.throttled + s.failed + s.abandoned == 1'600);
}
