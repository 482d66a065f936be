#include "tokenizer/normalizer.h"

#include <nlohmann/json.hpp>
#include <vector>

#include "core/error.h"
#include "tokenizer/regex.h"

namespace lowbit {
namespace {

class SequenceNormalizer : public Normalizer {
 public:
  explicit SequenceNormalizer(std::vector<std::unique_ptr<Normalizer>> steps)
      : steps_(std::move(steps)) {}
  std::string normalize(std::string_view text) const override {
    std::string out(text);
    for (const auto& step : steps_) out = step->normalize(out);
    return out;
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> steps_;
};

// HF's Prepend leaves an empty string empty.
class PrependNormalizer : public Normalizer {
 public:
  explicit PrependNormalizer(std::string prefix) : prefix_(std::move(prefix)) {}
  std::string normalize(std::string_view text) const override {
    return text.empty() ? std::string() : prefix_ + std::string(text);
  }

 private:
  std::string prefix_;
};

class ReplaceNormalizer : public Normalizer {
 public:
  ReplaceNormalizer(const nlohmann::json& config, const std::string& file) : rule_(config, file) {}
  std::string normalize(std::string_view text) const override { return rule_.apply(text); }

 private:
  ReplaceRule rule_;
};

}  // namespace

ReplaceRule::ReplaceRule(const nlohmann::json& config, const std::string& file) {
  const auto& pattern = config.at("pattern");
  content_ = config.at("content").get<std::string>();
  if (pattern.contains("String")) {
    literal_ = pattern.at("String").get<std::string>();
    if (literal_.empty()) throw InputError(file + ": Replace with an empty pattern is not supported");
  } else if (pattern.contains("Regex")) {
    regex_ = std::make_unique<Regex>(pattern.at("Regex").get<std::string>(), file);
  } else {
    throw InputError(file + ": Replace pattern must be String or Regex");
  }
}

std::string ReplaceRule::apply(std::string_view text) const {
  std::string out;
  out.reserve(text.size());
  if (regex_) {
    size_t prev = 0;
    for (const auto& [start, end] : regex_->find_all(text)) {
      out.append(text.substr(prev, start - prev));
      out += content_;
      prev = end;
    }
    out.append(text.substr(prev));
    return out;
  }
  size_t prev = 0;
  for (size_t at = text.find(literal_); at != std::string_view::npos;
       at = text.find(literal_, prev)) {
    out.append(text.substr(prev, at - prev));
    out += content_;
    prev = at + literal_.size();
  }
  out.append(text.substr(prev));
  return out;
}

std::unique_ptr<Normalizer> make_normalizer(const nlohmann::json& config, const std::string& file) {
  if (config.is_null()) return nullptr;
  const std::string type = config.at("type").get<std::string>();
  if (type == "Sequence") {
    std::vector<std::unique_ptr<Normalizer>> steps;
    for (const auto& step : config.at("normalizers"))
      if (auto n = make_normalizer(step, file)) steps.push_back(std::move(n));
    return std::make_unique<SequenceNormalizer>(std::move(steps));
  }
  if (type == "Prepend") return std::make_unique<PrependNormalizer>(config.at("prepend").get<std::string>());
  if (type == "Replace") return std::make_unique<ReplaceNormalizer>(config, file);
  throw InputError(file + ": unsupported normalizer type '" + type + "'");
}

}  // namespace lowbit
