// W4A16 (layout: src/formats/format_w4a16.cpp): the decode GEMV (the template in
// kernels/gemv_template.cuh with the format below) and the bf16 dequantizer of the prefill path.
// Each row starts on a byte (row_bytes = ceil(cols / 2)); column 2j is the LOW nibble of byte j,
// 2j+1 the high one; an fp16 scale (and, asymmetric, a zero point byte) per (row, group of
// `group` columns). A weight value is float(code - zero) * scale, exact in fp32 as on the CPU;
// activations are rounded to fp16 (the CPU rounds x to fp16 first), products accumulate in fp32.
//
// A 16-byte chunk is 32 columns of a row; with cols % 32 == 0 and a power-of-two group of at
// least 32 columns it lies in one group: scale and zero come from one index by shift, and the
// scale multiplies sum_i (q_i - zero) x_i once.
#include <cuda_fp16.h>

#include "kernels/gemv_template.cuh"
#include "kernels/gemv_w4a16.cuh"

namespace lowbit::kernels {

namespace {

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

__host__ __device__ inline int log2_exact(int v) {
  int s = 0;
  while ((1 << s) < v) ++s;
  return s;
}

struct W4a16Format {
  using Shared = gemv::NoShared;
  using Chunk = GroupScale;
  static constexpr int kValues = 32, kSub = 8;
  static constexpr bool kScaled = true;
  static constexpr int rows_per_warp(int tokens) { return tokens <= 2 ? 4 : (tokens <= 4 ? 2 : 1); }
  static bool fast(const QuantizedWeightView& w) {
    const int g = w.group;
    return w.cols % kValues == 0 && g >= kValues && (g & (g - 1)) == 0;
  }
  static bool valid(const QuantizedWeightView& w) { return w.group > 0; }
  __device__ static void load_shared(const QuantizedWeightView&, Shared&) {}
  // fp16(x): the CPU reference's activation rounding, once per loaded value (shared by the rows).
  __device__ static __forceinline__ float activation(float v) { return round_to_half(v); }
  __device__ static __forceinline__ uint4 load(const QuantizedWeightView& w, int r, int c) {
    return reinterpret_cast<const uint4*>(w.codes + size_t(r) * size_t(w.cols / 2))[c];
  }
  __device__ static __forceinline__ Chunk chunk(const QuantizedWeightView& w, const Shared&, int r, int c) {
    const int groups = (w.cols + w.group - 1) >> log2_exact(w.group);
    const size_t at = size_t(r) * size_t(groups) + size_t((c * kValues) >> log2_exact(w.group));
    return {__half2float(__ushort_as_half(w.scales16[at])), w.zeros != nullptr ? int(w.zeros[at]) : kSymmetricZero};
  }
  __device__ static __forceinline__ float scale(Chunk c) { return c.scale; }
  // Word s holds columns 8s..8s+7, column i in nibble i (low first); q - zero is exact.
  __device__ static __forceinline__ void decode(const Shared&, Chunk c, uint4 raw, int sub, float (&v)[kSub]) {
    const unsigned word = sub == 0 ? raw.x : sub == 1 ? raw.y : sub == 2 ? raw.z : raw.w;
#pragma unroll
    for (int i = 0; i < kSub; ++i) v[i] = float(w4a16_word_code(word, i) - c.zero);
  }
  __device__ static float value(const QuantizedWeightView& w, const Shared&, int r, int c) {
    return W4a16Decoder::value(w, r, c);
  }
};

}  // namespace

cudaError_t launch_gemv_w4a16(const QuantizedWeightView& w, const float* bias, const float* x, int n_tokens, float* y,
                              void*, cudaStream_t stream) {
  return gemv::launch_gemv<W4a16Format>(w, bias, x, n_tokens, y, stream);
}

cudaError_t launch_fused_gemv_w4a16(const GemvParts& parts, const float* bias, const float* x, int n_tokens, float* y,
                                    const GemvSteps& steps, cudaStream_t stream) {
  return gemv::launch_fused_gemv<W4a16Format>(parts, bias, x, n_tokens, y, steps, stream);
}

cudaError_t launch_dequantize_w4a16(const QuantizedWeightView& w, uint16_t* out, cudaStream_t stream) {
  return launch_dequantize_bf16<W4a16Decoder>(w, out, stream);
}

}  // namespace lowbit::kernels
