// One model description for every supported architecture, read from config.json. The model code
// branches on these fields (norm kind, activation, parallel attention), never on names; the
// architecture's raw config.json switches are turned into them once, in config.cpp.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "backend/op_kinds.h"

namespace lowbit {

enum class Arch { Llama, Falcon };

// How the rows of Falcon's fused query_key_value are ordered (Llama: separate q, k, v tensors).
enum class QkvLayout {
  separate,      // Llama: q_proj, k_proj, v_proj
  stacked,       // Falcon multi_query: [q heads | k | v]
  per_head,      // Falcon, neither: per head h: q_h, k_h, v_h
  per_kv_group,  // Falcon new_decoder_architecture: per kv group g: its q heads, k_g, v_g
};

struct RopeScaling {
  enum class Type { None, Linear, Llama3 } type = Type::None;
  float factor = 1.0f;
  float low_freq_factor = 1.0f;                 // llama3
  float high_freq_factor = 4.0f;                // llama3
  int original_max_position_embeddings = 8192;  // llama3
};

struct ModelConfig {
  Arch arch = Arch::Llama;
  std::string model_type;      // "llama", "falcon"
  std::string torch_dtype;     // as written in config.json (informational)
  int vocab_size = 0;
  int hidden_size = 0;         // model dim
  int intermediate_size = 0;   // MLP hidden (Falcon: ffn_hidden_size or 4*hidden)
  int n_layers = 0;
  int n_heads = 0;
  int n_kv_heads = 0;          // Llama: num_key_value_heads; Falcon: 1 (multi_query), num_kv_heads (new arch), or n_heads
  int head_dim = 0;
  int max_position_embeddings = 2048;
  float norm_eps = 1e-5f;      // rms_norm_eps / layer_norm_epsilon
  NormKind norm = NormKind::RMSNorm;
  Activation activation = Activation::SwiGLU;
  float rope_theta = 10000.0f;
  RopeScaling rope_scaling;
  bool tie_word_embeddings = false;
  bool attention_bias = false;  // Llama: q/k/v/o biases
  bool mlp_bias = false;        // Llama: gate/up/down biases
  // A decoder layer, x its input:
  //   sequential (Llama, Falcon with parallel_attn false): x += attn(norm1(x)); x += mlp(norm2(x))
  //   parallel, one norm (Falcon 7B):                       h = norm1(x); x += attn(h) + mlp(h)
  //   parallel, two norms (Falcon 40B):                     x += attn(norm1(x)) + mlp(norm2(x))
  bool parallel_attention = false;  // attention and MLP both read x; their outputs are added together
  bool mlp_has_norm = true;         // the MLP has its own norm (false: it reads the attention's normed input)
  QkvLayout qkv_layout = QkvLayout::separate;
  bool linear_bias = false;         // Falcon "bias": every Linear has a bias
  // Special tokens from config.json (-1 when absent); eos may list several ids.
  int32_t bos_token_id = -1;
  std::vector<int32_t> eos_token_ids;

  int q_dim() const { return n_heads * head_dim; }
  int kv_dim() const { return n_kv_heads * head_dim; }
};

// Defaults for sampling, following transformers' GenerationConfig: greedy unless
// generation_config.json sets do_sample.
struct GenerationDefaults {
  bool do_sample = false;
  float temperature = 1.0f;
  int top_k = 50;
  float top_p = 1.0f;
  float min_p = 0.0f;
  float repetition_penalty = 1.0f;
  int max_new_tokens = -1;               // -1: not set
  std::vector<int32_t> eos_token_ids;    // overrides config.json's when present
};

// Reads <dir>/config.json. Throws InputError naming the file and field for missing, zero or
// negative sizes, heads not dividing the hidden size, unknown architectures or unsupported
// variants (e.g. Falcon alibi).
ModelConfig load_config(const std::string& dir);
// Parses a config.json text (the file name is used only in messages).
ModelConfig parse_config(const std::string& json_text, const std::string& file_name);
// Reads <dir>/generation_config.json if present.
GenerationDefaults load_generation_defaults(const std::string& dir);

}  // namespace lowbit
