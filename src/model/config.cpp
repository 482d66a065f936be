#include "model/config.h"

#include <cmath>
#include <limits>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>

#include "core/error.h"

namespace lowbit {

namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

// Typed access to one config.json object; every error names the file and the field. A field
// present as JSON null counts as absent, as transformers treats it.
class ConfigReader {
 public:
  ConfigReader(const json& object, std::string file, std::string prefix = "")
      : object_(object), file_(std::move(file)), prefix_(std::move(prefix)) {}

  [[noreturn]] void fail(const std::string& field, const std::string& what) const {
    throw InputError(file_ + ": field \"" + prefix_ + field + "\" " + what);
  }

  const json* find(const std::string& field) const {
    auto it = object_.find(field);
    if (it == object_.end() || it->is_null()) return nullptr;
    return &*it;
  }
  bool has(const std::string& field) const { return find(field) != nullptr; }

  std::optional<int64_t> opt_int(const std::string& field) const {
    const json* v = find(field);
    if (!v) return std::nullopt;
    // Some exporters write integral sizes as 4096.0; accept those, reject 4096.5.
    if (v->is_number_float()) {
      const double d = v->get<double>();
      // Range first: casting a double outside int64 (1e30) is undefined behaviour.
      if (!(std::fabs(d) < 9.0e18) || d != std::trunc(d)) fail(field, "must be an integer, got " + v->dump());
      return int64_t(d);
    }
    if (!v->is_number_integer()) fail(field, "must be an integer, got " + v->dump());
    return v->get<int64_t>();
  }
  std::optional<double> opt_float(const std::string& field) const {
    const json* v = find(field);
    if (!v) return std::nullopt;
    if (!v->is_number()) fail(field, "must be a number, got " + v->dump());
    // Every such field is stored as a float: a larger magnitude would become inf.
    const double d = v->get<double>();
    if (!(std::fabs(d) <= double(std::numeric_limits<float>::max())))
      fail(field, "is out of range, got " + v->dump());
    return d;
  }
  std::optional<bool> opt_bool(const std::string& field) const {
    const json* v = find(field);
    if (!v) return std::nullopt;
    if (!v->is_boolean()) fail(field, "must be true or false, got " + v->dump());
    return v->get<bool>();
  }
  std::optional<std::string> opt_string(const std::string& field) const {
    const json* v = find(field);
    if (!v) return std::nullopt;
    if (!v->is_string()) fail(field, "must be a string, got " + v->dump());
    return v->get<std::string>();
  }

  // A size that must be present and positive; `aliases` are older names for the same field.
  int positive_int(const std::string& field, std::initializer_list<const char*> aliases = {}) const {
    std::string used = field;
    std::optional<int64_t> v = opt_int(field);
    for (const char* alias : aliases) {
      if (v) break;
      v = opt_int(alias);
      used = alias;
    }
    if (!v) fail(field, "is missing");
    return check_positive(used, *v);
  }
  int positive_int_or(const std::string& field, int fallback) const {
    std::optional<int64_t> v = opt_int(field);
    return v ? check_positive(field, *v) : fallback;
  }
  int check_positive(const std::string& field, int64_t v) const {
    if (v <= 0) fail(field, "must be positive, got " + std::to_string(v));
    if (v > INT32_MAX) fail(field, "is too large: " + std::to_string(v));
    return int(v);
  }

  // eos_token_id may be one id or a list of ids.
  std::vector<int32_t> token_ids(const std::string& field) const {
    const json* v = find(field);
    std::vector<int32_t> ids;
    if (!v) return ids;
    auto one = [&](const json& x) {
      if (!x.is_number_integer() || x.get<int64_t>() < 0 || x.get<int64_t>() > INT32_MAX)
        fail(field, "must be a token id or a list of token ids, got " + v->dump());
      ids.push_back(int32_t(x.get<int64_t>()));
    };
    if (v->is_array()) {
      for (const json& x : *v) one(x);
    } else {
      one(*v);
    }
    return ids;
  }

  ConfigReader child(const std::string& field) const {
    const json* v = find(field);
    if (!v || !v->is_object()) fail(field, "must be a JSON object");
    return ConfigReader(*v, file_, prefix_ + field + ".");
  }

 private:
  const json& object_;
  std::string file_;
  std::string prefix_;
};

std::string read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InputError(path + ": cannot open");
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

json parse_json_object(const std::string& text, const std::string& file_name) {
  json parsed;
  try {
    parsed = json::parse(text);
  } catch (const json::exception& e) {
    throw InputError(file_name + ": not valid JSON (" + e.what() + ")");
  }
  if (!parsed.is_object()) throw InputError(file_name + ": not a JSON object");
  return parsed;
}

// rope_scaling (or transformers 5's rope_parameters, which also carries rope_theta).
void read_rope(const ConfigReader& config, ModelConfig& out) {
  if (auto theta = config.opt_float("rope_theta")) out.rope_theta = float(*theta);
  const char* field = config.has("rope_parameters") ? "rope_parameters" : "rope_scaling";
  if (!config.has(field)) return;
  const ConfigReader rope = config.child(field);
  if (auto theta = rope.opt_float("rope_theta")) out.rope_theta = float(*theta);
  std::optional<std::string> type = rope.opt_string("rope_type");
  if (!type) type = rope.opt_string("type");
  if (!type) rope.fail("rope_type", "is missing");
  if (*type == "default") return;
  auto positive_float = [&](const char* name) {
    std::optional<double> v = rope.opt_float(name);
    if (!v) rope.fail(name, "is missing");
    if (!(*v > 0)) rope.fail(name, "must be positive, got " + std::to_string(*v));
    return float(*v);
  };
  if (*type == "linear") {
    out.rope_scaling.type = RopeScaling::Type::Linear;
    out.rope_scaling.factor = positive_float("factor");
  } else if (*type == "llama3") {
    out.rope_scaling.type = RopeScaling::Type::Llama3;
    out.rope_scaling.factor = positive_float("factor");
    out.rope_scaling.low_freq_factor = positive_float("low_freq_factor");
    out.rope_scaling.high_freq_factor = positive_float("high_freq_factor");
    out.rope_scaling.original_max_position_embeddings =
        rope.positive_int("original_max_position_embeddings");
    if (out.rope_scaling.high_freq_factor <= out.rope_scaling.low_freq_factor)
      rope.fail("high_freq_factor", "must exceed low_freq_factor");
  } else {
    rope.fail("rope_type", "is \"" + *type + "\"; lowbit supports default, linear and llama3");
  }
}

void read_llama(const ConfigReader& config, ModelConfig& out) {
  out.arch = Arch::Llama;
  out.model_type = "llama";
  out.norm = NormKind::RMSNorm;
  out.activation = Activation::SwiGLU;
  out.hidden_size = config.positive_int("hidden_size");
  out.intermediate_size = config.positive_int("intermediate_size");
  out.n_layers = config.positive_int("num_hidden_layers");
  out.n_heads = config.positive_int("num_attention_heads");
  out.n_kv_heads = config.positive_int_or("num_key_value_heads", out.n_heads);
  if (auto head_dim = config.opt_int("head_dim")) {
    out.head_dim = config.check_positive("head_dim", *head_dim);
  } else {
    if (out.hidden_size % out.n_heads != 0)
      config.fail("num_attention_heads", "(" + std::to_string(out.n_heads) +
                                             ") does not divide hidden_size (" +
                                             std::to_string(out.hidden_size) + ")");
    out.head_dim = out.hidden_size / out.n_heads;
  }
  if (out.head_dim % 2 != 0)
    config.fail("head_dim", "must be even for rotary embeddings, got " + std::to_string(out.head_dim));
  out.norm_eps = float(config.opt_float("rms_norm_eps").value_or(1e-6));
  out.tie_word_embeddings = config.opt_bool("tie_word_embeddings").value_or(false);
  out.attention_bias = config.opt_bool("attention_bias").value_or(false);
  out.mlp_bias = config.opt_bool("mlp_bias").value_or(false);
  read_rope(config, out);
  if (!config.has("bos_token_id")) out.bos_token_id = 1;
  if (!config.has("eos_token_id")) out.eos_token_ids = {2};
}

// Field names and defaults follow transformers' FalconConfig; the pre-transformers "RW" configs
// (model_type RefinedWebModel = 7B style, RefinedWeb = 40B style) use n_head/n_layer/n_head_kv.
void read_falcon(const ConfigReader& config, const std::string& model_type, ModelConfig& out) {
  out.arch = Arch::Falcon;
  out.model_type = "falcon";
  out.norm = NormKind::LayerNorm;
  out.activation = Activation::GELU;
  if (config.opt_bool("alibi").value_or(false))
    config.fail("alibi", "is true: Falcon with alibi is not supported");
  out.hidden_size = config.positive_int("hidden_size", {"n_embed"});
  out.n_layers = config.positive_int("num_hidden_layers", {"n_layer"});
  out.n_heads = config.positive_int("num_attention_heads", {"n_head"});
  if (out.hidden_size % out.n_heads != 0)
    config.fail("num_attention_heads", "(" + std::to_string(out.n_heads) +
                                           ") does not divide hidden_size (" +
                                           std::to_string(out.hidden_size) + ")");
  out.head_dim = out.hidden_size / out.n_heads;
  if (auto ffn = config.opt_int("ffn_hidden_size"))
    out.intermediate_size = config.check_positive("ffn_hidden_size", *ffn);
  else  // transformers' default, computed wide so a huge hidden_size is refused, not wrapped
    out.intermediate_size = config.check_positive("hidden_size", 4 * int64_t(out.hidden_size));
  // transformers' FalconConfig switches, turned into the layer's plain flags here and nowhere else.
  const bool multi_query = config.opt_bool("multi_query").value_or(true);
  const bool parallel_attn = config.opt_bool("parallel_attn").value_or(true);
  out.linear_bias = config.opt_bool("bias").value_or(false);
  const std::optional<bool> new_arch = config.opt_bool("new_decoder_architecture");
  if (new_arch ? *new_arch : model_type == "RefinedWeb") {
    // The 40B layout: grouped KV heads in the fused QKV, attention and MLP always in parallel,
    // with their own LayerNorms (ln_attn, ln_mlp) unless num_ln_in_parallel_attn is 1.
    out.qkv_layout = QkvLayout::per_kv_group;
    out.parallel_attention = true;
    std::optional<int64_t> kv = config.opt_int("num_kv_heads");
    const char* kv_field = "num_kv_heads";
    if (!kv) {
      kv = config.opt_int("n_head_kv");
      kv_field = "n_head_kv";
    }
    out.n_kv_heads = kv ? config.check_positive(kv_field, *kv) : out.n_heads;
    const int n_ln = config.positive_int_or("num_ln_in_parallel_attn", 2);
    if (n_ln > 2) config.fail("num_ln_in_parallel_attn", "must be 1 or 2, got " + std::to_string(n_ln));
    out.mlp_has_norm = n_ln == 2;
  } else {
    out.qkv_layout = multi_query ? QkvLayout::stacked : QkvLayout::per_head;
    out.n_kv_heads = multi_query ? 1 : out.n_heads;
    // parallel_attn: one input_layernorm shared by attention and MLP; else a sequential layer
    // with post_attention_layernorm before the MLP.
    out.parallel_attention = parallel_attn;
    out.mlp_has_norm = !parallel_attn;
  }
  if (auto activation = config.opt_string("activation"); activation && *activation != "gelu")
    config.fail("activation", "is \"" + *activation + "\"; lowbit supports Falcon with gelu only");
  out.norm_eps = float(config.opt_float("layer_norm_epsilon").value_or(1e-5));
  out.tie_word_embeddings = config.opt_bool("tie_word_embeddings").value_or(true);
  read_rope(config, out);
  if (!config.has("bos_token_id")) out.bos_token_id = 11;
  if (!config.has("eos_token_id")) out.eos_token_ids = {11};
}

}  // namespace

ModelConfig parse_config(const std::string& json_text, const std::string& file_name) {
  const json root = parse_json_object(json_text, file_name);
  const ConfigReader config(root, file_name);
  ModelConfig out;

  std::string architecture;
  if (const json* archs = config.find("architectures")) {
    if (!archs->is_array() || archs->empty() || !(*archs)[0].is_string())
      config.fail("architectures", "must be a non-empty list of strings");
    architecture = (*archs)[0].get<std::string>();
  }
  const std::string model_type = config.opt_string("model_type").value_or("");
  const bool is_llama = architecture == "LlamaForCausalLM" ||
                        (architecture.empty() && model_type == "llama");
  const bool is_falcon =
      architecture == "FalconForCausalLM" || architecture == "RWForCausalLM" ||
      (architecture.empty() &&
       (model_type == "falcon" || model_type == "RefinedWebModel" || model_type == "RefinedWeb"));
  if (is_llama) {
    read_llama(config, out);
  } else if (is_falcon) {
    read_falcon(config, model_type, out);
  } else if (!architecture.empty()) {
    config.fail("architectures", "is \"" + architecture +
                                     "\"; lowbit runs LlamaForCausalLM and FalconForCausalLM");
  } else if (!model_type.empty()) {
    config.fail("model_type", "is \"" + model_type + "\"; lowbit runs llama and falcon");
  } else {
    config.fail("architectures", "is missing (and so is model_type)");
  }

  if (out.n_heads % out.n_kv_heads != 0)
    config.fail(out.arch == Arch::Llama ? "num_key_value_heads" : "num_kv_heads",
                "(" + std::to_string(out.n_kv_heads) + ") does not divide the number of heads (" +
                    std::to_string(out.n_heads) + ")");
  // Activation rows are indexed with int: the fused q/k/v row and the gate/up row must fit one.
  const int64_t qkv_dim = (int64_t(out.n_heads) + 2 * int64_t(out.n_kv_heads)) * out.head_dim;
  if (qkv_dim > INT32_MAX)
    config.fail("head_dim", "times the number of heads is too large (" + std::to_string(qkv_dim) + ")");
  if (2 * int64_t(out.intermediate_size) > INT32_MAX)
    config.fail(out.arch == Arch::Llama ? "intermediate_size" : "ffn_hidden_size",
                "is too large (" + std::to_string(out.intermediate_size) + ")");
  out.vocab_size = config.positive_int("vocab_size");
  out.max_position_embeddings =
      config.positive_int_or("max_position_embeddings", out.max_position_embeddings);
  if (!(out.norm_eps > 0))
    config.fail(out.arch == Arch::Llama ? "rms_norm_eps" : "layer_norm_epsilon", "must be positive");
  if (!(out.rope_theta > 0)) config.fail("rope_theta", "must be positive");
  out.torch_dtype = config.opt_string("torch_dtype").value_or("");
  if (config.has("bos_token_id")) {
    const std::vector<int32_t> bos = config.token_ids("bos_token_id");
    if (bos.size() != 1) config.fail("bos_token_id", "must be one token id");
    out.bos_token_id = bos[0];
  }
  if (config.has("eos_token_id")) out.eos_token_ids = config.token_ids("eos_token_id");
  return out;
}

ModelConfig load_config(const std::string& dir) {
  const std::string path = (fs::path(dir) / "config.json").string();
  if (!fs::exists(path)) throw InputError(path + ": missing (not a Hugging Face model folder?)");
  return parse_config(read_text_file(path), path);
}

GenerationDefaults load_generation_defaults(const std::string& dir) {
  GenerationDefaults out;
  const std::string path = (fs::path(dir) / "generation_config.json").string();
  if (!fs::exists(path)) return out;
  const json root = parse_json_object(read_text_file(path), path);
  const ConfigReader config(root, path);
  out.do_sample = config.opt_bool("do_sample").value_or(out.do_sample);
  out.temperature = float(config.opt_float("temperature").value_or(out.temperature));
  if (out.temperature < 0) config.fail("temperature", "must not be negative");
  if (auto top_k = config.opt_int("top_k")) {
    if (*top_k < 0) config.fail("top_k", "must not be negative");
    out.top_k = int(*top_k);
  }
  out.top_p = float(config.opt_float("top_p").value_or(out.top_p));
  if (!(out.top_p > 0 && out.top_p <= 1)) config.fail("top_p", "must be in (0, 1]");
  out.min_p = float(config.opt_float("min_p").value_or(out.min_p));
  if (!(out.min_p >= 0 && out.min_p <= 1)) config.fail("min_p", "must be in [0, 1]");
  out.repetition_penalty =
      float(config.opt_float("repetition_penalty").value_or(out.repetition_penalty));
  if (!(out.repetition_penalty > 0)) config.fail("repetition_penalty", "must be positive");
  if (config.has("max_new_tokens"))
    out.max_new_tokens = config.positive_int("max_new_tokens");
  out.eos_token_ids = config.token_ids("eos_token_id");
  return out;
}

}  // namespace lowbit
