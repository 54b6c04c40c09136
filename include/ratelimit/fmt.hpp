#pragma once
// ratelimit/fmt.hpp: fmt formatters for rates, reported quotas and gate stats (needs fmt).
//
// Not part of the umbrella ratelimit.hpp, which needs no third-party
// library: include it yourself and link ratelimit::fmt.
//
//     fmt::print("{}\n", gate.snapshot());
//     // admitted=120 completed=118 throttled=0 failed=1 abandoned=1 in_flight=0
//     //   tokens reserved=50000 used=30000 refunded=20000 overrun=0
//     //   limits rpm=600 tpm=90000 wait=1.25s paused=0s          (one line)
//     fmt::print("{}\n", ratelimit::rate::per_minute(90000));   // 90000/min
//
// Every formatter accepts the fill, alignment and width of a string
// ("{:>40}"); other format specs are rejected at compile time as for a
// string. Durations print as exact decimal seconds ("1.25s", "0.000001s",
// "0s"): integer arithmetic, no rounding, no locale. Formatting allocates
// only inside fmt's own buffer (inline up to 500 characters).

#include <chrono>
#include <cstdint>
#include <iterator>
#include <optional>

#include <fmt/format.h>

#include "headers.hpp"
#include "llm/gate.hpp"
#include "rate.hpp"

namespace ratelimit::detail::fmt_text {

using buffer = ::fmt::memory_buffer;

/// `ns` as exact decimal seconds, trailing zeros dropped: 1250000000 -> "1.25s", 0 -> "0s".
inline void seconds(buffer& out, std::chrono::nanoseconds ns) {
    std::int64_t count = ns.count();
    // Work on the magnitude as unsigned so nanoseconds::min() has one too.
    std::uint64_t magnitude = static_cast<std::uint64_t>(count);
    if (count < 0) {
        out.push_back('-');
        magnitude = 0 - magnitude;
    }
    constexpr std::uint64_t per_second = 1'000'000'000;
    ::fmt::format_to(std::back_inserter(out), "{}", magnitude / per_second);
    std::uint64_t fraction = magnitude % per_second;
    if (fraction != 0) {
        int digits = 9;
        while (fraction % 10 == 0) {
            fraction /= 10;
            --digits;
        }
        ::fmt::format_to(std::back_inserter(out), ".{:0{}}", fraction, digits);
    }
    out.push_back('s');
}

/// A rate's period as a unit: 1 s -> "s", 1 min -> "min", 2 h -> "2h",
/// 250 ms -> "250ms"; the largest of h, min, s, ms, us, ns that divides it.
inline void period(buffer& out, std::chrono::nanoseconds p) {
    struct unit {
        std::int64_t ns;
        const char* name;
    };
    constexpr unit units[] = {{3'600'000'000'000, "h"}, {60'000'000'000, "min"}, {1'000'000'000, "s"},
                              {1'000'000, "ms"},        {1'000, "us"},           {1, "ns"}};
    for (const unit& u : units) {
        if (p.count() % u.ns != 0) continue;
        const std::int64_t n = p.count() / u.ns;
        if (n == 1) {
            ::fmt::format_to(std::back_inserter(out), "{}", u.name);
        } else {
            ::fmt::format_to(std::back_inserter(out), "{}{}", n, u.name);
        }
        return;
    }
}

/// A per-minute limit from stats: the number, or "unknown" for 0.
inline void limit(buffer& out, const char* name, std::int64_t per_minute) {
    if (per_minute > 0) {
        ::fmt::format_to(std::back_inserter(out), "{}={}", name, per_minute);
    } else {
        ::fmt::format_to(std::back_inserter(out), "{}=unknown", name);
    }
}

/// The known fields of one quota dimension, space-separated; "unknown" when none is.
inline void quota(buffer& out, const quota_state& q) {
    bool first = true;
    const auto separate = [&] {
        if (!first) out.push_back(' ');
        first = false;
    };
    if (q.limit) {
        separate();
        ::fmt::format_to(std::back_inserter(out), "limit={}", *q.limit);
    }
    if (q.remaining) {
        separate();
        ::fmt::format_to(std::back_inserter(out), "remaining={}", *q.remaining);
    }
    if (q.reset_after) {
        separate();
        ::fmt::format_to(std::back_inserter(out), "reset=");
        seconds(out, *q.reset_after);
    }
    if (first) ::fmt::format_to(std::back_inserter(out), "unknown");
}

/// Formats through fmt's string formatter, so fill, alignment and width apply to the whole text.
struct text_formatter : ::fmt::formatter<::fmt::string_view> {
    template <class FormatContext>
    auto write(const buffer& text, FormatContext& ctx) const -> decltype(ctx.out()) {
        return ::fmt::formatter<::fmt::string_view>::format(::fmt::string_view(text.data(), text.size()), ctx);
    }
};

}  // namespace ratelimit::detail::fmt_text

/// `10/s`, `90000/min`, `0.5/s`, `1/250ms`: permits() as the shortest decimal
/// that reads back exactly, then period() in the largest whole unit.
template <>
struct fmt::formatter<ratelimit::rate> : ratelimit::detail::fmt_text::text_formatter {
    template <class FormatContext>
    auto format(const ratelimit::rate& r, FormatContext& ctx) const -> decltype(ctx.out()) {
        ratelimit::detail::fmt_text::buffer out;
        ::fmt::format_to(std::back_inserter(out), "{}/", r.permits());
        ratelimit::detail::fmt_text::period(out, r.period());
        return write(out, ctx);
    }
};

/// `limit=600 remaining=599 reset=0.1s`: the fields the response reported,
/// in that order; `unknown` when it reported none.
template <>
struct fmt::formatter<ratelimit::quota_state> : ratelimit::detail::fmt_text::text_formatter {
    template <class FormatContext>
    auto format(const ratelimit::quota_state& q, FormatContext& ctx) const -> decltype(ctx.out()) {
        ratelimit::detail::fmt_text::buffer out;
        ratelimit::detail::fmt_text::quota(out, q);
        return write(out, ctx);
    }
};

/// `requests(limit=600 remaining=0 reset=6s) tokens(remaining=89000) retry_after=20s`:
/// the dimensions the response reported (requests, tokens, input_tokens,
/// output_tokens), then retry_after when given; `none` when it said nothing.
template <>
struct fmt::formatter<ratelimit::quota_snapshot> : ratelimit::detail::fmt_text::text_formatter {
    template <class FormatContext>
    auto format(const ratelimit::quota_snapshot& s, FormatContext& ctx) const -> decltype(ctx.out()) {
        namespace text = ratelimit::detail::fmt_text;
        text::buffer out;
        const auto dimension = [&out](const char* name, const std::optional<ratelimit::quota_state>& q) {
            if (!q) return;
            if (out.size() != 0) out.push_back(' ');
            ::fmt::format_to(std::back_inserter(out), "{}(", name);
            text::quota(out, *q);
            out.push_back(')');
        };
        dimension("requests", s.requests);
        dimension("tokens", s.tokens);
        dimension("input_tokens", s.input_tokens);
        dimension("output_tokens", s.output_tokens);
        if (s.retry_after) {
            if (out.size() != 0) out.push_back(' ');
            ::fmt::format_to(std::back_inserter(out), "retry_after=");
            text::seconds(out, *s.retry_after);
        }
        if (out.size() == 0) ::fmt::format_to(std::back_inserter(out), "none");
        return write(out, ctx);
    }
};

/// One line, every counter and the limits in force (`unknown` for a limit
/// not configured nor learned yet):
/// `admitted=120 completed=118 throttled=0 failed=1 abandoned=1 in_flight=0
/// tokens reserved=50000 used=30000 refunded=20000 overrun=0
/// limits rpm=600 tpm=90000 wait=1.25s paused=0s`.
template <>
struct fmt::formatter<ratelimit::llm::stats> : ratelimit::detail::fmt_text::text_formatter {
    template <class FormatContext>
    auto format(const ratelimit::llm::stats& s, FormatContext& ctx) const -> decltype(ctx.out()) {
        namespace text = ratelimit::detail::fmt_text;
        text::buffer out;
        ::fmt::format_to(std::back_inserter(out),
                         "admitted={} completed={} throttled={} failed={} abandoned={} in_flight={} "
                         "tokens reserved={} used={} refunded={} overrun={} limits ",
                         s.admitted, s.completed, s.throttled, s.failed, s.abandoned, s.in_flight, s.tokens_reserved,
                         s.tokens_used, s.tokens_refunded, s.tokens_overrun);
        text::limit(out, "rpm", s.requests_per_minute);
        out.push_back(' ');
        text::limit(out, "tpm", s.tokens_per_minute);
        ::fmt::format_to(std::back_inserter(out), " wait=");
        text::seconds(out, s.total_wait);
        ::fmt::format_to(std::back_inserter(out), " paused=");
        text::seconds(out, s.paused_for);
        return write(out, ctx);
    }
};
