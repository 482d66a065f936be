// Vector kernels behind the formats' CPU matmuls, one file per instruction set
// (kernels_avx512.cpp: fp32-activation formats; kernels_int8.cpp: int8 dot products). A format's
// matmul picks them by cpu_level() and otherwise runs its own plain loops, which stay the
// definition: every kernel here gives the plain loops' result bit for bit (tests/test_kernels.cpp).
//
// fp32 activations (f32, bf16, the 4-bit formats, W4A16 on its fp16-rounded activations):
//   y[t, r] = dot_f32(x[t, :], W[r, :]) with W[r, c] the format's exact dequantized value and
//   dot_f32's summation (sixteen lane sums in order, separate multiplies and adds, the lanes
//   summed by sum_lanes16). The kernels only change which values sit in which register.
// int8 activations (LLM.int8, W8A8): the int32 sums are exact in any order.
#pragma once
#include <cstdint>
#include <vector>

#include "core/cpu_features.h"
#include "core/parallel.h"
#include "formats/format.h"

namespace lowbit::formats {

namespace avx512 {

// y = x W^T as above for n_tokens rows of x: one token through a fused decode + dot product
// (several rows at a time, each row's weights read once); more tokens through a blocked GEMM
// that decodes a panel of weights once per block of columns and multiplies it with every token.
// They return false where the shape is outside what they handle (the caller runs its own loops):
//   f32, bf16: any shape;  4-bit: cols and block size multiples of 32, cols a multiple of the
//   block size (blocks start at row starts);  W4A16: cols and group multiples of 32.
bool matmul_f32(const QuantizedTensor& q, const float* x, int64_t n_tokens, float* y, ThreadPool& pool);
bool matmul_bf16(const QuantizedTensor& q, const float* x, int64_t n_tokens, float* y, ThreadPool& pool);
bool matmul_four_bit(const QuantizedTensor& q, const float* x, int64_t n_tokens, float* y, ThreadPool& pool);
// x must already be rounded to fp16 (round_f16 below).
bool matmul_w4a16(const QuantizedTensor& q, const float* x16, int64_t n_tokens, float* y, ThreadPool& pool);

// out[i] = round_f16(x[i]) bit for bit (F16C conversions; NaN becomes round_f16's quiet NaN).
void round_f16(const float* x, int64_t n, float* out);

// The activation side of the int8 formats, as their plain loops compute it:
// max |x[i]| over the values that are not NaN and, when threshold > 0, below threshold (what
// std::max(absmax, |x|) gives: LLM.int8's rowStat with its outlier threshold, W8A8's absmax with 0).
float absmax_below(const float* x, int64_t n, float threshold);
// out[i] = int8(clamp(rint(x[i] / scale), -128, 127)) for finite x (W8A8's activations).
void divide_round_int8(const float* x, int64_t n, float scale, int8_t* out);
// out[i] = 0 where zero[i] != 0 or x[i] * factor is NaN, else int8(clamp(rint(x[i] * factor),
// -128, 127)) (LLM.int8's CA).
void scale_round_int8(const float* x, int64_t n, float factor, const uint8_t* zero, int8_t* out);

}  // namespace avx512

namespace avx512_bf16 {

// The opt-in bf16-activation matmul of BF16 weights (CpuBackend with bf16_activations, the
// --cpu-bf16-activations flag), for several tokens: the activations rounded to bf16 (nearest
// even, subnormals flushed) and multiplied with vdpbf16ps (AVX512-BF16), about twice the fp32
// kernels' multiply-adds per instruction. NOT the plain loops' arithmetic: its error against
// them is bounded in tests/test_kernels.cpp. Needs cpu_features().avx512bf16 and AVX-512;
// false for other formats.
bool matmul(const QuantizedTensor& q, const float* x, int64_t n_tokens, float* y, ThreadPool& pool);

}  // namespace avx512_bf16

// int8 activations [n_tokens, cols] laid out for one level's dot-product kernel. The VNNI kernel
// multiplies unsigned weights (w + 128) by signed activations, so it keeps 128 * sum_c a[t, c]
// per token to subtract; the other levels read the activations as they are.
class Int8Activations {
 public:
  Int8Activations(const int8_t* a, int64_t n_tokens, int64_t cols, CpuLevel level);
  CpuLevel level() const { return level_; }
  int64_t n_tokens() const { return n_tokens_; }
  int64_t cols() const { return cols_; }
  const int8_t* rows() const { return rows_; }           // [n_tokens, cols] as given
  const int32_t* tiles() const { return tiles_.data(); }  // VNNI GEMM layout: 4-byte words
  const int32_t* offsets() const { return offsets_.data(); }  // VNNI: 128 * sum_c a[t, c]

 private:
  CpuLevel level_;
  int64_t n_tokens_, cols_;
  const int8_t* rows_;
  std::vector<int32_t> tiles_;
  std::vector<int32_t> offsets_;
};

// acc[t * ld + r] = sum_c a[t, c] * w[r, c] (int32, exact) for rows r in [r0, r1) of the int8
// weight w [rows, cols], with a.level()'s kernel (plain loops at CpuLevel::plain).
void int8_dot_rows(const Int8Activations& a, const int8_t* w, int64_t r0, int64_t r1, int32_t* acc, int64_t ld);

}  // namespace lowbit::formats
