#pragma once
// ratelimit::redis options shared by every Redis-backed limiter: what to do
// when Redis cannot answer, and how keys are named.

#include <algorithm>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>
#include <string_view>

namespace ratelimit::redis {

/// What a limiter answers when Redis cannot (connect failure, timeout, open
/// circuit, or an error reply).
enum class on_error {
    fail_open,       ///< grant: availability over the limit
    fail_closed,     ///< refuse: the limit over availability
    /// ask an in-process limiter of the same kind at `fallback_share` of the
    /// limit: empty when the outage begins after Redis has answered, and its
    /// grants taken from Redis when it answers again, so P processes at a
    /// share s with P·s <= 1 keep the shared bound across an outage
    /// (remote.hpp states it and its two exceptions)
    local_fallback,
};

/// Options every Redis-backed limiter takes.
struct options {
    on_error policy = on_error::fail_closed;
    /// Keys are "<prefix>:{<key>}:<kind>": the braces are a Redis Cluster hash
    /// tag, so all of one limiter's keys land in one slot.
    std::string prefix = "ratelimit";
    /// Share of the limit the local fallback allows, in (0, 1]: with N
    /// processes sharing a quota, 1/N keeps the sum within it during an outage
    /// and after it (token bucket: capacity + r·T in any interval of length T),
    /// because each local limiter starts empty when the outage begins after
    /// Redis has answered and its grants are taken from Redis when it is back.
    double fallback_share = 1.0;
};

/// Redis could not answer and the policy has no answer to give: thrown only
/// by the blocking `acquire` under on_error::fail_closed (try_* return false).
struct unavailable : std::runtime_error {
    using std::runtime_error::runtime_error;
};

namespace detail {

/// "<prefix>:{<key>}:<kind>". Throws std::invalid_argument naming `key` when
/// it is empty or holds a brace (which would change the hash tag).
inline std::string state_key(const char* where, std::string_view prefix, std::string_view key, std::string_view kind) {
    if (key.empty() || key.find_first_of("{}") != std::string_view::npos) {
        throw std::invalid_argument(std::string(where) + ": key must be non-empty and free of '{' and '}', got \"" +
                                    std::string(key) + "\"");
    }
    std::string result;
    result.reserve(prefix.size() + key.size() + kind.size() + 4);
    result.append(prefix).append(":{").append(key).append("}:").append(kind);
    return result;
}

/// Throws std::invalid_argument unless 0 < share <= 1.
inline void check_share(const char* where, double share) {
    if (!(share > 0.0 && share <= 1.0)) {
        throw std::invalid_argument(std::string(where) + ": fallback_share must be in (0, 1], got " +
                                    std::to_string(share));
    }
}

/// The limit the in-process fallback allows: max(1, floor(limit · share)),
/// at most `most` (what the local limiter can represent).
inline std::int64_t fallback_limit(std::int64_t limit, double share,
                                   std::int64_t most = std::numeric_limits<std::int64_t>::max()) {
    const std::int64_t top = std::max<std::int64_t>(1, std::min(limit, most));
    const double scaled = static_cast<double>(limit) * share;
    if (!(scaled >= 1.0)) return 1;                              // NaN too
    if (scaled >= static_cast<double>(top)) return top;          // no cast of a double at or past 2^63
    return std::max<std::int64_t>(1, static_cast<std::int64_t>(scaled));
}

}  // namespace detail
}  // namespace ratelimit::redis
