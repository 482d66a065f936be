// tokenizer.json "normalizer": rewrites text before pre-tokenization. Supported: Sequence,
// Prepend, Replace (String or Regex pattern). Unicode normal forms (NFC, NFKC, ...) are not.
#pragma once
#include <memory>
#include <string>
#include <string_view>

#include <nlohmann/json_fwd.hpp>

#include "tokenizer/regex.h"

namespace lowbit {

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  virtual std::string normalize(std::string_view text) const = 0;
};

// nullptr for a JSON null. Throws InputError naming `file` for unsupported types.
std::unique_ptr<Normalizer> make_normalizer(const nlohmann::json& config, const std::string& file);

// Replace(pattern, content) is both a normalizer and a decoder step; shared here.
class ReplaceRule {
 public:
  ReplaceRule(const nlohmann::json& config, const std::string& file);
  std::string apply(std::string_view text) const;

 private:
  std::string literal_;                 // used when the pattern is a String
  std::unique_ptr<Regex> regex_;        // used when the pattern is a Regex
  std::string content_;
};

}  // namespace lowbit
