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

/// Whether `l` owes nothing: no permits held out and none granted ahead of
/// its refill, so evicting it breaks no promise made to a caller (it may
/// still lose state, as a drained bucket does: see keyed). keyed never
/// evicts a limiter that is not idle.
///
/// Decided, in this order:
/// 1. a member `l.is_idle()` (a limiter whose obligations the rules below do
///    not capture provides this; it takes precedence);
/// 2. `l.in_use()`: idle when in_use() == 0 (concurrency limiters: permits out);
/// 3. `l.available()`: idle when available() >= 0 (token_bucket: not in debt
///    to reservations whose ready_at() is still ahead);
/// 4. `l.available_requests()` and `l.available_tokens()`: idle when both are
///    >= 0 (dual_bucket);
/// 5. otherwise idle: nothing owed can be seen (leaky_bucket today).
/// At rest (rest_detectable) implies idle for every limiter of this library.
/// Cost: the member it calls (one atomic load; for token_bucket also a clock
/// read); keyed calls it only when the table is full, on entries it might evict.
template <class L>
[[nodiscard]] bool is_idle(L& l) {
    if constexpr (requires { { l.is_idle() } -> std::convertible_to<bool>; }) {
        return static_cast<bool>(l.is_idle());
    } else if constexpr (requires { { l.in_use() } -> std::convertible_to<std::int64_t>; }) {
        return static_cast<std::int64_t>(l.in_use()) == 0;
    } else if constexpr (requires { { l.available() } -> std::convertible_to<std::int64_t>; }) {
        return static_cast<std::int64_t>(l.available()) >= 0;
    } else if constexpr (requires {
                             { l.available_requests() } -> std::convertible_to<std::int64_t>;
                             { l.available_tokens() } -> std::convertible_to<std::int64_t>;
                         }) {
        return static_cast<std::int64_t>(l.available_requests()) >= 0 &&
               static_cast<std::int64_t>(l.available_tokens()) >= 0;
    } else {
        return true;
    }
}

/// A new key found no room: max_keys keys are held and every one is in use
/// (a call in progress) or not idle (permits held out or owed). Thrown by
/// keyed's blocking calls and `with`; the try_* calls return false instead.
struct keyed_full : std::runtime_error {
    using std::runtime_error::runtime_error;
};

/// How a keyed limiter bounds its memory.
struct keyed_options {
    /// The most keys held at once, in total over all shards (> 0). A new key
    /// beyond it evicts the least recently used entry that is idle and not in
    /// use, or is refused when there is none (see keyed).
    std::size_t max_keys = 100000;
    /// Independent parts, each with its own lock and LRU list (> 0; at most
    /// max_keys and 65536 are used). max_keys bounds their total, not each part.
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
/// Model: a table from key to limiter, split into shards by the key's hash,
/// each shard with its own lock and least-recently-used list; one atomic
/// count of the keys held bounds the whole table. A call for key k finds k's
/// limiter, making it with the factory when k is absent, and forwards the
/// call to it. Entries leave the table two ways:
/// - at rest (see rest_detectable: a full token bucket), dropped at no loss,
///   since a new limiter from the factory behaves exactly the same. Each
///   insertion into a shard first examines the next `sweep_per_insert` entries
///   of that shard and drops those at rest and not in use. The examination
///   walks the shard's list round and round, from the most to the least
///   recently used; entries inserted or used meanwhile join behind the walk,
///   so a round over S entries takes at most ceil(S / sweep_per_insert)
///   insertions and an entry at rest goes within two rounds. `sweep()` drops
///   all of them at once (and starts the walk over).
/// - by `max_keys`, only when max_keys keys are held: a new key then evicts
///   the least recently used entry of its own shard that is idle (is_idle:
///   no permits held out or owed) and not in use; when its shard has none,
///   one from another shard (taken in turn). If the entry evicted was not at
///   rest, its state is lost and the key starts fresh on its next call: the
///   one lossy case, a conscious bound on memory (a drained bucket can get
///   one extra burst). Entries the search passes that are not idle move to
///   the most recently used end, so they are not walked again soon.
/// When max_keys keys are held and none is both idle and not in use, a new
/// key is refused: try_acquire, try_acquire_for and try_acquire_until return
/// false at once (no sleep), `acquire` and `with` throw keyed_full. Keys
/// already held are served as before, and new keys are accepted again as
/// soon as one entry is idle (a release, a refill that covers the debt).
///
/// Guarantee: size() <= max_keys at every instant, over all shards together.
/// While fewer than max_keys keys are held nothing is evicted: a working set
/// of at most max_keys keys keeps every key's state (keys at rest may be
/// dropped and made again, at no loss). While a key stays in the table, its
/// calls get exactly its Limiter's guarantee; keys never share permits. An
/// entry in use (a call in progress, or inside `with`) or not idle (permits
/// held out, as concurrency_limiter's, or a token bucket in debt to
/// reservations) is never dropped or evicted. LRU order is kept per shard:
/// the entry evicted is the oldest idle one of the shard searched, not
/// necessarily of the whole table.
///
/// Thread-safe: one mutex per shard, held only to find, insert or evict an
/// entry (and while the factory runs); the limiter's own call runs after the
/// lock is released, with the entry pinned by an atomic count, so `acquire`
/// sleeps without any lock and blocks only callers of that key. Cost per call:
/// one hash, one lock, one atomic increment and decrement, plus the limiter's
/// call; no allocation for a key already present (string keys are looked up as
/// std::string_view), and the shared key count is not touched. A new key
/// costs, under the lock, one allocation (key and limiter live in one node:
/// the factory returns the limiter by value and guaranteed copy elision
/// builds it there, so non-movable limiters need no unique_ptr), the factory
/// call, sweep_per_insert at-rest checks (for token_bucket, a clock read
/// each), and one compare-and-swap on the key count; when the table is full,
/// the search for an idle entry (one idle check per entry passed; other
/// shards are locked one at a time, after the caller's shard lock is let go,
/// so no two shard locks are ever held together). A key called less often
/// than its limiter takes to refill is usually at rest and dropped between
/// calls, so it pays that insertion on each call: memory is traded for time,
/// never for accuracy.
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
/// `with` must not outlive the call; keyed<concurrency_limiter> permits taken
/// by try_acquire(key) go back through `with(key, [&](auto& l) { l.release(n); })`
/// (the entry stays while they are held). Refusal is decided on what the search
/// saw: it locks one shard at a time, so under concurrent calls "every entry
/// busy" is not one instant, and a key may be refused while another thread
/// frees an entry. A factory called for a key that is then refused made its
/// limiter in vain (it is destroyed). Destroying the keyed while calls are in
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
          make_(&make_node<std::decay_t<Factory>>) {}
    keyed(const keyed&) = delete;
    keyed& operator=(const keyed&) = delete;
    ~keyed() {
        for (std::size_t i = 0; i < shard_count_; ++i) {
            for (node* n = shards_[i].newest; n != nullptr;) delete std::exchange(n, n->older);
        }
    }

    /// Takes n permits from key's limiter if it holds them now; never blocks.
    /// False when key is absent and the table has no room (see keyed).
    bool try_acquire(key_view key, std::int64_t n = 1) {
        detail::check_count(name, n);
        if (n == 0) return true;
        const pin p = find_or_insert(key);
        return p && p->try_acquire(n);
    }

    /// Takes n permits from key's limiter if they can be had within `d`,
    /// sleeping (without a lock) until then; false at once when the earliest grant is later.
    bool try_acquire_for(key_view key, std::int64_t n, duration d) {
        detail::check_count(name, n);
        if (n == 0) return true;
        const pin p = find_or_insert(key);
        return p && p->try_acquire_for(n, d);
    }

    /// Takes n permits from key's limiter if they can be had by `t`, sleeping
    /// (without a lock) until then; false at once when the earliest grant is later.
    bool try_acquire_until(key_view key, std::int64_t n, time_point t) {
        detail::check_count(name, n);
        if (n == 0) return true;
        const pin p = find_or_insert(key);
        return p && p->try_acquire_until(n, t);
    }

    /// Takes n permits from key's limiter, sleeping until they are usable; returns
    /// the time slept. Sleeps without a lock: calls for other keys go on meanwhile.
    /// Throws keyed_full when key is absent and the table has no room.
    duration acquire(key_view key, std::int64_t n = 1) {
        detail::check_count(name, n);
        if (n == 0) return duration::zero();
        return pinned_or_throw(key)->acquire(n);
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
    /// Throws keyed_full when key is absent and the table has no room.
    template <class F>
        requires std::invocable<F, Limiter&>
    decltype(auto) with(key_view key, F&& f) {
        const pin p = pinned_or_throw(key);
        return std::invoke(std::forward<F>(f), *p);
    }

    /// Whether key has an entry now; makes none and does not count as a use.
    [[nodiscard]] bool contains(key_view key) const {
        const std::uint64_t h = hash_of(key);
        const shard& s = shard_for(h);
        std::lock_guard lock(s.mutex);
        return find(s, static_cast<std::uint32_t>(h), key) != nullptr;
    }

    /// Keys held now, <= max_keys() (a snapshot: a key being inserted counts; exact when no other thread inserts).
    [[nodiscard]] std::size_t size() const noexcept { return live_.load(std::memory_order_relaxed); }

    /// The bound on size(), over all shards together.
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
        std::size_t size = 0;    // entries linked here
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

    /// Key's entry, made when absent, pinned for the caller; an empty pin when
    /// key is absent and the table has no room for it.
    pin find_or_insert(key_view key) {
        const std::uint64_t h = hash_of(key);
        shard& s = shard_for(h);
        const auto low = static_cast<std::uint32_t>(h);
        std::unique_lock lock(s.mutex);
        if (node* n = find(s, low, key)) return pin_entry(s, n);
        return insert(s, lock, low, key);
    }

    /// find_or_insert for the calls that need a limiter: throws keyed_full when refused.
    pin pinned_or_throw(key_view key) {
        pin p = find_or_insert(key);
        if (!p) {
            throw keyed_full(std::string(name) + ": no room for a new key: all max_keys = " +
                             std::to_string(options_.max_keys) +
                             " keys are in use or not idle (permits held out or owed)");
        }
        return p;
    }

    /// Key's entry pinned for the caller, or an empty pin when absent.
    pin find_existing(key_view key) {
        const std::uint64_t h = hash_of(key);
        shard& s = shard_for(h);
        std::lock_guard lock(s.mutex);
        node* n = find(s, static_cast<std::uint32_t>(h), key);
        if (n == nullptr) return pin(nullptr);
        return pin_entry(s, n);
    }

    /// Under s's lock: marks n most recently used and pins it for the caller.
    static pin pin_entry(shard& s, node* n) noexcept {
        touch(s, n);
        n->pins.fetch_add(1, std::memory_order_relaxed);
        return pin(n);
    }

    /// A place in the key count (live_) held by an insertion until its entry is
    /// linked; given back if the insertion ends without linking.
    class slot_claim {
    public:
        explicit slot_claim(std::atomic<std::size_t>& live) noexcept : live_(live) {}
        slot_claim(const slot_claim&) = delete;
        slot_claim& operator=(const slot_claim&) = delete;
        ~slot_claim() {
            if (held_) live_.fetch_sub(1, std::memory_order_relaxed);
        }
        /// Takes a free place if fewer than max_keys are held; the only way live_ grows.
        bool take(std::size_t max_keys) noexcept {
            std::size_t count = live_.load(std::memory_order_relaxed);
            while (count < max_keys) {
                if (live_.compare_exchange_weak(count, count + 1, std::memory_order_relaxed)) return held_ = true;
            }
            return false;
        }
        /// Takes over the place of an entry just evicted (the count is unchanged).
        void adopt() noexcept { held_ = true; }
        /// The place now belongs to a linked entry.
        void keep() noexcept { held_ = false; }
        [[nodiscard]] bool held() const noexcept { return held_; }

    private:
        std::atomic<std::size_t>& live_;
        bool held_ = false;
    };

    /// Makes and links an entry for `key`, absent from s, whose lock the caller
    /// holds; pinned for the caller. Room comes from a free place under
    /// max_keys, else from evicting an idle entry of s, else (s's lock let go
    /// meanwhile) of another shard; with none, an empty pin and nothing changed.
    /// Strong guarantee when the factory or an allocation throws: nothing was
    /// evicted (save one entry of another shard if s's buckets then cannot grow).
    pin insert(shard& s, std::unique_lock<std::mutex>& lock, std::uint32_t h, key_view key) {
        std::unique_ptr<node> fresh(make_(factory_.get(), h, key));
        sweep_some(s);
        make_room_in_buckets(s);
        slot_claim claim(live_);
        if (!claim.take(options_.max_keys) && evict_one(s)) claim.adopt();
        if (!claim.held()) {
            lock.unlock();
            if (evict_elsewhere(s)) claim.adopt();
            lock.lock();
            // Another thread may have inserted the key meanwhile: use its entry (the claim is given back).
            if (node* n = find(s, h, key)) return pin_entry(s, n);
            if (!claim.held() && !claim.take(options_.max_keys) && evict_one(s)) claim.adopt();
            if (!claim.held()) return pin(nullptr);
            make_room_in_buckets(s);
        }
        node* n = fresh.release();
        link(s, n);
        claim.keep();
        n->pins.fetch_add(1, std::memory_order_relaxed);
        return pin(n);
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

    /// Under s's lock: evicts s's least recently used entry that is neither in
    /// use nor busy (not is_idle), leaving its place in the key count to the
    /// caller; true when one went. Busy entries passed move to the most
    /// recently used end, so the next search does not walk them first.
    static bool evict_one(shard& s) {
        node* n = s.oldest;
        for (std::size_t left = s.size; left > 0 && n != nullptr; --left) {
            node* const newer = n->newer;
            if (n->pins.load(std::memory_order_acquire) == 0) {
                if (is_idle(n->value)) {
                    destroy(s, n);
                    return true;
                }
                touch(s, n);
            }
            n = newer;
        }
        return false;
    }

    /// evict_one on the shards other than `own`, each locked in turn (the
    /// caller holds no lock), starting where the last such search left off.
    bool evict_elsewhere(const shard& own) {
        const std::size_t start = next_victim_shard_.fetch_add(1, std::memory_order_relaxed);
        for (std::size_t i = 0; i < shard_count_; ++i) {
            shard& t = shards_[(start + i) % shard_count_];
            if (&t == &own) continue;
            std::lock_guard lock(t.mutex);
            if (evict_one(t)) return true;
        }
        return false;
    }

    /// Grows s's buckets, if needed, so one more entry keeps the load factor <= 1.
    static void make_room_in_buckets(shard& s) {
        if (s.size + 1 > s.buckets.size()) grow(s);
    }

    /// Doubles the bucket count (at least 8) until it is above the size.
    static void grow(shard& s) {
        std::size_t count = std::max<std::size_t>(8, s.buckets.size() * 2);
        while (count < s.size + 1) count *= 2;
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
        ++s.size;
    }

    /// Marks n most recently used.
    static void touch(shard& s, node* n) noexcept {
        if (s.newest == n) return;
        unlink_lru(s, n);
        push_newest(s, n);
    }

    /// Removes n, not in use, from the table and gives its place in the key count back.
    void drop(shard& s, node* n) noexcept {
        destroy(s, n);
        live_.fetch_sub(1, std::memory_order_relaxed);
    }

    /// Unlinks n from its bucket and the LRU list and destroys it; n is not in
    /// use. Its place in the key count is the caller's to give back or reuse.
    static void destroy(shard& s, node* n) noexcept {
        node** slot = &s.buckets[n->hash & (s.buckets.size() - 1)];
        while (*slot != n) slot = &(*slot)->chain;
        *slot = n->chain;
        unlink_lru(s, n);
        --s.size;
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
    // Keys held over all shards, plus those an insertion is about to link:
    // raised only by take_slot() below max_keys, so never above it.
    alignas(64) std::atomic<std::size_t> live_{0};
    std::atomic<std::size_t> next_victim_shard_{0};  // where the next search of other shards starts
};

}  // namespace ratelimit
