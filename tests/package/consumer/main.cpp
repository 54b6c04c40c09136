// A consumer of the installed or vendored library: 3 permits from a bucket of 3.
#include <ratelimit/ratelimit.hpp>

int main() {
    ratelimit::token_bucket<> bucket(ratelimit::rate::per_second(1), 3);
    const bool all_three = bucket.try_acquire(3);
    const bool a_fourth = bucket.try_acquire(1);
    return all_three && !a_fourth ? 0 : 1;
}
