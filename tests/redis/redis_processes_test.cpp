// Exact admission across processes: 4 processes x 4 threads hammer one key,
// and together they are granted exactly the limit, not one permit more.

#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <ratelimit/redis.hpp>

#include "support/catch.hpp"
#include "support/redis_server.hpp"

namespace {

using namespace std::chrono_literals;

constexpr int processes = 4;
constexpr int threads_per_process = 4;
constexpr int attempts_per_thread = 300;  // 4800 attempts in all
constexpr std::int64_t limit = 1000;

/// Forks `processes` children that each build a limiter with `make(connection&)`
/// and try `attempts_per_thread` single permits from each of their threads;
/// returns the permits granted in all. The parent creates no thread before forking.
template <class Make>
std::int64_t granted_across_processes(Make make) {
    const int port = ratelimit_test::redis_server::shared().port();
    std::vector<std::pair<pid_t, int>> children;
    for (int p = 0; p < processes; ++p) {
        int fds[2];
        REQUIRE(::pipe(fds) == 0);
        const pid_t pid = ::fork();
        REQUIRE(pid >= 0);
        if (pid == 0) {
            ::close(fds[0]);
            std::int64_t granted = 0;
            {
                ratelimit::redis::connection c("127.0.0.1", port, {1000ms, 2000ms, threads_per_process});
                auto limiter = make(c);
                std::atomic<std::int64_t> count{0};
                std::vector<std::thread> threads;
                for (int t = 0; t < threads_per_process; ++t) {
                    threads.emplace_back([&] {
                        for (int i = 0; i < attempts_per_thread; ++i) count += limiter->try_acquire() ? 1 : 0;
                    });
                }
                for (auto& t : threads) t.join();
                granted = limiter->outages() == 0 ? count.load() : -1;
            }
            const auto written = ::write(fds[1], &granted, sizeof granted);
            ::_exit(written == sizeof granted ? 0 : 1);
        }
        ::close(fds[1]);
        children.emplace_back(pid, fds[0]);
    }
    std::int64_t total = 0;
    for (auto [pid, fd] : children) {
        std::int64_t granted = -1;
        const auto got = ::read(fd, &granted, sizeof granted);
        ::close(fd);
        int status = 0;
        ::waitpid(pid, &status, 0);
        CHECK(got == sizeof granted);
        CHECK(WIFEXITED(status));
        CHECK(granted >= 0);  // -1: a child saw an outage
        total += granted;
    }
    return total;
}

std::string unique_key(const char* name) { return std::string(name) + "-" + std::to_string(::getpid()); }

}  // namespace

TEST_CASE("token_bucket: 4 processes x 4 threads on one key are granted exactly the capacity") {
    const std::string key = unique_key("processes-tb");
    const std::int64_t total = granted_across_processes([&](ratelimit::redis::connection& c) {
        // One permit per hour: no refill while the test runs.
        return std::make_unique<ratelimit::redis::token_bucket<>>(c, key, ratelimit::rate::per_hour(1), limit);
    });
    CHECK(total == limit);
}

TEST_CASE("fixed_window: 4 processes x 4 threads on one key are granted exactly the limit") {
    const std::string key = unique_key("processes-fw");
    const std::int64_t total = granted_across_processes([&](ratelimit::redis::connection& c) {
        return std::make_unique<ratelimit::redis::fixed_window<>>(c, key, limit, std::chrono::hours(24));
    });
    CHECK(total == limit);  // one window a day: a new one starts during the test only at midnight UTC
}

TEST_CASE("sliding_window_log: 4 processes x 4 threads on one key are granted exactly the limit") {
    const std::string key = unique_key("processes-swl");
    const std::int64_t total = granted_across_processes([&](ratelimit::redis::connection& c) {
        return std::make_unique<ratelimit::redis::sliding_window_log<>>(c, key, limit, std::chrono::hours(1));
    });
    CHECK(total == limit);
}
