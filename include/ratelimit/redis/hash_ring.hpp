#pragma once
// ratelimit::redis::hash_ring: spreads limiter keys over several Redis servers.

#include <mutex>
#include <shared_mutex>
#include <string>
#include <string_view>

#include "../detail/consistent_hash.hpp"
#include "connection.hpp"

namespace ratelimit::redis {

/// Consistent hashing of limiter keys onto several Redis connections: each
/// named node owns `points_per_node` points on a 64-bit ring, and a key goes
/// to the node owning the first point at or after the key's hash (see
/// detail/consistent_hash.hpp for the exact, process-independent scheme).
///
/// Guarantee: every process with the same nodes maps a key to the same
/// connection; adding a node moves only the keys the new node takes over
/// (about 1/(nodes+1) of them), removing one moves only its own keys. A key
/// with a {hash tag} is placed by the tag, so `at("user1")` and the limiter's
/// state key "ratelimit:{user1}:tb" agree.
///
/// Thread-safe: lookups take a shared lock and cost O(log(nodes·points))
/// (about 90 ns for 16 nodes); add and remove take it exclusively. The ring
/// refers to connections it does not own: keep them alive while it is used.
class hash_ring {
public:
    explicit hash_ring(int points_per_node = 160) : ring_(points_per_node) {}

    /// Adds `c` under `name` (non-empty, unique; throws std::invalid_argument otherwise).
    void add(std::string_view name, connection& c) {
        std::unique_lock lock(mutex_);
        ring_.add(name, &c);
    }
    /// Removes the node named `name`; false when there is none.
    bool remove(std::string_view name) {
        std::unique_lock lock(mutex_);
        return ring_.remove(name);
    }
    /// The connection that holds `key`'s state. Throws std::out_of_range when empty.
    [[nodiscard]] connection& at(std::string_view key) const {
        std::shared_lock lock(mutex_);
        return *ring_.at(key);
    }
    /// The name of the node that holds `key`'s state. Throws std::out_of_range when empty.
    [[nodiscard]] std::string name_for(std::string_view key) const {
        std::shared_lock lock(mutex_);
        return std::string(ring_.name_for(key));
    }
    [[nodiscard]] std::size_t size() const {
        std::shared_lock lock(mutex_);
        return ring_.size();
    }
    [[nodiscard]] bool empty() const { return size() == 0; }

private:
    mutable std::shared_mutex mutex_;
    ratelimit::detail::consistent_hash<connection*> ring_;
};

}  // namespace ratelimit::redis
