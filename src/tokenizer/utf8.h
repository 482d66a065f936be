// UTF-8 helpers for the tokenizer: strict validation (the encoder refuses what Rust's `str`
// could not hold), code point iteration, and the few Unicode properties HF applies by hand.
#pragma once
#include <cstddef>
#include <string>
#include <string_view>

namespace lowbit::utf8 {

// Throws InputError "<what>: invalid UTF-8 at byte N" on overlong forms, surrogates, code
// points above U+10FFFF, stray continuation bytes and truncated sequences.
void validate(std::string_view text, std::string_view what);

// Byte length of the character starting with `lead` (1 for a byte that starts no sequence).
inline size_t char_length(unsigned char lead) {
  if (lead < 0x80) return 1;
  if ((lead & 0xE0) == 0xC0) return 2;
  if ((lead & 0xF0) == 0xE0) return 3;
  if ((lead & 0xF8) == 0xF0) return 4;
  return 1;
}

bool is_valid(std::string_view text);

// Decodes the character at `pos` of valid UTF-8 `text` and advances `pos` past it.
char32_t next_code_point(std::string_view text, size_t& pos);
// Decodes the last character of valid, non-empty UTF-8 `text`.
char32_t last_code_point(std::string_view text);

void append(std::string& out, char32_t cp);

// Length of the longest prefix of `bytes` that is valid UTF-8 plus the number of trailing bytes
// that could still become a valid character once more bytes arrive (0 when none).
size_t incomplete_tail_length(std::string_view bytes);

// Rust's String::from_utf8_lossy: each maximal invalid subsequence becomes U+FFFD.
std::string from_bytes_lossy(std::string_view bytes);

// Unicode White_Space (Rust char::is_whitespace), used by added-token lstrip/rstrip.
bool is_whitespace(char32_t cp);

}  // namespace lowbit::utf8
