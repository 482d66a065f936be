// Fused W4A16 decode GEMV. Each row starts on a byte (row_bytes = ceil(cols / 2)); column 2j is
// the LOW nibble of byte j, 2j+1 the high one; an fp16 scale (and, asymmetric, a zero point byte)
// per (row, group of `group` columns). A weight value is float(code - zero) * scale, exact in
// fp32 as on the CPU; activations are rounded to fp16 on load (the CPU rounds x to fp16 first),
// products accumulate in fp32: only the summation order differs from the CPU reference.
// Design as the other GEMVs: one warp per row, all tokens against each decoded chunk; the fast
// path (cols % 8 == 0 and group % 8 == 0) loads one 32-bit word = 8 codes of one group per lane,
// anything else takes a scalar loop by column.
#include <cuda_fp16.h>

#include "kernels/common.cuh"
#include "kernels/gemv.cuh"
#include "kernels/gemv_w4a16.cuh"
#include "kernels/quant_math.h"

namespace lowbit::kernels {

namespace {

constexpr int kWarpsPerBlock = 8;
constexpr int kSymmetricZero = 8;

struct GroupScale {
  float scale;
  int zero;
};

__device__ __forceinline__ GroupScale group_scale(const QuantizedWeightView& w, int row, int col) {
  const size_t at = w4a16_group_index(row, col, w.cols, w.group);
  return {__half2float(__ushort_as_half(w.scales16[at])), w.zeros != nullptr ? int(w.zeros[at]) : kSymmetricZero};
}

struct W4a16Decoder {
  __device__ static float value(const QuantizedWeightView& w, int r, int c) {
    const GroupScale g = group_scale(w, r, c);
    return w4a16_value(w4a16_code(w.codes, r, c, w.cols), g.zero, g.scale);
  }
};

template <int kTokens>
__global__ void __launch_bounds__(kWarpsPerBlock * 32)
    gemv_w4a16_kernel(QuantizedWeightView w, const float* __restrict__ bias, const float* __restrict__ x, int n_tokens,
                      float* __restrict__ y) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int row = blockIdx.x * kWarpsPerBlock + warp;
  if (row >= w.rows) return;
  const int cols = w.cols;

  float acc[kTokens];
#pragma unroll
  for (int t = 0; t < kTokens; ++t) acc[t] = 0.0f;

  if (cols % 8 == 0 && w.group % 8 == 0) {
    // row_bytes = cols / 2 is a multiple of 4: 32-bit loads are aligned.
    const uint32_t* packed = reinterpret_cast<const uint32_t*>(w.codes + size_t(row) * (cols / 2));
#pragma unroll 4
    for (int col = lane * 8; col < cols; col += 32 * 8) {
      const uint32_t word = packed[col / 8];
      const GroupScale g = group_scale(w, row, col);
      float wv[8];
#pragma unroll
      for (int i = 0; i < 8; ++i) wv[i] = w4a16_value(w4a16_word_code(word, i), g.zero, g.scale);
#pragma unroll
      for (int t = 0; t < kTokens; ++t) {
        if (t < n_tokens) {
          const float4* xt = reinterpret_cast<const float4*>(x + size_t(t) * cols + col);
          const float4 a = xt[0], b = xt[1];
          acc[t] += wv[0] * round_to_half(a.x) + wv[1] * round_to_half(a.y) + wv[2] * round_to_half(a.z) +
                    wv[3] * round_to_half(a.w) + wv[4] * round_to_half(b.x) + wv[5] * round_to_half(b.y) +
                    wv[6] * round_to_half(b.z) + wv[7] * round_to_half(b.w);
        }
      }
    }
  } else {
    for (int col = lane; col < cols; col += 32) {
      const float wv = W4a16Decoder::value(w, row, col);
#pragma unroll
      for (int t = 0; t < kTokens; ++t)
        if (t < n_tokens) acc[t] += wv * round_to_half(x[size_t(t) * cols + col]);
    }
  }

  const float b = bias != nullptr ? bias[row] : 0.0f;
#pragma unroll
  for (int t = 0; t < kTokens; ++t) {
    const float total = warp_sum(acc[t]);
    if (lane == 0 && t < n_tokens) y[size_t(t) * w.rows + row] = total + b;
  }
}

}  // namespace

cudaError_t launch_gemv_w4a16(const QuantizedWeightView& w, const float* bias, const float* x, int n_tokens, float* y,
                              cudaStream_t stream) {
  if (n_tokens <= 0 || w.rows <= 0) return cudaSuccess;
  if (n_tokens > kMaxGemvTokens || w.group <= 0) return cudaErrorInvalidValue;
  const unsigned blocks = unsigned((w.rows + kWarpsPerBlock - 1) / kWarpsPerBlock), threads = kWarpsPerBlock * 32;
  if (n_tokens <= 1)
    return launch<gemv_w4a16_kernel<1>>({blocks, threads, 0, stream}, w, bias, x, n_tokens, y);
  else if (n_tokens <= 2)
    return launch<gemv_w4a16_kernel<2>>({blocks, threads, 0, stream}, w, bias, x, n_tokens, y);
  else if (n_tokens <= 4)
    return launch<gemv_w4a16_kernel<4>>({blocks, threads, 0, stream}, w, bias, x, n_tokens, y);
  else if (n_tokens <= 8)
    return launch<gemv_w4a16_kernel<8>>({blocks, threads, 0, stream}, w, bias, x, n_tokens, y);
  else
    return launch<gemv_w4a16_kernel<16>>({blocks, threads, 0, stream}, w, bias, x, n_tokens, y);
}

cudaError_t launch_dequantize_w4a16(const QuantizedWeightView& w, uint16_t* out, cudaStream_t stream) {
  return launch_dequantize_bf16<W4a16Decoder>(w, out, stream);
}

}  // namespace lowbit::kernels
