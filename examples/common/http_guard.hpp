#pragma once
// examples/common/http_guard.hpp: what the gateway and mock_upstream do about
// hostile HTTP on top of cpp-httplib (Debian 12: 0.11, thread per connection).
//
//  - framing_error: a request whose body length is ambiguous (RFC 9112 §6.3:
//    Content-Length headers that disagree, Transfer-Encoding with
//    Content-Length, a transfer coding other than chunked) is refused before
//    its body is read, so a front proxy and this server can never disagree on
//    where the next request starts (request smuggling).
//  - read_body: reads a body through httplib's content reader, chunked or
//    not, and stops at a byte limit or a deadline: memory stays O(limit)
//    whatever the client sends (httplib's own reader ignores the payload
//    limit for chunked bodies and reads them whole).
//  - close_after_answer: a connection whose body was refused unread cannot
//    carry another request (the rest of the body would be parsed as one): after
//    the answer is written, the server sends FIN, discards what the client
//    still sends for a short linger (so it can read the answer instead of
//    getting a reset), then ends the connection.
//  - for_each_connection: the accepted sockets of this process on a port,
//    found in /proc/self/fd (httplib does not expose them).
//
// Thread-safety: every function may be called from any handler thread;
// close_after_answer marks the calling thread's current request (httplib runs
// a request's pre-routing handler, handler and logger on one thread).

#include <httplib.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <condition_variable>
#include <map>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <vector>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>

namespace examples::http {

// ---------------------------------------------------------------------------
// Sockets
// ---------------------------------------------------------------------------

inline int port_of(const sockaddr_storage& a) {
    if (a.ss_family == AF_INET) return ntohs(reinterpret_cast<const sockaddr_in&>(a).sin_port);
    if (a.ss_family == AF_INET6) return ntohs(reinterpret_cast<const sockaddr_in6&>(a).sin6_port);
    return -1;
}

/// Calls `visit(fd, peer_host, peer_port)` for each connected socket of this
/// process whose local port is `local_port` (the server's accepted
/// connections; the listening socket has no peer, and the process's own client
/// sockets have another local port) until it returns true. Linux: reads
/// /proc/self/fd; O(open descriptors).
template <class Visit>
void for_each_connection(int local_port, Visit visit) {
    DIR* dir = ::opendir("/proc/self/fd");
    if (dir == nullptr) return;
    while (const dirent* entry = ::readdir(dir)) {
        int fd = -1;
        const std::string_view name(entry->d_name);
        if (std::from_chars(name.data(), name.data() + name.size(), fd).ec != std::errc{} || fd == ::dirfd(dir)) continue;
        sockaddr_storage local{}, peer{};
        socklen_t local_len = sizeof local, peer_len = sizeof peer;
        if (::getsockname(fd, reinterpret_cast<sockaddr*>(&local), &local_len) != 0 || port_of(local) != local_port) continue;
        if (::getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &peer_len) != 0) continue;
        std::array<char, NI_MAXHOST> host{};
        if (::getnameinfo(reinterpret_cast<sockaddr*>(&peer), peer_len, host.data(), host.size(), nullptr, 0,
                          NI_NUMERICHOST) != 0)
            continue;
        if (visit(fd, std::string_view(host.data()), port_of(peer))) break;
    }
    ::closedir(dir);
}

/// The socket this request arrived on, found by (local port, peer address,
/// peer port), or -1.
inline int socket_of(const httplib::Request& req) {
    int found = -1;
    for_each_connection(req.local_port, [&](int fd, std::string_view host, int port) {
        if (port != req.remote_port || host != req.remote_addr) return false;
        found = fd;
        return true;
    });
    return found;
}

// ---------------------------------------------------------------------------
// Framing
// ---------------------------------------------------------------------------

/// Why the request's body length is ambiguous, or nothing. Refused: two
/// Content-Length values that differ (also as one comma list), a
/// Content-Length that is not a decimal number, more than one
/// Transfer-Encoding header, a Transfer-Encoding other than `chunked`, and
/// Transfer-Encoding together with Content-Length.
inline std::optional<std::string> framing_error(const httplib::Request& req) {
    std::optional<std::string_view> length;
    const auto lengths = req.headers.equal_range("Content-Length");
    for (auto it = lengths.first; it != lengths.second; ++it) {
        std::string_view list = it->second;
        while (!list.empty()) {  // "5, 5" is one value said twice
            const std::size_t comma = list.find(',');
            std::string_view v = list.substr(0, comma);
            list = comma == std::string_view::npos ? std::string_view{} : list.substr(comma + 1);
            while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
            while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) v.remove_suffix(1);
            std::uint64_t n = 0;
            const auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
            if (v.empty() || ec != std::errc{} || end != v.data() + v.size())
                return "Content-Length must be a decimal number of bytes.";
            if (length && *length != v) return "The request has Content-Length headers that disagree.";
            length = v;
        }
    }
    const std::size_t codings = req.get_header_value_count("Transfer-Encoding");
    if (codings > 1) return "The request has more than one Transfer-Encoding header.";
    if (codings == 1) {
        const std::string& te = req.get_header_value("Transfer-Encoding");
        if (te.size() != 7 || ::strncasecmp(te.c_str(), "chunked", 7) != 0)
            return "Only Transfer-Encoding: chunked is accepted.";
        if (req.has_header("Content-Length")) return "The request has both Transfer-Encoding and Content-Length.";
    }
    return std::nullopt;
}

/// The declared Content-Length (framing_error checked), or nothing.
inline std::optional<std::uint64_t> content_length(const httplib::Request& req) {
    if (!req.has_header("Content-Length")) return std::nullopt;
    const std::string text = req.get_header_value("Content-Length");  // httplib 0.11 returns a copy
    std::string_view v = text;
    v = v.substr(0, v.find(','));
    while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
    std::uint64_t n = 0;
    std::from_chars(v.data(), v.data() + v.size(), n);
    return n;
}

// ---------------------------------------------------------------------------
// Ending a connection after its answer
// ---------------------------------------------------------------------------

namespace detail {
inline thread_local bool close_requested = false;
}

/// Marks the calling thread's request: its connection ends once the answer is written.
inline void close_after_answer(httplib::Response& res) {
    detail::close_requested = true;
    res.set_header("Connection", "close");
}

/// Call from the server's logger (it runs after the answer is written). For a
/// request marked by close_after_answer: half-closes the socket (FIN after
/// the answer), discards what the client still sends for at most `linger`,
/// then puts /dev/null in the socket's place, so httplib's keep-alive loop
/// reads end of file and closes it. Never reads more than it discards.
inline void end_marked_connection(const httplib::Request& req, std::chrono::milliseconds linger) {
    if (!detail::close_requested) return;
    detail::close_requested = false;
    const int fd = socket_of(req);
    if (fd < 0) return;
    ::shutdown(fd, SHUT_WR);
    const auto until = std::chrono::steady_clock::now() + linger;
    std::array<char, 16384> sink{};
    for (;;) {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - std::chrono::steady_clock::now());
        if (left.count() <= 0) break;
        pollfd p{fd, POLLIN, 0};
        if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) break;
        if (::recv(fd, sink.data(), sink.size(), MSG_DONTWAIT) <= 0) break;  // end of file, or an error
    }
    const int null = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (null >= 0) {
        ::dup2(null, fd);  // closes the socket; httplib's next read of fd sees end of file
        ::close(null);
    } else {
        ::shutdown(fd, SHUT_RDWR);
    }
}

// ---------------------------------------------------------------------------
// Bodies
// ---------------------------------------------------------------------------

/// How reading a body ended.
enum class body_status { complete, too_large, too_slow, broken };

struct body {
    std::string bytes;
    body_status status = body_status::complete;
};

/// Reads the body through httplib's content reader (chunked or with a
/// Content-Length), keeping at most `max_bytes`: one byte more stops the read
/// (too_large); so does the clock passing `deadline` (too_slow, checked as
/// each piece arrives; a client that sends nothing meets the server's read
/// timeout instead: broken). Memory: at most max_bytes plus one piece.
inline body read_body(const httplib::ContentReader& reader, std::uint64_t max_bytes,
                      std::chrono::steady_clock::time_point deadline) {
    body out;
    const bool read = reader([&](const char* data, std::size_t n) {
        if (out.bytes.size() + n > max_bytes) {
            out.status = body_status::too_large;
            return false;
        }
        if (std::chrono::steady_clock::now() > deadline) {
            out.status = body_status::too_slow;
            return false;
        }
        out.bytes.append(data, n);
        return true;
    });
    if (!read && out.status == body_status::complete) out.status = body_status::broken;
    return out;
}

// ---------------------------------------------------------------------------
// Slow and idle connections
// ---------------------------------------------------------------------------

/// Watches a thread-per-connection server's accepted connections and ends
/// those that hold a worker without giving it work (slowloris).
///
/// Model: a connection is either in a handler (between the pre-routing
/// handler, `started`, and the logger, `finished`) or reading: waiting for,
/// or receiving, the headers of its next request. A reading connection gets
/// `request_timeout` from its accept or its last answer to complete its
/// headers, whatever it trickles in; then its socket is shut and its worker
/// freed. An address with more than `max_per_address` connections loses its
/// reading connections beyond that, longest-reading first (a connection in a
/// handler is never cut here: its own timeouts bound it).
///
/// Guarantee: a reading connection holds a worker at most request_timeout +
/// one sweep (100 ms); one address holds at most max_per_address workers
/// with reading connections after a sweep. Limits of the model: httplib gives
/// every accepted connection a worker until then, so N addresses each at the
/// cap can hold N · max_per_address workers for request_timeout; size the
/// pool above the connections that must always get through (and above
/// max_per_address), and put a proxy that buffers requests in front when
/// the number of hostile addresses is unbounded.
///
/// Thread-safe. Cost: a sweep reads /proc/self/fd (O(open descriptors)).
class connection_watch {
public:
    connection_watch(std::chrono::milliseconds request_timeout, int max_per_address)
        : request_timeout_(request_timeout), max_per_address_(max_per_address) {}
    connection_watch(const connection_watch&) = delete;
    connection_watch& operator=(const connection_watch&) = delete;
    ~connection_watch() { stop(); }

    /// Sweeps the connections accepted on `port` every 100 ms on its own thread.
    void start(int port) {
        thread_ = std::thread([this, port] {
            std::unique_lock lock(mutex_);
            while (!stopping_) {
                lock.unlock();
                sweep(port, std::chrono::steady_clock::now());
                lock.lock();
                wake_.wait_for(lock, std::chrono::milliseconds(100), [this] { return stopping_; });
            }
        });
    }
    void stop() {
        {
            const std::lock_guard lock(mutex_);
            stopping_ = true;
        }
        wake_.notify_all();
        if (thread_.joinable()) thread_.join();
    }

    /// A request's headers are in: its connection is in a handler.
    void started(const httplib::Request& req) {
        const std::lock_guard lock(mutex_);
        handling_[key_of(req)] = true;
    }
    /// Its answer is written: the connection reads its next request from now.
    void finished(const httplib::Request& req) {
        const std::lock_guard lock(mutex_);
        const std::string key = key_of(req);
        handling_[key] = false;
        answered_[key] = std::chrono::steady_clock::now();
    }

    /// Connections this watch has shut (too slow, or over an address's cap).
    [[nodiscard]] std::int64_t shut_count() const {
        const std::lock_guard lock(mutex_);
        return shut_;
    }

    /// One pass: learn new connections, forget closed ones, shut the slow and the excess.
    void sweep(int port, std::chrono::steady_clock::time_point now) {
        struct seen {
            int fd;
            std::string address, key;
        };
        std::vector<seen> live;
        for_each_connection(port, [&](int fd, std::string_view host, int peer_port) {
            live.push_back({fd, std::string(host), std::string(host) + "|" + std::to_string(peer_port)});
            return false;
        });
        const std::lock_guard lock(mutex_);
        std::unordered_map<std::string, connection> still;
        for (const seen& s : live) {
            const auto it = connections_.find(s.key);
            connection c = it != connections_.end() ? it->second : connection{s.fd, s.address, now, false};
            c.fd = s.fd;
            still[s.key] = c;
        }
        connections_.swap(still);
        for (auto it = handling_.begin(); it != handling_.end();) {  // forget connections that are gone
            if (connections_.count(it->first) == 0) {
                answered_.erase(it->first);
                it = handling_.erase(it);
            } else {
                ++it;
            }
        }
        std::map<std::string, std::vector<std::pair<std::chrono::steady_clock::time_point, connection*>>> reading_by_address;
        std::map<std::string, int> count_by_address;
        for (auto& [key, c] : connections_) {
            if (c.cut) continue;  // shut already; its worker is closing it
            ++count_by_address[c.address];
            const auto h = handling_.find(key);
            if (h != handling_.end() && h->second) continue;  // in a handler
            auto since = c.accepted;
            if (const auto a = answered_.find(key); a != answered_.end()) since = std::max(since, a->second);
            if (now - since > request_timeout_) {
                shut(c);
                --count_by_address[c.address];
            } else {
                reading_by_address[c.address].emplace_back(since, &c);
            }
        }
        for (auto& [address, reading] : reading_by_address) {
            std::sort(reading.begin(), reading.end(),  // longest reading first
                      [](const auto& a, const auto& b) { return a.first < b.first; });
            for (std::size_t i = 0; i < reading.size() && count_by_address[address] > max_per_address_; ++i) {
                shut(*reading[i].second);
                --count_by_address[address];
            }
        }
    }

private:
    struct connection {
        int fd = -1;
        std::string address;
        std::chrono::steady_clock::time_point accepted;
        bool cut = false;
    };
    static std::string key_of(const httplib::Request& req) { return req.remote_addr + "|" + std::to_string(req.remote_port); }
    void shut(connection& c) {  // requires mutex_
        ::shutdown(c.fd, SHUT_RDWR);  // the worker's read ends; httplib closes the socket
        c.cut = true;
        ++shut_;
    }

    std::chrono::milliseconds request_timeout_;
    int max_per_address_;
    mutable std::mutex mutex_;
    std::condition_variable wake_;
    bool stopping_ = false;
    std::thread thread_;
    std::unordered_map<std::string, connection> connections_;  ///< by "address|port"
    std::unordered_map<std::string, bool> handling_;
    std::unordered_map<std::string, std::chrono::steady_clock::time_point> answered_;
    std::int64_t shut_ = 0;
};

}  // namespace examples::http
