// mock_upstream: an OpenAI-compatible mock LLM server with provider-style rate limits.
// Parses the flags, starts the server, prints `listening on HOST:PORT`, and stops
// cleanly on SIGINT or SIGTERM. The server itself lives in mock_upstream.hpp.
#include "mock_upstream.hpp"

#include <signal.h>

#include <cstdio>
#include <exception>
#include <string>
#include <vector>

int main(int argc, char** argv) {
    std::optional<mock_upstream::config> config;
    try {
        config = mock_upstream::parse_flags(std::vector<std::string>(argv + 1, argv + argc));
    } catch (const std::exception& e) {
        std::fprintf(stderr, "mock_upstream: %s\n", e.what());
        return 2;
    }
    if (!config) {
        std::fputs(mock_upstream::usage(), stdout);
        return 0;
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

    mock_upstream::server server(*config);
    int port = 0;
    try {
        port = server.start();
    } catch (const std::exception& e) {
        std::fprintf(stderr, "mock_upstream: %s\n", e.what());
        return 1;
    }
    const bool ipv6 = config->host.find(':') != std::string::npos;
    std::printf(ipv6 ? "listening on [%s]:%d\n" : "listening on %s:%d\n", config->host.c_str(), port);
    std::fflush(stdout);

    int received = 0;
    sigwait(&signals, &received);
    server.stop();
    return 0;
}
