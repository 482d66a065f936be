// Flags shared by the subcommands (model loading, sampling), registered once here so every
// command spells and validates them the same way.
#pragma once
#include <optional>
#include <string>

#include <CLI/CLI.hpp>

#include "formats/format.h"
#include "model/config.h"
#include "model/model.h"
#include "sampler/sampler.h"

namespace lowbit::cli {

struct ModelFlags {
  std::string model_dir = "models/stories260K";
  std::string device = "auto";
  std::string quant = "auto";  // auto: f32 on the CPU, bf16 on CUDA
  int threads = 0;
  int ctx = 0;
  int block_size = 64;
  float int8_threshold = 6.0f;
  bool w4_symmetric = false;
  bool keep_head = true;
  double memory_cap_mib = 0;  // 0 = no cap
  bool cpu_bf16_activations = false;  // CpuBackend's opt-in bf16-activation matmul of bf16 weights
};

struct SamplingFlags {
  std::optional<float> temperature, top_p, min_p, repeat_penalty;
  std::optional<int> top_k;
  std::optional<uint64_t> seed;
  int max_new_tokens = 256;
};

void add_model_flags(CLI::App& app, ModelFlags& f);
void add_sampling_flags(CLI::App& app, SamplingFlags& f);

// Throws UsageError naming the first bad flag (format name, device, sizes) without loading anything.
void validate_model_flags(const ModelFlags& f);
// Validates the flags and resolves "auto" values for the chosen backend.
LoadOptions load_options(const ModelFlags& f, const std::string& backend_name);
// Merges flags over generation_config.json defaults (transformers semantics: greedy unless
// do_sample or an explicit --temperature > 0); validates ranges. `seed_out` gets the seed used.
SamplingParams sampling_params(const SamplingFlags& f, const GenerationDefaults& d);

// Reads a whole file (for -f); throws InputError naming it.
std::string read_text_file(const std::string& path);

}  // namespace lowbit::cli
