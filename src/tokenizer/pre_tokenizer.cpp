#include "tokenizer/pre_tokenizer.h"

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "tokenizer/byte_level.h"
#include "tokenizer/regex.h"

namespace lowbit {
namespace {

// GPT-2's word pattern, which ByteLevel(use_regex=true) applies.
constexpr const char* kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// Splits every piece at the spans of `regex` according to `behavior`.
void split_pieces(std::vector<PreToken>& pieces, const Regex& regex, SplitBehavior behavior,
                  bool invert) {
  std::vector<PreToken> out;
  out.reserve(pieces.size());
  for (PreToken& piece : pieces) {
    std::vector<Span> spans = regex.find_spans(piece.text);
    if (invert)
      for (Span& s : spans) s.is_match = !s.is_match;
    for (const auto& [start, end] : apply_split_behavior(std::move(spans), behavior))
      out.push_back({piece.text.substr(start, end - start), piece.at_input_start && start == 0});
  }
  pieces = std::move(out);
}

SplitBehavior parse_behavior(const nlohmann::json& value, const std::string& file) {
  std::string name = value.get<std::string>();
  for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (name == "removed") return SplitBehavior::removed;
  if (name == "isolated") return SplitBehavior::isolated;
  if (name == "mergedwithprevious") return SplitBehavior::merged_with_previous;
  if (name == "mergedwithnext") return SplitBehavior::merged_with_next;
  if (name == "contiguous") return SplitBehavior::contiguous;
  throw InputError(file + ": unsupported split behavior '" + value.get<std::string>() + "'");
}

class SequencePreTokenizer : public PreTokenizer {
 public:
  explicit SequencePreTokenizer(std::vector<std::unique_ptr<PreTokenizer>> steps)
      : steps_(std::move(steps)) {}
  void split(std::vector<PreToken>& pieces) const override {
    for (const auto& step : steps_) step->split(pieces);
  }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> steps_;
};

// Split, and the pre-tokenizers that are a fixed pattern plus a behaviour: Punctuation
// (one match per punctuation character), Digits, Whitespace, WhitespaceSplit.
class RegexSplitPreTokenizer : public PreTokenizer {
 public:
  RegexSplitPreTokenizer(const std::string& pattern, SplitBehavior behavior, bool invert,
                         const std::string& file)
      : regex_(pattern, file), behavior_(behavior), invert_(invert) {}
  void split(std::vector<PreToken>& pieces) const override {
    split_pieces(pieces, regex_, behavior_, invert_);
  }

 private:
  Regex regex_;
  SplitBehavior behavior_;
  bool invert_;
};

// Optionally splits with the GPT-2 pattern, then maps every byte to the byte-level alphabet.
// Later pre-tokenizers (Falcon's Digits and Split) see the mapped text, as in HF.
class ByteLevelPreTokenizer : public PreTokenizer {
 public:
  ByteLevelPreTokenizer(bool add_prefix_space, bool use_regex, const std::string& file)
      : add_prefix_space_(add_prefix_space) {
    if (use_regex) regex_ = std::make_unique<Regex>(kGpt2Pattern, file);
  }
  void split(std::vector<PreToken>& pieces) const override {
    if (add_prefix_space_)
      for (PreToken& piece : pieces)
        if (piece.text.empty() || piece.text[0] != ' ') piece.text = " " + piece.text;
    if (regex_) split_pieces(pieces, *regex_, SplitBehavior::isolated, false);
    for (PreToken& piece : pieces) piece.text = alphabet_.encode(piece.text);
  }

 private:
  bool add_prefix_space_;
  std::unique_ptr<Regex> regex_;
  ByteLevelAlphabet alphabet_;
};

class MetaspacePreTokenizer : public PreTokenizer {
 public:
  enum class Prepend { always, first, never };
  MetaspacePreTokenizer(std::string replacement, Prepend prepend, bool split_words,
                        const std::string& file)
      : replacement_(std::move(replacement)), prepend_(prepend), split_words_(split_words),
        replacement_regex_(Regex::escape(replacement_), file) {}
  void split(std::vector<PreToken>& pieces) const override {
    for (PreToken& piece : pieces) {
      std::string replaced;
      for (const char c : piece.text) {
        if (c == ' ')
          replaced += replacement_;
        else
          replaced += c;
      }
      // HF prepends only to non-empty text that does not already start with the replacement.
      const bool want_prefix = prepend_ == Prepend::always || (prepend_ == Prepend::first && piece.at_input_start);
      if (want_prefix && !replaced.empty() && replaced.rfind(replacement_, 0) != 0) replaced.insert(0, replacement_);
      piece.text = std::move(replaced);
    }
    if (split_words_) split_pieces(pieces, replacement_regex_, SplitBehavior::merged_with_next, false);
  }

 private:
  std::string replacement_;
  Prepend prepend_;
  bool split_words_;
  Regex replacement_regex_;
};

}  // namespace

std::unique_ptr<PreTokenizer> make_pre_tokenizer(const nlohmann::json& config, const std::string& file) {
  if (config.is_null()) return nullptr;
  const std::string type = config.at("type").get<std::string>();
  if (type == "Sequence") {
    std::vector<std::unique_ptr<PreTokenizer>> steps;
    for (const auto& step : config.at("pretokenizers"))
      if (auto p = make_pre_tokenizer(step, file)) steps.push_back(std::move(p));
    return std::make_unique<SequencePreTokenizer>(std::move(steps));
  }
  if (type == "Split") {
    const auto& pattern = config.at("pattern");
    std::string regex;
    if (pattern.contains("Regex"))
      regex = pattern.at("Regex").get<std::string>();
    else if (pattern.contains("String"))
      regex = Regex::escape(pattern.at("String").get<std::string>());
    else
      throw InputError(file + ": Split pattern must be String or Regex");
    return std::make_unique<RegexSplitPreTokenizer>(regex, parse_behavior(config.at("behavior"), file),
                                                    config.value("invert", false), file);
  }
  if (type == "ByteLevel")
    return std::make_unique<ByteLevelPreTokenizer>(config.value("add_prefix_space", true),
                                                   config.value("use_regex", true), file);
  if (type == "Metaspace") {
    std::string replacement = config.value("replacement", std::string("\xE2\x96\x81"));
    std::string scheme = config.value("prepend_scheme", std::string());
    // Files older than prepend_scheme carry add_prefix_space instead.
    if (scheme.empty()) scheme = config.value("add_prefix_space", true) ? "always" : "never";
    MetaspacePreTokenizer::Prepend prepend;
    if (scheme == "always")
      prepend = MetaspacePreTokenizer::Prepend::always;
    else if (scheme == "first")
      prepend = MetaspacePreTokenizer::Prepend::first;
    else if (scheme == "never")
      prepend = MetaspacePreTokenizer::Prepend::never;
    else
      throw InputError(file + ": unsupported Metaspace prepend_scheme '" + scheme + "'");
    return std::make_unique<MetaspacePreTokenizer>(replacement, prepend, config.value("split", true), file);
  }
  if (type == "Punctuation") {
    // HF: char::is_ascii_punctuation || Unicode general category P.
    const SplitBehavior behavior = config.contains("behavior") ? parse_behavior(config.at("behavior"), file)
                                                               : SplitBehavior::isolated;
    return std::make_unique<RegexSplitPreTokenizer>(R"([\p{P}!-/:-@\[-`{-~])", behavior, false, file);
  }
  if (type == "Digits") {
    // HF: char::is_numeric, i.e. general category N; one match per character.
    const SplitBehavior behavior = config.value("individual_digits", false) ? SplitBehavior::isolated
                                                                            : SplitBehavior::contiguous;
    return std::make_unique<RegexSplitPreTokenizer>(R"(\p{N})", behavior, false, file);
  }
  if (type == "Whitespace")
    return std::make_unique<RegexSplitPreTokenizer>(R"(\w+|[^\w\s]+)", SplitBehavior::removed, true, file);
  if (type == "WhitespaceSplit")
    return std::make_unique<RegexSplitPreTokenizer>(R"(\s+)", SplitBehavior::removed, false, file);
  throw InputError(file + ": unsupported pre_tokenizer type '" + type + "'");
}

}  // namespace lowbit
