#include "backend/cpu_backend.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>

#include <fmt/format.h>

#include "backend/cpu_attention.h"
#include "core/cpu_features.h"
#include "core/error.h"
#include "core/half.h"
#include "formats/kernels.h"

namespace lowbit {

namespace {

class CpuBuffer final : public DeviceBuffer {
 public:
  CpuBuffer(size_t n, MemoryBudget& budget, const std::string& what)
      : DeviceBuffer(n), charge(budget, n * sizeof(float), what), data(n, 0.0f) {}
  BudgetCharge charge;
  std::vector<float> data;
};

// A row-wise format's parts are stacked into one tensor on upload (exact); the blockwise 4-bit
// formats keep their parts, each multiplied on its own and scattered into its output rows.
class CpuLinear final : public DeviceLinear {
 public:
  CpuLinear(LinearWeight w, std::vector<float> b, MemoryBudget& budget)
      : DeviceLinear(w.rows(), w.cols(), w.format(), weight_bytes(w) + b.size() * sizeof(float)),
        charge(budget, bytes(), fmt::format("a [{} x {}] {} weight", w.rows(), w.cols(), format_name(w.format()))),
        weight(std::move(w)), bias(std::move(b)) {}
  const QuantizedTensor& single() const { return weight.parts.front().tensor; }
  BudgetCharge charge;
  LinearWeight weight;
  std::vector<float> bias;  // empty or `rows` values, output row order
};

LinearWeight merged_if_exact(LinearWeight w) {
  if (w.is_single() || !quantizes_rows_independently(w.format())) return w;
  return LinearWeight(stack_rows(w));
}

class CpuNorm final : public DeviceNorm {
 public:
  CpuNorm(std::vector<float> w, std::vector<float> b, MemoryBudget& budget)
      : DeviceNorm((w.size() + b.size()) * sizeof(float)), charge(budget, bytes(), "norm weights"),
        weight(std::move(w)), bias(std::move(b)) {}
  BudgetCharge charge;
  std::vector<float> weight, bias;
};

// K and V for every layer in fp32, laid out as cpu_attention::KvLayout says (keys transposed in
// blocks of 16 positions, values row-major). A bf16 cache (KvDtype::bf16) stores every value
// rounded to bf16 (nearest even) in that fp32 storage: the numerics of a bf16 cache, which the CUDA
// backend's bf16 cache is checked against, but not its memory saving on the CPU.
class CpuKvCache final : public KvCache {
 public:
  CpuKvCache(const cpu_attention::KvLayout& layout, KvDtype dtype, MemoryBudget& budget)
      : KvCache(layout.n_slots, layout.max_context, dtype), layout(layout),
        charge(budget, bytes(layout), "the KV cache"), k(layout.key_floats()), v(layout.value_floats()) {}
  static size_t bytes(const cpu_attention::KvLayout& layout) {
    return (layout.key_floats() + layout.value_floats()) * sizeof(float);
  }
  float stored(float x) const { return dtype_ == KvDtype::bf16 ? bf16_to_f32(f32_to_bf16(x)) : x; }
  cpu_attention::KvLayout layout;
  BudgetCharge charge;
  std::vector<float> k, v;
};

float* data(DeviceBuffer& b) { return static_cast<CpuBuffer&>(b).data.data(); }
const float* data(const DeviceBuffer& b) { return static_cast<const CpuBuffer&>(b).data.data(); }

// HF RMSNorm: x * rsqrt(mean(x^2) + eps) * w;  LayerNorm: (x - mean) / sqrt(var + eps) * w + b.
void norm_row(const float* x, const CpuNorm& w, NormKind kind, float eps, int dim, float* out) {
  if (kind == NormKind::RMSNorm) {
    double ss = 0;
    for (int i = 0; i < dim; ++i) ss += double(x[i]) * x[i];
    float scale = 1.0f / std::sqrt(float(ss / dim) + eps);
    for (int i = 0; i < dim; ++i) out[i] = w.weight[size_t(i)] * (x[i] * scale);
  } else {
    double mean = 0;
    for (int i = 0; i < dim; ++i) mean += x[i];
    mean /= dim;
    double var = 0;
    for (int i = 0; i < dim; ++i) var += (x[i] - mean) * (x[i] - mean);
    var /= dim;
    float inv = 1.0f / std::sqrt(float(var) + eps);
    for (int i = 0; i < dim; ++i) {
      float y = float(x[i] - mean) * inv * w.weight[size_t(i)];
      out[i] = w.bias.empty() ? y : y + w.bias[size_t(i)];
    }
  }
}

}  // namespace

void MemoryBudget::take(size_t bytes, const std::string& what) {
  constexpr double kMiB = 1024.0 * 1024.0;
  if (cap_ > 0 && used_ + bytes > cap_)
    throw DeviceError(fmt::format("out of memory allocating {}: need {:.2f} MiB, {:.2f} MiB free (memory cap {:.2f} MiB)",
                                  what, double(bytes) / kMiB, double(cap_ - used_) / kMiB, double(cap_) / kMiB));
  used_ += bytes;
  peak_ = std::max(peak_, used_);
}

CpuBackend::CpuBackend(int n_threads, size_t memory_cap_bytes, bool bf16_activations)
    : pool_(n_threads), budget_(memory_cap_bytes), bf16_activations_(bf16_activations) {
  cpu_level();  // reads LOWBIT_CPU_KERNELS now, so a bad value is reported before any work
  if (bf16_activations && !(cpu_features().avx512bf16 && detected_cpu_level() >= CpuLevel::avx512))
    throw UsageError("--cpu-bf16-activations: this CPU has no AVX512-BF16 (" + cpu_kernel_summary() + ")");
}

std::string CpuBackend::description() const {
  return bf16_activations_ ? "cpu, bf16 activations for bf16 weights" : "cpu";
}

std::unique_ptr<DeviceBuffer> CpuBackend::alloc(size_t n_floats, const std::string& what) {
  try {
    return std::make_unique<CpuBuffer>(n_floats, budget_, what);
  } catch (const std::bad_alloc&) {
    throw DeviceError(fmt::format("out of host memory allocating {} ({} bytes)", what, n_floats * sizeof(float)));
  }
}

std::unique_ptr<DeviceLinear> CpuBackend::upload_linear(LinearWeight w, std::vector<float> bias) {
  if (!bias.empty() && int64_t(bias.size()) != w.rows())
    throw DeviceError(fmt::format("bias of {} values for a weight of {} rows", bias.size(), w.rows()));
  return std::make_unique<CpuLinear>(merged_if_exact(std::move(w)), std::move(bias), budget_);
}

std::unique_ptr<DeviceLinear> CpuBackend::upload_quantizing(Format f, const std::vector<HostWeightPart>& parts,
                                                            int64_t cols, const QuantOptions& opts,
                                                            std::vector<float> bias) {
  return upload_linear(quantize_parts(f, parts, cols, opts, pool_), std::move(bias));
}

std::unique_ptr<DeviceNorm> CpuBackend::upload_norm(std::vector<float> weight, std::vector<float> bias) {
  return std::make_unique<CpuNorm>(std::move(weight), std::move(bias), budget_);
}

std::unique_ptr<KvCache> CpuBackend::alloc_kv_cache(int n_layers, int n_slots, int max_context, int kv_dim,
                                                     KvDtype dtype) {
  const cpu_attention::KvLayout layout{n_layers, n_slots, max_context, kv_dim};
  try {
    return std::make_unique<CpuKvCache>(layout, dtype, budget_);
  } catch (const std::bad_alloc&) {
    throw DeviceError(fmt::format("out of host memory allocating the KV cache ({} bytes)",
                                  CpuKvCache::bytes(layout)));
  }
}

void CpuBackend::download(const DeviceBuffer& src, size_t offset, size_t n, float* dst) {
  std::copy_n(data(src) + offset, n, dst);
}

int32_t CpuBackend::sample(const DeviceBuffer& logits, size_t row, int vocab, const SamplingParams& params,
                           std::span<const int32_t> history, uint64_t step) {
  if (vocab <= 0 || (row + 1) * size_t(vocab) > logits.size())
    throw DeviceError(fmt::format("sample: row {} of {} logits outside a buffer of {}", row, vocab, logits.size()));
  return sample_token(std::span<const float>(data(logits) + row * size_t(vocab), size_t(vocab)), params, history,
                      step);
}

double CpuBackend::copy_bandwidth_gbs() {
  const size_t bytes = size_t(1) << 30;
  std::vector<uint8_t> src(bytes, 1), dst(bytes, 0);  // pages touched before timing
  const int64_t parts = pool_.size();
  double best = 0;
  for (int rep = 0; rep < 3; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    pool_.parallel_for(parts, [&](int64_t p0, int64_t p1) {
      for (int64_t p = p0; p < p1; ++p) {
        const size_t begin = bytes * size_t(p) / size_t(parts), end = bytes * size_t(p + 1) / size_t(parts);
        std::memcpy(dst.data() + begin, src.data() + begin, end - begin);
      }
    });
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, 2.0 * double(bytes) / s / 1e9);
  }
  return best;
}

void CpuBackend::embed(const DeviceLinear& table, DeviceBuffer& out) {
  const auto& t = static_cast<const CpuLinear&>(table);
  if (!t.weight.is_single()) throw DeviceError("embed: the table is made of several parts");
  for (int i = 0; i < batch_.size(); ++i) {
    int32_t id = batch_.tokens[size_t(i)];
    if (id < 0 || id >= t.rows())
      throw InputError(fmt::format("token id {} is outside the vocabulary (size {})", id, t.rows()));
    dequantize_row(t.single(), id, data(out) + size_t(i) * t.cols());
  }
}

void CpuBackend::norm(const DeviceBuffer& x, const DeviceNorm& w, NormKind kind, float eps, int dim, DeviceBuffer& out) {
  norm_rows(x, w, kind, eps, dim, batch_.size(), out);
}

void CpuBackend::norm_rows(const DeviceBuffer& x, const DeviceNorm& w, NormKind kind, float eps, int dim, int n,
                           DeviceBuffer& out) {
  const auto& nw = static_cast<const CpuNorm&>(w);
  const float* xs = data(x);
  float* ys = data(out);
  pool_.parallel_for(
      n, [&](int64_t b, int64_t e) {
        for (int64_t t = b; t < e; ++t) norm_row(xs + t * dim, nw, kind, eps, dim, ys + t * dim);
      },
      4 * dim);
}

void CpuBackend::add_norm(DeviceBuffer& residual, const DeviceBuffer& delta, const DeviceNorm& w, NormKind kind,
                          float eps, int dim, DeviceBuffer& out) {
  add(residual, delta, dim);
  norm(residual, w, kind, eps, dim, out);
}

void CpuBackend::gather_rows(const DeviceBuffer& src, const std::vector<int>& rows, int dim, DeviceBuffer& dst) {
  for (size_t i = 0; i < rows.size(); ++i)
    std::copy_n(data(src) + size_t(rows[i]) * size_t(dim), dim, data(dst) + i * size_t(dim));
}

void CpuBackend::add(DeviceBuffer& x, const DeviceBuffer& y, int dim) {
  float* xs = data(x);
  const float* ys = data(y);
  size_t n = size_t(batch_.size()) * dim;
  for (size_t i = 0; i < n; ++i) xs[i] += ys[i];
}

void CpuBackend::head(const DeviceBuffer& x, const std::vector<int>& rows, const DeviceNorm& w, NormKind kind, float eps,
                      int dim, const DeviceLinear& head, DeviceBuffer& gathered, DeviceBuffer& normed,
                      DeviceBuffer& logits) {
  gather_rows(x, rows, dim, gathered);
  norm_rows(gathered, w, kind, eps, dim, int(rows.size()), normed);
  matmul_rows(head, normed, int(rows.size()), logits);
}

void CpuBackend::matmul(const DeviceLinear& w, const DeviceBuffer& x, DeviceBuffer& y) { matmul_rows(w, x, batch_.size(), y); }

void CpuBackend::matmul_rows(const DeviceLinear& w, const DeviceBuffer& x, int n, DeviceBuffer& y) {
  const auto& l = static_cast<const CpuLinear&>(w);
  const float* bias = l.bias.empty() ? nullptr : l.bias.data();
  if (l.weight.is_single()) {
    // --cpu-bf16-activations: the opt-in bf16-activation GEMM for bf16 weights (never one token).
    const bool bf16_kernel = bf16_activations_ && n > 1 && l.weight.format() == Format::BF16 &&
                             cpu_level() >= CpuLevel::avx512;
    if (bf16_kernel && formats::avx512_bf16::matmul(l.single(), data(x), n, data(y), pool_)) {
      if (bias != nullptr)
        for (int t = 0; t < n; ++t)
          for (int64_t r = 0; r < l.rows(); ++r) data(y)[size_t(t) * size_t(l.rows()) + size_t(r)] += bias[r];
      return;
    }
    lowbit::matmul(l.single(), data(x), n, data(y), pool_, bias);
    return;
  }
  // Each part into its own [n, part rows] result, then row r to output row first + order[r]
  // (the part's bias entries gathered into its row order, so the format adds them itself).
  const int64_t rows = l.rows();
  float* ys = data(y);
  int64_t first = 0;
  for (const WeightPart& p : l.weight.parts) {
    const int64_t part_rows = p.tensor.rows;
    auto out_row = [&](int64_t r) { return first + (p.row_order.empty() ? r : int64_t(p.row_order[size_t(r)])); };
    std::vector<float> part_bias;
    if (bias != nullptr)
      for (int64_t r = 0; r < part_rows; ++r) part_bias.push_back(bias[out_row(r)]);
    std::vector<float> part_y(size_t(n) * size_t(part_rows));
    lowbit::matmul(p.tensor, data(x), n, part_y.data(), pool_, bias != nullptr ? part_bias.data() : nullptr);
    for (int t = 0; t < n; ++t)
      for (int64_t r = 0; r < part_rows; ++r) ys[t * rows + out_row(r)] = part_y[size_t(t) * size_t(part_rows) + size_t(r)];
    first += part_rows;
  }
}

void CpuBackend::rope(DeviceBuffer& qkv, const AttentionShape& s) {
  float* base = data(qkv);
  const int half = s.head_dim / 2;
  const int heads_with_rope = s.n_heads + s.n_kv_heads;  // q heads then k heads, contiguous
  pool_.parallel_for(batch_.size(), [&](int64_t b, int64_t e) {
    std::vector<float> c(static_cast<size_t>(half)), sn(static_cast<size_t>(half));
    for (int64_t t = b; t < e; ++t) {
      // As transformers: angle = float(pos) * inv_freq in fp32, then cos/sin of that fp32 value.
      for (int i = 0; i < half; ++i) {
        float angle = float(batch_.positions[size_t(t)]) * inv_freq_[size_t(i)];
        c[size_t(i)] = float(std::cos(double(angle)));
        sn[size_t(i)] = float(std::sin(double(angle)));
      }
      float* row = base + t * s.qkv_dim();
      for (int h = 0; h < heads_with_rope; ++h) {
        float* v = row + h * s.head_dim;
        for (int i = 0; i < half; ++i) {
          float x0 = v[i], x1 = v[i + half];
          v[i] = x0 * c[size_t(i)] - x1 * sn[size_t(i)];
          v[i + half] = x1 * c[size_t(i)] + x0 * sn[size_t(i)];
        }
      }
    }
  }, int64_t(heads_with_rope) * s.head_dim * 4);
}

void CpuBackend::attention(const DeviceBuffer& qkv, KvCache& cache, int layer, const AttentionShape& s,
                           DeviceBuffer& out) {
  auto& kv = static_cast<CpuKvCache&>(cache);
  const cpu_attention::KvLayout& layout = kv.layout;
  const float* rows = data(qkv);
  const int n = batch_.size();
  for (int t = 0; t < n; ++t) {
    int slot = batch_.slots[size_t(t)], pos = batch_.positions[size_t(t)];
    if (slot < 0 || slot >= kv.n_slots() || pos < 0 || pos >= kv.max_context())
      throw InputError(fmt::format("position {} of slot {} is outside the KV cache ({} slots x {} positions)",
                                   pos, slot, kv.n_slots(), kv.max_context()));
    const float* row = rows + size_t(t) * s.qkv_dim();
    for (int d = 0; d < s.kv_dim(); ++d) kv.k[layout.key_index(layer, slot, pos, d)] = kv.stored(row[s.q_dim() + d]);
    float* value_row = kv.v.data() + layout.value_row(layer, slot, pos);
    for (int d = 0; d < s.kv_dim(); ++d) value_row[d] = kv.stored(row[s.q_dim() + s.kv_dim() + d]);
  }
  const int group = s.n_heads / s.n_kv_heads;
  const float scale = 1.0f / std::sqrt(float(s.head_dim));
  const bool avx512 = cpu_level() >= CpuLevel::avx512;
  // Jobs of `per_job` heads of one token: the AVX-512 kernel advances their weighted sums together
  // (several independent chains when head_dim is small); the plain loops take one head at a time.
  const int per_job = avx512 ? std::min(s.n_heads, cpu_attention::jobs_per_call(s.head_dim)) : 1;
  const int jobs_per_token = (s.n_heads + per_job - 1) / per_job;
  const int64_t stride = layout.blocks() * cpu_attention::kKeyBlock;
  float* o = data(out);
  pool_.parallel_for(int64_t(n) * jobs_per_token, [&](int64_t b, int64_t e) {
    // One scratch block per chunk of jobs, never one per job.
    std::vector<float> scores(size_t(stride * per_job));
    std::vector<cpu_attention::AttentionJob> heads(static_cast<size_t>(per_job));
    for (int64_t job = b; job < e; ++job) {
      const int t = int(job / jobs_per_token), h0 = int(job % jobs_per_token) * per_job;
      const int count = std::min(per_job, s.n_heads - h0);
      for (int k = 0; k < count; ++k) {
        const int h = h0 + k;
        heads[size_t(k)] = {layer,
                            batch_.slots[size_t(t)],
                            batch_.positions[size_t(t)],
                            h / group,
                            s.head_dim,
                            scale,
                            rows + size_t(t) * s.qkv_dim() + size_t(h) * s.head_dim,
                            o + size_t(t) * s.q_dim() + size_t(h) * s.head_dim};
      }
      if (avx512)
        cpu_attention::attend_avx512(layout, kv.k.data(), kv.v.data(), heads.data(), count, scores.data(), stride);
      else
        cpu_attention::attend_plain(layout, kv.k.data(), kv.v.data(), heads[0], scores.data());
    }
  }, int64_t(kv.max_context()) * s.head_dim * per_job);
}

void CpuBackend::activation(const DeviceBuffer& gu, Activation act, int hidden, DeviceBuffer& out) {
  const float* x = data(gu);
  float* y = data(out);
  // One token per item: std::exp / std::erf cost some 20 operations per element.
  pool_.parallel_for(batch_.size(), [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      float* yt = y + size_t(t) * hidden;
      if (act == Activation::SwiGLU) {
        const float* gate = x + size_t(t) * 2 * hidden;
        const float* up = gate + hidden;
        for (int i = 0; i < hidden; ++i) yt[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
      } else {
        const float* xt = x + size_t(t) * hidden;
        for (int i = 0; i < hidden; ++i) yt[i] = 0.5f * xt[i] * (1.0f + std::erf(xt[i] * float(M_SQRT1_2)));
      }
    }
  }, int64_t(hidden) * 20);
}

}  // namespace lowbit
