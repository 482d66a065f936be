// GPT-2's reversible byte <-> printable character mapping (bytes_to_unicode): printable
// Latin-1 bytes map to themselves, the other 68 bytes to U+0100.. in byte order, so every byte
// string becomes a string of visible characters that BPE can work on.
#pragma once
#include <array>
#include <string>
#include <string_view>
#include <unordered_map>

namespace lowbit {

class ByteLevelAlphabet {
 public:
  ByteLevelAlphabet();
  // Each byte of `bytes` replaced by its character (UTF-8).
  std::string encode(std::string_view bytes) const;
  // Inverse of encode; false when `text` holds a character outside the alphabet.
  bool decode(std::string_view text, std::string& bytes) const;

 private:
  std::array<std::string, 256> char_of_byte_;
  std::unordered_map<char32_t, unsigned char> byte_of_char_;
};

}  // namespace lowbit
