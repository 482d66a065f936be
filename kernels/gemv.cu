// Decode GEMV. Decode is memory-bound: every weight byte is read once per step, so the kernel
// is written to stream W at full bandwidth and do nothing else expensive:
//  - one warp per output row, lanes reading consecutive 16-byte chunks of that row (8 bf16 or
//    4 fp32 values: 128-bit loads, a warp covers 512 contiguous bytes per step, fully coalesced);
//  - the column loop is unrolled so each lane has several independent 16-byte loads in flight;
//  - all n_tokens (<= 16) activations are multiplied against each weight chunk while it is in
//    registers, so W is read once for the whole batch;
//  - x stays fp32 and is read straight from global memory: it is tiny (n_tokens * cols * 4
//    bytes, <= 1 MB) and shared by every warp, so after the first warps it is served by L1/L2.
//    Keeping it fp32 (no bf16 staging) makes the result equal the CPU's bf16-weight/fp32-
//    activation arithmetic up to summation order;
//  - a warp-shuffle reduction finishes each row; the bias is added in the same epilogue.
// Rows whose length is not a multiple of the vector width (odd test shapes) take a scalar loop.
#include "kernels/common.cuh"
#include "kernels/gemv.cuh"

namespace lowbit::kernels {

namespace {

constexpr int kWarpsPerBlock = 8;

struct Bf16Weights {
  using Element = unsigned short;
  static constexpr int kPerVector = 8;  // 8 bf16 in a uint4
  __device__ static void load(const Element* row, int col, float (&w)[kPerVector]) {
    const uint4 raw = *reinterpret_cast<const uint4*>(row + col);
    const unsigned parts[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      w[2 * i] = __uint_as_float(parts[i] << 16);
      w[2 * i + 1] = __uint_as_float(parts[i] & 0xffff0000u);
    }
  }
  __device__ static float scalar(const Element* row, int col) { return bf16_bits_to_float(row[col]); }
};

struct F32Weights {
  using Element = float;
  static constexpr int kPerVector = 4;  // 4 floats in a float4
  __device__ static void load(const Element* row, int col, float (&w)[kPerVector]) {
    const float4 raw = *reinterpret_cast<const float4*>(row + col);
    w[0] = raw.x;
    w[1] = raw.y;
    w[2] = raw.z;
    w[3] = raw.w;
  }
  __device__ static float scalar(const Element* row, int col) { return row[col]; }
};

// kTokens: the batch capacity of this instantiation (n_tokens <= kTokens); registers hold one
// accumulator per token, indexed only by unrolled constants.
template <typename Weights, int kTokens>
__global__ void __launch_bounds__(kWarpsPerBlock * 32)
    gemv_kernel(const typename Weights::Element* __restrict__ w, const float* __restrict__ bias,
                const float* __restrict__ x, int n_tokens, int rows, int cols, float* __restrict__ y) {
  constexpr int kVec = Weights::kPerVector;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int row = blockIdx.x * kWarpsPerBlock + warp;
  if (row >= rows) return;  // whole warp leaves together: no shuffle sees a missing lane
  const typename Weights::Element* w_row = w + size_t(row) * size_t(cols);

  float acc[kTokens];
#pragma unroll
  for (int t = 0; t < kTokens; ++t) acc[t] = 0.0f;

  if (cols % kVec == 0) {
#pragma unroll 4
    for (int col = lane * kVec; col < cols; col += 32 * kVec) {
      float wv[kVec];
      Weights::load(w_row, col, wv);
#pragma unroll
      for (int t = 0; t < kTokens; ++t) {
        if (t < n_tokens) {
          const float* xt = x + size_t(t) * cols + col;
#pragma unroll
          for (int i = 0; i < kVec; i += 4) {
            const float4 xv = *reinterpret_cast<const float4*>(xt + i);
            acc[t] += wv[i] * xv.x + wv[i + 1] * xv.y + wv[i + 2] * xv.z + wv[i + 3] * xv.w;
          }
        }
      }
    }
  } else {
    for (int col = lane; col < cols; col += 32) {
      const float wv = Weights::scalar(w_row, col);
#pragma unroll
      for (int t = 0; t < kTokens; ++t)
        if (t < n_tokens) acc[t] += wv * x[size_t(t) * cols + col];
    }
  }

  const float b = bias != nullptr ? bias[row] : 0.0f;
#pragma unroll
  for (int t = 0; t < kTokens; ++t) {
    const float total = warp_sum(acc[t]);
    if (lane == 0 && t < n_tokens) y[size_t(t) * rows + row] = total + b;
  }
}

template <typename Weights>
cudaError_t launch_gemv(const typename Weights::Element* w, const float* bias, const float* x, int n_tokens, int rows,
                        int cols, float* y, cudaStream_t stream) {
  if (n_tokens <= 0 || rows <= 0) return cudaSuccess;
  if (n_tokens > kMaxGemvTokens) return cudaErrorInvalidValue;
  const unsigned blocks = unsigned((rows + kWarpsPerBlock - 1) / kWarpsPerBlock);
  const unsigned threads = kWarpsPerBlock * 32;
  // A few batch capacities instead of 16: each one is a separately compiled kernel.
  if (n_tokens <= 1)
    return launch<gemv_kernel<Weights, 1>>({blocks, threads, 0, stream}, w, bias, x, n_tokens, rows, cols, y);
  else if (n_tokens <= 2)
    return launch<gemv_kernel<Weights, 2>>({blocks, threads, 0, stream}, w, bias, x, n_tokens, rows, cols, y);
  else if (n_tokens <= 4)
    return launch<gemv_kernel<Weights, 4>>({blocks, threads, 0, stream}, w, bias, x, n_tokens, rows, cols, y);
  else if (n_tokens <= 8)
    return launch<gemv_kernel<Weights, 8>>({blocks, threads, 0, stream}, w, bias, x, n_tokens, rows, cols, y);
  else
    return launch<gemv_kernel<Weights, 16>>({blocks, threads, 0, stream}, w, bias, x, n_tokens, rows, cols, y);
}

}  // namespace

cudaError_t launch_gemv_bf16(const uint16_t* w, const float* bias, const float* x, int n_tokens, int rows, int cols,
                             float* y, cudaStream_t stream) {
  return launch_gemv<Bf16Weights>(reinterpret_cast<const unsigned short*>(w), bias, x, n_tokens, rows, cols, y,
                                  stream);
}

cudaError_t launch_gemv_f32(const float* w, const float* bias, const float* x, int n_tokens, int rows, int cols,
                            float* y, cudaStream_t stream) {
  return launch_gemv<F32Weights>(w, bias, x, n_tokens, rows, cols, y, stream);
}

}  // namespace lowbit::kernels
