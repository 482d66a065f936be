#include "model/model.h"

#include <algorithm>
#include <cmath>
#include <optional>
#include <set>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "core/error.h"
#include "core/progress.h"
#include "io/safetensors.h"

namespace lowbit {

namespace {

// Hugging Face tensor names of one architecture.
struct TensorNames {
  std::string embedding, final_norm, head;
  std::string layer(int i, const std::string& leaf) const { return fmt::format(fmt::runtime(layer_prefix), i) + leaf; }
  std::string layer_prefix;
};

TensorNames names_for(const ModelConfig& cfg) {
  if (cfg.arch == Arch::Llama) return {"model.embed_tokens.weight", "model.norm", "lm_head.weight", "model.layers.{}."};
  return {"transformer.word_embeddings.weight", "transformer.ln_f", "lm_head.weight", "transformer.h.{}."};
}

// The checkpoint prefixes of layer i's norms; `mlp` is empty when the MLP shares the attention's.
struct LayerNormNames {
  std::string attn, mlp;
};
LayerNormNames layer_norm_names(const ModelConfig& cfg, const TensorNames& nm, int i) {
  if (!cfg.parallel_attention) return {nm.layer(i, "input_layernorm"), nm.layer(i, "post_attention_layernorm")};
  if (cfg.mlp_has_norm) return {nm.layer(i, "ln_attn"), nm.layer(i, "ln_mlp")};
  return {nm.layer(i, "input_layernorm"), ""};
}

// Loads tensors from the store, checking shapes, and uploads them in the chosen format. Tracks
// which tensors were used so that leftovers can be reported.
class WeightLoader {
 public:
  WeightLoader(const WeightStore& store, Backend& backend, const LoadOptions& opts, size_t total)
      : store_(store), backend_(backend), opts_(opts) {
    if (opts.progress) progress_.emplace("loading " + store.dir(), total, "tensors");
  }

  // NaN or Inf in a weight is refused: quantizers would turn it into a finite code and the model
  // would generate plausible garbage, a silently wrong answer.
  std::vector<float> read(const std::string& name, const std::vector<int64_t>& shape) {
    used_.insert(name);
    progress();
    const TensorInfo& info = store_.get(name, shape);
    std::vector<float> values = to_f32(info);
    for (size_t i = 0; i < values.size(); ++i)
      if (!std::isfinite(values[i]))
        throw InputError(fmt::format("{}: tensor '{}' holds {} at element {}", info.file, name,
                                     std::isnan(values[i]) ? "NaN" : "Inf", i));
    return values;
  }
  std::vector<float> read_optional(const std::string& name, const std::vector<int64_t>& shape, bool present) {
    if (!present) return {};
    return read(name, shape);
  }
  bool has(const std::string& name) const { return store_.has(name); }

  std::unique_ptr<DeviceLinear> linear(std::vector<float> w, int64_t rows, int64_t cols, Format f,
                                       std::vector<float> bias = {}) {
    n_params_ += size_t(rows * cols);
    return backend_.upload_quantizing(f, {HostWeightPart{w.data(), rows, {}}}, cols, opts_.quant, std::move(bias));
  }
  // One layer from several checkpoint tensors (Llama's q, k, v or gate, up), stacked by rows;
  // each is quantized on its own, as transformers + bitsandbytes quantize each nn.Linear.
  std::unique_ptr<DeviceLinear> stacked_linear(std::initializer_list<const std::vector<float>*> weights, int64_t cols,
                                               Format f, std::vector<float> bias) {
    std::vector<HostWeightPart> parts;
    for (const auto* w : weights) {
      parts.push_back({w->data(), int64_t(w->size()) / cols, {}});
      n_params_ += w->size();
    }
    return backend_.upload_quantizing(f, parts, cols, opts_.quant, std::move(bias));
  }
  // One checkpoint tensor whose row r becomes output row row_order[r] (Falcon's fused QKV):
  // quantized in the checkpoint's row order, the rows placed after quantization.
  std::unique_ptr<DeviceLinear> reordered_linear(const std::vector<float>& w, int64_t rows, int64_t cols, Format f,
                                                 std::vector<int32_t> row_order, std::vector<float> bias) {
    n_params_ += size_t(rows * cols);
    return backend_.upload_quantizing(f, {HostWeightPart{w.data(), rows, std::move(row_order)}}, cols, opts_.quant,
                                      std::move(bias));
  }
  std::unique_ptr<DeviceNorm> norm(const std::string& prefix, int64_t dim, bool with_bias) {
    auto w = read(prefix + ".weight", {dim});
    auto b = read_optional(prefix + ".bias", {dim}, with_bias);
    n_params_ += w.size() + b.size();
    return backend_.upload_norm(std::move(w), std::move(b));
  }

  void check_all_used(const std::string& what) const {
    for (const auto& name : store_.names()) {
      if (used_.count(name)) continue;
      if (name.find("rotary_emb.inv_freq") != std::string::npos) continue;  // buffer saved by old checkpoints
      throw InputError(fmt::format("{}: unexpected tensor '{}' (not part of {})", store_.dir(), name, what));
    }
  }
  void mark_used(const std::string& name) { used_.insert(name); }
  void count_params(size_t n) { n_params_ += n; }
  size_t n_params() const { return n_params_; }
  void finish() {
    if (progress_) progress_->clear();
  }

 private:
  void progress() {
    if (progress_) progress_->advance();
  }
  const WeightStore& store_;
  Backend& backend_;
  const LoadOptions& opts_;
  std::set<std::string> used_;
  size_t n_params_ = 0;
  std::optional<Progress> progress_;  // a bar on a terminal, periodic log lines otherwise
};

// Concatenates row blocks (each [rows_i, cols]) into one [sum rows, cols] matrix.
std::vector<float> concat_rows(std::initializer_list<const std::vector<float>*> parts) {
  std::vector<float> out;
  for (const auto* p : parts) out.insert(out.end(), p->begin(), p->end());
  return out;
}

// Where each row of Falcon's fused query_key_value goes in lowbit's [q heads | k heads | v heads]
// order: result[checkpoint row] = output row.
//  per_kv_group: per kv group g: (n_heads/n_kv) q heads, then k_g, then v_g;
//  stacked: already [q heads | k | v];
//  per_head: per head h: q_h, k_h, v_h (view (n_heads, 3, head_dim)).
std::vector<int32_t> falcon_qkv_row_order(const ModelConfig& cfg) {
  const int hd = cfg.head_dim, nh = cfg.n_heads, nkv = cfg.n_kv_heads;
  std::vector<int> src_head_rows;  // source head index (in head_dim rows) for each destination head
  std::vector<int> q(static_cast<size_t>(nh)), k(static_cast<size_t>(nkv)), v(static_cast<size_t>(nkv));
  if (cfg.qkv_layout == QkvLayout::per_kv_group) {
    int r = nh / nkv;
    for (int g = 0; g < nkv; ++g) {
      for (int j = 0; j < r; ++j) q[size_t(g * r + j)] = g * (r + 2) + j;
      k[size_t(g)] = g * (r + 2) + r;
      v[size_t(g)] = g * (r + 2) + r + 1;
    }
  } else if (cfg.qkv_layout == QkvLayout::stacked) {
    for (int h = 0; h < nh; ++h) q[size_t(h)] = h;
    k[0] = nh;
    v[0] = nh + 1;
  } else {
    for (int h = 0; h < nh; ++h) {
      q[size_t(h)] = 3 * h;
      k[size_t(h)] = 3 * h + 1;
      v[size_t(h)] = 3 * h + 2;
    }
  }
  for (auto* list : {&q, &k, &v}) src_head_rows.insert(src_head_rows.end(), list->begin(), list->end());
  std::vector<int32_t> order(src_head_rows.size() * size_t(hd));
  for (size_t dst = 0; dst < src_head_rows.size(); ++dst)
    for (int i = 0; i < hd; ++i) order[size_t(src_head_rows[dst]) * size_t(hd) + size_t(i)] = int32_t(dst * size_t(hd) + size_t(i));
  return order;
}

// The identity order (stacked checkpoints are already [q | k | v]) is no order at all.
std::vector<int32_t> unless_identity(std::vector<int32_t> order) {
  for (size_t i = 0; i < order.size(); ++i)
    if (order[i] != int32_t(i)) return order;
  return {};
}

// values[order[r]] = checkpoint values[r] (the bias of a reordered layer: fp32, moved exactly).
std::vector<float> in_output_order(const std::vector<float>& values, const std::vector<int32_t>& order) {
  if (order.empty() || values.empty()) return values;
  std::vector<float> out(values.size());
  for (size_t r = 0; r < order.size(); ++r) out[size_t(order[r])] = values[r];
  return out;
}

}  // namespace

Model::Model(ModelConfig cfg, Backend& backend, LoadOptions opts)
    : config_(std::move(cfg)), backend_(backend), opts_(opts) {
  shape_ = {config_.n_heads, config_.n_kv_heads, config_.head_dim};
  max_context_ = opts_.max_context > 0 ? opts_.max_context : config_.max_position_embeddings;
}

std::unique_ptr<Model> Model::load(const std::string& dir, Backend& backend, const LoadOptions& opts) {
  ModelConfig cfg = load_config(dir);
  std::unique_ptr<Model> m(new Model(cfg, backend, opts));
  WeightStore store = WeightStore::open_dir(dir);
  WeightLoader ld(store, backend, opts, store.names().size());
  const TensorNames nm = names_for(cfg);
  const int64_t dim = cfg.hidden_size, hidden = cfg.intermediate_size, vocab = cfg.vocab_size;
  const int64_t qd = cfg.q_dim(), kvd = cfg.kv_dim();
  // Embeddings and norms stay 16-bit (fp32 under --quant f32); linears take the chosen format.
  const Format small = opts.format == Format::F32 ? Format::F32 : Format::BF16;
  const Format fmt_ = opts.format;
  const bool is_llama = cfg.arch == Arch::Llama;
  const bool norm_bias = cfg.norm == NormKind::LayerNorm;

  // Tensor by tensor from the mmap: each is converted to fp32, quantized, uploaded and freed, so
  // peak host memory is about one unquantized tensor (q/k/v or gate/up: one fused group) plus
  // the quantized model. The embedding comes last because a tied head quantizes it too.
  // Every checkpoint tensor is quantized on its own in the checkpoint's layout, as transformers +
  // bitsandbytes quantize each nn.Linear: q/k/v and gate/up are parts of one layer (stacked_linear)
  // and Falcon's query_key_value keeps its row order, its rows placed after quantization.
  for (int i = 0; i < cfg.n_layers; ++i) {
    LayerWeights L;
    const LayerNormNames norms = layer_norm_names(cfg, nm, i);
    L.attn_norm = ld.norm(norms.attn, dim, norm_bias);
    if (!norms.mlp.empty()) L.mlp_norm = ld.norm(norms.mlp, dim, norm_bias);
    if (is_llama) {
      const bool ab = cfg.attention_bias, mb = cfg.mlp_bias;
      auto q = ld.read(nm.layer(i, "self_attn.q_proj.weight"), {qd, dim});
      auto k = ld.read(nm.layer(i, "self_attn.k_proj.weight"), {kvd, dim});
      auto v = ld.read(nm.layer(i, "self_attn.v_proj.weight"), {kvd, dim});
      auto qb = ld.read_optional(nm.layer(i, "self_attn.q_proj.bias"), {qd}, ab);
      auto kb = ld.read_optional(nm.layer(i, "self_attn.k_proj.bias"), {kvd}, ab);
      auto vb = ld.read_optional(nm.layer(i, "self_attn.v_proj.bias"), {kvd}, ab);
      L.wqkv = ld.stacked_linear({&q, &k, &v}, dim, fmt_, concat_rows({&qb, &kb, &vb}));
      L.wo = ld.linear(ld.read(nm.layer(i, "self_attn.o_proj.weight"), {dim, qd}), dim, qd, fmt_,
                       ld.read_optional(nm.layer(i, "self_attn.o_proj.bias"), {dim}, ab));
      auto gate = ld.read(nm.layer(i, "mlp.gate_proj.weight"), {hidden, dim});
      auto up = ld.read(nm.layer(i, "mlp.up_proj.weight"), {hidden, dim});
      auto gb = ld.read_optional(nm.layer(i, "mlp.gate_proj.bias"), {hidden}, mb);
      auto ub = ld.read_optional(nm.layer(i, "mlp.up_proj.bias"), {hidden}, mb);
      L.w_up = ld.stacked_linear({&gate, &up}, dim, fmt_, concat_rows({&gb, &ub}));
      L.w_down = ld.linear(ld.read(nm.layer(i, "mlp.down_proj.weight"), {dim, hidden}), dim, hidden, fmt_,
                           ld.read_optional(nm.layer(i, "mlp.down_proj.bias"), {dim}, mb));
    } else {
      const bool b = cfg.linear_bias;
      const int64_t qkv_rows = qd + 2 * kvd;
      auto qkv = ld.read(nm.layer(i, "self_attention.query_key_value.weight"), {qkv_rows, dim});
      auto qkv_b = ld.read_optional(nm.layer(i, "self_attention.query_key_value.bias"), {qkv_rows}, b);
      std::vector<int32_t> order = unless_identity(falcon_qkv_row_order(cfg));
      auto bias = in_output_order(qkv_b, order);
      L.wqkv = ld.reordered_linear(qkv, qkv_rows, dim, fmt_, std::move(order), std::move(bias));
      L.wo = ld.linear(ld.read(nm.layer(i, "self_attention.dense.weight"), {dim, qd}), dim, qd, fmt_,
                       ld.read_optional(nm.layer(i, "self_attention.dense.bias"), {dim}, b));
      L.w_up = ld.linear(ld.read(nm.layer(i, "mlp.dense_h_to_4h.weight"), {hidden, dim}), hidden, dim, fmt_,
                         ld.read_optional(nm.layer(i, "mlp.dense_h_to_4h.bias"), {hidden}, b));
      L.w_down = ld.linear(ld.read(nm.layer(i, "mlp.dense_4h_to_h.weight"), {dim, hidden}), dim, hidden, fmt_,
                           ld.read_optional(nm.layer(i, "mlp.dense_4h_to_h.bias"), {dim}, b));
    }
    m->w_.layers.push_back(std::move(L));
  }
  m->w_.final_norm = ld.norm(nm.final_norm, dim, norm_bias);

  // Output head: its own tensor, or the embedding when tied (transformers ties them and then
  // ignores a saved lm_head.weight).
  const Format head_format = opts.keep_head ? small : fmt_;
  auto emb = ld.read(nm.embedding, {vocab, dim});
  m->w_.embedding = backend.upload_quantizing(small, {HostWeightPart{emb.data(), vocab, {}}}, dim, opts.quant, {});
  if (cfg.tie_word_embeddings) {
    if (ld.has(nm.head)) ld.mark_used(nm.head);
    if (head_format == small) {
      // The same bytes as the embedding table: share it instead of holding a second copy.
      m->w_.head = m->w_.embedding;
      ld.count_params(size_t(vocab * dim));
    } else {
      m->w_.head = ld.linear(emb, vocab, dim, head_format);
    }
  } else {
    m->w_.head = ld.linear(ld.read(nm.head, {vocab, dim}), vocab, dim, head_format);
  }
  ld.check_all_used(fmt::format("a {} model with {} layers", cfg.model_type, cfg.n_layers));
  ld.finish();
  // ld counted the head (which is the embedding when tied) and norms; an untied embedding is extra.
  m->n_params_ = ld.n_params() + (cfg.tie_word_embeddings ? 0 : size_t(vocab * dim));
  for (const auto& L : m->w_.layers)
    for (const auto* l : {L.wqkv.get(), L.wo.get(), L.w_up.get(), L.w_down.get()})
      m->linear_params_ += size_t(l->rows() * l->cols());
  backend.set_rope(rope_inv_freq(cfg));
  m->cache_ = backend.alloc_kv_cache(cfg.n_layers, opts.n_slots, m->max_context_, int(kvd), opts.kv_cache);
  m->allocate_scratch();
  return m;
}

WeightPlan Model::plan(const std::string& dir, const LoadOptions& opts) {
  const ModelConfig cfg = load_config(dir);
  const WeightStore store = WeightStore::open_dir(dir);
  const TensorNames nm = names_for(cfg);
  const int64_t dim = cfg.hidden_size, hidden = cfg.intermediate_size, vocab = cfg.vocab_size;
  const int64_t qd = cfg.q_dim(), kvd = cfg.kv_dim();
  const Format small = opts.format == Format::F32 ? Format::F32 : Format::BF16;
  const bool norm_bias = cfg.norm == NormKind::LayerNorm;
  WeightPlan p;
  // A linear layer as the backend holds it (formats/format.h): each part quantized on its own;
  // the row-wise formats stack their parts (row maps applied), the blockwise 4-bit ones keep
  // them and an int32 row map per reordered part; biases fp32.
  auto linear = [&](std::initializer_list<std::pair<std::string, int64_t>> parts, int64_t cols, Format f,
                    bool bias, bool reordered) {
    size_t bytes = 0;
    int64_t rows = 0;
    for (const auto& [name, part_rows] : parts) {
      store.get(name, {part_rows, cols});
      bytes += quantized_bytes(f, part_rows, cols, opts.quant);
      if (reordered && !quantizes_rows_independently(f)) bytes += 4 * size_t(part_rows);
      rows += part_rows;
    }
    if (bias) bytes += 4 * size_t(rows);
    p.n_params += size_t(rows * cols);
    p.linear_params += size_t(rows * cols);
    return bytes;
  };
  auto bias_check = [&](const std::string& name, int64_t n, bool present) {
    if (present) store.get(name, {n});
  };
  auto norm = [&](const std::string& prefix, bool with_bias) {
    store.get(prefix + ".weight", {dim});
    if (with_bias) store.get(prefix + ".bias", {dim});
    const size_t n = size_t(dim) * (with_bias ? 2 : 1);
    p.n_params += n;
    p.norm_bytes += 4 * n;
  };
  for (int i = 0; i < cfg.n_layers; ++i) {
    const Format f = opts.format;
    const LayerNormNames norms = layer_norm_names(cfg, nm, i);
    norm(norms.attn, norm_bias);
    if (!norms.mlp.empty()) norm(norms.mlp, norm_bias);
    if (cfg.arch == Arch::Llama) {
      const bool ab = cfg.attention_bias, mb = cfg.mlp_bias;
      for (const auto& [leaf, n] : {std::pair{"q_proj", qd}, {"k_proj", kvd}, {"v_proj", kvd}, {"o_proj", dim}})
        bias_check(nm.layer(i, fmt::format("self_attn.{}.bias", leaf)), n, ab);
      for (const auto& [leaf, n] : {std::pair{"gate_proj", hidden}, {"up_proj", hidden}, {"down_proj", dim}})
        bias_check(nm.layer(i, fmt::format("mlp.{}.bias", leaf)), n, mb);
      p.linear_bytes += linear({{nm.layer(i, "self_attn.q_proj.weight"), qd},
                                {nm.layer(i, "self_attn.k_proj.weight"), kvd},
                                {nm.layer(i, "self_attn.v_proj.weight"), kvd}},
                               dim, f, ab, false);
      p.linear_bytes += linear({{nm.layer(i, "self_attn.o_proj.weight"), dim}}, qd, f, ab, false);
      p.linear_bytes += linear({{nm.layer(i, "mlp.gate_proj.weight"), hidden}, {nm.layer(i, "mlp.up_proj.weight"), hidden}},
                               dim, f, mb, false);
      p.linear_bytes += linear({{nm.layer(i, "mlp.down_proj.weight"), dim}}, hidden, f, mb, false);
    } else {
      const bool b = cfg.linear_bias;
      const int64_t qkv_rows = qd + 2 * kvd;
      bias_check(nm.layer(i, "self_attention.query_key_value.bias"), qkv_rows, b);
      bias_check(nm.layer(i, "self_attention.dense.bias"), dim, b);
      bias_check(nm.layer(i, "mlp.dense_h_to_4h.bias"), hidden, b);
      bias_check(nm.layer(i, "mlp.dense_4h_to_h.bias"), dim, b);
      const bool reordered = !unless_identity(falcon_qkv_row_order(cfg)).empty();
      p.linear_bytes += linear({{nm.layer(i, "self_attention.query_key_value.weight"), qkv_rows}}, dim, f, b, reordered);
      p.linear_bytes += linear({{nm.layer(i, "self_attention.dense.weight"), dim}}, qd, f, b, false);
      p.linear_bytes += linear({{nm.layer(i, "mlp.dense_h_to_4h.weight"), hidden}}, dim, f, b, false);
      p.linear_bytes += linear({{nm.layer(i, "mlp.dense_4h_to_h.weight"), dim}}, hidden, f, b, false);
    }
  }
  norm(nm.final_norm, norm_bias);
  p.head_format = opts.keep_head ? small : opts.format;
  store.get(nm.embedding, {vocab, dim});
  p.embedding_bytes = quantized_bytes(small, vocab, dim, opts.quant);
  p.n_params += size_t(vocab * dim);
  if (cfg.tie_word_embeddings) {
    p.head_shares_embedding = p.head_format == small;
    p.head_bytes = p.head_shares_embedding ? 0 : quantized_bytes(p.head_format, vocab, dim, opts.quant);
  } else {
    store.get(nm.head, {vocab, dim});
    p.head_bytes = quantized_bytes(p.head_format, vocab, dim, opts.quant);
    p.n_params += size_t(vocab * dim);
  }
  p.weight_bytes = p.linear_bytes + p.embedding_bytes + p.head_bytes + p.norm_bytes;
  return p;
}

void Model::allocate_scratch() {
  const size_t n = size_t(opts_.max_batch_tokens);
  const size_t dim = size_t(config_.hidden_size), hidden = size_t(config_.intermediate_size);
  const size_t gu = config_.activation == Activation::SwiGLU ? 2 * hidden : hidden;
  x_ = backend_.alloc(n * dim, "the residual stream");
  xn_ = backend_.alloc(n * dim, "normed activations");
  qkv_ = backend_.alloc(n * size_t(shape_.qkv_dim()), "q/k/v activations");
  attn_ = backend_.alloc(n * size_t(shape_.q_dim()), "attention output");
  attn_out_ = backend_.alloc(n * dim, "attention projection");
  mlp_in_ = backend_.alloc(n * dim, "MLP input");
  gu_ = backend_.alloc(n * gu, "MLP up projection");
  act_ = backend_.alloc(n * hidden, "MLP activation");
  mlp_out_ = backend_.alloc(n * dim, "MLP output");
  logits_ = backend_.alloc(n * size_t(config_.vocab_size), "logits");
}

Model::~Model() { backend_.drop_recordings(this); }

void Model::check_rows(const TokenBatch& batch, const std::vector<int>& logit_rows) const {
  for (int r : logit_rows)
    if (r < 0 || r >= batch.size()) throw InputError(fmt::format("logit row {} outside batch of {}", r, batch.size()));
}

namespace {
// The chunk [begin, end) of a batch.
TokenBatch slice(const TokenBatch& batch, int begin, int end) {
  TokenBatch part;
  part.tokens.assign(batch.tokens.begin() + begin, batch.tokens.begin() + end);
  part.positions.assign(batch.positions.begin() + begin, batch.positions.begin() + end);
  part.slots.assign(batch.slots.begin() + begin, batch.slots.begin() + end);
  return part;
}

// A decode step: every row wanted, in order, one token per distinct slot. Its shape depends
// only on its size, so one recording per size serves every later step.
bool is_decode_step(const TokenBatch& batch, const std::vector<int>& logit_rows) {
  if (int(logit_rows.size()) != batch.size()) return false;
  for (size_t i = 0; i < logit_rows.size(); ++i)
    if (logit_rows[i] != int(i)) return false;
  std::set<int32_t> slots(batch.slots.begin(), batch.slots.end());
  return int(slots.size()) == batch.size();
}
}  // namespace

void Model::forward(const TokenBatch& batch, const std::vector<int>& logit_rows, float* logits) {
  check_rows(batch, logit_rows);
  const int chunk = opts_.max_batch_tokens;
  const size_t vocab = size_t(config_.vocab_size);
  for (int begin = 0; begin < batch.size(); begin += chunk) {
    const int end = std::min(batch.size(), begin + chunk);
    std::vector<int> rows;
    std::vector<size_t> out_index;
    for (size_t i = 0; i < logit_rows.size(); ++i)
      if (logit_rows[i] >= begin && logit_rows[i] < end) {
        rows.push_back(logit_rows[i] - begin);
        out_index.push_back(i);
      }
    forward_chunk(slice(batch, begin, end), rows, [&](const DeviceBuffer& device_logits) {
      std::vector<float> part(rows.size() * vocab);
      backend_.download(device_logits, 0, part.size(), part.data());
      for (size_t i = 0; i < rows.size(); ++i)
        std::copy_n(part.begin() + std::ptrdiff_t(i * vocab), vocab, logits + out_index[i] * vocab);
    });
  }
}

std::vector<int32_t> Model::forward_sample(const TokenBatch& batch, const std::vector<int>& logit_rows,
                                           std::span<const SampleSpec> specs) {
  check_rows(batch, logit_rows);
  if (specs.size() != logit_rows.size())
    throw InputError(fmt::format("forward_sample: {} sampling specs for {} rows", specs.size(), logit_rows.size()));
  const int chunk = opts_.max_batch_tokens;
  const int last_begin = batch.size() == 0 ? 0 : (batch.size() - 1) / chunk * chunk;
  const int vocab = config_.vocab_size;
  std::vector<int32_t> ids(logit_rows.size(), -1);
  if (std::any_of(logit_rows.begin(), logit_rows.end(), [&](int r) { return r < last_begin; })) {
    // Rows in an earlier chunk (a long batch sampled in the middle): logits through the host.
    std::vector<float> logits(logit_rows.size() * size_t(vocab));
    forward(batch, logit_rows, logits.data());
    for (size_t i = 0; i < logit_rows.size(); ++i)
      ids[i] = sample_token(std::span<const float>(logits.data() + i * size_t(vocab), size_t(vocab)), specs[i].params,
                            specs[i].history, specs[i].step);
    return ids;
  }
  for (int begin = 0; begin < last_begin; begin += chunk) forward_chunk(slice(batch, begin, begin + chunk), {}, {});
  std::vector<int> rows;
  for (int r : logit_rows) rows.push_back(r - last_begin);
  forward_chunk(slice(batch, last_begin, batch.size()), rows, [&](const DeviceBuffer& device_logits) {
    for (size_t i = 0; i < rows.size(); ++i)
      ids[i] = backend_.sample(device_logits, i, vocab, specs[i].params, specs[i].history, specs[i].step);
  });
  return ids;
}

void Model::forward_chunk(const TokenBatch& batch, const std::vector<int>& logit_rows, const LogitsConsumer& consume) {
  Backend& be = backend_;
  const int n = batch.size();
  // Checked here as well as in the embedding and attention ops, which a replayed recording does
  // not re-enter (a position past the cache would be written out of bounds).
  for (int32_t id : batch.tokens)
    if (id < 0 || id >= config_.vocab_size)
      throw InputError(fmt::format("token id {} is outside the vocabulary (size {})", id, config_.vocab_size));
  for (int t = 0; t < n; ++t) {
    const int pos = batch.positions[size_t(t)], slot = batch.slots[size_t(t)];
    if (pos < 0 || pos >= max_context_ || slot < 0 || slot >= opts_.n_slots)
      throw InputError(fmt::format("position {} of slot {} is outside the KV cache ({} slots x {} positions)", pos,
                                   slot, opts_.n_slots, max_context_));
  }
  const bool recordable = be.can_record() && is_decode_step(batch, logit_rows) && !unrecordable_sizes_.count(n);
  // The one upload of this forward's tokens, positions and slots: the ops (and a recording, which
  // reads them from where set_batch puts them) all use it.
  be.set_batch(batch);
  bool done = false;
  if (recordable && be.has_recording(this, n)) {
    be.replay(this, n);
    done = true;
  } else if (recordable && decode_sizes_seen_.count(n)) {
    // Second decode step of this size: every buffer it needs exists now, so record it. A
    // recording the device refuses (DeviceError) costs speed, not the run: the step runs eagerly
    // and this size is never recorded again.
    try {
      be.begin_recording(this, n);
      try {
        run_ops(logit_rows);
      } catch (...) {
        be.abort_recording();
        throw;
      }
      be.end_recording();
      be.replay(this, n);
      done = true;
    } catch (const DeviceError& e) {
      unrecordable_sizes_.insert(n);
      spdlog::warn("decode steps of batch size {} run without a recorded graph: {}", n, e.what());
    }
  }
  if (!done) {
    run_ops(logit_rows);
    if (recordable) decode_sizes_seen_.insert(n);
  }
  if (!logit_rows.empty()) consume(*logits_);
}

// One pre-norm decoder layer per iteration (ModelConfig::parallel_attention, mlp_has_norm):
//   sequential (Llama, Falcon without parallel_attn):  x += attn(norm1(x)); x += mlp(norm2(x))
//   parallel (Falcon 7B, one LayerNorm):                 h = norm1(x); x += attn(h) + mlp(h)
//   parallel, two LayerNorms (Falcon 40B):              x += attn(ln_attn(x)) + mlp(ln_mlp(x))
void Model::run_ops(const std::vector<int>& logit_rows) {
  Backend& be = backend_;
  const ModelConfig& c = config_;
  const int dim = c.hidden_size, hidden = c.intermediate_size;
  const float eps = c.norm_eps;
  // Each linear with the steps around it (Backend::linear: the CPU runs them one by one, CUDA
  // decode steps fuse them into the GEMV); xn_, gu_, attn_out_ and mlp_out_ are where a backend
  // that runs the steps apart puts the intermediate values.
  auto normed = [&](const DeviceNorm& w, DeviceBuffer& scratch) {
    Backend::LinearSteps s;
    s.norm = &w;
    s.norm_kind = c.norm;
    s.norm_eps = eps;
    s.normed = &scratch;
    return s;
  };
  auto activated = [&](Backend::LinearSteps s) {
    s.activate = true;
    s.act = c.activation;
    s.hidden = hidden;
    s.pre = gu_.get();
    return s;
  };
  auto added = [](DeviceBuffer& scratch) {
    Backend::LinearSteps s;
    s.accumulate = true;
    s.pre = &scratch;
    return s;
  };
  be.embed(*w_.embedding, *x_);
  for (int l = 0; l < c.n_layers; ++l) {
    const LayerWeights& L = w_.layers[size_t(l)];
    be.linear(*L.wqkv, *x_, *qkv_, normed(*L.attn_norm, *xn_));
    be.rope_attention(*qkv_, *cache_, l, shape_, *attn_);
    if (!c.parallel_attention) {
      be.linear(*L.wo, *attn_, *x_, added(*attn_out_));
      be.linear(*L.w_up, *x_, *act_, activated(normed(*L.mlp_norm, *mlp_in_)));
      be.linear(*L.w_down, *act_, *x_, added(*mlp_out_));
      continue;
    }
    // Parallel: both branches read the layer's input, so the MLP's first linear runs before the
    // attention output is added; the adds keep their order (x + attention, then + MLP).
    be.linear(*L.w_up, *x_, *act_, activated(normed(c.mlp_has_norm ? *L.mlp_norm : *L.attn_norm, *mlp_in_)));
    be.linear(*L.wo, *attn_, *x_, added(*attn_out_));
    be.linear(*L.w_down, *act_, *x_, added(*mlp_out_));
  }
  // Only the rows whose logits are wanted go through the final norm and the head.
  if (logit_rows.empty()) return;
  be.head(*x_, logit_rows, *w_.final_norm, c.norm, eps, dim, *w_.head, *xn_, *mlp_in_, *logits_);
}

size_t Model::weight_bytes() const {
  size_t total = w_.embedding->bytes() + (head_shares_embedding() ? 0 : w_.head->bytes()) + linear_bytes() +
                 w_.final_norm->bytes();
  for (const auto& L : w_.layers) total += L.attn_norm->bytes() + (L.mlp_norm ? L.mlp_norm->bytes() : 0);
  return total;
}

size_t Model::linear_bytes() const {
  size_t total = 0;
  for (const auto& L : w_.layers)
    for (const auto* l : {L.wqkv.get(), L.wo.get(), L.w_up.get(), L.w_down.get()}) total += l->bytes();
  return total;
}

}  // namespace lowbit
