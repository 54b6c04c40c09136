// gateway: its parts on plain values, then whole request paths over loopback
// HTTP (the gateway and the mock_upstream server in-process, each on a free
// port), then the program itself for its flags, exit statuses and banner.
#include "support/catch.hpp"

#include "gateway.hpp"
#include "mock_upstream.hpp"
#include "raw_http.hpp"
#include "support/process.hpp"

#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace {

using namespace std::chrono_literals;
using json = nlohmann::json;
namespace fs = std::filesystem;

const bool sigpipe_ignored = [] { return std::signal(SIGPIPE, SIG_IGN) != SIG_ERR; }();

const std::string upstream_secret = "sk-upstream-SECRET-7f3a";

gateway::api_key key(std::string k, std::string user, std::int64_t rpm, std::int64_t tpm = 1'000'000) {
    return {std::move(k), std::move(user), rpm, tpm};
}

/// A mock upstream (latency 0) and a gateway in front of it, both on free ports.
struct rig {
    explicit rig(std::vector<gateway::api_key> keys, std::int64_t mock_rpm = 6000,
                 void (*tune)(gateway::config&) = nullptr) {
        mock_upstream::config m;
        m.requests_per_minute = mock_rpm;
        m.min_latency_ms = 0;
        m.max_latency_ms = 0;
        mock = std::make_unique<mock_upstream::server>(m);
        const int mock_port = mock->start();
        gateway::config g;
        g.upstream = "http://127.0.0.1:" + std::to_string(mock_port);
        g.upstream_key = upstream_secret;
        g.keys = std::move(keys);
        if (tune != nullptr) tune(g);
        gw = std::make_unique<gateway::server>(g);
        port = gw->start();
    }
    ~rig() {
        gw->stop();
        mock->stop();
    }
    rig(const rig&) = delete;
    rig& operator=(const rig&) = delete;

    [[nodiscard]] httplib::Client client() const {
        httplib::Client c("127.0.0.1", port);
        c.set_read_timeout(30s);
        return c;
    }
    std::unique_ptr<mock_upstream::server> mock;
    std::unique_ptr<gateway::server> gw;
    int port = 0;
};

httplib::Headers bearer(const std::string& k) { return {{"Authorization", "Bearer " + k}}; }

std::string chat_body(int max_tokens = 16, const std::string& content = "hello there") {
    return json{{"model", "gpt-test"},
                {"messages", json::array({{{"role", "user"}, {"content", content}}})},
                {"max_tokens", max_tokens}}
        .dump();
}

httplib::Result chat(httplib::Client& c, const std::string& k, const std::string& body = chat_body()) {
    return c.Post("/v1/chat/completions", bearer(k), body, "application/json");
}

/// The `error` object of an OpenAI-shaped error body (fails the test otherwise).
json error_of(const httplib::Result& r) {
    REQUIRE(r);
    const json body = json::parse(r->body, nullptr, false);
    REQUIRE(body.is_object());
    REQUIRE(body.contains("error"));
    const json& e = body["error"];
    CHECK(e["message"].is_string());
    CHECK(e["type"].is_string());
    CHECK(e.contains("code"));
    return e;
}

/// Every header name and value and the body, as one text to search.
std::string everything(const httplib::Result& r) {
    std::string all = r->body;
    for (const auto& [name, value] : r->headers) all += "\n" + name + ": " + value;
    return all;
}

}  // namespace

// ---------------------------------------------------------------------------
// Parts
// ---------------------------------------------------------------------------

TEST_CASE("a keys document is parsed; a bad one is refused naming the problem", "[gateway]") {
    const auto keys = gateway::parse_keys(
        R"({"keys": [{"key": "sk-a", "user": "alice", "requests_per_minute": 60, "tokens_per_minute": 20000},
                     {"key": "sk-a2", "user": "alice", "requests_per_minute": 60, "tokens_per_minute": 20000}]})");
    REQUIRE(keys.size() == 2);
    CHECK(keys[1].user == "alice");
    CHECK(keys[0].tokens_per_minute == 20000);

    auto message = [](const char* text) {
        try {
            (void)gateway::parse_keys(text);
        } catch (const std::invalid_argument& e) {
            return std::string(e.what());
        }
        return std::string("accepted");
    };
    CHECK(message("{") == "keys file is not valid JSON");
    CHECK(message(R"({"users": []})").find("\"keys\" array") != std::string::npos);
    CHECK(message(R"({"keys": [{"key": "k", "user": "u", "requests_per_minute": 0, "tokens_per_minute": 1}]})")
              .find("keys[0].requests_per_minute") != std::string::npos);
    CHECK(message(R"({"keys": [{"user": "u", "requests_per_minute": 1, "tokens_per_minute": 1}]})")
              .find("keys[0].key") != std::string::npos);
    CHECK(message(R"({"keys": [{"key": "k", "user": "u", "requests_per_minute": 1, "tokens_per_minute": 1},
                               {"key": "k", "user": "v", "requests_per_minute": 1, "tokens_per_minute": 1}]})")
              .find("listed twice") != std::string::npos);
    CHECK(message(R"({"keys": [{"key": "k", "user": "u", "requests_per_minute": 1, "tokens_per_minute": 1},
                               {"key": "k2", "user": "u", "requests_per_minute": 2, "tokens_per_minute": 1}]})")
              .find("other limits") != std::string::npos);
}

TEST_CASE("a chat request costs its estimated prompt plus max_tokens, 256 when absent", "[gateway]") {
    const std::string text(30, 'a');  // 30 ASCII bytes: ceil(30 / 3) + 1 = 11 tokens
    const std::int64_t prompt = ratelimit::llm::estimate_tokens(text);
    REQUIRE(prompt == 11);
    const auto with = gateway::estimate_chat(chat_body(100, text), 256);
    REQUIRE_FALSE(with.error);
    CHECK(with.cost.input_tokens == 11);
    CHECK(with.cost.max_output_tokens == 100);

    const auto without = gateway::estimate_chat(
        json{{"messages", json::array({{{"role", "user"}, {"content", text}}, {{"role", "user"}, {"content", text}}})}}.dump(), 256);
    REQUIRE_FALSE(without.error);
    CHECK(without.cost.total() == 11 + 11 + 256);

    CHECK(gateway::estimate_chat("{not json", 256).error);
    CHECK(gateway::estimate_chat(R"({"model": "m"})", 256).error);
    CHECK(gateway::estimate_chat(R"({"messages": []})", 256).error);
    CHECK(gateway::estimate_chat(R"({"messages": [{"role": "user", "content": "x"}], "max_tokens": -1})", 256).error);
}

TEST_CASE("the upstream URL is split into origin and path prefix; https is refused", "[gateway]") {
    const auto u = gateway::parse_upstream("http://127.0.0.1:8080/proxy/");
    CHECK(u.origin == "http://127.0.0.1:8080");
    CHECK(u.base_path == "/proxy");
    CHECK(gateway::parse_upstream("http://h:1").base_path.empty());
    CHECK_THROWS_AS(gateway::parse_upstream("https://api.openai.com"), std::invalid_argument);
    CHECK_THROWS_AS(gateway::parse_upstream("http://"), std::invalid_argument);
}

// ---------------------------------------------------------------------------
// Over loopback
// ---------------------------------------------------------------------------

TEST_CASE("a request without a known bearer key is answered 401 and never reaches the upstream", "[gateway][http]") {
    rig r({key("sk-alice-1", "alice", 60)});
    auto c = r.client();

    const auto none = c.Post("/v1/chat/completions", chat_body(), "application/json");
    REQUIRE(none);
    CHECK(none->status == 401);
    CHECK(error_of(none)["code"] == "missing_api_key");

    const auto wrong = chat(c, "sk-mallory");
    REQUIRE(wrong);
    CHECK(wrong->status == 401);
    CHECK(error_of(wrong)["code"] == "invalid_api_key");

    const auto basic = c.Post("/v1/chat/completions", {{"Authorization", "Basic sk-alice-1"}}, chat_body(), "application/json");
    REQUIRE(basic);
    CHECK(basic->status == 401);

    const auto limits = c.Get("/v1/limits", bearer("sk-nobody"));
    REQUIRE(limits);
    CHECK(limits->status == 401);

    CHECK(r.gw->counters().rejected_count(gateway::reason::auth) == 4);
    CHECK(r.mock->totals().requests_total == 0);

    const auto ok = chat(c, "sk-alice-1");  // and the right key passes
    REQUIRE(ok);
    CHECK(ok->status == 200);
    CHECK(r.mock->totals().requests_total == 1);
}

TEST_CASE("malformed JSON and a missing messages field are answered 400, and the service keeps serving", "[gateway][http]") {
    rig r({key("sk-alice-1", "alice", 60)});
    auto c = r.client();

    const auto broken = chat(c, "sk-alice-1", "{\"messages\": [");
    REQUIRE(broken);
    CHECK(broken->status == 400);
    CHECK(error_of(broken)["code"] == "invalid_json");

    const auto missing = chat(c, "sk-alice-1", R"({"model": "gpt-test"})");
    REQUIRE(missing);
    CHECK(missing->status == 400);
    CHECK(error_of(missing)["code"] == "missing_required_parameter");

    const auto not_object = chat(c, "sk-alice-1", "[1, 2]");
    REQUIRE(not_object);
    CHECK(not_object->status == 400);

    const auto binary = chat(c, "sk-alice-1", std::string("\x00\xff\xfe{", 4));
    REQUIRE(binary);
    CHECK(binary->status == 400);

    CHECK(r.gw->counters().rejected_count(gateway::reason::bad_request) == 4);
    CHECK(r.mock->totals().requests_total == 0);
    // A malformed request is not charged to the user's limit.
    const auto limits = c.Get("/v1/limits", bearer("sk-alice-1"));
    REQUIRE(limits);
    CHECK(json::parse(limits->body)["remaining"]["requests"] == 60);

    const auto ok = chat(c, "sk-alice-1");
    REQUIRE(ok);
    CHECK(ok->status == 200);
}

TEST_CASE("a body above max_body_bytes is answered 413 after authentication, and the service keeps serving", "[gateway][http]") {
    rig r({key("sk-alice-1", "alice", 60)}, 6000, [](gateway::config& g) { g.max_body_bytes = 1000; });
    auto c = r.client();
    const std::string big = chat_body(16, std::string(2000, 'x'));
    REQUIRE(big.size() > 1000);

    const auto too_large = chat(c, "sk-alice-1", big);
    REQUIRE(too_large);
    CHECK(too_large->status == 413);
    CHECK(error_of(too_large)["code"] == "request_too_large");

    const auto anonymous = c.Post("/v1/chat/completions", big, "application/json");
    REQUIRE(anonymous);
    CHECK(anonymous->status == 401);

    CHECK(r.gw->counters().rejected_count(gateway::reason::body_too_large) == 1);
    CHECK(r.mock->totals().requests_total == 0);

    auto fresh = r.client();
    const auto ok = chat(fresh, "sk-alice-1", chat_body(16, std::string(500, 'x')));
    REQUIRE(ok);
    CHECK(ok->status == 200);
}

TEST_CASE("a user over their own limit gets 429 with Retry-After, RateLimit, RateLimit-Policy and a JSON error", "[gateway][http]") {
    // alice: 2 requests per minute, so her bucket holds 2 and refills one every 30 s.
    rig r({key("sk-alice-1", "alice", 2, 20000), key("sk-bob-1", "bob", 60, 20000)});
    auto c = r.client();
    CHECK(chat(c, "sk-alice-1")->status == 200);
    CHECK(chat(c, "sk-alice-1")->status == 200);

    const auto limited = chat(c, "sk-alice-1");
    REQUIRE(limited);
    CHECK(limited->status == 429);
    const json e = error_of(limited);
    CHECK(e["type"] == "rate_limit_exceeded");
    CHECK(e["code"] == "rate_limit_exceeded");

    // The next request comes 30 s after the first, less the few ms since: ceil gives 30.
    REQUIRE(limited->has_header("Retry-After"));
    const int retry = std::stoi(limited->get_header_value("Retry-After"));
    CHECK(retry == 30);
    const std::string ratelimit = limited->get_header_value("RateLimit");
    CHECK(ratelimit.find("\"user\";r=0;t=30") != std::string::npos);
    const std::string policy = limited->get_header_value("RateLimit-Policy");
    CHECK(policy.find("\"user\";q=2;w=60") != std::string::npos);
    CHECK(policy.find("q=20000;w=60;qu=\"tokens\"") != std::string::npos);

    CHECK(r.gw->counters().rejected_count(gateway::reason::user_limit) == 1);
    CHECK(r.mock->totals().requests_total == 2);

    // bob's limit is his own.
    CHECK(chat(c, "sk-bob-1")->status == 200);

    // A request above the user's whole token limit can never pass: 400, not 429.
    const auto huge = chat(c, "sk-bob-1", chat_body(30000));
    REQUIRE(huge);
    CHECK(huge->status == 400);
    CHECK(error_of(huge)["code"] == "request_too_large");
}

TEST_CASE("/v1/limits shows the caller's own limits and usage, never another user's", "[gateway][http]") {
    rig r({key("sk-alice-1", "alice", 2, 20000), key("sk-alice-2", "alice", 2, 20000),
           key("sk-bob-1", "bob", 60, 50000)});
    auto c = r.client();
    REQUIRE(chat(c, "sk-alice-1")->status == 200);

    const auto alice = c.Get("/v1/limits", bearer("sk-alice-2"));  // another key of the same user
    REQUIRE(alice);
    CHECK(alice->status == 200);
    const json a = json::parse(alice->body);
    CHECK(a["user"] == "alice");
    CHECK(a["limits"]["requests_per_minute"] == 2);
    CHECK(a["limits"]["tokens_per_minute"] == 20000);
    CHECK(a["remaining"]["requests"] == 1);  // 2 - 1, and the refill of one takes 30 s
    CHECK(a["remaining"]["tokens"].get<std::int64_t>() < 20000);
    CHECK(alice->body.find("bob") == std::string::npos);
    CHECK(alice->body.find("50000") == std::string::npos);

    const auto bob = c.Get("/v1/limits", bearer("sk-bob-1"));
    REQUIRE(bob);
    const json b = json::parse(bob->body);
    CHECK(b["user"] == "bob");
    CHECK(b["remaining"]["requests"] == 60);
    CHECK(b["remaining"]["tokens"] == 50000);
    CHECK(bob->body.find("alice") == std::string::npos);
}

TEST_CASE("/health answers 200 and /metrics exposes the counters in Prometheus text format", "[gateway][http]") {
    rig r({key("sk-alice-1", "alice", 1, 20000)});
    auto c = r.client();
    const auto health = c.Get("/health");
    REQUIRE(health);
    CHECK(health->status == 200);

    CHECK(chat(c, "sk-alice-1")->status == 200);
    CHECK(chat(c, "sk-alice-1")->status == 429);  // user_limit
    CHECK(chat(c, "sk-nobody")->status == 401);
    CHECK(chat(c, "sk-alice-1", "{")->status == 400);

    const auto m = c.Get("/metrics");
    REQUIRE(m);
    CHECK(m->status == 200);
    CHECK(m->get_header_value("Content-Type").find("text/plain") == 0);
    const std::string& t = m->body;
    for (const char* line : {"# TYPE gateway_requests_admitted_total counter\n",
                             "\ngateway_requests_admitted_total 1\n",
                             "\ngateway_requests_rejected_total{reason=\"auth\"} 1\n",
                             "\ngateway_requests_rejected_total{reason=\"body_too_large\"} 0\n",
                             "\ngateway_requests_rejected_total{reason=\"bad_request\"} 1\n",
                             "\ngateway_requests_rejected_total{reason=\"user_limit\"} 1\n",
                             "\ngateway_requests_rejected_total{reason=\"upstream_wait\"} 0\n",
                             "\ngateway_upstream_429_total 0\n",
                             "# TYPE gateway_queue_wait_seconds histogram\n",
                             "\ngateway_queue_wait_seconds_bucket{le=\"+Inf\"} 1\n",
                             "\ngateway_queue_wait_seconds_count 1\n",
                             "\ngateway_keys_tracked 1\n"}) {
        INFO(line);
        CHECK(t.find(line) != std::string::npos);
    }
}

TEST_CASE("the gateway sends its own key upstream, never the caller's, and the key never appears in a response", "[gateway][http]") {
    // A recording upstream: it notes the Authorization it receives and answers
    // with a fixed status (200 with usage, or a 429 the gate must learn from).
    httplib::Server upstream;
    std::mutex seen_mutex;
    std::vector<std::string> seen;
    std::atomic<int> status{200};
    upstream.Post("/v1/chat/completions", [&](const httplib::Request& req, httplib::Response& res) {
        {
            const std::lock_guard lock(seen_mutex);
            seen.push_back(req.get_header_value("Authorization"));
        }
        res.status = status.load();
        if (res.status == 429) res.set_header("Retry-After", "1");
        res.set_header("x-ratelimit-remaining-requests", "99");
        res.set_content(R"({"id": "x", "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}})",
                        "application/json");
    });
    const int upstream_port = upstream.bind_to_any_port("127.0.0.1");
    std::thread serving([&] { upstream.listen_after_bind(); });
    while (!upstream.is_running()) std::this_thread::sleep_for(1ms);

    {
        gateway::config g;
        g.upstream = "http://127.0.0.1:" + std::to_string(upstream_port);
        g.upstream_key = upstream_secret;
        g.keys = {key("sk-alice-1", "alice", 2, 20000)};
        gateway::server gw(g);
        const int port = gw.start();
        httplib::Client c("127.0.0.1", port);

        std::vector<httplib::Result> answers;
        answers.push_back(chat(c, "sk-alice-1"));                            // 200
        status = 429;
        answers.push_back(chat(c, "sk-alice-1"));                            // upstream's 429, passed on
        answers.push_back(chat(c, "sk-alice-1"));                            // user limit 429
        answers.push_back(chat(c, "sk-mallory"));                            // 401
        answers.push_back(chat(c, "sk-alice-1", "{"));                       // 400
        answers.push_back(c.Get("/v1/limits", bearer("sk-alice-1")));
        answers.push_back(c.Get("/metrics"));
        answers.push_back(c.Get("/nowhere"));
        REQUIRE(answers[0]->status == 200);
        CHECK(answers[0]->body.find("\"usage\"") != std::string::npos);  // the upstream's body comes back
        CHECK_FALSE(answers[0]->has_header("x-ratelimit-remaining-requests"));  // the shared quota's headers are dropped
        CHECK(answers[1]->status == 429);
        CHECK(answers[1]->get_header_value("Retry-After") == "1");
        CHECK(answers[2]->status == 429);
        CHECK(answers[7]->status == 404);
        for (const auto& a : answers) {
            REQUIRE(a);
            CHECK(everything(a).find(upstream_secret) == std::string::npos);
        }
        CHECK(gw.metrics_text().find("\ngateway_upstream_429_total 1\n") != std::string::npos);
        gw.stop();
    }
    upstream.stop();
    serving.join();
    REQUIRE(seen.size() == 2);
    for (const std::string& auth : seen) CHECK(auth == "Bearer " + upstream_secret);
}

TEST_CASE("the shared upstream quota is kept: callers wait in line and the upstream never answers 429", "[gateway][http]") {
    // The mock allows 300 requests per minute (5 per second, a burst of 5); the
    // gateway is told 240 (4 per second, less 2 % headroom). 20 callers at once
    // is 4 times the burst: most must wait in the gateway's line, none may be refused.
    rig r({key("sk-alice-1", "alice", 1000)}, 300, [](gateway::config& g) { g.requests_per_minute = 240; });
    constexpr int callers = 20;
    std::atomic<int> ok{0}, other{0};
    const auto start = std::chrono::steady_clock::now();
    std::vector<std::thread> threads;
    for (int i = 0; i < callers; ++i) {
        threads.emplace_back([&] {
            auto c = r.client();
            const auto res = chat(c, "sk-alice-1");
            (res && res->status == 200 ? ok : other)++;
        });
    }
    // Midway the line is full and the mock has still refused nothing.
    std::this_thread::sleep_for(1500ms);
    CHECK(r.mock->totals().throttled_429 == 0);
    CHECK(r.mock->totals().admitted < callers);
    for (auto& t : threads) t.join();
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

    CHECK(ok == callers);
    CHECK(other == 0);
    CHECK(r.mock->totals().throttled_429 == 0);
    CHECK(r.mock->totals().admitted == callers);
    // 20 at 3.92 per second after a burst of at most 4: at least (20 - 4) / 3.92 = 4.1 s.
    CHECK(seconds > 4.0);
    const std::string m = r.gw->metrics_text();
    CHECK(m.find("\ngateway_upstream_429_total 0\n") != std::string::npos);
    CHECK(m.find("\ngateway_queue_wait_seconds_bucket{le=\"0.001\"} " + std::to_string(callers) + "\n") == std::string::npos);
}

TEST_CASE("a noisy user hammering the gateway does not starve a quiet user", "[gateway][http]") {
    // Upstream: 600 per minute at the mock, 300 (4.9 per second) at the gateway.
    // noisy may send 10 a minute (a bucket of 10): 8 threads hammering put at most
    // 10 in the line, about 2 s of it; the rest is refused with 429 at once.
    rig r({key("sk-noisy-1", "noisy", 10), key("sk-quiet-1", "quiet", 10)}, 600,
          [](gateway::config& g) { g.requests_per_minute = 300; });
    std::atomic<bool> stop{false};
    std::atomic<int> noisy_ok{0}, noisy_limited{0};
    std::vector<std::thread> noisy;
    for (int i = 0; i < 8; ++i) {
        noisy.emplace_back([&] {
            auto c = r.client();
            while (!stop) {
                const auto res = chat(c, "sk-noisy-1");
                if (res && res->status == 200) ++noisy_ok;
                if (res && res->status == 429) {
                    ++noisy_limited;
                    std::this_thread::sleep_for(5ms);
                }
            }
        });
    }
    std::this_thread::sleep_for(100ms);
    auto quiet = r.client();
    std::vector<double> latencies;
    for (int i = 0; i < 4; ++i) {
        const auto t0 = std::chrono::steady_clock::now();
        const auto res = chat(quiet, "sk-quiet-1");
        latencies.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
        REQUIRE(res);
        CHECK(res->status == 200);
    }
    stop = true;
    for (auto& t : noisy) t.join();

    for (const double s : latencies) CHECK(s < 4.0);  // behind at most noisy's 10 at 4.9 per second
    CHECK(noisy_ok <= 10 + 1);  // its bucket, plus a refill of one in the 6 s it may run
    CHECK(noisy_limited > 0);
    CHECK(r.mock->totals().throttled_429 == 0);
}

// ---------------------------------------------------------------------------
// The program
// ---------------------------------------------------------------------------

namespace {

struct temp_file {
    explicit temp_file(const std::string& text) {
        static std::atomic<int> counter{0};
        path = (fs::temp_directory_path() / ("gateway_test_" + std::to_string(::getpid()) + "_" +
                                             std::to_string(counter++) + ".json"))
                   .string();
        std::ofstream(path) << text;
    }
    ~temp_file() { std::remove(path.c_str()); }
    temp_file(const temp_file&) = delete;
    temp_file& operator=(const temp_file&) = delete;
    std::string path;
};

/// Runs the gateway binary with `args`; returns its exit status and stderr.
std::pair<int, std::string> run(const std::string& args) {
    temp_file err("");
    const int rc = std::system((std::string(GATEWAY_BINARY) + " " + args + " >/dev/null 2>" + err.path).c_str());
    std::ifstream in(err.path);
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    return {WIFEXITED(rc) ? WEXITSTATUS(rc) : -1, text};
}

const char* keys_json =
    R"({"keys": [{"key": "sk-alice-1", "user": "alice", "requests_per_minute": 60, "tokens_per_minute": 20000}]})";

}  // namespace

TEST_CASE("the program prints its usage, and refuses bad flags and bad key files with one line and status 2", "[gateway][program]") {
    CHECK(run("--help").first == 0);
    temp_file keys(keys_json);
    const auto unknown = run("--port 0 --upstream http://127.0.0.1:1 --keys " + keys.path + " --bogus 1");
    CHECK(unknown.first == 2);
    CHECK(unknown.second.find("--bogus") != std::string::npos);
    const auto missing = run("--port 0 --upstream http://127.0.0.1:1 --keys /nonexistent/keys.json");
    CHECK(missing.first == 2);
    CHECK(std::count(missing.second.begin(), missing.second.end(), '\n') == 1);
    temp_file bad("{\"keys\": [{\"key\": 1}]}");
    const auto malformed = run("--port 0 --upstream http://127.0.0.1:1 --keys " + bad.path);
    CHECK(malformed.first == 2);
    CHECK(malformed.second.find("keys[0].key") != std::string::npos);
    CHECK(std::count(malformed.second.begin(), malformed.second.end(), '\n') == 1);
    const auto env = run("--port 0 --upstream http://127.0.0.1:1 --keys " + keys.path +
                         " --upstream-key-env GATEWAY_TEST_SURELY_UNSET_VAR");
    CHECK(env.first == 2);
    CHECK(run("--port 0 --upstream https://x --keys " + keys.path).first == 2);
}

TEST_CASE("the program on port 0 prints the port it listens on and serves until SIGTERM", "[gateway][program]") {
    temp_file keys(keys_json);
    int out[2];
    REQUIRE(::pipe(out) == 0);
    const pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        ::dup2(out[1], 1);
        ::close(out[0]);
        ::execl(GATEWAY_BINARY, GATEWAY_BINARY, "--port", "0", "--upstream", "http://127.0.0.1:1", "--keys",
                keys.path.c_str(), static_cast<char*>(nullptr));
        ::_exit(127);
    }
    ::close(out[1]);
    std::string line;
    char ch = 0;
    while (::read(out[0], &ch, 1) == 1 && ch != '\n') line += ch;
    ::close(out[0]);
    const std::string prefix = "listening on 127.0.0.1:";
    REQUIRE(line.rfind(prefix, 0) == 0);
    const int port = std::stoi(line.substr(prefix.size()));
    CHECK(port > 0);
    httplib::Client c("127.0.0.1", port);
    const auto health = c.Get("/health");
    REQUIRE(health);
    CHECK(health->status == 200);
    ::kill(pid, SIGTERM);
    int status = 0;
    ::waitpid(pid, &status, 0);
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
}

// ---------------------------------------------------------------------------
// Issue 14: reliability
// ---------------------------------------------------------------------------

TEST_CASE("a request above the upstream's whole per-minute token limit is answered 400 request_too_large, never 429",
          "[gateway][http][issue14]") {
    // The mock allows 200000 tokens per minute; 250000 can never fit.
    const std::string never = chat_body(250000);
    SECTION("with the limit configured") {
        rig r({key("sk-alice-1", "alice", 60, 1'000'000)}, 6000, [](gateway::config& g) { g.tokens_per_minute = 200000; });
        r.mock->stop();  // nothing may reach it
        auto c = r.client();
        const auto res = chat(c, "sk-alice-1", never);
        REQUIRE(res);
        CHECK(res->status == 400);
        CHECK_FALSE(res->has_header("Retry-After"));
        CHECK(error_of(res)["code"] == "request_too_large");
    }
    SECTION("with the limit learned from the upstream's headers") {
        mock_upstream::config m;
        m.tokens_per_minute = 200000;
        m.min_latency_ms = m.max_latency_ms = 0;
        mock_upstream::server mock(m);
        const int mock_port = mock.start();
        gateway::config g;
        g.upstream = "http://127.0.0.1:" + std::to_string(mock_port);
        g.keys = {key("sk-alice-1", "alice", 60, 1'000'000)};
        gateway::server gw(g);
        httplib::Client c("127.0.0.1", gw.start());
        c.set_read_timeout(30s);
        for (int i = 0; i < 2; ++i) {  // the first reaches the upstream, the second is refused by the learned limit
            const auto res = chat(c, "sk-alice-1", never);
            REQUIRE(res);
            CHECK(res->status == 400);
            CHECK_FALSE(res->has_header("Retry-After"));
            CHECK(error_of(res)["code"] == "request_too_large");
        }
        // No pause follows (a 429 would have paused the line a second), and the user's charge came back.
        const auto t0 = std::chrono::steady_clock::now();
        const auto ok = chat(c, "sk-alice-1");
        REQUIRE(ok);
        CHECK(ok->status == 200);
        CHECK(std::chrono::steady_clock::now() - t0 < 500ms);
        const json limits = json::parse(c.Get("/v1/limits", bearer("sk-alice-1"))->body);
        CHECK(limits["remaining"]["requests"] == 59);
        gw.stop();
        mock.stop();
    }
}

TEST_CASE("disagreeing lengths are refused with 400 and the connection ends, so nothing is smuggled",
          "[gateway][http][issue14]") {
    rig r({key("sk-alice-1", "alice", 60)});
    const std::string body = chat_body();
    // A front proxy that believes the second Content-Length (0) would pass the
    // body on as the next request: here a second chat request.
    const std::string smuggled = "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-alice-1\r\n"
                                 "Content-Type: application/json\r\nContent-Length: " +
                                 std::to_string(body.size()) + "\r\n\r\n" + body;
    for (const std::string& second : {std::string("Content-Length: 0\r\n"),
                                      "Content-Length: " + std::to_string(smuggled.size() + 1) + "\r\n",
                                      std::string("Transfer-Encoding: chunked\r\n")}) {
        INFO(second);
        raw_http::connection conn(r.port);
        REQUIRE(conn.send("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-alice-1\r\n"
                          "Content-Type: application/json\r\nContent-Length: " +
                          std::to_string(smuggled.size()) + "\r\n" + second + "\r\n" + smuggled));
        bool closed = false;
        const std::string answer = conn.receive_until_closed(5s, closed);
        CHECK(answer.rfind("HTTP/1.1 400", 0) == 0);
        CHECK(answer.find("invalid_framing") != std::string::npos);
        CHECK(raw_http::responses_in(answer) == 1);
        CHECK(closed);
    }
    // The same value twice is one length: accepted.
    raw_http::connection same(r.port);
    REQUIRE(same.send("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-alice-1\r\n"
                      "Content-Type: application/json\r\nConnection: close\r\nContent-Length: " +
                      std::to_string(body.size()) + "\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body));
    bool closed = false;
    CHECK(same.receive_until_closed(5s, closed).rfind("HTTP/1.1 200", 0) == 0);
    CHECK(r.mock->totals().requests_total == 1);
    CHECK(r.gw->counters().rejected_count(gateway::reason::bad_request) == 3);
}

TEST_CASE("a 9 KB JSON body sent as application/x-www-form-urlencoded is read as JSON, not refused as too large",
          "[gateway][http][issue14]") {
    rig r({key("sk-alice-1", "alice", 60)});
    auto c = r.client();
    const std::string body = chat_body(16, std::string(9000, 'x'));
    REQUIRE(body.size() > 8192);  // httplib's own limit for form bodies
    const auto res = c.Post("/v1/chat/completions", bearer("sk-alice-1"), body, "application/x-www-form-urlencoded");
    REQUIRE(res);
    CHECK(res->status == 200);
    CHECK(r.mock->totals().admitted == 1);
}

TEST_CASE("a key with surrounding whitespace or a control character is refused at load", "[gateway][issue14]") {
    for (const char* k : {" sk-a", "sk-a ", "sk-a\\n", "sk-\\ta", "\\nsk-a"}) {
        INFO(k);
        const std::string doc = std::string(R"({"keys": [{"key": ")") + k +
                                R"(", "user": "u", "requests_per_minute": 1, "tokens_per_minute": 1}]})";
        std::string message = "accepted";
        try {
            (void)gateway::parse_keys(doc);
        } catch (const std::invalid_argument& e) {
            message = e.what();
        }
        CHECK(message.find("keys[0].key") != std::string::npos);
        CHECK(message.find('\n') == std::string::npos);
    }
}

TEST_CASE("the upstream refusing the gateway's key is the gateway's own 502; the caller never sees the upstream's body",
          "[gateway][http][issue14]") {
    httplib::Server upstream;
    std::atomic<int> status{401};
    upstream.Post("/v1/chat/completions", [&](const httplib::Request&, httplib::Response& res) {
        res.status = status.load();
        res.set_content(R"({"error": {"message": "Incorrect API key provided: sk-upst********7f3a.", "code": "invalid_api_key"}})",
                        "application/json");
    });
    const int upstream_port = upstream.bind_to_any_port("127.0.0.1");
    std::thread serving([&] { upstream.listen_after_bind(); });
    while (!upstream.is_running()) std::this_thread::sleep_for(1ms);
    {
        gateway::config g;
        g.upstream = "http://127.0.0.1:" + std::to_string(upstream_port);
        g.upstream_key = upstream_secret;
        g.keys = {key("sk-alice-1", "alice", 3, 20000)};
        gateway::server gw(g);
        httplib::Client c("127.0.0.1", gw.start());
        for (const int s : {401, 403}) {
            status = s;
            const auto res = chat(c, "sk-alice-1");
            REQUIRE(res);
            CHECK(res->status == 502);
            CHECK(error_of(res)["code"] == "upstream_auth_failed");
            CHECK(res->body.find("sk-upst") == std::string::npos);
            CHECK(res->body.find("Incorrect API key") == std::string::npos);
        }
        status = 500;  // an upstream failure is not charged to the user either
        const auto failed = chat(c, "sk-alice-1");
        REQUIRE(failed);
        CHECK(failed->status == 500);
        const json limits = json::parse(c.Get("/v1/limits", bearer("sk-alice-1"))->body);
        CHECK(limits["remaining"]["requests"] == 3);  // three requests, none done: all given back
        gw.stop();
    }
    upstream.stop();
    serving.join();
}

TEST_CASE("a user's quota comes back when the upstream answers 5xx or cannot be reached", "[gateway][http][issue14]") {
    mock_upstream::config m;
    m.min_latency_ms = m.max_latency_ms = 0;
    m.error_rate = 1;  // every request answered 500
    mock_upstream::server mock(m);
    gateway::config g;
    g.upstream = "http://127.0.0.1:" + std::to_string(mock.start());
    g.keys = {key("sk-alice-1", "alice", 2, 20000)};
    gateway::server gw(g);
    httplib::Client c("127.0.0.1", gw.start());
    for (int i = 0; i < 4; ++i) {  // twice the user's limit of 2 a minute: each is given back
        const auto res = chat(c, "sk-alice-1");
        REQUIRE(res);
        CHECK(res->status == 500);
    }
    mock.stop();
    const auto unreachable = chat(c, "sk-alice-1");
    REQUIRE(unreachable);
    CHECK(unreachable->status == 502);
    const json limits = json::parse(c.Get("/v1/limits", bearer("sk-alice-1"))->body);
    CHECK(limits["remaining"]["requests"] == 2);
    CHECK(limits["remaining"]["tokens"] == 20000);
    gw.stop();
}

TEST_CASE("a known path with the wrong method is 405 with Allow, an unknown path 404", "[gateway][http][issue14]") {
    rig r({key("sk-alice-1", "alice", 60)});
    auto c = r.client();
    const auto get_chat = c.Get("/v1/chat/completions", bearer("sk-alice-1"));
    REQUIRE(get_chat);
    CHECK(get_chat->status == 405);
    CHECK(get_chat->get_header_value("Allow") == "POST");
    CHECK(error_of(get_chat)["code"] == "method_not_allowed");
    const auto post_health = c.Post("/health", "{}", "application/json");
    REQUIRE(post_health);
    CHECK(post_health->status == 405);
    CHECK(post_health->get_header_value("Allow") == "GET, HEAD");
    const auto nowhere = c.Get("/v1/nowhere");
    REQUIRE(nowhere);
    CHECK(nowhere->status == 404);
}

namespace {

/// The gateway program on a free port (upstream never reached), with `extra` flags.
struct gateway_process {
    explicit gateway_process(const std::string& keys_path, std::vector<std::string> extra = {}) {
        std::vector<std::string> args{"--port", "0", "--upstream", "http://127.0.0.1:1", "--keys", keys_path};
        args.insert(args.end(), extra.begin(), extra.end());
        child = ratelimit_test::spawn(GATEWAY_BINARY, args);
        const std::string line = ratelimit_test::read_line(child.out);
        const std::string prefix = "listening on 127.0.0.1:";
        REQUIRE(line.rfind(prefix, 0) == 0);
        port = std::stoi(line.substr(prefix.size()));
    }
    ~gateway_process() {
        if (child.pid > 0) {
            ::kill(child.pid, SIGKILL);
            ratelimit_test::exit_status(child.pid);
        }
        ::close(child.out);
        ::close(child.err);
    }
    gateway_process(const gateway_process&) = delete;
    gateway_process& operator=(const gateway_process&) = delete;
    ratelimit_test::child child;
    int port = 0;
};

}  // namespace

TEST_CASE("a large chunked or declared body is answered before it is sent whole, and memory stays bounded",
          "[gateway][program][issue14]") {
    temp_file keys(keys_json);
    gateway_process gw(keys.path, {"--max-body-bytes", "1000"});
    constexpr std::uint64_t total = 100ull << 20;  // 100 MiB of zeros
    const auto head = [](const std::string& auth, const std::string& framing) {
        return "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n" + auth + "Content-Type: application/json\r\n" + framing + "\r\n";
    };
    const std::string alice = "Authorization: Bearer sk-alice-1\r\n";
    const std::string chunked = "Transfer-Encoding: chunked\r\n";
    const std::string declared = "Content-Length: " + std::to_string(total) + "\r\n";
    struct attempt {
        std::string head;
        bool chunked;
        const char* status;
    };
    for (const attempt& a : {attempt{head(alice, chunked), true, "HTTP/1.1 413"}, attempt{head("", chunked), true, "HTTP/1.1 401"},
                             attempt{head(alice, declared), false, "HTTP/1.1 413"},
                             attempt{head("Authorization: Bearer sk-nobody\r\n", declared), false, "HTTP/1.1 401"}}) {
        INFO(a.head);
        const auto t0 = std::chrono::steady_clock::now();
        const raw_http::upload u = raw_http::send_large_body(gw.port, a.head, total, a.chunked, 20s);
        CHECK(u.answer.rfind(a.status, 0) == 0);
        CHECK(u.body_bytes_sent < total / 4);  // the answer came long before the body was sent whole
        CHECK(std::chrono::steady_clock::now() - t0 < 5s);
    }
    const long peak = raw_http::peak_rss_kib(gw.child.pid);
    INFO("gateway VmHWM " << peak << " KiB");
    CHECK(peak > 0);
    CHECK(peak < 64 * 1024);  // far below the 100 MiB body
    // And it still serves.
    httplib::Client c("127.0.0.1", gw.port);
    const auto health = c.Get("/health");
    REQUIRE(health);
    CHECK(health->status == 200);
}

namespace {

/// Sends a request's headers one line every 200 ms, never ending them, until
/// the server closes the connection, `stop` is set, or 20 s pass.
void slow_headers(int port, const std::atomic<bool>& stop) {
    raw_http::connection c(port);
    if (!c.send("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")) return;
    const auto until = std::chrono::steady_clock::now() + 20s;
    for (int i = 0; !stop && std::chrono::steady_clock::now() < until; ++i) {
        if (!c.send("X-Slow-" + std::to_string(i) + ": 1\r\n")) return;
        std::this_thread::sleep_for(200ms);
    }
}

}  // namespace

TEST_CASE("SIGTERM and SIGINT stop the program within the drain time while slow clients are connected",
          "[gateway][program][issue14]") {
    temp_file keys(keys_json);
    for (const int sig : {SIGTERM, SIGINT}) {
        INFO("signal " << sig);
        gateway_process gw(keys.path, {"--drain-seconds", "1"});
        std::atomic<bool> stop{false};
        std::vector<std::thread> slow;
        for (int i = 0; i < 4; ++i) slow.emplace_back(slow_headers, gw.port, std::cref(stop));
        // And one whose body never finishes arriving.
        raw_http::connection stalled(gw.port);
        REQUIRE(stalled.send("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-alice-1\r\n"
                             "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"messages\": ["));
        std::this_thread::sleep_for(500ms);
        const auto t0 = std::chrono::steady_clock::now();
        ::kill(gw.child.pid, sig);
        const int status = ratelimit_test::exit_status(gw.child.pid);
        const auto took = std::chrono::steady_clock::now() - t0;
        gw.child.pid = -1;
        stop = true;
        for (auto& t : slow) t.join();
        CHECK(status == 0);
        CHECK(took < 2500ms);  // the 1 s drain and its margin, not the clients' 20 s
    }
}

TEST_CASE("64 slow clients do not take the gateway down: /health still answers at once", "[gateway][program][issue14]") {
    temp_file keys(keys_json);
    gateway_process gw(keys.path);  // default flags
    std::atomic<bool> stop{false};
    std::vector<std::thread> slow;
    for (int i = 0; i < 64; ++i) slow.emplace_back(slow_headers, gw.port, std::cref(stop));
    std::this_thread::sleep_for(1500ms);
    for (int probe = 0; probe < 3; ++probe) {
        INFO("probe " << probe);
        httplib::Client c("127.0.0.1", gw.port);
        c.set_connection_timeout(1s);
        c.set_read_timeout(1s);
        const auto t0 = std::chrono::steady_clock::now();
        const auto health = c.Get("/health");
        CHECK(health);  // not REQUIRE: the slow clients' threads must still be joined
        if (health) CHECK(health->status == 200);
        CHECK(std::chrono::steady_clock::now() - t0 < 1s);
        std::this_thread::sleep_for(300ms);
    }
    stop = true;
    for (auto& t : slow) t.join();
}

TEST_CASE("a client too slow with its headers is cut at the header timeout, and an address's excess connections at once",
          "[gateway][program][issue14]") {
    temp_file keys(keys_json);
    gateway_process gw(keys.path, {"--header-timeout-ms", "1500", "--max-connections-per-address", "8"});
    std::atomic<bool> stop{false};
    std::atomic<int> ended{0};
    std::vector<std::thread> slow;
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < 20; ++i) {
        slow.emplace_back([&] {
            slow_headers(gw.port, stop);
            ++ended;
        });
    }
    // Over the cap of 8: 12 are cut within a sweep or two.
    const auto excess_deadline = t0 + 1200ms;
    while (ended < 12 && std::chrono::steady_clock::now() < excess_deadline) std::this_thread::sleep_for(20ms);
    CHECK(ended >= 12);
    // The other 8 at the 1.5 s header timeout (plus a sweep and the client noticing).
    const auto all_deadline = t0 + 4s;
    while (ended < 20 && std::chrono::steady_clock::now() < all_deadline) std::this_thread::sleep_for(20ms);
    CHECK(ended == 20);
    CHECK(std::chrono::steady_clock::now() - t0 > 1400ms);  // not before the timeout
    stop = true;
    for (auto& t : slow) t.join();
    // A quick client is still served.
    httplib::Client c("127.0.0.1", gw.port);
    const auto health = c.Get("/health");
    REQUIRE(health);
    CHECK(health->status == 200);
}

TEST_CASE("under a flood from one user, a light user's requests wait for one turn, not behind the whole flood",
          "[gateway][http][issue14]") {
    // The upstream line takes 4 requests a second (240 a minute, less headroom).
    // heavy keeps 16 requests waiting, 4 s of line; light sends 3 in a row.
    rig r({key("sk-heavy-1", "heavy", 100000), key("sk-light-1", "light", 60)}, 6000,
          [](gateway::config& g) { g.requests_per_minute = 240; });
    std::atomic<bool> stop{false};
    std::atomic<int> heavy_ok{0};
    std::vector<std::thread> heavy;
    for (int i = 0; i < 16; ++i) {
        heavy.emplace_back([&] {
            auto c = r.client();
            while (!stop) {
                const auto res = chat(c, "sk-heavy-1");
                if (res && res->status == 200) ++heavy_ok;
            }
        });
    }
    std::this_thread::sleep_for(1500ms);  // the line is full of heavy's requests
    auto light = r.client();
    std::vector<double> waits;
    for (int i = 0; i < 3; ++i) {
        const auto t0 = std::chrono::steady_clock::now();
        const auto res = chat(light, "sk-light-1");
        waits.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
        CHECK(res);
        if (res) CHECK(res->status == 200);
    }
    stop = true;
    for (auto& t : heavy) t.join();
    for (const double w : waits) {
        INFO("light waited " << w << " s");
        CHECK(w < 1.5);  // one heavy request inside the gate and one turn: about 0.5 s; FIFO would be ~4 s
    }
    CHECK(heavy_ok > 5);  // heavy was served meanwhile too
    CHECK(r.mock->totals().throttled_429 == 0);
}

TEST_CASE("a request above the upstream's one-second share draws at most one provider 429 and never pauses other users",
          "[gateway][http][issue14]") {
    // The mock: 200000 tokens a minute in one-second buckets of 3333, and a
    // cost above its bucket can never be admitted. 10000 tokens is within the
    // minute but above the second.
    mock_upstream::config m;
    m.tokens_per_minute = 200000;
    m.min_latency_ms = m.max_latency_ms = 0;
    mock_upstream::server mock(m);
    gateway::config g;
    g.upstream = "http://127.0.0.1:" + std::to_string(mock.start());
    g.tokens_per_minute = 200000;
    g.keys = {key("sk-big-1", "big", 1000, 10'000'000), key("sk-small-1", "small", 1000, 10'000'000)};
    gateway::server gw(g);
    httplib::Client c("127.0.0.1", gw.start());
    c.set_read_timeout(30s);
    std::vector<int> big_status;
    std::vector<double> small_waits;
    for (int i = 0; i < 4; ++i) {
        const auto big = chat(c, "sk-big-1", chat_body(10000));
        REQUIRE(big);
        big_status.push_back(big->status);
        CHECK_FALSE(big->has_header("Retry-After"));
        const auto t0 = std::chrono::steady_clock::now();
        const auto small = chat(c, "sk-small-1");
        small_waits.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
        REQUIRE(small);
        CHECK(small->status == 200);
    }
    for (const int s : big_status) CHECK(s == 400);
    // The first waits out the debt the gate's bucket took for the first large
    // request, sent when the bucket was full (10000 - 3266 tokens at 3266 a
    // second: ~2.1 s); later large ones are refused at once, so no more waits,
    // and no provider 429 pauses the line (each would pause it a second).
    CHECK(small_waits[0] < 3.0);
    for (std::size_t i = 1; i < small_waits.size(); ++i) {
        INFO("small waited " << small_waits[i] << " s");
        CHECK(small_waits[i] < 0.5);
    }
    CHECK(mock.totals().throttled_429 <= 1);  // the first, which taught the gateway the upstream's size limit
    gw.stop();
    mock.stop();
}

TEST_CASE("stop() ends waits in the upstream line at the drain time", "[gateway][http][issue14]") {
    // One request a second upstream and a 30 s max_wait: without closing the
    // line, stop() would wait for callers in line up to 30 s.
    rig r({key("sk-alice-1", "alice", 1000)}, 6000, [](gateway::config& g) {
        g.requests_per_minute = 60;
        g.max_wait = 30s;
        g.drain = 500ms;
    });
    std::vector<std::thread> callers;
    std::atomic<int> ok{0}, shutting_down{0};
    std::mutex seen_mutex;
    std::string seen;
    for (int i = 0; i < 5; ++i) {
        callers.emplace_back([&] {
            auto c = r.client();
            const auto res = chat(c, "sk-alice-1");
            if (res && res->status == 200) ++ok;
            if (res && res->status == 503) ++shutting_down;
            const std::lock_guard lock(seen_mutex);
            seen += std::to_string(res ? res->status : -1) + " " + (res ? res->body : httplib::to_string(res.error())) + "\n";
        });
    }
    std::this_thread::sleep_for(400ms);
    const auto t0 = std::chrono::steady_clock::now();
    r.gw->stop();
    const auto took = std::chrono::steady_clock::now() - t0;
    for (auto& t : callers) t.join();
    INFO(seen);
    CHECK(took < 1500ms);  // the 500 ms drain and a little
    CHECK(ok >= 1);
    // The others end with a 503 or their connection closed (the 503 written
    // after the line closes does not always reach them before the cut).
}
