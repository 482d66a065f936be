// tokenizer.json "post_processor": adds special tokens around an encoded sequence when
// add_special is set. Supported: TemplateProcessing (single sequence), ByteLevel (ids unchanged),
// BertProcessing, RobertaProcessing, Sequence.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace lowbit {

class PostProcessor {
 public:
  virtual ~PostProcessor() = default;
  virtual void process(std::vector<int32_t>& ids) const = 0;
  // Ids the processor puts before the sequence (Llama's BOS), used to find bos_id.
  virtual std::vector<int32_t> prefix_ids() const = 0;
};

// nullptr for a JSON null. Throws InputError naming `file` for unsupported types.
std::unique_ptr<PostProcessor> make_post_processor(const nlohmann::json& config, const std::string& file);

}  // namespace lowbit
