// W8A8 int8: int8 weights with one symmetric scale per output channel (static), int8 activations
// with one scale per token (dynamic), int32 accumulation -- vLLM compressed-tensors' INT8 scheme,
// with the rounding points below as lowbit defines them (tools/format_reference.py implements
// the same definition independently); vLLM's own kernels round elsewhere (x * (127 / absmax))
// and are not claimed bit for bit.
//
// Weights:  w_scale[r] = absmax(row r) / 127 (fp32); q = saturate_int8(rint(w / w_scale)),
//           0 for an all-zero row. Dequantized weight = q * w_scale.
// Activations per token: x_scale = absmax / 127; xq = saturate_int8(rint(x / x_scale)).
// Output:   y = float(sum_c xq * q) * (w_scale * x_scale)   (fp32)
// Planes (CUDA layout: row-major int8 rows, one fp32 scale per row):
//   codes  [rows, cols] int8 (stored as bytes)
//   scales [rows] fp32 w_scale
#include <algorithm>
#include <cmath>
#include <vector>

#include "core/cpu_features.h"
#include "formats/format_impl.h"
#include "formats/kernels.h"
#include "formats/layout_int8.h"

namespace lowbit::formats {

namespace {

// Quantizes n values with one symmetric scale (absmax / 127); returns the scale.
float quantize_symmetric(const float* in, int64_t n, int8_t* out) {
  float absmax = 0.0f;
  for (int64_t i = 0; i < n; ++i) absmax = std::max(absmax, std::fabs(in[i]));
  const float scale = absmax / 127.0f;
  for (int64_t i = 0; i < n; ++i) out[i] = scale > 0.0f ? round_to_int8(in[i] / scale) : int8_t(0);
  return scale;
}

const int8_t* weight_row(const QuantizedTensor& q, int64_t row) {
  return reinterpret_cast<const int8_t*>(q.codes.data()) + row * q.cols;
}

void w8a8_quantize(QuantizedTensor& q, const float* w, ThreadPool& pool) {
  allocate_planes(q);
  pool.parallel_for(q.rows, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r)
      q.scales[size_t(r)] =
          quantize_symmetric(w + r * q.cols, q.cols, reinterpret_cast<int8_t*>(q.codes.data()) + r * q.cols);
  });
}

void w8a8_dequantize_row(const QuantizedTensor& q, int64_t row, float* out) {
  const int8_t* in = weight_row(q, row);
  const float scale = q.scales[size_t(row)];
  for (int64_t c = 0; c < q.cols; ++c) out[c] = float(in[c]) * scale;
}

// quantize_symmetric of one token's activations, with the AVX-512 loops where the CPU has them
// (the same values: kernels.h).
float quantize_activations(const float* in, int64_t n, int8_t* out, bool avx512) {
  if (!avx512) return quantize_symmetric(in, n, out);
  const float scale = avx512::absmax_below(in, n, 0.0f) / 127.0f;
  if (scale > 0.0f)
    avx512::divide_round_int8(in, n, scale, out);
  else
    std::fill_n(out, n, int8_t(0));
  return scale;
}

void w8a8_matmul(const QuantizedTensor& q, const float* x, int64_t n_tokens, const float* bias, float* y,
                 ThreadPool& pool) {
  const int64_t rows = q.rows, cols = q.cols;
  const CpuLevel level = cpu_level();
  std::vector<int8_t> xq(size_t(n_tokens * cols));
  std::vector<float> x_scale(static_cast<size_t>(n_tokens));
  pool.parallel_for(n_tokens, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t)
      x_scale[size_t(t)] = quantize_activations(x + t * cols, cols, xq.data() + t * cols, level >= CpuLevel::avx512);
  }, 4 * cols);
  // acc = sum_c xq * q (int32, exact in any order: kernels.h picks the instructions).
  const Int8Activations activations(xq.data(), n_tokens, cols, level);
  std::vector<int32_t> acc(size_t(n_tokens * rows));
  pool.parallel_for(rows, [&](int64_t begin, int64_t end) {
    int8_dot_rows(activations, weight_row(q, 0), begin, end, acc.data(), rows);
    for (int64_t t = 0; t < n_tokens; ++t)
      for (int64_t r = begin; r < end; ++r)
        y[t * rows + r] = float(acc[size_t(t * rows + r)]) * (q.scales[size_t(r)] * x_scale[size_t(t)]);
  }, cols * n_tokens);
  add_bias_after(q, bias, n_tokens, y);
}

// KL(bf16 || format) bounds on the fixture models: 1.5x the measured values (docs/quality.md).
constexpr KlBound kW8a8Kl[] = {
    {"falcon-40b-style", 0.0023},
    {"falcon-7b-style", 0.0022},
    {"falcon-mha-bias", 0.0041},
    {"llama-gqa-tied", 0.0092},
    {"falcon-untidy", 0.0051},
    {"llama-untidy", 0.011},
    {"llama-linear-rope-bf16", 0.0079},
    {"llama3-rope", 0.0092},
    {"stories260K", 0.0028},
};

}  // namespace

const FormatDefinition w8a8_format{
    {Format::W8A8, "W8A8", "int8 weights, one symmetric scale per output channel; int8 activations per token",
     Activations::int8_per_token, true, int8_row_planes, kW8a8Kl},
    w8a8_quantize, w8a8_dequantize_row, w8a8_matmul};

}  // namespace lowbit::formats
