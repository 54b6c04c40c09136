#pragma once
// An invariant check for the fuzzers that survives NDEBUG: print and abort,
// which libFuzzer reports as a crash with the input saved.

#include <cstdio>
#include <cstdlib>

namespace ratelimit_fuzz {

inline void require(bool holds, const char* invariant) {
    if (holds) return;
    std::fprintf(stderr, "fuzz invariant violated: %s\n", invariant);
    std::abort();
}

}  // namespace ratelimit_fuzz
