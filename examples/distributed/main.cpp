// distributed: N processes sharing one quota through Redis. Parses the flags,
// forks the workers and prints what each got beside the quota they share
// (the workers live in shared_quota.hpp). Exit status: 0 within the quota,
// 1 over it or when a worker failed (e.g. Redis refused its password),
// 2 for a bad command line.
#include "shared_quota.hpp"

#include "../common/flags.hpp"

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <stdexcept>
#include <string>

int main(int argc, char** argv) {
    distributed::config c;
    std::string policy = "fail_closed";
    bool json = false;
    examples::flags::parser flags("distributed",
                                  "Forks N worker processes that share one token bucket in Redis and shows that\n"
                                  "together they get at most burst + rate x seconds permits.");
    flags.text("redis-host", c.host, "H", "Redis server address (default 127.0.0.1)");
    flags.integer("redis-port", c.port, "N", "Redis server port", 1, 65535).required();
    flags.text("key", c.key, "K", "the shared bucket's key (default demo)");
    flags.number("rate", c.rate, "N", "permits per second, shared by all workers (default 20)", 1e-3, 1e9);
    flags.integer<std::int64_t>("burst", c.burst, "N", "the bucket's capacity (default 5)", 1, 1'000'000'000);
    flags.number("seconds", c.seconds, "S", "how long the workers run (default 3)", 0.01, 3600);
    flags.integer("workers", c.workers, "N", "worker processes, each with its own connection (default 2)", 1, 256);
    flags.text("policy", policy, "P", "when Redis is down: fail_closed (default), fail_open, local_fallback");
    std::string password_env;
    flags.text("redis-password-env", password_env, "NAME",
               "the environment variable holding the Redis password (never given on the command line)");
    flags.toggle("json", json, "print one JSON object instead of text");
    examples::flags::parse_or_exit(flags, argc, argv);

    const auto parsed_policy = distributed::parse_policy(policy);
    if (!parsed_policy) {
        examples::flags::usage_failure(flags, "--policy: expected fail_open, fail_closed or local_fallback, got '" +
                                                  policy + "'");
    }
    c.policy = *parsed_policy;
    if (!password_env.empty()) {
        const char* password = std::getenv(password_env.c_str());
        if (password == nullptr) {
            examples::flags::usage_failure(flags, "--redis-password-env: the variable " + password_env + " is not set");
        }
        c.password = password;
    }
    try {
        distributed::check(c);
    } catch (const std::invalid_argument& e) {
        examples::flags::usage_failure(flags, e.what());
    }

    try {
        const distributed::run_result result = distributed::run(c);
        const std::string report = json ? distributed::report_json(c, result) : distributed::report_text(c, result);
        std::fputs(report.c_str(), stdout);
        return result.within(c) ? 0 : 1;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "distributed: %s\n", e.what());
        return 1;
    }
}
