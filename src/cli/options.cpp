#include "cli/options.h"

#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <random>
#include <sstream>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "core/error.h"

namespace lowbit::cli {

namespace fs = std::filesystem;

void add_model_flags(CLI::App& app, ModelFlags& f) {
  app.add_option("-m,--model", f.model_dir,
                 "Hugging Face model folder (config.json, *.safetensors, tokenizer.json); default: the bundled "
                 "models/stories260K (working directory, then next to the binary)");
  app.add_option("--device", f.device, "auto, cpu or cuda")->capture_default_str();
  app.add_option("--quant", f.quant,
                 "weight format: auto, " + format_names() + " (auto = f32 on the CPU, bf16 on CUDA)")
      ->capture_default_str();
  app.add_option("-t,--threads", f.threads, "CPU threads (0 = all cores)")->capture_default_str();
  app.add_option("-c,--ctx-size,--ctx", f.ctx,
                 "context length in tokens (0 = the model's max_position_embeddings; more is allowed with a warning)")
      ->capture_default_str();
  app.add_option("--block-size", f.block_size, "nf4/fp4 block size")->capture_default_str();
  app.add_option("--int8-threshold", f.int8_threshold, "LLM.int8 outlier threshold (0 = no decomposition)")
      ->capture_default_str();
  app.add_option("--w4-group", f.w4_group,
                 "W4A16 group size: columns sharing one scale (and zero point) along the input dimension")
      ->capture_default_str();
  app.add_flag("--w4-symmetric", f.w4_symmetric, "W4A16: symmetric groups (no zero point)");
  app.add_option("--keep-head", f.keep_head,
                 "keep the output head in 16-bit (true, as transformers+bitsandbytes do) or quantize it (false)")
      ->capture_default_str();
  app.add_option("--kv-cache", f.kv_cache,
                 "KV cache storage: auto, f32 or bf16 (auto = f32 on the CPU, bf16 on CUDA; bf16 rounds each key "
                 "and value once, on every backend alike)")
      ->capture_default_str();
  app.add_option("--memory-cap", f.memory_cap_mib,
                 "cap the backend's memory (weights, KV cache, activations) at this many MiB, as if the device "
                 "were that small (0 = no cap)")
      ->capture_default_str();
  app.add_flag("--cpu-bf16-activations", f.cpu_bf16_activations,
               "CPU, bf16 weights: multiply prompts and batches with activations rounded to bf16 (AVX512-BF16; "
               "about twice as fast, not the exact fp32 arithmetic; decoding one token stays exact)");
  app.add_flag("--cuda-fast-prefill", f.cuda_fast_prefill,
               "CUDA: prompts past 16 tokens through bf16 tensor-core GEMMs (bf16 and the dequantized formats; "
               "faster on long prompts, not the format's arithmetic). Default: each format's own arithmetic");
}

void add_stop_flag(CLI::App& app, std::vector<std::string>& stop) {
  app.add_option("--stop", stop,
                 "stop when the generated text contains TEXT (repeatable); the text ends before it, the token ids "
                 "keep every generated token, stop_reason is \"stop\"")
      ->allow_extra_args(false);
}

void add_logprobs_flag(CLI::App& app, bool& logprobs) {
  app.add_flag("--logprobs", logprobs,
               "add \"logprobs\": the log-probability (nats) of each generated token under the model's raw logits "
               "(log-softmax, before temperature and filters) to the JSON records");
}

void add_sampling_flags(CLI::App& app, SamplingFlags& f) {
  app.add_option("-n,--max-new-tokens", f.max_new_tokens,
                 fmt::format("tokens to generate at most (default: generation_config.json's max_new_tokens, else {})",
                             kDefaultMaxNewTokens));
  app.add_option("--temperature,--temp", f.temperature, "0 = greedy (default: generation_config.json, else greedy)");
  app.add_option("--top-k", f.top_k, "keep the k most likely tokens (0 = off; default 50 as transformers)");
  app.add_option("--top-p", f.top_p, "nucleus sampling mass in (0, 1] (default 1 = off)");
  app.add_option("--min-p", f.min_p, "drop tokens below min-p times the top probability (default 0 = off)");
  app.add_option("--repeat-penalty", f.repeat_penalty, "repetition penalty (1 = off)");
  app.add_option("--seed", f.seed, "random seed, 0 to 2^64-1 (default or -1: a random seed, printed in the log)");
  add_stop_flag(app, f.stop);
  add_logprobs_flag(app, f.logprobs);
}

namespace {

fs::path executable_dir() {
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  return ec ? fs::path() : exe.parent_path();
}

}  // namespace

std::vector<std::string> bundled_model_candidates() {
  std::vector<std::string> places{"models/stories260K"};
  const fs::path dir = executable_dir();
  if (!dir.empty()) {
    for (const fs::path& p : {dir / ".." / "models" / "stories260K", dir / "models" / "stories260K",
                              dir / ".." / "share" / "lowbit" / "models" / "stories260K"})
      places.push_back(p.lexically_normal().string());
  }
  return places;
}

void resolve_model_dir(ModelFlags& f) {
  if (!f.model_dir.empty()) return;
  std::string looked;
  for (const std::string& place : bundled_model_candidates()) {
    if (fs::is_regular_file(fs::path(place) / "config.json")) {
      f.model_dir = place;
      return;
    }
    looked += (looked.empty() ? "" : ", ") + place;
  }
  throw UsageError(fmt::format("-m/--model: not given, and the bundled model is not in {} (give -m DIR)", looked));
}

namespace {
Format quant_format(const std::string& quant) {
  try {
    return parse_format(quant);
  } catch (const UsageError& e) {
    throw UsageError(fmt::format("--quant: {}", e.what()));
  }
}
}  // namespace

void validate_model_flags(const ModelFlags& f) {
  if (f.device != "auto" && f.device != "cpu" && f.device != "cuda")
    throw UsageError(fmt::format("--device: unknown device '{}' (use auto, cpu or cuda)", f.device));
  if (f.quant != "auto") quant_format(f.quant);
  if (f.block_size < 16 || f.block_size > 4096 || (f.block_size & (f.block_size - 1)) != 0)
    throw UsageError(fmt::format("--block-size {}: must be a power of two from 16 to 4096", f.block_size));
  if (f.w4_group < 1) throw UsageError(fmt::format("--w4-group {}: must be >= 1", f.w4_group));
  if (!(f.int8_threshold >= 0)) throw UsageError(fmt::format("--int8-threshold {}: must be >= 0", f.int8_threshold));
  if (f.ctx < 0) throw UsageError(fmt::format("--ctx {}: must be >= 0", f.ctx));
  if (f.threads < 0) throw UsageError(fmt::format("--threads {}: must be >= 0", f.threads));
  if (!(f.memory_cap_mib >= 0)) throw UsageError(fmt::format("--memory-cap {}: must be >= 0 (MiB)", f.memory_cap_mib));
  if (f.kv_cache != "auto" && f.kv_cache != "f32" && f.kv_cache != "bf16")
    throw UsageError(fmt::format("--kv-cache: unknown storage '{}' (use auto, f32 or bf16)", f.kv_cache));
}

LoadOptions load_options(const ModelFlags& f, const std::string& backend_name) {
  LoadOptions o;
  o.format = f.quant != "auto" ? quant_format(f.quant) : backend_name == "cpu" ? Format::F32 : Format::BF16;
  o.quant.block_size = f.block_size;
  o.quant.int8_threshold = f.int8_threshold;
  o.quant.w4_symmetric = f.w4_symmetric;
  o.quant.w4_group = f.w4_group;
  o.keep_head = f.keep_head;
  o.max_context = f.ctx;
  if (f.kv_cache == "auto")
    o.kv_cache = backend_name == "cpu" ? KvDtype::f32 : KvDtype::bf16;
  else
    o.kv_cache = f.kv_cache == "bf16" ? KvDtype::bf16 : KvDtype::f32;
  return o;
}

void warn_if_context_beyond_model(int ctx, const ModelConfig& cfg) {
  if (ctx > cfg.max_position_embeddings)
    spdlog::warn("--ctx {} is beyond the model's max_position_embeddings {}: positions past {} were never trained on",
                 ctx, cfg.max_position_embeddings, cfg.max_position_embeddings);
}

std::optional<uint64_t> parse_seed(const std::string& text) {
  if (text.empty() || text == "-1") return std::nullopt;
  const bool digits = text.find_first_not_of("0123456789") == std::string::npos;
  if (!digits)
    throw UsageError(fmt::format("--seed '{}': must be an integer from 0 to {} (or -1 for a random seed)", text,
                                 UINT64_MAX));
  errno = 0;
  char* end = nullptr;
  const unsigned long long v = std::strtoull(text.c_str(), &end, 10);
  if (errno == ERANGE || end != text.c_str() + text.size())
    throw UsageError(fmt::format("--seed {}: larger than the largest seed {}", text, UINT64_MAX));
  return uint64_t(v);
}

uint64_t random_seed() {
  std::random_device rd;
  return uint64_t(rd()) << 32 | rd();
}

SamplingParams sampling_params(const SamplingFlags& f, const GenerationDefaults& d) {
  if (f.max_new_tokens && *f.max_new_tokens < 0)
    throw UsageError(fmt::format("--max-new-tokens {}: must be >= 0", *f.max_new_tokens));
  SamplingParams p;
  p.temperature = f.temperature.value_or(d.do_sample ? d.temperature : 0.0f);
  p.top_k = f.top_k.value_or(d.top_k);
  p.top_p = f.top_p.value_or(d.top_p);
  p.min_p = f.min_p.value_or(d.min_p);
  p.repetition_penalty = f.repeat_penalty.value_or(d.repetition_penalty);
  const std::optional<uint64_t> seed = parse_seed(f.seed);
  p.seed = seed ? *seed : random_seed();
  validate(p);
  validate_stop_strings(f.stop);
  return p;
}

int max_new_tokens(const SamplingFlags& f, const GenerationDefaults& d) {
  if (f.max_new_tokens) return *f.max_new_tokens;
  if (d.max_new_tokens > 0) return d.max_new_tokens;
  return kDefaultMaxNewTokens;
}

void validate_stop_strings(const std::vector<std::string>& stop) {
  for (const std::string& s : stop)
    if (s.empty()) throw UsageError("--stop: an empty stop string would stop before the first token");
}

std::string read_text_file(const std::string& path, const std::string& what) {
  if (path == "-") {
    std::ostringstream ss;
    ss << std::cin.rdbuf();
    return ss.str();
  }
  if (fs::is_directory(path)) throw InputError(fmt::format("{}: is a folder, not a {}", path, what));
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InputError(fmt::format("{}: cannot open {}", path, what));
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string strip_one_newline(std::string text) {
  if (!text.empty() && text.back() == '\n') {
    text.pop_back();
    if (!text.empty() && text.back() == '\r') text.pop_back();
  }
  return text;
}

PromptText read_prompt(const PromptSource& src) {
  if (src.prompt && !src.file.empty()) throw UsageError("give the prompt with -p or -f, not both");
  if (src.prompt) return {*src.prompt, "-p"};
  std::string file = src.file;
  if (file.empty()) {
    if (isatty(0))
      throw UsageError("no prompt: give -p TEXT, -f FILE, or pipe it on stdin (-p \"\" generates from BOS alone)");
    file = "-";  // piped or redirected stdin is the prompt, as `echo ... | lowbit run` means it
  }
  return {strip_one_newline(read_text_file(file, "prompt file")), file == "-" ? "stdin" : file};
}

Shard parse_shard(const std::string& spec) {
  if (spec.empty()) return {};
  const size_t slash = spec.find('/');
  auto bad = [&] { return UsageError(fmt::format("--shard '{}': expected I/N with 0 <= I < N", spec)); };
  if (slash == std::string::npos) throw bad();
  const std::string i = spec.substr(0, slash), n = spec.substr(slash + 1);
  auto digits = [](const std::string& s) { return !s.empty() && s.find_first_not_of("0123456789") == std::string::npos; };
  if (!digits(i) || !digits(n) || i.size() > 9 || n.size() > 9) throw bad();
  Shard s{size_t(std::stoul(i)), size_t(std::stoul(n))};
  if (s.count < 1 || s.index >= s.count) throw bad();
  return s;
}

double shortest_double(float v) {
  // fmt prints a float as the shortest decimal that reads back as the same float.
  return std::strtod(fmt::format("{}", v).c_str(), nullptr);
}

}  // namespace lowbit::cli
