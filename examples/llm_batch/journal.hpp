#pragma once
// llm_batch's journal: a small text file beside the output (OUTPUT.journal)
// that says what the output cannot: which lines were sent before their record
// was written (so --resume can count what it sends twice), and the limits
// learned from the headers (so --resume starts with them instead of an
// unpaced first wave). Also the request identity headers derived from the input.
//
// Format, one entry a line, appended with one write(2) each:
//   sent N        line N's request goes out for the first time in this run
//   limits R T    the requests and tokens per minute in force (0: unknown)
// A torn or unknown line is ignored. Only the run holding the output's lock
// writes it. Not synced: it survives a killed process, not a power cut.

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <mutex>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_set>

namespace llm_batch {

// ---------------------------------------------------------------------------
// Request identity
// ---------------------------------------------------------------------------

/// FNV-1a, 64 bits, continued from `hash`.
[[nodiscard]] constexpr std::uint64_t fnv1a(std::string_view bytes, std::uint64_t hash = 0xcbf29ce484222325ULL) noexcept {
    for (const char c : bytes) {
        hash ^= static_cast<unsigned char>(c);
        hash *= 0x100000001b3ULL;
    }
    return hash;
}

/// 16 lowercase hex digits.
[[nodiscard]] inline std::string hex64(std::uint64_t x) {
    char buffer[17];
    std::snprintf(buffer, sizeof buffer, "%016llx", static_cast<unsigned long long>(x));
    return buffer;
}

/// The input file's identity: a hash of its bytes (the same file resumed
/// gives the same identity; an edited one another). Empty when unreadable.
[[nodiscard]] inline std::string input_identity(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) return {};
    std::uint64_t hash = 0xcbf29ce484222325ULL;
    std::uint64_t size = 0;
    char buffer[1 << 16];
    while (in) {
        in.read(buffer, sizeof buffer);
        const auto n = static_cast<std::size_t>(in.gcount());
        hash = fnv1a(std::string_view(buffer, n), hash);
        size += n;
    }
    return hex64(hash) + hex64(fnv1a(std::to_string(size), hash));
}

/// The Idempotency-Key of input line `line`: the input's identity, the line
/// number and a hash of the custom_id, e.g. "llm-batch-<32 hex>-17-<16 hex>".
/// The same on every resume of the same input, different for every line.
[[nodiscard]] inline std::string idempotency_key(const std::string& identity, std::int64_t line,
                                                 std::string_view custom_id) {
    return "llm-batch-" + identity + "-" + std::to_string(line) + "-" + hex64(fnv1a(custom_id));
}

/// `text` as a header value: printable ASCII kept, every other byte and '%'
/// as %XX, so a hostile custom_id can never break a header line.
[[nodiscard]] inline std::string header_value(std::string_view text) {
    static constexpr char hex[] = "0123456789ABCDEF";
    std::string out;
    for (const char c : text) {
        const auto b = static_cast<unsigned char>(c);
        if (b >= 0x20 && b < 0x7F && b != '%') {
            out += c;
        } else {
            out += '%';
            out += hex[b >> 4];
            out += hex[b & 0xF];
        }
    }
    return out;
}

// ---------------------------------------------------------------------------
// The journal file
// ---------------------------------------------------------------------------

/// What a journal holds.
struct journal_state {
    std::unordered_set<std::int64_t> sent;  ///< lines whose request went out
    std::int64_t requests_per_minute = 0;   ///< the last limits written (0: unknown)
    std::int64_t tokens_per_minute = 0;
};

namespace detail {
[[nodiscard]] inline bool parse_int(std::string_view text, std::int64_t& out) {
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
    return ec == std::errc{} && end == text.data() + text.size() && out >= 0;
}
}  // namespace detail

/// Reads a journal; a missing file is an empty state, bad lines are skipped.
[[nodiscard]] inline journal_state read_journal(const std::string& path) {
    journal_state state;
    std::ifstream in(path, std::ios::binary);
    std::string text;
    while (std::getline(in, text)) {
        if (in.eof()) break;  // torn: no '\n'
        const std::string_view line(text);
        std::int64_t a = 0, b = 0;
        if (line.rfind("sent ", 0) == 0 && detail::parse_int(line.substr(5), a) && a >= 1) {
            state.sent.insert(a);
        } else if (line.rfind("limits ", 0) == 0) {
            const std::string_view rest = line.substr(7);
            const auto space = rest.find(' ');
            if (space != std::string_view::npos && detail::parse_int(rest.substr(0, space), a) &&
                detail::parse_int(rest.substr(space + 1), b)) {
                state.requests_per_minute = a;
                state.tokens_per_minute = b;
            }
        }
    }
    return state;
}

/// The journal of a run, appended to by every worker. Thread-safe.
class journal {
public:
    /// Replaces the journal at `path` by `keep` (written beside it and
    /// renamed over it), then appends to it. Throws std::runtime_error when it cannot.
    journal(std::string path, const journal_state& keep) : path_(std::move(path)) {
        const std::string temporary = path_ + ".new";
        {
            std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
            for (const std::int64_t line : keep.sent) out << "sent " << line << '\n';
            if (keep.requests_per_minute > 0 || keep.tokens_per_minute > 0) {
                out << "limits " << keep.requests_per_minute << ' ' << keep.tokens_per_minute << '\n';
            }
            out.flush();
            if (!out) throw std::runtime_error("cannot write journal " + temporary);
        }
        if (::rename(temporary.c_str(), path_.c_str()) != 0) {
            throw std::runtime_error("cannot write journal " + path_ + ": " + std::strerror(errno));
        }
        fd_ = ::open(path_.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
        if (fd_ < 0) throw std::runtime_error("cannot open journal " + path_ + ": " + std::strerror(errno));
        requests_per_minute_ = keep.requests_per_minute;
        tokens_per_minute_ = keep.tokens_per_minute;
    }
    journal(const journal&) = delete;
    journal& operator=(const journal&) = delete;
    ~journal() {
        if (fd_ >= 0) ::close(fd_);
    }

    /// Line `line`'s request is about to go out.
    void sent(std::int64_t line) { append("sent " + std::to_string(line) + "\n"); }

    /// The limits in force; written only when they changed.
    void limits(std::int64_t requests_per_minute, std::int64_t tokens_per_minute) {
        {
            std::lock_guard lock(mutex_);
            if (requests_per_minute == requests_per_minute_ && tokens_per_minute == tokens_per_minute_) return;
            requests_per_minute_ = requests_per_minute;
            tokens_per_minute_ = tokens_per_minute;
        }
        append("limits " + std::to_string(requests_per_minute) + " " + std::to_string(tokens_per_minute) + "\n");
    }

private:
    void append(const std::string& entry) {
        std::string_view rest(entry);
        while (!rest.empty()) {
            const ssize_t n = ::write(fd_, rest.data(), rest.size());
            if (n < 0) {
                if (errno == EINTR) continue;
                throw std::runtime_error("cannot write journal " + path_ + ": " + std::strerror(errno));
            }
            rest.remove_prefix(static_cast<std::size_t>(n));
        }
    }

    std::string path_;
    int fd_ = -1;
    std::mutex mutex_;
    std::int64_t requests_per_minute_ = 0;
    std::int64_t tokens_per_minute_ = 0;
};

}  // namespace llm_batch
