// tokenizer.json "pre_tokenizer": splits normalized text into words that BPE encodes one by one.
// Supported: Sequence, Split, ByteLevel, Metaspace, Punctuation, Digits, Whitespace,
// WhitespaceSplit.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace lowbit {

struct PreToken {
  std::string text;
  // Starts at byte 0 of the original input (Metaspace prepend_scheme "first" needs it).
  bool at_input_start = false;
};

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  // Replaces each piece with its sub-pieces, in order; empty pieces are dropped.
  virtual void split(std::vector<PreToken>& pieces) const = 0;
};

// nullptr for a JSON null. Throws InputError naming `file` for unsupported types.
std::unique_ptr<PreTokenizer> make_pre_tokenizer(const nlohmann::json& config, const std::string& file);

}  // namespace lowbit
