#pragma once
// Allocation counting for the benchmarks: this binary replaces the global
// operator new and delete (alloc_counter.cpp) so each benchmark can report the
// allocations its loop made, and setup code can measure live heap bytes.
// The counters are per thread, so the replaced operators cost a TLS increment
// and nothing is shared between benchmark threads.

#include <cstdint>

namespace ratelimit_bench {

/// operator new calls made by the calling thread so far.
[[nodiscard]] std::uint64_t allocations() noexcept;

/// Heap bytes (malloc_usable_size) allocated minus freed by the calling thread so far.
[[nodiscard]] std::int64_t live_bytes() noexcept;

}  // namespace ratelimit_bench
