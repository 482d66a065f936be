// tokenizer.json "added_tokens": strings matched in the input before the model runs (special
// tokens like <s>, and user tokens). Matching follows tokenizers' AddedVocabulary: tokens with
// normalized=false are found in the raw input, the others in the normalized text; leftmost
// match first, longest among those starting there; then single_word, lstrip, rstrip.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "tokenizer/regex.h"

namespace lowbit {

class Normalizer;

struct AddedToken {
  int32_t id = -1;
  std::string content;
  // What id_to_token and decode use: tokenizers stores a normalized token's content as the
  // normalizer rewrote it (Llama-2's "hello" becomes "▁hello", decoded " hello").
  std::string token_string;
  bool special = false;
  bool lstrip = false;       // swallow whitespace before the match
  bool rstrip = false;       // swallow whitespace after the match
  bool single_word = false;  // match only when not inside a word
  bool normalized = true;    // match in normalized text rather than the raw input
};

// A piece of text: either an added token (id >= 0) or plain text (id == -1) at [start, end).
struct Segment {
  size_t start;
  size_t end;
  int32_t id;
};

class AddedVocabulary {
 public:
  AddedVocabulary() = default;
  AddedVocabulary(const nlohmann::json& added_tokens, const Normalizer* normalizer, const std::string& file);

  // Splits `text` on the tokens with normalized=false (raw) or normalized=true (normalized).
  std::vector<Segment> split_raw(std::string_view text) const { return split(text, raw_); }
  std::vector<Segment> split_normalized(std::string_view text) const { return split(text, normalized_); }

  const AddedToken* find(int32_t id) const;
  int32_t token_to_id(std::string_view content) const;  // -1 when absent
  const std::vector<AddedToken>& tokens() const { return tokens_; }

 private:
  // Byte trie over the token strings for leftmost-longest search.
  struct Matcher {
    struct Node {
      std::map<unsigned char, int32_t> children;
      int32_t token_index = -1;  // into tokens_, when a token ends here
    };
    std::vector<Node> nodes{Node{}};
    bool can_start[256] = {};
    bool empty() const { return nodes.size() == 1; }
    void add(std::string_view text, int32_t token_index);
    // First match at or after `from`: (start, end, token index); token index -1 when none.
    void find(std::string_view text, size_t from, size_t& start, size_t& end, int32_t& token_index) const;
  };
  std::vector<Segment> split(std::string_view text, const Matcher& matcher) const;
  bool is_word_character(std::string_view character) const;

  std::vector<AddedToken> tokens_;
  std::unordered_map<int32_t, size_t> index_of_id_;
  Matcher raw_;
  Matcher normalized_;
  std::unique_ptr<Regex> word_character_;  // compiled only when a token is single_word
};

}  // namespace lowbit
