#include "tokenizer/post_processor.h"

#include <nlohmann/json.hpp>

#include "core/error.h"

namespace lowbit {
namespace {

// The single-sequence template as three parts: special ids before, the sequence, ids after.
class SurroundProcessor : public PostProcessor {
 public:
  SurroundProcessor(std::vector<int32_t> before, std::vector<int32_t> after)
      : before_(std::move(before)), after_(std::move(after)) {}
  void process(std::vector<int32_t>& ids) const override {
    ids.insert(ids.begin(), before_.begin(), before_.end());
    ids.insert(ids.end(), after_.begin(), after_.end());
  }
  std::vector<int32_t> prefix_ids() const override { return before_; }

 private:
  std::vector<int32_t> before_;
  std::vector<int32_t> after_;
};

class SequenceProcessor : public PostProcessor {
 public:
  explicit SequenceProcessor(std::vector<std::unique_ptr<PostProcessor>> steps) : steps_(std::move(steps)) {}
  void process(std::vector<int32_t>& ids) const override {
    for (const auto& step : steps_) step->process(ids);
  }
  std::vector<int32_t> prefix_ids() const override {
    std::vector<int32_t> prefix;
    for (auto it = steps_.rbegin(); it != steps_.rend(); ++it) {
      const std::vector<int32_t> step_prefix = (*it)->prefix_ids();
      prefix.insert(prefix.begin(), step_prefix.begin(), step_prefix.end());
    }
    return prefix;
  }

 private:
  std::vector<std::unique_ptr<PostProcessor>> steps_;
};

std::unique_ptr<PostProcessor> make_template(const nlohmann::json& config, const std::string& file) {
  const auto& special_tokens = config.at("special_tokens");
  std::vector<int32_t> before, after;
  bool seen_sequence = false;
  for (const auto& piece : config.at("single")) {
    if (piece.contains("Sequence")) {
      if (seen_sequence) throw InputError(file + ": TemplateProcessing with the sequence twice is not supported");
      seen_sequence = true;
    } else if (piece.contains("SpecialToken")) {
      const std::string name = piece.at("SpecialToken").at("id").get<std::string>();
      if (!special_tokens.contains(name))
        throw InputError(file + ": TemplateProcessing uses undefined special token '" + name + "'");
      for (const auto& id : special_tokens.at(name).at("ids"))
        (seen_sequence ? after : before).push_back(id.get<int32_t>());
    } else {
      throw InputError(file + ": malformed TemplateProcessing piece " + piece.dump());
    }
  }
  return std::make_unique<SurroundProcessor>(std::move(before), std::move(after));
}

// Bert/Roberta store [token, id] pairs: "cls" goes before, "sep" after.
std::unique_ptr<PostProcessor> make_cls_sep(const nlohmann::json& config) {
  return std::make_unique<SurroundProcessor>(std::vector<int32_t>{config.at("cls").at(1).get<int32_t>()},
                                             std::vector<int32_t>{config.at("sep").at(1).get<int32_t>()});
}

}  // namespace

std::unique_ptr<PostProcessor> make_post_processor(const nlohmann::json& config, const std::string& file) {
  if (config.is_null()) return nullptr;
  const std::string type = config.at("type").get<std::string>();
  if (type == "TemplateProcessing") return make_template(config, file);
  // ByteLevel only adjusts offsets, which lowbit does not track.
  if (type == "ByteLevel") return std::make_unique<SurroundProcessor>(std::vector<int32_t>{}, std::vector<int32_t>{});
  if (type == "BertProcessing" || type == "RobertaProcessing") return make_cls_sep(config);
  if (type == "Sequence") {
    std::vector<std::unique_ptr<PostProcessor>> steps;
    for (const auto& step : config.at("processors"))
      if (auto p = make_post_processor(step, file)) steps.push_back(std::move(p));
    return std::make_unique<SequenceProcessor>(std::move(steps));
  }
  throw InputError(file + ": unsupported post_processor type '" + type + "'");
}

}  // namespace lowbit
