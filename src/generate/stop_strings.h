// Stop strings (--stop; llama.cpp's and OpenAI's "stop"): generation ends when the generated text
// contains one, and the text ends just before it. Streamed text is held back while it could still
// be the start of a stop string, so nothing past a stop is ever printed.
#pragma once
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace lowbit {

class StopStringMatcher {
 public:
  explicit StopStringMatcher(std::vector<std::string> stops);

  // Appends generated text; returns the part that is now safe to show. On a match, returns the
  // text before the stop string and matched() becomes true (later pushes return nothing).
  std::string push(std::string_view piece);
  // The text still held back (no stop string completed): the end of the generation.
  std::string flush();
  bool matched() const { return !match_.empty(); }
  const std::string& match() const { return match_; }  // the stop string found

 private:
  std::vector<std::string> stops_;
  std::string held_;
  std::string match_;
};

// `text` cut before the earliest occurrence of any of `stops` (unchanged when none occurs).
std::string cut_at_stop(const std::string& text, const std::vector<std::string>& stops);

// A GenerationRequest::stop_after for `stops` after `prompt`: decodes the generated tokens as the
// stream shows them (StreamDecoder primed with the prompt) and matches. Null when stops is
// empty. The tokenizer must outlive the request.
std::function<bool(std::span<const int32_t>)> stop_after_strings(const Tokenizer& tok,
                                                                 const std::vector<int32_t>& prompt,
                                                                 const std::vector<std::string>& stops);

}  // namespace lowbit
