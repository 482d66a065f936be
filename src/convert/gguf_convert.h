// Converts a GGUF file of a Llama-architecture model into a Hugging Face folder that lowbit and
// transformers load: config.json, model.safetensors (every tensor dequantized to fp32, then
// stored as F32, BF16 or F16), tokenizer.json, tokenizer_config.json (with the chat template) and
// generation_config.json.
#pragma once
#include <string>

#include <nlohmann/json.hpp>

#include "core/dtype.h"
#include "io/gguf.h"

namespace lowbit {

struct GgufConvertOptions {
  DType dtype = DType::F32;  // F32 keeps the dequantized values exactly
  bool force = false;        // overwrite the output files if they exist
};

// Writes the five files into out_dir (created if needed). Without force, an out_dir that already
// holds any of them is a UsageError naming the file. Files are written under temporary names
// and renamed once all succeeded, so a failed conversion leaves no half folder behind.
// InputError naming the file and key/tensor for anything the GGUF lacks or lowbit cannot
// convert (architecture, tensor type, tokenizer model, pre-tokenizer).
void convert_gguf(const std::string& gguf_path, const std::string& out_dir, const GgufConvertOptions& options);

// The pieces, exposed for tests and the fuzz target.
// config.json from the "<arch>.*" metadata (Llama only) and the tensors present.
nlohmann::ordered_json gguf_config_json(const GgufFile& f);
// tokenizer.json from the tokenizer.ggml.* metadata: "gpt2" vocabularies become byte-level BPE
// with the pre-tokenizer tokenizer.ggml.pre names, "llama" ones SentencePiece BPE with byte
// fallback (as transformers' LlamaConverter writes it, legacy form).
nlohmann::ordered_json gguf_tokenizer_json(const GgufFile& f);
nlohmann::ordered_json gguf_tokenizer_config_json(const GgufFile& f);
nlohmann::ordered_json gguf_generation_config_json(const GgufFile& f);

}  // namespace lowbit
