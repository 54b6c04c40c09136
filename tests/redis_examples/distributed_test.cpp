// The distributed example program (examples/distributed), run as a user would:
// two worker processes share one Redis token bucket and together stay within
// burst + rate x seconds; the command line is checked; and with Redis gone
// each outage policy gives its answer without a crash.

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "support/catch.hpp"
#include "support/process.hpp"
#include "support/redis_server.hpp"

namespace {

struct outcome {
    int status = -1;  // exit status; -1 when killed by a signal
    std::string out, err;
    double seconds = 0;  // wall time of the run
};

/// Runs the program with `args` and waits for it.
outcome run(std::vector<std::string> args) {
    const auto start = std::chrono::steady_clock::now();
    const ratelimit_test::child c = ratelimit_test::spawn(DISTRIBUTED_BINARY, std::move(args));
    outcome o;
    o.out = ratelimit_test::read_all(c.out);  // the output is a few lines: neither pipe fills up
    o.err = ratelimit_test::read_all(c.err);
    ::close(c.out);
    ::close(c.err);
    o.status = ratelimit_test::exit_status(c.pid);
    o.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return o;
}

std::string unique_key(const char* name) { return std::string(name) + "-" + std::to_string(::getpid()); }

/// "worker I: N permits" -> N for each worker, in order.
std::vector<std::int64_t> worker_permits(const std::string& out) {
    std::vector<std::int64_t> permits;
    const std::regex line(R"(^worker (\d+): (\d+) permits?\b.*)");
    std::size_t from = 0;
    for (std::size_t to; (to = out.find('\n', from)) != std::string::npos; from = to + 1) {
        const std::string text = out.substr(from, to - from);
        std::smatch m;
        if (!std::regex_match(text, m, line)) continue;
        CHECK(std::stoul(m[1]) == permits.size() + 1);
        permits.push_back(std::stoll(m[2]));
    }
    return permits;
}

/// "total: N permits in T s; the quota allows at most B + R x T = Q" -> N.
std::int64_t total_permits(const std::string& out) {
    std::smatch m;
    REQUIRE(std::regex_search(out, m, std::regex(R"(total: (\d+) permits in [0-9.]+ s; the quota allows at most )")));
    return std::stoll(m[1]);
}

std::int64_t sum(const std::vector<std::int64_t>& v) {
    std::int64_t s = 0;
    for (std::int64_t x : v) s += x;
    return s;
}

}  // namespace

TEST_CASE("two processes sharing one bucket together get at most burst + rate x seconds, and both get permits",
          "[distributed]") {
    const int port = ratelimit_test::redis_server::shared().port();
    const outcome o = run({"--redis-port", std::to_string(port), "--key", unique_key("share"), "--rate", "20",
                           "--burst", "5", "--seconds", "2", "--workers", "2"});
    INFO(o.out << o.err);
    CHECK(o.status == 0);
    CHECK(o.err.empty());
    CHECK_THAT(o.out, Catch::Contains("the quota allows at most 5 + 20 x 2.0 = 45"));
    const auto permits = worker_permits(o.out);
    REQUIRE(permits.size() == 2);
    const std::int64_t total = total_permits(o.out);
    CHECK(total == sum(permits));
    // 5 + 20 x 2 = 45 at most (+1 for the server's and our clock ticking apart);
    // at least 60% of it, or the workers did not really wait for their permits.
    CHECK(total <= 45 + 1);
    CHECK(total >= 27);
    CHECK(permits[0] > 0);  // both processes really took permits from the one bucket
    CHECK(permits[1] > 0);
}

TEST_CASE("with --json the program prints one JSON object with the same numbers", "[distributed]") {
    const int port = ratelimit_test::redis_server::shared().port();
    const outcome o = run({"--redis-port", std::to_string(port), "--key", unique_key("json"), "--rate", "10",
                           "--burst", "3", "--seconds", "1", "--workers", "3", "--json"});
    INFO(o.out << o.err);
    CHECK(o.status == 0);
    REQUIRE(std::count(o.out.begin(), o.out.end(), '\n') == 1);
    CHECK(o.out.front() == '{');
    CHECK_THAT(o.out, Catch::Contains("\"quota\":13,\"within_quota\":true"));  // 3 + 10 x 1
    CHECK_THAT(o.out, Catch::Contains("{\"worker\":3,"));
    std::smatch m;
    REQUIRE(std::regex_search(o.out, m, std::regex(R"("total":(\d+))")));
    CHECK(std::stoll(m[1]) <= 13 + 1);
    CHECK(std::stoll(m[1]) >= 8);  // 60% of 13
}

TEST_CASE("--help prints the usage and exits 0", "[distributed]") {
    const outcome o = run({"--help"});
    CHECK(o.status == 0);
    CHECK_THAT(o.out, Catch::StartsWith("usage: distributed"));
    for (const char* flag : {"--redis-host", "--redis-port", "--key", "--rate", "--burst", "--seconds", "--workers",
                             "--policy", "--json"}) {
        CHECK_THAT(o.out, Catch::Contains(flag));
    }
    CHECK(o.err.empty());
}

TEST_CASE("a bad command line gets one line on stderr and exit status 2", "[distributed]") {
    const std::string port = std::to_string(ratelimit_test::redis_server::shared().port());
    const std::vector<std::vector<std::string>> bad = {
        {"--redis-port", port, "--nope"},           // unknown flag
        {"--rate", "20"},                           // --redis-port missing
        {"--redis-port"},                           // value missing
        {"--redis-port", "70000"},                  // out of range
        {"--redis-port", port, "--rate", "-5"},     // not a rate
        {"--redis-port", port, "--workers", "0"},   // no worker
        {"--redis-port", port, "--policy", "maybe"},
        {"--redis-port", port, "--key", "a{b}"},    // a brace would change the Redis Cluster hash tag
    };
    for (const auto& args : bad) {
        const outcome o = run(args);
        INFO(args.back() << ": " << o.err);
        CHECK(o.status == 2);
        CHECK(std::count(o.err.begin(), o.err.end(), '\n') == 1);
        CHECK_THAT(o.err, Catch::StartsWith("distributed: "));
        CHECK(o.out.empty());
    }
    CHECK_THAT(run({"--rate", "20"}).err, Catch::Contains("--redis-port is required"));
}

TEST_CASE("with Redis gone, fail_closed reports 0 permits without waiting past the run", "[distributed]") {
    auto server = ratelimit_test::redis_server::start();
    const std::string port = std::to_string(server->port());
    server->kill9();  // nothing listens on the port now
    const outcome o = run({"--redis-port", port, "--key", unique_key("closed"), "--seconds", "1", "--policy",
                           "fail_closed"});
    INFO(o.out << o.err);
    CHECK(o.status == 0);  // 0 permits are within any quota
    CHECK(o.seconds < 1 + 3);
    const auto permits = worker_permits(o.out);
    CHECK(permits == std::vector<std::int64_t>{0, 0});
    CHECK(total_permits(o.out) == 0);
    CHECK_THAT(o.out, Catch::Contains("answered by fail_closed: Redis did not answer"));
}

TEST_CASE("with Redis gone, local_fallback gives each of N workers 1/N of the quota", "[distributed]") {
    auto server = ratelimit_test::redis_server::start();
    const std::string port = std::to_string(server->port());
    server->kill9();
    const outcome o = run({"--redis-port", port, "--key", unique_key("fallback"), "--rate", "20", "--burst", "4",
                           "--seconds", "1", "--policy", "local_fallback"});
    INFO(o.out << o.err);
    CHECK(o.status == 0);
    const auto permits = worker_permits(o.out);
    REQUIRE(permits.size() == 2);
    // Each worker's local bucket: burst 4 / 2 = 2, rate 20 / 2 = 10 per second:
    // at most 2 + 10 x 1 = 12 each, 24 in all, within 4 + 20 x 1.
    CHECK(permits[0] > 0);
    CHECK(permits[1] > 0);
    CHECK(permits[0] <= 12 + 1);
    CHECK(permits[1] <= 12 + 1);
    CHECK(sum(permits) <= 24);
}

TEST_CASE("with Redis gone, fail_open grants everything and the program says the quota was exceeded",
          "[distributed]") {
    auto server = ratelimit_test::redis_server::start();
    const std::string port = std::to_string(server->port());
    server->kill9();
    const outcome o = run({"--redis-port", port, "--key", unique_key("open"), "--rate", "20", "--burst", "5",
                           "--seconds", "0.2", "--workers", "1", "--policy", "fail_open"});
    INFO(o.out << o.err);
    CHECK(o.status == 1);
    CHECK(total_permits(o.out) > 5 + 4);  // 5 + 20 x 0.2 = 9 allowed
    CHECK_THAT(o.out, Catch::Contains("EXCEEDED"));
}

TEST_CASE("the password comes from the variable --redis-password-env names") {
    auto server = ratelimit_test::redis_server::start({"--requirepass", "s3cret"});
    const std::string port = std::to_string(server->port());
    ::setenv("RATELIMIT_TEST_REDIS_PASSWORD", "s3cret", 1);
    const outcome with = run({"--redis-port", port, "--redis-password-env", "RATELIMIT_TEST_REDIS_PASSWORD",
                              "--seconds", "0.3", "--key", unique_key("password")});
    CHECK(with.status == 0);
    CHECK(with.out.find("total: 0 permits") == std::string::npos);  // the workers got permits
    const outcome unset = run({"--redis-port", port, "--redis-password-env", "RATELIMIT_TEST_UNSET_VARIABLE"});
    CHECK(unset.status == 2);
    CHECK(unset.err.find("RATELIMIT_TEST_UNSET_VARIABLE is not set") != std::string::npos);
    const outcome without = run({"--redis-port", port, "--seconds", "0.3", "--key", unique_key("no-password")});
    CHECK(without.out.find("total: 0 permits") != std::string::npos);  // fail_closed: Redis refuses every call
}

TEST_CASE("local_fallback stays within burst + rate x seconds when Redis is paused mid-run and comes back",
          "[distributed]") {
    // The issue's run: 4 workers, burst 100, 20/s, 4 s, Redis stopped (SIGSTOP)
    // from 1 s to 3 s. Bound: 100 + 20 x 4 = 180. The local buckets (25, 5/s
    // each) used to start full on top of what Redis had granted, and Redis
    // refilled meanwhile: 299 permits. Now they start empty and their grants
    // are taken from the shared bucket when Redis answers again.
    auto server = ratelimit_test::redis_server::start();
    const std::string port = std::to_string(server->port());
    const auto start = std::chrono::steady_clock::now();
    const ratelimit_test::child c = ratelimit_test::spawn(
        DISTRIBUTED_BINARY, {"--redis-port", port, "--key", unique_key("paused"), "--rate", "20", "--burst", "100",
                             "--seconds", "4", "--workers", "4", "--policy", "local_fallback"});
    std::this_thread::sleep_until(start + std::chrono::seconds(1));
    server->pause();
    std::this_thread::sleep_until(start + std::chrono::seconds(3));
    server->resume();
    outcome o;
    o.out = ratelimit_test::read_all(c.out);
    o.err = ratelimit_test::read_all(c.err);
    ::close(c.out);
    ::close(c.err);
    o.status = ratelimit_test::exit_status(c.pid);
    INFO(o.out << o.err);
    const auto permits = worker_permits(o.out);
    REQUIRE(permits.size() == 4);
    for (std::int64_t p : permits) CHECK(p > 0);
    // The outage really was answered by the fallback: every worker says so.
    CHECK(std::regex_search(o.out, std::regex("worker 1: .*answered by local_fallback")));
    CHECK(std::regex_search(o.out, std::regex("worker 4: .*answered by local_fallback")));
    const std::int64_t total = total_permits(o.out);
    CHECK(total <= 180);
    CHECK(total >= 120);  // 100 + 20 x 1 before the pause at least
    CHECK(o.status == 0);
    CHECK_THAT(o.out, Catch::Contains("the quota allows at most 100 + 20 x 4.0 = 180"));
}

TEST_CASE("a wrong password is reported as an authentication failure, with the server's reason, and exits 1",
          "[distributed]") {
    auto server = ratelimit_test::redis_server::start({"--requirepass", "s3cret"});
    const std::string port = std::to_string(server->port());
    ::setenv("RATELIMIT_TEST_WRONG_PASSWORD", "not-it", 1);
    for (const char* policy : {"fail_closed", "local_fallback"}) {
        const outcome o = run({"--redis-port", port, "--redis-password-env", "RATELIMIT_TEST_WRONG_PASSWORD",
                               "--seconds", "2", "--key", unique_key("wrong-password"), "--policy", policy});
        INFO(policy << ": " << o.out << o.err);
        CHECK(o.status == 1);
        CHECK_THAT(o.err, Catch::Contains("authentication failed"));
        CHECK_THAT(o.err, Catch::Contains("WRONGPASS"));  // the server's own words
        CHECK(o.err.find("did not answer") == std::string::npos);
        CHECK(o.seconds < 1.5);  // stops at once rather than retrying for the whole run
        CHECK_THAT(o.out, Catch::Contains("a worker failed"));
    }
}
