// Fused NF4 / FP4 (-dq) decode GEMV. The weight is one byte stream over the row-major flattened
// tensor (element 2j in the HIGH nibble of byte j), blocks of block_size consecutive flat values
// share an fp32 absmax (plain) or an 8-bit code of (absmax - offset) with an fp32 scale per 256
// blocks (-dq, decoded here: absmax = dynamic_map[code] * scales2[b / 256] + offset, rounded
// after the multiply and after the add exactly as the CPU reference does, so no FMA).
// A weight value is table[code] * absmax (one fp32 multiply, as the CPU), then the dot product
// runs in fp32 against fp32 activations: only the summation order differs from the CPU.
//
// Design (decode is memory-bound; the weight is 0.5 byte per value plus ~1/16 byte of scales):
//  - one warp per output row, lanes walking the row; all n_tokens activations multiplied against
//    each decoded chunk while it sits in registers, so W is read once per step for the batch;
//  - fast path (cols % 8 == 0 and block_size % 8 == 0, i.e. every real model): each lane loads
//    one 32-bit word = 8 codes that lie in one row and one block, so one absmax per word; x is
//    read as two float4 (rows of x are 32-byte aligned because cols % 8 == 0);
//  - the 16-entry code table sits in shared memory (indexed by run-time nibbles: registers would
//    need a constant index, constant memory would serialize divergent lanes);
//  - any other shape takes a scalar loop by flat index, which handles blocks straddling rows and
//    rows starting mid-byte (cols odd) with no special cases.
#include "formats/code_tables.h"
#include "kernels/common.cuh"
#include "kernels/gemv.cuh"
#include "kernels/gemv_nf4_fp4.cuh"
#include "kernels/quant_math.h"

namespace lowbit::kernels {

namespace {

constexpr int kWarpsPerBlock = 8;

// Code tables (src/formats/code_tables.h): [0] NF4, [1] bnb FP4 (its own code, bit 3 = sign).
__constant__ float kFourBitTables[2][16] = {LOWBIT_NF4_CODES, LOWBIT_FP4_CODES};

// bnb's create_dynamic_map(signed=True) (src/formats/code_tables.h).
__constant__ float kDynamicMap[256] = LOWBIT_DYNAMIC_MAP_SIGNED;

__device__ __forceinline__ float block_absmax(const QuantizedWeightView& w, int64_t block) {
  if (!w.double_quant) return w.scales[block];
  return dq_absmax(kDynamicMap[w.scale_codes[block]], w.scales2[block / kDqBlock], w.offset);
}

struct FourBitDecoder {
  __device__ static float value(const QuantizedWeightView& w, int r, int c) {
    const int64_t flat = int64_t(r) * w.cols + c;
    return kFourBitTables[w.nf4 ? 0 : 1][four_bit_code(w.codes, flat)] * block_absmax(w, flat / w.block_size);
  }
};

template <int kTokens>
__global__ void __launch_bounds__(kWarpsPerBlock * 32)
    gemv_four_bit_kernel(QuantizedWeightView w, const float* __restrict__ bias, const float* __restrict__ x,
                         int n_tokens, float* __restrict__ y) {
  __shared__ float table[16];
  if (threadIdx.x < 16) table[threadIdx.x] = kFourBitTables[w.nf4 ? 0 : 1][threadIdx.x];
  __syncthreads();
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int row = blockIdx.x * kWarpsPerBlock + warp;
  if (row >= w.rows) return;  // whole warp leaves together
  const int cols = w.cols;
  const int64_t base = int64_t(row) * cols;

  float acc[kTokens];
#pragma unroll
  for (int t = 0; t < kTokens; ++t) acc[t] = 0.0f;

  if (cols % 8 == 0 && w.block_size % 8 == 0) {
    // base is a multiple of 8 values = 4 bytes: 32-bit loads are aligned (cudaMalloc: 256 B).
    const uint32_t* packed = reinterpret_cast<const uint32_t*>(w.codes + base / 2);
#pragma unroll 4
    for (int col = lane * 8; col < cols; col += 32 * 8) {
      const uint32_t word = packed[col / 8];
      const float scale = block_absmax(w, (base + col) / w.block_size);
      float wv[8];
#pragma unroll
      for (int i = 0; i < 8; ++i) wv[i] = table[four_bit_word_code(word, i)] * scale;
#pragma unroll
      for (int t = 0; t < kTokens; ++t) {
        if (t < n_tokens) {
          const float4* xt = reinterpret_cast<const float4*>(x + size_t(t) * cols + col);
          const float4 a = xt[0], b = xt[1];
          acc[t] += wv[0] * a.x + wv[1] * a.y + wv[2] * a.z + wv[3] * a.w + wv[4] * b.x + wv[5] * b.y +
                    wv[6] * b.z + wv[7] * b.w;
        }
      }
    }
  } else {
    for (int col = lane; col < cols; col += 32) {
      const int64_t flat = base + col;
      const float wv = table[four_bit_code(w.codes, flat)] * block_absmax(w, flat / w.block_size);
#pragma unroll
      for (int t = 0; t < kTokens; ++t)
        if (t < n_tokens) acc[t] += wv * x[size_t(t) * cols + col];
    }
  }

  // A part of a layer writes into its rows of the layer's output (QuantizedWeightView::out_rows).
  const int out_row = w.out_rows != nullptr ? w.out_rows[row] : row;
  const float b = bias != nullptr ? bias[out_row] : 0.0f;
  const size_t stride = size_t(w.out_stride > 0 ? w.out_stride : w.rows);
#pragma unroll
  for (int t = 0; t < kTokens; ++t) {
    const float total = warp_sum(acc[t]);
    if (lane == 0 && t < n_tokens) y[size_t(t) * stride + out_row] = total + b;
  }
}

}  // namespace

cudaError_t launch_gemv_four_bit(const QuantizedWeightView& w, const float* bias, const float* x, int n_tokens,
                                 float* y, cudaStream_t stream) {
  if (n_tokens <= 0 || w.rows <= 0) return cudaSuccess;
  if (n_tokens > kMaxGemvTokens || w.block_size <= 0) return cudaErrorInvalidValue;
  const unsigned blocks = unsigned((w.rows + kWarpsPerBlock - 1) / kWarpsPerBlock), threads = kWarpsPerBlock * 32;
  if (n_tokens <= 1)
    return launch<gemv_four_bit_kernel<1>>({blocks, threads, 0, stream}, w, bias, x, n_tokens, y);
  else if (n_tokens <= 2)
    return launch<gemv_four_bit_kernel<2>>({blocks, threads, 0, stream}, w, bias, x, n_tokens, y);
  else if (n_tokens <= 4)
    return launch<gemv_four_bit_kernel<4>>({blocks, threads, 0, stream}, w, bias, x, n_tokens, y);
  else if (n_tokens <= 8)
    return launch<gemv_four_bit_kernel<8>>({blocks, threads, 0, stream}, w, bias, x, n_tokens, y);
  else
    return launch<gemv_four_bit_kernel<16>>({blocks, threads, 0, stream}, w, bias, x, n_tokens, y);
}

cudaError_t launch_dequantize_four_bit(const QuantizedWeightView& w, uint16_t* out, cudaStream_t stream) {
  return launch_dequantize_bf16<FourBitDecoder>(w, out, stream);
}

}  // namespace lowbit::kernels
