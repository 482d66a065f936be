#include "tokenizer/byte_level.h"

#include "tokenizer/utf8.h"

namespace lowbit {

ByteLevelAlphabet::ByteLevelAlphabet() {
  char32_t next_extra = 256;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    const char32_t cp = printable ? static_cast<char32_t>(b) : next_extra++;
    utf8::append(char_of_byte_[b], cp);
    byte_of_char_[cp] = static_cast<unsigned char>(b);
  }
}

std::string ByteLevelAlphabet::encode(std::string_view bytes) const {
  std::string out;
  out.reserve(bytes.size() * 2);
  for (const char c : bytes) out += char_of_byte_[static_cast<unsigned char>(c)];
  return out;
}

bool ByteLevelAlphabet::decode(std::string_view text, std::string& bytes) const {
  size_t pos = 0;
  while (pos < text.size()) {
    const auto it = byte_of_char_.find(utf8::next_code_point(text, pos));
    if (it == byte_of_char_.end()) return false;
    bytes += static_cast<char>(it->second);
  }
  return true;
}

}  // namespace lowbit
