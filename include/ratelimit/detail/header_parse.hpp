#pragma once
// Pure parsing of the values found in rate-limit response headers: counts,
// exact decimal durations, Go durations, HTTP-dates, RFC 3339 timestamps and
// structured-field lists (RFC 8941 / RFC 9651).
//
// Model. Every function reads a std::string_view and returns a value or
// nothing; none allocates, throws, reads a clock or keeps state. Times are
// `timestamp`s (seconds and nanoseconds since 1970-01-01T00:00:00Z, UTC) so a
// date far outside the range of std::chrono::nanoseconds (years 1678 to 2262)
// still parses; converting to a duration (ns_until) reports the overflow.
//
// Guarantee: every input, including embedded NULs, non-ASCII bytes, values
// megabytes long and numbers of any size, gives a result or nothing, in time
// linear in its length, with no signed overflow and no floating point.
// Durations are exact: a decimal fraction is scaled in integers and rounded
// down to the nanosecond ("1m26.4s" is exactly 86'400'000'000 ns).

#include <charconv>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <string_view>
#include <system_error>

namespace ratelimit::detail::header {

inline constexpr std::int64_t ns_per_second = 1'000'000'000;
inline constexpr std::int64_t max_ns = std::numeric_limits<std::int64_t>::max();

// ---------------------------------------------------------------- text

[[nodiscard]] constexpr bool is_digit(char c) noexcept { return c >= '0' && c <= '9'; }
[[nodiscard]] constexpr bool is_alpha(char c) noexcept { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
[[nodiscard]] constexpr char to_lower(char c) noexcept { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }
[[nodiscard]] constexpr int digit_value(char c) noexcept { return c - '0'; }

/// `s` without the spaces, tabs, CRs and LFs around it (HTTP's OWS, plus line
/// ends some libraries leave on a value).
[[nodiscard]] constexpr std::string_view trim(std::string_view s) noexcept {
    constexpr auto blank = [](char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; };
    while (!s.empty() && blank(s.front())) s.remove_prefix(1);
    while (!s.empty() && blank(s.back())) s.remove_suffix(1);
    return s;
}

/// ASCII case-insensitive equality (header names, month names).
[[nodiscard]] constexpr bool iequals(std::string_view a, std::string_view b) noexcept {
    if (a.size() != b.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i) {
        if (to_lower(a[i]) != to_lower(b[i])) return false;
    }
    return true;
}

/// ASCII case-insensitive prefix test.
[[nodiscard]] constexpr bool istarts_with(std::string_view s, std::string_view prefix) noexcept {
    return s.size() >= prefix.size() && iequals(s.substr(0, prefix.size()), prefix);
}

/// ASCII case-insensitive substring test.
[[nodiscard]] constexpr bool icontains(std::string_view s, std::string_view needle) noexcept {
    if (needle.size() > s.size()) return false;
    for (std::size_t i = 0; i + needle.size() <= s.size(); ++i) {
        if (iequals(s.substr(i, needle.size()), needle)) return true;
    }
    return false;
}

/// The length of the run of ASCII digits at the start of `s`.
[[nodiscard]] constexpr std::size_t digit_run(std::string_view s) noexcept {
    std::size_t n = 0;
    while (n < s.size() && is_digit(s[n])) ++n;
    return n;
}

// ---------------------------------------------------------------- numbers

/// A non-negative decimal integer ("0", "150000", "007"): digits only, no
/// sign, no spaces; nothing when it exceeds INT64_MAX.
[[nodiscard]] inline std::optional<std::int64_t> parse_count(std::string_view s) noexcept {
    if (s.empty() || !is_digit(s.front())) return std::nullopt;
    std::int64_t value = 0;
    const char* const end = s.data() + s.size();
    const std::from_chars_result r = std::from_chars(s.data(), end, value);
    if (r.ec != std::errc{} || r.ptr != end) return std::nullopt;
    return value;
}

/// A decimal number written as `digits [ "." digits ]`, split at the point.
struct decimal_parts {
    std::string_view whole;     ///< digits before the point (may be empty: ".5")
    std::string_view fraction;  ///< digits after the point (may be empty: "5.")
};

/// `s` as a non-negative decimal with at least one digit ("30", "1.5", ".5",
/// "5."); no sign, no exponent, no spaces.
[[nodiscard]] constexpr std::optional<decimal_parts> split_decimal(std::string_view s) noexcept {
    const std::size_t whole = digit_run(s);
    decimal_parts parts{s.substr(0, whole), {}};
    s.remove_prefix(whole);
    if (!s.empty() && s.front() == '.') {
        s.remove_prefix(1);
        const std::size_t fraction = digit_run(s);
        parts.fraction = s.substr(0, fraction);
        s.remove_prefix(fraction);
    }
    if (!s.empty() || (parts.whole.empty() && parts.fraction.empty())) return std::nullopt;
    return parts;
}

/// The value of a run of digits, or nothing above `max`.
[[nodiscard]] constexpr std::optional<std::uint64_t> digits_value(std::string_view digits, std::uint64_t max) noexcept {
    std::uint64_t value = 0;
    for (const char c : digits) {
        const auto d = static_cast<std::uint64_t>(digit_value(c));
        if (value > (max - d) / 10) return std::nullopt;
        value = value * 10 + d;
    }
    return value;
}

/// The first `count` digits of a fraction as an integer, padded with zeros:
/// ("5", 3) -> 500, ("123456", 3) -> 123.
[[nodiscard]] constexpr std::uint64_t leading_fraction(std::string_view fraction, int count) noexcept {
    std::uint64_t value = 0;
    for (int i = 0; i < count; ++i) {
        const auto index = static_cast<std::size_t>(i);
        value = value * 10 + (index < fraction.size() ? static_cast<std::uint64_t>(digit_value(fraction[index])) : 0U);
    }
    return value;
}

/// A unit of `multiplier * 10^zeros` nanoseconds (1 s = {1, 9}, 1 h = {36, 11}).
struct unit_scale {
    std::uint64_t multiplier;
    int zeros;
    [[nodiscard]] constexpr std::uint64_t ns() const noexcept {
        std::uint64_t n = multiplier;
        for (int i = 0; i < zeros; ++i) n *= 10;
        return n;
    }
};

inline constexpr unit_scale nanoseconds_unit{1, 0};
inline constexpr unit_scale microseconds_unit{1, 3};
inline constexpr unit_scale milliseconds_unit{1, 6};
inline constexpr unit_scale seconds_unit{1, 9};
inline constexpr unit_scale minutes_unit{6, 10};
inline constexpr unit_scale hours_unit{36, 11};

/// `whole.fraction` units in nanoseconds, rounded down, exactly: the first
/// `zeros` fraction digits are whole nanoseconds times the multiplier, and the
/// rest are multiplied by it digit by digit from the right (long
/// multiplication), so a fraction of any length rounds correctly. Nothing when
/// the result exceeds INT64_MAX.
[[nodiscard]] constexpr std::optional<std::int64_t> scale_decimal(decimal_parts parts, unit_scale unit) noexcept {
    constexpr auto max = static_cast<std::uint64_t>(max_ns);
    const std::uint64_t unit_ns = unit.ns();
    const std::optional<std::uint64_t> whole = digits_value(parts.whole, max);
    if (!whole || *whole > max / unit_ns) return std::nullopt;
    std::uint64_t ns = *whole * unit_ns;
    const auto head = static_cast<std::size_t>(unit.zeros);
    std::uint64_t below = unit.multiplier * leading_fraction(parts.fraction, unit.zeros);
    if (parts.fraction.size() > head) {
        std::uint64_t carry = 0;  // floor(multiplier * 0.<digits after head>), always < multiplier
        for (std::size_t i = parts.fraction.size(); i > head; --i) {
            carry = (static_cast<std::uint64_t>(digit_value(parts.fraction[i - 1])) * unit.multiplier + carry) / 10;
        }
        below += carry;
    }
    if (ns > max - below) return std::nullopt;
    ns += below;
    return static_cast<std::int64_t>(ns);
}

/// A non-negative decimal (see split_decimal) of `unit`s in nanoseconds,
/// rounded down; nothing when malformed or above INT64_MAX ns.
[[nodiscard]] constexpr std::optional<std::int64_t> parse_decimal_ns(std::string_view s, unit_scale unit) noexcept {
    const std::optional<decimal_parts> parts = split_decimal(s);
    if (!parts) return std::nullopt;
    return scale_decimal(*parts, unit);
}

// ---------------------------------------------------------------- Go durations

/// The unit of a Go duration component, or nothing.
[[nodiscard]] constexpr std::optional<unit_scale> go_unit(std::string_view u) noexcept {
    if (u == "ns") return nanoseconds_unit;
    if (u == "us" || u == "\xC2\xB5s" || u == "\xCE\xBCs") return microseconds_unit;  // U+00B5 and U+03BC
    if (u == "ms") return milliseconds_unit;
    if (u == "s") return seconds_unit;
    if (u == "m") return minutes_unit;
    if (u == "h") return hours_unit;
    return std::nullopt;
}

/// Go's time.ParseDuration syntax without a sign: one or more
/// `[digits][.digits]unit` components ("6m0s", "1h2m3.5s", ".5s", "5.s"),
/// or "0" alone; units ns, us, µs, μs, ms, s, m, h (case-sensitive). Exact, in
/// nanoseconds; nothing for a sign, an empty string, a missing or unknown
/// unit, a component without digits, or a total above INT64_MAX.
[[nodiscard]] constexpr std::optional<std::int64_t> parse_go_duration_ns(std::string_view s) noexcept {
    if (s == "0") return 0;
    if (s.empty()) return std::nullopt;
    std::int64_t total = 0;
    while (!s.empty()) {
        if (s.front() != '.' && !is_digit(s.front())) return std::nullopt;
        decimal_parts parts{s.substr(0, digit_run(s)), {}};
        s.remove_prefix(parts.whole.size());
        if (!s.empty() && s.front() == '.') {
            s.remove_prefix(1);
            parts.fraction = s.substr(0, digit_run(s));
            s.remove_prefix(parts.fraction.size());
        }
        if (parts.whole.empty() && parts.fraction.empty()) return std::nullopt;
        std::size_t unit_length = 0;
        while (unit_length < s.size() && s[unit_length] != '.' && !is_digit(s[unit_length])) ++unit_length;
        const std::optional<unit_scale> unit = go_unit(s.substr(0, unit_length));
        if (!unit) return std::nullopt;
        s.remove_prefix(unit_length);
        const std::optional<std::int64_t> ns = scale_decimal(parts, *unit);
        if (!ns || *ns > max_ns - total) return std::nullopt;
        total += *ns;
    }
    return total;
}

// ---------------------------------------------------------------- time

/// An instant in UTC: whole seconds since 1970-01-01T00:00:00Z plus nanoseconds in [0, 1e9).
struct timestamp {
    std::int64_t seconds = 0;
    std::int64_t nanoseconds = 0;
    friend constexpr bool operator==(const timestamp&, const timestamp&) = default;
};

/// The timestamp `ns` nanoseconds after the epoch (any int64, rounded toward the past).
[[nodiscard]] constexpr timestamp timestamp_from_ns(std::int64_t ns) noexcept {
    std::int64_t seconds = ns / ns_per_second;
    std::int64_t rest = ns % ns_per_second;
    if (rest < 0) {
        --seconds;
        rest += ns_per_second;
    }
    return {seconds, rest};
}

/// Days from 1970-01-01 to year-month-day in the proleptic Gregorian calendar
/// (Howard Hinnant's days_from_civil). Precondition: 1 <= month <= 12, |year| < 2^40.
[[nodiscard]] constexpr std::int64_t days_from_civil(std::int64_t year, int month, int day) noexcept {
    year -= month <= 2 ? 1 : 0;
    const std::int64_t era = (year >= 0 ? year : year - 399) / 400;
    const std::int64_t year_of_era = year - era * 400;
    const std::int64_t day_of_year = (153 * (month > 2 ? month - 3 : month + 9) + 2) / 5 + day - 1;
    const std::int64_t day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    return era * 146097 + day_of_era - 719468;
}

/// The Gregorian year of the day `days` after 1970-01-01 (Hinnant's civil_from_days).
[[nodiscard]] constexpr std::int64_t year_from_days(std::int64_t days) noexcept {
    days += 719468;
    const std::int64_t era = (days >= 0 ? days : days - 146096) / 146097;
    const std::int64_t day_of_era = days - era * 146097;
    const std::int64_t year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36524 - day_of_era / 146096) / 365;
    const std::int64_t day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    const std::int64_t shifted_month = (5 * day_of_year + 2) / 153;  // March = 0
    return year_of_era + era * 400 + (shifted_month >= 10 ? 1 : 0);
}

/// The UTC year containing `t`.
[[nodiscard]] constexpr std::int64_t year_of(timestamp t) noexcept {
    std::int64_t days = t.seconds / 86400;
    if (t.seconds % 86400 < 0) --days;
    return year_from_days(days);
}

[[nodiscard]] constexpr bool is_leap_year(std::int64_t year) noexcept {
    return year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
}

[[nodiscard]] constexpr int days_in_month(std::int64_t year, int month) noexcept {
    constexpr int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return month == 2 && is_leap_year(year) ? 29 : days[month - 1];
}

/// A calendar date and time of day, checked for range: month 1-12, a day the
/// month has, hour 0-23, minute 0-59, second 0-60 (60: a leap second, counted
/// as the first second of the next minute).
struct civil_time {
    std::int64_t year = 1970;
    int month = 1, day = 1, hour = 0, minute = 0, second = 0;
    std::int64_t nanoseconds = 0;

    [[nodiscard]] constexpr bool valid() const noexcept {
        return month >= 1 && month <= 12 && day >= 1 && day <= days_in_month(year, month) && hour >= 0 &&
               hour <= 23 && minute >= 0 && minute <= 59 && second >= 0 && second <= 60;
    }
    /// The instant, `offset_seconds` east of UTC. Precondition: valid(), |year| <= 9999.
    [[nodiscard]] constexpr timestamp at_offset(std::int64_t offset_seconds) const noexcept {
        const std::int64_t seconds = days_from_civil(year, month, day) * 86400 + hour * 3600 + minute * 60 + second;
        return {seconds - offset_seconds, nanoseconds};
    }
};

/// How long from `base` until `t`, in nanoseconds: 0 when `t` is not after
/// `base`, nothing when the wait exceeds INT64_MAX ns (about 292 years).
[[nodiscard]] constexpr std::optional<std::int64_t> ns_until(timestamp t, timestamp base) noexcept {
    std::int64_t seconds = 0;
    if (__builtin_sub_overflow(t.seconds, base.seconds, &seconds)) {
        if (t.seconds < base.seconds) return 0;
        return std::nullopt;
    }
    const std::int64_t nanos = t.nanoseconds - base.nanoseconds;  // in (-1e9, 1e9)
    if (seconds < 0 || (seconds == 0 && nanos <= 0)) return 0;
    std::int64_t ns = 0;
    if (__builtin_mul_overflow(seconds, ns_per_second, &ns) || __builtin_add_overflow(ns, nanos, &ns)) {
        return std::nullopt;
    }
    return ns;
}

/// A small forward reader for the fixed date grammars.
class cursor {
public:
    constexpr explicit cursor(std::string_view s) noexcept : s_(s) {}
    [[nodiscard]] constexpr bool done() const noexcept { return s_.empty(); }
    [[nodiscard]] constexpr std::string_view rest() const noexcept { return s_; }
    /// Consumes `c` when it comes next.
    constexpr bool literal(char c) noexcept {
        if (s_.empty() || s_.front() != c) return false;
        s_.remove_prefix(1);
        return true;
    }
    /// Consumes exactly `count` digits and returns their value.
    constexpr std::optional<int> digits(std::size_t count) noexcept {
        if (s_.size() < count) return std::nullopt;
        int value = 0;
        for (std::size_t i = 0; i < count; ++i) {
            if (!is_digit(s_[i])) return std::nullopt;
            value = value * 10 + digit_value(s_[i]);
        }
        s_.remove_prefix(count);
        return value;
    }
    /// Consumes one of `names` (ASCII case-insensitive) and returns its index.
    template <std::size_t N>
    constexpr std::optional<int> one_of(const std::string_view (&names)[N]) noexcept {
        for (std::size_t i = 0; i < N; ++i) {
            if (istarts_with(s_, names[i])) {
                s_.remove_prefix(names[i].size());
                return static_cast<int>(i);
            }
        }
        return std::nullopt;
    }
    /// Consumes `word` (ASCII case-insensitive).
    constexpr bool word(std::string_view w) noexcept {
        if (!istarts_with(s_, w)) return false;
        s_.remove_prefix(w.size());
        return true;
    }
    /// Consumes "HH:MM:SS" into `t`.
    constexpr bool time_of_day(civil_time& t) noexcept {
        const std::optional<int> h = digits(2);
        if (!h || !literal(':')) return false;
        const std::optional<int> m = digits(2);
        if (!m || !literal(':')) return false;
        const std::optional<int> sec = digits(2);
        if (!sec) return false;
        t.hour = *h;
        t.minute = *m;
        t.second = *sec;
        return true;
    }

private:
    std::string_view s_;
};

inline constexpr std::string_view month_names[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                                   "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
inline constexpr std::string_view day_names[] = {"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"};
// Longest first where one name is a prefix of another is not needed: no full
// day name is a prefix of another.
inline constexpr std::string_view full_day_names[] = {"Monday", "Tuesday",  "Wednesday", "Thursday",
                                                      "Friday", "Saturday", "Sunday"};

/// An HTTP-date (RFC 9110 section 5.6.7) in any of its three forms:
///   IMF-fixdate   "Sun, 06 Nov 1994 08:49:37 GMT"
///   RFC 850       "Sunday, 06-Nov-94 08:49:37 GMT"
///   asctime       "Sun Nov  6 08:49:37 1994"
/// A two-digit RFC 850 year is put in the century that places it at most 50
/// years after `reference_year` (RFC 9110's rule). Names match ASCII
/// case-insensitively; the weekday is checked for spelling, not against the
/// date. Nothing for anything else.
[[nodiscard]] constexpr std::optional<timestamp> parse_http_date(std::string_view s,
                                                                 std::int64_t reference_year) noexcept {
    civil_time t;
    cursor c(s);
    if (s.size() > 3 && s[3] == ',') {  // IMF-fixdate
        if (!c.one_of(day_names) || !c.literal(',') || !c.literal(' ')) return std::nullopt;
        const std::optional<int> day = c.digits(2);
        if (!day || !c.literal(' ')) return std::nullopt;
        const std::optional<int> month = c.one_of(month_names);
        if (!month || !c.literal(' ')) return std::nullopt;
        const std::optional<int> year = c.digits(4);
        if (!year || !c.literal(' ') || !c.time_of_day(t) || !c.literal(' ') || !c.word("GMT")) return std::nullopt;
        t.year = *year;
        t.month = *month + 1;
        t.day = *day;
    } else if (s.find(',') != std::string_view::npos) {  // RFC 850
        if (!c.one_of(full_day_names) || !c.literal(',') || !c.literal(' ')) return std::nullopt;
        const std::optional<int> day = c.digits(2);
        if (!day || !c.literal('-')) return std::nullopt;
        const std::optional<int> month = c.one_of(month_names);
        if (!month || !c.literal('-')) return std::nullopt;
        const std::optional<int> two_digit_year = c.digits(2);
        if (!two_digit_year || !c.literal(' ') || !c.time_of_day(t) || !c.literal(' ') || !c.word("GMT")) {
            return std::nullopt;
        }
        const std::int64_t century = (reference_year >= 0 ? reference_year / 100 : (reference_year - 99) / 100) * 100;
        t.year = century + *two_digit_year;
        if (t.year > reference_year + 50) t.year -= 100;
        t.month = *month + 1;
        t.day = *day;
    } else {  // asctime
        if (!c.one_of(day_names) || !c.literal(' ')) return std::nullopt;
        const std::optional<int> month = c.one_of(month_names);
        if (!month || !c.literal(' ')) return std::nullopt;
        std::optional<int> day;
        if (c.literal(' ')) {
            day = c.digits(1);
        } else {
            day = c.digits(2);
        }
        if (!day || !c.literal(' ') || !c.time_of_day(t) || !c.literal(' ')) return std::nullopt;
        const std::optional<int> year = c.digits(4);
        if (!year) return std::nullopt;
        t.year = *year;
        t.month = *month + 1;
        t.day = *day;
    }
    if (!c.done() || !t.valid()) return std::nullopt;
    return t.at_offset(0);
}

/// An RFC 3339 date-time: "2024-07-01T12:00:30Z", "2024-07-01T14:00:30.25+02:00";
/// 'T' may also be 't' or a space, 'Z' may be 'z'; a fraction has one or more
/// digits (beyond nanoseconds, rounded down); the offset is Z or +hh:mm / -hh:mm.
[[nodiscard]] constexpr std::optional<timestamp> parse_rfc3339(std::string_view s) noexcept {
    civil_time t;
    cursor c(s);
    const std::optional<int> year = c.digits(4);
    if (!year || !c.literal('-')) return std::nullopt;
    const std::optional<int> month = c.digits(2);
    if (!month || !c.literal('-')) return std::nullopt;
    const std::optional<int> day = c.digits(2);
    if (!day || !(c.literal('T') || c.literal('t') || c.literal(' ')) || !c.time_of_day(t)) return std::nullopt;
    t.year = *year;
    t.month = *month;
    t.day = *day;
    if (c.literal('.')) {
        const std::string_view fraction = c.rest().substr(0, digit_run(c.rest()));
        if (fraction.empty()) return std::nullopt;
        t.nanoseconds = static_cast<std::int64_t>(leading_fraction(fraction, 9));
        c = cursor(c.rest().substr(fraction.size()));
    }
    std::int64_t offset = 0;
    if (!c.literal('Z') && !c.literal('z')) {
        const bool east = c.literal('+');
        if (!east && !c.literal('-')) return std::nullopt;
        const std::optional<int> hours = c.digits(2);
        if (!hours || !c.literal(':')) return std::nullopt;
        const std::optional<int> minutes = c.digits(2);
        if (!minutes || *hours > 23 || *minutes > 59) return std::nullopt;
        offset = (east ? 1 : -1) * (*hours * 3600 + *minutes * 60);
    }
    if (!c.done() || !t.valid()) return std::nullopt;
    return t.at_offset(offset);
}

/// Retry-After (RFC 9110 section 10.2.3) as a wait from `base`: delay-seconds
/// ("120"; a fraction "1.5" is accepted and kept exactly) or an HTTP-date (0
/// when already past). Nothing for anything else or a wait above INT64_MAX ns.
[[nodiscard]] constexpr std::optional<std::int64_t> parse_retry_after_ns(std::string_view s, timestamp base) noexcept {
    if (const std::optional<std::int64_t> seconds = parse_decimal_ns(s, seconds_unit)) return seconds;
    if (const std::optional<timestamp> date = parse_http_date(s, year_of(base))) return ns_until(*date, base);
    return std::nullopt;
}

/// Integer parts at or above this are epoch seconds, not a delay (2001-09-09).
inline constexpr std::uint64_t epoch_seconds_threshold = 1'000'000'000;
/// Integer parts at or above this are epoch milliseconds (1e12 s would be the year 33658).
inline constexpr std::uint64_t epoch_milliseconds_threshold = 1'000'000'000'000;

/// A quota reset as a wait from `base`, in whichever form a server wrote it:
///   a Go duration          "6m0s", "20ms"              (OpenAI)
///   a decimal number       "30", "1.5"                 seconds from now (Azure, IETF trio)
///     ... from 1e9 on      "1720000000"                epoch seconds (X-RateLimit-Reset, GitLab)
///     ... from 1e12 on     "1720000000000"             epoch milliseconds
///   an RFC 3339 date-time  "2024-07-01T12:00:30Z"      (Anthropic)
///   an HTTP-date           "Mon, 01 Jul 2024 12:00:30 GMT"
/// The forms cannot be confused: a Go duration needs a unit (except "0"), and
/// dates contain '-' or letters. An absolute time already past gives 0;
/// nothing for anything else or a wait above INT64_MAX ns.
[[nodiscard]] constexpr std::optional<std::int64_t> parse_reset_ns(std::string_view s, timestamp base) noexcept {
    if (const std::optional<std::int64_t> go = parse_go_duration_ns(s)) return go;
    if (const std::optional<decimal_parts> number = split_decimal(s)) {
        const std::optional<std::uint64_t> whole =
            digits_value(number->whole, static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()));
        if (!whole) return std::nullopt;
        if (*whole < epoch_seconds_threshold) return scale_decimal(*number, seconds_unit);
        if (*whole < epoch_milliseconds_threshold) {
            const timestamp at{static_cast<std::int64_t>(*whole),
                               static_cast<std::int64_t>(leading_fraction(number->fraction, 9))};
            return ns_until(at, base);
        }
        const timestamp at{static_cast<std::int64_t>(*whole / 1000),
                           static_cast<std::int64_t>((*whole % 1000) * 1'000'000 + leading_fraction(number->fraction, 6))};
        return ns_until(at, base);
    }
    if (const std::optional<timestamp> at = parse_rfc3339(s)) return ns_until(*at, base);
    if (const std::optional<timestamp> at = parse_http_date(s, year_of(base))) return ns_until(*at, base);
    return std::nullopt;
}

// ---------------------------------------------------------------- structured fields

/// The type of a structured-field bare item (RFC 8941, plus RFC 9651's dates and display strings).
enum class sf_kind : unsigned char { integer, decimal, string, token, byte_sequence, boolean, date, display_string };

/// A bare item as written: `text` is the number as written (with any '-'),
/// a string's or display string's content between the quotes (escapes kept:
/// two strings are equal exactly when these texts are), a token, the base64
/// between a byte sequence's colons, "0"/"1" for a boolean, a date's integer.
struct sf_bare_item {
    sf_kind kind = sf_kind::boolean;
    std::string_view text = "1";
};

/// A list member: an item or an inner list (whose `value` is then the
/// boolean true and whose members are not reported), with the raw text of its
/// parameters for sf_parameter().
struct sf_member {
    sf_bare_item value;
    std::string_view parameters;
    bool inner_list = false;
};

/// A structured-field parser over one field value (RFC 8941 section 4.2).
/// Lenient in one way only: optional whitespace is also allowed before ';'
/// and around '=' in parameters, which the RFC's grammar forbids but servers write.
class sf_parser {
public:
    constexpr explicit sf_parser(std::string_view s) noexcept : s_(s) {}

    /// Parses a List, calling `f(const sf_member&)` for each member in order.
    /// Returns false at the first syntax error (after calling `f` for the
    /// members before it).
    template <class F>
    constexpr bool list(F&& f) {
        skip_spaces();
        if (s_.empty()) return true;
        for (;;) {
            sf_member m;
            if (!member(m)) return false;
            f(static_cast<const sf_member&>(m));
            skip_ows();
            if (s_.empty()) return true;
            if (!take(',')) return false;
            skip_ows();
            if (s_.empty()) return false;  // trailing comma
        }
    }

    /// Parses Parameters, calling `f(key, const sf_bare_item&)` for each.
    template <class F>
    constexpr bool parameters(F&& f) {
        for (;;) {
            const std::string_view before = s_;
            skip_ows();
            if (!take(';')) {
                s_ = before;
                return true;
            }
            skip_ows();
            const std::string_view k = key();
            if (k.empty()) return false;
            sf_bare_item value;
            const std::string_view after_key = s_;
            skip_ows();
            if (take('=')) {
                skip_ows();
                if (!bare_item(value)) return false;
            } else {
                s_ = after_key;
            }
            f(k, static_cast<const sf_bare_item&>(value));
        }
    }

private:
    static constexpr bool is_lcalpha(char c) noexcept { return c >= 'a' && c <= 'z'; }
    static constexpr bool is_tchar(char c) noexcept {
        return is_alpha(c) || is_digit(c) || std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
    }
    static constexpr bool is_base64(char c) noexcept { return is_alpha(c) || is_digit(c) || c == '+' || c == '/' || c == '='; }
    static constexpr bool is_lchex(char c) noexcept { return is_digit(c) || (c >= 'a' && c <= 'f'); }

    constexpr bool take(char c) noexcept {
        if (s_.empty() || s_.front() != c) return false;
        s_.remove_prefix(1);
        return true;
    }
    constexpr void skip_spaces() noexcept {
        while (!s_.empty() && s_.front() == ' ') s_.remove_prefix(1);
    }
    constexpr void skip_ows() noexcept {
        while (!s_.empty() && (s_.front() == ' ' || s_.front() == '\t')) s_.remove_prefix(1);
    }

    constexpr bool member(sf_member& m) {
        if (take('(')) {
            m.inner_list = true;
            for (;;) {
                skip_spaces();
                if (take(')')) break;
                sf_bare_item ignored;
                if (!bare_item(ignored) || !parameters([](std::string_view, const sf_bare_item&) {})) return false;
                if (s_.empty() || (s_.front() != ' ' && s_.front() != ')')) return false;
            }
        } else if (!bare_item(m.value)) {
            return false;
        }
        const std::string_view params_start = s_;
        if (!parameters([](std::string_view, const sf_bare_item&) {})) return false;
        m.parameters = params_start.substr(0, params_start.size() - s_.size());
        return true;
    }

    constexpr std::string_view key() noexcept {
        if (s_.empty() || !(is_lcalpha(s_.front()) || s_.front() == '*')) return {};
        std::size_t n = 1;
        while (n < s_.size() && (is_lcalpha(s_[n]) || is_digit(s_[n]) || s_[n] == '_' || s_[n] == '-' ||
                                 s_[n] == '.' || s_[n] == '*')) {
            ++n;
        }
        const std::string_view k = s_.substr(0, n);
        s_.remove_prefix(n);
        return k;
    }

    constexpr bool bare_item(sf_bare_item& item) noexcept {
        if (s_.empty()) return false;
        const char c = s_.front();
        if (c == '-' || is_digit(c)) return number(item);
        if (c == '"') return string(item, sf_kind::string);
        if (c == '%') {
            s_.remove_prefix(1);
            return !s_.empty() && s_.front() == '"' && string(item, sf_kind::display_string);
        }
        if (c == ':') return byte_sequence(item);
        if (c == '?') {
            if (s_.size() < 2 || (s_[1] != '0' && s_[1] != '1')) return false;
            item = {sf_kind::boolean, s_.substr(1, 1)};
            s_.remove_prefix(2);
            return true;
        }
        if (c == '@') {
            s_.remove_prefix(1);
            if (!number(item) || item.kind != sf_kind::integer) return false;
            item.kind = sf_kind::date;
            return true;
        }
        if (is_alpha(c) || c == '*') {
            std::size_t n = 1;
            while (n < s_.size() && (is_tchar(s_[n]) || s_[n] == ':' || s_[n] == '/')) ++n;
            item = {sf_kind::token, s_.substr(0, n)};
            s_.remove_prefix(n);
            return true;
        }
        return false;
    }

    /// Integer (at most 15 digits) or Decimal (at most 12 + 3 digits).
    constexpr bool number(sf_bare_item& item) noexcept {
        const std::string_view start = s_;
        take('-');
        const std::size_t whole = digit_run(s_);
        if (whole == 0) return false;
        s_.remove_prefix(whole);
        sf_kind kind = sf_kind::integer;
        if (take('.')) {
            const std::size_t fraction = digit_run(s_);
            if (whole > 12 || fraction == 0 || fraction > 3) return false;
            s_.remove_prefix(fraction);
            kind = sf_kind::decimal;
        } else if (whole > 15) {
            return false;
        }
        item = {kind, start.substr(0, start.size() - s_.size())};
        return true;
    }

    constexpr bool string(sf_bare_item& item, sf_kind kind) noexcept {
        s_.remove_prefix(1);  // the opening quote
        for (std::size_t i = 0; i < s_.size(); ++i) {
            const char c = s_[i];
            if (c == '"') {
                item = {kind, s_.substr(0, i)};
                s_.remove_prefix(i + 1);
                return true;
            }
            if (c < 0x20 || c > 0x7e) return false;
            if (kind == sf_kind::string && c == '\\') {
                if (i + 1 >= s_.size() || (s_[i + 1] != '"' && s_[i + 1] != '\\')) return false;
                ++i;
            } else if (kind == sf_kind::display_string && c == '%') {
                if (i + 2 >= s_.size() || !is_lchex(s_[i + 1]) || !is_lchex(s_[i + 2])) return false;
                i += 2;
            }
        }
        return false;  // no closing quote
    }

    constexpr bool byte_sequence(sf_bare_item& item) noexcept {
        s_.remove_prefix(1);
        for (std::size_t i = 0; i < s_.size(); ++i) {
            if (s_[i] == ':') {
                item = {sf_kind::byte_sequence, s_.substr(0, i)};
                s_.remove_prefix(i + 1);
                return true;
            }
            if (!is_base64(s_[i])) return false;
        }
        return false;
    }

    std::string_view s_;
};

/// Calls `f(const sf_member&)` for each member of the List `field`, but only
/// when the whole field is valid (RFC 8941: a field that fails to parse is
/// ignored entirely). Returns whether it was valid.
template <class F>
constexpr bool for_each_sf_member(std::string_view field, F&& f) {
    if (!sf_parser(field).list([](const sf_member&) {})) return false;
    sf_parser(field).list(f);
    return true;
}

/// The value of parameter `key` in a member's parameters (the last one when
/// repeated, as RFC 8941 says), or nothing.
[[nodiscard]] constexpr std::optional<sf_bare_item> sf_parameter(std::string_view parameters, std::string_view key) {
    std::optional<sf_bare_item> found;
    sf_parser(parameters).parameters([&](std::string_view k, const sf_bare_item& v) {
        if (k == key) found = v;
    });
    return found;
}

}  // namespace ratelimit::detail::header
