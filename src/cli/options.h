// Flags shared by the subcommands (model loading, sampling, prompts, shards, output files),
// registered once here so every command spells and validates them the same way.
#pragma once
#include <cstddef>
#include <optional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "formats/format.h"
#include "model/config.h"
#include "model/model.h"
#include "sampler/sampler.h"

namespace lowbit::cli {

// max_new_tokens when neither a flag nor generation_config.json gives one.
constexpr int kDefaultMaxNewTokens = 256;

struct ModelFlags {
  std::string model_dir;  // empty: the bundled stories260K (resolve_model_dir)
  std::string device = "auto";
  std::string quant = "auto";  // auto: f32 on the CPU, bf16 on CUDA
  int threads = 0;
  int ctx = 0;
  int block_size = 64;
  float int8_threshold = 6.0f;
  bool w4_symmetric = false;
  int w4_group = 128;
  bool keep_head = true;
  double memory_cap_mib = 0;  // 0 = no cap
  std::string kv_cache = "auto";  // auto: f32 on the CPU, bf16 on CUDA
  bool cpu_bf16_activations = false;
  bool cuda_fast_prefill = false;  // CudaBackend's opt-in bf16 tensor-core prompt GEMMs  // CpuBackend's opt-in bf16-activation matmul of bf16 weights
};

struct SamplingFlags {
  std::optional<float> temperature, top_p, min_p, repeat_penalty;
  std::optional<int> top_k;
  std::string seed;                    // "" or "-1": random; else 0 .. 2^64-1
  std::optional<int> max_new_tokens;   // unset: generation_config.json, else kDefaultMaxNewTokens
  std::vector<std::string> stop;       // stop strings (--stop, repeatable)
  bool logprobs = false;               // per-token log-probabilities in the JSON records
};

void add_model_flags(CLI::App& app, ModelFlags& f);
// The sampling flags; run and batch take all of them (sweep has its own list-valued axes).
void add_sampling_flags(CLI::App& app, SamplingFlags& f);
// --stop (repeatable) and --logprobs, also used by sweep.
void add_stop_flag(CLI::App& app, std::vector<std::string>& stop);
void add_logprobs_flag(CLI::App& app, bool& logprobs);

// -m not given: the bundled models/stories260K, looked for in the working directory, then next
// to the binary (build/lowbit -> ../models, an installed bin/lowbit -> ../share/lowbit/models).
// Throws UsageError listing every place it looked when none holds it.
void resolve_model_dir(ModelFlags& f);
// The places resolve_model_dir looks, in order.
std::vector<std::string> bundled_model_candidates();

// Throws UsageError naming the first bad flag (format name, device, sizes, KV storage) without
// loading anything. Every command calls it once, first.
void validate_model_flags(const ModelFlags& f);
// The load options of flags validate_model_flags accepted, "auto" values resolved for the backend.
LoadOptions load_options(const ModelFlags& f, const std::string& backend_name);
// --ctx beyond the model's max_position_embeddings: positions the model was never trained on.
// Allowed (as llama.cpp allows it) with a warning naming both numbers.
void warn_if_context_beyond_model(int ctx, const ModelConfig& cfg);

// --seed: "" and "-1" mean a random seed (llama.cpp); otherwise an integer 0 .. 2^64-1. Anything
// else (a fraction, a number past 2^64-1, other negatives) is a UsageError, never clamped.
std::optional<uint64_t> parse_seed(const std::string& text);
// A fresh random seed (std::random_device), for --seed -1 / no --seed.
uint64_t random_seed();

// Merges flags over generation_config.json defaults (transformers semantics: greedy unless
// do_sample or an explicit --temperature > 0); validates ranges. A random seed is drawn when
// --seed is absent or -1.
SamplingParams sampling_params(const SamplingFlags& f, const GenerationDefaults& d);
// --max-new-tokens, else generation_config.json's max_new_tokens, else kDefaultMaxNewTokens.
int max_new_tokens(const SamplingFlags& f, const GenerationDefaults& d);
// Throws UsageError for an empty stop string.
void validate_stop_strings(const std::vector<std::string>& stop);

// A whole file's bytes; "-" reads stdin. Throws InputError "<path>: cannot open <what>".
std::string read_text_file(const std::string& path, const std::string& what = "file");

// Where a prompt comes from, as llama.cpp's main reads it: -p TEXT as given; -f FILE (or -f -
// for stdin) minus one trailing newline ("\n" or "\r\n"); neither flag and stdin not a
// terminal: stdin, as -f -. An explicit `-p ""` is the one way to generate from BOS alone.
struct PromptSource {
  std::optional<std::string> prompt;  // -p
  std::string file;                   // -f
};
struct PromptText {
  std::string text;
  std::string origin;  // "-p", the file name, or "stdin"
};
// Throws UsageError for -p with -f, or no prompt at all on a terminal.
PromptText read_prompt(const PromptSource& src);
// Drops one trailing "\n" or "\r\n".
std::string strip_one_newline(std::string text);

// --shard I/N: jobs I = 0..N-1 each take the work items whose 0-based index % N == I.
struct Shard {
  size_t index = 0, count = 1;
  bool takes(size_t item) const { return item % count == index; }
};
Shard parse_shard(const std::string& spec);  // "" = the whole input; UsageError naming --shard

// A JSON number for a float setting written as its shortest decimal (0.7f -> 0.7, not
// 0.699999988079071), so every command writes the same value the user typed.
double shortest_double(float v);

}  // namespace lowbit::cli
