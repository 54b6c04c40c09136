// libFuzzer target: arbitrary bytes into ratelimit::parse_go_duration.
//
// Checks, for any input: a result is >= 0; it equals an independent reference
// (128-bit rational arithmetic, for fractions of at most 20 digits); printing
// it back as "<n>ns" reads the same; appending a "0s" component changes nothing.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <ratelimit/headers.hpp>

#include "fuzz_check.hpp"

namespace {

__extension__ typedef unsigned __int128 u128;

struct reference_result {
    bool applicable = true;  // false: a fraction longer than the reference handles
    std::optional<std::int64_t> ns;
};

bool digit(char c) { return c >= '0' && c <= '9'; }

/// Go's grammar with a sign rejected, each component floor(value * unit) in 128 bits.
reference_result reference(std::string_view s) {
    constexpr u128 max = static_cast<u128>(INT64_MAX);
    if (s == "0") return {true, 0};
    if (s.empty()) return {true, std::nullopt};
    u128 total = 0;
    std::size_t i = 0;
    while (i < s.size()) {
        u128 whole = 0;
        bool whole_too_big = false;
        std::size_t whole_digits = 0;
        while (i < s.size() && digit(s[i])) {
            whole = whole * 10 + static_cast<u128>(s[i] - '0');
            if (whole > max) {
                whole_too_big = true;
                whole = max + 1;
            }
            ++i;
            ++whole_digits;
        }
        u128 fraction = 0;
        u128 scale = 1;
        std::size_t fraction_digits = 0;
        if (i < s.size() && s[i] == '.') {
            ++i;
            while (i < s.size() && digit(s[i])) {
                if (fraction_digits == 20) return {false, std::nullopt};
                fraction = fraction * 10 + static_cast<u128>(s[i] - '0');
                scale *= 10;
                ++i;
                ++fraction_digits;
            }
        }
        if (whole_digits == 0 && fraction_digits == 0) return {true, std::nullopt};
        const std::size_t unit_start = i;
        while (i < s.size() && s[i] != '.' && !digit(s[i])) ++i;
        const std::string_view unit = s.substr(unit_start, i - unit_start);
        u128 unit_ns = 0;
        if (unit == "ns") unit_ns = 1;
        else if (unit == "us" || unit == "\xC2\xB5s" || unit == "\xCE\xBCs") unit_ns = 1000;
        else if (unit == "ms") unit_ns = 1000000;
        else if (unit == "s") unit_ns = 1000000000;
        else if (unit == "m") unit_ns = 60000000000ULL;
        else if (unit == "h") unit_ns = 3600000000000ULL;
        else return {true, std::nullopt};
        if (whole_too_big) return {true, std::nullopt};
        const u128 component = whole * unit_ns + fraction * unit_ns / scale;
        if (component > max) return {true, std::nullopt};
        total += component;
        if (total > max) return {true, std::nullopt};
    }
    return {true, static_cast<std::int64_t>(total)};
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    using ratelimit_fuzz::require;
    const std::string_view text(reinterpret_cast<const char*>(data), size);
    const std::optional<std::chrono::nanoseconds> d = ratelimit::parse_go_duration(text);
    const reference_result ref = reference(text);
    if (ref.applicable) {
        require(ref.ns.has_value() == d.has_value(), "accepts exactly what the reference accepts");
        if (d) require(*ref.ns == d->count(), "equals the 128-bit reference");
    }
    if (!d) return 0;
    require(d->count() >= 0, "a duration is >= 0");
    require(ratelimit::parse_go_duration(std::to_string(d->count()) + "ns") == d, "round-trips through ns");
    require(ratelimit::parse_go_duration(std::string(text) + "0s") == d, "a 0s component adds nothing");
    return 0;
}
