#pragma once
// How the conformance suite (tests/conformance_test.cpp) builds each limiter.
//
// Specialize ratelimit_test::fixture<L> in tests/support/fixtures/<limiter>.hpp:
//
//   template <> struct fixture<ratelimit::token_bucket<ratelimit::manual_clock>> {
//       using limiter_type = ratelimit::token_bucket<ratelimit::manual_clock>;
//       // A fresh limiter grants exactly `burst` single permits at one instant, then refuses.
//       static constexpr std::int64_t burst = 5;
//       // The largest n one call can ever be granted; max_n + 1 never can.
//       static constexpr std::int64_t max_n = 5;
//       // A fresh limiter on `clock` (whose full burst is available now).
//       static std::unique_ptr<limiter_type> make(ratelimit::manual_clock clock);
//       // Brings `limiter` back to fresh: advance the clock, or release what was taken.
//       static void recover(limiter_type& limiter, ratelimit::manual_clock& clock);
//   };
//
// The suite needs one permit's recovery to take far longer than 1 ns.

#include <cstdint>
#include <memory>

#include <ratelimit/clock.hpp>

namespace ratelimit_test {

template <class L>
struct fixture;

}  // namespace ratelimit_test
