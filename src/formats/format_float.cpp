// F32 and BF16: unquantized weights.
//
// F32  codes = the fp32 values, row-major [rows, cols], 4 bytes each (little endian). The
//      exactness oracle: dequantize is a copy, matmul is a plain fp32 dot product.
// BF16 codes = bfloat16 bit patterns (uint16, little endian), row-major [rows, cols], rounded
//      from fp32 to nearest even as torch's .to(torch.bfloat16) does. Activations stay fp32;
//      the weight is widened to fp32 (exact) and accumulated in fp32.
// No scales, no other planes. A CUDA GEMV reads `codes` as float / __nv_bfloat16 directly.
#include <cstring>

#include "core/cpu_features.h"
#include "core/half.h"
#include "formats/format_impl.h"
#include "formats/kernels.h"

namespace lowbit::formats {

namespace {

const float* f32_row(const QuantizedTensor& q, int64_t row) {
  return reinterpret_cast<const float*>(q.codes.data()) + row * q.cols;
}

void f32_quantize(QuantizedTensor& q, const float* w, ThreadPool&) {
  allocate_planes(q);
  if (q.numel() > 0) std::memcpy(q.codes.data(), w, q.codes.size());
}

void f32_dequantize_row(const QuantizedTensor& q, int64_t row, float* out) {
  std::memcpy(out, f32_row(q, row), size_t(q.cols) * sizeof(float));
}

LOWBIT_VECTOR_CLONES void f32_rows(const QuantizedTensor& q, const float* x, int64_t n_tokens, float* y,
                                   int64_t begin, int64_t end) {
  for (int64_t r = begin; r < end; ++r)
    for (int64_t t = 0; t < n_tokens; ++t) y[t * q.rows + r] = dot_f32(x + t * q.cols, f32_row(q, r), q.cols);
}

void f32_matmul(const QuantizedTensor& q, const float* x, int64_t n_tokens, const float* bias, float* y,
                ThreadPool& pool) {
  if (cpu_level() >= CpuLevel::avx512 && avx512::matmul_f32(q, x, n_tokens, y, pool)) {
    add_bias_after(q, bias, n_tokens, y);
    return;
  }
  pool.parallel_for(q.rows, [&](int64_t begin, int64_t end) { f32_rows(q, x, n_tokens, y, begin, end); },
                    q.cols * n_tokens);
  add_bias_after(q, bias, n_tokens, y);
}

const uint16_t* bf16_codes(const QuantizedTensor& q) { return reinterpret_cast<const uint16_t*>(q.codes.data()); }

void bf16_quantize(QuantizedTensor& q, const float* w, ThreadPool& pool) {
  allocate_planes(q);
  auto* out = reinterpret_cast<uint16_t*>(q.codes.data());
  pool.parallel_for(q.numel(), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) out[i] = f32_to_bf16(w[i]);
  });
}

void bf16_dequantize_row(const QuantizedTensor& q, int64_t row, float* out) {
  const uint16_t* in = bf16_codes(q) + row * q.cols;
  for (int64_t c = 0; c < q.cols; ++c) out[c] = bf16_to_f32(in[c]);
}

LOWBIT_VECTOR_CLONES void bf16_rows(const QuantizedTensor& q, const float* x, int64_t n_tokens, float* y,
                                    int64_t begin, int64_t end, float* w) {
  decoded_rows(q, x, n_tokens, y, begin, end, w, [&](int64_t r, float* out) { bf16_dequantize_row(q, r, out); });
}

void bf16_matmul(const QuantizedTensor& q, const float* x, int64_t n_tokens, const float* bias, float* y,
                 ThreadPool& pool) {
  if (cpu_level() >= CpuLevel::avx512 && avx512::matmul_bf16(q, x, n_tokens, y, pool)) {
    add_bias_after(q, bias, n_tokens, y);
    return;
  }
  matmul_by_decoded_rows(q, x, n_tokens, y, pool, bf16_rows);
  add_bias_after(q, bias, n_tokens, y);
}

PlaneSizes f32_planes(int64_t rows, int64_t cols, const QuantOptions&) {
  PlaneSizes s;
  s[Plane::codes] = 4 * size_t(rows) * size_t(cols);
  return s;
}
PlaneSizes bf16_planes(int64_t rows, int64_t cols, const QuantOptions&) {
  PlaneSizes s;
  s[Plane::codes] = 2 * size_t(rows) * size_t(cols);
  return s;
}

// KL(bf16 || format) bounds on the fixture models: 1.5x the measured values (docs/quality.md).
constexpr KlBound kF32Kl[] = {
    {"falcon-40b-style", 9.3e-05},
    {"falcon-7b-style", 0.00011},
    {"falcon-mha-bias", 0.00023},
    {"llama-gqa-tied", 0.00055},
    {"falcon-untidy", 0.00027},
    {"llama-untidy", 0.0006},
    {"llama-linear-rope-bf16", 1.1e-05},
    {"llama3-rope", 0.00041},
    {"stories260K", 0.00014},
};

}  // namespace

const FormatDefinition f32_format{
    {Format::F32, "f32", "no quantization: fp32 weights (the exactness oracle)", Activations::fp32, true, f32_planes,
     kF32Kl},
    f32_quantize, f32_dequantize_row, f32_matmul};
// bf16 is the reference every format's KL is measured against: no bound of its own.
const FormatDefinition bf16_format{
    {Format::BF16, "bf16", "weights rounded to bfloat16 (nearest even), fp32 activations", Activations::fp32, true,
     bf16_planes, {}},
    bf16_quantize, bf16_dequantize_row, bf16_matmul};

}  // namespace lowbit::formats
