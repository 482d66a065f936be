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

// The output step of a GEMV (one lane): out[t][r] is row r's W x + b for token t, written to
// output row dst[r] (rows ldy apart) as GemvSteps says; kPair: rows r and r + kRows / 2 are the
// gate and up rows of output column base + r (rows steps.hidden apart).
template <int kTokens, int kRows, bool kPair>
__device__ __forceinline__ void write_outputs(const float (&out)[kTokens][kRows], const bool (&valid)[kRows],
                                              const int (&dst)[kRows], int base, int n_tokens, int ldy,
                                              const GemvSteps& steps, float* __restrict__ y) {
#pragma unroll
  for (int t = 0; t < kTokens; ++t) {
    if (t >= n_tokens) break;
    if constexpr (kPair) {
#pragma unroll
      for (int r = 0; r < kRows / 2; ++r) {
        if (!valid[r]) continue;
        const float g = out[t][r], u = out[t][r + kRows / 2];
        y[size_t(t) * steps.hidden + (base + r)] = g / (1.0f + expf(-g)) * u;  // elementwise.cu's swiglu
      }
    } else {
#pragma unroll
      for (int r = 0; r < kRows; ++r) {
        if (!valid[r]) continue;
        float* o = y + size_t(t) * ldy + dst[r];
        const float v = out[t][r];
        if (steps.out == GemvOut::kAccumulate) {
          *o += v;
        } else if (steps.out == GemvOut::kGelu) {
          *o = 0.5f * v * (1.0f + erff(v * 0.70710678118654752440f));  // elementwise.cu's gelu
        } else {
          *o = v;
        }
      }
    }
  }
}

// GemvSteps' norm, computed in the block: per-token statistics (norm.cu's: RMSNorm's 1 / rms;
// LayerNorm's mean, then 1 / std from the squared deviations), then each normalized value by one
// expression (RMSNorm w * (x * scale); LayerNorm (x - mean) * scale * w (+ b)), so a value
// recomputed later is the same value. scale and mean: n_tokens floats the block shares.
__device__ __forceinline__ void norm_stats(const GemvSteps& s, const float* __restrict__ x, int n_tokens, int cols, float* scale,
                                  float* mean) {
  __shared__ float scratch[32];
  for (int t = 0; t < n_tokens; ++t) {
    const float* row = x + size_t(t) * cols;
    float partial = 0.0f;
    for (int i = threadIdx.x; i < cols; i += blockDim.x) partial += s.layer_norm ? row[i] : row[i] * row[i];
    const float total = block_sum(partial, scratch);
    if (!s.layer_norm) {
      if (threadIdx.x == 0) scale[t] = 1.0f / sqrtf(total / float(cols) + s.norm_eps);
      continue;
    }
    const float m = total / float(cols);
    float sq = 0.0f;
    for (int i = threadIdx.x; i < cols; i += blockDim.x) {
      const float c = row[i] - m;
      sq += c * c;
    }
    const float var = block_sum(sq, scratch) / float(cols);
    if (threadIdx.x == 0) {
      mean[t] = m;
      scale[t] = 1.0f / sqrtf(var + s.norm_eps);
    }
  }
  __syncthreads();
}

// x[t, c] as the GEMV sees it: normalized (with norm_stats' statistics) or as it is.
__device__ __forceinline__ float input_value(const GemvSteps& s, const float* __restrict__ x, const float* scale,
                                             const float* mean, int t, int cols, int c) {
  const float v = x[size_t(t) * cols + c];
  if (s.norm_weight == nullptr) return v;
  if (!s.layer_norm) return s.norm_weight[c] * (v * scale[t]);
  const float n = (v - mean[t]) * scale[t] * s.norm_weight[c];
  return s.norm_bias != nullptr ? n + s.norm_bias[c] : n;
}

// x normalized per token into shared memory xs [n_tokens, cols].
__device__ __forceinline__ void normalize_into(const GemvSteps& s, const float* __restrict__ x, int n_tokens, int cols,
                                      float* xs) {
  __shared__ float scale[kMaxFusedTokens], mean[kMaxFusedTokens];
  norm_stats(s, x, n_tokens, cols, scale, mean);
  for (int t = 0; t < n_tokens; ++t)
    for (int i = threadIdx.x; i < cols; i += blockDim.x) xs[size_t(t) * cols + i] = input_value(s, x, scale, mean, t, cols, i);
  __syncthreads();
}

// Layer row -> (part, row within the part).
__device__ __forceinline__ int part_of(const GemvParts& p, int row) {
  return int(p.n_parts > 1 && row >= p.first_row[1]) + int(p.n_parts > 2 && row >= p.first_row[2]);
}

// Rows a warp computes at a batch capacity (the int8 and fp8 GEMVs' rule; the template's formats
// give their own through rows_per_warp), and that count made even for SwiGLU's gate/up pairs.
constexpr int int8_rows_per_warp(int tokens) { return tokens <= 2 ? 4 : (tokens <= 4 ? 2 : 1); }
constexpr int pair_rows(int rows, bool pair) { return pair ? (rows < 2 ? 2 : rows + rows % 2) : rows; }

// The warp's first row: warps of kRows rows (kPair: of kRows / 2 gate rows and as many up rows).
template <int kRows, bool kPair>
__device__ __forceinline__ int warp_base(int warps_per_block) {
  return (blockIdx.x * warps_per_block + (threadIdx.x >> 5)) * (kPair ? kRows / 2 : kRows);
}

// The warp's rows (warp-uniform): kRows consecutive rows from `base`, or under kPair kRows / 2
// gate rows from base and the up rows hidden + base... Rows past `limit` are marked invalid and
// point at row base (or its up row), so that their loads stay in bounds.
template <int kRows, bool kPair>
__device__ __forceinline__ void warp_rows(int base, int limit, int hidden, int (&row)[kRows], bool (&valid)[kRows]) {
  constexpr int kHalf = kPair ? kRows / 2 : kRows;
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    const int i = base + r % kHalf;
    valid[r] = i < limit;
    row[r] = (kPair && r >= kHalf ? hidden : 0) + (valid[r] ? i : base);
  }
}

// Blocks of `warps_per_block` warps covering `rows` (kPair: steps.hidden pairs).
template <int kRows, bool kPair>
unsigned row_blocks(int rows, const GemvSteps& steps, int warps_per_block) {
  constexpr int kHalf = kPair ? kRows / 2 : kRows;
  const int n = kPair ? steps.hidden : rows;
  return unsigned((n + warps_per_block * kHalf - 1) / (warps_per_block * kHalf));
}

// Whether a one-part fused GEMV with block-made activations (the int8 and fp8 ones) takes this
// layer: up to kMaxFusedTokens tokens, one part in its own row order, cols a multiple of the
// 16-byte chunk, its activations within kMaxNormedBytes, and SwiGLU's rows exactly gate | up.
inline bool single_part_fusable(const GemvParts& parts, int n_tokens, size_t activation_bytes, const GemvSteps& steps) {
  const QuantizedWeightView& w = parts.part[0];
  if (n_tokens > kMaxFusedTokens || parts.n_parts != 1 || w.out_rows != nullptr || w.cols % 16 != 0 ||
      activation_bytes > kMaxNormedBytes)
    return false;
  return steps.out != GemvOut::kSwiglu || (steps.hidden > 0 && w.rows == 2 * steps.hidden);
}

// kNorm: x normalized in the block first (dynamic shared memory, n_tokens * cols floats).
// kPair: SwiGLU -- a warp's first kRows / 2 rows are gate rows i.., the others the up rows
// hidden + i.., so each output silu(g) * u is made where both sums are.
template <typename F, int kTokens, int kRows, bool kNorm, bool kPair>
__global__ void __launch_bounds__(kWarps * 32)
    gemv_fast_kernel(GemvParts parts, const float* __restrict__ bias, const float* __restrict__ x_global,
                     int n_tokens, float* __restrict__ y, GemvSteps steps) {
  static_assert(!kPair || kRows % 2 == 0, "SwiGLU pairs rows");
  __shared__ typename F::Shared shared;
  F::load_shared(parts.part[0], shared);
  const int cols = parts.part[0].cols, chunks = cols / F::kValues;
  const float* x = x_global;
  if constexpr (kNorm) {
    float* xs = dynamic_shared_memory<float>();
    normalize_into(steps, x_global, n_tokens, cols, xs);
    x = xs;
  } else {
    __syncthreads();
  }
  const int lane = threadIdx.x & 31;
  constexpr int kHalf = kPair ? kRows / 2 : kRows;
  const int base = warp_base<kRows, kPair>(kWarps);
  const int limit = kPair ? steps.hidden : parts.rows;
  if (base >= limit) return;  // whole warp leaves together

  // Each of the warp's rows: its layer row and row within its part (warp-uniform). A warp's
  // rows lie in one part (kPair: its gate rows in one, its up rows in one), which the launcher
  // ensures (parts of whole warps), so a warp holds at most two views.
  const int lo = part_of(parts, base), hi = kPair ? part_of(parts, steps.hidden + base) : lo;
  const QuantizedWeightView& wa = parts.part[lo];
  const QuantizedWeightView& wb = parts.part[hi];
  int layer_row[kRows], local[kRows];
  bool valid[kRows];
  warp_rows<kRows, kPair>(base, limit, steps.hidden, layer_row, valid);
#pragma unroll
  for (int r = 0; r < kRows; ++r) local[r] = layer_row[r] - parts.first_row[kPair && r >= kHalf ? hi : lo];
#define LOWBIT_GEMV_VIEW(r) ((kPair && (r) >= kHalf) ? wb : wa)

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
        raw[u][r] = c < chunks && valid[r] ? F::load(LOWBIT_GEMV_VIEW(r), local[r], c) : make_uint4(0, 0, 0, 0);
      }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int c = c0 + 32 * u;
      if (c >= chunks) break;
      typename F::Chunk chunk[kRows];
#pragma unroll
      for (int r = 0; r < kRows; ++r) chunk[r] = F::chunk(LOWBIT_GEMV_VIEW(r), shared, local[r], c);
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
            const float4 v = kNorm ? *reinterpret_cast<const float4*>(x + size_t(t) * cols + col + i)
                                   : load_x4(x + size_t(t) * cols + col + i);
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

  // Epilogue: the warp's sums, the bias, then the output step. dst is the row in the layer's
  // output order (a part's out_rows reorders within the part).
  float total[kTokens][kRows];
  int dst[kRows];
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    const QuantizedWeightView& w = LOWBIT_GEMV_VIEW(r);
    dst[r] = layer_row[r] - local[r] + (w.out_rows != nullptr ? w.out_rows[local[r]] : local[r]);
    const float b = valid[r] && bias != nullptr ? bias[dst[r]] : 0.0f;  // bias is in output order
#pragma unroll
    for (int t = 0; t < kTokens; ++t) total[t][r] = warp_sum(acc[t][r]) + b;
  }
  if (lane == 0) write_outputs<kTokens, kRows, kPair>(total, valid, dst, base, n_tokens, parts.ldy, steps, y);
#undef LOWBIT_GEMV_VIEW
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

// One weight (a single part, or one part of a layer: y and bias offset to its first row, rows
// out_stride apart), plain output.
inline GemvParts single_part(const QuantizedWeightView& w) {
  GemvParts p;
  p.part[0] = w;
  p.n_parts = 1;
  p.rows = w.rows;
  p.ldy = w.out_stride > 0 ? w.out_stride : w.rows;
  return p;
}

template <typename F, int kTokens, bool kNorm, bool kPair>
cudaError_t launch_fast(const GemvParts& parts, const float* bias, const float* x, int n_tokens, float* y,
                        const GemvSteps& steps, cudaStream_t stream) {
  constexpr int kRows = pair_rows(F::rows_per_warp(kTokens), kPair);
  const unsigned blocks = row_blocks<kRows, kPair>(parts.rows, steps, kWarps);
  const size_t shared = kNorm ? size_t(n_tokens) * size_t(parts.part[0].cols) * sizeof(float) : 0;
  return launch<gemv_fast_kernel<F, kTokens, kRows, kNorm, kPair>>({blocks, kWarps * 32, shared, stream}, parts, bias,
                                                                   x, n_tokens, y, steps);
}

template <typename F, int kTokens>
cudaError_t launch_for(const QuantizedWeightView& w, const float* bias, const float* x, int n_tokens, float* y,
                       cudaStream_t stream) {
  if (F::fast(w)) return launch_fast<F, kTokens, false, false>(single_part(w), bias, x, n_tokens, y, GemvSteps{}, stream);
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

template <typename F, bool kNorm, bool kPair>
cudaError_t launch_fused_steps(const GemvParts& parts, const float* bias, const float* x, int n_tokens, float* y,
                               const GemvSteps& steps, cudaStream_t stream) {
  // Two capacities (1, and 4 for 2-4 tokens): fewer instantiations to compile, at the cost of a
  // 2- or 3-token step running the 4-token one (its unused accumulators are never touched).
  if (n_tokens <= 1) return launch_fast<F, 1, kNorm, kPair>(parts, bias, x, n_tokens, y, steps, stream);
  return launch_fast<F, 4, kNorm, kPair>(parts, bias, x, n_tokens, y, steps, stream);
}

// Every part of a layer in one launch, with GemvSteps' norm and output step; the fast path only
// (any part the fast path cannot take, more than kMaxFusedTokens tokens, or a normalized x over
// kMaxNormedBytes: cudaErrorNotSupported).
template <typename F>
cudaError_t launch_fused_gemv(const GemvParts& parts, const float* bias, const float* x, int n_tokens, float* y,
                              const GemvSteps& steps, cudaStream_t stream) {
  if (n_tokens <= 0 || parts.rows <= 0) return cudaSuccess;
  if (n_tokens > kMaxFusedTokens || parts.n_parts < 1 || parts.n_parts > GemvParts::kMax) return cudaErrorNotSupported;
  for (int i = 0; i < parts.n_parts; ++i)
    if (!F::valid(parts.part[i]) || !F::fast(parts.part[i]) || parts.part[i].cols != parts.part[0].cols)
      return cudaErrorNotSupported;
  const bool norm = steps.norm_weight != nullptr, pair = steps.out == GemvOut::kSwiglu;
  if (norm && size_t(n_tokens) * size_t(parts.part[0].cols) * sizeof(float) > kMaxNormedBytes)
    return cudaErrorNotSupported;
  if (pair && (steps.hidden <= 0 || parts.rows != 2 * steps.hidden)) return cudaErrorNotSupported;
  // A warp's rows must lie in one part: a warp covers at most 4 aligned rows (of gate and of up
  // rows under SwiGLU), so parts that start and end on multiples of 4 never split one.
  if (parts.n_parts > 1)
    for (int i = 0; i < parts.n_parts; ++i)
      if (parts.first_row[i] % 4 != 0 || parts.part[i].rows % 4 != 0) return cudaErrorNotSupported;
  if (pair) {  // the pairs are made by row index: no part may reorder its rows
    for (int i = 0; i < parts.n_parts; ++i)
      if (parts.part[i].out_rows != nullptr) return cudaErrorNotSupported;
  }
  if (norm && pair) return launch_fused_steps<F, true, true>(parts, bias, x, n_tokens, y, steps, stream);
  if (norm) return launch_fused_steps<F, true, false>(parts, bias, x, n_tokens, y, steps, stream);
  if (pair) return cudaErrorNotSupported;  // SwiGLU without a norm: no model needs it
  // No norm, no pairs: the plain kernel (every capacity exists) with the output step.
  if (n_tokens <= 1) return launch_fast<F, 1, false, false>(parts, bias, x, n_tokens, y, steps, stream);
  if (n_tokens <= 2) return launch_fast<F, 2, false, false>(parts, bias, x, n_tokens, y, steps, stream);
  return launch_fast<F, 4, false, false>(parts, bias, x, n_tokens, y, steps, stream);
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
