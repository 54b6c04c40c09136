// keyed: one limiter per key, bounded memory, on manual_clock.
//
// This file replaces the global operator new/delete to count allocations and
// live bytes; the counts only move inside an allocation_scope on its thread.
// ThreadSanitizer's runtime defines operator new itself (whole-archive), so
// under TSan nothing is replaced and the allocation tests only say so.

#include <ratelimit/concurrency_limiter.hpp>
#include <ratelimit/keyed.hpp>
#include <ratelimit/token_bucket.hpp>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <stdexcept>
#include <string>
#include <string_view>

#include "support/catch.hpp"

#if defined(__SANITIZE_THREAD__)
#define KEYED_TEST_COUNTS_ALLOCATIONS 0
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define KEYED_TEST_COUNTS_ALLOCATIONS 0
#endif
#endif
#ifndef KEYED_TEST_COUNTS_ALLOCATIONS
#define KEYED_TEST_COUNTS_ALLOCATIONS 1
#endif

// ---------------------------------------------------------------------------
// Counting allocator: every block carries a header with its size, so frees
// are counted exactly (live bytes), whatever form of delete is used.
namespace {

struct allocation_counts {
    std::int64_t allocations = 0;
    std::int64_t live_bytes = 0;  // allocated minus freed inside the scope
};

thread_local bool counting = false;
thread_local allocation_counts counts;

/// Whether this build counts; WARNs when it cannot.
bool counting_allocations() {
    if (KEYED_TEST_COUNTS_ALLOCATIONS == 0) WARN("allocations are not counted under ThreadSanitizer: skipped");
    return KEYED_TEST_COUNTS_ALLOCATIONS != 0;
}

#if KEYED_TEST_COUNTS_ALLOCATIONS
constexpr std::size_t header_size = alignof(std::max_align_t);  // keeps malloc's alignment

void* allocate(std::size_t size, std::size_t align) {
    const std::size_t offset = std::max(header_size, align);
    std::size_t total = size + offset;
    void* raw = nullptr;
    if (align > header_size) {
        total = (total + align - 1) / align * align;
        raw = std::aligned_alloc(align, total);
    } else {
        raw = std::malloc(total);
    }
    if (raw == nullptr) throw std::bad_alloc();
    char* user = static_cast<char*>(raw) + offset;
    std::memcpy(user - 2 * sizeof(std::size_t), &size, sizeof size);
    std::memcpy(user - sizeof(std::size_t), &offset, sizeof offset);
    if (counting) {
        ++counts.allocations;
        counts.live_bytes += static_cast<std::int64_t>(size);
    }
    return user;
}

void deallocate(void* p) noexcept {
    if (p == nullptr) return;
    char* user = static_cast<char*>(p);
    std::size_t size = 0;
    std::size_t offset = 0;
    std::memcpy(&size, user - 2 * sizeof(std::size_t), sizeof size);
    std::memcpy(&offset, user - sizeof(std::size_t), sizeof offset);
    if (counting) counts.live_bytes -= static_cast<std::int64_t>(size);
    std::free(user - offset);
}
#endif

/// Counts this thread's allocations from construction until stop().
class allocation_scope {
public:
    allocation_scope() noexcept {
        counts = {};
        counting = true;
    }
    allocation_scope(const allocation_scope&) = delete;
    allocation_scope& operator=(const allocation_scope&) = delete;
    ~allocation_scope() { counting = false; }
    /// Stops counting (Catch2's assertions allocate) and returns the counts.
    allocation_counts stop() noexcept {
        counting = false;
        return counts;
    }
};

}  // namespace

#if KEYED_TEST_COUNTS_ALLOCATIONS
// The whole replaceable set, so no runtime's definitions are needed beside these.
void* operator new(std::size_t size) { return allocate(size, header_size); }
void* operator new[](std::size_t size) { return allocate(size, header_size); }
void* operator new(std::size_t size, std::align_val_t align) { return allocate(size, static_cast<std::size_t>(align)); }
void* operator new[](std::size_t size, std::align_val_t align) { return allocate(size, static_cast<std::size_t>(align)); }
void* operator new(std::size_t size, const std::nothrow_t&) noexcept {
    try {
        return allocate(size, header_size);
    } catch (...) {
        return nullptr;
    }
}
void* operator new[](std::size_t size, const std::nothrow_t& tag) noexcept { return operator new(size, tag); }
void* operator new(std::size_t size, std::align_val_t align, const std::nothrow_t&) noexcept {
    try {
        return allocate(size, static_cast<std::size_t>(align));
    } catch (...) {
        return nullptr;
    }
}
void* operator new[](std::size_t size, std::align_val_t align, const std::nothrow_t& tag) noexcept {
    return operator new(size, align, tag);
}
void operator delete(void* p) noexcept { deallocate(p); }
void operator delete[](void* p) noexcept { deallocate(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { deallocate(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { deallocate(p); }
void operator delete(void* p, std::size_t) noexcept { deallocate(p); }
void operator delete[](void* p, std::size_t) noexcept { deallocate(p); }
void operator delete(void* p, std::align_val_t) noexcept { deallocate(p); }
void operator delete[](void* p, std::align_val_t) noexcept { deallocate(p); }
void operator delete(void* p, std::align_val_t, const std::nothrow_t&) noexcept { deallocate(p); }
void operator delete[](void* p, std::align_val_t, const std::nothrow_t&) noexcept { deallocate(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { deallocate(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { deallocate(p); }
#endif

// ---------------------------------------------------------------------------
namespace {

using namespace std::chrono_literals;
using ratelimit::keyed;
using ratelimit::keyed_options;
using ratelimit::manual_clock;
using ratelimit::rate;
using bucket = ratelimit::token_bucket<manual_clock>;
using semaphore = ratelimit::concurrency_limiter<manual_clock>;

/// Buckets of 5 permits refilled one every 100 ms, all on `clock`.
auto five_per_500ms(const manual_clock& clock) {
    return [clock] { return bucket(rate::per_second(10), 5, clock); };
}

/// Semaphores of one permit each: a key is busy while its permit is held.
auto one_at_a_time(const manual_clock& clock) {
    return [clock] { return semaphore(1, clock); };
}

/// Gives back n permits of key's semaphore, as a caller of try_acquire(key) does.
void release(keyed<semaphore>& limits, std::string_view key, std::int64_t n = 1) {
    limits.with(key, [n](semaphore& s) { s.release(n); });
}

/// One shard, so LRU order and sweeps are exact.
keyed_options one_shard(std::size_t max_keys, std::size_t sweep_per_insert = 2) {
    return keyed_options{.max_keys = max_keys, .shards = 1, .sweep_per_insert = sweep_per_insert};
}

}  // namespace

TEST_CASE("each key has its own limiter: draining one leaves the others full") {
    manual_clock clock;
    keyed<bucket> limits(five_per_500ms(clock));
    REQUIRE(limits.try_acquire("alice", 5));
    REQUIRE_FALSE(limits.try_acquire("alice"));
    REQUIRE(limits.try_acquire("bob", 5));
    REQUIRE(limits.try_acquire("carol", 5));
    REQUIRE(limits.size() == 3);
}

TEST_CASE("a key already present is looked up by string_view without allocating") {
    manual_clock clock;
    keyed<bucket> limits(five_per_500ms(clock));
    // Longer than the small-string buffer: building a std::string from it would allocate.
    const std::string stored = "user-with-a-rather-long-api-key-0123456789";
    REQUIRE(limits.try_acquire(stored));
    if (!counting_allocations()) return;
    const std::string_view view = stored;
    const char* pointer = stored.c_str();

    allocation_scope scope;
    const bool second = limits.try_acquire(view);
    const bool third = limits.try_acquire(pointer);
    const bool present = limits.contains(view);
    const std::int64_t left = limits.with(view, [](bucket& b) { return b.available(); });
    const bool refill_after = limits.try_acquire_for(view, 1, 1s);
    limits.refund(view, 1);
    const allocation_counts counted = scope.stop();

    CHECK(second);
    CHECK(third);
    CHECK(present);
    CHECK(left == 5 - 3);
    CHECK(refill_after);
    CHECK(counted.allocations == 0);
    CHECK(counted.live_bytes == 0);
}

TEST_CASE("a new key costs one allocation when its string fits the small-string buffer") {
    manual_clock clock;
    keyed<bucket> limits(five_per_500ms(clock), one_shard(100));
    REQUIRE(limits.try_acquire("first"));  // allocates the shard's bucket array
    if (!counting_allocations()) return;

    allocation_scope scope;
    const bool granted = limits.try_acquire("second");
    const allocation_counts counted = scope.stop();

    CHECK(granted);
    CHECK(counted.allocations == 1);  // the node: key, limiter and links together
}

TEST_CASE("n == 0 succeeds at once and makes no entry; n < 0 throws and makes no entry") {
    manual_clock clock;
    keyed<bucket> limits(five_per_500ms(clock));
    CHECK(limits.try_acquire("a", 0));
    CHECK(limits.try_acquire_for("a", 0, 1s));
    CHECK(limits.try_acquire_until("a", 0, clock.now()));
    CHECK(limits.acquire("a", 0) == 0ns);
    CHECK(limits.size() == 0);
    CHECK_THROWS_AS(limits.try_acquire("a", -1), std::invalid_argument);
    CHECK_THROWS_AS(limits.try_acquire_for("a", -1, 1s), std::invalid_argument);
    CHECK_THROWS_AS(limits.try_acquire_until("a", -1, clock.now()), std::invalid_argument);
    CHECK_THROWS_AS(limits.acquire("a", -1), std::invalid_argument);
    CHECK_THROWS_AS(limits.refund("a", -1), std::invalid_argument);
    CHECK(limits.size() == 0);
}

TEST_CASE("n above the capacity never blocks: try_* false at once, acquire throws capacity_exceeded") {
    manual_clock clock;
    keyed<bucket> limits(five_per_500ms(clock));
    const auto start = clock.now();
    CHECK_FALSE(limits.try_acquire("a", 6));
    CHECK_FALSE(limits.try_acquire_for("a", 6, 1h));
    CHECK_THROWS_AS(limits.acquire("a", 6), ratelimit::capacity_exceeded);
    CHECK(clock.now() == start);
    CHECK(limits.try_acquire("a", 5));  // nothing was taken by the refused calls
}

TEST_CASE("the factory may take the key to set per-key limits") {
    manual_clock clock;
    keyed<bucket> limits([clock](const std::string& key) {
        return bucket(rate::per_second(10), static_cast<std::int64_t>(key.size()), clock);
    });
    CHECK(limits.try_acquire("abc", 3));
    CHECK_FALSE(limits.try_acquire("abc"));
    CHECK_FALSE(limits.try_acquire("abcdefg", 8));
    CHECK(limits.try_acquire("abcdefg", 7));
}

TEST_CASE("keys of another type are looked up by themselves") {
    manual_clock clock;
    keyed<bucket, int> limits(five_per_500ms(clock));
    CHECK(limits.try_acquire(42, 5));
    CHECK_FALSE(limits.try_acquire(42));
    CHECK(limits.try_acquire(43, 5));
    CHECK(limits.contains(42));
    CHECK_FALSE(limits.contains(44));
}

TEST_CASE("with runs f on the key's own limiter and returns its result") {
    manual_clock clock;
    keyed<bucket> limits(five_per_500ms(clock));
    CHECK(limits.with("a", [](bucket& b) { return b.available(); }) == 5);
    limits.with("a", [](bucket& b) { REQUIRE(b.try_acquire(2)); });
    CHECK(limits.with("a", [](bucket& b) { return b.available(); }) == 5 - 2);
    CHECK(limits.with("b", [](bucket& b) { return b.available(); }) == 5);
}

TEST_CASE("refund gives permits back to that key only") {
    manual_clock clock;
    keyed<bucket> limits(five_per_500ms(clock));
    REQUIRE(limits.try_acquire("a", 5));
    REQUIRE(limits.try_acquire("b", 5));
    limits.refund("a", 3);
    CHECK(limits.try_acquire("a", 3));
    CHECK_FALSE(limits.try_acquire("a"));
    CHECK_FALSE(limits.try_acquire("b"));
}

TEST_CASE("refund of an absent key makes no entry (a new bucket is full already)") {
    manual_clock clock;
    keyed<bucket> limits(five_per_500ms(clock));
    limits.refund("nobody", 3);
    CHECK(limits.size() == 0);
    CHECK_FALSE(limits.contains("nobody"));
}

TEST_CASE("acquire sleeps only for that key's permits") {
    manual_clock clock;
    keyed<bucket> limits(five_per_500ms(clock));
    REQUIRE(limits.try_acquire("a", 5));
    const auto start = clock.now();
    CHECK(limits.acquire("b", 1) == 0ns);
    CHECK(clock.now() == start);
    CHECK(limits.acquire("a", 2) == 200ms);  // two permits at one per 100 ms
    CHECK(clock.now() == start + 200ms);
}

TEST_CASE("try_acquire_for waits on that key's limiter and refuses at once past the deadline") {
    manual_clock clock;
    keyed<bucket> limits(five_per_500ms(clock));
    REQUIRE(limits.try_acquire("a", 5));
    const auto start = clock.now();
    CHECK_FALSE(limits.try_acquire_for("a", 1, 99ms));
    CHECK(clock.now() == start);
    CHECK(limits.try_acquire_for("b", 1, 0ms));
    CHECK(limits.try_acquire_for("a", 1, 100ms));
    CHECK(clock.now() == start + 100ms);
    CHECK_FALSE(limits.try_acquire_until("a", 1, clock.now() + 99ms));
    CHECK(limits.try_acquire_until("a", 1, clock.now() + 100ms));
    CHECK(clock.now() == start + 200ms);
}

TEST_CASE("max_keys evicts the least recently used key") {
    manual_clock clock;
    keyed<bucket> limits(five_per_500ms(clock), one_shard(3));
    // Drained buckets are not at rest, so only max_keys can remove them.
    REQUIRE(limits.try_acquire("a", 5));
    REQUIRE(limits.try_acquire("b", 5));
    REQUIRE(limits.try_acquire("c", 5));
    REQUIRE_FALSE(limits.try_acquire("a"));  // a refused call is a use too: order now b, c, a
    REQUIRE(limits.try_acquire("d", 5));
    CHECK(limits.size() == 3);
    CHECK_FALSE(limits.contains("b"));
    CHECK(limits.contains("a"));
    CHECK(limits.contains("c"));
    CHECK(limits.contains("d"));
    REQUIRE(limits.try_acquire("e", 5));  // c is now the least recently used
    CHECK_FALSE(limits.contains("c"));
    CHECK(limits.max_keys() == 3);
}

TEST_CASE("a key evicted by max_keys while not at rest starts fresh (the one lossy case)") {
    manual_clock clock;
    keyed<bucket> limits(five_per_500ms(clock), one_shard(1));
    REQUIRE(limits.try_acquire("a", 5));
    REQUIRE(limits.try_acquire("b", 1));  // evicts a, drained
    CHECK_FALSE(limits.contains("a"));
    CHECK(limits.try_acquire("a", 5));  // a new, full bucket: a's debt is forgotten
}

TEST_CASE("a key at rest is dropped at the next insertion into its shard, at no loss") {
    manual_clock clock;
    keyed<bucket> limits(five_per_500ms(clock), one_shard(100));
    REQUIRE(limits.try_acquire("a", 5));

    clock.advance(400ms);  // a holds 4 of 5: not at rest
    REQUIRE(limits.try_acquire("b", 5));
    CHECK(limits.contains("a"));
    CHECK(limits.size() == 2);

    clock.advance(100ms);  // a holds 5 of 5: at rest; b holds 1
    CHECK(limits.size() == 2);  // nothing happens until an insertion
    REQUIRE(limits.try_acquire("c", 5));
    CHECK_FALSE(limits.contains("a"));
    CHECK(limits.contains("b"));
    CHECK(limits.size() == 2);

    // The new "a" behaves as the old one would: 5 permits now, then none.
    CHECK(limits.try_acquire("a", 5));
    CHECK_FALSE(limits.try_acquire("a"));
    CHECK(limits.try_acquire_for("a", 1, 100ms));
}

TEST_CASE("the per-insertion sweep walks from most to least recently used, sweep_per_insert entries each time") {
    manual_clock clock;
    keyed<bucket> limits(five_per_500ms(clock), one_shard(100, 1));
    for (int i = 0; i < 10; ++i) {
        const std::string key = "k" + std::to_string(i);
        REQUIRE(limits.try_acquire(key, i == 5 ? 1 : 5));
    }
    REQUIRE(limits.sweep() == 0);  // nothing at rest yet; the walk starts over at k9
    clock.advance(100ms);          // k5 is full again; the others hold 1 of 5
    for (int i = 0; i < 4; ++i) REQUIRE(limits.try_acquire("n" + std::to_string(i), 5));
    CHECK(limits.contains("k5"));  // examined k9, k8, k7, k6; new keys join behind the walk
    REQUIRE(limits.try_acquire("n4", 5));
    CHECK_FALSE(limits.contains("k5"));  // the fifth insertion examined k5
    CHECK(limits.size() == 10 - 1 + 5);
}

TEST_CASE("a key at rest goes within two rounds of the walk even while the table grows") {
    manual_clock clock;
    keyed<bucket> limits(five_per_500ms(clock), one_shard(1000, 1));
    REQUIRE(limits.try_acquire("oldest", 1));
    for (int i = 0; i < 9; ++i) REQUIRE(limits.try_acquire("k" + std::to_string(i), 5));
    clock.advance(100ms);  // only "oldest" is at rest; 10 entries
    int insertions = 0;
    while (limits.contains("oldest") && insertions < 100) {
        REQUIRE(limits.try_acquire("n" + std::to_string(insertions), 5));
        ++insertions;
    }
    CHECK_FALSE(limits.contains("oldest"));
    CHECK(insertions <= 2 * 10);
}

TEST_CASE("sweep drops every key at rest and only those") {
    manual_clock clock;
    keyed<bucket> limits(five_per_500ms(clock), keyed_options{.max_keys = 100, .shards = 4, .sweep_per_insert = 0});
    REQUIRE(limits.try_acquire("a", 5));
    REQUIRE(limits.try_acquire("b", 1));
    REQUIRE(limits.try_acquire("c", 1));
    clock.advance(100ms);  // b and c are full again; a holds 1
    CHECK(limits.size() == 3);
    CHECK(limits.sweep() == 2);
    CHECK(limits.size() == 1);
    CHECK(limits.contains("a"));
    CHECK_FALSE(limits.try_acquire("a", 2));  // a kept its state
}

TEST_CASE("sweep_per_insert = 0 leaves keys at rest to sweep()") {
    manual_clock clock;
    keyed<bucket> limits(five_per_500ms(clock), one_shard(100, 0));
    REQUIRE(limits.try_acquire("a", 1));
    clock.advance(100ms);
    REQUIRE(limits.try_acquire("b", 1));
    CHECK(limits.contains("a"));
    CHECK(limits.sweep() == 1);
    CHECK_FALSE(limits.contains("a"));
}

TEST_CASE("max_keys bounds the total over all shards: a full table holds exactly max_keys keys") {
    manual_clock clock;
    keyed<bucket> limits(five_per_500ms(clock), keyed_options{.max_keys = 10, .shards = 4});
    for (std::size_t i = 0; i < 1000; ++i) {
        REQUIRE(limits.try_acquire("key" + std::to_string(i), 5));
        REQUIRE(limits.size() == std::min<std::size_t>(i + 1, 10));
    }
    CHECK(limits.max_keys() == 10);

    keyed<bucket> tiny(five_per_500ms(clock), keyed_options{.max_keys = 2, .shards = 16});
    for (int i = 0; i < 100; ++i) REQUIRE(tiny.try_acquire("key" + std::to_string(i), 5));
    CHECK(tiny.size() == 2);
}

TEST_CASE("cyclic access over exactly max_keys keys keeps every key's state, whatever the shards") {
    manual_clock clock;  // stands still: nothing refills, so a kept key stays drained
    constexpr std::size_t keys = 64;
    keyed<bucket> limits(five_per_500ms(clock), keyed_options{.max_keys = keys, .shards = 16});
    for (std::size_t k = 0; k < keys; ++k) REQUIRE(limits.try_acquire("key" + std::to_string(k), 5));
    REQUIRE(limits.size() == keys);
    // 64 keys into 16 shards never land 4 to a shard; the bound is on the total.
    int granted_again = 0;
    for (int round = 0; round < 10; ++round) {
        for (std::size_t k = 0; k < keys; ++k) granted_again += limits.try_acquire("key" + std::to_string(k)) ? 1 : 0;
    }
    CHECK(granted_again == 0);  // 10 rounds x 64 keys, each drained: not one fresh bucket
    CHECK(limits.size() == keys);
    for (std::size_t k = 0; k < keys; ++k) CHECK(limits.contains("key" + std::to_string(k)));
}

TEST_CASE("while fewer than max_keys keys are held, a new key evicts nothing") {
    manual_clock clock;
    keyed<bucket> limits(five_per_500ms(clock), keyed_options{.max_keys = 100, .shards = 16});
    for (int k = 0; k < 99; ++k) REQUIRE(limits.try_acquire("key" + std::to_string(k), 5));
    REQUIRE(limits.try_acquire("the hundredth", 5));
    CHECK(limits.size() == 100);
    for (int k = 0; k < 99; ++k) CHECK_FALSE(limits.try_acquire("key" + std::to_string(k)));  // all kept, drained
    REQUIRE(limits.try_acquire("one more", 5));  // 101 keys: now one goes
    CHECK(limits.size() == 100);
}

TEST_CASE("bad options throw invalid_argument naming the option and its value") {
    manual_clock clock;
    try {
        keyed<bucket> limits(five_per_500ms(clock), keyed_options{.max_keys = 0});
        FAIL("max_keys = 0 was accepted");
    } catch (const std::invalid_argument& e) {
        CHECK(std::string(e.what()) == "ratelimit::keyed: max_keys must be > 0, got 0");
    }
    try {
        keyed<bucket> limits(five_per_500ms(clock), keyed_options{.shards = 0});
        FAIL("shards = 0 was accepted");
    } catch (const std::invalid_argument& e) {
        CHECK(std::string(e.what()) == "ratelimit::keyed: shards must be > 0, got 0");
    }
}

TEST_CASE("a factory that throws leaves the table unchanged") {
    manual_clock clock;
    keyed<bucket> limits(
        [clock](const std::string& key) {
            if (key == "bad") throw std::runtime_error("no limits configured");
            return bucket(rate::per_second(10), 5, clock);
        },
        one_shard(1));
    REQUIRE(limits.try_acquire("a", 5));
    CHECK_THROWS_AS(limits.try_acquire("bad"), std::runtime_error);
    CHECK(limits.contains("a"));  // not evicted for an insertion that failed
    CHECK_FALSE(limits.try_acquire("a"));
    CHECK(limits.size() == 1);
}

// ---------------------------------------------------------------------------
// Keys that are not idle (permits held out or owed) are never evicted.

TEST_CASE("a key whose concurrency permit is held survives any number of new keys") {
    manual_clock clock;
    // No at-rest sweep: released keys stay until max_keys evicts them.
    keyed<semaphore> limits(one_at_a_time(clock), keyed_options{.max_keys = 4, .shards = 4, .sweep_per_insert = 0});
    REQUIRE(limits.try_acquire("holder"));  // holder's 1 of 1 is out
    for (int i = 0; i < 100; ++i) {
        const std::string key = "other-" + std::to_string(i);
        REQUIRE(limits.try_acquire(key));  // the table is full from the fourth key on: each evicts an idle one
        release(limits, key);
    }
    CHECK(limits.size() == 4);
    CHECK(limits.contains("holder"));
    CHECK_FALSE(limits.try_acquire("holder"));  // no second holder: 1 of 1 is still out
    CHECK_NOTHROW(release(limits, "holder"));   // the permit goes back to the limiter that gave it
    CHECK(limits.try_acquire("holder"));
}

TEST_CASE("when every key holds permits, a new key is refused: try_* false at once, acquire and with throw") {
    manual_clock clock;
    keyed<semaphore> limits(one_at_a_time(clock), keyed_options{.max_keys = 2});
    REQUIRE(limits.try_acquire("a"));
    REQUIRE(limits.try_acquire("b"));
    const auto start = clock.now();

    CHECK_THROWS_AS(limits.acquire("c"), ratelimit::keyed_full);
    CHECK_THROWS_AS(limits.with("c", [](semaphore& s) { return s.in_use(); }), ratelimit::keyed_full);
    CHECK_FALSE(limits.try_acquire("c"));
    CHECK_FALSE(limits.try_acquire_for("c", 1, 1s));
    CHECK_FALSE(limits.try_acquire_until("c", 1, start + 1s));
    CHECK(clock.now() == start);  // refused at once: no wait for room
    CHECK_FALSE(limits.contains("c"));
    CHECK(limits.size() == 2);
    CHECK_FALSE(limits.try_acquire("a"));  // keys already held are served as before
    CHECK(limits.with("b", [](semaphore& s) { return s.in_use(); }) == 1);

    release(limits, "a");  // a is idle now: the next new key may evict it
    CHECK(limits.try_acquire("c"));
    CHECK_FALSE(limits.contains("a"));
    CHECK(limits.contains("b"));
    CHECK(limits.size() == 2);
}

TEST_CASE("keyed_full says what is full") {
    manual_clock clock;
    keyed<semaphore> limits(one_at_a_time(clock), keyed_options{.max_keys = 1});
    REQUIRE(limits.try_acquire("a"));
    try {
        (void)limits.acquire("b");
        FAIL("a new key was accepted with the only key busy");
    } catch (const ratelimit::keyed_full& e) {
        CHECK(std::string(e.what()) ==
              "ratelimit::keyed: no room for a new key: all max_keys = 1 keys are in use or not idle "
              "(permits held out or owed)");
    }
}

TEST_CASE("a token bucket in debt to a reservation is not evicted until the refill covers the debt") {
    manual_clock clock;
    keyed<bucket> limits(five_per_500ms(clock), one_shard(1));
    // 5 now and 5 reserved ahead: available() = -5 until 500 ms from now (one permit per 100 ms).
    const auto ready = limits.with("a", [](bucket& b) {
        REQUIRE(b.try_acquire(5));
        return b.reserve(5).ready_at();
    });
    REQUIRE(ready == clock.now() + 500ms);
    CHECK_FALSE(limits.try_acquire("b"));  // the only key owes 5: no room
    CHECK(limits.contains("a"));

    clock.advance(499ms);  // still owes 1 (available() = -1)
    CHECK_FALSE(limits.try_acquire("b"));
    clock.advance(1ms);  // debt covered: available() = 0, idle but not at rest
    CHECK(limits.try_acquire("b"));
    CHECK_FALSE(limits.contains("a"));  // evicted: the lossy case, nothing owed to anyone
}

TEST_CASE("an idle key is evicted before the older keys that are busy") {
    manual_clock clock;
    keyed<semaphore> limits(one_at_a_time(clock), keyed_options{.max_keys = 3, .shards = 1, .sweep_per_insert = 0});
    REQUIRE(limits.try_acquire("busy-1"));
    REQUIRE(limits.try_acquire("busy-2"));
    REQUIRE(limits.try_acquire("idle"));
    release(limits, "idle");  // least recently used order: busy-1, busy-2, idle
    REQUIRE(limits.try_acquire("new"));
    CHECK_FALSE(limits.contains("idle"));
    CHECK(limits.contains("busy-1"));
    CHECK(limits.contains("busy-2"));
    CHECK_FALSE(limits.try_acquire("busy-1"));
    CHECK_FALSE(limits.try_acquire("busy-2"));
}

// ---------------------------------------------------------------------------
// The at-rest trait.
namespace {

struct with_member {
    bool rest = false;
    [[nodiscard]] bool is_at_rest() const { return rest; }
    [[nodiscard]] std::int64_t available() const { return 0; }  // ignored: the member wins
    [[nodiscard]] std::int64_t capacity() const { return 0; }
};
struct with_capacity {
    std::int64_t left = 0;
    [[nodiscard]] std::int64_t available() { return left; }
    [[nodiscard]] std::int64_t capacity() const { return 3; }
};
struct with_limit {
    std::int64_t left = 0;
    [[nodiscard]] std::int64_t available() const { return left; }
    [[nodiscard]] std::int64_t limit() const { return 3; }
};
struct with_in_use {
    std::int64_t used = 0;
    [[nodiscard]] std::int64_t in_use() const { return used; }
};
struct opaque {};

}  // namespace

TEST_CASE("is_at_rest follows the limiter's members") {
    STATIC_REQUIRE(ratelimit::rest_detectable<bucket>);
    STATIC_REQUIRE_FALSE(ratelimit::rest_detectable<opaque>);

    with_member m{.rest = true};
    CHECK(ratelimit::is_at_rest(m));
    m.rest = false;
    CHECK_FALSE(ratelimit::is_at_rest(m));

    with_capacity c{.left = 3};
    CHECK(ratelimit::is_at_rest(c));
    c.left = 2;
    CHECK_FALSE(ratelimit::is_at_rest(c));

    with_limit l{.left = 3};
    CHECK(ratelimit::is_at_rest(l));
    l.left = -1;
    CHECK_FALSE(ratelimit::is_at_rest(l));

    with_in_use u{.used = 0};
    CHECK(ratelimit::is_at_rest(u));
    u.used = 1;
    CHECK_FALSE(ratelimit::is_at_rest(u));

    manual_clock clock;
    bucket b(rate::per_second(10), 5, clock);
    CHECK(ratelimit::is_at_rest(b));
    REQUIRE(b.try_acquire(1));
    CHECK_FALSE(ratelimit::is_at_rest(b));
    clock.advance(99ms);
    CHECK_FALSE(ratelimit::is_at_rest(b));
    clock.advance(1ms);
    CHECK(ratelimit::is_at_rest(b));
}

namespace {

struct with_idle_member {
    bool idle = false;
    [[nodiscard]] bool is_idle() const { return idle; }
    [[nodiscard]] std::int64_t in_use() const { return 0; }  // ignored: the member wins
};
struct with_available {
    std::int64_t left = 0;
    [[nodiscard]] std::int64_t available() const { return left; }
};
struct with_two_buckets {
    std::int64_t requests = 0;
    std::int64_t tokens = 0;
    [[nodiscard]] std::int64_t available_requests() const { return requests; }
    [[nodiscard]] std::int64_t available_tokens() const { return tokens; }
};

}  // namespace

TEST_CASE("is_idle follows the limiter's members: nothing held out, nothing owed") {
    with_idle_member m{.idle = true};
    CHECK(ratelimit::is_idle(m));
    m.idle = false;
    CHECK_FALSE(ratelimit::is_idle(m));

    with_in_use u{.used = 0};
    CHECK(ratelimit::is_idle(u));
    u.used = 1;
    CHECK_FALSE(ratelimit::is_idle(u));

    with_available a{.left = 0};
    CHECK(ratelimit::is_idle(a));  // drained is idle: nothing is owed
    a.left = -1;
    CHECK_FALSE(ratelimit::is_idle(a));

    with_two_buckets d{.requests = 0, .tokens = 0};
    CHECK(ratelimit::is_idle(d));
    d.tokens = -1;
    CHECK_FALSE(ratelimit::is_idle(d));

    opaque o;
    CHECK(ratelimit::is_idle(o));  // nothing owed can be seen
}

TEST_CASE("is_idle: a concurrency_limiter with permits out and a token bucket in debt are busy") {
    manual_clock clock;
    semaphore s(2, clock);
    CHECK(ratelimit::is_idle(s));
    REQUIRE(s.try_acquire(1));
    CHECK_FALSE(ratelimit::is_idle(s));  // in_use() = 1, though available() = 1 >= 0
    s.release(1);
    CHECK(ratelimit::is_idle(s));

    bucket b(rate::per_second(10), 5, clock);
    REQUIRE(b.try_acquire(5));
    CHECK(ratelimit::is_idle(b));  // drained, owes nothing
    const auto r = b.reserve(1);   // ready 100 ms from now
    CHECK_FALSE(ratelimit::is_idle(b));
    clock.advance(100ms);
    CHECK(r.ready_at() == clock.now());
    CHECK(ratelimit::is_idle(b));
}

// ---------------------------------------------------------------------------
// Memory: bytes per key for token_bucket<> (steady_clock) and short keys.
TEST_CASE("bytes per key for token_bucket<> with short keys stay bounded") {
    if (!counting_allocations()) return;
    constexpr int keys = 100000;
    std::int64_t bytes = 0;
    std::int64_t allocations = 0;
    {
        allocation_scope scope;
        // Slow refill and no sweep: every key stays, so all are counted.
        keyed<ratelimit::token_bucket<>> limits([] { return ratelimit::token_bucket<>(rate::per_hour(1), 20); },
                                                keyed_options{.max_keys = 2 * keys, .sweep_per_insert = 0});
        char key[16];
        for (int i = 0; i < keys; ++i) {
            std::snprintf(key, sizeof key, "user-%06d", i);  // 11 characters: in the small-string buffer
            (void)limits.try_acquire(key);
        }
        const allocation_counts counted = scope.stop();
        bytes = counted.live_bytes;
        allocations = counted.allocations;
        REQUIRE(limits.size() == keys);
    }
    const double per_key = static_cast<double>(bytes) / keys;
    WARN("keyed<token_bucket<>>: " << per_key << " bytes per key (" << bytes << " live bytes for " << keys
                                   << " keys of 11 characters, " << allocations
                                   << " allocations; sizeof(token_bucket<>) = " << sizeof(ratelimit::token_bucket<>)
                                   << ", so " << per_key - static_cast<double>(sizeof(ratelimit::token_bucket<>))
                                   << " bytes per key beyond the limiter; malloc adds ~8-16 per allocation)");
    CHECK(per_key > static_cast<double>(sizeof(ratelimit::token_bucket<>)));  // the count saw the nodes
    CHECK(per_key < 512);
    CHECK(allocations < keys + keys / 100);  // one allocation per key, plus bucket arrays
}
