// The one decode GEMV, for every weight format (device code; include from kernels/gemv_*.cu).
//
//   y[t * out_stride + out_row(r)] = sum_c W[r, c] x[t, c]  (+ bias[r]),  t < n_tokens <= 16
//
// A format supplies a small traits struct (f32 and bf16 below, the others in their kernel files):
// how a lane loads a 16-byte chunk of a row (always one 128-bit load), the constants the chunk's
// values share (4-bit absmax, W4A16 group scale and zero point), and how the chunk decodes into
// values. The template owns everything else:
//  - a warp computes kRows consecutive rows; its lanes walk the row's chunks 32 apart. Several
//    rows per warp reuse each activation load (x stays fp32, read through L1): for 4-bit, one
//    16-byte weight load is 32 values and 128 bytes of x per token, so one row per warp would make
//    the kernel L1-bound long before the weight stream is;
//  - the loop issues all kUnroll x kRows weight loads of a step before any math (loads in flight
//    cover HBM latency), then decodes 8 values at a time and FMAs them against every token;
//  - per chunk, sum_i u_i x_i is taken over the unscaled values (4-bit table entries, W4A16
//    q - zero) and multiplied by the chunk's scale once: the weights are exactly the format's
//    values, only the association of the products differs from the CPU reference;
//  - block and group indices are shifts (the fast path needs power-of-two block and group sizes
//    of at least one chunk, and rows that start on a chunk); anything else runs the kSlow
//    instantiation, which walks columns one by one with the exact per-value decoder, like the CPU;
//  - the epilogue: a warp reduction per (token, row), bias, and the row's output position.
// int8 activations (LLM.int8, W8A8) use the same row mapping with dp4a in gemv_int8.cu.
#pragma once
#include <cuda_fp16.h>

#include "kernels/common.cuh"
#include "kernels/dequant.cuh"
#include "kernels/gemv.cuh"
#include "kernels/launch.cuh"
#include "kernels/quant_math.h"

namespace lowbit::kernels::gemv {

constexpr int kWarps = 8;   // warps per block
constexpr int kUnroll = 2;  // chunks per lane per step, all loaded before any is used

__device__ __forceinline__ float4 load_x4(const float* p) { return __ldg(reinterpret_cast<const float4*>(p)); }

// Output row of row r of this weight (a layer in parts writes its rows in the layer's order; y and
// bias arrive offset to the part's first output row).
__device__ __forceinline__ int out_row(const QuantizedWeightView& w, int r) {
  return w.out_rows != nullptr ? w.out_rows[r] : r;
}

template <typename F, int kTokens, int kRows>
__global__ void __launch_bounds__(kWarps * 32)
    gemv_fast_kernel(QuantizedWeightView w, const float* __restrict__ bias, const float* __restrict__ x, int n_tokens,
                     float* __restrict__ y) {
  __shared__ typename F::Shared shared;
  F::load_shared(w, shared);
  __syncthreads();
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int row0 = (blockIdx.x * kWarps + warp) * kRows;
  if (row0 >= w.rows) return;  // whole warp leaves together
  const int cols = w.cols, chunks = cols / F::kValues;
  const int ldy = w.out_stride > 0 ? w.out_stride : w.rows;

  float acc[kTokens][kRows];
#pragma unroll
  for (int t = 0; t < kTokens; ++t)
#pragma unroll
    for (int r = 0; r < kRows; ++r) acc[t][r] = 0.0f;

  for (int c0 = lane; c0 < chunks; c0 += 32 * kUnroll) {
    uint4 raw[kUnroll][kRows];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u)
#pragma unroll
      for (int r = 0; r < kRows; ++r) {
        const int c = c0 + 32 * u;
        raw[u][r] = c < chunks && row0 + r < w.rows ? F::load(w, row0 + r, c) : make_uint4(0, 0, 0, 0);
      }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int c = c0 + 32 * u;
      if (c >= chunks) break;
      typename F::Chunk chunk[kRows];
#pragma unroll
      for (int r = 0; r < kRows; ++r) chunk[r] = F::chunk(w, shared, row0 + r < w.rows ? row0 + r : row0, c);
      float part[kTokens][kRows];
#pragma unroll
      for (int t = 0; t < kTokens; ++t)
#pragma unroll
        for (int r = 0; r < kRows; ++r) part[t][r] = 0.0f;
#pragma unroll
      for (int s = 0; s < F::kValues / F::kSub; ++s) {
        float wv[kRows][F::kSub];
#pragma unroll
        for (int r = 0; r < kRows; ++r) F::decode(shared, chunk[r], raw[u][r], s, wv[r]);
        const int col = c * F::kValues + s * F::kSub;
#pragma unroll
        for (int t = 0; t < kTokens; ++t) {
          if (t >= n_tokens) break;
          float xv[F::kSub];
#pragma unroll
          for (int i = 0; i < F::kSub; i += 4) {
            const float4 v = load_x4(x + size_t(t) * cols + col + i);
            xv[i] = F::activation(v.x);
            xv[i + 1] = F::activation(v.y);
            xv[i + 2] = F::activation(v.z);
            xv[i + 3] = F::activation(v.w);
          }
#pragma unroll
          for (int r = 0; r < kRows; ++r) {
            float p = 0.0f;
#pragma unroll
            for (int i = 0; i < F::kSub; ++i) p += wv[r][i] * xv[i];
            part[t][r] += p;
          }
        }
      }
#pragma unroll
      for (int r = 0; r < kRows; ++r)
#pragma unroll
        for (int t = 0; t < kTokens; ++t)
          acc[t][r] = F::kScaled ? fmaf(F::scale(chunk[r]), part[t][r], acc[t][r]) : acc[t][r] + part[t][r];
    }
  }

#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    const bool valid = row0 + r < w.rows;  // warp-uniform
    const int dst = valid ? out_row(w, row0 + r) : 0;
    const float b = valid && bias != nullptr ? bias[dst] : 0.0f;  // bias is in output order
#pragma unroll
    for (int t = 0; t < kTokens; ++t) {
      const float total = warp_sum(acc[t][r]);
      if (valid && lane == 0 && t < n_tokens) y[size_t(t) * ldy + dst] = total + b;
    }
  }
}

// Any shape: one column per lane per step, each value decoded exactly as the CPU reference
// decodes it (F::value), one row per warp.
template <typename F, int kTokens>
__global__ void __launch_bounds__(kWarps * 32)
    gemv_slow_kernel(QuantizedWeightView w, const float* __restrict__ bias, const float* __restrict__ x, int n_tokens,
                     float* __restrict__ y) {
  __shared__ typename F::Shared shared;
  F::load_shared(w, shared);
  __syncthreads();
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int row = blockIdx.x * kWarps + warp;
  if (row >= w.rows) return;
  const int cols = w.cols;
  const int ldy = w.out_stride > 0 ? w.out_stride : w.rows;
  float acc[kTokens];
#pragma unroll
  for (int t = 0; t < kTokens; ++t) acc[t] = 0.0f;
  for (int col = lane; col < cols; col += 32) {
    const float wv = F::value(w, shared, row, col);
#pragma unroll
    for (int t = 0; t < kTokens; ++t)
      if (t < n_tokens) acc[t] += wv * F::activation(x[size_t(t) * cols + col]);
  }
  const int dst = out_row(w, row);
  const float b = bias != nullptr ? bias[dst] : 0.0f;
#pragma unroll
  for (int t = 0; t < kTokens; ++t) {
    const float total = warp_sum(acc[t]);
    if (lane == 0 && t < n_tokens) y[size_t(t) * ldy + dst] = total + b;
  }
}

template <typename F, int kTokens>
cudaError_t launch_for(const QuantizedWeightView& w, const float* bias, const float* x, int n_tokens, float* y,
                       cudaStream_t stream) {
  constexpr int kRows = F::rows_per_warp(kTokens);
  if (F::fast(w)) {
    const unsigned blocks = unsigned((w.rows + kWarps * kRows - 1) / (kWarps * kRows));
    return launch<gemv_fast_kernel<F, kTokens, kRows>>({blocks, kWarps * 32, 0, stream}, w, bias, x, n_tokens, y);
  }
  const unsigned blocks = unsigned((w.rows + kWarps - 1) / kWarps);
  return launch<gemv_slow_kernel<F, kTokens>>({blocks, kWarps * 32, 0, stream}, w, bias, x, n_tokens, y);
}

// Batch capacities 1, 2, 4, 8, 16: accumulators live in registers indexed by constants.
template <typename F>
cudaError_t launch_gemv(const QuantizedWeightView& w, const float* bias, const float* x, int n_tokens, float* y,
                        cudaStream_t stream) {
  if (n_tokens <= 0 || w.rows <= 0) return cudaSuccess;
  if (n_tokens > kMaxGemvTokens || !F::valid(w)) return cudaErrorInvalidValue;
  if (n_tokens <= 1) return launch_for<F, 1>(w, bias, x, n_tokens, y, stream);
  if (n_tokens <= 2) return launch_for<F, 2>(w, bias, x, n_tokens, y, stream);
  if (n_tokens <= 4) return launch_for<F, 4>(w, bias, x, n_tokens, y, stream);
  if (n_tokens <= 8) return launch_for<F, 8>(w, bias, x, n_tokens, y, stream);
  return launch_for<F, 16>(w, bias, x, n_tokens, y, stream);
}

// --- the formats ---------------------------------------------------------------------------------
// Each: kValues per 16-byte chunk, kSub values decoded at a time, kScaled (scale(chunk) applies),
// rows_per_warp(kTokens), fast(w) / valid(w), Shared (per-block tables) and load_shared, load
// (one 16-byte chunk of a row), Chunk and chunk(w, shared, row, chunk index) (what a chunk's
// values share), decode (kSub values of sub-chunk s, unscaled), value (slow path: one value,
// exactly the CPU reference's), activation (x as the format's arithmetic sees it).

struct NoShared {};
struct NoChunk {};

// Plain fp32 activations.
struct Fp32Activations {
  __device__ static __forceinline__ float activation(float v) { return v; }
};

struct F32Format : Fp32Activations {
  using Shared = NoShared;
  using Chunk = NoChunk;
  static constexpr int kValues = 4, kSub = 4;
  static constexpr bool kScaled = false;
  static constexpr int rows_per_warp(int tokens) { return tokens <= 2 ? 2 : 1; }
  static bool fast(const QuantizedWeightView& w) { return w.cols % kValues == 0; }
  static bool valid(const QuantizedWeightView&) { return true; }
  __device__ static void load_shared(const QuantizedWeightView&, Shared&) {}
  __device__ static __forceinline__ uint4 load(const QuantizedWeightView& w, int r, int c) {
    return reinterpret_cast<const uint4*>(w.codes + size_t(r) * size_t(w.cols) * 4)[c];
  }
  __device__ static NoChunk chunk(const QuantizedWeightView&, const Shared&, int, int) { return {}; }
  __device__ static float scale(NoChunk) { return 1.0f; }
  __device__ static __forceinline__ void decode(const Shared&, NoChunk, uint4 raw, int, float (&v)[kSub]) {
    v[0] = __uint_as_float(raw.x);
    v[1] = __uint_as_float(raw.y);
    v[2] = __uint_as_float(raw.z);
    v[3] = __uint_as_float(raw.w);
  }
  __device__ static float value(const QuantizedWeightView& w, const Shared&, int r, int c) {
    return reinterpret_cast<const float*>(w.codes)[size_t(r) * w.cols + c];
  }
};

struct Bf16Format : Fp32Activations {
  using Shared = NoShared;
  using Chunk = NoChunk;
  static constexpr int kValues = 8, kSub = 8;
  static constexpr bool kScaled = false;
  static constexpr int rows_per_warp(int tokens) { return tokens <= 2 ? 2 : 1; }
  static bool fast(const QuantizedWeightView& w) { return w.cols % kValues == 0; }
  static bool valid(const QuantizedWeightView&) { return true; }
  __device__ static void load_shared(const QuantizedWeightView&, Shared&) {}
  __device__ static __forceinline__ uint4 load(const QuantizedWeightView& w, int r, int c) {
    return reinterpret_cast<const uint4*>(w.codes + size_t(r) * size_t(w.cols) * 2)[c];
  }
  // bf16 -> fp32 is a shift: the low half by << 16, the high half by masking.
  __device__ static NoChunk chunk(const QuantizedWeightView&, const Shared&, int, int) { return {}; }
  __device__ static float scale(NoChunk) { return 1.0f; }
  __device__ static __forceinline__ void decode(const Shared&, NoChunk, uint4 raw, int, float (&v)[kSub]) {
    const unsigned parts[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      v[2 * i] = __uint_as_float(parts[i] << 16);
      v[2 * i + 1] = __uint_as_float(parts[i] & 0xffff0000u);
    }
  }
  __device__ static float value(const QuantizedWeightView& w, const Shared&, int r, int c) {
    return bf16_bits_to_float(reinterpret_cast<const uint16_t*>(w.codes)[size_t(r) * w.cols + c]);
  }
};

}  // namespace lowbit::kernels::gemv
