// keyed under real threads: exact per-key counts, eviction racing with use,
// pinned entries kept, held permits kept, the key bound global, no lock held
// while sleeping. Bounded loops; run under TSan.

#include <ratelimit/concurrency_limiter.hpp>
#include <ratelimit/keyed.hpp>
#include <ratelimit/token_bucket.hpp>

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "support/catch.hpp"

namespace {

using namespace std::chrono_literals;
using ratelimit::keyed;
using ratelimit::keyed_options;
using ratelimit::manual_clock;
using ratelimit::rate;

constexpr int thread_count = 8;

/// Runs body(thread_index) on thread_count threads and joins them.
template <class Body>
void run_threads(Body body) {
    std::vector<std::thread> threads;
    threads.reserve(thread_count);
    for (int t = 0; t < thread_count; ++t) threads.emplace_back(body, t);
    for (std::thread& thread : threads) thread.join();
}

/// Waits (bounded) until flag is set.
bool wait_for_flag(const std::atomic<bool>& flag) {
    const auto give_up = std::chrono::steady_clock::now() + 30s;
    while (!flag.load(std::memory_order_acquire)) {
        if (std::chrono::steady_clock::now() > give_up) return false;
        std::this_thread::yield();
    }
    return true;
}

std::atomic<int> probe_violations{0};

/// A token bucket that notices being used after destruction or destroyed in use.
template <class Clock>
class probe {
public:
    using clock_type = Clock;
    using duration = typename Clock::duration;
    using time_point = typename Clock::time_point;

    probe(rate r, std::int64_t capacity, Clock c = {}) : bucket_(r, capacity, std::move(c)) {}
    probe(const probe&) = delete;
    probe& operator=(const probe&) = delete;
    ~probe() {
        if (users_.load() != 0 || magic_.load() != alive) probe_violations.fetch_add(1);
        magic_.store(dead);
    }

    bool try_acquire(std::int64_t n = 1) { return use([&] { return bucket_.try_acquire(n); }); }
    bool try_acquire_for(std::int64_t n, duration d) { return use([&] { return bucket_.try_acquire_for(n, d); }); }
    bool try_acquire_until(std::int64_t n, time_point t) { return use([&] { return bucket_.try_acquire_until(n, t); }); }
    duration acquire(std::int64_t n = 1) { return use([&] { return bucket_.acquire(n); }); }
    void refund(std::int64_t n) {
        use([&] {
            bucket_.refund(n);
            return 0;
        });
    }
    std::int64_t available() { return use([&] { return bucket_.available(); }); }
    std::int64_t capacity() const { return bucket_.capacity(); }

private:
    static constexpr std::uint32_t alive = 0xA11CE;
    static constexpr std::uint32_t dead = 0xDEAD;

    template <class F>
    auto use(F f) {
        if (magic_.load() != alive) probe_violations.fetch_add(1);
        users_.fetch_add(1);
        auto result = f();
        users_.fetch_sub(1);
        return result;
    }

    ratelimit::token_bucket<Clock> bucket_;
    std::atomic<std::uint32_t> magic_{alive};
    std::atomic<int> users_{0};
};

std::atomic<int> live_semaphores{0};

/// A concurrency_limiter of one permit that counts how many of its kind exist.
class counted_semaphore : public ratelimit::concurrency_limiter<manual_clock> {
public:
    explicit counted_semaphore(manual_clock c) : concurrency_limiter(1, std::move(c)) { live_semaphores.fetch_add(1); }
    counted_semaphore(const counted_semaphore&) = delete;
    counted_semaphore& operator=(const counted_semaphore&) = delete;
    ~counted_semaphore() { live_semaphores.fetch_sub(1); }
};

/// A point where one thread stops until the test lets it go on.
struct trap {
    std::atomic<bool> reached{false};
    std::atomic<bool> released{false};
    void stop_here() {
        reached.store(true, std::memory_order_release);
        (void)wait_for_flag(released);
    }
};

/// A concurrency_limiter of one permit whose is_idle() (asked by keyed only
/// when it looks for an entry to evict) stops at `t`, when given one.
class trapped_semaphore : public ratelimit::concurrency_limiter<manual_clock> {
public:
    trapped_semaphore(manual_clock c, trap* t) : concurrency_limiter(1, std::move(c)), trap_(t) {}
    trapped_semaphore(const trapped_semaphore&) = delete;
    trapped_semaphore& operator=(const trapped_semaphore&) = delete;
    ~trapped_semaphore() = default;
    [[nodiscard]] bool is_idle() const {
        if (trap_ != nullptr) trap_->stop_here();
        return in_use() == 0;
    }

private:
    trap* trap_;
};

/// Whether keys p and q fall in the same one of 2 shards, seen from outside:
/// an insertion's at-rest sweep examines only its own shard.
bool same_of_two_shards(const std::string& p, const std::string& q) {
    manual_clock clock;
    using semaphore = ratelimit::concurrency_limiter<manual_clock>;
    keyed<semaphore> limits([clock] { return semaphore(1, clock); },
                            keyed_options{.max_keys = 10, .shards = 2, .sweep_per_insert = 1});
    (void)limits.try_acquire(p);
    limits.with(p, [](semaphore& s) { s.release(1); });  // p at rest, the newest of its shard
    (void)limits.try_acquire(q);                           // sweeps one entry of q's shard
    return !limits.contains(p);
}

}  // namespace

TEST_CASE("with the clock standing still, each key grants exactly its capacity across 8 threads") {
    manual_clock clock;
    constexpr int keys = 100;
    constexpr std::int64_t capacity = 50;
    using bucket = ratelimit::token_bucket<manual_clock>;
    keyed<bucket> limits([clock] { return bucket(rate::per_second(1), capacity, clock); },
                         keyed_options{.max_keys = 1000, .shards = 4});
    std::array<std::atomic<std::int64_t>, keys> granted{};
    run_threads([&](int t) {
        for (int round = 0; round < 80; ++round) {
            for (int k = 0; k < keys; ++k) {
                const int key = (k + t * 13) % keys;
                if (limits.try_acquire("key-" + std::to_string(key))) granted[key].fetch_add(1);
            }
        }
    });
    // 8 threads x 80 rounds = 640 attempts per key, capacity 50: exactly 50 granted.
    for (int k = 0; k < keys; ++k) CHECK(granted[k].load() == capacity);
    CHECK(limits.size() == keys);
}

TEST_CASE("eviction racing with use never destroys an entry in use (real clock)") {
    probe_violations.store(0);
    using limiter = probe<std::chrono::steady_clock>;
    constexpr std::size_t max_keys = 8;
    {
        keyed<limiter> limits([] { return limiter(rate::per_second(100000), 3); },
                              keyed_options{.max_keys = max_keys, .shards = 2, .sweep_per_insert = 2});
        std::atomic<std::int64_t> grants{0};
        std::atomic<int> overfull{0};  // Catch2 v2 assertions are not thread-safe: count instead
        std::atomic<int> oversize{0};
        std::atomic<int> refused{0};
        run_threads([&](int t) {
            std::uint32_t x = 2654435761U * static_cast<std::uint32_t>(t + 1);
            for (int i = 0; i < 4000; ++i) {
                x = x * 1664525U + 1013904223U;
                const std::string key = "k" + std::to_string((x >> 8) % 64);
                switch ((x >> 20) % 8) {
                    case 0:
                    case 1:
                    case 2:
                        if (limits.try_acquire(key)) grants.fetch_add(1);
                        break;
                    case 3:
                        if (limits.try_acquire_for(key, 1, 50us)) grants.fetch_add(1);
                        break;
                    case 4:
                        // A new key may find every other entry in use at the moment it looks: refused.
                        try {
                            (void)limits.acquire(key, 2);  // at most 20 us of sleep
                            grants.fetch_add(2);
                        } catch (const ratelimit::keyed_full&) {
                            refused.fetch_add(1);
                        }
                        break;
                    case 5:
                        limits.refund(key, 1);
                        break;
                    case 6: {
                        try {
                            const std::int64_t left = limits.with(key, [](limiter& l) { return l.available(); });
                            if (left > 3) overfull.fetch_add(1);
                        } catch (const ratelimit::keyed_full&) {
                            refused.fetch_add(1);
                        }
                        break;
                    }
                    default:
                        if (i % 64 == 0) (void)limits.sweep();
                        (void)limits.contains(key);
                        break;
                }
                if (limits.size() > max_keys) oversize.fetch_add(1);
            }
        });
        CHECK(grants.load() > 0);
        CHECK(overfull.load() == 0);
        CHECK(oversize.load() == 0);  // the bound holds at every instant, calls in progress or not
        CHECK(limits.size() <= max_keys);
        WARN(refused.load() << " blocking calls refused for want of room");
    }
    CHECK(probe_violations.load() == 0);
}

TEST_CASE("an entry in use is neither evicted nor dropped, even when least recently used") {
    manual_clock clock;
    using bucket = ratelimit::token_bucket<manual_clock>;
    keyed<bucket> limits([clock] { return bucket(rate::per_second(10), 5, clock); },
                         keyed_options{.max_keys = 4, .shards = 1, .sweep_per_insert = 4});
    std::atomic<bool> pinned{false};
    std::atomic<bool> pressed{false};
    bool still_drained = false;
    bool still_present = false;
    bool same_object = false;
    bool waited = true;
    bool drained = false;
    std::atomic<int> refused{0};

    std::thread holder([&] {
        limits.with("pinned", [&](bucket& b) {
            drained = b.try_acquire(5);
            pinned.store(true, std::memory_order_release);
            waited = wait_for_flag(pressed);
            still_drained = b.available() == 0;
            still_present = limits.contains("pinned");
            same_object = limits.with("pinned", [&](bucket& again) { return &again == &b; });
        });
    });
    std::thread presser([&] {
        if (!wait_for_flag(pinned)) return;
        // 100 new drained keys into a shard of 4: every insertion evicts the least recently used.
        for (int i = 0; i < 100; ++i) {
            if (!limits.try_acquire("other-" + std::to_string(i), 5)) refused.fetch_add(1);
        }
        pressed.store(true, std::memory_order_release);
    });
    holder.join();
    presser.join();
    CHECK(drained);
    CHECK(refused.load() == 0);
    CHECK(waited);
    CHECK(still_drained);
    CHECK(still_present);
    CHECK(same_object);
    CHECK(limits.size() == 4);
}

TEST_CASE("8 threads over 3 times max_keys keys: the total stays within max_keys and no held permit is lost") {
    live_semaphores.store(0);
    manual_clock clock;  // concurrency limiters read no time on these calls
    constexpr std::size_t max_keys = 16;
    constexpr int keys = 48;
    constexpr std::size_t holds_per_thread = 3;  // 8 threads x 3 long holds = 24 busy > 16: the table fills
    std::array<std::atomic<int>, keys> holders{};
    std::atomic<int> double_grants{0};  // a second holder of a one-permit key: its held permit was lost
    std::atomic<int> lost_permits{0};   // a holder found its key's limiter without its permit
    std::atomic<int> oversize{0};
    std::atomic<int> too_many_limiters{0};
    std::atomic<std::int64_t> grants{0};
    std::atomic<std::int64_t> refusals{0};
    {
        keyed<counted_semaphore> limits([clock] { return counted_semaphore(clock); },
                                        keyed_options{.max_keys = max_keys, .shards = 4, .sweep_per_insert = 1});
        const auto name = [](int key) { return "key-" + std::to_string(key); };
        // Gives back a permit this thread holds, checking it is still there.
        const auto give_back = [&](int key) {
            holders[key].fetch_sub(1);  // before the release, so the next holder never sees two
            try {
                limits.with(name(key), [&](counted_semaphore& s) {
                    if (s.in_use() != 1) lost_permits.fetch_add(1);
                    s.release(1);
                });
            } catch (const std::logic_error&) {  // released more than is in use: a fresh limiter
                lost_permits.fetch_add(1);
            } catch (const ratelimit::keyed_full&) {  // the held key was gone and no room to remake it
                lost_permits.fetch_add(1);
            }
        };
        std::atomic<int> arrived{0};
        run_threads([&](int t) {
            // All start together, so their holds overlap.
            arrived.fetch_add(1);
            while (arrived.load() < thread_count) std::this_thread::yield();
            std::vector<int> held;  // long holds, oldest first
            std::uint32_t x = 2654435761U * static_cast<std::uint32_t>(t + 1);
            const auto take = [&](int key) {
                if (!limits.try_acquire(name(key))) {
                    refusals.fetch_add(1);  // held by another thread, or no room for a new key
                    return false;
                }
                grants.fetch_add(1);
                if (holders[key].fetch_add(1) != 0) double_grants.fetch_add(1);
                return true;
            };
            for (int i = 0; i < 20000; ++i) {  // long enough to span several time slices on a small machine
                x = x * 1664525U + 1013904223U;
                const int key = static_cast<int>((x >> 8) % keys);
                if (held.size() < holds_per_thread) {
                    if (take(key)) held.push_back(key);
                } else if (((x >> 28) & 15U) == 0) {
                    give_back(held.front());  // a long hold ends after about 16 steps
                    held.erase(held.begin());
                } else if (take(key)) {
                    give_back(key);  // a short hold: mostly new keys pressing on the table
                }
                if (limits.size() > max_keys) oversize.fetch_add(1);
                // Each thread may have one limiter made and not yet linked (or refused).
                if (live_semaphores.load() > static_cast<int>(max_keys) + thread_count) too_many_limiters.fetch_add(1);
            }
            for (const int key : held) give_back(key);
        });
        CHECK(grants.load() > 0);
        CHECK(double_grants.load() == 0);
        CHECK(lost_permits.load() == 0);
        CHECK(oversize.load() == 0);
        CHECK(too_many_limiters.load() == 0);
        CHECK(limits.size() <= max_keys);
        CHECK(live_semaphores.load() == static_cast<int>(limits.size()));  // every limiter made is in the table
        WARN(grants.load() << " grants, " << refusals.load() << " refusals");
    }
    CHECK(live_semaphores.load() == 0);
}

TEST_CASE("an entry at rest but in use is not dropped by sweep") {
    manual_clock clock;
    using bucket = ratelimit::token_bucket<manual_clock>;
    keyed<bucket> limits([clock] { return bucket(rate::per_second(10), 5, clock); });
    std::atomic<bool> pinned{false};
    std::atomic<bool> swept{false};
    std::size_t dropped_while_pinned = 99;
    std::thread holder([&] {
        limits.with("full", [&](bucket&) {
            pinned.store(true, std::memory_order_release);
            (void)wait_for_flag(swept);
        });
    });
    const bool holding = wait_for_flag(pinned);
    dropped_while_pinned = limits.sweep();
    const bool present = limits.contains("full");
    swept.store(true, std::memory_order_release);
    holder.join();
    CHECK(holding);
    CHECK(dropped_while_pinned == 0);
    CHECK(present);
    CHECK(limits.sweep() == 1);  // once released, the full bucket goes
    CHECK(limits.size() == 0);
}

TEST_CASE("acquire sleeps without holding its shard's lock") {
    using bucket = ratelimit::token_bucket<>;
    keyed<bucket> limits([] { return bucket(rate::every(1s), 1); }, keyed_options{.max_keys = 1000, .shards = 1});
    REQUIRE(limits.try_acquire("slow"));
    std::atomic<bool> started{false};
    std::atomic<bool> slept{false};
    std::thread sleeper([&] {
        started.store(true, std::memory_order_release);
        (void)limits.acquire("slow");  // about 1 s
        slept.store(true, std::memory_order_release);
    });
    const bool running = wait_for_flag(started);
    std::this_thread::sleep_for(20ms);
    // Same shard, other keys: these finish while the sleeper still sleeps.
    int granted = 0;
    for (int i = 0; i < 1000; ++i) granted += limits.try_acquire("fast-" + std::to_string(i % 50)) ? 1 : 0;
    const bool done_before_sleeper = !slept.load(std::memory_order_acquire);
    sleeper.join();
    CHECK(running);
    CHECK(granted == 50);  // each fast key's single permit
    CHECK(done_before_sleeper);
    CHECK(slept.load());
}

TEST_CASE("a key inserted by another thread while a new key's search has left its shard is used, and the room is given back") {
    // Forced interleaving: thread A inserts `key` into a shard whose only entry
    // is busy, lets that shard go and stops inside the other shard's is_idle();
    // meanwhile this thread frees the busy entry and inserts `key` itself.
    const std::string held = "k0";
    std::string key;   // in held's shard
    std::string gate;  // in the other shard
    for (int i = 1; i < 64 && (key.empty() || gate.empty()); ++i) {
        const std::string candidate = "k" + std::to_string(i);
        std::string& slot = same_of_two_shards(held, candidate) ? key : gate;
        if (slot.empty()) slot = candidate;
    }
    REQUIRE_FALSE(key.empty());
    REQUIRE_FALSE(gate.empty());

    manual_clock clock;
    trap stop;
    keyed<trapped_semaphore> limits(
        [clock, &stop, gate](const std::string& k) { return trapped_semaphore(clock, k == gate ? &stop : nullptr); },
        keyed_options{.max_keys = 2, .shards = 2, .sweep_per_insert = 0});
    REQUIRE(limits.try_acquire(held));  // busy: 1 of 1 out
    REQUIRE(limits.try_acquire(gate));
    limits.with(gate, [](trapped_semaphore& s) { s.release(1); });  // idle; the table is full: 2 of 2
    REQUIRE(limits.size() == 2);

    std::atomic<bool> a_done{false};
    bool a_granted = true;
    std::thread a([&] {
        a_granted = limits.try_acquire(key);  // its shard holds only `held`, busy: it searches gate's shard
        a_done.store(true, std::memory_order_release);
    });
    const auto give_up = std::chrono::steady_clock::now() + 30s;
    while (!stop.reached.load(std::memory_order_acquire) && !a_done.load(std::memory_order_acquire) &&
           std::chrono::steady_clock::now() < give_up) {
        std::this_thread::yield();
    }
    const bool a_stopped_in_search = stop.reached.load(std::memory_order_acquire);
    bool b_granted = false;
    if (a_stopped_in_search) {
        limits.with(held, [](trapped_semaphore& s) { s.release(1); });  // held is idle now
        b_granted = limits.try_acquire(key);  // evicts held in its own shard and takes key's only permit
    }
    stop.released.store(true, std::memory_order_release);
    a.join();

    CHECK(a_stopped_in_search);
    CHECK(b_granted);
    CHECK_FALSE(a_granted);  // A found this thread's entry for key: one limiter, its 1 permit taken
    CHECK(limits.size() == 1);  // key alone: the room A made by evicting gate went back to the count
    CHECK(limits.contains(key));
    CHECK_FALSE(limits.contains(held));
    CHECK_FALSE(limits.contains(gate));
    CHECK(limits.with(key, [](trapped_semaphore& s) { return s.in_use(); }) == 1);
    CHECK(limits.try_acquire("new 1"));  // the table has room for exactly one more key
    CHECK(limits.size() == 2);
}
