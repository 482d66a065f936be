#include "convert/gguf_convert.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <unordered_map>

#include <fmt/format.h>

#include "convert/llama2c.h"
#include "core/error.h"
#include "core/half.h"
#include "io/safetensors_stream_writer.h"
#include "tokenizer/utf8.h"

namespace lowbit {

namespace {

namespace fs = std::filesystem;
using ordered_json = nlohmann::ordered_json;

std::string q(const std::string& s) { return "'" + s + "'"; }

// llama.cpp's token types (llama_token_type / gguf tokenizer.ggml.token_type).
enum TokenType : int64_t { kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kUnused = 5, kByte = 6 };

// The shortest decimal that reads back as the same float32: GGUF stores fp32 hyper-parameters
// (1e-5 is 9.99999975e-06 in fp32); writing 1e-05 gives transformers the same fp32 value.
double shortest_f32_decimal(double v) {
  const float f = float(v);
  for (int digits = 1; digits <= 9; ++digits) {
    const double candidate = std::strtod(fmt::format("{:.{}g}", double(f), digits).c_str(), nullptr);
    if (float(candidate) == f) return candidate;
  }
  return double(f);
}

int to_int(const GgufFile& f, const std::string& key, uint64_t v) {
  if (v == 0 || v > uint64_t(1) << 30)
    throw InputError(f.path() + ": metadata " + q(key) + " is " + std::to_string(v) + "; must be 1 to 2^30");
  return int(v);
}

// The Llama hyper-parameters of a GGUF, checked for consistency with each other.
struct LlamaParams {
  int n_layers = 0, dim = 0, ffn = 0, n_heads = 0, n_kv_heads = 0, head_dim = 0, context = 0, vocab = 0;
  double rope_theta = 10000.0, norm_eps = 1e-5;
  bool tied = false, attention_bias = false;
  std::string rope_scaling_type;  // "" none, "linear"
  double rope_scaling_factor = 1.0;
};

std::string architecture(const GgufFile& f) {
  const std::string arch = f.get_string("general.architecture");
  if (arch != "llama")
    throw InputError(f.path() + ": architecture " + q(arch) + " is not one lowbit converts (it converts 'llama')");
  return arch;
}

int64_t vocab_count(const GgufFile& f) {
  if (const GgufValue* tokens = f.find("tokenizer.ggml.tokens"); tokens && tokens->type == GgufValueType::array)
    return int64_t(tokens->count);
  return -1;
}

LlamaParams llama_params(const GgufFile& f) {
  const std::string a = architecture(f) + ".";
  LlamaParams p;
  auto get_int = [&](const std::string& key) { return to_int(f, a + key, f.get_uint(a + key)); };
  p.n_layers = get_int("block_count");
  p.dim = get_int("embedding_length");
  p.ffn = get_int("feed_forward_length");
  p.n_heads = get_int("attention.head_count");
  p.n_kv_heads = f.find(a + "attention.head_count_kv") ? get_int("attention.head_count_kv") : p.n_heads;
  p.context = f.find(a + "context_length") ? get_int("context_length") : 2048;
  if (p.dim % p.n_heads != 0 && !f.find(a + "attention.key_length"))
    throw InputError(f.path() + ": head count " + std::to_string(p.n_heads) + " does not divide the embedding length " +
                     std::to_string(p.dim));
  p.head_dim = f.find(a + "attention.key_length") ? get_int("attention.key_length") : p.dim / p.n_heads;
  if (f.find(a + "attention.value_length") && get_int("attention.value_length") != p.head_dim)
    throw InputError(f.path() + ": key_length and value_length differ, which Llama does not allow");
  if (f.find(a + "rope.dimension_count") && get_int("rope.dimension_count") != p.head_dim)
    throw InputError(f.path() + ": rope.dimension_count " + std::to_string(get_int("rope.dimension_count")) +
                     " is not the head size " + std::to_string(p.head_dim) + "; partial rotary is not Llama");
  if (p.head_dim % 2 != 0) throw InputError(f.path() + ": head size " + std::to_string(p.head_dim) + " is odd; RoPE needs pairs");
  if (p.n_heads % p.n_kv_heads != 0)
    throw InputError(f.path() + ": head_count_kv " + std::to_string(p.n_kv_heads) + " does not divide head_count " +
                     std::to_string(p.n_heads));
  if (f.find(a + "rope.freq_base")) p.rope_theta = shortest_f32_decimal(f.get_float(a + "rope.freq_base"));
  p.norm_eps = shortest_f32_decimal(f.get_float(a + "attention.layer_norm_rms_epsilon"));
  if (!(p.rope_theta > 0) || !std::isfinite(p.rope_theta))
    throw InputError(f.path() + ": rope.freq_base must be positive and finite");
  if (!(p.norm_eps > 0) || !std::isfinite(p.norm_eps))
    throw InputError(f.path() + ": layer_norm_rms_epsilon must be positive and finite");
  if (f.find(a + "expert_count") && f.get_uint(a + "expert_count") > 0)
    throw InputError(f.path() + ": a mixture-of-experts model (" + a + "expert_count); lowbit converts dense Llama models");
  if (f.find(a + "rope.scaling.type")) {
    const std::string type = f.get_string(a + "rope.scaling.type");
    if (type == "linear") {
      p.rope_scaling_type = type;
      p.rope_scaling_factor = f.get_float(a + "rope.scaling.factor");
      if (!(p.rope_scaling_factor > 0) || !std::isfinite(p.rope_scaling_factor))
        throw InputError(f.path() + ": rope.scaling.factor must be positive and finite");
    } else if (type != "none") {
      throw InputError(f.path() + ": rope scaling " + q(type) + " is not one lowbit converts (none, linear)");
    }
  }
  if (f.find_tensor("rope_freqs.weight"))
    throw InputError(f.path() + ": tensor 'rope_freqs.weight' holds Llama-3.1-style rope frequency factors, which lowbit "
                                "cannot convert yet");
  const GgufTensor* embd = f.find_tensor("token_embd.weight");
  if (!embd) throw InputError(f.path() + ": tensor 'token_embd.weight' is missing");
  if (embd->ne.size() != 2) throw InputError(f.path() + ": tensor 'token_embd.weight' is not a matrix");
  p.vocab = to_int(f, "token_embd.weight rows", embd->ne[1]);
  if (f.find(a + "vocab_size") && get_int("vocab_size") != p.vocab)
    throw InputError(f.path() + ": " + a + "vocab_size " + std::to_string(get_int("vocab_size")) +
                     " differs from the embedding's " + std::to_string(p.vocab) + " rows");
  p.tied = f.find_tensor("output.weight") == nullptr;
  p.attention_bias = f.find_tensor("blk.0.attn_q.bias") != nullptr;
  return p;
}

// The tokenizer's ids of BOS/EOS/UNK/PAD, -1 when absent; checked to be inside the vocabulary.
int64_t special_id(const GgufFile& f, const std::string& key, int64_t n_tokens) {
  if (!f.find(key)) return -1;
  const uint64_t id = f.get_uint(key);
  if (int64_t(id) >= n_tokens || id > uint64_t(INT32_MAX))
    throw InputError(f.path() + ": metadata " + q(key) + " is " + std::to_string(id) + ", outside the vocabulary of " +
                     std::to_string(n_tokens) + " tokens");
  return int64_t(id);
}

bool bool_or(const GgufFile& f, const std::string& key, bool fallback) {
  return f.find(key) ? f.get_bool(key) : fallback;
}

struct Vocabulary {
  std::string model;  // "gpt2" or "llama"
  std::vector<std::string> tokens;
  std::vector<int64_t> types;
  std::vector<float> scores;  // llama only
  int64_t bos = -1, eos = -1, unk = -1, pad = -1;
  bool add_bos = false, add_eos = false;
};

Vocabulary read_vocabulary(const GgufFile& f) {
  Vocabulary v;
  v.model = f.get_string("tokenizer.ggml.model");
  if (v.model != "gpt2" && v.model != "llama")
    throw InputError(f.path() + ": tokenizer model " + q(v.model) +
                     " is not one lowbit converts (it converts 'gpt2' byte-level BPE and 'llama' SentencePiece)");
  const GgufValue& tokens = f.get_array("tokenizer.ggml.tokens", GgufValueType::string);
  const uint64_t n = tokens.count;
  if (n == 0 || n > (uint64_t(1) << 24))
    throw InputError(f.path() + ": tokenizer.ggml.tokens has " + std::to_string(n) + " tokens; expected 1 to 2^24");
  std::unordered_map<std::string_view, size_t> seen;
  for (uint64_t i = 0; i < n; ++i) {
    const std::string_view t = tokens.strings[i];
    if (!utf8::is_valid(t))
      throw InputError(f.path() + ": token " + std::to_string(i) + " is not valid UTF-8");
    if (t.empty()) throw InputError(f.path() + ": token " + std::to_string(i) + " is empty");
    auto [it, inserted] = seen.emplace(t, size_t(i));
    if (!inserted)
      throw InputError(f.path() + ": token '" + std::string(t) + "' appears twice (ids " + std::to_string(it->second) +
                       " and " + std::to_string(i) + ")");
    v.tokens.emplace_back(t);
  }
  v.types.assign(size_t(n), kNormal);
  if (f.find("tokenizer.ggml.token_type")) {
    const GgufValue& types = f.get_array("tokenizer.ggml.token_type", GgufValueType::i32);
    if (types.count != n)
      throw InputError(f.path() + ": tokenizer.ggml.token_type has " + std::to_string(types.count) + " entries for " +
                       std::to_string(n) + " tokens");
    for (uint64_t i = 0; i < n; ++i) v.types[size_t(i)] = types.integer_at(i);
  }
  if (v.model == "llama") {
    const GgufValue& scores = f.get_array("tokenizer.ggml.scores", GgufValueType::f32);
    if (scores.count != n)
      throw InputError(f.path() + ": tokenizer.ggml.scores has " + std::to_string(scores.count) + " entries for " +
                       std::to_string(n) + " tokens");
    for (uint64_t i = 0; i < n; ++i) {
      const float s = float(scores.number_at(i));
      if (!std::isfinite(s)) throw InputError(f.path() + ": the score of token " + std::to_string(i) + " is not finite");
      v.scores.push_back(s);
    }
  }
  const int64_t count = int64_t(n);
  v.bos = special_id(f, "tokenizer.ggml.bos_token_id", count);
  v.eos = special_id(f, "tokenizer.ggml.eos_token_id", count);
  v.unk = special_id(f, "tokenizer.ggml.unknown_token_id", count);
  v.pad = special_id(f, "tokenizer.ggml.padding_token_id", count);
  // llama.cpp's defaults: SentencePiece vocabularies add BOS, byte-level ones do not.
  v.add_bos = bool_or(f, "tokenizer.ggml.add_bos_token", v.model == "llama");
  v.add_eos = bool_or(f, "tokenizer.ggml.add_eos_token", false);
  if (v.add_bos && v.bos < 0) throw InputError(f.path() + ": add_bos_token is set but there is no bos_token_id");
  if (v.add_eos && v.eos < 0) throw InputError(f.path() + ": add_eos_token is set but there is no eos_token_id");
  return v;
}

// Control and unknown tokens are special added tokens (matched before the model runs, never
// normalized), user-defined ones plain added tokens, as llama.cpp's converter classified them.
ordered_json added_tokens(const Vocabulary& v) {
  ordered_json added = ordered_json::array();
  for (size_t id = 0; id < v.tokens.size(); ++id) {
    const int64_t type = v.types[id];
    if (type != kControl && type != kUnknown && type != kUserDefined) continue;
    if (v.model == "gpt2" && type == kUnknown) continue;
    added.push_back({{"id", id},
                     {"content", v.tokens[id]},
                     {"single_word", false},
                     {"lstrip", false},
                     {"rstrip", false},
                     {"normalized", type == kUserDefined},
                     {"special", type != kUserDefined}});
  }
  return added;
}

ordered_json post_processor(const Vocabulary& v) {
  if (!v.add_bos && !v.add_eos) {
    if (v.model == "gpt2")
      return {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", false}, {"use_regex", true}};
    return nullptr;
  }
  auto special = [](const std::string& id, int type_id) {
    return ordered_json{{"SpecialToken", {{"id", id}, {"type_id", type_id}}}};
  };
  auto sequence = [](const char* id, int type_id) {
    return ordered_json{{"Sequence", {{"id", id}, {"type_id", type_id}}}};
  };
  ordered_json single = ordered_json::array(), pair = ordered_json::array(), specials = ordered_json::object();
  const std::string bos = v.add_bos ? v.tokens[size_t(v.bos)] : "", eos = v.add_eos ? v.tokens[size_t(v.eos)] : "";
  for (int type_id = 0; type_id < 2; ++type_id) {
    ordered_json& out = type_id == 0 ? single : pair;
    if (v.add_bos) out.push_back(special(bos, 0));
    out.push_back(sequence("A", 0));
    if (v.add_eos) out.push_back(special(eos, 0));
    if (type_id == 1) {
      if (v.add_bos) out.push_back(special(bos, 1));
      out.push_back(sequence("B", 1));
      if (v.add_eos) out.push_back(special(eos, 1));
    }
  }
  if (v.add_bos) specials[bos] = {{"id", bos}, {"ids", {v.bos}}, {"tokens", {bos}}};
  if (v.add_eos) specials[eos] = {{"id", eos}, {"ids", {v.eos}}, {"tokens", {eos}}};
  return {{"type", "TemplateProcessing"}, {"single", single}, {"pair", pair}, {"special_tokens", specials}};
}

ordered_json byte_level(bool use_regex) {
  return {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", use_regex}};
}

// The Hugging Face pre-tokenizer of each llama.cpp pre-tokenizer name (llama-vocab.cpp's
// regex_exprs for that name are the same splits).
ordered_json byte_level_pre_tokenizer(const GgufFile& f, const std::string& pre, bool& ignore_merges) {
  ignore_merges = false;
  if (pre == "default" || pre == "gpt2") return byte_level(true);
  if (pre == "smollm" || pre == "starcoder" || pre == "refact")
    return {{"type", "Sequence"},
            {"pretokenizers", {{{"type", "Digits"}, {"individual_digits", true}}, byte_level(true)}}};
  if (pre == "llama-bpe" || pre == "llama3") {
    ignore_merges = true;  // as Meta's Llama-3 tokenizer.json sets it
    return {{"type", "Sequence"},
            {"pretokenizers",
             {{{"type", "Split"},
               {"pattern",
                {{"Regex",
                  R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)"}}},
               {"behavior", "Isolated"},
               {"invert", false}},
              byte_level(false)}}};
  }
  if (pre == "falcon")
    return {{"type", "Sequence"},
            {"pretokenizers",
             {{{"type", "Punctuation"}, {"behavior", "Contiguous"}},
              {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}},
              {{"type", "Digits"}, {"individual_digits", false}},
              {{"type", "Split"}, {"pattern", {{"Regex", "[0-9][0-9][0-9]"}}}, {"behavior", "Isolated"}, {"invert", false}}}}};
  throw InputError(f.path() + ": pre-tokenizer " + q(pre) +
                   " (tokenizer.ggml.pre) is not one lowbit converts (it knows default, gpt2, smollm, starcoder, refact, "
                   "llama-bpe, falcon)");
}

const std::string kSpaceMarker = "\xe2\x96\x81";  // U+2581, SentencePiece's word-boundary marker

std::vector<std::pair<std::string, std::string>> gguf_merges(const GgufFile& f) {
  std::vector<std::pair<std::string, std::string>> out;
  const GgufValue& merges = f.get_array("tokenizer.ggml.merges", GgufValueType::string);
  out.reserve(size_t(merges.count));
  for (uint64_t i = 0; i < merges.count; ++i) {
    const std::string_view m = merges.strings[i];
    const size_t space = m.find(' ');
    if (space == std::string_view::npos || space == 0 || space + 1 == m.size() ||
        m.find(' ', space + 1) != std::string_view::npos)
      throw InputError(f.path() + ": merge " + std::to_string(i) + " '" + std::string(m) +
                       "' is not two tokens separated by one space");
    if (!utf8::is_valid(m)) throw InputError(f.path() + ": merge " + std::to_string(i) + " is not valid UTF-8");
    out.emplace_back(std::string(m.substr(0, space)), std::string(m.substr(space + 1)));
  }
  return out;
}

}  // namespace

ordered_json gguf_config_json(const GgufFile& f) {
  const LlamaParams p = llama_params(f);
  const int64_t n_tokens = vocab_count(f);
  auto token_id = [&](const char* key) -> ordered_json {
    if (n_tokens < 0 || !f.find(key)) return nullptr;
    return special_id(f, key, n_tokens);
  };
  ordered_json rope_scaling = nullptr;
  if (p.rope_scaling_type == "linear") rope_scaling = {{"type", "linear"}, {"factor", p.rope_scaling_factor}};
  return {{"architectures", {"LlamaForCausalLM"}},
          {"model_type", "llama"},
          {"hidden_size", p.dim},
          {"intermediate_size", p.ffn},
          {"num_hidden_layers", p.n_layers},
          {"num_attention_heads", p.n_heads},
          {"num_key_value_heads", p.n_kv_heads},
          {"head_dim", p.head_dim},
          {"hidden_act", "silu"},
          {"max_position_embeddings", p.context},
          {"rms_norm_eps", p.norm_eps},
          {"rope_theta", p.rope_theta},
          {"rope_scaling", rope_scaling},
          {"attention_bias", p.attention_bias},
          {"mlp_bias", false},
          {"tie_word_embeddings", p.tied},
          {"vocab_size", p.vocab},
          {"bos_token_id", token_id("tokenizer.ggml.bos_token_id")},
          {"eos_token_id", token_id("tokenizer.ggml.eos_token_id")},
          {"torch_dtype", "float32"},
          {"initializer_range", 0.02},
          {"use_cache", true}};
}

ordered_json gguf_tokenizer_json(const GgufFile& f) {
  const Vocabulary v = read_vocabulary(f);
  ordered_json vocab = ordered_json::object();
  for (size_t id = 0; id < v.tokens.size(); ++id) vocab[v.tokens[id]] = id;
  ordered_json merges = ordered_json::array();
  ordered_json t;
  t["version"] = "1.0";
  t["truncation"] = nullptr;
  t["padding"] = nullptr;
  t["added_tokens"] = added_tokens(v);
  if (v.model == "gpt2") {
    const std::string pre = f.find("tokenizer.ggml.pre") ? f.get_string("tokenizer.ggml.pre") : "default";
    bool ignore_merges = false;
    t["normalizer"] = nullptr;
    t["pre_tokenizer"] = byte_level_pre_tokenizer(f, pre, ignore_merges);
    t["post_processor"] = post_processor(v);
    t["decoder"] = {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}};
    std::unordered_map<std::string_view, size_t> id_of;
    for (size_t id = 0; id < v.tokens.size(); ++id) id_of.emplace(v.tokens[id], id);
    size_t index = 0;
    for (const auto& [left, right] : gguf_merges(f)) {
      if (!id_of.count(left) || !id_of.count(right) || !id_of.count(left + right))
        throw InputError(f.path() + ": merge " + std::to_string(index) + " '" + left + " " + right +
                         "' uses a token not in the vocabulary");
      merges.push_back({left, right});
      ++index;
    }
    t["model"] = {{"type", "BPE"},
                  {"dropout", nullptr},
                  {"unk_token", nullptr},
                  {"continuing_subword_prefix", nullptr},
                  {"end_of_word_suffix", nullptr},
                  {"fuse_unk", false},
                  {"byte_fallback", false},
                  {"ignore_merges", ignore_merges},
                  {"vocab", vocab},
                  {"merges", merges}};
    return t;
  }
  // SentencePiece BPE, as transformers' LlamaConverter (legacy) writes it: '▁' prepended and
  // spaces replaced by the normalizer, byte fallback, merges ranked by the merged piece's score.
  const bool add_space_prefix = bool_or(f, "tokenizer.ggml.add_space_prefix", true);
  auto string_pattern = [](const std::string& s) { return ordered_json{{"String", s}}; };
  ordered_json normalizers = ordered_json::array();
  if (add_space_prefix) normalizers.push_back({{"type", "Prepend"}, {"prepend", kSpaceMarker}});
  normalizers.push_back({{"type", "Replace"}, {"pattern", string_pattern(" ")}, {"content", kSpaceMarker}});
  t["normalizer"] = {{"type", "Sequence"}, {"normalizers", normalizers}};
  t["pre_tokenizer"] = nullptr;
  t["post_processor"] = post_processor(v);
  ordered_json decoders = {{{"type", "Replace"}, {"pattern", string_pattern(kSpaceMarker)}, {"content", " "}},
                           {{"type", "ByteFallback"}},
                           {{"type", "Fuse"}}};
  if (add_space_prefix) decoders.push_back({{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}});
  t["decoder"] = {{"type", "Sequence"}, {"decoders", decoders}};
  if (f.find("tokenizer.ggml.merges")) {
    for (const auto& [left, right] : gguf_merges(f)) merges.push_back({left, right});
  } else {
    std::vector<std::pair<std::string, float>> pieces;
    pieces.reserve(v.tokens.size());
    for (size_t id = 0; id < v.tokens.size(); ++id) pieces.emplace_back(v.tokens[id], v.scores[id]);
    for (const auto& [left, right] : sentencepiece_merges(pieces)) merges.push_back({left, right});
  }
  t["model"] = {{"type", "BPE"},
                {"dropout", nullptr},
                {"unk_token", v.unk >= 0 ? ordered_json(v.tokens[size_t(v.unk)]) : ordered_json(nullptr)},
                {"continuing_subword_prefix", nullptr},
                {"end_of_word_suffix", nullptr},
                {"fuse_unk", true},
                {"byte_fallback", true},
                {"ignore_merges", false},
                {"vocab", vocab},
                {"merges", merges}};
  return t;
}

ordered_json gguf_tokenizer_config_json(const GgufFile& f) {
  const Vocabulary v = read_vocabulary(f);
  ordered_json decoder = ordered_json::object();
  for (const ordered_json& token : added_tokens(v)) {
    ordered_json entry = token;
    entry.erase("id");
    decoder[std::to_string(token["id"].get<int64_t>())] = entry;
  }
  auto token_or_null = [&](int64_t id) { return id >= 0 ? ordered_json(v.tokens[size_t(id)]) : ordered_json(nullptr); };
  ordered_json c = {{"add_bos_token", v.add_bos},
                    {"add_eos_token", v.add_eos},
                    {"added_tokens_decoder", decoder},
                    {"bos_token", token_or_null(v.bos)},
                    {"eos_token", token_or_null(v.eos)},
                    {"pad_token", token_or_null(v.pad)},
                    {"unk_token", token_or_null(v.model == "llama" ? v.unk : -1)},
                    {"clean_up_tokenization_spaces", false},
                    {"model_max_length", f.find("llama.context_length") ? f.get_uint("llama.context_length") : 2048},
                    {"tokenizer_class", "PreTrainedTokenizerFast"}};
  if (f.find("tokenizer.chat_template")) {
    const std::string tmpl = f.get_string("tokenizer.chat_template");
    if (!utf8::is_valid(tmpl)) throw InputError(f.path() + ": tokenizer.chat_template is not valid UTF-8");
    c["chat_template"] = tmpl;
  }
  return c;
}

ordered_json gguf_generation_config_json(const GgufFile& f) {
  const int64_t n_tokens = vocab_count(f);
  ordered_json g = ordered_json::object();
  for (const auto& [key, name] : {std::pair<const char*, const char*>{"tokenizer.ggml.bos_token_id", "bos_token_id"},
                                  {"tokenizer.ggml.eos_token_id", "eos_token_id"},
                                  {"tokenizer.ggml.padding_token_id", "pad_token_id"}})
    if (n_tokens > 0 && f.find(key)) g[name] = special_id(f, key, n_tokens);
  return g;
}

namespace {

// One output tensor: where it comes from in the GGUF and how it is laid out.
struct TensorPlan {
  std::string hf_name;
  const GgufTensor* source = nullptr;
  std::vector<int64_t> shape;  // HF order: [rows, cols] (GGUF ne reversed)
  int permute_heads = 0;       // > 0: undo llama.cpp's q/k row permutation over this many heads
};

std::vector<TensorPlan> plan_tensors(const GgufFile& f, const LlamaParams& p) {
  std::vector<TensorPlan> plans;
  std::set<std::string> used;
  auto add = [&](const std::string& gguf_name, const std::string& hf_name, std::vector<int64_t> shape,
                 int permute_heads = 0) {
    const GgufTensor* t = f.find_tensor(gguf_name);
    if (!t) throw InputError(f.path() + ": tensor " + q(gguf_name) + " is missing");
    std::vector<uint64_t> expected_ne(shape.rbegin(), shape.rend());
    if (t->ne != expected_ne) {
      std::string want = "[";
      for (size_t i = 0; i < expected_ne.size(); ++i) want += (i ? ", " : "") + std::to_string(expected_ne[i]);
      throw InputError(f.path() + ": tensor " + q(gguf_name) + " has shape " + t->shape_str() + ", expected " + want +
                       "]");
    }
    used.insert(gguf_name);
    plans.push_back({hf_name, t, std::move(shape), permute_heads});
  };
  const int64_t dim = p.dim, ffn = p.ffn, vocab = p.vocab, q_dim = int64_t(p.n_heads) * p.head_dim,
                kv_dim = int64_t(p.n_kv_heads) * p.head_dim;
  add("token_embd.weight", "model.embed_tokens.weight", {vocab, dim});
  for (int l = 0; l < p.n_layers; ++l) {
    const std::string g = "blk." + std::to_string(l) + ".", h = "model.layers." + std::to_string(l) + ".";
    add(g + "attn_norm.weight", h + "input_layernorm.weight", {dim});
    add(g + "attn_q.weight", h + "self_attn.q_proj.weight", {q_dim, dim}, p.n_heads);
    add(g + "attn_k.weight", h + "self_attn.k_proj.weight", {kv_dim, dim}, p.n_kv_heads);
    add(g + "attn_v.weight", h + "self_attn.v_proj.weight", {kv_dim, dim});
    add(g + "attn_output.weight", h + "self_attn.o_proj.weight", {dim, q_dim});
    if (p.attention_bias) {
      add(g + "attn_q.bias", h + "self_attn.q_proj.bias", {q_dim}, p.n_heads);
      add(g + "attn_k.bias", h + "self_attn.k_proj.bias", {kv_dim}, p.n_kv_heads);
      add(g + "attn_v.bias", h + "self_attn.v_proj.bias", {kv_dim});
      add(g + "attn_output.bias", h + "self_attn.o_proj.bias", {dim});  // HF Llama's attention_bias covers all four
    }
    add(g + "ffn_norm.weight", h + "post_attention_layernorm.weight", {dim});
    add(g + "ffn_gate.weight", h + "mlp.gate_proj.weight", {ffn, dim});
    add(g + "ffn_up.weight", h + "mlp.up_proj.weight", {ffn, dim});
    add(g + "ffn_down.weight", h + "mlp.down_proj.weight", {dim, ffn});
  }
  add("output_norm.weight", "model.norm.weight", {dim});
  if (!p.tied) add("output.weight", "lm_head.weight", {vocab, dim});
  for (const GgufTensor& t : f.tensors())
    if (!used.count(t.name))
      throw InputError(f.path() + ": tensor " + q(t.name) + " is not part of a Llama model lowbit knows how to convert");
  for (const TensorPlan& plan : plans)
    if (!gguf_type_supported(plan.source->type)) dequantize_gguf_tensor(*plan.source, f.path(), nullptr);  // names it
  return plans;
}

void write_json_file(const std::string& path, const ordered_json& value) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) throw InputError(path + ": cannot create (" + std::strerror(errno) + ")");
  out << value.dump(2, ' ', false, nlohmann::json::error_handler_t::strict) << "\n";
  out.close();
  if (!out) throw InputError(path + ": write failed");
}

// Removes the temporary files of a conversion that did not finish.
struct TempFiles {
  std::vector<fs::path> paths;
  bool committed = false;
  ~TempFiles() {
    if (committed) return;
    std::error_code ec;
    for (const fs::path& p : paths) fs::remove(p, ec);
  }
};

}  // namespace

void convert_gguf(const std::string& gguf_path, const std::string& out_dir, const GgufConvertOptions& options) {
  const char* outputs[] = {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                           "generation_config.json"};
  const fs::path out(out_dir);
  if (fs::exists(out) && !fs::is_directory(out)) throw UsageError("--out " + out_dir + ": exists and is not a folder");
  if (!options.force)
    for (const char* name : outputs)
      if (fs::exists(out / name))
        throw UsageError("--out " + out_dir + ": " + name + " already exists; pass --force to overwrite it");
  if (fs::exists(out / "model.safetensors.index.json") && !options.force)
    throw UsageError("--out " + out_dir + ": holds a sharded model (model.safetensors.index.json); pass --force to replace it");

  const std::unique_ptr<GgufFile> f = GgufFile::open(gguf_path);
  const LlamaParams params = llama_params(*f);
  const std::vector<TensorPlan> plans = plan_tensors(*f, params);
  // Everything that can be refused is checked before the first byte is written.
  const ordered_json config = gguf_config_json(*f);
  const ordered_json tokenizer = gguf_tokenizer_json(*f);
  const ordered_json tokenizer_config = gguf_tokenizer_config_json(*f);
  const ordered_json generation_config = gguf_generation_config_json(*f);
  if (int64_t(tokenizer["model"]["vocab"].size()) > params.vocab)
    throw InputError(gguf_path + ": the tokenizer has " + std::to_string(tokenizer["model"]["vocab"].size()) +
                     " tokens but the embedding only " + std::to_string(params.vocab) + " rows");

  std::error_code ec;
  fs::create_directories(out, ec);
  if (ec) throw InputError(out_dir + ": cannot create (" + ec.message() + ")");
  TempFiles temps;
  auto temp_path = [&](const char* name) {
    temps.paths.push_back(out / (std::string(".lowbit-convert-") + name));
    return temps.paths.back().string();
  };
  write_json_file(temp_path("config.json"), config);
  write_json_file(temp_path("tokenizer.json"), tokenizer);
  write_json_file(temp_path("tokenizer_config.json"), tokenizer_config);
  write_json_file(temp_path("generation_config.json"), generation_config);

  std::vector<TensorSpec> specs;
  for (const TensorPlan& plan : plans) specs.push_back({plan.hf_name, options.dtype, plan.shape});
  {
    SafetensorsStreamWriter writer(temp_path("model.safetensors"), specs, {{"format", "pt"}});
    std::vector<uint16_t> half;
    for (const TensorPlan& plan : plans) {
      std::vector<float> values = dequantize_gguf_tensor(*plan.source, f->path());
      for (size_t i = 0; i < values.size(); ++i)
        if (!std::isfinite(values[i]))
          throw InputError(f->path() + ": tensor " + q(plan.source->name) + " holds " +
                           (std::isnan(values[i]) ? "NaN" : "Inf") + " at element " + std::to_string(i));
      if (plan.permute_heads > 0) {
        // llama.cpp's converter interleaved each head's rows (HF row j*half + i -> GGUF row 2i + j);
        // permute_rows_for_hf_rope maps the interleaved order back to HF's halves.
        const int cols = plan.shape.size() == 2 ? int(plan.shape[1]) : 1;
        values = permute_rows_for_hf_rope(values.data(), plan.permute_heads, params.head_dim, cols);
      }
      if (options.dtype == DType::F32) {
        writer.append(values.data(), values.size() * 4);
        continue;
      }
      half.resize(values.size());
      for (size_t i = 0; i < values.size(); ++i)
        half[i] = options.dtype == DType::BF16 ? f32_to_bf16(values[i]) : f32_to_f16(values[i]);
      if (options.dtype == DType::F16)
        for (size_t i = 0; i < values.size(); ++i)
          if (!std::isfinite(f16_to_f32(half[i])))
            throw InputError(f->path() + ": tensor " + q(plan.source->name) + " element " + std::to_string(i) + " (" +
                             std::to_string(values[i]) + ") overflows f16; use --dtype bf16 or f32");
      writer.append(half.data(), half.size() * 2);
    }
    writer.finish();
  }
  for (size_t i = 0; i < temps.paths.size(); ++i) {
    const std::string final_name = temps.paths[i].filename().string().substr(std::strlen(".lowbit-convert-"));
    fs::rename(temps.paths[i], out / final_name, ec);
    if (ec) throw InputError((out / final_name).string() + ": cannot write (" + ec.message() + ")");
  }
  temps.committed = true;
  if (options.force) fs::remove(out / "model.safetensors.index.json", ec);  // a stale index would shadow the new file
}

}  // namespace lowbit
