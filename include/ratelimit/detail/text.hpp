#pragma once
// Number formatting for error messages (no locale, no allocation beyond the result).

#include <cstdio>
#include <string>

namespace ratelimit::detail {

/// Shortest readable form of a double ("1e-10", "0.5", "nan").
inline std::string number_text(double value) {
    char buffer[32];
    std::snprintf(buffer, sizeof buffer, "%.17g", value);
    // Prefer the short form when it round-trips.
    char short_form[32];
    std::snprintf(short_form, sizeof short_form, "%g", value);
    double back = 0;
    if (std::sscanf(short_form, "%lf", &back) == 1 && back == value) return short_form;
    return buffer;
}

}  // namespace ratelimit::detail
