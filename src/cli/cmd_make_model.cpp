// `lowbit make-model`: a Hugging Face folder with RANDOM weights of a real model's shapes
// (Llama 2 7B, Llama 3 8B, Falcon 7B/40B, or tiny test sizes), to benchmark loading, memory and
// speed without downloading a checkpoint. Tensors are generated and written one at a time
// (chunk by chunk within a tensor), so memory stays at a few hundred MB even for 40B.
//
// Weight scales (chosen so activations and logits look like a trained model's in magnitude):
//  - linears: normal, std 1/sqrt(fan_in), so each projection maps unit-RMS inputs to unit-RMS
//    outputs and attention scores have unit std;
//  - embeddings (and an untied lm_head): normal, std 1/sqrt(hidden). RMSNorm/LayerNorm make the
//    first layer indifferent to the embedding's scale; this std gives a tied head (Falcon) logits
//    of unit std, the same as an untied head;
//  - norm weights 1 + 0.02 N(0, 1); LayerNorm biases 0.02 N(0, 1).
// Random numbers: splitmix64 keyed by (seed, tensor index, block of 64K values) with Box-Muller,
// so the output depends on the seed alone, not on the thread count or chunking.
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "cli/commands.h"
#include "core/error.h"
#include "core/half.h"
#include "core/parallel.h"
#include "io/safetensors_stream_writer.h"
#include "model/config.h"
#include "tokenizer/byte_level.h"
#include "tokenizer/tokenizer.h"

namespace lowbit::cli {

namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

// The transformers release whose save_pretrained layout config.json reproduces.
constexpr const char* kTransformersVersion = "4.46.0";
// transformers' default max_shard_size.
constexpr size_t kMaxShardBytes = size_t(5) * 1000 * 1000 * 1000;

struct SpecialToken {
  int32_t id;
  std::string content;
};

struct Preset {
  std::string name;
  Arch arch = Arch::Llama;
  int hidden = 0, intermediate = 0, layers = 0, heads = 0, kv_heads = 0, vocab = 0, max_positions = 0;
  double rope_theta = 10000.0;
  bool llama3_rope = false;        // Llama 3.1 rope_scaling (factor 8, low 1, high 4, original 8192)
  bool multi_query = false;        // Falcon 7B: one KV head
  bool new_decoder_architecture = false;  // Falcon 40B: grouped KV, ln_attn + ln_mlp
  std::vector<SpecialToken> specials;     // placed at these ids in a generated tokenizer
  int32_t bos = 1, eos = 2;
};

std::vector<Preset> presets() {
  std::vector<Preset> p;
  p.push_back({"llama2-7b", Arch::Llama, 4096, 11008, 32, 32, 32, 32000, 4096, 10000.0, false, false, false,
               {{0, "<unk>"}, {1, "<s>"}, {2, "</s>"}}, 1, 2});
  p.push_back({"llama3-8b", Arch::Llama, 4096, 14336, 32, 32, 8, 128256, 131072, 500000.0, true, false, false,
               {{128000, "<|begin_of_text|>"}, {128001, "<|end_of_text|>"}}, 128000, 128001});
  p.push_back({"falcon-7b", Arch::Falcon, 4544, 4 * 4544, 32, 71, 1, 65024, 2048, 10000.0, false, true, false,
               {{11, "<|endoftext|>"}}, 11, 11});
  p.push_back({"falcon-40b", Arch::Falcon, 8192, 4 * 8192, 60, 128, 8, 65024, 2048, 10000.0, false, true, true,
               {{11, "<|endoftext|>"}}, 11, 11});
  // Test sizes (about 2 MB in bf16) with the stories260K tokenizer's vocabulary and ids.
  p.push_back({"tiny-llama", Arch::Llama, 128, 344, 4, 4, 2, 512, 512, 10000.0, false, false, false,
               {{0, "<unk>"}, {1, "<s>"}, {2, "</s>"}}, 1, 2});
  p.push_back({"tiny-falcon", Arch::Falcon, 128, 512, 4, 4, 1, 512, 512, 10000.0, false, true, false,
               {{0, "<unk>"}, {1, "<s>"}, {2, "</s>"}}, 1, 2});
  return p;
}

struct MakeModelFlags {
  std::string arch, preset, out;
  uint64_t seed = 0;
  std::string dtype = "bf16";
  std::optional<int> layers;
  std::string tokenizer_from = "models/stories260K/tokenizer.json";
  int threads = 0;
  bool force = false;
};

// How a tensor's values are drawn.
struct Init {
  enum class Kind { Normal, OnePlusNormal } kind = Kind::Normal;
  float std = 0;
};

struct GenTensor {
  TensorSpec spec;
  Init init;
};

std::string torch_dtype_name(DType d) {
  return d == DType::BF16 ? "bfloat16" : d == DType::F16 ? "float16" : "float32";
}

json llama_config(const Preset& p, int layers, DType dtype) {
  json c;
  c["architectures"] = {"LlamaForCausalLM"};
  c["attention_bias"] = false;
  c["attention_dropout"] = 0.0;
  c["bos_token_id"] = p.bos;
  c["eos_token_id"] = p.eos;
  c["head_dim"] = p.hidden / p.heads;
  c["hidden_act"] = "silu";
  c["hidden_size"] = p.hidden;
  c["initializer_range"] = 0.02;
  c["intermediate_size"] = p.intermediate;
  c["max_position_embeddings"] = p.max_positions;
  c["mlp_bias"] = false;
  c["model_type"] = "llama";
  c["num_attention_heads"] = p.heads;
  c["num_hidden_layers"] = layers;
  c["num_key_value_heads"] = p.kv_heads;
  c["pretraining_tp"] = 1;
  c["rms_norm_eps"] = 1e-05;
  if (p.llama3_rope)
    c["rope_scaling"] = {{"factor", 8.0},
                         {"high_freq_factor", 4.0},
                         {"low_freq_factor", 1.0},
                         {"original_max_position_embeddings", 8192},
                         {"rope_type", "llama3"}};
  else
    c["rope_scaling"] = nullptr;
  c["rope_theta"] = p.rope_theta;
  c["tie_word_embeddings"] = false;
  c["torch_dtype"] = torch_dtype_name(dtype);
  c["transformers_version"] = kTransformersVersion;
  c["use_cache"] = true;
  c["vocab_size"] = p.vocab;
  return c;
}

json falcon_config(const Preset& p, int layers, DType dtype) {
  json c;
  c["activation"] = "gelu";
  c["alibi"] = false;
  c["apply_residual_connection_post_layernorm"] = false;
  c["architectures"] = {"FalconForCausalLM"};
  c["attention_dropout"] = 0.0;
  c["bias"] = false;
  c["bos_token_id"] = p.bos;
  c["eos_token_id"] = p.eos;
  c["ffn_hidden_size"] = p.intermediate;
  c["hidden_dropout"] = 0.0;
  c["hidden_size"] = p.hidden;
  c["initializer_range"] = 0.02;
  c["layer_norm_epsilon"] = 1e-05;
  c["max_position_embeddings"] = p.max_positions;
  c["model_type"] = "falcon";
  c["multi_query"] = p.multi_query;
  c["new_decoder_architecture"] = p.new_decoder_architecture;
  c["num_attention_heads"] = p.heads;
  c["num_hidden_layers"] = layers;
  // FalconConfig stores num_kv_heads = num_attention_heads when not given (7B); only the new
  // architecture reads it.
  c["num_kv_heads"] = p.new_decoder_architecture ? p.kv_heads : p.heads;
  c["num_ln_in_parallel_attn"] = nullptr;
  c["parallel_attn"] = true;
  c["rope_scaling"] = nullptr;
  c["rope_theta"] = p.rope_theta;
  c["tie_word_embeddings"] = true;
  c["torch_dtype"] = torch_dtype_name(dtype);
  c["transformers_version"] = kTransformersVersion;
  c["use_cache"] = true;
  c["vocab_size"] = p.vocab;
  return c;
}

// Every tensor transformers' save_pretrained writes for the architecture, in model order
// (Falcon's tied lm_head is not saved, as transformers omits tied weights).
std::vector<GenTensor> tensor_list(const Preset& p, int layers, DType dt) {
  const int64_t dim = p.hidden, hidden = p.intermediate, vocab = p.vocab, hd = p.hidden / p.heads;
  const float emb_std = 1.0f / std::sqrt(float(dim));
  auto linear = [&](std::string name, int64_t rows, int64_t cols) {
    return GenTensor{{std::move(name), dt, {rows, cols}}, {Init::Kind::Normal, 1.0f / std::sqrt(float(cols))}};
  };
  auto norm_weight = [&](std::string name) {
    return GenTensor{{std::move(name), dt, {dim}}, {Init::Kind::OnePlusNormal, 0.02f}};
  };
  auto norm_bias = [&](std::string name) { return GenTensor{{std::move(name), dt, {dim}}, {Init::Kind::Normal, 0.02f}}; };
  std::vector<GenTensor> t;
  if (p.arch == Arch::Llama) {
    const int64_t kv = p.kv_heads * hd;
    t.push_back({{"model.embed_tokens.weight", dt, {vocab, dim}}, {Init::Kind::Normal, emb_std}});
    for (int i = 0; i < layers; ++i) {
      const std::string L = fmt::format("model.layers.{}.", i);
      t.push_back(norm_weight(L + "input_layernorm.weight"));
      t.push_back(linear(L + "self_attn.q_proj.weight", dim, dim));
      t.push_back(linear(L + "self_attn.k_proj.weight", kv, dim));
      t.push_back(linear(L + "self_attn.v_proj.weight", kv, dim));
      t.push_back(linear(L + "self_attn.o_proj.weight", dim, dim));
      t.push_back(norm_weight(L + "post_attention_layernorm.weight"));
      t.push_back(linear(L + "mlp.gate_proj.weight", hidden, dim));
      t.push_back(linear(L + "mlp.up_proj.weight", hidden, dim));
      t.push_back(linear(L + "mlp.down_proj.weight", dim, hidden));
    }
    t.push_back(norm_weight("model.norm.weight"));
    t.push_back(linear("lm_head.weight", vocab, dim));
  } else {
    // Fused QKV rows: 7B (multi_query) [q heads | k | v]; 40B per KV group (q heads, k, v).
    const int64_t kv_heads = p.new_decoder_architecture ? p.kv_heads : 1;
    const int64_t qkv_rows = (p.heads + 2 * kv_heads) * hd;
    t.push_back({{"transformer.word_embeddings.weight", dt, {vocab, dim}}, {Init::Kind::Normal, emb_std}});
    for (int i = 0; i < layers; ++i) {
      const std::string L = fmt::format("transformer.h.{}.", i);
      for (const char* ln : p.new_decoder_architecture ? std::vector<const char*>{"ln_attn", "ln_mlp"}
                                                       : std::vector<const char*>{"input_layernorm"}) {
        t.push_back(norm_weight(L + ln + ".weight"));
        t.push_back(norm_bias(L + ln + ".bias"));
      }
      t.push_back(linear(L + "self_attention.query_key_value.weight", qkv_rows, dim));
      t.push_back(linear(L + "self_attention.dense.weight", dim, dim));
      t.push_back(linear(L + "mlp.dense_h_to_4h.weight", hidden, dim));
      t.push_back(linear(L + "mlp.dense_4h_to_h.weight", dim, hidden));
    }
    t.push_back(norm_weight("transformer.ln_f.weight"));
    t.push_back(norm_bias("transformer.ln_f.bias"));
  }
  return t;
}

uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

constexpr int64_t kBlock = int64_t(1) << 16;  // values per independently seeded RNG stream

// Fills values [block * kBlock, ...) of tensor `tensor_index` (n values) into `out` as `dtype`.
void generate_block(uint64_t seed, uint64_t tensor_index, int64_t block, int64_t n, const Init& init, DType dtype,
                    uint8_t* out) {
  uint64_t state = seed;
  state = splitmix64(state) ^ (tensor_index * 0xd1b54a32d192ed03ull);
  state = splitmix64(state) ^ (uint64_t(block) * 0x8cb92ba72f3d8dd7ull);
  const float offset = init.kind == Init::Kind::OnePlusNormal ? 1.0f : 0.0f;
  auto store = [&](int64_t i, float v) {
    v = offset + init.std * v;
    if (dtype == DType::F32) {
      std::memcpy(out + 4 * i, &v, 4);
    } else {
      const uint16_t h = dtype == DType::BF16 ? f32_to_bf16(v) : f32_to_f16(v);
      std::memcpy(out + 2 * i, &h, 2);
    }
  };
  for (int64_t i = 0; i < n; i += 2) {
    // Box-Muller on two 24-bit uniforms; u1 in (0, 1] keeps log finite.
    const uint64_t r = splitmix64(state);
    const float u1 = (float(r >> 40) + 1.0f) * (1.0f / 16777216.0f);
    const float u2 = float((r >> 16) & 0xffffff) * (1.0f / 16777216.0f);
    const float radius = std::sqrt(-2.0f * std::log(u1));
    const float angle = 6.28318530718f * u2;
    store(i, radius * std::cos(angle));
    if (i + 1 < n) store(i + 1, radius * std::sin(angle));
  }
}

// Streams one tensor into `writer` in chunks of whole RNG blocks, generated in parallel.
void write_tensor(SafetensorsStreamWriter& writer, const GenTensor& t, uint64_t seed, uint64_t tensor_index,
                  ThreadPool& pool, std::vector<uint8_t>& staging) {
  const int64_t numel = t.spec.numel();
  const size_t elt = dtype_size(t.spec.dtype);
  const int64_t blocks_per_chunk = 256;  // 16M values: 32 MB of bf16 per write
  for (int64_t first = 0; first < numel; first += blocks_per_chunk * kBlock) {
    const int64_t n = std::min(numel - first, blocks_per_chunk * kBlock);
    staging.resize(size_t(n) * elt);
    const int64_t n_blocks = (n + kBlock - 1) / kBlock;
    pool.parallel_for(n_blocks, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        const int64_t begin = b * kBlock, count = std::min(kBlock, n - begin);
        generate_block(seed, tensor_index, (first / kBlock) + b, count, t.init, t.spec.dtype,
                       staging.data() + size_t(begin) * elt);
      }
    });
    writer.append(staging.data(), staging.size());
  }
}

// A byte-level BPE tokenizer.json (GPT-2 style) with exactly `p.vocab` ids: the preset's special
// tokens at their ids, the 256 byte characters in the next free ids, then filler tokens that
// are reachable through merges (every 2-character string of byte characters, then 3-character
// ones), so encode/decode round-trip any text and every id decodes to bytes.
json minimal_tokenizer(const Preset& p) {
  ByteLevelAlphabet alphabet;
  std::vector<std::string> byte_char(256);
  for (int b = 0; b < 256; ++b) byte_char[size_t(b)] = alphabet.encode(std::string(1, char(b)));
  std::vector<std::string> token(size_t(p.vocab));
  std::vector<bool> special(size_t(p.vocab), false);
  json added = json::array();
  for (const SpecialToken& s : p.specials) {
    token[size_t(s.id)] = s.content;
    special[size_t(s.id)] = true;
    added.push_back({{"id", s.id}, {"content", s.content}, {"single_word", false}, {"lstrip", false},
                     {"rstrip", false}, {"normalized", false}, {"special", true}});
  }
  json merges = json::array();
  int64_t next = 0;  // index into the sequence: bytes, then 2-char fillers, then 3-char fillers
  for (size_t id = 0; id < token.size(); ++id) {
    if (special[id]) continue;
    const int64_t k = next++;
    if (k < 256) {
      token[id] = byte_char[size_t(k)];
    } else if (k < 256 + 65536) {
      const int64_t j = k - 256;
      const std::string& left = byte_char[size_t(j / 256)];
      const std::string& right = byte_char[size_t(j % 256)];
      token[id] = left + right;
      merges.push_back({left, right});
    } else {
      const int64_t j = k - 256 - 65536;
      const std::string left = byte_char[size_t(j / 256 / 256 % 256)] + byte_char[size_t(j / 256 % 256)];
      const std::string& right = byte_char[size_t(j % 256)];
      token[id] = left + right;
      merges.push_back({left, right});
    }
  }
  json vocab = json::object();
  for (size_t id = 0; id < token.size(); ++id) vocab[token[id]] = id;
  const json byte_level = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}};
  json tok;
  tok["version"] = "1.0";
  tok["truncation"] = nullptr;
  tok["padding"] = nullptr;
  tok["added_tokens"] = added;
  tok["normalizer"] = nullptr;
  tok["pre_tokenizer"] = byte_level;
  if (p.arch == Arch::Llama) {
    // Llama tokenizers prepend BOS.
    const std::string bos = token[size_t(p.bos)];
    tok["post_processor"] = {
        {"type", "TemplateProcessing"},
        {"single", {{{"SpecialToken", {{"id", bos}, {"type_id", 0}}}}, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
        {"pair",
         {{{"SpecialToken", {{"id", bos}, {"type_id", 0}}}},
          {{"Sequence", {{"id", "A"}, {"type_id", 0}}}},
          {{"SpecialToken", {{"id", bos}, {"type_id", 1}}}},
          {{"Sequence", {{"id", "B"}, {"type_id", 1}}}}}},
        {"special_tokens", {{bos, {{"id", bos}, {"ids", {p.bos}}, {"tokens", {bos}}}}}}};
  } else {
    tok["post_processor"] = byte_level;
  }
  tok["decoder"] = byte_level;
  tok["model"] = {{"type", "BPE"},          {"dropout", nullptr},
                  {"unk_token", nullptr},    {"continuing_subword_prefix", nullptr},
                  {"end_of_word_suffix", nullptr}, {"fuse_unk", false},
                  {"byte_fallback", false},  {"ignore_merges", false},
                  {"vocab", vocab},          {"merges", merges}};
  return tok;
}

void write_json(const fs::path& path, const json& j) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << j.dump(2) << '\n';
  out.close();
  if (!out) throw InputError(fmt::format("{}: write failed", path.string()));
}

// Copies `from` when it is a tokenizer whose vocabulary is exactly the preset's (ids beyond a
// smaller vocabulary would decode to nothing); otherwise writes the minimal byte-level one.
void write_tokenizer(const Preset& p, const std::string& from, const fs::path& out_dir) {
  if (!from.empty() && fs::exists(from)) {
    const int vocab = Tokenizer::from_file(from).vocab_size();
    if (vocab == p.vocab) {
      fs::copy_file(from, out_dir / "tokenizer.json", fs::copy_options::overwrite_existing);
      spdlog::info("tokenizer.json: copied {}", from);
      return;
    }
    spdlog::info("tokenizer.json: {} has {} tokens, the model {}; writing a byte-level BPE tokenizer instead", from,
                 vocab, p.vocab);
  }
  write_json(out_dir / "tokenizer.json", minimal_tokenizer(p));
}

int run_make_model(const MakeModelFlags& f) {
  std::optional<Preset> preset;
  std::string names;
  for (const Preset& p : presets()) {
    names += (names.empty() ? "" : ", ") + p.name;
    if (p.name == f.preset) preset = p;
  }
  if (!preset) throw UsageError(fmt::format("--preset '{}': unknown (use one of {})", f.preset, names));
  // The preset names its architecture; --arch is optional and, when given, must agree.
  const std::string preset_arch = preset->arch == Arch::Llama ? "llama" : "falcon";
  if (!f.arch.empty() && f.arch != "llama" && f.arch != "falcon")
    throw UsageError(fmt::format("--arch '{}': must be llama or falcon", f.arch));
  if (!f.arch.empty() && f.arch != preset_arch)
    throw UsageError(fmt::format("--arch {}: preset {} is a {} model", f.arch, f.preset, preset_arch));
  DType dtype;
  if (f.dtype == "bf16") dtype = DType::BF16;
  else if (f.dtype == "f16") dtype = DType::F16;
  else if (f.dtype == "f32") dtype = DType::F32;
  else throw UsageError(fmt::format("--dtype '{}': must be bf16, f16 or f32", f.dtype));
  const int layers = f.layers.value_or(preset->layers);
  if (layers < 1 || layers > 1000) throw UsageError(fmt::format("--layers {}: must be in [1, 1000]", layers));
  if (f.threads < 0) throw UsageError(fmt::format("--threads {}: must be >= 0", f.threads));
  if (f.out.empty()) throw UsageError("-o/--output: give the output folder");

  const fs::path out(f.out);
  if (fs::exists(out) && !fs::is_directory(out))
    throw InputError(fmt::format("-o/--output {}: exists and is not a folder", f.out));
  if (fs::exists(out) && !fs::is_empty(out) && !f.force)
    throw UsageError(fmt::format("-o/--output {}: folder is not empty (add --force to overwrite)", f.out));
  std::error_code ec;
  fs::create_directories(out, ec);
  if (ec) throw InputError(fmt::format("-o/--output {}: cannot create ({})", f.out, ec.message()));

  const json config = preset->arch == Arch::Llama ? llama_config(*preset, layers, dtype)
                                                  : falcon_config(*preset, layers, dtype);
  write_json(out / "config.json", config);
  write_json(out / "generation_config.json", {{"_from_model_config", true},
                                              {"bos_token_id", preset->bos},
                                              {"eos_token_id", preset->eos},
                                              {"transformers_version", kTransformersVersion}});
  write_tokenizer(*preset, f.tokenizer_from, out);

  const std::vector<GenTensor> tensors = tensor_list(*preset, layers, dtype);
  std::vector<TensorSpec> specs;
  for (const GenTensor& t : tensors) specs.push_back(t.spec);
  const std::vector<ShardPlan> shards = plan_shards(specs, kMaxShardBytes);
  size_t total = 0;
  for (const ShardPlan& s : shards) total += s.data_bytes;
  spdlog::info("{}: {} layers, {} tensors, {:.2f} GB of {} in {} file(s), seed {}", f.preset, layers,
               tensors.size(), total / 1e9, f.dtype, shards.size(), f.seed);

  ThreadPool pool(f.threads);
  std::vector<uint8_t> staging;
  size_t tensor_index = 0;
  for (const ShardPlan& shard : shards) {
    SafetensorsStreamWriter writer((out / shard.file).string(), shard.tensors, {{"format", "pt"}});
    for (size_t i = 0; i < shard.tensors.size(); ++i, ++tensor_index)
      write_tensor(writer, tensors[tensor_index], f.seed, tensor_index, pool, staging);
    writer.finish();
    spdlog::info("wrote {} ({:.2f} GB)", shard.file, shard.data_bytes / 1e9);
  }
  if (shards.size() > 1) write_shard_index(out.string(), shards);
  std::printf("%s\n", f.out.c_str());
  return 0;
}

}  // namespace

void add_make_model_command(CLI::App& app, int& exit_code) {
  auto flags = std::make_shared<MakeModelFlags>();
  CLI::App* cmd = app.add_subcommand("make-model", "write a Hugging Face folder with random weights of a real model's shapes");
  cmd->add_option("--arch", flags->arch, "llama or falcon (optional: the preset implies it)");
  cmd->add_option("--preset", flags->preset,
                  "llama2-7b, llama3-8b, falcon-7b, falcon-40b, tiny-llama, tiny-falcon")->required();
  cmd->add_option("-o,--output,--out", flags->out, "output folder")->required();
  cmd->add_option("--seed", flags->seed, "random seed (same seed, same bytes)")->capture_default_str();
  cmd->add_option("--dtype", flags->dtype, "bf16, f16 or f32")->capture_default_str();
  cmd->add_option("--layers", flags->layers, "override the preset's number of layers");
  cmd->add_option("--tokenizer-from", flags->tokenizer_from,
                  "tokenizer.json to copy when its vocabulary size equals the preset's")
      ->capture_default_str();
  cmd->add_option("-t,--threads", flags->threads, "generator threads (0 = all cores)")->capture_default_str();
  cmd->add_flag("--force", flags->force, "write into a non-empty --out folder");
  cmd->callback([flags, &exit_code] { exit_code = run_make_model(*flags); });
}

}  // namespace lowbit::cli
