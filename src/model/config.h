// One model description for every supported architecture, read from config.json. The model code
// branches on these fields (norm kind, activation, parallel attention), never on names.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace lowbit {

enum class Arch { Llama, Falcon };
enum class NormKind { RMSNorm, LayerNorm };
enum class Activation { SwiGLU, GELU };  // SwiGLU: silu(gate) * up; GELU: exact erf gelu

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
  // Falcon
  bool parallel_attn = false;            // attention and MLP read the same normed input
  bool new_decoder_architecture = false; // 40B-style: grouped KV in the fused QKV, two LayerNorms
  bool multi_query = false;
  bool linear_bias = false;              // Falcon "bias": every Linear has a bias
  int n_ln_per_layer = 1;                // Falcon: 2 = separate ln_attn and ln_mlp
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
