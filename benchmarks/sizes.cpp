// An empty clock costs a limiter no space: every limiter holds its clock as a
// [[no_unique_address]] member, so L<steady_clock> is at least
// sizeof(manual_clock) smaller than L<manual_clock> (whose clock is a
// shared_ptr handle). Checked at compile time, and printed as a table.
#include <ratelimit/ratelimit.hpp>

#include <chrono>
#include <cstddef>
#include <cstdio>

namespace {

using steady = std::chrono::steady_clock;
using manual = ratelimit::manual_clock;

template <template <class> class L>
constexpr bool clock_is_free = sizeof(L<steady>) + sizeof(manual) <= sizeof(L<manual>);

template <class Clock>
using two_buckets = ratelimit::all_of_limiter<ratelimit::token_bucket<Clock>, ratelimit::token_bucket<Clock>>;

static_assert(std::is_empty_v<steady>);
static_assert(clock_is_free<ratelimit::token_bucket>);
static_assert(clock_is_free<ratelimit::dual_bucket>);
static_assert(clock_is_free<ratelimit::leaky_bucket>);
static_assert(clock_is_free<ratelimit::fixed_window>);
static_assert(clock_is_free<ratelimit::sliding_window_log>);
static_assert(clock_is_free<ratelimit::sliding_window_counter>);
static_assert(clock_is_free<ratelimit::concurrency_limiter>);
static_assert(clock_is_free<ratelimit::adaptive_limiter>);
static_assert(clock_is_free<ratelimit::header_limiter>);
static_assert(clock_is_free<two_buckets>);

template <template <class> class L>
void row(const char* name) {
    std::printf("| %s | %zu | %zu | %zu |\n", name, sizeof(L<steady>), sizeof(L<manual>),
                sizeof(L<manual>) - sizeof(L<steady>));
}

}  // namespace

int main() {
    std::printf("sizeof(manual_clock) = %zu bytes; sizeof(steady_clock) = %zu (empty)\n\n", sizeof(manual),
                sizeof(steady));
    std::printf("| limiter | sizeof(L<steady_clock>) | sizeof(L<manual_clock>) | difference |\n");
    std::printf("|---|---:|---:|---:|\n");
    row<ratelimit::token_bucket>("token_bucket");
    row<ratelimit::dual_bucket>("dual_bucket (3 clocks)");
    row<ratelimit::leaky_bucket>("leaky_bucket");
    row<ratelimit::fixed_window>("fixed_window");
    row<ratelimit::sliding_window_log>("sliding_window_log (+ heap log)");
    row<ratelimit::sliding_window_counter>("sliding_window_counter");
    row<ratelimit::concurrency_limiter>("concurrency_limiter");
    row<ratelimit::adaptive_limiter>("adaptive_limiter (2 clocks)");
    row<ratelimit::header_limiter>("header_limiter");
    row<two_buckets>("all_of(token_bucket, token_bucket) (refs + clock)");
    return 0;
}
