// A decoder-only transformer (Llama or Falcon) on a Backend. The two architectures differ only
// in config flags (norm kind, activation, parallel attention, biases); forward() is written once.
#pragma once
#include <functional>
#include <memory>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "formats/format.h"
#include "model/config.h"

namespace lowbit {

struct LoadOptions {
  Format format = Format::F32;
  QuantOptions quant;
  bool keep_head = true;  // output head stays bf16 (f32 under --quant f32), as transformers+bnb keep lm_head
  int max_context = 0;    // 0 = config's max_position_embeddings
  int n_slots = 1;        // sequences decoded together (KV cache slots)
  int max_batch_tokens = 512;  // prefill chunk size: scratch buffers hold this many tokens
  KvDtype kv_cache = KvDtype::f32;  // the CLI's --kv-cache auto picks bf16 on CUDA
  bool progress = false;  // progress line on stderr while loading
};

struct LayerWeights {
  std::unique_ptr<DeviceNorm> attn_norm;  // (dim) Llama input_layernorm; Falcon input_layernorm / ln_attn
  std::unique_ptr<DeviceNorm> mlp_norm;   // (dim) Llama post_attention_layernorm; Falcon ln_mlp or
                                          // post_attention_layernorm (sequential); null when shared
  std::unique_ptr<DeviceLinear> wqkv;     // (q_dim + 2*kv_dim, dim): rows [q heads | k heads | v heads]
  std::unique_ptr<DeviceLinear> wo;       // (dim, q_dim)
  std::unique_ptr<DeviceLinear> w_up;     // SwiGLU: (2*hidden, dim) rows [gate | up]; GELU: (hidden, dim)
  std::unique_ptr<DeviceLinear> w_down;   // (dim, hidden)
};

struct ModelWeights {
  std::shared_ptr<DeviceLinear> embedding;  // (vocab, dim), bf16 (f32 under --quant f32)
  std::vector<LayerWeights> layers;
  std::unique_ptr<DeviceNorm> final_norm;   // (dim)
  // (vocab, dim). A tied head kept in the embedding's format is the embedding itself: one
  // resident copy, as transformers + bitsandbytes hold it. A tied head quantized by
  // --keep-head false is a second, quantized copy (the lookup still reads the 16-bit table).
  std::shared_ptr<DeviceLinear> head;
};

// What to sample from one row of logits: the settings, the tokens so far (repetition penalty)
// and the draw number (tokens generated so far).
struct SampleSpec {
  SamplingParams params;
  std::span<const int32_t> history;
  uint64_t step = 0;
};

// What Model::load would hold for a folder and options, computed from config.json and the
// safetensors headers (every tensor's presence and shape is checked) without reading or
// quantizing a weight: `lowbit info`.
struct WeightPlan {
  size_t n_params = 0, linear_params = 0;
  size_t linear_bytes = 0;     // the quantized decoder linears (biases included)
  size_t embedding_bytes = 0, head_bytes = 0, norm_bytes = 0;
  size_t weight_bytes = 0;     // all of it, a shared embedding/head once (= Model::weight_bytes())
  Format head_format = Format::BF16;
  bool head_shares_embedding = false;
};

class Model {
 public:
  static WeightPlan plan(const std::string& dir, const LoadOptions& opts);

  ~Model();

  // Reads config.json and the safetensors of `dir`, checks every tensor's presence and shape,
  // and quantizes tensor by tensor onto the backend.
  static std::unique_ptr<Model> load(const std::string& dir, Backend& backend, const LoadOptions& opts);

  // Runs the batch through the model. For each entry r of `logit_rows` (an index into the
  // batch), writes vocab_size logits to logits + r_index * vocab_size.
  void forward(const TokenBatch& batch, const std::vector<int>& logit_rows, float* logits);

  // Runs the batch and samples one token from the logits of each entry of `logit_rows` with
  // specs[i], on the backend: on a GPU only the ids come back. A decode step (one token per
  // distinct slot, every row sampled) is recorded the second time its batch size is seen and
  // replayed from then on where the backend can record (CUDA graphs); forward() shares that.
  std::vector<int32_t> forward_sample(const TokenBatch& batch, const std::vector<int>& logit_rows,
                                      std::span<const SampleSpec> specs);

  const ModelConfig& config() const { return config_; }
  const LoadOptions& options() const { return opts_; }
  Backend& backend() { return backend_; }
  int max_context() const { return max_context_; }
  size_t weight_bytes() const;   // every weight on the backend, scales and biases included; one copy counted once
  bool head_shares_embedding() const { return w_.head == w_.embedding; }
  size_t n_params() const { return n_params_; }
  size_t linear_params() const { return linear_params_; }
  size_t linear_bytes() const;   // the quantized linears alone (bits per parameter = 8*this/linear_params)

 private:
  Model(ModelConfig cfg, Backend& backend, LoadOptions opts);
  void allocate_scratch();
  // Runs one chunk (at most max_batch_tokens tokens), leaving the rows' logits in logits_, then
  // hands them to `consume` (rows.size() rows of vocab_size) unless no row is wanted.
  using LogitsConsumer = std::function<void(const DeviceBuffer& logits)>;
  void forward_chunk(const TokenBatch& batch, const std::vector<int>& logit_rows, const LogitsConsumer& consume);
  // The layers and the head on the batch forward_chunk uploaded (Backend::set_batch, once).
  void run_ops(const std::vector<int>& logit_rows);
  void check_rows(const TokenBatch& batch, const std::vector<int>& logit_rows) const;

  ModelConfig config_;
  Backend& backend_;
  LoadOptions opts_;
  ModelWeights w_;
  AttentionShape shape_;
  int max_context_ = 0;
  size_t n_params_ = 0, linear_params_ = 0;
  std::unique_ptr<KvCache> cache_;
  // Scratch activations for up to opts_.max_batch_tokens tokens.
  std::unique_ptr<DeviceBuffer> x_, xn_, qkv_, attn_, attn_out_, mlp_in_, gu_, act_, mlp_out_, logits_;
  std::set<int> decode_sizes_seen_;   // batch sizes of decode steps run eagerly once (recordable now)
  std::set<int> unrecordable_sizes_;  // batch sizes whose recording the backend refused
};

// Inverse rotary frequencies (head_dim/2) with the config's scaling (none, linear, llama3),
// computed in fp32 exactly as transformers does.
std::vector<float> rope_inv_freq(const ModelConfig& cfg);

}  // namespace lowbit
