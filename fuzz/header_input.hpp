#pragma once
// How the header fuzzer (and the corpus replay test) turn bytes into a
// response's headers: one header per line ("\n"), "name: value" split at the
// first ':' (a line without one is a name with an empty value). A first line
// "@<integer>" is not a header: it sets `now`, in nanoseconds since the epoch.

#include <charconv>
#include <chrono>
#include <cstdint>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

namespace ratelimit_fuzz {

/// 2024-07-01T12:00:00Z, the `now` of a corpus file without an "@" line.
inline constexpr std::int64_t default_now_ns = 1'719'835'200'000'000'000;

struct header_input {
    std::vector<std::pair<std::string_view, std::string_view>> headers;
    std::chrono::system_clock::time_point now;
};

/// Splits `data` as described above; the views point into `data`.
inline header_input split_header_input(std::string_view data) {
    header_input input;
    std::int64_t now_ns = default_now_ns;
    bool first = true;
    while (!data.empty()) {
        const std::size_t end = data.find('\n');
        const std::string_view line = data.substr(0, end);
        data = end == std::string_view::npos ? std::string_view{} : data.substr(end + 1);
        if (first && !line.empty() && line.front() == '@') {
            std::int64_t parsed = 0;
            const char* const last = line.data() + line.size();
            const std::from_chars_result r = std::from_chars(line.data() + 1, last, parsed);
            if (r.ec == std::errc{} && r.ptr == last) now_ns = parsed;
            first = false;
            continue;
        }
        first = false;
        const std::size_t colon = line.find(':');
        if (colon == std::string_view::npos) {
            input.headers.emplace_back(line, std::string_view{});
        } else {
            input.headers.emplace_back(line.substr(0, colon), line.substr(colon + 1));
        }
    }
    using ns = std::chrono::nanoseconds;
    input.now = std::chrono::system_clock::time_point{
        std::chrono::duration_cast<std::chrono::system_clock::duration>(ns{now_ns})};
    return input;
}

}  // namespace ratelimit_fuzz
