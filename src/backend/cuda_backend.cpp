#include "backend/cuda_backend.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string_view>

#include <fmt/format.h>

#include "core/error.h"
#include "kernels/attention.cuh"
#include "kernels/elementwise.cuh"
#include "kernels/embedding.cuh"
#include "kernels/gemv.cuh"
#include "kernels/gemv_fp8.cuh"
#include "kernels/gemv_int8.cuh"
#include "kernels/norm.cuh"
#include "kernels/rope.cuh"
#include "kernels/sampling.cuh"

namespace lowbit {

// One checkpoint tensor of a quantized layer: its planes, and where its rows go (first_row +
// out_rows[r], out_rows empty = in order; the kernels read it as QuantizedWeightView::out_rows).
struct CudaWeightPart {
  DeviceQuantizedPlanes planes;
  DeviceMemory out_rows;  // int32 [planes.rows] or empty
  int64_t first_row = 0;
  size_t bytes() const { return planes.bytes() + out_rows.bytes(); }
};

size_t parts_bytes(const std::vector<CudaWeightPart>& parts) {
  size_t total = 0;
  for (const auto& p : parts) total += p.bytes();
  return total;
}

// Every format alike: `parts` (cuda_quantized.h planes; F32 / BF16 keep their fp32 / bf16 values
// in the codes plane, [rows, cols] row-major). One part unless the format is blockwise 4-bit and
// the layer was made of several checkpoint tensors. bias: rows fp32 (output row order) or empty.
class CudaLinear final : public DeviceLinear {
 public:
  CudaLinear(int64_t rows, int64_t cols, Format f, std::vector<CudaWeightPart> p, DeviceMemory b)
      : DeviceLinear(rows, cols, f, parts_bytes(p) + b.bytes()), bias(std::move(b)), parts(std::move(p)) {}
  const float* bias_or_null() const { return bias.bytes() > 0 ? bias.as<float>() : nullptr; }
  bool quantized() const { return format() != Format::F32 && format() != Format::BF16; }
  // The codes of a one-part weight (F32 / BF16 values, int8 rows, ...).
  const void* codes() const { return parts.front().planes.codes.get(); }
  DeviceMemory bias;
  std::vector<CudaWeightPart> parts;
};

namespace {

class CudaBuffer final : public DeviceBuffer {
 public:
  CudaBuffer(size_t n, DeviceMemory mem) : DeviceBuffer(n), memory(std::move(mem)) {}
  float* data() const { return memory.as<float>(); }
  DeviceMemory memory;
};

class CudaNorm final : public DeviceNorm {
 public:
  CudaNorm(DeviceMemory w, DeviceMemory b, size_t dim)
      : DeviceNorm(w.bytes() + b.bytes()), weight(std::move(w)), bias(std::move(b)), dim(dim) {}
  const float* bias_or_null() const { return bias.bytes() > 0 ? bias.as<float>() : nullptr; }
  DeviceMemory weight, bias;
  size_t dim;
};

// K and V of every layer, fp32 [layer][slot][position][kv_dim] (kernels/attention.cuh), the
// CPU oracle's layout. fp32 keeps --quant f32 exact; at decode the weights, not the cache,
// dominate the bytes read for contexts up to a few thousand tokens.
class CudaKvCache final : public KvCache {
 public:
  CudaKvCache(int n_layers, int n_slots, int max_context, int kv_dim, KvDtype dtype, DeviceMemory k, DeviceMemory v)
      : KvCache(n_slots, max_context, dtype), n_layers(n_layers), kv_dim(kv_dim), keys(std::move(k)),
        values(std::move(v)) {}
  size_t element_bytes() const { return dtype_ == KvDtype::bf16 ? 2 : sizeof(float); }
  // Byte offset of a layer's [slot][position][kv_dim] block.
  size_t layer_offset(int layer) const {
    return size_t(layer) * n_slots_ * size_t(max_context_) * kv_dim * element_bytes();
  }
  int n_layers, kv_dim;
  DeviceMemory keys, values;
};

float* data(DeviceBuffer& b) { return static_cast<CudaBuffer&>(b).data(); }
const float* data(const DeviceBuffer& b) { return static_cast<const CudaBuffer&>(b).data(); }

void require_floats(const DeviceBuffer& b, size_t n, const char* op, const char* which) {
  if (b.size() < n)
    throw DeviceError(fmt::format("cuda {}: {} holds {} floats, the batch needs {}", op, which, b.size(), n));
}

constexpr size_t kStagingSlots = 4;

// A kill switch read from the environment: on unless the variable is set to "0".
bool env_switch_on(const char* name) {
  const char* v = std::getenv(name);
  return v == nullptr || std::string_view(v) != "0";
}

}  // namespace

// A pinned host buffer a batch upload is copied from, with the event that marks the copy done:
// the host writes a slot again only after its previous copy has left it. The model uploads one
// batch per forward; a ring of a few slots lets the next forward's upload be staged while an
// earlier copy may still be in flight (a forward whose results stay on the device, say).
struct CudaBackend::StagingSlot {
  PinnedMemory host;
  cudaEvent_t copied = nullptr;
};

CudaBackend::CudaBackend(const CudaContextOptions& opts) : ctx_(opts), fuse_(env_switch_on("LOWBIT_CUDA_FUSE")) {
  staging_.resize(kStagingSlots);
  for (auto& s : staging_) LOWBIT_CUDA_CHECK(cudaEventCreateWithFlags(&s.copied, cudaEventDisableTiming));
}

CudaBackend::~CudaBackend() {
  cudaStreamSynchronize(ctx_.stream());
  for (auto& [key, g] : graphs_) cudaGraphExecDestroy(g.exec);
  for (auto& s : staging_)
    if (s.copied != nullptr) cudaEventDestroy(s.copied);
}

std::string CudaBackend::description() const {
  const cudaDeviceProp& p = ctx_.properties();
  return fmt::format("cuda: {}, sm_{}{}, {:.1f} GiB", p.name, p.major, p.minor,
                     double(p.totalGlobalMem) / double(size_t(1) << 30));
}

std::unique_ptr<DeviceBuffer> CudaBackend::alloc(size_t n_floats, const std::string& what) {
  if (capturing_batch_ > 0) throw DeviceError(fmt::format("cannot allocate {} while capturing a CUDA graph", what));
  return std::make_unique<CudaBuffer>(n_floats, ctx_.allocate(n_floats * sizeof(float), what));
}

DeviceMemory CudaBackend::bias_on_device(const std::vector<float>& bias, int64_t rows, const std::string& what) {
  if (!bias.empty() && int64_t(bias.size()) != rows)
    throw DeviceError(fmt::format("bias of {} values for a weight of {} rows", bias.size(), rows));
  DeviceMemory b = ctx_.allocate(bias.size() * sizeof(float), "a bias of " + what);
  if (!bias.empty())
    LOWBIT_CUDA_CHECK(cudaMemcpyAsync(b.get(), bias.data(), bias.size() * sizeof(float), cudaMemcpyHostToDevice,
                                      ctx_.stream()));
  return b;
}

DeviceMemory CudaBackend::row_order_on_device(const std::vector<int32_t>& order, const std::string& what) {
  DeviceMemory m = ctx_.allocate(order.size() * sizeof(int32_t), "the row order of " + what);
  if (!order.empty())
    LOWBIT_CUDA_CHECK(cudaMemcpyAsync(m.get(), order.data(), order.size() * sizeof(int32_t), cudaMemcpyHostToDevice,
                                      ctx_.stream()));
  ctx_.synchronize();  // pageable source
  return m;
}

std::unique_ptr<DeviceLinear> CudaBackend::upload_linear(LinearWeight layer, std::vector<float> bias) {
  // A row-wise format's parts become one tensor (exact), so only the blockwise 4-bit formats,
  // whose GEMV and dequantizer honour out_rows / out_stride, reach the kernels in parts.
  if (!layer.is_single() && quantizes_rows_independently(layer.format())) layer = LinearWeight(stack_rows(layer));
  const int64_t rows = layer.rows(), cols = layer.cols();
  const Format f = layer.format();
  const std::string shape = fmt::format("a {}x{} {} weight", rows, cols, format_name(f));
  if (quantized_kernels(f) == nullptr) throw DeviceError(fmt::format("format {} has no CUDA kernel yet", format_name(f)));
  DeviceMemory b = bias_on_device(bias, rows, shape);
  std::vector<CudaWeightPart> parts;
  int64_t first = 0;
  for (const WeightPart& p : layer.parts) {
    parts.push_back({upload_quantized_planes(ctx_, p.tensor, shape), row_order_on_device(p.row_order, shape), first});
    first += p.tensor.rows;
  }
  return std::make_unique<CudaLinear>(rows, cols, f, std::move(parts), std::move(b));
}

std::unique_ptr<DeviceLinear> CudaBackend::upload_quantizing(Format f, const std::vector<HostWeightPart>& parts,
                                                             int64_t cols, const QuantOptions& opts,
                                                             std::vector<float> bias) {
  static const bool on_device = env_switch_on("LOWBIT_GPU_QUANTIZE");
  if (!on_device || !is_blockwise_four_bit(f)) return Backend::upload_quantizing(f, parts, cols, opts, std::move(bias));
  // Each checkpoint tensor quantized on its own on the GPU (its own blocks, absmax, -dq offset).
  int64_t rows = 0;
  for (const HostWeightPart& p : parts) rows += p.rows;
  const std::string shape = fmt::format("a {}x{} {} weight", rows, cols, format_name(f));
  DeviceMemory b = bias_on_device(bias, rows, shape);
  std::vector<CudaWeightPart> device_parts;
  int64_t first = 0;
  for (const HostWeightPart& p : parts) {
    if (!p.row_order.empty() && int64_t(p.row_order.size()) != p.rows)
      throw InputError(fmt::format("a row order of {} entries for a part of {} rows", p.row_order.size(), p.rows));
    device_parts.push_back({quantize_four_bit_on_device(ctx_, f, p.values, p.rows, cols, opts),  // synchronizes
                            row_order_on_device(p.row_order, shape), first});
    first += p.rows;
  }
  return std::make_unique<CudaLinear>(rows, cols, f, std::move(device_parts), std::move(b));
}

QuantizedTensor CudaBackend::quantize_on_device(Format f, const float* host_weights, int64_t rows, int64_t cols,
                                                const QuantOptions& opts) {
  return download_quantized_planes(ctx_, quantize_four_bit_on_device(ctx_, f, host_weights, rows, cols, opts));
}

std::unique_ptr<DeviceLinear> CudaBackend::upload_quantized_on_device(Format f, const float* host_weights, int64_t rows,
                                                                      int64_t cols, const QuantOptions& opts,
                                                                      std::vector<float> bias) {
  DeviceMemory b = bias_on_device(bias, rows, fmt::format("a {}x{} {} weight", rows, cols, format_name(f)));
  std::vector<CudaWeightPart> parts;
  parts.push_back({quantize_four_bit_on_device(ctx_, f, host_weights, rows, cols, opts), DeviceMemory{}, 0});
  return std::make_unique<CudaLinear>(rows, cols, f, std::move(parts), std::move(b));
}

std::unique_ptr<DeviceNorm> CudaBackend::upload_norm(std::vector<float> weight, std::vector<float> bias) {
  DeviceMemory w = ctx_.allocate(weight.size() * sizeof(float), "norm weights");
  DeviceMemory b = ctx_.allocate(bias.size() * sizeof(float), "norm bias");
  if (!weight.empty())
    LOWBIT_CUDA_CHECK(cudaMemcpyAsync(w.get(), weight.data(), w.bytes(), cudaMemcpyHostToDevice, ctx_.stream()));
  if (!bias.empty())
    LOWBIT_CUDA_CHECK(cudaMemcpyAsync(b.get(), bias.data(), b.bytes(), cudaMemcpyHostToDevice, ctx_.stream()));
  ctx_.synchronize();
  return std::make_unique<CudaNorm>(std::move(w), std::move(b), weight.size());
}

std::unique_ptr<KvCache> CudaBackend::alloc_kv_cache(int n_layers, int n_slots, int max_context, int kv_dim,
                                                      KvDtype dtype) {
  const size_t bytes = size_t(n_layers) * size_t(n_slots) * size_t(max_context) * size_t(kv_dim) *
                       (dtype == KvDtype::bf16 ? 2 : sizeof(float));
  DeviceMemory k = ctx_.allocate(bytes, "the KV cache (keys)");
  DeviceMemory v = ctx_.allocate(bytes, "the KV cache (values)");
  return std::make_unique<CudaKvCache>(n_layers, n_slots, max_context, kv_dim, dtype, std::move(k), std::move(v));
}

void CudaBackend::download(const DeviceBuffer& src, size_t offset, size_t n, float* dst) {
  if (capturing_batch_ > 0) throw DeviceError("download() cannot be part of a captured CUDA graph");
  if (offset + n > src.size())
    throw DeviceError(fmt::format("download of {} floats at {} from a buffer of {}", n, offset, src.size()));
  if (n == 0) return;
  LOWBIT_CUDA_CHECK(cudaMemcpyAsync(dst, data(src) + offset, n * sizeof(float), cudaMemcpyDeviceToHost, ctx_.stream()));
  ctx_.synchronize();
}

void CudaBackend::upload(DeviceBuffer& dst, size_t offset, size_t n, const float* src) {
  if (offset + n > dst.size())
    throw DeviceError(fmt::format("upload of {} floats at {} into a buffer of {}", n, offset, dst.size()));
  if (n == 0) return;
  LOWBIT_CUDA_CHECK(cudaMemcpyAsync(data(dst) + offset, src, n * sizeof(float), cudaMemcpyHostToDevice, ctx_.stream()));
  ctx_.synchronize();
}

void CudaBackend::set_rope(std::vector<float> inv_freq) {
  // Several models on one backend (a sweep's reference and the format under test) set the same
  // frequencies: keep the buffer, which recorded steps point into.
  if (inv_freq == inv_freq_host_ && inv_freq_.bytes() == inv_freq.size() * sizeof(float)) return;
  ctx_.synchronize();
  drop_graphs_using(inv_freq_);
  inv_freq_host_ = inv_freq;
  inv_freq_ = ctx_.allocate(inv_freq.size() * sizeof(float), "rotary frequencies");
  if (!inv_freq.empty())
    LOWBIT_CUDA_CHECK(cudaMemcpyAsync(inv_freq_.get(), inv_freq.data(), inv_freq_.bytes(), cudaMemcpyHostToDevice,
                                      ctx_.stream()));
  ctx_.synchronize();
}

void CudaBackend::check_batch_in_cache(int n_slots, int max_context) const {
  for (int t = 0; t < batch_.size(); ++t) {
    const int slot = batch_.slots[size_t(t)], pos = batch_.positions[size_t(t)];
    if (slot < 0 || slot >= n_slots || pos < 0 || pos >= max_context)
      throw InputError(fmt::format("position {} of slot {} is outside the KV cache ({} slots x {} positions)", pos,
                                   slot, n_slots, max_context));
  }
}

void CudaBackend::drop_graphs_using(const DeviceMemory& mem) {
  for (auto it = graphs_.begin(); it != graphs_.end();) {
    if (it->second.workspaces.count(&mem) != 0) {
      cudaGraphExecDestroy(it->second.exec);
      it = graphs_.erase(it);
    } else {
      ++it;
    }
  }
}

float* CudaBackend::ensure_workspace(DeviceMemory& mem, size_t bytes, const char* what, bool zeroed) {
  if (capturing_batch_ > 0) capturing_.workspaces.insert(&mem);
  if (mem.bytes() >= bytes) return mem.as<float>();
  if (capturing_batch_ > 0)
    throw DeviceError(fmt::format("{} must grow while capturing a CUDA graph: run the step eagerly first", what));
  ctx_.synchronize();  // the old buffer may still be in use by queued kernels (replays included)
  drop_graphs_using(mem);
  mem.release();
  // Round up to 1 MiB so that a slowly growing batch does not reallocate every step.
  const size_t rounded = (bytes + (size_t(1) << 20) - 1) & ~((size_t(1) << 20) - 1);
  mem = ctx_.allocate(rounded, what);
  if (zeroed) cuda_check(cudaMemsetAsync(mem.as<uint8_t>(), 0, rounded, ctx_.stream()), what);
  return mem.as<float>();
}

void CudaBackend::ensure_batch_capacity(int n) {
  if (n <= batch_capacity_) return;
  const int capacity = std::max(n, 2 * batch_capacity_);
  ensure_workspace(batch_device_, size_t(3) * size_t(capacity) * sizeof(int32_t), "the token batch");
  batch_capacity_ = int(batch_device_.bytes() / (3 * sizeof(int32_t)));
  for (auto& s : staging_) {
    LOWBIT_CUDA_CHECK(cudaEventSynchronize(s.copied));
    s.host = PinnedMemory(size_t(3) * size_t(batch_capacity_) * sizeof(int32_t));
  }
}

// Device layout for the current batch of n: [tokens n | positions n | slots n].
const int32_t* CudaBackend::device_tokens() const { return batch_device_.as<int32_t>(); }
const int32_t* CudaBackend::device_positions() const { return batch_device_.as<int32_t>() + batch_.size(); }
const int32_t* CudaBackend::device_slots() const { return batch_device_.as<int32_t>() + 2 * batch_.size(); }

void CudaBackend::set_batch(const TokenBatch& batch) {
  const int n = batch.size();
  if (int(batch.positions.size()) != n || int(batch.slots.size()) != n)
    throw DeviceError("set_batch: tokens, positions and slots differ in length");
  batch_ = batch;
  std::vector<int32_t> slots(batch.slots);
  std::sort(slots.begin(), slots.end());
  batch_in_distinct_slots_ = std::adjacent_find(slots.begin(), slots.end()) == slots.end();
  if (n == 0) return;
  ensure_batch_capacity(n);
  if (capturing_batch_ > 0) return;  // replays read what the set_batch before them uploaded
  StagingSlot& slot = staging_[next_staging_];
  next_staging_ = (next_staging_ + 1) % staging_.size();
  LOWBIT_CUDA_CHECK(cudaEventSynchronize(slot.copied));
  int32_t* host = slot.host.as<int32_t>();
  std::memcpy(host, batch.tokens.data(), size_t(n) * sizeof(int32_t));
  std::memcpy(host + n, batch.positions.data(), size_t(n) * sizeof(int32_t));
  std::memcpy(host + 2 * n, batch.slots.data(), size_t(n) * sizeof(int32_t));
  LOWBIT_CUDA_CHECK(cudaMemcpyAsync(batch_device_.get(), host, size_t(3) * n * sizeof(int32_t), cudaMemcpyHostToDevice,
                                    ctx_.stream()));
  LOWBIT_CUDA_CHECK(cudaEventRecord(slot.copied, ctx_.stream()));
}

void CudaBackend::embed(const DeviceLinear& table, DeviceBuffer& out) {
  const auto& t = static_cast<const CudaLinear&>(table);
  if (t.quantized())
    throw DeviceError(fmt::format("embedding tables in {} have no CUDA kernel (the model keeps them bf16/f32)",
                                  format_name(t.format())));
  for (int32_t id : batch_.tokens)
    if (id < 0 || id >= t.rows())
      throw InputError(fmt::format("token id {} is outside the vocabulary (size {})", id, t.rows()));
  require_floats(out, size_t(batch_.size()) * size_t(t.cols()), "embed", "the output");
  cuda_check(kernels::launch_embedding(t.codes(), t.format() == Format::BF16, device_tokens(), batch_.size(),
                                  int(t.cols()), data(out), ctx_.stream()),
        "embedding");
}

void CudaBackend::norm(const DeviceBuffer& x, const DeviceNorm& w, NormKind kind, float eps, int dim, DeviceBuffer& out) {
  norm_rows(x, w, kind, eps, dim, batch_.size(), out);
}

void CudaBackend::norm_rows(const DeviceBuffer& x, const DeviceNorm& w, NormKind kind, float eps, int dim, int rows,
                            DeviceBuffer& out) {
  const auto& nw = static_cast<const CudaNorm&>(w);
  const size_t n = size_t(rows) * size_t(dim);
  require_floats(x, n, "norm", "the input");
  require_floats(out, n, "norm", "the output");
  // x is only read when no residual delta is given.
  cuda_check(kernels::launch_norm(const_cast<float*>(data(x)), nullptr, nw.weight.as<float>(), nw.bias_or_null(),
                             kind == NormKind::RMSNorm ? kernels::NormKindGpu::rms : kernels::NormKindGpu::layer, eps,
                             rows, dim, data(out), ctx_.stream()),
        "norm");
}

void CudaBackend::add_norm(DeviceBuffer& residual, const DeviceBuffer& delta, const DeviceNorm& w, NormKind kind,
                           float eps, int dim, DeviceBuffer& out) {
  const auto& nw = static_cast<const CudaNorm&>(w);
  const size_t n = size_t(batch_.size()) * size_t(dim);
  require_floats(residual, n, "add_norm", "the residual");
  require_floats(delta, n, "add_norm", "the delta");
  require_floats(out, n, "add_norm", "the output");
  cuda_check(kernels::launch_norm(data(residual), data(delta), nw.weight.as<float>(), nw.bias_or_null(),
                             kind == NormKind::RMSNorm ? kernels::NormKindGpu::rms : kernels::NormKindGpu::layer, eps,
                             batch_.size(), dim, data(out), ctx_.stream()),
        "add_norm");
}

// Runs of consecutive rows become one device-to-device copy each: the usual requests (the last
// row of a prompt, every row of a decode batch) are one copy, no index upload, and the copies
// are capturable in a CUDA graph.
void CudaBackend::gather_rows(const DeviceBuffer& src, const std::vector<int>& rows, int dim, DeviceBuffer& dst) {
  require_floats(dst, rows.size() * size_t(dim), "gather_rows", "the destination");
  size_t i = 0;
  while (i < rows.size()) {
    size_t run = 1;
    while (i + run < rows.size() && rows[i + run] == rows[i] + int(run)) ++run;
    if (rows[i] < 0 || (size_t(rows[i]) + run) * size_t(dim) > src.size())
      throw DeviceError(fmt::format("gather_rows: row {} outside a buffer of {} floats", rows[i], src.size()));
    LOWBIT_CUDA_CHECK(cudaMemcpyAsync(data(dst) + i * size_t(dim), data(src) + size_t(rows[i]) * size_t(dim),
                                      run * size_t(dim) * sizeof(float), cudaMemcpyDeviceToDevice, ctx_.stream()));
    i += run;
  }
}

void CudaBackend::add(DeviceBuffer& x, const DeviceBuffer& y, int dim) {
  const size_t n = size_t(batch_.size()) * size_t(dim);
  require_floats(x, n, "add", "x");
  require_floats(y, n, "add", "y");
  cuda_check(kernels::launch_add(data(x), data(y), n, ctx_.stream()), "add");
}

void CudaBackend::head(const DeviceBuffer& x, const std::vector<int>& rows, const DeviceNorm& w, NormKind kind,
                       float eps, int dim, const DeviceLinear& head, DeviceBuffer& gathered, DeviceBuffer& normed,
                       DeviceBuffer& logits) {
  gather_rows(x, rows, dim, gathered);
  norm_rows(gathered, w, kind, eps, dim, int(rows.size()), normed);
  matmul_rows(head, normed, int(rows.size()), logits);
}

// Decode steps of up to kMaxFusedTokens tokens: the format's fused GEMV runs every part of the
// layer with the norm before it and the residual add / activation after it, in one launch.
// Anything it cannot take (prompts, larger batches, shapes off its fast path, formats without
// one, LOWBIT_CUDA_FUSE=0) runs the steps apart (Backend::linear).
void CudaBackend::linear(const DeviceLinear& w, const DeviceBuffer& x, DeviceBuffer& out, const LinearSteps& s) {
  const auto& l = static_cast<const CudaLinear&>(w);
  const int n = batch_.size();
  const QuantizedKernels* k = quantized_kernels(l.format());
  const bool fusable = fuse_ && k != nullptr && k->fused_gemv != nullptr && n > 0 && n <= kernels::kMaxFusedTokens &&
                       l.parts.size() <= size_t(kernels::GemvParts::kMax) && !(s.activate && s.accumulate);
  if (fusable) {
    const int rows = int(l.rows()), cols = int(l.cols());
    const bool swiglu = s.activate && s.act == Activation::SwiGLU;
    kernels::GemvParts parts;
    parts.n_parts = int(l.parts.size());
    parts.rows = rows;
    parts.ldy = rows;
    for (size_t i = 0; i < l.parts.size(); ++i) {
      const CudaWeightPart& p = l.parts[i];
      parts.part[i] = p.planes.view();
      parts.part[i].out_stride = rows;
      parts.part[i].out_rows = p.out_rows.bytes() > 0 ? p.out_rows.as<int32_t>() : nullptr;
      parts.first_row[i] = int(p.first_row);
    }
    kernels::GemvSteps steps;
    if (s.norm != nullptr) {
      const auto& nw = static_cast<const CudaNorm&>(*s.norm);
      if (nw.dim != size_t(cols)) throw DeviceError("linear: the norm's width differs from the weight's columns");
      steps.norm_weight = nw.weight.as<float>();
      steps.norm_bias = nw.bias_or_null();
      steps.layer_norm = s.norm_kind == NormKind::LayerNorm;
      steps.norm_eps = s.norm_eps;
    }
    steps.out = s.accumulate ? kernels::GemvOut::kAccumulate
                : s.activate ? (swiglu ? kernels::GemvOut::kSwiglu : kernels::GemvOut::kGelu)
                             : kernels::GemvOut::kStore;
    steps.hidden = s.hidden;
    require_floats(x, size_t(n) * size_t(cols), "linear", "the input");
    require_floats(out, size_t(n) * size_t(swiglu ? s.hidden : rows), "linear", "the output");
    if (s.activate && (swiglu ? 2 * s.hidden != rows : s.hidden != rows))
      throw DeviceError(fmt::format("linear: {} rows do not make an activation of width {}", rows, s.hidden));
    const cudaError_t e = k->fused_gemv(parts, l.bias_or_null(), data(x), n, data(out), steps, ctx_.stream());
    if (e == cudaSuccess) return;
    if (e != cudaErrorNotSupported) cuda_check(e, "fused gemv");
  }
  Backend::linear(w, x, out, s);
}

void CudaBackend::matmul(const DeviceLinear& w, const DeviceBuffer& x, DeviceBuffer& y) {
  matmul_rows(w, x, batch_.size(), y);
}

void CudaBackend::matmul_rows(const DeviceLinear& w, const DeviceBuffer& x, int n, DeviceBuffer& y) {
  const auto& l = static_cast<const CudaLinear&>(w);
  const int rows = int(l.rows()), cols = int(l.cols());
  require_floats(x, size_t(n) * size_t(cols), "matmul", "the input");
  require_floats(y, size_t(n) * size_t(rows), "matmul", "the output");
  if (n == 0) return;
  matmul_layer(l, data(x), n, data(y));
}

void CudaBackend::gemm_bf16(const void* w_bf16, int rows, int cols, const float* x, int n, float* y) {
  const float alpha = 1.0f, beta = 0.0f;
  const size_t elems = size_t(n) * size_t(cols);
  auto* xb = reinterpret_cast<uint16_t*>(
      ensure_workspace(gemm_input_bf16_, elems * sizeof(uint16_t), "bf16 activations for the GEMM"));
  cuda_check(kernels::launch_to_bf16(x, elems, xb, ctx_.stream()), "fp32 -> bf16 conversion");
  // Column-major view as in matmul(): Y^T [rows, n] = op_T(W) x X^T.
  LOWBIT_CUBLAS_CHECK(cublasGemmEx(ctx_.cublas(), CUBLAS_OP_T, CUBLAS_OP_N, rows, n, cols, &alpha, w_bf16, CUDA_R_16BF,
                                   cols, xb, CUDA_R_16BF, cols, &beta, y, CUDA_R_32F, rows, CUBLAS_COMPUTE_32F,
                                   CUBLAS_GEMM_DEFAULT));
}

// Every format through the one table (cuda_quantized.cpp). Decode (n <= 16): the format's GEMV
// (kernels/gemv_template.cuh: dequantization inside the dot product, bias fused). Prefill, by
// default the format's arithmetic: F32 as a true fp32 GEMM (no TF32), W8A8 as a true int8 GEMM
// when the shape allows, W8A8-fp8 as an e4m3 GEMM on sm_89+ when the shape allows, every other
// format through its GEMV in passes of 16 tokens. With
// fast_prefill: BF16 as a bf16 x bf16 GEMM with fp32 accumulation (the activations rounded to
// bf16 first: tensor cores need both operands 16-bit), the other formats dequantized into a bf16
// scratch buffer for that GEMM; the bias in a small kernel. A layer of several parts (blockwise 4-bit only, see upload_linear):
// each part's GEMV writes its rows into the layer's output (out_stride = the layer's rows,
// out_rows = its row order), and the prefill path dequantizes every part into its rows.
void CudaBackend::matmul_layer(const CudaLinear& l, const float* x, int n, float* y) {
  const Format f = l.format();
  const QuantizedKernels* k = quantized_kernels(f);
  if (k == nullptr) throw DeviceError(fmt::format("format {} has no CUDA kernel yet", format_name(f)));
  const int rows = int(l.rows()), cols = int(l.cols());
  const float* bias = l.bias_or_null();
  const bool single = l.parts.size() == 1 && l.parts.front().out_rows.bytes() == 0;
  // Row-wise formats are stacked into one tensor at load (stack_rows); only formats whose blocks
  // run across rows keep parts, and their kernels write each part's row range (out_rows).
  if (!single && quantizes_rows_independently(f))
    throw DeviceError(fmt::format("a {} layer in parts: its rows should have been stacked at load", format_name(f)));
  auto part_view = [&](const CudaWeightPart& p) {
    kernels::QuantizedWeightView v = p.planes.view();
    v.out_stride = rows;
    v.out_rows = p.out_rows.bytes() > 0 ? p.out_rows.as<int32_t>() : nullptr;
    return v;
  };
  // A GEMV that takes any batch (the int8 and fp8 ones: activations quantized once for all of it,
  // LLM.int8's outlier columns span the batch) runs once; the others take kMaxGemvTokens tokens
  // per pass.
  auto gemv_passes = [&] {
    const int per_pass = k->gemv_any_batch ? n : std::min(n, kernels::kMaxGemvTokens);
    const size_t ws_bytes = k->gemv_workspace_bytes(per_pass, cols);
    void* ws = ws_bytes > 0 ? ensure_workspace(quantized_workspace_, ws_bytes, "quantized GEMV activations") : nullptr;
    for (int t0 = 0; t0 < n; t0 += per_pass) {
      const int m = std::min(per_pass, n - t0);
      const float* xt = x + size_t(t0) * size_t(cols);
      float* yt = y + size_t(t0) * size_t(rows);
      for (const CudaWeightPart& p : l.parts)
        cuda_check(k->gemv(part_view(p), bias != nullptr ? bias + p.first_row : nullptr, xt, m, yt + p.first_row, ws,
                      ctx_.stream()),
              "gemv");
    }
  };
  if (n <= kernels::kMaxGemvTokens) return gemv_passes();
  // Prompts: the format's own arithmetic by default, through the GEMM its kernels name (F32 a true
  // fp32 GEMM; W8A8 an exact int8 GEMM and W8A8-fp8 an e4m3 one where cuBLAS takes the shape)
  // or else its GEMV, 16 tokens per pass over the weight. --cuda-fast-prefill instead runs the
  // other formats as bf16 tensor-core GEMMs: faster on long prompts, not the reference's arithmetic.
  using kernels::PrefillGemm;
  if (k->prefill_gemm == PrefillGemm::int8 && single && matmul_w8a8_int8_gemm(l.parts.front().planes, bias, x, n, y))
    return;
  if (k->prefill_gemm == PrefillGemm::e4m3 && single && matmul_fp8_gemm(l.parts.front().planes, bias, x, n, y)) return;
  if (!fast_prefill_ && k->prefill_gemm != PrefillGemm::fp32) return gemv_passes();
  if (k->prefill_gemm == PrefillGemm::fp32) {
    // Column-major view: Y^T [rows, n] = W [rows, cols] (stored row-major = col-major W^T, so
    // op T) x X^T [cols, n] (row-major X = col-major X^T).
    const float alpha = 1.0f, beta = 0.0f;
    LOWBIT_CUBLAS_CHECK(cublasGemmEx(ctx_.cublas(), CUBLAS_OP_T, CUBLAS_OP_N, rows, n, cols, &alpha, l.codes(),
                                     CUDA_R_32F, cols, x, CUDA_R_32F, cols, &beta, y, CUDA_R_32F, rows,
                                     CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  } else if (k->values_bf16) {
    gemm_bf16(l.codes(), rows, cols, x, n, y);
  } else {
    auto* wb = reinterpret_cast<uint16_t*>(ensure_workspace(
        dequantized_bf16_, size_t(rows) * size_t(cols) * sizeof(uint16_t), "a dequantized bf16 weight for the GEMM"));
    for (const CudaWeightPart& p : l.parts)
      cuda_check(k->dequantize(part_view(p), wb + size_t(p.first_row) * size_t(cols), ctx_.stream()), "dequantize to bf16");
    gemm_bf16(wb, rows, cols, x, n, y);
  }
  if (bias != nullptr) cuda_check(kernels::launch_add_bias(y, bias, n, rows, ctx_.stream()), "bias add");
}

// W8A8 prefill: per-token int8 activations, int8 x int8 -> int32 on the tensor cores (IMMA via
// cublasGemmEx, which runs cuBLASLt underneath), then acc * w_scale * x_scale (+ bias): the CPU's
// arithmetic exactly, since the int32 sums are exact. IMMA in the plain (non-COL32) layouts wants
// "TN" operands with k and the leading dimensions multiples of 4: W row-major [rows, cols] is
// op T of a column-major [cols, rows] (lda = cols), X row-major [n, cols] is column-major
// [cols, n] (ldb = cols), C column-major [rows, n] (ldc = rows) = row-major [n, rows]. Other shapes
// (or cuBLAS declining) return false and take the dequantize path.
bool CudaBackend::matmul_w8a8_int8_gemm(const DeviceQuantizedPlanes& w, const float* bias, const float* x, int n,
                                        float* y) {
  const int rows = int(w.rows), cols = int(w.cols);
  if (rows % 4 != 0 || cols % 4 != 0) return false;
  const size_t xq_bytes = (size_t(n) * size_t(cols) + 255) & ~size_t(255);
  const size_t scale_bytes = (size_t(n) * sizeof(float) + 255) & ~size_t(255);
  auto* base = reinterpret_cast<uint8_t*>(ensure_workspace(
      quantized_workspace_, xq_bytes + scale_bytes + size_t(n) * size_t(rows) * sizeof(int32_t), "W8A8 GEMM scratch"));
  auto* xq = reinterpret_cast<int8_t*>(base);
  auto* x_scale = reinterpret_cast<float*>(base + xq_bytes);
  auto* acc = reinterpret_cast<int32_t*>(base + xq_bytes + scale_bytes);
  cuda_check(kernels::launch_w8a8_quantize_activations(x, n, cols, xq, x_scale, ctx_.stream()), "W8A8 activation quantization");
  const int32_t alpha = 1, beta = 0;
  const cublasStatus_t status =
      cublasGemmEx(ctx_.cublas(), CUBLAS_OP_T, CUBLAS_OP_N, rows, n, cols, &alpha, w.codes.get(), CUDA_R_8I, cols, xq,
                   CUDA_R_8I, cols, &beta, acc, CUDA_R_32I, rows, CUBLAS_COMPUTE_32I, CUBLAS_GEMM_DEFAULT);
  if (status == CUBLAS_STATUS_NOT_SUPPORTED) return false;
  cublas_check(status, "cublasGemmEx (int8 x int8 -> int32)");
  cuda_check(kernels::launch_w8a8_rescale(acc, w.scales.as<float>(), x_scale, bias, n, rows, y, ctx_.stream()),
        "W8A8 rescale");
  return true;
}

// W8A8-fp8 prompts on sm_89+: per-token e4m3 activations (the GEMV's quantizer), e4m3 x e4m3 ->
// fp32 on the FP8 tensor cores through cuBLASLt, then acc * fl(w_scale * x_scale) (+ bias) in a
// small kernel: the CPU's rounding points, only the fp32 summation order differs (the CPU sums
// exactly). cuBLASLt's FP8 scales are per tensor, or with CUBLASLT_MATMUL_MATRIX_SCALE_OUTER_VEC_32F
// (in CUDA 13's header) a vector per side, applied inside the epilogue in an order the library
// does not document; lowbit runs unit scales into fp32 and rescales rows x columns itself. FP8
// wants the "TN" layout with leading dimensions multiples of 16: W row-major [rows, cols] is op T of
// a column-major [cols, rows] (lda = cols), xq row-major [n, cols] is column-major [cols, n]
// (ldb = cols), D column-major [rows, n] (ldd = rows) = row-major [n, rows], written straight into
// y and rescaled in place. Older GPUs, other shapes, or no algorithm from the heuristic return
// false: the prompt then runs through the fp8 GEMV in passes (or --cuda-fast-prefill's bf16 path).
bool CudaBackend::matmul_fp8_gemm(const DeviceQuantizedPlanes& w, const float* bias, const float* x, int n, float* y) {
  const cudaDeviceProp& props = ctx_.properties();
  if (props.major * 10 + props.minor < 89) return false;
  const int rows = int(w.rows), cols = int(w.cols);
  if (rows % 16 != 0 || cols % 16 != 0) return false;
  constexpr size_t kLtWorkspace = size_t(4) << 20;
  const size_t xq_bytes = (size_t(n) * size_t(cols) + 255) & ~size_t(255);
  const size_t scale_bytes = (size_t(n) * sizeof(float) + 255) & ~size_t(255);
  auto* base = reinterpret_cast<uint8_t*>(
      ensure_workspace(quantized_workspace_, xq_bytes + scale_bytes + kLtWorkspace, "W8A8-fp8 GEMM scratch"));
  auto* xq = base;
  auto* x_scale = reinterpret_cast<float*>(base + xq_bytes);
  void* lt_workspace = base + xq_bytes + scale_bytes;

  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
  cublasLtMatmulPreference_t pref = nullptr;
  auto release = [&] {
    if (pref != nullptr) cublasLtMatmulPreferenceDestroy(pref);
    if (d != nullptr) cublasLtMatrixLayoutDestroy(d);
    if (b != nullptr) cublasLtMatrixLayoutDestroy(b);
    if (a != nullptr) cublasLtMatrixLayoutDestroy(a);
    if (op != nullptr) cublasLtMatmulDescDestroy(op);
  };
  try {
    LOWBIT_CUBLAS_CHECK(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    const int32_t transpose = CUBLAS_OP_T, keep = CUBLAS_OP_N;
    LOWBIT_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &transpose, sizeof(transpose)));
    LOWBIT_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &keep, sizeof(keep)));
    LOWBIT_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&a, CUDA_R_8F_E4M3, uint64_t(cols), uint64_t(rows), cols));
    LOWBIT_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&b, CUDA_R_8F_E4M3, uint64_t(cols), uint64_t(n), cols));
    LOWBIT_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&d, CUDA_R_32F, uint64_t(rows), uint64_t(n), rows));
    LOWBIT_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    const uint64_t max_workspace = kLtWorkspace;
    LOWBIT_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                             &max_workspace, sizeof(max_workspace)));
    cublasLtMatmulHeuristicResult_t found{};
    int count = 0;
    const cublasStatus_t heuristic =
        cublasLtMatmulAlgoGetHeuristic(ctx_.cublas_lt(), op, a, b, d, d, pref, 1, &found, &count);
    // No algorithm (the library answers NOT_SUPPORTED, or INVALID_VALUE for a layout it rejects,
    // or success with none): the query changed nothing, so the GEMV path runs instead.
    if (heuristic != CUBLAS_STATUS_SUCCESS || count == 0) {
      release();
      return false;
    }
    cuda_check(kernels::launch_fp8_quantize_activations(x, n, cols, xq, x_scale, ctx_.stream()),
               "W8A8-fp8 activation quantization");
    const float alpha = 1.0f, beta = 0.0f;
    LOWBIT_CUBLAS_CHECK(cublasLtMatmul(ctx_.cublas_lt(), op, &alpha, w.codes.get(), a, xq, b, &beta, y, d, y, d,
                                       &found.algo, lt_workspace, kLtWorkspace, ctx_.stream()));
  } catch (...) {
    release();
    throw;
  }
  release();
  cuda_check(kernels::launch_fp8_rescale(y, w.scales.as<float>(), x_scale, bias, n, rows, y, ctx_.stream()),
             "W8A8-fp8 rescale");
  return true;
}

void CudaBackend::rope(DeviceBuffer& qkv, const AttentionShape& s) {
  if (inv_freq_.bytes() < size_t(s.head_dim / 2) * sizeof(float))
    throw DeviceError("rope: set_rope() was not called with head_dim/2 frequencies");
  require_floats(qkv, size_t(batch_.size()) * size_t(s.qkv_dim()), "rope", "qkv");
  cuda_check(kernels::launch_rope(data(qkv), device_positions(), inv_freq_.as<float>(), batch_.size(), s.n_heads,
                             s.n_kv_heads, s.head_dim, s.qkv_dim(), ctx_.stream()),
        "rope");
}

void CudaBackend::attention(const DeviceBuffer& qkv, KvCache& cache, int layer, const AttentionShape& s,
                            DeviceBuffer& out) {
  attend(qkv, cache, layer, s, out, false);
}

// A decode step (every token in its own slot) rotates, stores and attends in one kernel; prompt
// chunks run rope, then attention.
void CudaBackend::rope_attention(DeviceBuffer& qkv, KvCache& cache, int layer, const AttentionShape& s,
                                 DeviceBuffer& out) {
  if (!batch_in_distinct_slots_ || batch_.size() == 0 || !fuse_) {
    rope(qkv, s);
    return attention(qkv, cache, layer, s, out);
  }
  if (inv_freq_.bytes() < size_t(s.head_dim / 2) * sizeof(float))
    throw DeviceError("rope: set_rope() was not called with head_dim/2 frequencies");
  attend(qkv, cache, layer, s, out, true);
}

void CudaBackend::attend(const DeviceBuffer& qkv, KvCache& cache, int layer, const AttentionShape& s,
                         DeviceBuffer& out, bool rotate_and_store) {
  auto& kv = static_cast<CudaKvCache&>(cache);
  const int n = batch_.size();
  if (n == 0) return;
  if (layer < 0 || layer >= kv.n_layers) throw DeviceError(fmt::format("attention: layer {} outside the cache", layer));
  if (s.kv_dim() != kv.kv_dim) throw DeviceError("attention: kv_dim differs from the cache's");
  if (s.head_dim > 256 || s.head_dim % 2 != 0 || s.n_kv_heads <= 0 || s.n_heads % s.n_kv_heads != 0)
    throw DeviceError(fmt::format("attention: unsupported shape ({} heads, {} kv heads, head_dim {})", s.n_heads,
                                  s.n_kv_heads, s.head_dim));
  check_batch_in_cache(kv.n_slots(), kv.max_context());
  if (capturing_batch_ > 0) {
    const bool first = capturing_.max_context == 0;
    capturing_.n_slots = first ? kv.n_slots() : std::min(capturing_.n_slots, kv.n_slots());
    capturing_.max_context = first ? kv.max_context() : std::min(capturing_.max_context, kv.max_context());
  }
  bool one_slot = true;
  for (int t = 0; t < n; ++t) one_slot = one_slot && batch_.slots[size_t(t)] == batch_.slots[0];
  require_floats(qkv, size_t(n) * size_t(s.qkv_dim()), "attention", "qkv");
  require_floats(out, size_t(n) * size_t(s.q_dim()), "attention", "the output");
  kernels::AttentionGeometry g;
  g.n_heads = s.n_heads;
  g.n_kv_heads = s.n_kv_heads;
  g.head_dim = s.head_dim;
  g.max_context = kv.max_context();
  g.bf16_cache = kv.dtype() == KvDtype::bf16;
  void* k_layer = kv.keys.as<uint8_t>() + kv.layer_offset(layer);
  void* v_layer = kv.values.as<uint8_t>() + kv.layer_offset(layer);
  if (rotate_and_store) {
    float* workspace = ensure_workspace(attention_workspace_, kernels::decode_workspace_floats(n, g) * sizeof(float),
                                        "the attention workspace");
    auto* counters = reinterpret_cast<int*>(ensure_workspace(
        attention_counters_, kernels::decode_counters(n, g) * sizeof(int), "the attention counters", true));
    cuda_check(kernels::launch_rope_attention_decode(data(qkv), k_layer, v_layer, device_positions(), device_slots(),
                                                     inv_freq_.as<float>(), n, g, workspace, counters, data(out),
                                                     ctx_.stream()),
               "rope + attention (decode)");
    return;
  }
  cuda_check(kernels::launch_kv_store(data(qkv), device_positions(), device_slots(), n, g, k_layer, v_layer, ctx_.stream()),
        "kv store");
  if (one_slot && n > 1) {
    // A prompt chunk: query tiles share K/V tiles.
    cuda_check(kernels::launch_attention_prefill(data(qkv), k_layer, v_layer, device_positions(), device_slots(), n, g,
                                            data(out), ctx_.stream()),
          "attention (prefill)");
  } else {
    float* workspace = ensure_workspace(attention_workspace_, kernels::decode_workspace_floats(n, g) * sizeof(float),
                                        "the attention workspace");
    auto* counters = reinterpret_cast<int*>(ensure_workspace(
        attention_counters_, kernels::decode_counters(n, g) * sizeof(int), "the attention counters", true));
    cuda_check(kernels::launch_attention_decode(data(qkv), k_layer, v_layer, device_positions(), device_slots(), n, g,
                                           workspace, counters, data(out), ctx_.stream()),
          "attention (decode)");
  }
}

void CudaBackend::activation(const DeviceBuffer& gu, Activation act, int hidden, DeviceBuffer& out) {
  const int n = batch_.size();
  require_floats(out, size_t(n) * size_t(hidden), "activation", "the output");
  if (act == Activation::SwiGLU) {
    require_floats(gu, size_t(n) * 2 * size_t(hidden), "activation", "the input");
    cuda_check(kernels::launch_swiglu(data(gu), n, hidden, data(out), ctx_.stream()), "swiglu");
  } else {
    require_floats(gu, size_t(n) * size_t(hidden), "activation", "the input");
    cuda_check(kernels::launch_gelu(data(gu), size_t(n) * size_t(hidden), data(out), ctx_.stream()), "gelu");
  }
}

void CudaBackend::synchronize() { ctx_.synchronize(); }

int32_t CudaBackend::sample(const DeviceBuffer& logits, size_t row, int vocab, const SamplingParams& params,
                            std::span<const int32_t> history, uint64_t step) {
  validate(params);
  if (vocab <= 0 || (row + 1) * size_t(vocab) > logits.size())
    throw DeviceError(fmt::format("sample: row {} of {} logits outside a buffer of {}", row, vocab,
                                  logits.size()));
  float* workspace = ensure_workspace(sampling_workspace_, kernels::sampling_workspace_bytes(vocab), "sampling scores");
  int32_t* device_history = nullptr;
  if (params.repetition_penalty != 1.0f && !history.empty()) {
    device_history = reinterpret_cast<int32_t*>(
        ensure_workspace(sampling_history_, history.size() * sizeof(int32_t), "the sampling history"));
    // Pageable source: the call returns once the bytes are staged, in stream order.
    LOWBIT_CUDA_CHECK(cudaMemcpyAsync(device_history, history.data(), history.size() * sizeof(int32_t),
                                      cudaMemcpyHostToDevice, ctx_.stream()));
  }
  auto* result = reinterpret_cast<int32_t*>(ensure_workspace(sampling_result_, sizeof(int32_t), "the sampled token"));
  kernels::SamplingKernelParams p;
  p.temperature = params.temperature;
  p.top_k = params.top_k;
  p.top_p = params.top_p;
  p.min_p = params.min_p;
  p.repetition_penalty = params.repetition_penalty;
  p.seed = params.seed;
  p.step = step;
  cuda_check(kernels::launch_sample(data(logits) + row * size_t(vocab), vocab, device_history,
                               device_history != nullptr ? int(history.size()) : 0, p, workspace, result,
                               ctx_.stream()),
        "sampling");
  int32_t id = -1;
  LOWBIT_CUDA_CHECK(cudaMemcpyAsync(&id, result, sizeof(int32_t), cudaMemcpyDeviceToHost, ctx_.stream()));
  ctx_.synchronize();
  if (id == kernels::kAllMinusInfResult) throw InputError("sampler: every logit is -inf");
  if (id <= kernels::kNanResult)
    throw InputError(fmt::format("sampler: logit of token {} is NaN", int64_t(kernels::kNanResult) - id));
  if (id >= vocab) throw DeviceError(fmt::format("sampling kernel returned token {} of a vocabulary of {}", id, vocab));
  return id;
}

bool CudaBackend::can_record() const {
  // LOWBIT_CUDA_GRAPHS=0 runs every step eagerly (to compare, or to rule graphs out).
  static const bool enabled = env_switch_on("LOWBIT_CUDA_GRAPHS");
  return enabled;
}

bool CudaBackend::has_recording(const void* owner, int batch_size) const {
  return graphs_.count({owner, batch_size}) != 0;
}

void CudaBackend::begin_recording(const void* owner, int batch_size) {
  if (capturing_batch_ > 0) throw DeviceError("begin_recording: a capture is already in progress");
  if (batch_size <= 0) throw DeviceError("begin_recording: batch size must be positive");
  ctx_.synchronize();
  // Thread-local mode: other threads' CUDA calls stay legal while this stream is captured.
  LOWBIT_CUDA_CHECK(cudaStreamBeginCapture(ctx_.stream(), cudaStreamCaptureModeThreadLocal));
  capturing_batch_ = batch_size;
  capturing_owner_ = owner;
  // Every step reads the batch array and the rotary frequencies.
  capturing_ = Recording{};
  capturing_.workspaces = {&batch_device_, &inv_freq_};
}

void CudaBackend::end_recording() {
  if (capturing_batch_ <= 0) throw DeviceError("end_recording: no capture in progress");
  const GraphKey key{capturing_owner_, capturing_batch_};
  capturing_batch_ = 0;
  capturing_owner_ = nullptr;
  cudaGraph_t graph = nullptr;
  LOWBIT_CUDA_CHECK(cudaStreamEndCapture(ctx_.stream(), &graph));
  cudaGraphExec_t exec = nullptr;
  cudaError_t err = cudaGraphInstantiate(&exec, graph, 0);
  cudaGraphDestroy(graph);
  cuda_check(err, "cudaGraphInstantiate");
  Recording recording = std::move(capturing_);
  recording.exec = exec;
  auto it = graphs_.find(key);
  if (it != graphs_.end()) {
    cudaGraphExecDestroy(it->second.exec);
    it->second = std::move(recording);
  } else {
    graphs_.emplace(key, std::move(recording));
  }
}

void CudaBackend::abort_recording() {
  if (capturing_batch_ <= 0) return;
  capturing_batch_ = 0;
  capturing_owner_ = nullptr;
  cudaGraph_t graph = nullptr;
  cudaStreamEndCapture(ctx_.stream(), &graph);  // an invalidated capture reports an error: ignore it
  if (graph != nullptr) cudaGraphDestroy(graph);
  (void)cudaGetLastError();
}

void CudaBackend::replay(const void* owner, int batch_size) {
  auto it = graphs_.find({owner, batch_size});
  if (it == graphs_.end()) throw DeviceError(fmt::format("replay: no CUDA graph captured for batch size {}", batch_size));
  if (batch_.size() != batch_size)
    throw DeviceError(fmt::format("replay: graph for batch size {} but the current batch has {} tokens", batch_size,
                                  batch_.size()));
  // The graph's kv_store writes at these positions without attention()'s checks.
  if (it->second.max_context > 0) check_batch_in_cache(it->second.n_slots, it->second.max_context);
  LOWBIT_CUDA_CHECK(cudaGraphLaunch(it->second.exec, ctx_.stream()));
}

void CudaBackend::drop_recordings(const void* owner) {
  for (auto it = graphs_.begin(); it != graphs_.end();) {
    if (it->first.first == owner) {
      cudaStreamSynchronize(ctx_.stream());  // a launched graph may still be running
      cudaGraphExecDestroy(it->second.exec);
      it = graphs_.erase(it);
    } else {
      ++it;
    }
  }
}

double CudaBackend::copy_bandwidth_gbs() {
  // Device-to-device cudaMemcpy of 1 GiB (256 MiB when memory is short), best of 5 after a
  // warm-up, counting read + write bytes.
  size_t free_bytes = 0, total_bytes = 0;
  LOWBIT_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
  const size_t bytes = free_bytes > (size_t(3) << 30) ? size_t(1) << 30 : size_t(256) << 20;
  DeviceMemory src = ctx_.allocate(bytes, "the copy-bandwidth source");
  DeviceMemory dst = ctx_.allocate(bytes, "the copy-bandwidth destination");
  LOWBIT_CUDA_CHECK(cudaMemsetAsync(src.get(), 1, bytes, ctx_.stream()));
  cudaEvent_t start = nullptr, stop = nullptr;
  LOWBIT_CUDA_CHECK(cudaEventCreate(&start));
  LOWBIT_CUDA_CHECK(cudaEventCreate(&stop));
  double best = 0;
  try {
    for (int rep = 0; rep < 6; ++rep) {
      LOWBIT_CUDA_CHECK(cudaEventRecord(start, ctx_.stream()));
      LOWBIT_CUDA_CHECK(cudaMemcpyAsync(dst.get(), src.get(), bytes, cudaMemcpyDeviceToDevice, ctx_.stream()));
      LOWBIT_CUDA_CHECK(cudaEventRecord(stop, ctx_.stream()));
      LOWBIT_CUDA_CHECK(cudaEventSynchronize(stop));
      float ms = 0;
      LOWBIT_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
      if (rep > 0 && ms > 0) best = std::max(best, 2.0 * double(bytes) / (double(ms) * 1e-3) / 1e9);
    }
  } catch (...) {
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
    throw;
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  return best;
}

std::unique_ptr<Backend> make_cuda_backend(int device_index, size_t memory_cap_bytes, bool fast_prefill) {
  CudaContextOptions opts;
  opts.device_index = device_index;
  opts.max_bytes = memory_cap_bytes;
  auto backend = std::make_unique<CudaBackend>(opts);
  backend->set_fast_prefill(fast_prefill);
  return backend;
}

}  // namespace lowbit
