// libFuzzer target: arbitrary bytes into the date, number and structured-field
// parsers of include/ratelimit/detail/header_parse.hpp.
//
// Checks, for any input: a parsed RFC 3339 time or HTTP-date, printed back in
// canonical form, parses to the same instant; resets and Retry-After waits
// are >= 0 against any base time (including the ends of the int64 range); a
// structured-field list reports the same members on both of its passes.

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <optional>
#include <string>
#include <string_view>

#include <ratelimit/detail/header_parse.hpp>

#include "fuzz_check.hpp"

namespace {

namespace hp = ratelimit::detail::header;
using ratelimit_fuzz::require;

struct civil {
    std::int64_t year;
    int month, day, hour, minute, second;
    int weekday;  // 0 = Monday
};

/// Hinnant's civil_from_days, written out here independently of the library.
civil to_civil(hp::timestamp t) {
    std::int64_t days = t.seconds / 86400;
    std::int64_t rest = t.seconds % 86400;
    if (rest < 0) {
        rest += 86400;
        --days;
    }
    const int weekday = static_cast<int>(((days % 7) + 7 + 3) % 7);  // 1970-01-01 was a Thursday
    days += 719468;
    const std::int64_t era = (days >= 0 ? days : days - 146096) / 146097;
    const std::int64_t doe = days - era * 146097;
    const std::int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    const std::int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    const std::int64_t mp = (5 * doy + 2) / 153;
    const int day = static_cast<int>(doy - (153 * mp + 2) / 5 + 1);
    const int month = static_cast<int>(mp < 10 ? mp + 3 : mp - 9);
    const std::int64_t year = yoe + era * 400 + (month <= 2 ? 1 : 0);
    return {year, month, day, static_cast<int>(rest / 3600), static_cast<int>(rest / 60 % 60), static_cast<int>(rest % 60),
            weekday};
}

void check_rfc3339_round_trip(std::string_view s) {
    const std::optional<hp::timestamp> t = hp::parse_rfc3339(s);
    if (!t) return;
    require(t->nanoseconds >= 0 && t->nanoseconds < hp::ns_per_second, "nanoseconds in [0, 1e9)");
    const civil c = to_civil(*t);
    if (c.year < 0 || c.year > 9999) return;  // an offset moved it out of four digits
    char text[64];
    std::snprintf(text, sizeof text, "%04lld-%02d-%02dT%02d:%02d:%02d.%09lldZ", static_cast<long long>(c.year), c.month,
                  c.day, c.hour, c.minute, c.second, static_cast<long long>(t->nanoseconds));
    require(hp::parse_rfc3339(text) == t, "RFC 3339 round trip");
}

void check_http_date_round_trip(std::string_view s, std::int64_t reference_year) {
    const std::optional<hp::timestamp> t = hp::parse_http_date(s, reference_year);
    if (!t) return;
    require(t->nanoseconds == 0, "an HTTP-date has whole seconds");
    const civil c = to_civil(*t);
    if (c.year < 0 || c.year > 9999) return;
    static constexpr const char* days[] = {"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"};
    static constexpr const char* months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                             "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    char text[64];
    std::snprintf(text, sizeof text, "%s, %02d %s %04lld %02d:%02d:%02d GMT", days[c.weekday], c.day, months[c.month - 1],
                  static_cast<long long>(c.year), c.hour, c.minute, c.second);
    require(hp::parse_http_date(text, reference_year) == t, "HTTP-date round trip");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view s(reinterpret_cast<const char*>(data), size);
    check_rfc3339_round_trip(s);
    constexpr std::int64_t min = std::numeric_limits<std::int64_t>::min();
    constexpr std::int64_t max = std::numeric_limits<std::int64_t>::max();
    for (const std::int64_t base_ns : {min, std::int64_t{0}, std::int64_t{1'719'835'200'000'000'000}, max}) {
        const hp::timestamp base = hp::timestamp_from_ns(base_ns);
        check_http_date_round_trip(s, hp::year_of(base));
        require(hp::parse_reset_ns(s, base).value_or(0) >= 0, "a reset is >= 0");
        require(hp::parse_retry_after_ns(s, base).value_or(0) >= 0, "a Retry-After is >= 0");
    }
    for (const hp::unit_scale unit : {hp::nanoseconds_unit, hp::milliseconds_unit, hp::seconds_unit, hp::hours_unit}) {
        require(hp::parse_decimal_ns(s, unit).value_or(0) >= 0, "a decimal is >= 0");
    }
    if (const std::optional<std::int64_t> n = hp::parse_count(s)) require(*n >= 0, "a count is >= 0");

    int first = 0;
    int second = 0;
    const bool valid = hp::for_each_sf_member(s, [&](const hp::sf_member& m) {
        ++first;
        for (const std::string_view key : {"r", "t", "q", "w", "qu", "pk"}) (void)hp::sf_parameter(m.parameters, key);
    });
    if (valid) {
        (void)hp::sf_parser(s).list([&](const hp::sf_member&) { ++second; });
        require(first == second, "both passes see the same members");
    } else {
        require(first == 0, "an invalid field reports no member");
    }
    return 0;
}
