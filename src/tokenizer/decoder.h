// tokenizer.json "decoder": turns token strings back into text. Each step rewrites the list of
// token strings (tokenizers' decode_chain); the results are concatenated. Supported: Sequence,
// Replace, ByteFallback, Fuse, Strip, Metaspace, ByteLevel.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace lowbit {

class Decoder {
 public:
  virtual ~Decoder() = default;
  virtual void decode_chain(std::vector<std::string>& tokens) const = 0;
};

// nullptr for a JSON null (tokens are then joined with spaces). Throws InputError naming `file`.
std::unique_ptr<Decoder> make_decoder(const nlohmann::json& config, const std::string& file);

}  // namespace lowbit
