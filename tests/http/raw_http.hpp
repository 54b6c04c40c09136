#pragma once
// Raw HTTP over loopback for the gateway and mock_upstream tests: requests
// httplib::Client would never send (ambiguous lengths, endless chunked bodies,
// slow headers), and what a server process holds in memory.

#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <fstream>
#include <string>
#include <string_view>

namespace raw_http {

/// A TCP connection to 127.0.0.1:port (fd -1 when it could not connect).
struct connection {
    explicit connection(int port) {
        fd = ::socket(AF_INET, SOCK_STREAM, 0);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_port = htons(static_cast<std::uint16_t>(port));
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (fd >= 0 && ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
            ::close(fd);
            fd = -1;
        }
    }
    ~connection() {
        if (fd >= 0) ::close(fd);
    }
    connection(const connection&) = delete;
    connection& operator=(const connection&) = delete;

    /// Sends all of `text`; false when the peer stopped taking it.
    bool send(std::string_view text) const {
        while (!text.empty()) {
            const ssize_t n = ::send(fd, text.data(), text.size(), MSG_NOSIGNAL);
            if (n <= 0) return false;
            text.remove_prefix(static_cast<std::size_t>(n));
        }
        return true;
    }
    /// Everything received until the peer closes or `limit` passes; `closed` says which.
    std::string receive_until_closed(std::chrono::milliseconds limit, bool& closed) const {
        std::string all;
        closed = false;
        const auto until = std::chrono::steady_clock::now() + limit;
        while (std::chrono::steady_clock::now() < until) {
            pollfd p{fd, POLLIN, 0};
            if (::poll(&p, 1, 50) <= 0) continue;
            char buffer[4096];
            const ssize_t n = ::recv(fd, buffer, sizeof buffer, 0);
            if (n <= 0) {
                closed = true;
                break;
            }
            all.append(buffer, static_cast<std::size_t>(n));
        }
        return all;
    }
    int fd = -1;
};

/// How many HTTP responses `text` holds (status lines).
inline int responses_in(const std::string& text) {
    int n = 0;
    for (std::size_t at = text.find("HTTP/1.1 "); at != std::string::npos; at = text.find("HTTP/1.1 ", at + 1)) ++n;
    return n;
}

/// What an upload saw: the answer's first bytes and how much of the body went out before it.
struct upload {
    std::string answer;
    std::uint64_t body_bytes_sent = 0;
};

/// Sends `head` (request line and headers, ending in the blank line), then a
/// body of `total` zero bytes, as 64 KiB chunks when `chunked`, else raw;
/// stops as soon as an answer arrives, the server stops taking bytes, or
/// `limit` passes. The answer is read for up to 2 s more after the body ends.
inline upload send_large_body(int port, const std::string& head, std::uint64_t total, bool chunked,
                              std::chrono::seconds limit) {
    upload out;
    connection c(port);
    if (c.fd < 0 || !c.send(head)) return out;
    const std::string zeros(64 * 1024, '\0');
    std::string piece;
    std::size_t offset = 0;
    const auto until = std::chrono::steady_clock::now() + limit;
    auto read_some = [&] {
        char buffer[4096];
        const ssize_t n = ::recv(c.fd, buffer, sizeof buffer, MSG_DONTWAIT);
        if (n > 0) out.answer.append(buffer, static_cast<std::size_t>(n));
        return n;
    };
    while (out.answer.empty() && std::chrono::steady_clock::now() < until) {
        if (offset == piece.size()) {
            if (out.body_bytes_sent >= total) break;
            const std::uint64_t n = std::min<std::uint64_t>(zeros.size(), total - out.body_bytes_sent);
            piece = chunked ? "10000\r\n" + zeros + "\r\n" : zeros.substr(0, n);
            if (chunked && n != zeros.size()) piece.clear();  // whole chunks only: total is a multiple of 64 KiB
            if (piece.empty()) break;
            offset = 0;
            out.body_bytes_sent += n;
        }
        pollfd p{c.fd, POLLIN | POLLOUT, 0};
        if (::poll(&p, 1, 100) <= 0) continue;
        if ((p.revents & POLLIN) != 0) {
            if (read_some() <= 0) break;
            continue;
        }
        const ssize_t n = ::send(c.fd, piece.data() + offset, piece.size() - offset, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n <= 0) break;
        offset += static_cast<std::size_t>(n);
    }
    if (chunked && out.body_bytes_sent >= total && out.answer.empty()) c.send("0\r\n\r\n");
    const auto answer_until = std::chrono::steady_clock::now() + std::chrono::seconds(2);
    while (out.answer.find("\r\n\r\n") == std::string::npos && std::chrono::steady_clock::now() < answer_until) {
        pollfd p{c.fd, POLLIN, 0};
        if (::poll(&p, 1, 50) > 0 && read_some() <= 0) break;
    }
    return out;
}

/// The peak resident set of process `pid` in KiB (VmHWM), or -1.
inline long peak_rss_kib(int pid) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/status");
    for (std::string line; std::getline(in, line);) {
        if (line.rfind("VmHWM:", 0) == 0) return std::stol(line.substr(6));
    }
    return -1;
}

}  // namespace raw_http
