#pragma once
// scripted_clock: a manual clock that runs a hook inside a chosen now() read,
// to force an interleaving (another caller acting between a limiter's clock
// read and its state load) without threads or timing windows; and a read
// budget that turns a livelock into a test failure instead of a hang.
// Single-threaded: the hook runs on the reading thread.

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <utility>

#include <ratelimit/clock.hpp>

namespace ratelimit_test {

class scripted_clock {
public:
    using rep = std::int64_t;
    using period = std::nano;
    using duration = std::chrono::nanoseconds;
    using time_point = std::chrono::time_point<scripted_clock, duration>;
    static constexpr bool is_steady = false;

    /// Thrown by now() once more than the read budget was read: a caller loops.
    struct livelock : std::runtime_error {
        livelock() : std::runtime_error("scripted_clock: read budget exhausted (a caller re-reads the clock forever)") {}
    };

    scripted_clock() : state_(std::make_shared<state>()) {}

    /// The time; runs the pending hook (once) after taking the value it returns.
    [[nodiscard]] time_point now() const {
        state& s = *state_;
        if (++s.reads > s.budget) throw livelock();
        const time_point t{duration{s.now_ns}};
        if (s.hook) std::exchange(s.hook, nullptr)();
        if (s.after_read) s.now_ns = *std::exchange(s.after_read, std::nullopt);
        return t;
    }
    void set(time_point t) noexcept { state_->now_ns = t.time_since_epoch().count(); }
    void advance(duration d) noexcept { state_->now_ns += d.count(); }
    void sleep_until(time_point t) noexcept {
        if (t.time_since_epoch().count() > state_->now_ns) state_->now_ns = t.time_since_epoch().count();
    }
    /// Runs `hook` inside the next now() read, after that read took its value.
    void on_next_read(std::function<void()> hook) { state_->hook = std::move(hook); }
    /// The next now() returns the current time, and every later read returns `t`.
    void then_set(time_point t) { state_->after_read = t.time_since_epoch().count(); }
    /// At most `reads` more reads before now() throws livelock.
    void allow_reads(std::int64_t reads) noexcept { state_->budget = state_->reads + reads; }
    [[nodiscard]] std::int64_t reads() const noexcept { return state_->reads; }

private:
    struct state {
        rep now_ns = 0;
        std::function<void()> hook;
        std::optional<rep> after_read;
        std::int64_t reads = 0;
        std::int64_t budget = INT64_MAX;
    };
    std::shared_ptr<state> state_;
};

}  // namespace ratelimit_test
