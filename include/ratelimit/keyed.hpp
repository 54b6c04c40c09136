#pragma once
// ratelimit::keyed: one limiter per key (user, API key, model), made on first
// use by a factory, with bounded memory.

#include <algorithm>
#include <atomic>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "limiter.hpp"

namespace ratelimit {

/// A limiter whose state can be seen to be at rest: indistinguishable from a
/// limiter freshly made with the same arguments, so dropping it and making a
/// new one later loses nothing (a full bucket equals a new one).
///
/// Detected, in this order:
/// 1. a member `l.is_at_rest()` (a limiter whose state the rules below do not
///    capture provides this; it takes precedence);
/// 2. `l.available()` and `l.capacity()`: at rest when available() >= capacity()
///    (token_bucket: exactly when the bucket is full);
/// 3. `l.available()` and `l.limit()`: at rest when available() >= limit()
///    (window limiters: nothing counted in the window);
/// 4. `l.in_use()`: at rest when in_use() == 0 (concurrency limiters).
/// A limiter matching none is never at rest; keyed then bounds it by max_keys only.
template <class L>
concept rest_detectable =
    requires(L& l) {
        { l.is_at_rest() } -> std::convertible_to<bool>;
    } ||
    requires(L& l) {
        { l.available() } -> std::convertible_to<std::int64_t>;
        { l.capacity() } -> std::convertible_to<std::int64_t>;
    } ||
    requires(L& l) {
        { l.available() } -> std::convertible_to<std::int64_t>;
        { l.limit() } -> std::convertible_to<std::int64_t>;
    } ||
    requires(L& l) {
        { l.in_use() } -> std::convertible_to<std::int64_t>;
    };

/// Whether `l` is at rest by the rules of rest_detectable.
template <rest_detectable L>
[[nodiscard]] bool is_at_rest(L& l) {
    if constexpr (requires { { l.is_at_rest() } -> std::convertible_to<bool>; }) {
        return static_cast<bool>(l.is_at_rest());
    } else if constexpr (requires { l.available(); l.capacity(); }) {
        return static_cast<std::int64_t>(l.available()) >= static_cast<std::int64_t>(l.capacity());
    } else if constexpr (requires { l.available(); l.limit(); }) {
        return static_cast<std::int64_t>(l.available()) >= static_cast<std::int64_t>(l.limit());
    } else {
        return static_cast<std::int64_t>(l.in_use()) == 0;
    }
}

/// How a keyed limiter bounds its memory.
struct keyed_options {
    /// The most keys held at once (> 0); inserting beyond evicts the least recently used.
    std::size_t max_keys = 100000;
    /// Independent parts, each with its own lock and an equal share of max_keys
    /// (> 0; at most max_keys and 65536 are used).
    std::size_t shards = 16;
    /// Entries of the shard each insertion examines for dropping at rest (0: only sweep() drops them).
    std::size_t sweep_per_insert = 2;
};

/// A callable that makes a Limiter for a key: `f(key)` or `f()`, callable as
/// const, returning the Limiter itself by value (a prvalue, so limiters that
/// are neither copyable nor movable are built in place).
template <class F, class L, class K>
concept limiter_factory =
    (std::invocable<const F&, const K&> && std::same_as<std::invoke_result_t<const F&, const K&>, L>) ||
    (std::invocable<const F&> && std::same_as<std::invoke_result_t<const F&>, L>);

/// One limiter per key, made on first use by a factory, with bounded memory.
///
///     ratelimit::keyed<ratelimit::token_bucket<>> per_user(
///         [] { return ratelimit::token_bucket<>(ratelimit::rate::per_minute(60), 10); });
///     if (!per_user.try_acquire(user_id)) reject();
///
/// Model: a table from key to limiter, split into shards by the key's hash.
/// A call for key k finds k's limiter, making it with the factory when k is
/// absent, and forwards the call to it. Entries leave the table two ways:
/// - at rest (see rest_detectable: a full token bucket), dropped at no loss,
///   since a new limiter from the factory behaves exactly the same. Each
///   insertion into a shard first examines the next `sweep_per_insert` entries
///   of that shard and drops those at rest and not in use. The examination
///   walks the shard's list round and round, from the most to the least
///   recently used; entries inserted or used meanwhile join behind the walk,
///   so a round over S entries takes at most ceil(S / sweep_per_insert)
///   insertions and an entry at rest goes within two rounds. `sweep()` drops
///   all of them at once (and starts the walk over).
/// - by `max_keys`: inserting into a full shard (each holds its share,
///   max_keys / shards) evicts that shard's least recently used entry not in
///   use. If that entry was not at rest, its state is lost and the key starts
///   fresh on its next call: the one lossy case, a conscious bound on memory
///   (such a key can get one extra burst).
///
/// Guarantee: while a key stays in the table, its calls get exactly its
/// Limiter's guarantee; keys never share permits. A key dropped at rest loses
/// nothing. An entry in use (a call in progress, or inside `with`) is never
/// dropped or evicted, so size() <= max_keys + the number of calls in progress.
/// LRU order is kept per shard, not across shards.
///
/// Thread-safe: one mutex per shard, held only to find, insert or evict an
/// entry (and while the factory runs); the limiter's own call runs after the
/// lock is released, with the entry pinned by an atomic count, so `acquire`
/// sleeps without any lock and blocks only callers of that key. Cost per call:
/// one hash, one lock, one atomic increment and decrement, plus the limiter's
/// call; no allocation for a key already present (string keys are looked up as
/// std::string_view). A new key costs, under the lock, one allocation (key
/// and limiter live in one node: the factory returns the limiter by value and
/// guaranteed copy elision builds it there, so non-movable limiters need no
/// unique_ptr), the factory call, and sweep_per_insert at-rest checks (for
/// token_bucket, a clock read each). A key called less often than its limiter
/// takes to refill is usually at rest and dropped between calls, so it pays
/// that insertion on each call: memory is traded for time, never for accuracy.
/// Memory per key: the node (the limiter, the key, three pointers and two
/// 32-bit words; 176 bytes for token_bucket<> and a std::string key) plus 8 to
/// 16 bytes of hash buckets; the keys' own heap bytes beyond 15 characters.
///
/// Edge cases: n == 0 succeeds at once and makes no entry; n < 0 throws
/// std::invalid_argument and makes no entry; n above the limiter's capacity is
/// the limiter's answer (try_* false, acquire throws capacity_exceeded).
/// Configuration changed through `with` (set_rate) is lost when the entry is
/// dropped: put per-key settings in the factory, which receives the key. The
/// factory runs under its shard's lock and must not call this keyed; it may be
/// called from several threads at once. A reference or reservation obtained in
/// `with` must not outlive the call. Destroying the keyed while calls are in
/// progress is undefined.
template <limiter Limiter, class Key = std::string>
class keyed {
public:
    using limiter_type = Limiter;
    using key_type = Key;
    /// How keys are passed: std::string_view for std::string keys (no allocation), else const Key&.
    using key_view = std::conditional_t<std::is_same_v<Key, std::string>, std::string_view, const Key&>;
    using clock_type = typename Limiter::clock_type;
    using duration = typename Limiter::duration;
    using time_point = typename Limiter::time_point;

    /// An empty table whose limiters `factory` makes: `factory(key)` or `factory()`
    /// returning a Limiter. Throws std::invalid_argument for a zero max_keys or shards.
    template <class Factory>
        requires limiter_factory<std::decay_t<Factory>, Limiter, Key>
    explicit keyed(Factory&& factory, keyed_options options = {})
        : options_(checked(options)),
          shard_count_(std::min({options_.shards, options_.max_keys, max_shards})),
          shards_(std::make_unique<shard[]>(shard_count_)),
          factory_(std::make_shared<std::decay_t<Factory>>(std::forward<Factory>(factory))),
          make_(&make_node<std::decay_t<Factory>>) {
        for (std::size_t i = 0; i < shard_count_; ++i) {
            shards_[i].max_size = options_.max_keys / shard_count_ + (i < options_.max_keys % shard_count_ ? 1 : 0);
        }
    }
    keyed(const keyed&) = delete;
    keyed& operator=(const keyed&) = delete;
    ~keyed() {
        for (std::size_t i = 0; i < shard_count_; ++i) {
            for (node* n = shards_[i].newest; n != nullptr;) delete std::exchange(n, n->older);
        }
    }

    /// Takes n permits from key's limiter if it holds them now; never blocks.
    bool try_acquire(key_view key, std::int64_t n = 1) {
        detail::check_count(name, n);
        if (n == 0) return true;
        return find_or_insert(key)->try_acquire(n);
    }

    /// Takes n permits from key's limiter if they can be had within `d`,
    /// sleeping (without a lock) until then; false at once when the earliest grant is later.
    bool try_acquire_for(key_view key, std::int64_t n, duration d) {
        detail::check_count(name, n);
        if (n == 0) return true;
        return find_or_insert(key)->try_acquire_for(n, d);
    }

    /// Takes n permits from key's limiter if they can be had by `t`, sleeping
    /// (without a lock) until then; false at once when the earliest grant is later.
    bool try_acquire_until(key_view key, std::int64_t n, time_point t) {
        detail::check_count(name, n);
        if (n == 0) return true;
        return find_or_insert(key)->try_acquire_until(n, t);
    }

    /// Takes n permits from key's limiter, sleeping until they are usable; returns
    /// the time slept. Sleeps without a lock: calls for other keys go on meanwhile.
    duration acquire(key_view key, std::int64_t n = 1) {
        detail::check_count(name, n);
        if (n == 0) return duration::zero();
        return find_or_insert(key)->acquire(n);
    }

    /// Gives back n unused permits to key's limiter. An absent key is left
    /// absent: a new limiter is full, and refunds are capped at the capacity.
    void refund(key_view key, std::int64_t n)
        requires refundable_limiter<Limiter>
    {
        detail::check_count(name, n);
        if (n == 0) return;
        if (pin p = find_existing(key)) p->refund(n);
    }

    /// Calls f(limiter) with key's limiter (made when absent) and returns its
    /// result; the entry stays in the table for the call. f runs without a
    /// lock and may call this keyed; it must not keep a reference to the limiter.
    template <class F>
        requires std::invocable<F, Limiter&>
    decltype(auto) with(key_view key, F&& f) {
        pin p = find_or_insert(key);
        return std::invoke(std::forward<F>(f), *p);
    }

    /// Whether key has an entry now; makes none and does not count as a use.
    [[nodiscard]] bool contains(key_view key) const {
        const std::uint64_t h = hash_of(key);
        const shard& s = shard_for(h);
        std::lock_guard lock(s.mutex);
        return find(s, static_cast<std::uint32_t>(h), key) != nullptr;
    }

    /// Keys held now (a snapshot; exact when no other thread inserts).
    [[nodiscard]] std::size_t size() const noexcept {
        std::size_t total = 0;
        for (std::size_t i = 0; i < shard_count_; ++i) total += shards_[i].size.load(std::memory_order_relaxed);
        return total;
    }

    /// The bound on size() (calls in progress may exceed it by their number).
    [[nodiscard]] std::size_t max_keys() const noexcept { return options_.max_keys; }

    /// Drops every entry at rest and not in use, at no loss; returns how many.
    /// Locks one shard at a time; O(size()). Restarts the per-insertion walk.
    std::size_t sweep() {
        std::size_t dropped = 0;
        for (std::size_t i = 0; i < shard_count_; ++i) {
            shard& s = shards_[i];
            std::lock_guard lock(s.mutex);
            s.cursor = nullptr;
            for (node* n = s.oldest; n != nullptr;) {
                node* next = n->newer;
                if (droppable(*n)) {
                    drop(s, n);
                    ++dropped;
                }
                n = next;
            }
        }
        return dropped;
    }

private:
    static constexpr const char* name = "ratelimit::keyed";
    static constexpr std::size_t max_shards = 65536;

    /// One entry: its key and limiter, its hash chain and LRU links, and the
    /// count of calls using it. Allocated once, never moved.
    struct node {
        template <class Make>
        node(std::uint32_t h, key_view k, const Make& make) : hash(h), key(k), value(make(std::as_const(key))) {}
        node(const node&) = delete;
        node& operator=(const node&) = delete;
        ~node() = default;

        node* chain = nullptr;  // next in the same hash bucket
        node* newer = nullptr;  // toward the most recently used
        node* older = nullptr;  // toward the least recently used
        std::uint32_t hash;     // low half of the mixed hash: picks the bucket
        std::atomic<std::uint32_t> pins{0};  // calls using it; raised only under the shard lock
        Key key;
        Limiter value;
    };

    /// One part of the table: a chained hash table, an LRU list, a sweep cursor.
    struct alignas(64) shard {
        mutable std::mutex mutex;
        std::vector<node*> buckets;  // power-of-two count, kept >= size (load factor <= 1)
        node* newest = nullptr;
        node* oldest = nullptr;
        node* cursor = nullptr;  // next entry the per-insertion sweep examines; nullptr: the newest
        std::size_t max_size = 0;
        std::atomic<std::size_t> size{0};  // written under the mutex, read anywhere
    };

    /// Keeps an entry in use: while held, the entry is neither dropped nor evicted.
    class pin {
    public:
        explicit pin(node* n) noexcept : node_(n) {}
        pin(pin&& other) noexcept : node_(std::exchange(other.node_, nullptr)) {}
        pin(const pin&) = delete;
        pin& operator=(const pin&) = delete;
        pin& operator=(pin&&) = delete;
        // The release pairs with the acquire load in droppable(): this call's
        // use of the limiter happens before any destruction of the node.
        ~pin() {
            if (node_ != nullptr) node_->pins.fetch_sub(1, std::memory_order_release);
        }
        explicit operator bool() const noexcept { return node_ != nullptr; }
        Limiter& operator*() const noexcept { return node_->value; }
        Limiter* operator->() const noexcept { return &node_->value; }

    private:
        node* node_;
    };

    using make_fn = node* (*)(const void* factory, std::uint32_t hash, key_view key);

    /// A node for `key` whose limiter the factory of type F builds in place.
    template <class F>
    static node* make_node(const void* factory, std::uint32_t hash, key_view key) {
        const F& f = *static_cast<const F*>(factory);
        return new node(hash, key, [&f]([[maybe_unused]] const Key& k) -> Limiter {
            if constexpr (std::invocable<const F&, const Key&>) {
                return f(k);
            } else {
                return f();
            }
        });
    }

    static keyed_options checked(keyed_options options) {
        if (options.max_keys == 0) throw std::invalid_argument(std::string(name) + ": max_keys must be > 0, got 0");
        if (options.shards == 0) throw std::invalid_argument(std::string(name) + ": shards must be > 0, got 0");
        return options;
    }

    /// The key's hash, mixed (murmur3's finalizer) so that the high half picks
    /// the shard and the low half the bucket even for identity hashes.
    static std::uint64_t hash_of(key_view key) noexcept {
        std::uint64_t h = 0;
        if constexpr (std::is_same_v<Key, std::string>) {
            h = std::hash<std::string_view>{}(key);
        } else {
            h = std::hash<Key>{}(key);
        }
        h ^= h >> 33;
        h *= 0xff51afd7ed558ccdULL;
        h ^= h >> 33;
        h *= 0xc4ceb9fe1a85ec53ULL;
        h ^= h >> 33;
        return h;
    }

    [[nodiscard]] shard& shard_for(std::uint64_t h) const noexcept {
        return shards_[static_cast<std::size_t>(((h >> 32) * shard_count_) >> 32)];
    }

    static node* find(const shard& s, std::uint32_t h, key_view key) {
        if (s.buckets.empty()) return nullptr;
        for (node* n = s.buckets[h & (s.buckets.size() - 1)]; n != nullptr; n = n->chain) {
            if (n->hash == h && n->key == key) return n;
        }
        return nullptr;
    }

    /// Key's entry, made when absent, pinned for the caller.
    pin find_or_insert(key_view key) {
        const std::uint64_t h = hash_of(key);
        shard& s = shard_for(h);
        const auto low = static_cast<std::uint32_t>(h);
        std::lock_guard lock(s.mutex);
        node* n = find(s, low, key);
        if (n == nullptr) {
            n = insert(s, low, key);
        } else {
            touch(s, n);
        }
        n->pins.fetch_add(1, std::memory_order_relaxed);
        return pin(n);
    }

    /// Key's entry pinned for the caller, or an empty pin when absent.
    pin find_existing(key_view key) {
        const std::uint64_t h = hash_of(key);
        shard& s = shard_for(h);
        std::lock_guard lock(s.mutex);
        node* n = find(s, static_cast<std::uint32_t>(h), key);
        if (n == nullptr) return pin(nullptr);
        touch(s, n);
        n->pins.fetch_add(1, std::memory_order_relaxed);
        return pin(n);
    }

    /// Makes and links an entry for an absent key. Strong guarantee: when the
    /// factory or an allocation throws, nothing was evicted.
    node* insert(shard& s, std::uint32_t h, key_view key) {
        std::unique_ptr<node> fresh(make_(factory_.get(), h, key));
        sweep_some(s);
        if (s.size.load(std::memory_order_relaxed) >= s.max_size) evict_one(s);
        // Only reached with a full table when nothing could be evicted: growing never follows a loss.
        if (s.size.load(std::memory_order_relaxed) + 1 > s.buckets.size()) grow(s);
        node* n = fresh.release();
        link(s, n);
        return n;
    }

    /// An entry may go when no call uses it and its limiter is at rest.
    static bool droppable(node& n) {
        if constexpr (rest_detectable<Limiter>) {
            return n.pins.load(std::memory_order_acquire) == 0 && is_at_rest(n.value);
        } else {
            return false;
        }
    }

    /// Examines the next sweep_per_insert entries from the cursor toward the
    /// least recently used, wrapping to the newest, dropping those at rest.
    void sweep_some(shard& s) {
        if constexpr (rest_detectable<Limiter>) {
            for (std::size_t i = 0; i < options_.sweep_per_insert && s.newest != nullptr; ++i) {
                node* n = s.cursor != nullptr ? s.cursor : s.newest;
                s.cursor = n->older;
                if (droppable(*n)) drop(s, n);
            }
        }
    }

    /// Evicts the least recently used entry not in use, if any (at rest or not).
    static void evict_one(shard& s) {
        for (node* n = s.oldest; n != nullptr; n = n->newer) {
            if (n->pins.load(std::memory_order_acquire) == 0) {
                drop(s, n);
                return;
            }
        }
    }

    /// Doubles the bucket count (at least 8) until it is above the size.
    static void grow(shard& s) {
        std::size_t count = std::max<std::size_t>(8, s.buckets.size() * 2);
        while (count < s.size.load(std::memory_order_relaxed) + 1) count *= 2;
        std::vector<node*> buckets(count, nullptr);
        for (node* n = s.newest; n != nullptr; n = n->older) {
            node*& head = buckets[n->hash & (count - 1)];
            n->chain = head;
            head = n;
        }
        s.buckets.swap(buckets);
    }

    static void link(shard& s, node* n) noexcept {
        node*& head = s.buckets[n->hash & (s.buckets.size() - 1)];
        n->chain = head;
        head = n;
        push_newest(s, n);
        s.size.store(s.size.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    }

    /// Marks n most recently used.
    static void touch(shard& s, node* n) noexcept {
        if (s.newest == n) return;
        unlink_lru(s, n);
        push_newest(s, n);
    }

    /// Unlinks n from its bucket and the LRU list and destroys it; n is not in use.
    static void drop(shard& s, node* n) noexcept {
        node** slot = &s.buckets[n->hash & (s.buckets.size() - 1)];
        while (*slot != n) slot = &(*slot)->chain;
        *slot = n->chain;
        unlink_lru(s, n);
        s.size.store(s.size.load(std::memory_order_relaxed) - 1, std::memory_order_relaxed);
        delete n;
    }

    /// Takes n out of the LRU list; a cursor on n moves on to the next older entry.
    static void unlink_lru(shard& s, node* n) noexcept {
        if (s.cursor == n) s.cursor = n->older;
        (n->newer != nullptr ? n->newer->older : s.newest) = n->older;
        (n->older != nullptr ? n->older->newer : s.oldest) = n->newer;
        n->newer = n->older = nullptr;
    }

    static void push_newest(shard& s, node* n) noexcept {
        n->older = s.newest;
        n->newer = nullptr;
        (s.newest != nullptr ? s.newest->newer : s.oldest) = n;
        s.newest = n;
    }

    keyed_options options_;
    std::size_t shard_count_;
    std::unique_ptr<shard[]> shards_;
    std::shared_ptr<const void> factory_;  // the factory, of the type make_ was instantiated for
    make_fn make_;
};

}  // namespace ratelimit
