// W8A8-fp8 decode GEMV (format_w8a8_fp8.cpp): e4m3 weights x e4m3 activations, fp32 sums.
//
// A pre-pass quantizes each token (one block per token): x_scale = absmax / 448 (fp32 eps for a
// zero token, NaN for a token holding NaN, as the CPU), xq = e4m3(x / x_scale) saturating, into a
// workspace; the GEMV streams the e4m3 weight rows once for the batch. The conversions are the
// hardware's on sm_89 and sm_90 (cvt.rn.satfinite.e4m3x2.f32, cvt.rn.f16x2.e4m3x2 through
// cuda_fp8.h) and quant_math.h's software ones on sm_80; the emulated device (__CUDA_ARCH__ 900)
// runs the intrinsics of emulated_gpu/include/cuda_fp8.h.
//
// Every product of two e4m3 values is exact in fp32 (4 x 4 significant bits), so the kernel's
// only rounding beyond the CPU reference's is its fp32 accumulation: the CPU sums exactly and
// rounds once; here each lane accumulates its columns in fp32 (fmaf of an exact product is the
// same as a multiply and an add), then the warp sums the lanes. The epilogue is the CPU's:
// sum * fl(w_scale * x_scale), then + bias.
// Row mapping as kernels/gemv_template.cuh and gemv_int8.cu: kRows rows per warp share each
// activation load; when cols % 16 == 0 each lane loads 16 weight bytes per row and 16 activation
// bytes per token (uint4), all weight loads of a step issued before the math; other shapes walk
// one column per lane.
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include "kernels/common.cuh"
#include "kernels/gemv.cuh"
#include "kernels/gemv_fp8.cuh"
#include "kernels/gemv_template.cuh"
#include "kernels/quant_math.h"

namespace lowbit::kernels {

namespace {

constexpr int kWarpsPerBlock = 8;

size_t align16(size_t n) { return (n + 15) & ~size_t(15); }

// Workspace: [xq n*cols e4m3 bytes | token scale n fp32], 16-byte aligned pieces.
struct Fp8Workspace {
  uint8_t* xq;
  float* x_scale;
};

#if LOWBIT_EMULATED_GPU
inline auto emu_device_pointers(const Fp8Workspace& ws) { return std::array<const void*, 2>{ws.xq, ws.x_scale}; }
#endif

Fp8Workspace carve(void* base, int n_tokens, int cols) {
  auto* p = static_cast<uint8_t*>(base);
  Fp8Workspace ws;
  ws.xq = p;
  ws.x_scale = reinterpret_cast<float*>(p + align16(size_t(n_tokens) * size_t(cols)));
  return ws;
}

__device__ __forceinline__ uint8_t to_e4m3(float v) {
#if __CUDA_ARCH__ >= 890
  return uint8_t(__nv_cvt_float_to_fp8(v, __NV_SATFINITE, __NV_E4M3));
#else
  return e4m3_code(v);
#endif
}

// The four e4m3 bytes of a 32-bit word (lowest byte first) as fp32.
__device__ __forceinline__ void e4m3x4_to_float(unsigned word, float* out) {
#if __CUDA_ARCH__ >= 890
  const __half2_raw lo = __nv_cvt_fp8x2_to_halfraw2(__nv_fp8x2_storage_t(word & 0xffffu), __NV_E4M3);
  const __half2_raw hi = __nv_cvt_fp8x2_to_halfraw2(__nv_fp8x2_storage_t(word >> 16), __NV_E4M3);
  out[0] = __half2float(__ushort_as_half(lo.x));
  out[1] = __half2float(__ushort_as_half(lo.y));
  out[2] = __half2float(__ushort_as_half(hi.x));
  out[3] = __half2float(__ushort_as_half(hi.y));
#else
  out[0] = e4m3_value(word & 0xffu);
  out[1] = e4m3_value((word >> 8) & 0xffu);
  out[2] = e4m3_value((word >> 16) & 0xffu);
  out[3] = e4m3_value(word >> 24);
#endif
}

__device__ __forceinline__ float e4m3_to_float(uint8_t byte) {
  float v[4];
  e4m3x4_to_float(unsigned(byte), v);
  return v[0];
}

// One block per token: the scheme's per-token scale and the e4m3 codes.
__global__ void fp8_quantize_tokens_kernel(const float* __restrict__ x, int cols, uint8_t* __restrict__ xq,
                                           float* __restrict__ x_scale) {
  __shared__ float scratch[32];
  const int t = blockIdx.x;
  const float* xt = x + size_t(t) * cols;
  float absmax = 0.0f;
  int has_nan = 0;
  for (int c = threadIdx.x; c < cols; c += blockDim.x) {
    const float a = fabsf(xt[c]);
    has_nan |= isnan(a) ? 1 : 0;
    absmax = fmaxf(absmax, a);
  }
  has_nan = __syncthreads_or(has_nan);
  absmax = block_max(absmax, scratch);
  const float scale = has_nan ? __uint_as_float(0x7fc00000u) : fp8_scale(absmax);
  if (threadIdx.x == 0) x_scale[t] = scale;
  for (int c = threadIdx.x; c < cols; c += blockDim.x) xq[size_t(t) * cols + c] = to_e4m3(xt[c] / scale);
}

// The fused path: each block quantizes the (normalized) activations itself, into dynamic shared
// memory [xq n_tokens * cols | x_scale n_tokens | norm scale n_tokens | norm mean n_tokens], by
// fp8_quantize_tokens_kernel's arithmetic.
size_t block_activation_bytes(int n_tokens, int cols) {
  return align16(size_t(n_tokens) * size_t(cols)) + 3 * align16(size_t(n_tokens) * sizeof(float));
}

__device__ __forceinline__ Fp8Workspace quantize_in_block(const GemvSteps& s, const float* __restrict__ x, int n_tokens, int cols) {
  __shared__ float scratch[32];
  auto* base = dynamic_shared_memory<uint8_t>();
  const size_t xq_bytes = (size_t(n_tokens) * size_t(cols) + 15) & ~size_t(15);
  const size_t scale_bytes = (size_t(n_tokens) * sizeof(float) + 15) & ~size_t(15);
  Fp8Workspace ws{base, reinterpret_cast<float*>(base + xq_bytes)};
  float* norm_scale = reinterpret_cast<float*>(base + xq_bytes + scale_bytes);
  float* norm_mean = reinterpret_cast<float*>(base + xq_bytes + 2 * scale_bytes);
  if (s.norm_weight != nullptr) gemv::norm_stats(s, x, n_tokens, cols, norm_scale, norm_mean);
  for (int t = 0; t < n_tokens; ++t) {
    float absmax = 0.0f;
    int has_nan = 0;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
      const float a = fabsf(gemv::input_value(s, x, norm_scale, norm_mean, t, cols, c));
      has_nan |= isnan(a) ? 1 : 0;
      absmax = fmaxf(absmax, a);
    }
    has_nan = __syncthreads_or(has_nan);
    absmax = block_max(absmax, scratch);
    const float scale = has_nan ? __uint_as_float(0x7fc00000u) : fp8_scale(absmax);
    if (threadIdx.x == 0) ws.x_scale[t] = scale;
    for (int c = threadIdx.x; c < cols; c += blockDim.x)
      ws.xq[size_t(t) * cols + c] = to_e4m3(gemv::input_value(s, x, norm_scale, norm_mean, t, cols, c) / scale);
  }
  __syncthreads();
  return ws;
}

// kInBlock: activations quantized by the block itself (GemvSteps' norm first); kPair: SwiGLU
// pairs (gemv_template.cuh's mapping).
template <int kTokens, int kRows, bool kVector, bool kInBlock = false, bool kPair = false>
__global__ void __launch_bounds__(kWarpsPerBlock * 32)
    gemv_fp8_kernel(QuantizedWeightView w, const float* __restrict__ bias, const float* __restrict__ x, int n_tokens,
                    Fp8Workspace ws, float* __restrict__ y, GemvSteps steps) {
  constexpr int kUnroll = 2;
  const int lane = threadIdx.x & 31;
  const int cols = w.cols;
  if constexpr (kInBlock) ws = quantize_in_block(steps, x, n_tokens, cols);
  const int base = gemv::warp_base<kRows, kPair>(kWarpsPerBlock);
  const int limit = kPair ? steps.hidden : w.rows;
  if (base >= limit) return;
  int row_of[kRows];
  bool valid[kRows];
  gemv::warp_rows<kRows, kPair>(base, limit, steps.hidden, row_of, valid);

  float acc[kTokens][kRows];
#pragma unroll
  for (int t = 0; t < kTokens; ++t)
#pragma unroll
    for (int r = 0; r < kRows; ++r) acc[t][r] = 0.0f;
  if (kVector) {
    const int chunks = cols / 16;
    for (int c0 = lane; c0 < chunks; c0 += 32 * kUnroll) {
      uint4 raw[kUnroll][kRows];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u)
#pragma unroll
        for (int r = 0; r < kRows; ++r) {
          const int c = c0 + 32 * u;
          raw[u][r] = c < chunks && valid[r] ? reinterpret_cast<const uint4*>(w.codes + size_t(row_of[r]) * cols)[c]
                                             : make_uint4(0, 0, 0, 0);
        }
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int c = c0 + 32 * u;
        if (c >= chunks) break;
        float wv[kRows][16];
#pragma unroll
        for (int r = 0; r < kRows; ++r) {
          e4m3x4_to_float(raw[u][r].x, wv[r]);
          e4m3x4_to_float(raw[u][r].y, wv[r] + 4);
          e4m3x4_to_float(raw[u][r].z, wv[r] + 8);
          e4m3x4_to_float(raw[u][r].w, wv[r] + 12);
        }
#pragma unroll
        for (int t = 0; t < kTokens; ++t) {
          if (t >= n_tokens) break;
          const uint4 xraw = reinterpret_cast<const uint4*>(ws.xq + size_t(t) * cols)[c];
          float xv[16];
          e4m3x4_to_float(xraw.x, xv);
          e4m3x4_to_float(xraw.y, xv + 4);
          e4m3x4_to_float(xraw.z, xv + 8);
          e4m3x4_to_float(xraw.w, xv + 12);
#pragma unroll
          for (int r = 0; r < kRows; ++r)
#pragma unroll
            for (int i = 0; i < 16; ++i) acc[t][r] = fmaf(wv[r][i], xv[i], acc[t][r]);
        }
      }
    }
  } else {
    for (int col = lane; col < cols; col += 32) {
#pragma unroll
      for (int r = 0; r < kRows; ++r) {
        const float wv = valid[r] ? e4m3_to_float(w.codes[size_t(row_of[r]) * cols + col]) : 0.0f;
#pragma unroll
        for (int t = 0; t < kTokens; ++t)
          if (t < n_tokens) acc[t][r] = fmaf(wv, e4m3_to_float(ws.xq[size_t(t) * cols + col]), acc[t][r]);
      }
    }
  }

  float out[kTokens][kRows];
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    const float scale = w.scales[row_of[r]];
    const float b = bias != nullptr ? bias[row_of[r]] : 0.0f;
#pragma unroll
    for (int t = 0; t < kTokens; ++t) {
      const float total = warp_sum(acc[t][r]);
      out[t][r] = t < n_tokens ? fp8_rescale(total, scale, ws.x_scale[t]) + b : 0.0f;
    }
  }
  if (lane == 0) gemv::write_outputs<kTokens, kRows, kPair>(out, valid, row_of, base, n_tokens, w.rows, steps, y);
}

template <int kTokens>
cudaError_t launch_fp8_for(const QuantizedWeightView& w, const float* bias, int n_tokens, Fp8Workspace ws, float* y,
                           cudaStream_t stream) {
  constexpr int kRows = gemv::int8_rows_per_warp(kTokens);
  const unsigned threads = kWarpsPerBlock * 32;
  if (w.cols % 16 == 0) {
    const unsigned blocks = unsigned((w.rows + kWarpsPerBlock * kRows - 1) / (kWarpsPerBlock * kRows));
    return launch<gemv_fp8_kernel<kTokens, kRows, true>>({blocks, threads, 0, stream}, w, bias, nullptr, n_tokens, ws, y,
                                                         GemvSteps{});
  }
  const unsigned blocks = unsigned((w.rows + kWarpsPerBlock - 1) / kWarpsPerBlock);
  return launch<gemv_fp8_kernel<kTokens, 1, false>>({blocks, threads, 0, stream}, w, bias, nullptr, n_tokens, ws, y,
                                                    GemvSteps{});
}

cudaError_t launch_fp8_gemv(const QuantizedWeightView& w, const float* bias, int n_tokens, Fp8Workspace ws, float* y,
                            cudaStream_t stream) {
  if (n_tokens <= 1) return launch_fp8_for<1>(w, bias, n_tokens, ws, y, stream);
  if (n_tokens <= 2) return launch_fp8_for<2>(w, bias, n_tokens, ws, y, stream);
  if (n_tokens <= 4) return launch_fp8_for<4>(w, bias, n_tokens, ws, y, stream);
  if (n_tokens <= 8) return launch_fp8_for<8>(w, bias, n_tokens, ws, y, stream);
  return launch_fp8_for<16>(w, bias, n_tokens, ws, y, stream);
}

// y[t, r] = acc[t, r] * fl(w_scale[r] * x_scale[t]) (+ bias[r]), row-major [n_tokens, rows]; acc
// may be y itself (each element is read, then written, by one thread).
__global__ void fp8_rescale_kernel(const float* acc, const float* __restrict__ w_scale,
                                   const float* __restrict__ x_scale, const float* __restrict__ bias, int n_tokens,
                                   int rows, float* y) {
  const int64_t n = int64_t(n_tokens) * rows;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int t = int(i / rows), r = int(i % rows);
    const float out = fp8_rescale(acc[i], w_scale[r], x_scale[t]);
    y[i] = bias != nullptr ? out + bias[r] : out;
  }
}

struct Fp8Decoder {
  __device__ static float value(const QuantizedWeightView& w, int r, int c) {
    return e4m3_to_float(w.codes[size_t(r) * w.cols + c]) * w.scales[r];
  }
};

}  // namespace

size_t fp8_gemv_workspace_bytes(int n_tokens, int cols) {
  return align16(size_t(n_tokens) * size_t(cols)) + align16(size_t(n_tokens) * sizeof(float));
}

cudaError_t launch_fp8_quantize_activations(const float* x, int n_tokens, int cols, uint8_t* xq, float* x_scale,
                                            cudaStream_t stream) {
  if (n_tokens <= 0) return cudaSuccess;
  return launch<fp8_quantize_tokens_kernel>({unsigned(n_tokens), 256, 0, stream}, x, cols, xq, x_scale);
}

cudaError_t launch_gemv_w8a8_fp8(const QuantizedWeightView& w, const float* bias, const float* x, int n_tokens,
                                 float* y, void* workspace, cudaStream_t stream) {
  if (n_tokens <= 0 || w.rows <= 0) return cudaSuccess;
  const Fp8Workspace ws = carve(workspace, n_tokens, w.cols);
  cudaError_t err = launch_fp8_quantize_activations(x, n_tokens, w.cols, ws.xq, ws.x_scale, stream);
  if (err != cudaSuccess) return err;
  // The activations of every token are in `ws`: the chunks are the batch's exact arithmetic.
  for (int t0 = 0; t0 < n_tokens; t0 += kMaxGemvTokens) {
    Fp8Workspace chunk = ws;
    chunk.xq += size_t(t0) * size_t(w.cols);
    chunk.x_scale += t0;
    const int n = n_tokens - t0 < kMaxGemvTokens ? n_tokens - t0 : kMaxGemvTokens;
    err = launch_fp8_gemv(w, bias, n, chunk, y + size_t(t0) * size_t(w.rows), stream);
    if (err != cudaSuccess) return err;
  }
  return cudaSuccess;
}

cudaError_t launch_fp8_rescale(const float* acc, const float* w_scale, const float* x_scale, const float* bias,
                               int n_tokens, int rows, float* y, cudaStream_t stream) {
  const int64_t n = int64_t(n_tokens) * rows;
  if (n == 0) return cudaSuccess;
  const int64_t wanted = (n + 255) / 256;
  return launch<fp8_rescale_kernel>({unsigned(wanted < 65535 * 8 ? wanted : 65535 * 8), 256, 0, stream}, acc, w_scale,
                                    x_scale, bias, n_tokens, rows, y);
}

namespace {

template <int kTokens, bool kPair>
cudaError_t launch_fp8_fused_for(const QuantizedWeightView& w, const float* bias, const float* x, int n_tokens, float* y,
                                 const GemvSteps& steps, cudaStream_t stream) {
  constexpr int kRows = gemv::pair_rows(gemv::int8_rows_per_warp(kTokens), kPair);
  const unsigned blocks = gemv::row_blocks<kRows, kPair>(w.rows, steps, kWarpsPerBlock);
  return launch<gemv_fp8_kernel<kTokens, kRows, true, true, kPair>>(
      {blocks, kWarpsPerBlock * 32, block_activation_bytes(n_tokens, w.cols), stream}, w, bias, x, n_tokens,
      Fp8Workspace{}, y, steps);
}

template <bool kPair>
cudaError_t launch_fp8_fused_tokens(const QuantizedWeightView& w, const float* bias, const float* x, int n_tokens,
                                    float* y, const GemvSteps& steps, cudaStream_t stream) {
  // Capacities 1 and 4 (2-4 tokens), as the template's fused launchers.
  if (n_tokens <= 1) return launch_fp8_fused_for<1, kPair>(w, bias, x, n_tokens, y, steps, stream);
  return launch_fp8_fused_for<4, kPair>(w, bias, x, n_tokens, y, steps, stream);
}

}  // namespace

cudaError_t launch_fused_gemv_w8a8_fp8(const GemvParts& parts, const float* bias, const float* x, int n_tokens,
                                       float* y, const GemvSteps& steps, cudaStream_t stream) {
  if (n_tokens <= 0 || parts.rows <= 0) return cudaSuccess;
  const QuantizedWeightView& w = parts.part[0];
  if (!gemv::single_part_fusable(parts, n_tokens, block_activation_bytes(n_tokens, w.cols), steps))
    return cudaErrorNotSupported;
  if (steps.out == GemvOut::kSwiglu) {
    return launch_fp8_fused_tokens<true>(w, bias, x, n_tokens, y, steps, stream);
  }
  return launch_fp8_fused_tokens<false>(w, bias, x, n_tokens, y, steps, stream);
}

cudaError_t launch_dequantize_w8a8_fp8(const QuantizedWeightView& w, uint16_t* out, cudaStream_t stream) {
  return launch_dequantize_bf16<Fp8Decoder>(w, out, stream);
}

extern const QuantizedKernels w8a8_fp8_kernels{
    launch_gemv_w8a8_fp8, fp8_gemv_workspace_bytes, true, launch_dequantize_w8a8_fp8, launch_fused_gemv_w8a8_fp8,
    nullptr, nullptr, PrefillGemm::e4m3, false};

}  // namespace lowbit::kernels
