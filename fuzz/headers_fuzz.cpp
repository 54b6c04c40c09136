// libFuzzer target: arbitrary bytes as a response's headers (see
// header_input.hpp) into ratelimit::parse_rate_limit_headers.
//
// Beyond "no crash, no sanitizer report", it checks what must hold for any
// input: every reported number is >= 0; the result does not depend on the
// case of the names; and it does not depend on the order of headers with
// different names (a case-insensitive multimap, as cpp-httplib keeps them,
// gives the same snapshot as the vector in wire order).

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <ratelimit/headers.hpp>

#include "fuzz_check.hpp"
#include "header_input.hpp"

namespace {

using ratelimit::quota_snapshot;
using ratelimit::quota_state;
using ratelimit_fuzz::require;

void check_non_negative(const std::optional<quota_state>& q) {
    if (!q) return;
    require(q->limit || q->remaining || q->reset_after, "an engaged dimension has a field");
    require(q->limit.value_or(0) >= 0, "limit >= 0");
    require(q->remaining.value_or(0) >= 0, "remaining >= 0");
    require(q->reset_after.value_or(std::chrono::nanoseconds::zero()).count() >= 0, "reset_after >= 0");
}

/// Orders names as the parser matches them: trimmed, ASCII case-insensitive.
struct name_less {
    bool operator()(std::string_view a, std::string_view b) const {
        namespace hp = ratelimit::detail::header;
        a = hp::trim(a);
        b = hp::trim(b);
        for (std::size_t i = 0; i < a.size() && i < b.size(); ++i) {
            const char x = hp::to_lower(a[i]);
            const char y = hp::to_lower(b[i]);
            if (x != y) return static_cast<unsigned char>(x) < static_cast<unsigned char>(y);
        }
        return a.size() < b.size();
    }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view bytes(reinterpret_cast<const char*>(data), size);
    const ratelimit_fuzz::header_input input = ratelimit_fuzz::split_header_input(bytes);
    const quota_snapshot s = ratelimit::parse_rate_limit_headers(input.headers, input.now);
    for (const auto* q : {&s.requests, &s.tokens, &s.input_tokens, &s.output_tokens}) check_non_negative(*q);
    require(s.retry_after.value_or(std::chrono::nanoseconds::zero()).count() >= 0, "retry_after >= 0");

    std::vector<std::pair<std::string, std::string_view>> upper;
    upper.reserve(input.headers.size());
    for (const auto& [name, value] : input.headers) {
        std::string n(name);
        for (char& c : n) c = (c >= 'a' && c <= 'z') ? static_cast<char>(c - 'a' + 'A') : c;
        upper.emplace_back(std::move(n), value);
    }
    require(ratelimit::parse_rate_limit_headers(upper, input.now) == s, "names match case-insensitively");

    const std::multimap<std::string_view, std::string_view, name_less> sorted(input.headers.begin(), input.headers.end());
    require(ratelimit::parse_rate_limit_headers(sorted, input.now) == s, "the order of different names does not matter");
    return 0;
}
