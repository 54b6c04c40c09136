#pragma once
// Consistent hashing of keys onto named nodes, the math behind
// ratelimit::redis::hash_ring: no clock, no thread, no third-party library.
//
// Model. Every node owns `points_per_node` points on a ring of 2^64
// positions; a key belongs to the node owning the first point at or after the
// key's position, wrapping from the top of the ring to the bottom. Adding a
// node takes over only the arcs just before its own points, so only keys that
// now belong to the new node move (about 1/(nodes + 1) of them); removing it
// gives exactly those keys back.
//
// The scheme, fixed so that every process, compiler and platform maps a key
// to the same node (a Redis-backed limiter shared by many processes relies on
// this; std::hash promises none of it):
//   ring_hash(s)   = fmix64(fnv1a64(bytes of s))
//   fnv1a64        = FNV-1a, 64 bits: h = 0xcbf29ce484222325; for each byte b:
//                    h = (h ^ b) * 0x100000001b3 (mod 2^64)
//   fmix64(k)      = MurmurHash3's finalizer: k ^= k >> 33; k *= 0xff51afd7ed558ccd;
//                    k ^= k >> 33; k *= 0xc4ceb9fe1a85ec53; k ^= k >> 33 (mod 2^64)
//   point i of node `name` = ring_hash(name + "#" + decimal i), i in [0, points_per_node)
//                    ("redis-a#0", "redis-a#1", ..., "redis-a#159"; i without leading zeros;
//                    the text after the last '#' is all digits, so two names never share a
//                    point's text, whatever '#' they contain)
//   position of a key      = ring_hash(hash_tag(key))
// The finalizer matters: FNV-1a alone leaves names that differ only in their
// last characters ("x#1", "x#2", ...) on correlated positions, and the top
// bits (which decide the arc) mix poorly.
//
// Hash tags. As in Redis Cluster, a key containing "{...}" with non-empty
// content between its first '{' and the first '}' after that is placed by
// that content alone: "rl:{user1}:a" and "rl:{user1}:b" land on the node of
// "user1". "{}" (empty content), a '{' without a later '}', or no '{' at all
// place the key by its whole text; a "{}" ends the search ("{}{a}" is placed
// by the whole key, as Redis does). Node names are hashed whole, braces or not.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace ratelimit::detail {

/// FNV-1a offset basis: fnv1a64("").
inline constexpr std::uint64_t fnv1a64_offset_basis = 0xcbf29ce484222325ULL;
/// FNV 64-bit prime, 2^40 + 2^8 + 0xb3.
inline constexpr std::uint64_t fnv1a64_prime = 0x100000001b3ULL;

/// FNV-1a over the bytes of `bytes`, continuing from `state` (the offset basis
/// for a fresh hash), so fnv1a64(b, fnv1a64(a)) == fnv1a64(a + b).
[[nodiscard]] constexpr std::uint64_t fnv1a64(std::string_view bytes,
                                              std::uint64_t state = fnv1a64_offset_basis) noexcept {
    for (const char c : bytes) {
        state ^= static_cast<unsigned char>(c);
        state *= fnv1a64_prime;
    }
    return state;
}

/// MurmurHash3's 64-bit finalizer: a bijection on 64 bits in which every input
/// bit flips each output bit with probability about 1/2. fmix64(0) == 0.
[[nodiscard]] constexpr std::uint64_t fmix64(std::uint64_t k) noexcept {
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdULL;
    k ^= k >> 33;
    k *= 0xc4ceb9fe1a85ec53ULL;
    k ^= k >> 33;
    return k;
}

/// The ring position of `s`: fmix64(fnv1a64(s)). The same on every platform
/// and compiler, forever: changing it moves every key of every deployed ring.
/// Cost: one multiply per byte plus five operations; no allocation.
[[nodiscard]] constexpr std::uint64_t ring_hash(std::string_view s) noexcept { return fmix64(fnv1a64(s)); }

/// The part of `key` that places it on the ring: the content of its first
/// {hash tag} when non-empty (Redis Cluster's rule: the first '{', then the
/// first '}' after it), else the whole key. A view into `key`.
[[nodiscard]] constexpr std::string_view hash_tag(std::string_view key) noexcept {
    const std::size_t open = key.find('{');
    if (open == std::string_view::npos) return key;
    const std::size_t close = key.find('}', open + 1);
    if (close == std::string_view::npos || close == open + 1) return key;
    return key.substr(open + 1, close - open - 1);
}

/// The default hash of consistent_hash: ring_hash.
struct ring_hasher {
    [[nodiscard]] constexpr std::uint64_t operator()(std::string_view s) const noexcept { return ring_hash(s); }
};

/// A consistent-hash ring of named nodes, each a `Node` (anything movable; the
/// Redis layer stores `redis::connection*`). See the top of this header for
/// the model and the exact hashing scheme. `Hash` maps a string to a ring
/// position; it defaults to ring_hash and exists so tests can place points by hand.
///
/// Guarantee: at(key) depends only on the set of (name, node) pairs and
/// points_per_node, never on the order of add() and remove() calls. Adding a
/// node moves only keys to the new node, none between the old ones; removing
/// a node moves only its own keys. With P points per node each of N nodes
/// owns 1/N of the ring with a relative standard deviation of about 1/√P
/// (8% for the default P = 160). Equal points of different nodes (a 64-bit
/// collision) go to the node whose name is smallest (std::string_view's <).
///
/// Cost: at() and name_for() are a binary search over the nodes·P points,
/// O(log(nodes·P)), no allocation. add() is O(P log P + nodes·P) and remove()
/// O(nodes·P); both allocate. Memory: 16 bytes per point (2.5 KiB per node at
/// P = 160) plus the names.
///
/// Not synchronized: const members may run concurrently with each other, but
/// add() and remove() need exclusive access. References returned by at() and
/// name_for() are invalidated by add() and remove().
///
/// Edge cases: at() on an empty ring throws std::out_of_range("hash_ring is
/// empty"); an empty name, a name already present and points_per_node outside
/// [1, 4096] throw std::invalid_argument naming the argument; any key,
/// including "", has a position.
template <class Node, class Hash = ring_hasher>
class consistent_hash {
public:
    /// Most points a node may own.
    static constexpr int max_points_per_node = 4096;

    /// An empty ring whose nodes will each own `points_per_node` points, in [1, 4096].
    explicit consistent_hash(int points_per_node = 160) : points_per_node_(points_per_node) {
        if (points_per_node < 1 || points_per_node > max_points_per_node) {
            throw std::invalid_argument(std::string(where) + ": points_per_node must be in [1, " +
                                        std::to_string(max_points_per_node) + "], got " +
                                        std::to_string(points_per_node));
        }
    }

    /// Adds `node` under `name` (non-empty, not already present) with its
    /// points_per_node() points. Strong guarantee: on an exception the ring is unchanged.
    void add(std::string_view name, Node node) {
        if (name.empty()) throw std::invalid_argument(std::string(where) + ": name must not be empty");
        if (find(name) != nodes_.end()) {
            throw std::invalid_argument(std::string(where) + ": name \"" + std::string(name) +
                                        "\" is already in the ring");
        }
        const std::size_t index = nodes_.size();
        std::vector<point> fresh;
        fresh.reserve(static_cast<std::size_t>(points_per_node_));
        std::string label(name);
        label += '#';
        const std::size_t prefix = label.size();
        for (int i = 0; i < points_per_node_; ++i) {
            label.resize(prefix);
            label += std::to_string(i);
            fresh.push_back({hash_(std::string_view(label)), index});
        }
        // Order by position, then by name; `name` stands in for the node not yet stored.
        const auto before = [&](const point& a, const point& b) {
            if (a.position != b.position) return a.position < b.position;
            return name_at(a.node, name) < name_at(b.node, name);
        };
        std::sort(fresh.begin(), fresh.end(), before);
        std::vector<point> merged(points_.size() + fresh.size());
        std::merge(points_.begin(), points_.end(), fresh.begin(), fresh.end(), merged.begin(), before);
        nodes_.reserve(nodes_.size() + 1);
        nodes_.push_back(entry{std::string(name), std::move(node)});  // the last step that may throw
        points_.swap(merged);
    }

    /// Removes the node named `name` and its points; false when there is none.
    /// Its keys go to the nodes that own them in a ring built without it.
    bool remove(std::string_view name) {
        const auto found = find(name);
        if (found == nodes_.end()) return false;
        const std::size_t index = static_cast<std::size_t>(found - nodes_.begin());
        std::vector<point> kept;
        kept.reserve(points_.size() - static_cast<std::size_t>(points_per_node_));
        for (const point& p : points_) {
            if (p.node != index) kept.push_back({p.position, p.node > index ? p.node - 1 : p.node});
        }
        nodes_.erase(found);
        points_.swap(kept);
        return true;
    }

    /// The node that owns `key`: the first point at or after the position of
    /// hash_tag(key), wrapping around. Throws std::out_of_range when empty.
    [[nodiscard]] const Node& at(std::string_view key) const { return nodes_[owner(key)].node; }

    /// The name of the node that owns `key` (see at()).
    [[nodiscard]] std::string_view name_for(std::string_view key) const { return nodes_[owner(key)].name; }

    /// Whether a node named `name` is on the ring.
    [[nodiscard]] bool contains(std::string_view name) const noexcept { return find(name) != nodes_.end(); }

    /// The number of nodes.
    [[nodiscard]] std::size_t size() const noexcept { return nodes_.size(); }

    /// Whether the ring has no node.
    [[nodiscard]] bool empty() const noexcept { return nodes_.empty(); }

    /// The points each node owns.
    [[nodiscard]] int points_per_node() const noexcept { return points_per_node_; }

private:
    static constexpr const char* where = "hash_ring";

    struct entry {
        std::string name;
        Node node;
    };

    /// A node's point: its position on the ring and the node's index in nodes_.
    struct point {
        std::uint64_t position;
        std::size_t node;
    };

    [[nodiscard]] auto find(std::string_view name) const noexcept {
        return std::find_if(nodes_.begin(), nodes_.end(), [name](const entry& e) { return e.name == name; });
    }

    /// The name of node `index`; `pending` for the node add() is about to store.
    [[nodiscard]] std::string_view name_at(std::size_t index, std::string_view pending) const noexcept {
        return index < nodes_.size() ? std::string_view(nodes_[index].name) : pending;
    }

    /// The index of the node that owns `key`: one binary search, then a wrap.
    [[nodiscard]] std::size_t owner(std::string_view key) const {
        if (points_.empty()) throw std::out_of_range("hash_ring is empty");
        const std::uint64_t position = hash_(hash_tag(key));
        const auto first = std::lower_bound(points_.begin(), points_.end(), position,
                                            [](const point& p, std::uint64_t value) { return p.position < value; });
        return first == points_.end() ? points_.front().node : first->node;
    }

    int points_per_node_;
    [[no_unique_address]] Hash hash_{};
    std::vector<entry> nodes_;   ///< in order of addition
    std::vector<point> points_;  ///< sorted by (position, node name)
};

}  // namespace ratelimit::detail
