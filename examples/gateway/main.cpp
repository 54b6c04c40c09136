// gateway: an OpenAI-compatible rate-limiting proxy (see gateway.hpp).
// Parses the flags, loads the keys, starts the server, prints
// `listening on HOST:PORT`, and stops cleanly on SIGINT or SIGTERM.
#include "gateway.hpp"

#include "../common/flags.hpp"

#include <signal.h>

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <future>
#include <string>
#include <thread>

int main(int argc, char** argv) {
    std::string host = "127.0.0.1", upstream, keys_file, key_env;
    int port = 0, threads = 256, per_address = 32;
    std::int64_t header_timeout_ms = 10'000;
    std::int64_t rpm = 0, tpm = 0, concurrency = 0, max_body = 1 << 20, max_wait_ms = 10'000, drain_seconds = 10;
    examples::flags::parser flags("gateway",
                                  "An OpenAI-compatible proxy: per-user request and token limits from the keys file,\n"
                                  "one shared upstream quota kept by a fair queue, so the provider never answers 429.");
    flags.integer("port", port, "N", "port to listen on (0: a free port)", 0, 65535).required();
    flags.text("upstream", upstream, "URL", "upstream server root, http://host:port (request paths are appended)").required();
    flags.text("keys", keys_file, "FILE", "JSON: {\"keys\": [{key, user, requests_per_minute, tokens_per_minute}]}").required();
    flags.text("upstream-key-env", key_env, "NAME", "env var holding the gateway's own upstream key (default GATEWAY_UPSTREAM_KEY, optional)");
    flags.integer("rpm", rpm, "N", "upstream requests per minute (0: learned from headers)", std::int64_t{0});
    flags.integer("tpm", tpm, "N", "upstream tokens per minute (0: learned from headers)", std::int64_t{0});
    flags.integer("concurrency", concurrency, "N", "upstream requests in flight (0: unbounded)", std::int64_t{0});
    flags.integer("max-body-bytes", max_body, "N", "largest request body (default 1 MiB)", std::int64_t{1});
    flags.integer("max-wait-ms", max_wait_ms, "MS", "longest wait in the upstream line before a 429 (default 10000)", std::int64_t{0});
    flags.integer("drain-seconds", drain_seconds, "N",
                  "on SIGTERM/SIGINT, time requests being handled get to answer before the process exits (default 10)",
                  std::int64_t{0}, std::int64_t{3600});
    flags.integer("threads", threads, "N", "worker threads = connections served at once (default 256)", 1, 4096);
    flags.integer("header-timeout-ms", header_timeout_ms, "MS",
                  "a request's headers must arrive within it, from the connection's accept or last answer (default 10000)",
                  std::int64_t{1}, std::int64_t{3'600'000});
    flags.integer("max-connections-per-address", per_address, "N",
                  "an address's connections beyond N that are still sending a request are closed (default 32)", 1, 65535);
    flags.text("host", host, "ADDR", "address to bind (default 127.0.0.1)");
    examples::flags::parse_or_exit(flags, argc, argv);

    gateway::config config;
    config.host = host;
    config.port = port;
    config.upstream = upstream;
    config.requests_per_minute = rpm;
    config.tokens_per_minute = tpm;
    config.concurrency = concurrency;
    config.max_body_bytes = max_body;
    config.max_wait = std::chrono::milliseconds(max_wait_ms);
    config.threads = threads;
    config.drain = std::chrono::seconds(drain_seconds);
    config.header_timeout = std::chrono::milliseconds(header_timeout_ms);
    config.max_connections_per_address = per_address;
    const std::string env_name = key_env.empty() ? "GATEWAY_UPSTREAM_KEY" : key_env;
    if (const char* value = std::getenv(env_name.c_str()); value != nullptr) {
        config.upstream_key = value;
    } else if (!key_env.empty()) {
        examples::flags::usage_failure(flags, "--upstream-key-env: environment variable " + env_name + " is not set");
    }
    try {
        config.keys = gateway::load_keys(keys_file);
        (void)gateway::parse_upstream(config.upstream);
    } catch (const std::exception& e) {
        examples::flags::usage_failure(flags, e.what());
    }

    // Block the stop signals (and SIGPIPE) before any thread starts, so every
    // thread inherits the mask and only sigwait below receives them.
    sigset_t signals;
    sigemptyset(&signals);
    sigaddset(&signals, SIGINT);
    sigaddset(&signals, SIGTERM);
    sigaddset(&signals, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &signals, nullptr);
    sigdelset(&signals, SIGPIPE);

    std::optional<gateway::server> server;
    int bound = 0;
    try {
        server.emplace(std::move(config));
        bound = server->start();
    } catch (const std::exception& e) {
        std::fprintf(stderr, "gateway: %s\n", e.what());
        return 2;
    }
    const bool ipv6 = host.find(':') != std::string::npos;
    std::printf(ipv6 ? "listening on [%s]:%d\n" : "listening on %s:%d\n", host.c_str(), bound);
    std::fflush(stdout);

    // On SIGTERM or SIGINT: stop() drains for --drain-seconds, then cuts what is
    // left. A caller waiting in the upstream line cannot be woken early, so
    // the process does not wait for stop() beyond the drain time and a second:
    // it exits then whatever its threads do.
    int received = 0;
    sigwait(&signals, &received);
    std::promise<void> stopped;
    std::future<void> done = stopped.get_future();
    std::thread stopper([&] {
        server->stop();
        stopped.set_value();
    });
    if (done.wait_for(std::chrono::seconds(drain_seconds) + std::chrono::seconds(1)) != std::future_status::ready) {
        std::fprintf(stderr, "gateway: requests still waiting after the %lld s drain; exiting\n", static_cast<long long>(drain_seconds));
        std::fflush(stderr);
        std::_Exit(0);
    }
    stopper.join();
    return 0;
}
