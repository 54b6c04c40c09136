// Replaces the global operator new and delete with counting versions over
// malloc/free (see alloc_counter.hpp). The array and nothrow forms of the
// standard library forward to these, so every C++ allocation is counted.
#include "alloc_counter.hpp"

#include <malloc.h>

#include <cstddef>
#include <cstdlib>
#include <new>

namespace {

thread_local std::uint64_t allocation_count = 0;
thread_local std::int64_t heap_bytes = 0;

void* counted(void* p) {
    if (p == nullptr) throw std::bad_alloc();
    ++allocation_count;
    heap_bytes += static_cast<std::int64_t>(malloc_usable_size(p));
    return p;
}

void uncounted(void* p) noexcept {
    if (p == nullptr) return;
    heap_bytes -= static_cast<std::int64_t>(malloc_usable_size(p));
    std::free(p);
}

void* aligned(std::size_t size, std::align_val_t alignment) {
    const auto align = static_cast<std::size_t>(alignment);
    const std::size_t rounded = (size + align - 1) / align * align;
    return counted(std::aligned_alloc(align, rounded == 0 ? align : rounded));
}

}  // namespace

namespace ratelimit_bench {
std::uint64_t allocations() noexcept { return allocation_count; }
std::int64_t live_bytes() noexcept { return heap_bytes; }
}  // namespace ratelimit_bench

void* operator new(std::size_t size) { return counted(std::malloc(size == 0 ? 1 : size)); }
void* operator new[](std::size_t size) { return counted(std::malloc(size == 0 ? 1 : size)); }
void* operator new(std::size_t size, std::align_val_t alignment) { return aligned(size, alignment); }
void* operator new[](std::size_t size, std::align_val_t alignment) { return aligned(size, alignment); }
void operator delete(void* p) noexcept { uncounted(p); }
void operator delete[](void* p) noexcept { uncounted(p); }
void operator delete(void* p, std::size_t) noexcept { uncounted(p); }
void operator delete[](void* p, std::size_t) noexcept { uncounted(p); }
void operator delete(void* p, std::align_val_t) noexcept { uncounted(p); }
void operator delete[](void* p, std::align_val_t) noexcept { uncounted(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { uncounted(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { uncounted(p); }
