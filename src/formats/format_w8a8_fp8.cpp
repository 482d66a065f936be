// W8A8-fp8: llm-compressor's FP8_DYNAMIC scheme (the compressed-tensors checkpoints vLLM serves):
// float8_e4m3fn weights with one symmetric fp32 scale per output channel (static), e4m3
// activations with one scale per token computed at run time (dynamic). The quantizers are
// compressed-tensors' own, byte for byte (tests/test_formats.cpp against
// tools/make_fp8_fixtures.py, which runs compressed-tensors 0.20):
//
// Weights, per row r: absmax = max |w[r, :]|; w_scale[r] = absmax / 448 (fp32 division), and an
//           all-zero row (scale 0) gets fp32 eps 2^-23 instead, as calculate_qparams does;
//           codes = e4m3(w / w_scale) with core/fp8.h's cast (the scheme's clamp to +-448, then
//           round to nearest even). Dequantized weight = e4m3_value * w_scale.
// Activations, per token t: the same with x_scale[t] (compute_dynamic_scales_and_zp, strategy
//           token). A token holding NaN has a NaN absmax, hence NaN scale and NaN outputs, as in
//           the scheme; +-inf gives an inf scale and NaN outputs too.
// Output:   y[t, r] = fp32(S) * fp32(w_scale[r] * x_scale[t]) (+ bias in fp32), where S is the
//           EXACT sum over c of e4m3(xq[t, c]) * e4m3(wq[r, c]) rounded once to fp32. Each product
//           is a multiple of 2^-18 below 2^18, so the sum is exact in fp64 in any order while
//           |S| < 2^35, i.e. for cols <= 171,000 (every model lowbit loads): the result does not
//           depend on the summation order. A GPU's fp32 accumulation (vLLM's cutlass/cuBLASLt
//           kernels, lowbit's CUDA GEMV) differs from it by that accumulation's rounding only.
// Planes (CUDA layout: row-major e4m3 rows, one fp32 scale per row):
//   codes  [rows, cols] e4m3 bytes
//   scales [rows] fp32 w_scale
#include <algorithm>
#include <array>
#include <cfloat>
#include <cmath>
#include <vector>

#include "core/fp8.h"
#include "formats/format_impl.h"

namespace lowbit::formats {

namespace {

// absmax of n values, NaN if any is NaN (torch's amax propagates NaN).
float absmax_or_nan(const float* in, int64_t n) {
  float absmax = 0.0f;
  for (int64_t i = 0; i < n; ++i) {
    const float a = std::fabs(in[i]);
    if (std::isnan(a)) return a;
    absmax = std::max(absmax, a);
  }
  return absmax;
}

// One row (a weight row or a token) with its own scale; returns the scale.
float quantize_e4m3_row(const float* in, int64_t n, uint8_t* out) {
  float scale = absmax_or_nan(in, n) / 448.0f;
  if (scale == 0.0f) scale = FLT_EPSILON;  // calculate_qparams: a zero scale becomes eps
  for (int64_t i = 0; i < n; ++i) out[i] = f32_to_e4m3(in[i] / scale);
  return scale;
}

// The e4m3 values as fp64, for the exact dot products.
const std::array<double, 256>& e4m3_doubles() {
  static const std::array<double, 256> table = [] {
    std::array<double, 256> t{};
    for (int b = 0; b < 256; ++b) t[size_t(b)] = double(e4m3_to_f32(uint8_t(b)));
    return t;
  }();
  return table;
}

void fp8_quantize(QuantizedTensor& q, const float* w, ThreadPool& pool) {
  allocate_planes(q);
  pool.parallel_for(q.rows, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r)
      q.scales[size_t(r)] = quantize_e4m3_row(w + r * q.cols, q.cols, q.codes.data() + r * q.cols);
  });
}

void fp8_dequantize_row(const QuantizedTensor& q, int64_t row, float* out) {
  const uint8_t* in = q.codes.data() + row * q.cols;
  const float scale = q.scales[size_t(row)];
  for (int64_t c = 0; c < q.cols; ++c) out[c] = e4m3_to_f32(in[c]) * scale;
}

// out[i] = value of code in[i], through the table (a plain loop the compiler keeps in registers).
void decode_e4m3_row(const uint8_t* __restrict__ in, int64_t n, const double* __restrict__ table,
                     double* __restrict__ out) {
  for (int64_t i = 0; i < n; ++i) out[i] = table[in[i]];
}

// sum_i a[i] * b[i] in fp64: exact for e4m3 operands (see the top), so the partial sums'
// order, which lets the compiler vectorize, changes nothing.
LOWBIT_VECTOR_CLONES double dot_exact(const double* a, const double* b, int64_t n) {
  double part[4] = {0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 4 <= n; i += 4)
    for (int k = 0; k < 4; ++k) part[k] += a[i + k] * b[i + k];
  for (; i < n; ++i) part[0] += a[i] * b[i];
  return (part[0] + part[1]) + (part[2] + part[3]);
}

void fp8_matmul(const QuantizedTensor& q, const float* x, int64_t n_tokens, const float* bias, float* y,
                ThreadPool& pool) {
  const int64_t rows = q.rows, cols = q.cols;
  const auto& value = e4m3_doubles();
  // Activations: e4m3 per token, kept as their fp64 values [n_tokens, cols].
  std::vector<double> xv(size_t(n_tokens * cols));
  std::vector<float> x_scale(static_cast<size_t>(n_tokens));
  pool.parallel_for(n_tokens, [&](int64_t begin, int64_t end) {
    std::vector<uint8_t> codes(static_cast<size_t>(cols));
    for (int64_t t = begin; t < end; ++t) {
      x_scale[size_t(t)] = quantize_e4m3_row(x + t * cols, cols, codes.data());
      decode_e4m3_row(codes.data(), cols, value.data(), xv.data() + t * cols);
    }
  }, 4 * cols);
  pool.parallel_for(rows, [&](int64_t begin, int64_t end) {
    std::vector<double> wv(size_t(cols > 0 ? cols : 1));
    for (int64_t r = begin; r < end; ++r) {
      decode_e4m3_row(q.codes.data() + r * cols, cols, value.data(), wv.data());
      for (int64_t t = 0; t < n_tokens; ++t) {
        const float sum = float(dot_exact(xv.data() + t * cols, wv.data(), cols));
        y[t * rows + r] = sum * (q.scales[size_t(r)] * x_scale[size_t(t)]);
      }
    }
  }, cols * (n_tokens + 1));
  add_bias_after(q, bias, n_tokens, y);
}

// KL(bf16 || format) bounds on the fixture models: 1.5x the measured values (docs/quality.md).
constexpr KlBound kFp8Kl[] = {
    {"falcon-40b-style", 0.024},
    {"falcon-7b-style", 0.03},
    {"falcon-mha-bias", 0.045},
    {"llama-gqa-tied", 0.11},
    {"falcon-untidy", 0.063},
    {"llama-untidy", 0.18},
    {"llama-linear-rope-bf16", 0.12},
    {"llama3-rope", 0.16},
    {"stories260K", 0.034},
};

}  // namespace

const FormatDefinition w8a8_fp8_format{
    {Format::W8A8_FP8, "W8A8-fp8",
     "e4m3 weights, one fp32 scale per output channel; e4m3 activations per token (FP8_DYNAMIC)",
     Activations::e4m3_per_token, true, int8_row_planes, kFp8Kl},
    fp8_quantize, fp8_dequantize_row, fp8_matmul};

}  // namespace lowbit::formats
