// W4A16 (layout: src/formats/format_w4a16.cpp): the decode GEMV (the template in
// kernels/gemv_template.cuh with the format below), the bf16 dequantizer of the prefill path, and
// the upload's interleave of the codes. Each row starts on a byte (row_bytes = ceil(cols / 2));
// column 2j is the LOW nibble of byte j, 2j+1 the high one; an fp16 scale (and, asymmetric, a zero
// point byte) per (row, group of `group` columns). A weight value is float(code - zero) * scale,
// exact in fp32 as on the CPU; activations are rounded to fp16 (the CPU rounds x to fp16 first),
// products accumulate in fp32.
//
// On the device, weights with cols % 8 == 0 hold their 32-bit words interleaved (nibble order
// 0,2,4,6,1,3,5,7, done in place right after the upload by w4a16_interleave_kernel; the planes
// downloaded are de-interleaved on the host): per pair of columns a shift, a lop3 and an fp16x2
// subtraction give q - zero exactly (quant_math.h), widened to fp32. A 16-byte chunk is 32
// columns of a row; with cols % 32 == 0 and a power-of-two group of at least 32 columns it lies in
// one group: scale and zero come from one index by shift, and the scale multiplies
// sum_i (q_i - zero) x_i once.
#include <cstring>

#include <cuda_fp16.h>

#include "kernels/gemv_template.cuh"
#include "kernels/gemv_w4a16.cuh"
#include "kernels/quant_math.h"

namespace lowbit::kernels {

namespace {

struct GroupScale {
  float scale;
  int zero;
};

__device__ __forceinline__ GroupScale group_scale(const QuantizedWeightView& w, int row, int col) {
  const size_t at = w4a16_group_index(row, col, w.cols, w.group);
  return {__half2float(__ushort_as_half(w.scales16[at])), w.zeros != nullptr ? int(w.zeros[at]) : kW4a16SymmetricZero};
}

struct W4a16Decoder {
  __device__ static float value(const QuantizedWeightView& w, int r, int c) {
    const GroupScale g = group_scale(w, r, c);
    const int code =
        w.repacked ? w4a16_interleaved_code(w.codes, r, c, w.cols) : w4a16_code(w.codes, r, c, w.cols);
    return w4a16_value(code, g.zero, g.scale);
  }
};

// Every 32-bit word of the codes plane, in place (words are independent).
__global__ void w4a16_interleave_kernel(uint32_t* __restrict__ words, int64_t n) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    words[i] = w4a16_interleave(words[i]);
}

// log2 of a power of two (the fast path's groups): one instruction.
__device__ __forceinline__ int log2_exact(int v) { return __ffs(v) - 1; }

// What the 32 columns of a chunk share: the group's scale and the fp16x2 pair (1024 + zero).
struct ChunkScale {
  float scale;
  uint32_t zero_pair;
};

struct W4a16Format {
  using Shared = gemv::NoShared;
  using Chunk = ChunkScale;
  static constexpr int kValues = 32, kSub = 8;
  static constexpr bool kScaled = true;
  static constexpr int rows_per_warp(int tokens) { return tokens <= 2 ? 4 : (tokens <= 4 ? 2 : 1); }
  static bool fast(const QuantizedWeightView& w) {
    const int g = w.group;
    return w.repacked && w.cols % kValues == 0 && g >= kValues && (g & (g - 1)) == 0;
  }
  static bool valid(const QuantizedWeightView& w) { return w.group > 0; }
  __device__ static void load_shared(const QuantizedWeightView&, Shared&) {}
  // fp16(x): the CPU reference's activation rounding, once per loaded value (shared by the rows).
  __device__ static __forceinline__ float activation(float v) { return round_to_half(v); }
  __device__ static __forceinline__ uint4 load(const QuantizedWeightView& w, int r, int c) {
    return reinterpret_cast<const uint4*>(w.codes + size_t(r) * size_t(w.cols / 2))[c];
  }
  __device__ static __forceinline__ Chunk chunk(const QuantizedWeightView& w, const Shared&, int r, int c) {
    const int shift = log2_exact(w.group);
    const int groups = (w.cols + w.group - 1) >> shift;
    const size_t at = size_t(r) * size_t(groups) + size_t((c * kValues) >> shift);
    const int zero = w.zeros != nullptr ? int(w.zeros[at]) : kW4a16SymmetricZero;
    return {__half2float(__ushort_as_half(w.scales16[at])), w4a16_zero_pair(zero)};
  }
  __device__ static __forceinline__ float scale(Chunk c) { return c.scale; }
  // Word s holds columns 8s..8s+7 interleaved: pair k (columns 2k, 2k+1) is a shift, a lop3 and
  // an fp16x2 subtraction of (1024 + zero), then two exact widenings to fp32.
  __device__ static __forceinline__ void decode(const Shared&, Chunk c, uint4 raw, int sub, float (&v)[kSub]) {
    const uint32_t word = sub == 0 ? raw.x : sub == 1 ? raw.y : sub == 2 ? raw.z : raw.w;
#pragma unroll
    for (int k = 0; k < kSub / 2; ++k)
      w4a16_pair_values(w4a16_magic_pair(word, k), c.zero_pair, v[2 * k], v[2 * k + 1]);
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

cudaError_t launch_w4a16_interleave(uint8_t* codes, int64_t bytes, cudaStream_t stream) {
  if (bytes % 4 != 0 || reinterpret_cast<uintptr_t>(codes) % 4 != 0) return cudaErrorInvalidValue;
  const int64_t n = bytes / 4;
  if (n == 0) return cudaSuccess;
  const int threads = 256;
  const int64_t wanted = (n + threads - 1) / threads;
  const unsigned blocks = unsigned(wanted < 65535 * 8 ? wanted : 65535 * 8);
  return launch<w4a16_interleave_kernel>({blocks, threads, 0, stream}, reinterpret_cast<uint32_t*>(codes), n);
}

namespace {
// Upload: rows of whole aligned 32-bit words (cols % 8 == 0) are interleaved in place on the
// device (one pass at memory speed, queued behind the copy) rather than on the host, which would
// need a second host copy of the plane and a CPU pass over it at every load.
cudaError_t w4a16_repack(uint8_t* codes, int64_t bytes, int, int cols, cudaStream_t stream) {
  if (cols % 8 != 0 || bytes == 0) return cudaErrorNotSupported;
  return launch_w4a16_interleave(codes, bytes, stream);
}
void w4a16_unrepack(uint8_t* codes, size_t bytes) {
  for (size_t i = 0; i + 4 <= bytes; i += 4) {
    uint32_t word;
    memcpy(&word, codes + i, 4);
    word = w4a16_deinterleave(word);
    memcpy(codes + i, &word, 4);
  }
}
}  // namespace

extern const QuantizedKernels w4a16_kernels{
    launch_gemv_w4a16, no_gemv_workspace, false, launch_dequantize_w4a16, launch_fused_gemv_w4a16, w4a16_repack,
    w4a16_unrepack, PrefillGemm::none, false};

}  // namespace lowbit::kernels
