#pragma once
// ratelimit::parse_rate_limit_headers: what a response's headers say about the quota.

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <ranges>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>

#include "detail/chrono.hpp"
#include "detail/header_parse.hpp"

namespace ratelimit {

/// One dimension of a provider's quota (requests, or tokens, ...) as a response
/// reported it. Each field is empty when the response did not say, or said
/// something malformed.
struct quota_state {
    std::optional<std::int64_t> limit;                    ///< the quota per window, >= 0
    std::optional<std::int64_t> remaining;                ///< what is left of it, >= 0
    std::optional<std::chrono::nanoseconds> reset_after;  ///< until it is replenished, >= 0 (0: already)

    friend bool operator==(const quota_state&, const quota_state&) = default;
};

/// Everything a response said about the caller's quota, per dimension, plus
/// how long the server asked the caller to wait (Retry-After). A dimension is
/// engaged when at least one of its fields was reported validly.
struct quota_snapshot {
    std::optional<quota_state> requests;
    std::optional<quota_state> tokens;
    std::optional<quota_state> input_tokens;
    std::optional<quota_state> output_tokens;
    std::optional<std::chrono::nanoseconds> retry_after;  ///< >= 0

    friend bool operator==(const quota_snapshot&, const quota_snapshot&) = default;
};

/// A range of header (name, value) pairs as HTTP libraries keep them:
/// std::vector<std::pair<std::string, std::string>>, std::map, std::multimap,
/// a std::span or array of std::pair<std::string_view, std::string_view>.
/// Elements are read twice and through references, so a forward range of
/// lvalues is required; each element's std::get<0> and std::get<1> must
/// convert to std::string_view.
template <class R>
concept header_range = std::ranges::forward_range<R> && std::is_lvalue_reference_v<std::ranges::range_reference_t<R>> &&
                       requires(std::ranges::range_reference_t<R> h) {
                           std::string_view(std::get<0>(h));
                           std::string_view(std::get<1>(h));
                       };

/// Go's time.ParseDuration syntax ("6m0s", "1m30.5s", "20ms", "1h2m3.5s",
/// ".5s", "0"; units ns, us, µs, μs, ms, s, m, h) as an exact count of
/// nanoseconds: fractions are scaled in integers and rounded down, so
/// "1m26.4s" is exactly 86.4 s. Unlike Go, a sign ('+' or '-') is rejected,
/// as are an empty string, a missing or unknown unit ("1", "1x"), surrounding
/// spaces and totals above nanoseconds::max() (about 292 years).
/// No allocation; linear in the length.
[[nodiscard]] constexpr std::optional<std::chrono::nanoseconds> parse_go_duration(std::string_view text) noexcept {
    const std::optional<std::int64_t> ns = detail::header::parse_go_duration_ns(text);
    if (!ns) return std::nullopt;
    return std::chrono::nanoseconds{*ns};
}

namespace detail::quota_headers {

using header::iequals;

/// The quota dimensions, in quota_snapshot's order; none: a quota we do not track.
enum class dimension : unsigned char { requests, tokens, input_tokens, output_tokens, none };
inline constexpr std::size_t dimension_count = 4;

/// Header families, in the order they win when two report the same dimension:
/// provider-specific names first, then the IETF fields, then the older
/// generic ones.
enum class family : unsigned char { anthropic, openai, structured, ratelimit_trio, x_ratelimit };
inline constexpr std::size_t family_count = 5;

enum class quantity : unsigned char { limit, remaining, reset };

enum class field_kind : unsigned char { other, date, retry_after, retry_after_ms, ratelimit, ratelimit_policy, quota };

/// What a header name means: its kind and, for a quota field, whose and which.
struct field_id {
    field_kind kind = field_kind::other;
    family from = family::openai;
    dimension dim = dimension::none;
    quantity what = quantity::limit;
};

[[nodiscard]] constexpr dimension dimension_named(std::string_view s) noexcept {
    if (iequals(s, "requests")) return dimension::requests;
    if (iequals(s, "tokens")) return dimension::tokens;
    if (iequals(s, "input-tokens")) return dimension::input_tokens;
    if (iequals(s, "output-tokens")) return dimension::output_tokens;
    return dimension::none;
}

[[nodiscard]] constexpr std::optional<quantity> quantity_named(std::string_view s) noexcept {
    if (iequals(s, "limit")) return quantity::limit;
    if (iequals(s, "remaining")) return quantity::remaining;
    if (iequals(s, "reset")) return quantity::reset;
    return std::nullopt;
}

/// The meaning of a header name (ASCII case-insensitive):
///   date, retry-after, retry-after-ms, ratelimit, ratelimit-policy
///   anthropic-ratelimit-<dimension>-<limit|remaining|reset>   Anthropic
///   x-ratelimit-<limit|remaining|reset>-<dimension>           OpenAI, Azure OpenAI
///   ratelimit-<limit|remaining|reset>                         IETF drafts up to 06 (requests)
///   x-ratelimit-<limit|remaining|reset>                       de-facto (GitHub, ...) (requests)
/// where <dimension> is requests, tokens, input-tokens or output-tokens.
[[nodiscard]] constexpr field_id classify(std::string_view name) noexcept {
    using header::istarts_with;
    constexpr std::string_view trio = "ratelimit-";
    constexpr std::string_view x = "x-ratelimit-";
    constexpr std::string_view anthropic = "anthropic-ratelimit-";
    if (name.empty()) return {};
    switch (header::to_lower(name.front())) {  // most headers are rejected here
        case 'd':
            return iequals(name, "date") ? field_id{field_kind::date} : field_id{};
        case 'r': {
            if (iequals(name, "retry-after")) return {field_kind::retry_after};
            if (iequals(name, "retry-after-ms")) return {field_kind::retry_after_ms};
            if (iequals(name, "ratelimit")) return {field_kind::ratelimit};
            if (iequals(name, "ratelimit-policy")) return {field_kind::ratelimit_policy};
            if (!istarts_with(name, trio)) return {};
            const std::optional<quantity> q = quantity_named(name.substr(trio.size()));
            if (!q) return {};
            return {field_kind::quota, family::ratelimit_trio, dimension::requests, *q};
        }
        case 'x': {
            if (!istarts_with(name, x)) return {};
            const std::string_view rest = name.substr(x.size());
            if (const std::optional<quantity> q = quantity_named(rest)) {
                return {field_kind::quota, family::x_ratelimit, dimension::requests, *q};
            }
            const std::size_t dash = rest.find('-');
            if (dash == std::string_view::npos) return {};
            const std::optional<quantity> q = quantity_named(rest.substr(0, dash));
            const dimension d = dimension_named(rest.substr(dash + 1));
            if (!q || d == dimension::none) return {};
            return {field_kind::quota, family::openai, d, *q};
        }
        case 'a': {
            if (!istarts_with(name, anthropic)) return {};
            const std::string_view rest = name.substr(anthropic.size());
            const std::size_t dash = rest.rfind('-');
            if (dash == std::string_view::npos) return {};
            const dimension d = dimension_named(rest.substr(0, dash));
            const std::optional<quantity> q = quantity_named(rest.substr(dash + 1));
            if (!q || d == dimension::none) return {};
            return {field_kind::quota, family::anthropic, d, *q};
        }
        default:
            return {};
    }
}

/// The dimension an IETF policy counts. With a `qu` unit: "requests" (or
/// "request", as the draft's registry table spells it) is requests; "tokens",
/// "input-tokens", "output-tokens" are those; any other unit
/// ("content-bytes", "concurrent-requests", unknown) is none. Without a unit
/// (the draft's default, "requests"), the policy name decides: a name
/// containing "token" (or "tpm", "itpm", "otpm") counts tokens, input or
/// output tokens when it also says "input" or "output"; any other name counts
/// requests.
[[nodiscard]] constexpr dimension policy_dimension(std::string_view name,
                                                   const std::optional<header::sf_bare_item>& unit) noexcept {
    using header::icontains;
    if (unit) {
        if (unit->kind != header::sf_kind::string && unit->kind != header::sf_kind::token) return dimension::none;
        const std::string_view u = unit->text;
        if (iequals(u, "request")) return dimension::requests;
        if (iequals(u, "input_tokens")) return dimension::input_tokens;
        if (iequals(u, "output_tokens")) return dimension::output_tokens;
        return dimension_named(u);
    }
    if (iequals(name, "itpm")) return dimension::input_tokens;
    if (iequals(name, "otpm")) return dimension::output_tokens;
    if (iequals(name, "tpm")) return dimension::tokens;
    if (icontains(name, "token")) {
        if (icontains(name, "input")) return dimension::input_tokens;
        if (icontains(name, "output")) return dimension::output_tokens;
        return dimension::tokens;
    }
    return dimension::requests;
}

/// The name of a policy or service-limit item: a String's or Token's text.
[[nodiscard]] constexpr std::optional<std::string_view> item_name(const header::sf_member& m) noexcept {
    if (m.inner_list) return std::nullopt;
    if (m.value.kind != header::sf_kind::string && m.value.kind != header::sf_kind::token) return std::nullopt;
    return m.value.text;
}

/// A non-negative Integer parameter, or nothing.
[[nodiscard]] inline std::optional<std::int64_t> count_parameter(const header::sf_member& m, std::string_view key) {
    const std::optional<header::sf_bare_item> v = header::sf_parameter(m.parameters, key);
    if (!v || v->kind != header::sf_kind::integer) return std::nullopt;
    return header::parse_count(v->text);
}

/// A non-negative seconds parameter (Integer, or Decimal kept exactly) in ns, or nothing.
[[nodiscard]] constexpr std::optional<std::int64_t> seconds_parameter(const header::sf_member& m, std::string_view key) {
    const std::optional<header::sf_bare_item> v = header::sf_parameter(m.parameters, key);
    if (!v || (v->kind != header::sf_kind::integer && v->kind != header::sf_kind::decimal)) return std::nullopt;
    return header::parse_decimal_ns(v->text, header::seconds_unit);
}

[[nodiscard]] constexpr bool reported(const quota_state& s) noexcept {
    return s.limit.has_value() || s.remaining.has_value() || s.reset_after.has_value();
}

/// Whether service limit `a` binds tighter than `b`: less remaining (a
/// reported remaining beats none), then the later reset.
[[nodiscard]] constexpr bool tighter(const quota_state& a, const quota_state& b) noexcept {
    if (a.remaining != b.remaining) {
        if (!a.remaining || !b.remaining) return a.remaining.has_value();
        return *a.remaining < *b.remaining;
    }
    return a.reset_after.value_or(std::chrono::nanoseconds::zero()) >
           b.reset_after.value_or(std::chrono::nanoseconds::zero());
}

/// A header value as a string_view; a null `const char*` reads as empty.
template <class T>
[[nodiscard]] constexpr std::string_view view_of(const T& value) noexcept {
    if constexpr (std::is_pointer_v<T>) {
        if (value == nullptr) return {};
    }
    return std::string_view(value);
}

/// Collects what the headers of one response say, in two passes over them:
/// the first finds the Date and the IETF policies, which the second needs to
/// read absolute resets and service limits. No allocation: policies live in a
/// fixed table of `max_policies` (later ones are not remembered).
class collector {
public:
    static constexpr std::size_t max_policies = 16;

    explicit constexpr collector(header::timestamp now) noexcept : now_(now), base_(now) {}

    /// Pass one: Date (the last valid one) and RateLimit-Policy.
    void first_pass(std::string_view raw_name, std::string_view raw_value) {
        const field_id id = classify(header::trim(raw_name));
        if (id.kind != field_kind::date && id.kind != field_kind::ratelimit_policy) return;
        const std::string_view value = header::trim(raw_value);
        if (id.kind == field_kind::date) {
            if (const std::optional<header::timestamp> date = header::parse_http_date(value, header::year_of(now_))) {
                base_ = *date;
            }
        } else if (id.kind == field_kind::ratelimit_policy) {
            header::for_each_sf_member(value, [this](const header::sf_member& m) { add_policy(m); });
        }
    }

    /// Pass two: every other field. A later valid value of the same field replaces an earlier one.
    void second_pass(std::string_view raw_name, std::string_view raw_value) {
        const field_id id = classify(header::trim(raw_name));
        if (id.kind == field_kind::other) return;
        const std::string_view value = header::trim(raw_value);
        switch (id.kind) {
            case field_kind::quota: {
                quota_state& s = states_[static_cast<std::size_t>(id.from)][static_cast<std::size_t>(id.dim)];
                if (id.what == quantity::reset) {
                    if (const std::optional<std::int64_t> ns = header::parse_reset_ns(value, base_)) {
                        s.reset_after = std::chrono::nanoseconds{*ns};
                    }
                } else if (const std::optional<std::int64_t> n = header::parse_count(value)) {
                    (id.what == quantity::limit ? s.limit : s.remaining) = n;
                }
                break;
            }
            case field_kind::retry_after:
                if (const std::optional<std::int64_t> ns = header::parse_retry_after_ns(value, base_)) retry_after_ = ns;
                break;
            case field_kind::retry_after_ms:
                if (const std::optional<std::int64_t> ns = header::parse_decimal_ns(value, header::milliseconds_unit)) {
                    retry_after_ms_ = ns;
                }
                break;
            case field_kind::ratelimit:
                header::for_each_sf_member(value, [this](const header::sf_member& m) { add_service_limit(m); });
                break;
            case field_kind::other:
            case field_kind::date:
            case field_kind::ratelimit_policy:
                break;
        }
    }

    /// The snapshot: per dimension the first family (in `family` order) that
    /// reported it; retry-after-ms before Retry-After.
    [[nodiscard]] quota_snapshot result() const {
        std::array<quota_state, dimension_count> structured = structured_;
        for (std::size_t d = 0; d < dimension_count; ++d) {
            if (reported(structured[d])) continue;
            for (std::size_t p = 0; p < policy_count_; ++p) {  // a policy without a service limit: its quota
                if (static_cast<std::size_t>(policies_[p].dim) == d && policies_[p].quota) {
                    structured[d].limit = policies_[p].quota;
                    break;
                }
            }
        }
        constexpr std::array<std::optional<quota_state> quota_snapshot::*, dimension_count> member = {
            &quota_snapshot::requests, &quota_snapshot::tokens, &quota_snapshot::input_tokens,
            &quota_snapshot::output_tokens};
        quota_snapshot snapshot;
        for (std::size_t d = 0; d < dimension_count; ++d) {
            for (std::size_t f = 0; f < family_count; ++f) {
                const quota_state& s = f == static_cast<std::size_t>(family::structured) ? structured[d] : states_[f][d];
                if (reported(s)) {
                    snapshot.*member[d] = s;
                    break;
                }
            }
        }
        const std::optional<std::int64_t> retry = retry_after_ms_ ? retry_after_ms_ : retry_after_;
        if (retry) snapshot.retry_after = std::chrono::nanoseconds{*retry};
        return snapshot;
    }

private:
    struct policy {
        std::string_view name;
        dimension dim = dimension::none;
        std::optional<std::int64_t> quota;
    };

    void add_policy(const header::sf_member& m) {
        const std::optional<std::string_view> name = item_name(m);
        if (!name || policy_count_ == max_policies) return;
        policies_[policy_count_++] = {*name, policy_dimension(*name, header::sf_parameter(m.parameters, "qu")),
                                      count_parameter(m, "q")};
    }

    [[nodiscard]] constexpr const policy* find_policy(std::string_view name) const noexcept {
        for (std::size_t p = 0; p < policy_count_; ++p) {
            if (policies_[p].name == name) return &policies_[p];
        }
        return nullptr;
    }

    /// A RateLimit item: its policy's dimension and quota (by name alone when
    /// no policy matches); the tightest item per dimension is kept.
    void add_service_limit(const header::sf_member& m) {
        const std::optional<std::string_view> name = item_name(m);
        if (!name) return;
        const policy* p = find_policy(*name);
        const dimension d = p != nullptr ? p->dim : policy_dimension(*name, std::nullopt);
        if (d == dimension::none) return;
        quota_state limit;
        if (p != nullptr) limit.limit = p->quota;
        limit.remaining = count_parameter(m, "r");
        if (const std::optional<std::int64_t> ns = seconds_parameter(m, "t")) limit.reset_after = std::chrono::nanoseconds{*ns};
        quota_state& best = structured_[static_cast<std::size_t>(d)];
        if (!reported(limit)) return;
        if (!reported(best) || tighter(limit, best)) best = limit;
    }

    header::timestamp now_;
    header::timestamp base_;  // the response's Date when valid, else now_
    std::array<std::array<quota_state, dimension_count>, family_count> states_{};
    std::array<quota_state, dimension_count> structured_{};
    std::array<policy, max_policies> policies_{};
    std::size_t policy_count_ = 0;
    std::optional<std::int64_t> retry_after_;
    std::optional<std::int64_t> retry_after_ms_;
};

}  // namespace detail::quota_headers

/// What the rate-limit headers of one HTTP response say about the caller's
/// quota: per dimension (requests, tokens, input tokens, output tokens) the
/// limit, the remaining amount and the time until reset, plus Retry-After.
///
/// Families read (names ASCII case-insensitive, values trimmed of spaces):
/// - OpenAI and Azure OpenAI: `x-ratelimit-{limit,remaining,reset}-{requests,tokens}`;
///   resets as Go durations ("6m0s", "20ms") or bare seconds ("30").
/// - Anthropic: `anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-{limit,remaining,reset}`;
///   resets as RFC 3339 times ("2024-07-01T12:00:30Z", offsets, fractions).
/// - IETF draft 08+: `RateLimit: "default";r=50;t=30` with
///   `RateLimit-Policy: "default";q=100;w=60` (structured-field lists; several
///   items and fields; quoted or token names). An item's dimension comes from
///   its policy's `qu` unit ("requests"; "tokens", "input-tokens",
///   "output-tokens"; "content-bytes" and "concurrent-requests" are not
///   tracked), or without a unit from the policy name (names saying "token"
///   count tokens), else requests. Per dimension the tightest item (least
///   remaining) is reported, with its policy's `q` as the limit.
/// - `RateLimit-{Limit,Remaining,Reset}` and `X-RateLimit-{Limit,Remaining,Reset}`
///   (requests): a reset of at least 1e9 is an epoch time in seconds, of at
///   least 1e12 in milliseconds; below, a delay in seconds.
/// - `retry-after-ms` (Azure; fractional milliseconds) over `Retry-After`
///   (delay-seconds, fractional seconds, or an HTTP-date in IMF-fixdate,
///   RFC 850 or asctime form).
/// When two families report the same dimension, the first in the order above
/// wins, with all of its fields. Absolute times are read against the
/// response's `Date` header when valid, else against `now`.
///
/// Guarantee: never throws and has no undefined behaviour for any header
/// content (input from the network is hostile): a malformed value leaves its
/// field empty; a repeated field keeps its last valid value; every number
/// reported is >= 0; a reset or date already past gives zero; "-1", negative
/// numbers and numbers beyond std::int64_t (or waits beyond
/// nanoseconds::max()) are unknown, never clamped.
///
/// Cost: two passes over the headers, each name compared against a handful of
/// prefixes; no allocation. Thread-safe (pure function of its arguments).
template <class Headers>
    requires header_range<const Headers>
[[nodiscard]] quota_snapshot parse_rate_limit_headers(
    const Headers& headers, std::chrono::system_clock::time_point now = std::chrono::system_clock::now()) {
    detail::quota_headers::collector collect(
        detail::header::timestamp_from_ns(detail::saturating_ns(now.time_since_epoch())));
    using detail::quota_headers::view_of;
    for (const auto& h : headers) collect.first_pass(view_of(std::get<0>(h)), view_of(std::get<1>(h)));
    for (const auto& h : headers) collect.second_pass(view_of(std::get<0>(h)), view_of(std::get<1>(h)));
    return collect.result();
}

}  // namespace ratelimit
