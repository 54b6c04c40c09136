#pragma once
// A real redis-server for the Redis tests, on a free loopback port.
//
// shared(): the server scripts/test started (RATELIMIT_REDIS_PORT), or one
// started here for the whole test process when that is unset. A test that
// kills or pauses its server makes its own with redis_server::start().

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <hiredis/hiredis.h>

namespace ratelimit_test {

class redis_server {
public:
    /// Starts a private server on a free loopback port and waits until it answers.
    /// `extra` are more redis-server arguments, e.g. {"--requirepass", "secret"}.
    static std::unique_ptr<redis_server> start(std::vector<std::string> extra = {}) {
        auto server = std::unique_ptr<redis_server>(new redis_server(free_port(), true));
        server->extra_ = std::move(extra);
        server->launch();
        return server;
    }

    /// The server all tests of this process share.
    static redis_server& shared() {
        static std::unique_ptr<redis_server> server = [] {
            if (const char* port = std::getenv("RATELIMIT_REDIS_PORT"); port != nullptr && *port != '\0') {
                return std::unique_ptr<redis_server>(new redis_server(std::atoi(port), false));
            }
            return start();
        }();
        return *server;
    }

    redis_server(const redis_server&) = delete;
    redis_server& operator=(const redis_server&) = delete;
    ~redis_server() { stop(SIGTERM); }

    [[nodiscard]] int port() const noexcept { return port_; }

    /// kill -9: the server dies mid-run, as in a crash.
    void kill9() { stop(SIGKILL); }
    /// Starts the server again on the same port (after kill9).
    void restart() { launch(); }
    /// SIGSTOP: the server keeps its sockets and state but answers nothing
    /// (a hung or partitioned server) until resume().
    void pause() {
        if (pid_ > 0) ::kill(pid_, SIGSTOP);
    }
    /// SIGCONT after pause(): the server answers again, its state intact.
    void resume() {
        if (pid_ > 0) ::kill(pid_, SIGCONT);
    }
    /// The server's process id (-1 for the shared server scripts/test started).
    [[nodiscard]] pid_t pid() const noexcept { return pid_; }

    /// Runs one command on a fresh connection (for setup: FLUSHALL, CLIENT PAUSE ...),
    /// after AUTH with `password` when given.
    bool command(const char* format, const char* password = nullptr) const {
        timeval tv{1, 0};
        redisContext* c = redisConnectWithTimeout("127.0.0.1", port_, tv);
        if (c == nullptr) return false;
        bool ok = false;
        if (c->err == 0 && password != nullptr) {
            auto* r = static_cast<redisReply*>(redisCommand(c, "AUTH %s", password));
            if (r != nullptr) freeReplyObject(r);
        }
        if (c->err == 0) {
            auto* r = static_cast<redisReply*>(redisCommand(c, format));
            ok = r != nullptr && r->type != REDIS_REPLY_ERROR;
            if (r != nullptr) freeReplyObject(r);
        }
        redisFree(c);
        return ok;
    }

private:
    redis_server(int port, bool owned) : port_(port), owned_(owned) {}

    static int free_port() {
        const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
        sockaddr_in address{};
        address.sin_family = AF_INET;
        address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        address.sin_port = 0;
        socklen_t length = sizeof address;
        if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 ||
            ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
            if (fd >= 0) ::close(fd);
            throw std::runtime_error("redis_server: no free loopback port");
        }
        ::close(fd);
        return ntohs(address.sin_port);
    }

    void launch() {
        if (!owned_) return;
        const char* binary = std::getenv("RATELIMIT_REDIS_SERVER");
        const std::string program = binary != nullptr && *binary != '\0' ? binary : "redis-server";
        const std::string port = std::to_string(port_);
        std::vector<std::string> args{program, "--port", port, "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no", "--logfile", "/dev/null"};
        args.insert(args.end(), extra_.begin(), extra_.end());
        std::vector<char*> argv;
        for (auto& a : args) argv.push_back(a.data());
        argv.push_back(nullptr);
        pid_ = ::fork();
        if (pid_ == 0) {
            ::execvp(argv[0], argv.data());
            ::_exit(127);
        }
        if (pid_ < 0) throw std::runtime_error("redis_server: fork failed");
        for (int i = 0; i < 500; ++i) {  // up to 5 s
            if (answers()) return;
            int status = 0;
            if (::waitpid(pid_, &status, WNOHANG) == pid_) {
                pid_ = -1;
                throw std::runtime_error("redis_server: " + program + " exited at start (port " + port + ")");
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
        stop(SIGKILL);
        throw std::runtime_error("redis_server: no answer on port " + port + " within 5 s");
    }

    void stop(int signal) {
        if (pid_ <= 0) return;
        ::kill(pid_, SIGCONT);  // a paused server must run to act on SIGTERM
        ::kill(pid_, signal);
        int status = 0;
        ::waitpid(pid_, &status, 0);
        pid_ = -1;
    }

    /// The server is up: it answers PING, with +PONG or with an error (NOAUTH).
    bool answers() const {
        timeval tv{1, 0};
        redisContext* c = redisConnectWithTimeout("127.0.0.1", port_, tv);
        if (c == nullptr) return false;
        bool up = false;
        if (c->err == 0) {
            auto* r = static_cast<redisReply*>(redisCommand(c, "PING"));
            up = r != nullptr;
            if (r != nullptr) freeReplyObject(r);
        }
        redisFree(c);
        return up;
    }

    int port_;
    bool owned_;
    std::vector<std::string> extra_;
    pid_t pid_ = -1;
};

}  // namespace ratelimit_test
