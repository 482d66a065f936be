// A PCRE2 regex (UTF + UCP, JIT-compiled once) standing in for the Oniguruma regexes HF
// `tokenizers` runs, and the split behaviours HF applies to its matches.
#pragma once
#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace lowbit {

// [start, end) byte range of a piece of a string, and whether it was a pattern match.
struct Span {
  size_t start;
  size_t end;
  bool is_match;
};

class Regex {
 public:
  // `pattern` in Oniguruma syntax as tokenizer.json stores it; `where` names the file for errors.
  Regex(const std::string& pattern, const std::string& where);
  ~Regex();
  Regex(Regex&&) noexcept;
  Regex& operator=(Regex&&) noexcept;

  // All non-overlapping, non-empty matches, leftmost first, as [start, end) byte ranges.
  std::vector<std::pair<size_t, size_t>> find_all(std::string_view text) const;
  // HF Pattern::find_matches: the matches plus the gaps between them, covering all of `text`.
  std::vector<Span> find_spans(std::string_view text) const;

  static std::string escape(std::string_view literal);

 private:
  struct Compiled;
  std::unique_ptr<Compiled> compiled_;
  std::string pattern_;  // as written in tokenizer.json, for error messages
};

// tokenizers' SplitDelimiterBehavior.
enum class SplitBehavior { removed, isolated, merged_with_previous, merged_with_next, contiguous };

// Applies `behavior` to the spans of find_spans; returns the resulting non-empty pieces.
std::vector<std::pair<size_t, size_t>> apply_split_behavior(std::vector<Span> spans,
                                                             SplitBehavior behavior);

}  // namespace lowbit
