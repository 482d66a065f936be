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
  q.codes.resize(size_t(q.numel()) * sizeof(float));
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
  q.codes.resize(size_t(q.numel()) * sizeof(uint16_t));
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

constexpr FormatOps kF32Ops{f32_quantize, f32_dequantize_row, f32_matmul};
constexpr FormatOps kBf16Ops{bf16_quantize, bf16_dequantize_row, bf16_matmul};

}  // namespace

const FormatOps& float_ops(Format f) { return f == Format::BF16 ? kBf16Ops : kF32Ops; }

}  // namespace lowbit::formats
