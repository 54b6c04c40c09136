// The consistent-hash ring behind ratelimit::redis::hash_ring
// (include/ratelimit/detail/consistent_hash.hpp): the fixed hash against
// published and hand-traced values, Redis Cluster's hash-tag rule, the lookup
// rule on hand-placed points, and on the real hash the balance and the
// minimal movement when a node comes and goes.

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <ratelimit/detail/consistent_hash.hpp>

#include "support/catch.hpp"

using ratelimit::detail::consistent_hash;
using ratelimit::detail::fmix64;
using ratelimit::detail::fnv1a64;
using ratelimit::detail::hash_tag;
using ratelimit::detail::ring_hash;

namespace {

template <class F>
std::string invalid_argument_message(F&& f) {
    try {
        f();
    } catch (const std::invalid_argument& e) {
        return e.what();
    }
    return "";
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

std::string key_number(int i) { return "key:" + std::to_string(i); }

/// A hash that places a string at the number its digits before the first '#'
/// spell ("150" at 150, "x{150}" at 150, "200#0" and "200#7" at 200), so a
/// test can put points and keys exactly where it wants them.
struct digits_hash {
    constexpr std::uint64_t operator()(std::string_view s) const noexcept {
        std::uint64_t value = 0;
        for (const char c : s) {
            if (c == '#') break;
            if (c >= '0' && c <= '9') value = value * 10 + static_cast<std::uint64_t>(c - '0');
        }
        return value;
    }
};

using hand_ring = consistent_hash<int, digits_hash>;

/// Four nodes "redis-0".."redis-3" holding 0..3, with the default 160 points each.
consistent_hash<int> four_nodes() {
    consistent_hash<int> ring;
    for (int i = 0; i < 4; ++i) ring.add("redis-" + std::to_string(i), i);
    return ring;
}

constexpr int key_count = 100'000;

}  // namespace

// ---------------------------------------------------------------- the hash

// Everything below is constexpr: the known answers are also checked at compile time.
static_assert(fnv1a64("") == 0xcbf29ce484222325ULL);
static_assert(fnv1a64("a") == 0xaf63dc4c8601ec8cULL);
static_assert(fmix64(0) == 0);
static_assert(ring_hash("") == 0xefd01f60ba992926ULL);
static_assert(hash_tag("rl:{user1}:a") == "user1");

TEST_CASE("fnv1a64 matches the published FNV-1a 64-bit test vectors", "[consistent_hash][hash]") {
    // From the FNV reference (Fowler, Noll, Vo; draft-eastlake-fnv): "" is the offset basis.
    CHECK(fnv1a64("") == 0xcbf29ce484222325ULL);
    CHECK(fnv1a64("a") == 0xaf63dc4c8601ec8cULL);
    CHECK(fnv1a64("foobar") == 0x85944171f73967e8ULL);
}

TEST_CASE("fnv1a64 of one byte is (basis xor byte) times the prime, mod 2^64", "[consistent_hash][hash]") {
    // 'a' = 0x61; 0xcbf29ce484222325 ^ 0x61 = 0xcbf29ce484222344; the FNV prime is 2^40 + 2^8 + 0xb3.
    const std::uint64_t prime = (std::uint64_t{1} << 40) + (1U << 8) + 0xb3;
    CHECK(prime == 0x100000001b3ULL);
    CHECK(fnv1a64("a") == 0xcbf29ce484222344ULL * prime);  // unsigned: wraps mod 2^64
    // Bytes are taken unsigned: 0xff is 255, not -1.
    CHECK(fnv1a64("\xff") == (0xcbf29ce484222325ULL ^ 0xffU) * prime);
}

TEST_CASE("fnv1a64 continues from a given state, so a hash can be fed in pieces", "[consistent_hash][hash]") {
    CHECK(fnv1a64("bar", fnv1a64("foo")) == fnv1a64("foobar"));
    CHECK(fnv1a64("", fnv1a64("foo")) == fnv1a64("foo"));
}

TEST_CASE("fmix64 is MurmurHash3's finalizer, traced step by step on 1", "[consistent_hash][hash]") {
    // k = 1: k ^= k >> 33 leaves 1; k *= 0xff51afd7ed558ccd gives the constant itself;
    // k ^= k >> 33: 0xff51afd7ed558ccd >> 33 = 0x7fa8d7eb, so 0xff51afd792fd5b26;
    // k *= 0xc4ceb9fe1a85ec53 gives 0xb456bcfc6ee99552; k ^= k >> 33 gives 0xb456bcfc34c2cb2c.
    CHECK((0xff51afd7ed558ccdULL >> 33) == 0x7fa8d7ebULL);
    CHECK((0xff51afd7ed558ccdULL ^ 0x7fa8d7ebULL) == 0xff51afd792fd5b26ULL);
    CHECK(0xff51afd792fd5b26ULL * 0xc4ceb9fe1a85ec53ULL == 0xb456bcfc6ee99552ULL);
    CHECK((0xb456bcfc6ee99552ULL ^ (0xb456bcfc6ee99552ULL >> 33)) == 0xb456bcfc34c2cb2cULL);
    CHECK(fmix64(1) == 0xb456bcfc34c2cb2cULL);
    CHECK(fmix64(0) == 0);
}

TEST_CASE("ring_hash is fmix64 of fnv1a64, with fixed values every platform must reproduce",
          "[consistent_hash][hash]") {
    // Computed with an independent Python reference (integers masked to 64 bits).
    CHECK(ring_hash("") == fmix64(0xcbf29ce484222325ULL));
    CHECK(ring_hash("") == 0xefd01f60ba992926ULL);
    CHECK(ring_hash("a") == 0x82a2a958a9bece5bULL);
    CHECK(ring_hash("foobar") == 0x2c22194922d1672bULL);
    CHECK(ring_hash("user1") == 0xcaf672d63552cd57ULL);
    CHECK(ring_hash("redis-0#0") == fmix64(fnv1a64("redis-0#0")));
}

// ---------------------------------------------------------------- hash tags

TEST_CASE("hash_tag keeps the content of the first non-empty {tag}, as Redis Cluster does",
          "[consistent_hash][hash_tag]") {
    CHECK(hash_tag("rl:{user1}:a") == "user1");
    CHECK(hash_tag("rl:{user1}:b") == "user1");
    CHECK(hash_tag("{user1}") == "user1");
    CHECK(hash_tag("a{b}c{d}") == "b");      // the first tag wins
    CHECK(hash_tag("a{b{c}d") == "b{c");     // first '{', then the first '}' after it
    CHECK(hash_tag("a}b{c}") == "c");        // a '}' before the first '{' is ignored
}

TEST_CASE("hash_tag gives the whole key for {}, unmatched braces or no braces", "[consistent_hash][hash_tag]") {
    CHECK(hash_tag("rl:{}:a") == "rl:{}:a");  // empty content
    CHECK(hash_tag("{}{a}") == "{}{a}");      // "{}" ends the search, as in Redis
    CHECK(hash_tag("rl:{user1") == "rl:{user1");
    CHECK(hash_tag("rl:user1}") == "rl:user1}");
    CHECK(hash_tag("rl:user1") == "rl:user1");
    CHECK(hash_tag("") == "");
}

// ------------------------------------------------- the lookup, by hand

TEST_CASE("a key goes to the first point at or after its position, wrapping around", "[consistent_hash][lookup]") {
    hand_ring ring(1);  // one point each: "100#0" at 100, "200#0" at 200, "300#0" at 300
    ring.add("100", 1);
    ring.add("200", 2);
    ring.add("300", 3);
    CHECK(ring.at("0") == 1);
    CHECK(ring.at("100") == 1);  // at the point itself
    CHECK(ring.at("101") == 2);
    CHECK(ring.at("200") == 2);
    CHECK(ring.at("250") == 3);
    CHECK(ring.at("300") == 3);
    CHECK(ring.at("301") == 1);  // past the last point: wraps to the first
    CHECK(ring.name_for("150") == "200");
}

TEST_CASE("a key with a hash tag is placed by the tag alone", "[consistent_hash][lookup]") {
    hand_ring ring(1);
    ring.add("100", 1);
    ring.add("200", 2);
    // "9{150}x" is placed at 150 (the tag): node 200. Whole, its digits would be 9150: wrapped to 100.
    CHECK(ring.at("9{150}x") == 2);
    CHECK(ring.at("9{150") == 1);   // unmatched: the whole key, 9150
    CHECK(ring.at("9{}150") == 1);  // empty tag: the whole key, 9150
}

TEST_CASE("equal points go to the node with the smallest name, whatever the order of addition",
          "[consistent_hash][lookup]") {
    // "0200#0" and "200#0" both sit at 200; "0200" < "200".
    hand_ring forward(1);
    forward.add("0200", 1);
    forward.add("200", 2);
    hand_ring backward(1);
    backward.add("200", 2);
    backward.add("0200", 1);
    CHECK(forward.at("150") == 1);
    CHECK(backward.at("150") == 1);
    CHECK(backward.name_for("200") == "0200");
    // Removing the winner hands its keys to the other node at the same point.
    CHECK(backward.remove("0200"));
    CHECK(backward.at("150") == 2);
}

TEST_CASE("a ring of one node owns every key, before, at and after its points", "[consistent_hash][lookup]") {
    hand_ring ring(3);  // "7#0", "7#1", "7#2" all sit at 7
    ring.add("7", 70);
    CHECK(ring.at("0") == 70);
    CHECK(ring.at("7") == 70);
    CHECK(ring.at("8") == 70);  // wraps
}

TEST_CASE("with one point per node, a key goes to the node at the first ring_hash(name#0) at or after it",
          "[consistent_hash][lookup]") {
    // The real scheme, recomputed by hand: sort the three points, find the key's successor.
    consistent_hash<std::string> ring(1);
    const std::array<std::string, 3> names{"a", "b", "c"};
    std::map<std::uint64_t, std::string> points;  // position -> name, sorted
    for (const std::string& name : names) {
        ring.add(name, name);
        points.emplace(ring_hash(name + "#0"), name);
    }
    REQUIRE(points.size() == 3);
    for (int i = 0; i < 1000; ++i) {
        const std::string key = key_number(i);
        const auto successor = points.lower_bound(ring_hash(key));
        const std::string& expected = successor == points.end() ? points.begin()->second : successor->second;
        INFO(key);
        CHECK(ring.at(key) == expected);
    }
}

// ------------------------------------------------- the real hash: stability

TEST_CASE("the same key always maps to the same node", "[consistent_hash][stability]") {
    const consistent_hash<int> ring = four_nodes();
    for (int i = 0; i < 1000; ++i) {
        const std::string key = key_number(i);
        const int first = ring.at(key);
        CHECK(ring.at(key) == first);
        CHECK(ring.name_for(key) == "redis-" + std::to_string(first));
    }
}

TEST_CASE("rings built in different orders, with detours, agree on every key", "[consistent_hash][stability]") {
    const consistent_hash<int> forward = four_nodes();
    consistent_hash<int> backward;
    backward.add("redis-3", 3);
    backward.add("extra", 99);
    backward.add("redis-2", 2);
    backward.add("redis-1", 1);
    CHECK(backward.remove("extra"));
    backward.add("redis-0", 0);
    REQUIRE(backward.size() == 4);
    int disagreements = 0;
    for (int i = 0; i < key_count; ++i) {
        if (forward.at(key_number(i)) != backward.at(key_number(i))) ++disagreements;
    }
    CHECK(disagreements == 0);
}

TEST_CASE("known placements pin the scheme across compilers and platforms", "[consistent_hash][stability]") {
    // Owners of "key:0".."key:15" on redis-0..redis-3 with 160 points each, from an
    // independent Python reference of the documented scheme (sort all 640 points
    // ring_hash("redis-<n>#<i>"), take the first at or after ring_hash(key), wrap).
    // If these change, every deployed ring moves its keys.
    const consistent_hash<int> ring = four_nodes();
    const std::array<int, 16> expected{1, 2, 2, 2, 0, 0, 0, 0, 2, 2, 0, 1, 3, 0, 1, 2};
    for (int i = 0; i < 16; ++i) {
        INFO(key_number(i));
        CHECK(ring.at(key_number(i)) == expected[static_cast<std::size_t>(i)]);
    }
}

// ------------------------------------------------- the real hash: balance

TEST_CASE("four nodes with 160 points each get 25% of 100,000 keys, within 15%..35%",
          "[consistent_hash][balance]") {
    // A node's share is the sum of its 160 arcs; its standard deviation is about
    // 25% / sqrt(160) = 2.0 percentage points, and sampling 100,000 keys adds
    // sqrt(0.25 * 0.75 / 100000) = 0.14 points. 15%..35% is five standard
    // deviations each side: a sound hash passes, a ring whose points cluster fails
    // (FNV-1a without the fmix64 finalizer gives 13.9% / 37.2% here and fails).
    const consistent_hash<int> ring = four_nodes();
    std::array<int, 4> count{};
    for (int i = 0; i < key_count; ++i) ++count[static_cast<std::size_t>(ring.at(key_number(i)))];
    for (std::size_t node = 0; node < count.size(); ++node) {
        INFO("redis-" << node << " got " << count[node] << " of " << key_count);
        CHECK(count[node] >= key_count * 15 / 100);
        CHECK(count[node] <= key_count * 35 / 100);
    }
}

TEST_CASE("keys sharing a hash tag all land on one node; keys with {} spread", "[consistent_hash][balance]") {
    const consistent_hash<int> ring = four_nodes();
    CHECK(ring.at("rl:{user1}:a") == ring.at("rl:{user1}:b"));
    CHECK(ring.at("rl:{user1}:a") == ring.at("user1"));  // placed by the tag's content alone
    std::array<int, 4> tagged{};
    std::array<int, 4> empty_tag{};
    for (int i = 0; i < 1000; ++i) {
        ++tagged[static_cast<std::size_t>(ring.at("rl:{user1}:" + std::to_string(i)))];
        ++empty_tag[static_cast<std::size_t>(ring.at("rl:{}:" + std::to_string(i)))];
    }
    int tagged_nodes = 0;
    int empty_tag_nodes = 0;
    for (std::size_t node = 0; node < 4; ++node) {
        tagged_nodes += tagged[node] > 0 ? 1 : 0;
        empty_tag_nodes += empty_tag[node] > 0 ? 1 : 0;
    }
    CHECK(tagged_nodes == 1);
    CHECK(empty_tag_nodes == 4);  // "{}" hashes the whole key: 1000 keys reach every node
}

// ------------------------------------------------- the real hash: movement

TEST_CASE("adding a fifth node moves only keys to it, about a fifth of them", "[consistent_hash][movement]") {
    consistent_hash<int> ring = four_nodes();
    std::vector<int> before(key_count);
    for (int i = 0; i < key_count; ++i) before[static_cast<std::size_t>(i)] = ring.at(key_number(i));
    ring.add("redis-4", 4);
    int moved_to_new = 0;
    int moved_between_old = 0;
    for (int i = 0; i < key_count; ++i) {
        const int now = ring.at(key_number(i));
        if (now == before[static_cast<std::size_t>(i)]) continue;
        if (now == 4) {
            ++moved_to_new;
        } else {
            ++moved_between_old;
        }
    }
    CHECK(moved_between_old == 0);
    // Expected 1/5 = 20%, standard deviation about 20% / sqrt(160) = 1.6 points: 12%..28% is five.
    INFO("moved to redis-4: " << moved_to_new << " of " << key_count);
    CHECK(moved_to_new >= key_count * 12 / 100);
    CHECK(moved_to_new <= key_count * 28 / 100);
}

TEST_CASE("removing the fifth node moves exactly its keys back", "[consistent_hash][movement]") {
    const consistent_hash<int> original = four_nodes();
    consistent_hash<int> ring = four_nodes();
    ring.add("redis-4", 4);
    std::vector<int> with_fifth(key_count);
    for (int i = 0; i < key_count; ++i) with_fifth[static_cast<std::size_t>(i)] = ring.at(key_number(i));
    CHECK(ring.remove("redis-4"));
    int moved_from_fifth = 0;
    int moved_otherwise = 0;
    int differs_from_original = 0;
    for (int i = 0; i < key_count; ++i) {
        const int now = ring.at(key_number(i));
        const int then = with_fifth[static_cast<std::size_t>(i)];
        if (now != then) ++(then == 4 ? moved_from_fifth : moved_otherwise);
        if (then == 4) CHECK(now != 4);
        if (now != original.at(key_number(i))) ++differs_from_original;
    }
    CHECK(moved_otherwise == 0);
    CHECK(moved_from_fifth > 0);
    CHECK(differs_from_original == 0);
}

TEST_CASE("removing a node that is not the newest moves only its own keys", "[consistent_hash][movement]") {
    consistent_hash<int> ring = four_nodes();
    std::vector<int> before(key_count);
    for (int i = 0; i < key_count; ++i) before[static_cast<std::size_t>(i)] = ring.at(key_number(i));
    CHECK(ring.remove("redis-1"));  // shifts the indices of redis-2 and redis-3 inside the ring
    int wrong = 0;
    for (int i = 0; i < key_count; ++i) {
        const int was = before[static_cast<std::size_t>(i)];
        const int now = ring.at(key_number(i));
        if (was == 1 ? now == 1 : now != was) ++wrong;
    }
    CHECK(wrong == 0);
}

// ------------------------------------------------- members and bad arguments

TEST_CASE("size, empty and contains follow add and remove", "[consistent_hash][members]") {
    consistent_hash<std::string> ring(8);
    CHECK(ring.empty());
    CHECK(ring.size() == 0);
    CHECK(ring.points_per_node() == 8);
    ring.add("a", "node a");
    ring.add("b", "node b");
    CHECK_FALSE(ring.empty());
    CHECK(ring.size() == 2);
    CHECK(ring.contains("a"));
    CHECK_FALSE(ring.remove("c"));  // not there: nothing changes
    CHECK(ring.size() == 2);
    CHECK(ring.remove("a"));
    CHECK_FALSE(ring.contains("a"));
    CHECK(ring.at("anything") == "node b");  // one node owns the whole ring
    CHECK(ring.name_for("anything") == "b");
    ring.add("a", "node a again");  // a removed name may come back
    CHECK(ring.size() == 2);
}

TEST_CASE("a node only needs to be movable", "[consistent_hash][members]") {
    consistent_hash<std::unique_ptr<int>> ring(4);
    ring.add("only", std::make_unique<int>(42));
    CHECK(*ring.at("k") == 42);
}

TEST_CASE("an empty ring throws out_of_range on lookup", "[consistent_hash][errors]") {
    consistent_hash<int> ring;
    CHECK_THROWS_AS((void)ring.at("k"), std::out_of_range);
    CHECK_THROWS_AS((void)ring.name_for("k"), std::out_of_range);
    try {
        (void)ring.at("k");
    } catch (const std::out_of_range& e) {
        CHECK(std::string(e.what()) == "hash_ring is empty");
    }
    ring.add("a", 1);
    CHECK(ring.remove("a"));
    CHECK_THROWS_AS((void)ring.at("k"), std::out_of_range);  // emptied again
}

TEST_CASE("points_per_node outside [1, 4096] throws, naming it and its value", "[consistent_hash][errors]") {
    const std::string zero = invalid_argument_message([] { consistent_hash<int> ring(0); });
    CHECK(contains(zero, "points_per_node"));
    CHECK(contains(zero, "got 0"));
    CHECK(contains(invalid_argument_message([] { consistent_hash<int> ring(-1); }), "got -1"));
    CHECK(contains(invalid_argument_message([] { consistent_hash<int> ring(4097); }), "got 4097"));
    CHECK_NOTHROW(consistent_hash<int>(1));
    CHECK_NOTHROW(consistent_hash<int>(4096));
}

TEST_CASE("an empty or duplicate name throws, naming it, and changes nothing", "[consistent_hash][errors]") {
    consistent_hash<int> ring;
    ring.add("a", 1);
    const std::string empty = invalid_argument_message([&] { ring.add("", 2); });
    CHECK(contains(empty, "name"));
    CHECK(contains(empty, "empty"));
    const std::string duplicate = invalid_argument_message([&] { ring.add("a", 3); });
    CHECK(contains(duplicate, "name \"a\""));
    CHECK(contains(duplicate, "already"));
    CHECK(ring.size() == 1);
    CHECK(ring.at("k") == 1);
}
