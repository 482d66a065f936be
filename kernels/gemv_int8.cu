// int8 decode GEMVs: LLM.int8 (INT8) and W8A8, both int8 x int8 -> int32 with dp4a.
//
// Activations are quantized by a small pre-pass (they are tiny: n_tokens <= 16 rows), written to
// a workspace, and read by the GEMV, which streams the int8 weight rows once for the batch:
//  - INT8 (LLM.int8, format_int8.cpp, same rounding points): a = fp16(x); outlier columns are those
//    where some token has |a| >= threshold, found by one block that writes them in increasing
//    order (ballot + prefix count: deterministic); rowStat[t] = max |a| over the ELEMENTS below the
//    threshold; CA = rint(a * fl(fl(1 / rowStat) * 127)) (torch's reciprocal, then a multiply; 0
//    in outlier columns; NaN -> 0). The GEMV sums CA . CB in int32, then
//    out = fp16(fl(fl(acc * fl(rowStat * SCB)) * 1/127^2) [+ fp16(bias)]) and, when there are
//    outliers, out = fp16(out + sum over outlier columns of a * fp16(CB * SCB / 127)).
//  - W8A8 (format_w8a8.cpp): x_scale = absmax / 127, xq = sat(rint(x / x_scale)) (0 if the scale
//    is 0); y = acc * (w_scale * x_scale) in fp32.
// The GEMV follows kernels/gemv_template.cuh: kRows rows per warp; when cols % 16 == 0 each lane
// loads 16 weight bytes per row and 16 activation bytes per token (uint4) and issues 4 dp4a per
// row; other shapes use a scalar loop.
// __fmul_rn/__fadd_rn mark the roundings the CPU reference performs (no FMA contraction).
#include "kernels/common.cuh"
#include "kernels/gemv.cuh"
#include "kernels/gemv_template.cuh"
#include "kernels/gemv_int8.cuh"
#include "kernels/quant_math.h"

namespace lowbit::kernels {

namespace {

constexpr int kWarpsPerBlock = 8;

size_t align16(size_t n) { return (n + 15) & ~size_t(15); }
__device__ __forceinline__ size_t align16_device(size_t n) { return (n + 15) & ~size_t(15); }

// Workspace: [xq n*cols int8 | token scale n fp32 | outlier flag per column | outlier count |
// outlier column list cols int32], each piece 16-byte aligned.
struct Workspace {
  int8_t* xq;
  float* token_scale;
  uint8_t* is_outlier;
  int* n_outliers;
  int* outlier_cols;
};

#if LOWBIT_EMULATED_GPU
inline auto emu_device_pointers(const Workspace& ws) {
  return std::array<const void*, 5>{ws.xq, ws.token_scale, ws.is_outlier, ws.n_outliers, ws.outlier_cols};
}
#endif

Workspace carve(void* base, int n_tokens, int cols) {
  auto* p = static_cast<uint8_t*>(base);
  Workspace ws;
  ws.xq = reinterpret_cast<int8_t*>(p);
  p += align16(size_t(n_tokens) * size_t(cols));
  ws.token_scale = reinterpret_cast<float*>(p);
  p += align16(size_t(n_tokens) * sizeof(float));
  ws.is_outlier = p;
  p += align16(size_t(cols));
  ws.n_outliers = reinterpret_cast<int*>(p);
  p += 16;
  ws.outlier_cols = reinterpret_cast<int*>(p);
  return ws;
}

// One block: flags outlier columns and lists them in increasing column order.
__global__ void int8_outlier_kernel(const float* __restrict__ x, int n_tokens, int cols, float threshold,
                                    Workspace ws) {
  __shared__ int warp_counts[32];
  __shared__ int running;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
  if (threadIdx.x == 0) running = 0;
  __syncthreads();
  for (int c0 = 0; c0 < cols; c0 += blockDim.x) {
    const int c = c0 + threadIdx.x;
    bool outlier = false;
    if (c < cols && threshold > 0.0f)
      for (int t = 0; t < n_tokens; ++t) outlier = outlier || fabsf(round_to_half(x[size_t(t) * cols + c])) >= threshold;
    if (c < cols) ws.is_outlier[c] = outlier ? 1 : 0;
    const unsigned ballot = __ballot_sync(kFullWarp, outlier);
    if (lane == 0) warp_counts[warp] = __popc(ballot);
    __syncthreads();
    int before = running;
    for (int i = 0; i < warp; ++i) before += warp_counts[i];
    if (outlier) ws.outlier_cols[before + __popc(ballot & ((1u << lane) - 1u))] = c;
    __syncthreads();
    if (threadIdx.x == 0)
      for (int i = 0; i < n_warps; ++i) running += warp_counts[i];
    __syncthreads();
  }
  if (threadIdx.x == 0) *ws.n_outliers = running;
}

// One block per token: rowStat and CA.
__global__ void int8_quantize_tokens_kernel(const float* __restrict__ x, int cols, float threshold, Workspace ws) {
  __shared__ float scratch[32];
  const int t = blockIdx.x;
  const float* xt = x + size_t(t) * cols;
  float absmax = 0.0f;
  for (int c = threadIdx.x; c < cols; c += blockDim.x) {
    const float v = fabsf(round_to_half(xt[c]));
    if (!(threshold > 0.0f && v >= threshold)) absmax = fmaxf(absmax, v);
  }
  absmax = block_max(absmax, scratch);
  const float factor = llm_int8_factor(absmax);
  if (threadIdx.x == 0) ws.token_scale[t] = absmax;
  for (int c = threadIdx.x; c < cols; c += blockDim.x)
    ws.xq[size_t(t) * cols + c] = ws.is_outlier[c] ? int8_t(0) : llm_int8_activation(round_to_half(xt[c]), factor);
}

// One block per token: W8A8's symmetric per-token quantization.
__global__ void w8a8_quantize_tokens_kernel(const float* __restrict__ x, int cols, int8_t* __restrict__ xq,
                                            float* __restrict__ x_scale) {
  __shared__ float scratch[32];
  const int t = blockIdx.x;
  const float* xt = x + size_t(t) * cols;
  float absmax = 0.0f;
  for (int c = threadIdx.x; c < cols; c += blockDim.x) absmax = fmaxf(absmax, fabsf(xt[c]));
  absmax = block_max(absmax, scratch);
  const float scale = absmax / 127.0f;
  if (threadIdx.x == 0) x_scale[t] = scale;
  for (int c = threadIdx.x; c < cols; c += blockDim.x) xq[size_t(t) * cols + c] = w8a8_activation(xt[c], scale);
}

__device__ __forceinline__ int dot4(unsigned a, unsigned b, int c) { return __dp4a(int(a), int(b), c); }

// The int8 GEMV: the row mapping of kernels/gemv_template.cuh (kRows rows per warp sharing each
// activation load, every 16-byte weight load of a step issued before the math) with int8
// activations from the workspace and dp4a. When cols % 16 != 0 a lane takes one column at a time.
// kLlmInt8: LLM.int8's epilogue and outlier columns; else W8A8's.
// The fused path's activations, made by each block in its shared memory (no pre-pass kernel):
// the norm's per-token statistics (the normalized value is recomputed from them where needed,
// always by the same expression), the int8 codes, the per-token scale and, for LLM.int8, the
// outlier columns as a bit mask.
struct BlockActivations {
  int8_t* xq;              // [n_tokens * cols]
  float* token_scale;      // [n_tokens]: LLM.int8's rowStat, W8A8's x_scale
  float* norm_scale;       // [n_tokens]: RMSNorm's 1 / rms or LayerNorm's 1 / std
  float* norm_mean;        // [n_tokens]: LayerNorm's mean
  unsigned* outlier_mask;  // [ceil(cols / 32)]: LLM.int8 outlier columns
  int* n_outliers;
};

size_t block_activation_bytes(int n_tokens, int cols) {
  return align16(size_t(n_tokens) * size_t(cols)) + 3 * align16(size_t(n_tokens) * sizeof(float)) +
         align16(size_t((cols + 31) / 32) * sizeof(unsigned)) + 16;
}

__device__ __forceinline__ BlockActivations carve_block(int n_tokens, int cols) {
  auto* p = dynamic_shared_memory<uint8_t>();
  BlockActivations a;
  a.xq = reinterpret_cast<int8_t*>(p);
  p += align16_device(size_t(n_tokens) * size_t(cols));
  a.token_scale = reinterpret_cast<float*>(p);
  p += align16_device(size_t(n_tokens) * sizeof(float));
  a.norm_scale = reinterpret_cast<float*>(p);
  p += align16_device(size_t(n_tokens) * sizeof(float));
  a.norm_mean = reinterpret_cast<float*>(p);
  p += align16_device(size_t(n_tokens) * sizeof(float));
  a.outlier_mask = reinterpret_cast<unsigned*>(p);
  p += align16_device(size_t((cols + 31) / 32) * sizeof(unsigned));
  a.n_outliers = reinterpret_cast<int*>(p);
  return a;
}

__device__ __forceinline__ float input_value(const GemvSteps& s, const float* __restrict__ x, const BlockActivations& a,
                                             int t, int cols, int c) {
  return gemv::input_value(s, x, a.norm_scale, a.norm_mean, t, cols, c);
}

// The block's activations, the pre-passes' arithmetic (int8_outlier_kernel,
// int8_quantize_tokens_kernel, w8a8_quantize_tokens_kernel) on the normalized input.
template <bool kLlmInt8>
__device__ __forceinline__ void quantize_in_block(const GemvSteps& s, const float* __restrict__ x, int n_tokens, int cols,
                                  float threshold, const BlockActivations& a) {
  __shared__ float scratch[32];
  if (s.norm_weight != nullptr) gemv::norm_stats(s, x, n_tokens, cols, a.norm_scale, a.norm_mean);
  if (threadIdx.x == 0) *a.n_outliers = 0;
  __syncthreads();
  if (kLlmInt8) {  // outlier columns: some token has |fp16(x)| >= threshold
    int count = 0;
    for (int c0 = 0; c0 < cols; c0 += blockDim.x) {
      const int c = c0 + threadIdx.x;
      bool outlier = false;
      if (c < cols && threshold > 0.0f)
        for (int t = 0; t < n_tokens; ++t)
          outlier = outlier || fabsf(round_to_half(input_value(s, x, a, t, cols, c))) >= threshold;
      const unsigned ballot = __ballot_sync(kFullWarp, outlier);
      if ((threadIdx.x & 31) == 0 && c < cols) a.outlier_mask[c >> 5] = ballot;  // c0 is a multiple of 32
      count += __popc(ballot) * ((threadIdx.x & 31) == 0 ? 1 : 0);
    }
    count = int(block_sum(float(count), scratch));
    if (threadIdx.x == 0) *a.n_outliers = count;
    __syncthreads();
  }
  for (int t = 0; t < n_tokens; ++t) {
    float absmax = 0.0f;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
      const float v = kLlmInt8 ? fabsf(round_to_half(input_value(s, x, a, t, cols, c)))
                               : fabsf(input_value(s, x, a, t, cols, c));
      if (!(kLlmInt8 && threshold > 0.0f && v >= threshold)) absmax = fmaxf(absmax, v);
    }
    absmax = block_max(absmax, scratch);
    if (kLlmInt8) {
      const float factor = llm_int8_factor(absmax);
      if (threadIdx.x == 0) a.token_scale[t] = absmax;
      for (int c = threadIdx.x; c < cols; c += blockDim.x) {
        const bool outlier = (a.outlier_mask[c >> 5] >> (c & 31)) & 1u;
        a.xq[size_t(t) * cols + c] =
            outlier ? int8_t(0) : llm_int8_activation(round_to_half(input_value(s, x, a, t, cols, c)), factor);
      }
    } else {
      const float scale = absmax / 127.0f;
      if (threadIdx.x == 0) a.token_scale[t] = scale;
      for (int c = threadIdx.x; c < cols; c += blockDim.x)
        a.xq[size_t(t) * cols + c] = w8a8_activation(input_value(s, x, a, t, cols, c), scale);
    }
  }
  __syncthreads();
}

// kInBlock: the block quantizes its activations itself (quantize_in_block, GemvSteps' norm first)
// instead of reading a pre-pass's workspace. kPair: SwiGLU pairs (gemv_template.cuh's mapping).
template <int kTokens, int kRows, bool kLlmInt8, bool kVector, bool kInBlock = false, bool kPair = false>
__global__ void __launch_bounds__(kWarpsPerBlock * 32)
    gemv_int8_kernel(QuantizedWeightView w, const float* __restrict__ bias, const float* __restrict__ x,
                     int n_tokens, Workspace ws, float* __restrict__ y, GemvSteps steps) {
  constexpr int kUnroll = 2;
  const int lane = threadIdx.x & 31;
  const int cols = w.cols;
  BlockActivations in_block{};
  if constexpr (kInBlock) {
    in_block = carve_block(n_tokens, cols);
    quantize_in_block<kLlmInt8>(steps, x, n_tokens, cols, w.int8_threshold, in_block);
    ws.xq = in_block.xq;
    ws.token_scale = in_block.token_scale;
  }
  const int base = gemv::warp_base<kRows, kPair>(kWarpsPerBlock);
  const int limit = kPair ? steps.hidden : w.rows;
  if (base >= limit) return;
  // The warp's rows (warp-uniform): kPair's first half are gate rows, the second the up rows.
  int row_of[kRows];
  bool valid[kRows];
  gemv::warp_rows<kRows, kPair>(base, limit, steps.hidden, row_of, valid);
  const int8_t* codes = reinterpret_cast<const int8_t*>(w.codes);

  int acc[kTokens][kRows];
#pragma unroll
  for (int t = 0; t < kTokens; ++t)
#pragma unroll
    for (int r = 0; r < kRows; ++r) acc[t][r] = 0;
  if (kVector) {
    const int chunks = cols / 16;
    for (int c0 = lane; c0 < chunks; c0 += 32 * kUnroll) {
      uint4 wv[kUnroll][kRows];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u)
#pragma unroll
        for (int r = 0; r < kRows; ++r) {
          const int c = c0 + 32 * u;
          wv[u][r] = c < chunks && valid[r] ? reinterpret_cast<const uint4*>(codes + size_t(row_of[r]) * cols)[c]
                                            : make_uint4(0, 0, 0, 0);
        }
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int c = c0 + 32 * u;
        if (c >= chunks) break;
#pragma unroll
        for (int t = 0; t < kTokens; ++t) {
          if (t >= n_tokens) break;
          const uint4 xv = reinterpret_cast<const uint4*>(ws.xq + size_t(t) * cols)[c];
#pragma unroll
          for (int r = 0; r < kRows; ++r)
            acc[t][r] = dot4(wv[u][r].x, xv.x, dot4(wv[u][r].y, xv.y, dot4(wv[u][r].z, xv.z,
                                                                           dot4(wv[u][r].w, xv.w, acc[t][r]))));
        }
      }
    }
  } else {
    for (int col = lane; col < cols; col += 32) {
#pragma unroll
      for (int r = 0; r < kRows; ++r) {
        const int wv = valid[r] ? int(codes[size_t(row_of[r]) * cols + col]) : 0;
#pragma unroll
        for (int t = 0; t < kTokens; ++t)
          if (t < n_tokens) acc[t][r] += wv * int(ws.xq[size_t(t) * cols + col]);
      }
    }
  }

  const int n_outliers = kLlmInt8 ? (kInBlock ? *in_block.n_outliers : *ws.n_outliers) : 0;
  float out[kTokens][kRows];
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    const int row = row_of[r];
    const float scale = w.scales[row];
    const float b = bias != nullptr ? bias[row] : 0.0f;
    const int8_t* w_row = codes + size_t(row) * cols;
#pragma unroll
    for (int t = 0; t < kTokens; ++t) {
      const int total = warp_sum(acc[t][r]);
      float outliers = 0.0f;
      if (kLlmInt8 && n_outliers > 0 && t < n_tokens) {
        // fp16(x) * fp16(CB * SCB / 127) over the outlier columns, lanes splitting the list (or,
        // in-block, the mask's words).
        if constexpr (kInBlock) {
          for (int word = lane; word < (cols + 31) / 32; word += 32) {
            unsigned bits = in_block.outlier_mask[word];
            while (bits != 0u) {
              const int c = word * 32 + __ffs(int(bits)) - 1;
              bits &= bits - 1u;
              outliers += round_to_half(input_value(steps, x, in_block, t, cols, c)) *
                          round_to_half(llm_int8_weight(w_row[c], scale));
            }
          }
        } else {
          for (int i = lane; i < n_outliers; i += 32) {
            const int c = ws.outlier_cols[i];
            outliers += round_to_half(x[size_t(t) * cols + c]) * round_to_half(llm_int8_weight(w_row[c], scale));
          }
        }
      }
      if (kLlmInt8) outliers = warp_sum(outliers);
      float o = 0.0f;
      if (t < n_tokens) {
        if (kLlmInt8) {
          // Linear8bitLt: the fp16 bias is added to the rescaled sums in fp32, before the fp16 cast.
          float rescaled = llm_int8_rescale(total, ws.token_scale[t], scale);
          if (bias != nullptr) rescaled = __fadd_rn(rescaled, round_to_half(b));
          o = round_to_half(rescaled);
          if (n_outliers > 0) o = round_to_half(__fadd_rn(o, outliers));
        } else {
          o = w8a8_rescale(total, scale, ws.token_scale[t]) + b;
        }
      }
      out[t][r] = o;
    }
  }
  if (lane == 0) gemv::write_outputs<kTokens, kRows, kPair>(out, valid, row_of, base, n_tokens, w.rows, steps, y);
}

template <int kTokens, bool kLlmInt8>
cudaError_t launch_int8_for(const QuantizedWeightView& w, const float* bias, const float* x, int n_tokens,
                            Workspace ws, float* y, cudaStream_t stream) {
  constexpr int kRows = gemv::int8_rows_per_warp(kTokens);
  const unsigned threads = kWarpsPerBlock * 32;
  if (w.cols % 16 == 0) {
    const unsigned blocks = unsigned((w.rows + kWarpsPerBlock * kRows - 1) / (kWarpsPerBlock * kRows));
    return launch<gemv_int8_kernel<kTokens, kRows, kLlmInt8, true>>({blocks, threads, 0, stream}, w, bias, x, n_tokens,
                                                                    ws, y, GemvSteps{});
  }
  const unsigned blocks = unsigned((w.rows + kWarpsPerBlock - 1) / kWarpsPerBlock);
  return launch<gemv_int8_kernel<kTokens, 1, kLlmInt8, false>>({blocks, threads, 0, stream}, w, bias, x, n_tokens, ws,
                                                               y, GemvSteps{});
}

template <bool kLlmInt8>
cudaError_t launch_int8_gemv(const QuantizedWeightView& w, const float* bias, const float* x, int n_tokens, Workspace ws,
                             float* y, cudaStream_t stream) {
  if (n_tokens <= 1) return launch_int8_for<1, kLlmInt8>(w, bias, x, n_tokens, ws, y, stream);
  if (n_tokens <= 2) return launch_int8_for<2, kLlmInt8>(w, bias, x, n_tokens, ws, y, stream);
  if (n_tokens <= 4) return launch_int8_for<4, kLlmInt8>(w, bias, x, n_tokens, ws, y, stream);
  if (n_tokens <= 8) return launch_int8_for<8, kLlmInt8>(w, bias, x, n_tokens, ws, y, stream);
  return launch_int8_for<16, kLlmInt8>(w, bias, x, n_tokens, ws, y, stream);
}

struct Int8Decoder {
  __device__ static float value(const QuantizedWeightView& w, int r, int c) {
    return llm_int8_weight(reinterpret_cast<const int8_t*>(w.codes)[size_t(r) * w.cols + c], w.scales[r]);
  }
};

struct W8a8Decoder {
  __device__ static float value(const QuantizedWeightView& w, int r, int c) {
    return float(reinterpret_cast<const int8_t*>(w.codes)[size_t(r) * w.cols + c]) * w.scales[r];
  }
};

__global__ void w8a8_rescale_kernel(const int32_t* __restrict__ acc, const float* __restrict__ w_scale,
                                    const float* __restrict__ x_scale, const float* __restrict__ bias, int n_tokens,
                                    int rows, float* __restrict__ y) {
  const int64_t n = int64_t(n_tokens) * rows;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int t = int(i / rows), r = int(i % rows);
    const float out = w8a8_rescale(acc[i], w_scale[r], x_scale[t]);
    y[i] = bias != nullptr ? out + bias[r] : out;
  }
}

}  // namespace

size_t int8_gemv_workspace_bytes(int n_tokens, int cols) {
  return align16(size_t(n_tokens) * size_t(cols)) + align16(size_t(n_tokens) * sizeof(float)) + align16(size_t(cols)) +
         16 + size_t(cols) * sizeof(int);
}

// The GEMV over any number of tokens, kMaxGemvTokens at a time: every token's activations are
// already in `ws` (and, for LLM.int8, the outlier columns of the whole batch, as bitsandbytes
// picks them from the whole input), so the chunks are the batch's exact arithmetic.
template <bool kLlmInt8>
cudaError_t launch_int8_gemv_chunks(const QuantizedWeightView& w, const float* bias, const float* x, int n_tokens,
                                    Workspace ws, float* y, cudaStream_t stream) {
  for (int t0 = 0; t0 < n_tokens; t0 += kMaxGemvTokens) {
    Workspace chunk = ws;
    chunk.xq += size_t(t0) * size_t(w.cols);
    chunk.token_scale += t0;
    const int n = n_tokens - t0 < kMaxGemvTokens ? n_tokens - t0 : kMaxGemvTokens;
    const cudaError_t err = launch_int8_gemv<kLlmInt8>(w, bias, x + size_t(t0) * size_t(w.cols), n, chunk,
                                                       y + size_t(t0) * size_t(w.rows), stream);
    if (err != cudaSuccess) return err;
  }
  return cudaSuccess;
}

cudaError_t launch_gemv_int8(const QuantizedWeightView& w, const float* bias, const float* x, int n_tokens, float* y,
                             void* workspace, cudaStream_t stream) {
  if (n_tokens <= 0 || w.rows <= 0) return cudaSuccess;
  const Workspace ws = carve(workspace, n_tokens, w.cols);
  cudaError_t err = launch<int8_outlier_kernel>({1, 1024, 0, stream}, x, n_tokens, w.cols, w.int8_threshold, ws);
  if (err != cudaSuccess) return err;
  err = launch<int8_quantize_tokens_kernel>({unsigned(n_tokens), 256, 0, stream}, x, w.cols, w.int8_threshold, ws);
  if (err != cudaSuccess) return err;
  return launch_int8_gemv_chunks<true>(w, bias, x, n_tokens, ws, y, stream);
}

cudaError_t launch_gemv_w8a8(const QuantizedWeightView& w, const float* bias, const float* x, int n_tokens, float* y,
                             void* workspace, cudaStream_t stream) {
  if (n_tokens <= 0 || w.rows <= 0) return cudaSuccess;
  const Workspace ws = carve(workspace, n_tokens, w.cols);
  const cudaError_t err =
      launch<w8a8_quantize_tokens_kernel>({unsigned(n_tokens), 256, 0, stream}, x, w.cols, ws.xq, ws.token_scale);
  if (err != cudaSuccess) return err;
  return launch_int8_gemv_chunks<false>(w, bias, x, n_tokens, ws, y, stream);
}

// The fused path: one launch, activations quantized in every block (no workspace), up to
// kMaxFusedTokens tokens, cols % 16 == 0, and the block's activations within 48 KB.
template <bool kLlmInt8, int kTokens, bool kPair>
cudaError_t launch_int8_fused_for(const QuantizedWeightView& w, const float* bias, const float* x, int n_tokens,
                                  float* y, const GemvSteps& steps, cudaStream_t stream) {
  constexpr int kRows = gemv::pair_rows(gemv::int8_rows_per_warp(kTokens), kPair);
  const unsigned blocks = gemv::row_blocks<kRows, kPair>(w.rows, steps, kWarpsPerBlock);
  return launch<gemv_int8_kernel<kTokens, kRows, kLlmInt8, true, true, kPair>>(
      {blocks, kWarpsPerBlock * 32, block_activation_bytes(n_tokens, w.cols), stream}, w, bias, x, n_tokens,
      Workspace{}, y, steps);
}

template <bool kLlmInt8, bool kPair>
cudaError_t launch_int8_fused_tokens(const QuantizedWeightView& w, const float* bias, const float* x, int n_tokens,
                                     float* y, const GemvSteps& steps, cudaStream_t stream) {
  // Capacities 1 and 4 (2-4 tokens), as the template's fused launchers.
  if (n_tokens <= 1) return launch_int8_fused_for<kLlmInt8, 1, kPair>(w, bias, x, n_tokens, y, steps, stream);
  return launch_int8_fused_for<kLlmInt8, 4, kPair>(w, bias, x, n_tokens, y, steps, stream);
}

template <bool kLlmInt8>
cudaError_t launch_int8_fused(const GemvParts& parts, const float* bias, const float* x, int n_tokens, float* y,
                              const GemvSteps& steps, cudaStream_t stream) {
  if (n_tokens <= 0 || parts.rows <= 0) return cudaSuccess;
  const QuantizedWeightView& w = parts.part[0];
  if (!gemv::single_part_fusable(parts, n_tokens, block_activation_bytes(n_tokens, w.cols), steps))
    return cudaErrorNotSupported;
  if (steps.out == GemvOut::kSwiglu) {
    return launch_int8_fused_tokens<kLlmInt8, true>(w, bias, x, n_tokens, y, steps, stream);
  }
  return launch_int8_fused_tokens<kLlmInt8, false>(w, bias, x, n_tokens, y, steps, stream);
}

cudaError_t launch_fused_gemv_int8(const GemvParts& parts, const float* bias, const float* x, int n_tokens, float* y,
                                   const GemvSteps& steps, cudaStream_t stream) {
  return launch_int8_fused<true>(parts, bias, x, n_tokens, y, steps, stream);
}

cudaError_t launch_fused_gemv_w8a8(const GemvParts& parts, const float* bias, const float* x, int n_tokens, float* y,
                                   const GemvSteps& steps, cudaStream_t stream) {
  return launch_int8_fused<false>(parts, bias, x, n_tokens, y, steps, stream);
}

cudaError_t launch_dequantize_int8(const QuantizedWeightView& w, uint16_t* out, cudaStream_t stream) {
  return launch_dequantize_bf16<Int8Decoder>(w, out, stream);
}

cudaError_t launch_dequantize_w8a8(const QuantizedWeightView& w, uint16_t* out, cudaStream_t stream) {
  return launch_dequantize_bf16<W8a8Decoder>(w, out, stream);
}

cudaError_t launch_w8a8_quantize_activations(const float* x, int n_tokens, int cols, int8_t* xq, float* x_scale,
                                             cudaStream_t stream) {
  if (n_tokens <= 0) return cudaSuccess;
  return launch<w8a8_quantize_tokens_kernel>({unsigned(n_tokens), 256, 0, stream}, x, cols, xq, x_scale);
}

cudaError_t launch_w8a8_rescale(const int32_t* acc, const float* w_scale, const float* x_scale, const float* bias,
                                int n_tokens, int rows, float* y, cudaStream_t stream) {
  const int64_t n = int64_t(n_tokens) * rows;
  if (n == 0) return cudaSuccess;
  const int64_t wanted = (n + 255) / 256;
  return launch<w8a8_rescale_kernel>({unsigned(wanted < 65535 * 8 ? wanted : 65535 * 8), 256, 0, stream}, acc,
                                     w_scale, x_scale, bias, n_tokens, rows, y);
}

extern const QuantizedKernels int8_kernels{
    launch_gemv_int8, int8_gemv_workspace_bytes, true, launch_dequantize_int8, launch_fused_gemv_int8, nullptr, nullptr,
    PrefillGemm::none, false};
extern const QuantizedKernels w8a8_kernels{
    launch_gemv_w8a8, int8_gemv_workspace_bytes, true, launch_dequantize_w8a8, launch_fused_gemv_w8a8, nullptr, nullptr,
    PrefillGemm::int8, false};

}  // namespace lowbit::kernels
