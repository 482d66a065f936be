// Tokenizer loaded from a Hugging Face tokenizer.json. Two model families are supported:
//  - SentencePiece-style BPE (Llama-2, stories260K): Metaspace or Prepend+Replace normalizer,
//    byte_fallback, merges;
//  - byte-level BPE with regex pre-tokenization (Falcon, Llama-3), via PCRE2.
// Added/special tokens are matched before the model runs. Token ids equal HF `tokenizers`.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace lowbit {

class TokenizerImpl;

class Tokenizer {
 public:
  // Throws InputError naming the file on a missing or malformed tokenizer.json.
  static Tokenizer from_file(const std::string& tokenizer_json_path);
  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  // Like tokenizers' encode(text, add_special_tokens=add_special): with add_special the
  // post-processor's template (e.g. BOS) is applied. Throws InputError on invalid UTF-8.
  std::vector<int32_t> encode(std::string_view text, bool add_special = true) const;
  // Like tokenizers' decode(ids, skip_special_tokens=skip_special).
  std::string decode(const std::vector<int32_t>& ids, bool skip_special = true) const;

  int vocab_size() const;         // including added tokens
  int32_t bos_id() const;         // -1 when the vocabulary has none
  int32_t eos_id() const;         // -1 when the vocabulary has none
  bool is_special(int32_t id) const;
  int32_t token_to_id(std::string_view token) const;  // -1 when absent
  std::string id_to_token(int32_t id) const;          // the vocabulary string

  const TokenizerImpl& impl() const { return *impl_; }

 private:
  explicit Tokenizer(std::unique_ptr<TokenizerImpl> impl);
  std::unique_ptr<TokenizerImpl> impl_;
};

// Turns generated ids into text as they arrive. push() returns only text no later id can change:
// complete UTF-8 characters, and a run of byte-fallback tokens only once a non-byte token ends it
// (HF decodes such a run as a whole: one U+FFFD per byte if the run is not valid UTF-8);
// flush() returns what is left, with invalid bytes replaced by U+FFFD as HF's decode does.
// The concatenation of all outputs equals tokenizer.decode(all ids).
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& tok, bool skip_special = true);
  // Takes ids as already shown (the prompt): later pushes return only the text after them, with
  // the spacing decode gives in that context (the first generated word keeps its leading space).
  void prime(const std::vector<int32_t>& ids);
  std::string push(int32_t id);
  std::string flush();

 private:
  std::string decode_window() const;
  bool is_byte_piece(int32_t id) const;
  bool is_dropped(int32_t id) const;
  void advance_window();

  const Tokenizer& tok_;
  bool skip_special_;
  // Only ids_[window_start_..] are decoded on each push, so streaming stays linear in length;
  // the window start moves only where decoding from there provably continues the same text.
  std::vector<int32_t> ids_;
  size_t window_start_ = 0;
  size_t emitted_ = 0;  // bytes of decode(window) already returned
};

}  // namespace lowbit
