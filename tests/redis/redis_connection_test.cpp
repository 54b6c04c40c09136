// redis::connection against real servers: AUTH and SELECT on every new
// connection, argument checks, the command-size limit, and a server error
// (as opposed to no answer) leaving the circuit closed.

#include <chrono>
#include <stdexcept>
#include <string>
#include <thread>

#include <ratelimit/redis.hpp>

#include "support/catch.hpp"
#include "support/redis_server.hpp"

using namespace std::chrono_literals;
using ratelimit::redis::connection;
using ratelimit::redis::connection_options;
using ratelimit::redis::status;

namespace {

connection_options with_password(std::string password, std::string username = {}) {
    connection_options o{1000ms, 1000ms, 1};
    o.password = std::move(password);
    o.username = std::move(username);
    return o;
}

}  // namespace

TEST_CASE("a password is sent as AUTH on every new connection") {
    auto server = ratelimit_test::redis_server::start({"--requirepass", "s3cret"});
    connection right("127.0.0.1", server->port(), with_password("s3cret"));
    const ratelimit::redis::reply pong = right.command({"PING"});
    REQUIRE(pong.ok());
    CHECK(std::string(pong.get()->str, pong.get()->len) == "PONG");

    connection none("127.0.0.1", server->port(), connection_options{1000ms, 1000ms, 1});
    const ratelimit::redis::reply refused = none.command({"PING"});
    CHECK(refused.code() == status::server_error);  // NOAUTH: the server answered
    CHECK(refused.error().find("NOAUTH") != std::string::npos);
    CHECK_FALSE(none.circuit_open());

    connection wrong("127.0.0.1", server->port(), with_password("nope"));
    const ratelimit::redis::reply denied = wrong.command({"PING"});
    CHECK(denied.code() == status::unavailable);  // cannot get a usable connection
    CHECK(denied.error().find("cannot connect") != std::string::npos);
    CHECK(wrong.circuit_open());
}

TEST_CASE("a limiter behind a password works, and fails closed with a wrong one") {
    auto server = ratelimit_test::redis_server::start({"--requirepass", "s3cret"});
    connection right("127.0.0.1", server->port(), with_password("s3cret"));
    connection wrong("127.0.0.1", server->port(), with_password("nope"));
    ratelimit::redis::token_bucket<> good(right, "auth", ratelimit::rate::per_hour(1), 2);
    ratelimit::redis::token_bucket<> bad(wrong, "auth", ratelimit::rate::per_hour(1), 2);
    CHECK(good.try_acquire(2));
    CHECK_FALSE(good.try_acquire());
    CHECK_FALSE(bad.try_acquire());
    CHECK(bad.outages() == 1);
}

TEST_CASE("an ACL user name goes with the password") {
    auto server = ratelimit_test::redis_server::start();
    REQUIRE(server->command("ACL SETUSER limiter on >pw ~* +@all"));
    connection user("127.0.0.1", server->port(), with_password("pw", "limiter"));
    CHECK(user.command({"PING"}).ok());
    connection other("127.0.0.1", server->port(), with_password("pw", "nobody"));
    CHECK(other.command({"PING"}).code() == status::unavailable);
}

TEST_CASE("database selects the logical database on every new connection") {
    auto& server = ratelimit_test::redis_server::shared();
    connection_options db3{1000ms, 1000ms, 2};
    db3.database = 3;
    connection three("127.0.0.1", server.port(), db3);
    connection zero("127.0.0.1", server.port(), connection_options{1000ms, 1000ms, 2});
    const std::string key = "select-" + std::to_string(::getpid());
    REQUIRE(three.command({"SET", key, "here"}).ok());
    const ratelimit::redis::reply in_zero = zero.command({"GET", key});
    REQUIRE(in_zero.ok());
    CHECK(in_zero.get()->type == REDIS_REPLY_NIL);
    const ratelimit::redis::reply in_three = three.command({"GET", key});
    REQUIRE(in_three.ok());
    CHECK(std::string(in_three.get()->str, in_three.get()->len) == "here");
    (void)three.command({"DEL", key});
}

TEST_CASE("bad connection options are refused with the option named") {
    CHECK_THROWS_WITH(connection("127.0.0.1", 70000), Catch::Contains("port must be in [1, 65535], got 70000"));
    CHECK_THROWS_WITH(connection("127.0.0.1", 6379, connection_options{200ms, 100ms, 0}),
                      Catch::Contains("pool_size must be >= 1, got 0"));
    CHECK_THROWS_WITH(connection("127.0.0.1", 6379, connection_options{0ms, 100ms, 1}),
                      Catch::Contains("connect_timeout must be > 0, got 0ms"));
    CHECK_THROWS_WITH(connection("127.0.0.1", 6379, connection_options{200ms, -1ms, 1}),
                      Catch::Contains("command_timeout must be > 0, got -1ms"));
    connection_options negative_db{};
    negative_db.database = -1;
    CHECK_THROWS_WITH(connection("127.0.0.1", 6379, negative_db), Catch::Contains("database must be >= 0, got -1"));
}

TEST_CASE("an error reply is a server error, not an outage: the circuit stays closed") {
    connection c("127.0.0.1", ratelimit_test::redis_server::shared().port(), connection_options{1000ms, 1000ms, 1});
    const ratelimit::redis::reply r = c.command({"NOSUCHCOMMAND"});
    CHECK(r.code() == status::server_error);
    CHECK_FALSE(r.error().empty());
    CHECK_FALSE(c.circuit_open());
    const std::string_view too_many[25] = {"PING"};
    CHECK(c.command(std::span<const std::string_view>(too_many, 25)).code() == status::server_error);
    CHECK(c.command({"PING"}).ok());
}

TEST_CASE("the circuit opens after breaker_threshold failures in a row, and a success resets the count") {
    auto server = ratelimit_test::redis_server::start();
    connection_options o{200ms, 200ms, 1};
    o.breaker_threshold = 3;
    o.breaker_cooldown = 10s;
    connection c("127.0.0.1", server->port(), o);
    REQUIRE(c.command({"PING"}).ok());
    server->kill9();
    CHECK(c.command({"PING"}).code() == status::unavailable);
    CHECK_FALSE(c.circuit_open());
    CHECK(c.command({"PING"}).code() == status::unavailable);
    CHECK_FALSE(c.circuit_open());
    CHECK(c.command({"PING"}).code() == status::unavailable);
    CHECK(c.circuit_open());  // the third failure in a row
    const auto start = std::chrono::steady_clock::now();
    CHECK(c.command({"PING"}).error().find("circuit open") != std::string::npos);
    CHECK(std::chrono::steady_clock::now() - start < 50ms);  // without touching the network

    connection_options zero{};
    zero.breaker_threshold = 0;
    CHECK_THROWS_WITH(connection("127.0.0.1", 6379, zero), Catch::Contains("breaker_threshold must be >= 1, got 0"));
}

TEST_CASE("failures that are not in a row do not open the circuit") {
    auto server = ratelimit_test::redis_server::start();
    connection_options o{200ms, 200ms, 1};
    o.breaker_threshold = 2;
    connection c("127.0.0.1", server->port(), o);
    server->kill9();
    CHECK(c.command({"PING"}).code() == status::unavailable);  // 1 failure
    server->restart();
    CHECK(c.command({"PING"}).ok());  // resets the count
    server->kill9();
    CHECK(c.command({"PING"}).code() == status::unavailable);  // 1 failure again
    CHECK_FALSE(c.circuit_open());
}

TEST_CASE("a wrong password is named as an authentication failure with the server's reason, not as silence") {
    auto server = ratelimit_test::redis_server::start({"--requirepass", "s3cret"});
    connection wrong("127.0.0.1", server->port(), with_password("nope"));
    const ratelimit::redis::reply denied = wrong.command({"PING"});
    CHECK(denied.code() == status::unavailable);  // limiters apply their policy
    CHECK_THAT(denied.error(), Catch::Contains("authentication failed"));
    CHECK_THAT(denied.error(), Catch::Contains("WRONGPASS"));  // the server's own words
    // The fail_closed limiter's exception says why too.
    ratelimit::redis::token_bucket<> bucket(wrong, "auth-named", ratelimit::rate::per_hour(1), 2);
    std::this_thread::sleep_for(300ms);  // past the breaker's cooldown: the call connects again
    try {
        (void)bucket.acquire();
        FAIL("acquire should throw unavailable");
    } catch (const ratelimit::redis::unavailable& e) {
        CHECK_THAT(std::string(e.what()), Catch::Contains("authentication failed"));
        CHECK_THAT(std::string(e.what()), Catch::Contains("WRONGPASS"));
    }
}

TEST_CASE("refused() and last_error() tell every user of a connection that the server refused it") {
    auto server = ratelimit_test::redis_server::start({"--requirepass", "s3cret"});
    connection wrong("127.0.0.1", server->port(), with_password("nope"));
    connection right("127.0.0.1", server->port(), with_password("s3cret"));
    connection down("127.0.0.1", 1, connection_options{200ms, 200ms, 1});  // nothing listens on port 1
    CHECK_FALSE(wrong.refused());
    CHECK(wrong.last_error().empty());
    (void)wrong.command({"PING"});
    CHECK(wrong.refused());
    CHECK_THAT(wrong.last_error(), Catch::Contains("authentication failed: WRONGPASS"));
    CHECK(right.command({"PING"}).ok());
    CHECK_FALSE(right.refused());
    (void)down.command({"PING"});
    CHECK_FALSE(down.refused());  // no answer is an outage, not a refusal
    CHECK_THAT(down.last_error(), Catch::Contains("cannot connect"));
    CHECK(down.last_error().find("authentication") == std::string::npos);
}
