#include "cli/options.h"

#include <fstream>
#include <random>
#include <sstream>

#include <fmt/format.h>

#include "core/error.h"

namespace lowbit::cli {

void add_model_flags(CLI::App& app, ModelFlags& f) {
  app.add_option("-m,--model", f.model_dir, "Hugging Face model folder (config.json, *.safetensors, tokenizer.json)")
      ->capture_default_str();
  app.add_option("--device", f.device, "auto, cpu or cuda")->capture_default_str();
  app.add_option("--quant", f.quant,
                 "weight format: auto, f32, bf16, int8, nf4, fp4, nf4-dq, fp4-dq, W4A16, W8A8 "
                 "(auto = f32 on the CPU, bf16 on CUDA)")
      ->capture_default_str();
  app.add_option("-t,--threads", f.threads, "CPU threads (0 = all cores)")->capture_default_str();
  app.add_option("--ctx", f.ctx, "context length in tokens (0 = the model's max_position_embeddings)")
      ->capture_default_str();
  app.add_option("--block-size", f.block_size, "nf4/fp4 block size")->capture_default_str();
  app.add_option("--int8-threshold", f.int8_threshold, "LLM.int8 outlier threshold (0 = no decomposition)")
      ->capture_default_str();
  app.add_flag("--w4-symmetric", f.w4_symmetric, "W4A16: symmetric groups (no zero point)");
  app.add_option("--keep-head", f.keep_head,
                 "keep the output head in 16-bit (true, as transformers+bitsandbytes do) or quantize it (false)")
      ->capture_default_str();
  app.add_option("--memory-cap", f.memory_cap_mib,
                 "cap the backend's memory (weights, KV cache, activations) at this many MiB, as if the device "
                 "were that small (0 = no cap)")
      ->capture_default_str();
  app.add_flag("--cpu-bf16-activations", f.cpu_bf16_activations,
               "CPU, bf16 weights: multiply prompts and batches with activations rounded to bf16 (AVX512-BF16; "
               "about twice as fast, not the exact fp32 arithmetic; decoding one token stays exact)");
}

void add_sampling_flags(CLI::App& app, SamplingFlags& f) {
  app.add_option("-n,--max-new-tokens", f.max_new_tokens, "tokens to generate at most")->capture_default_str();
  app.add_option("--temperature", f.temperature, "0 = greedy (default: generation_config.json, else greedy)");
  app.add_option("--top-k", f.top_k, "keep the k most likely tokens (0 = off; default 50 as transformers)");
  app.add_option("--top-p", f.top_p, "nucleus sampling mass in (0, 1] (default 1 = off)");
  app.add_option("--min-p", f.min_p, "drop tokens below min-p times the top probability (default 0 = off)");
  app.add_option("--repeat-penalty", f.repeat_penalty, "repetition penalty (1 = off)");
  app.add_option("--seed", f.seed, "random seed (default: random, printed in the log)");
}

void validate_model_flags(const ModelFlags& f) {
  if (f.device != "auto" && f.device != "cpu" && f.device != "cuda")
    throw UsageError(fmt::format("--device: unknown device '{}' (use auto, cpu or cuda)", f.device));
  load_options(f, "cpu");
}

LoadOptions load_options(const ModelFlags& f, const std::string& backend_name) {
  LoadOptions o;
  if (f.quant == "auto")
    o.format = backend_name == "cpu" ? Format::F32 : Format::BF16;
  else
    o.format = parse_format(f.quant);
  if (f.block_size < 16 || f.block_size > 4096 || (f.block_size & (f.block_size - 1)) != 0)
    throw UsageError(fmt::format("--block-size {}: must be a power of two from 16 to 4096", f.block_size));
  if (!(f.int8_threshold >= 0)) throw UsageError(fmt::format("--int8-threshold {}: must be >= 0", f.int8_threshold));
  if (f.ctx < 0) throw UsageError(fmt::format("--ctx {}: must be >= 0", f.ctx));
  if (f.threads < 0) throw UsageError(fmt::format("--threads {}: must be >= 0", f.threads));
  if (!(f.memory_cap_mib >= 0)) throw UsageError(fmt::format("--memory-cap {}: must be >= 0 (MiB)", f.memory_cap_mib));
  o.quant.block_size = f.block_size;
  o.quant.int8_threshold = f.int8_threshold;
  o.quant.w4_symmetric = f.w4_symmetric;
  o.keep_head = f.keep_head;
  o.max_context = f.ctx;
  return o;
}

SamplingParams sampling_params(const SamplingFlags& f, const GenerationDefaults& d) {
  if (f.max_new_tokens < 0) throw UsageError(fmt::format("--max-new-tokens {}: must be >= 0", f.max_new_tokens));
  SamplingParams p;
  p.temperature = f.temperature.value_or(d.do_sample ? d.temperature : 0.0f);
  p.top_k = f.top_k.value_or(d.top_k);
  p.top_p = f.top_p.value_or(d.top_p);
  p.min_p = f.min_p.value_or(d.min_p);
  p.repetition_penalty = f.repeat_penalty.value_or(d.repetition_penalty);
  p.seed = f.seed ? *f.seed : std::random_device{}();
  validate(p);
  return p;
}

std::string read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InputError(fmt::format("{}: cannot open prompt file", path));
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace lowbit::cli
