#pragma once
// SHA-1 of a byte string as 40 lowercase hex digits: the name Redis gives a
// Lua script (EVALSHA), computed here so the first call needs no SCRIPT LOAD.
// Not for security: Redis uses SHA-1 only to name scripts.

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace ratelimit::detail {

[[nodiscard]] inline std::string sha1_hex(std::string_view message) {
    std::array<std::uint32_t, 5> h{0x67452301u, 0xEFCDAB89u, 0x98BADCFEu, 0x10325476u, 0xC3D2E1F0u};
    const auto rotl = [](std::uint32_t x, int k) { return (x << k) | (x >> (32 - k)); };
    const auto block = [&](const unsigned char* p) {
        std::array<std::uint32_t, 80> w{};
        for (int i = 0; i < 16; ++i) {
            w[i] = std::uint32_t{p[4 * i]} << 24 | std::uint32_t{p[4 * i + 1]} << 16 |
                   std::uint32_t{p[4 * i + 2]} << 8 | std::uint32_t{p[4 * i + 3]};
        }
        for (int i = 16; i < 80; ++i) w[i] = rotl(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
        std::uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
        for (int i = 0; i < 80; ++i) {
            std::uint32_t f = 0, k = 0;
            if (i < 20) { f = (b & c) | (~b & d); k = 0x5A827999u; }
            else if (i < 40) { f = b ^ c ^ d; k = 0x6ED9EBA1u; }
            else if (i < 60) { f = (b & c) | (b & d) | (c & d); k = 0x8F1BBCDCu; }
            else { f = b ^ c ^ d; k = 0xCA62C1D6u; }
            const std::uint32_t t = rotl(a, 5) + f + e + k + w[i];
            e = d; d = c; c = rotl(b, 30); b = a; a = t;
        }
        h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e;
    };
    std::string padded(message);
    const std::uint64_t bits = static_cast<std::uint64_t>(message.size()) * 8;
    padded.push_back(static_cast<char>(0x80));
    while (padded.size() % 64 != 56) padded.push_back('\0');
    for (int i = 7; i >= 0; --i) padded.push_back(static_cast<char>((bits >> (8 * i)) & 0xFF));
    for (std::size_t i = 0; i < padded.size(); i += 64) block(reinterpret_cast<const unsigned char*>(padded.data() + i));
    static constexpr char digits[] = "0123456789abcdef";
    std::string hex;
    hex.reserve(40);
    for (std::uint32_t word : h) {
        for (int i = 7; i >= 0; --i) hex.push_back(digits[(word >> (4 * i)) & 0xF]);
    }
    return hex;
}

}  // namespace ratelimit::detail
