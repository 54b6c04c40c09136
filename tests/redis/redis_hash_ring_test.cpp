// redis::hash_ring over real connections: limiters on different keys land on
// different servers, and one key's state lives on exactly one of them.

#include <map>
#include <memory>
#include <string>
#include <vector>

#include <unistd.h>

#include <ratelimit/redis.hpp>

#include "support/catch.hpp"
#include "support/redis_server.hpp"

using namespace std::chrono_literals;

TEST_CASE("hash_ring spreads keys over servers and each key's state lives on its own server only") {
    std::vector<std::unique_ptr<ratelimit_test::redis_server>> servers;
    std::vector<std::unique_ptr<ratelimit::redis::connection>> connections;
    ratelimit::redis::hash_ring ring;
    for (int i = 0; i < 3; ++i) {
        servers.push_back(ratelimit_test::redis_server::start());
        connections.push_back(std::make_unique<ratelimit::redis::connection>(
            "127.0.0.1", servers.back()->port(), ratelimit::redis::connection_options{1000ms, 1000ms, 1}));
        ring.add("node" + std::to_string(i), *connections.back());
    }
    CHECK(ring.size() == 3);
    std::map<std::string, int> per_node;
    for (int k = 0; k < 60; ++k) {
        const std::string key = "user" + std::to_string(k);
        ratelimit::redis::token_bucket<> bucket(ring.at(key), key, ratelimit::rate::per_hour(1), 2);
        REQUIRE(bucket.try_acquire());
        ++per_node[ring.name_for(key)];
        // The state key (with its {hash tag}) maps to the same node as the bare key.
        CHECK(&ring.at(bucket.key()) == &ring.at(key));
        int holders = 0;
        for (auto& c : connections) {
            const ratelimit::redis::reply r = c->command({"EXISTS", bucket.key()});
            REQUIRE(r.ok());
            holders += static_cast<int>(r.get()->integer);
        }
        CHECK(holders == 1);
    }
    CHECK(per_node.size() == 3);  // 60 keys: every node got some
    for (const auto& [name, count] : per_node) CHECK(count >= 5);
}

TEST_CASE("removing a node moves only its keys; an empty ring throws") {
    ratelimit::redis::connection a("127.0.0.1", 1), b("127.0.0.1", 2), c("127.0.0.1", 3);  // never contacted
    ratelimit::redis::hash_ring ring;
    CHECK_THROWS_AS(ring.at("k"), std::out_of_range);
    ring.add("a", a);
    ring.add("b", b);
    ring.add("c", c);
    CHECK_THROWS_AS(ring.add("a", c), std::invalid_argument);
    std::map<std::string, std::string> before;
    for (int k = 0; k < 3000; ++k) before["key" + std::to_string(k)] = ring.name_for("key" + std::to_string(k));
    CHECK(ring.remove("b"));
    CHECK_FALSE(ring.remove("b"));
    for (const auto& [key, node] : before) {
        if (node != "b") CHECK(ring.name_for(key) == node);
    }
}
