#include "generate/stop_strings.h"

#include <algorithm>

namespace lowbit {

StopStringMatcher::StopStringMatcher(std::vector<std::string> stops) : stops_(std::move(stops)) {
  stops_.erase(std::remove(stops_.begin(), stops_.end(), std::string()), stops_.end());
}

std::string StopStringMatcher::push(std::string_view piece) {
  if (matched()) return "";
  held_.append(piece);
  // The earliest stop string in the held text wins (the longest on a tie of start).
  size_t best = std::string::npos;
  for (const std::string& s : stops_) {
    const size_t at = held_.find(s);
    if (at != std::string::npos && (at < best || (at == best && s.size() > match_.size()))) {
      best = at;
      match_ = s;
    }
  }
  if (best != std::string::npos) {
    std::string out = held_.substr(0, best);
    held_.clear();
    return out;
  }
  // Hold back the longest tail that is the start of some stop string; it may complete later.
  size_t keep = 0;
  for (const std::string& s : stops_)
    for (size_t n = std::min(s.size() - 1, held_.size()); n > keep; --n)
      if (held_.compare(held_.size() - n, n, s, 0, n) == 0) {
        keep = n;
        break;
      }
  std::string out = held_.substr(0, held_.size() - keep);
  held_.erase(0, held_.size() - keep);
  return out;
}

std::string StopStringMatcher::flush() {
  std::string out;
  std::swap(out, held_);
  return out;
}

std::string cut_at_stop(const std::string& text, const std::vector<std::string>& stops) {
  size_t best = std::string::npos;
  for (const std::string& s : stops)
    if (!s.empty()) best = std::min(best, text.find(s));
  return best == std::string::npos ? text : text.substr(0, best);
}

std::function<bool(std::span<const int32_t>)> stop_after_strings(const Tokenizer& tok,
                                                                 const std::vector<int32_t>& prompt,
                                                                 const std::vector<std::string>& stops) {
  if (stops.empty()) return nullptr;
  struct State {
    StreamDecoder stream;
    StopStringMatcher matcher;
    size_t fed = 0;  // generated tokens already pushed
  };
  auto state = std::make_shared<State>(State{StreamDecoder(tok), StopStringMatcher(stops), 0});
  state->stream.prime(prompt);
  return [state](std::span<const int32_t> generated) {
    while (state->fed < generated.size()) state->matcher.push(state->stream.push(generated[state->fed++]));
    return state->matcher.matched();
  };
}

}  // namespace lowbit
