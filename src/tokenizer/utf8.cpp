#include "tokenizer/utf8.h"

#include "core/error.h"

namespace lowbit::utf8 {
namespace {

// Length of the valid character at `pos`, or 0 when the bytes there are not one. When the
// sequence is cut short by the end of `bytes`, `truncated` is set (a prefix that may complete).
size_t valid_char_length(std::string_view bytes, size_t pos, bool& truncated) {
  truncated = false;
  const auto b0 = static_cast<unsigned char>(bytes[pos]);
  if (b0 < 0x80) return 1;
  size_t len;
  // Allowed range of the second byte excludes overlong forms, surrogates and > U+10FFFF
  // (Unicode Table 3-7, "Well-Formed UTF-8 Byte Sequences").
  unsigned char lo = 0x80, hi = 0xBF;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    len = 2;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    len = 3;
    if (b0 == 0xE0) lo = 0xA0;
    if (b0 == 0xED) hi = 0x9F;
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    len = 4;
    if (b0 == 0xF0) lo = 0x90;
    if (b0 == 0xF4) hi = 0x8F;
  } else {
    return 0;
  }
  for (size_t k = 1; k < len; ++k) {
    if (pos + k >= bytes.size()) {
      truncated = true;
      return 0;
    }
    const auto b = static_cast<unsigned char>(bytes[pos + k]);
    const unsigned char min = k == 1 ? lo : 0x80, max = k == 1 ? hi : 0xBF;
    if (b < min || b > max) return 0;
  }
  return len;
}

}  // namespace

void validate(std::string_view text, std::string_view what) {
  size_t pos = 0;
  while (pos < text.size()) {
    bool truncated;
    const size_t len = valid_char_length(text, pos, truncated);
    if (len == 0)
      throw InputError(std::string(what) + ": invalid UTF-8 at byte " + std::to_string(pos));
    pos += len;
  }
}

bool is_valid(std::string_view text) {
  size_t pos = 0;
  while (pos < text.size()) {
    bool truncated;
    const size_t len = valid_char_length(text, pos, truncated);
    if (len == 0) return false;
    pos += len;
  }
  return true;
}

char32_t next_code_point(std::string_view text, size_t& pos) {
  const auto b0 = static_cast<unsigned char>(text[pos]);
  const size_t len = char_length(b0);
  char32_t cp = len == 1 ? b0 : len == 2 ? (b0 & 0x1F) : len == 3 ? (b0 & 0x0F) : (b0 & 0x07);
  for (size_t k = 1; k < len && pos + k < text.size(); ++k)
    cp = (cp << 6) | (static_cast<unsigned char>(text[pos + k]) & 0x3F);
  pos += len;
  return cp;
}

char32_t last_code_point(std::string_view text) {
  size_t start = text.size() - 1;
  while (start > 0 && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) --start;
  return next_code_point(text, start);
}

void append(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

size_t incomplete_tail_length(std::string_view bytes) {
  // A character is at most 4 bytes, so only the last 3 can start an unfinished one.
  const size_t first = bytes.size() > 3 ? bytes.size() - 3 : 0;
  for (size_t pos = first; pos < bytes.size(); ++pos) {
    bool truncated;
    if (valid_char_length(bytes, pos, truncated) == 0 && truncated) return bytes.size() - pos;
  }
  return 0;
}

std::string from_bytes_lossy(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  size_t pos = 0;
  while (pos < bytes.size()) {
    bool truncated;
    const size_t len = valid_char_length(bytes, pos, truncated);
    if (len > 0) {
      out.append(bytes.substr(pos, len));
      pos += len;
      continue;
    }
    // Maximal invalid subsequence: the lead byte plus the continuation bytes that were still
    // acceptable (what Rust's Utf8Error::error_len reports).
    size_t skip = 1;
    const auto b0 = static_cast<unsigned char>(bytes[pos]);
    if (b0 >= 0xC2 && b0 <= 0xF4) {
      unsigned char lo = 0x80, hi = 0xBF;
      if (b0 == 0xE0) lo = 0xA0;
      if (b0 == 0xED) hi = 0x9F;
      if (b0 == 0xF0) lo = 0x90;
      if (b0 == 0xF4) hi = 0x8F;
      const size_t need = char_length(b0);
      while (skip < need && pos + skip < bytes.size()) {
        const auto b = static_cast<unsigned char>(bytes[pos + skip]);
        const unsigned char min = skip == 1 ? lo : 0x80, max = skip == 1 ? hi : 0xBF;
        if (b < min || b > max) break;
        ++skip;
      }
    }
    out += "\xEF\xBF\xBD";
    pos += skip;
  }
  return out;
}

bool is_whitespace(char32_t cp) {
  return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
         (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F ||
         cp == 0x205F || cp == 0x3000;
}

}  // namespace lowbit::utf8
