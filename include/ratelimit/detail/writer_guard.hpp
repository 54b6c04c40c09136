#pragma once
// The writers-only lock the lock-free limiters take for their rare
// reconfigurations (a new rate or capacity, moving the tick origin).

#include <atomic>

namespace ratelimit::detail {

/// Holds `flag` for its lifetime: a one-byte lock for rare writers. Waiting
/// writers block in atomic wait rather than spin; readers never take it.
class writer_guard {
public:
    explicit writer_guard(std::atomic_flag& flag) noexcept : flag_(flag) {
        while (flag_.test_and_set(std::memory_order_acquire)) flag_.wait(true, std::memory_order_relaxed);
    }
    ~writer_guard() {
        flag_.clear(std::memory_order_release);
        flag_.notify_one();
    }
    writer_guard(const writer_guard&) = delete;
    writer_guard& operator=(const writer_guard&) = delete;

private:
    std::atomic_flag& flag_;
};

}  // namespace ratelimit::detail
