#pragma once
// ratelimit::llm::estimate_tokens: a conservative token count for a text.

#include <cstdint>
#include <string_view>

namespace ratelimit::llm {

/// An upper estimate of the tokens a text costs an LLM tokenizer, from its
/// bytes alone: one token per 3 ASCII bytes (BPE tokenizers average about 4
/// for English and code) plus one token per non-ASCII character (CJK scripts
/// run close to one per character), rounded up, plus one.
///
/// Over-estimates are safe: the gate reserves the estimate and gives back
/// what the response's usage shows was not used. Replace it with the
/// provider's tokenizer when exact counts matter. Never throws; invalid UTF-8
/// counts each stray byte as a character.
[[nodiscard]] constexpr std::int64_t estimate_tokens(std::string_view text) noexcept {
    std::int64_t ascii_bytes = 0;
    std::int64_t other_characters = 0;
    for (const char c : text) {
        const auto byte = static_cast<unsigned char>(c);
        if (byte < 0x80) {
            ++ascii_bytes;
        } else if ((byte & 0xC0) != 0x80) {  // a lead byte (or a stray one): one character
            ++other_characters;
        }
    }
    return (ascii_bytes + 2) / 3 + other_characters + 1;
}

}  // namespace ratelimit::llm
