// tokenizer.json "model" of type BPE: vocabulary, ranked merges, byte fallback and unk
// handling, merged exactly as tokenizers' Word::merge_all (lowest rank first, then leftmost).
#pragma once
#include <array>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "tokenizer/flat_maps.h"

namespace lowbit {

// Lets unordered_map<std::string, ...> be searched with a string_view without a copy.
struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};

class BpeModel {
 public:
  BpeModel(const nlohmann::json& config, const std::string& file);

  // Appends the ids of one pre-tokenized word.
  void encode_word(std::string_view word, std::vector<int32_t>& ids) const;

  int32_t token_to_id(std::string_view token) const;  // -1 when absent
  const std::string* id_to_token(int32_t id) const;   // nullptr when absent
  int32_t max_id() const { return static_cast<int32_t>(tokens_.size()) - 1; }

 private:
  static uint64_t pair_key(int32_t left, int32_t right) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
  }
  std::vector<int32_t> merge_word(std::string_view word) const;
  bool has_byte_tokens(std::string_view character) const;

  StringIdMap vocab_;
  std::vector<std::string> tokens_;                // id -> token string ("" for unused ids)
  MergeMap merges_;                                // (left id, right id) -> rank, result
  std::array<int32_t, 256> byte_fallback_ids_{};   // id of "<0xXX>", or -1
  bool byte_fallback_ = false;
  bool fuse_unk_ = false;
  bool ignore_merges_ = false;
  int32_t unk_id_ = -1;

  // Words repeat a lot in text; caching their ids makes long inputs cheap. Bounded and guarded
  // so encode() stays const and thread-safe.
  static constexpr size_t kMaxCachedWords = 1 << 16;
  static constexpr size_t kMaxCachedWordBytes = 256;  // whole unsplit prompts are not words
  mutable std::mutex cache_mutex_;
  mutable std::unordered_map<std::string, std::vector<int32_t>, StringHash, std::equal_to<>> cache_;
};

}  // namespace lowbit
