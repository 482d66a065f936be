// The pipeline behind Tokenizer, in tokenizers' order: added-token split (raw), normalizer,
// added-token split (normalized), pre-tokenizer, BPE model, post-processor; and for decoding,
// id -> token string -> decoder chain.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "tokenizer/added_vocabulary.h"
#include "tokenizer/bpe_model.h"
#include "tokenizer/decoder.h"
#include "tokenizer/normalizer.h"
#include "tokenizer/post_processor.h"
#include "tokenizer/pre_tokenizer.h"

namespace lowbit {

class TokenizerImpl {
 public:
  TokenizerImpl(const nlohmann::json& config, const std::string& file);

  std::vector<int32_t> encode(std::string_view text, bool add_special) const;
  std::string decode(const std::vector<int32_t>& ids, bool skip_special) const;

  int vocab_size() const { return vocab_size_; }
  int32_t bos_id() const { return bos_id_; }
  int32_t eos_id() const { return eos_id_; }
  bool is_special(int32_t id) const;
  bool is_added_token(int32_t id) const;
  int32_t token_to_id(std::string_view token) const;
  std::string id_to_token(int32_t id) const;

 private:
  int32_t find_named_token(std::initializer_list<std::string_view> names) const;

  std::unique_ptr<Normalizer> normalizer_;  // null: text is used as is
  std::unique_ptr<PreTokenizer> pre_tokenizer_;  // null: each segment is one word
  BpeModel model_;
  AddedVocabulary added_;
  std::unique_ptr<PostProcessor> post_processor_;  // null: add_special adds nothing
  std::unique_ptr<Decoder> decoder_;  // null: tokens joined with spaces
  int vocab_size_ = 0;
  int32_t bos_id_ = -1;
  int32_t eos_id_ = -1;
};

}  // namespace lowbit
