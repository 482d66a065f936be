#include "tokenizer/regex.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>

#include "core/error.h"

namespace lowbit {
namespace {

// Rewrites the escapes whose Unicode meaning differs between Oniguruma and PCRE2 (10.42, UCP):
//  \s  Oniguruma: White_Space, which includes U+0085 (NEL); PCRE2: Z or tab/LF/VT/FF/CR.
//  \w  Oniguruma: Letter | Mark | Decimal_Number | Connector_Punctuation; PCRE2: L, N and "_".
constexpr const char* kWordClass = "\\p{L}\\p{M}\\p{Nd}\\p{Pc}";

std::string onig_to_pcre2(const std::string& pattern) {
  std::string out;
  out.reserve(pattern.size() + 16);
  int class_depth = 0;
  for (size_t i = 0; i < pattern.size(); ++i) {
    const char c = pattern[i];
    if (c == '\\' && i + 1 < pattern.size()) {
      const char e = pattern[i + 1];
      ++i;
      if (e == 's') {
        out += class_depth > 0 ? "\\s\\x{85}" : "[\\s\\x{85}]";
      } else if (e == 'S' && class_depth == 0) {
        out += "[^\\s\\x{85}]";
      } else if (e == 'w') {
        out += class_depth > 0 ? kWordClass : "[" + std::string(kWordClass) + "]";
      } else if (e == 'W' && class_depth == 0) {
        out += "[^" + std::string(kWordClass) + "]";
      } else {
        out += '\\';
        out += e;
      }
      continue;
    }
    if (c == '[') {
      ++class_depth;
      out += c;
      // A ']' right after '[' or '[^' is a literal, not the class end.
      if (i + 1 < pattern.size() && pattern[i + 1] == '^') out += pattern[++i];
      if (i + 1 < pattern.size() && pattern[i + 1] == ']') out += pattern[++i];
      continue;
    }
    if (c == ']' && class_depth > 0) --class_depth;
    out += c;
  }
  return out;
}

}  // namespace

struct Regex::Compiled {
  pcre2_code* code = nullptr;
  ~Compiled() { pcre2_code_free(code); }
};

Regex::Regex(const std::string& pattern, const std::string& where) : compiled_(new Compiled), pattern_(pattern) {
  const std::string translated = onig_to_pcre2(pattern);
  int error_code = 0;
  PCRE2_SIZE error_offset = 0;
  compiled_->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(translated.data()), translated.size(),
                                  PCRE2_UTF | PCRE2_UCP, &error_code, &error_offset, nullptr);
  if (!compiled_->code) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(error_code, message, sizeof(message));
    throw InputError(where + ": unsupported regex '" + pattern + "': " +
                     reinterpret_cast<const char*>(message) + " at offset " +
                     std::to_string(error_offset));
  }
  // JIT is an optimisation only; the interpreter gives the same matches when it is unavailable.
  pcre2_jit_compile(compiled_->code, PCRE2_JIT_COMPLETE);
}

Regex::~Regex() = default;
Regex::Regex(Regex&&) noexcept = default;
Regex& Regex::operator=(Regex&&) noexcept = default;

std::vector<std::pair<size_t, size_t>> Regex::find_all(std::string_view text) const {
  std::vector<std::pair<size_t, size_t>> matches;
  // Match data per call keeps encode() safe to call from several threads.
  std::unique_ptr<pcre2_match_data, decltype(&pcre2_match_data_free)> match_data(
      pcre2_match_data_create_from_pattern(compiled_->code, nullptr), &pcre2_match_data_free);
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t pos = 0;
  while (pos <= text.size()) {
    // Input was validated once up front, so PCRE2 need not re-check UTF-8 on every call.
    const int rc = pcre2_match(compiled_->code, subject, text.size(), pos, PCRE2_NO_UTF_CHECK,
                               match_data.get(), nullptr);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      // Stopping here would silently tokenize the rest differently from HF; refuse instead.
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(rc, message, sizeof(message));
      throw InputError("tokenizer regex '" + pattern_ + "' failed at byte " + std::to_string(pos) + ": " +
                       reinterpret_cast<const char*>(message));
    }
    const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(match_data.get());
    const size_t start = ovector[0], end = ovector[1];
    if (end > start) {
      matches.emplace_back(start, end);
      pos = end;
    } else {
      // An empty match yields nothing (HF drops empty pieces); step one character past it.
      if (start >= text.size()) break;
      pos = start + 1;
      while (pos < text.size() && (static_cast<unsigned char>(text[pos]) & 0xC0) == 0x80) ++pos;
    }
  }
  return matches;
}

std::vector<Span> Regex::find_spans(std::string_view text) const {
  std::vector<Span> spans;
  if (text.empty()) {
    spans.push_back({0, 0, false});
    return spans;
  }
  size_t prev = 0;
  for (const auto& [start, end] : find_all(text)) {
    if (prev != start) spans.push_back({prev, start, false});
    spans.push_back({start, end, true});
    prev = end;
  }
  if (prev != text.size()) spans.push_back({prev, text.size(), false});
  return spans;
}

std::string Regex::escape(std::string_view literal) {
  std::string out;
  for (const char c : literal) {
    if (std::string_view("\\^$.|?*+()[]{}-/#&~ ").find(c) != std::string_view::npos) out += '\\';
    out += c;
  }
  return out;
}

std::vector<std::pair<size_t, size_t>> apply_split_behavior(std::vector<Span> spans,
                                                             SplitBehavior behavior) {
  // Mirrors NormalizedString::split in tokenizers: merge spans, then drop empty pieces.
  std::vector<std::pair<size_t, size_t>> pieces;
  switch (behavior) {
    case SplitBehavior::removed:
      for (const Span& s : spans)
        if (!s.is_match) pieces.emplace_back(s.start, s.end);
      break;
    case SplitBehavior::isolated:
      for (const Span& s : spans) pieces.emplace_back(s.start, s.end);
      break;
    case SplitBehavior::merged_with_previous: {
      bool previous_match = false;
      for (const Span& s : spans) {
        if (s.is_match && !previous_match && !pieces.empty())
          pieces.back().second = s.end;
        else
          pieces.emplace_back(s.start, s.end);
        previous_match = s.is_match;
      }
      break;
    }
    case SplitBehavior::merged_with_next: {
      bool previous_match = false;
      for (auto it = spans.rbegin(); it != spans.rend(); ++it) {
        if (it->is_match && !previous_match && !pieces.empty())
          pieces.back().first = it->start;
        else
          pieces.emplace_back(it->start, it->end);
        previous_match = it->is_match;
      }
      std::reverse(pieces.begin(), pieces.end());
      break;
    }
    case SplitBehavior::contiguous: {
      bool previous_match = false;
      for (const Span& s : spans) {
        if (s.is_match == previous_match && !pieces.empty())
          pieces.back().second = s.end;
        else
          pieces.emplace_back(s.start, s.end);
        previous_match = s.is_match;
      }
      break;
    }
  }
  std::erase_if(pieces, [](const auto& p) { return p.first == p.second; });
  return pieces;
}

}  // namespace lowbit
