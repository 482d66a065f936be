// SHA-256 (FIPS 180-4), for naming a model folder by the hash of its config.json in provenance
// records: the same digest `sha256sum config.json` prints, so a reader can check it by hand.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace lowbit {

class Sha256 {
 public:
  Sha256();
  void update(std::string_view bytes);
  // The digest as 64 lowercase hex digits; the object is spent afterwards.
  std::string hex_digest();

 private:
  void compress(const uint8_t* block);
  std::array<uint32_t, 8> state_;
  std::array<uint8_t, 64> buffer_{};
  size_t buffered_ = 0;
  uint64_t total_bytes_ = 0;
};

std::string sha256_hex(std::string_view bytes);

}  // namespace lowbit
