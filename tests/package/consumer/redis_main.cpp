// A consumer of ratelimit::redis: compiles and links against hiredis through
// the package; with no server listening, fail_open grants and fail_closed refuses.
#include <ratelimit/redis.hpp>

int main() {
    using namespace std::chrono_literals;
    ratelimit::redis::connection nowhere("127.0.0.1", 1, {50ms, 50ms, 1});
    ratelimit::redis::options open;
    open.policy = ratelimit::redis::on_error::fail_open;
    ratelimit::redis::token_bucket<> granted(nowhere, "consumer", ratelimit::rate::per_second(1), 3, open);
    ratelimit::redis::token_bucket<> refused(nowhere, "consumer", ratelimit::rate::per_second(1), 3);
    return granted.try_acquire() && !refused.try_acquire() ? 0 : 1;
}
