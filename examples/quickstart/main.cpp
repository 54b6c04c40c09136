// Quick start: pace 20 calls through a bucket of 5 permits refilled 10 per second.
#include <ratelimit/ratelimit.hpp>

#include <chrono>
#include <cstdio>

int main() {
    using namespace std::chrono;
    ratelimit::token_bucket<> bucket(ratelimit::rate::per_second(10), 5);
    const auto start = steady_clock::now();
    for (int call = 1; call <= 20; ++call) {
        const auto waited = bucket.acquire(1);  // blocks until a permit is free
        const auto at = duration_cast<milliseconds>(steady_clock::now() - start).count();
        std::printf("call %2d at %5lld ms (waited %4lld ms)\n", call, static_cast<long long>(at),
                    static_cast<long long>(duration_cast<milliseconds>(waited).count()));
    }
    std::printf("the first 5 calls used the burst; the rest came 100 ms apart\n");
}
