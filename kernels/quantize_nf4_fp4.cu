// NF4 / FP4 quantization on the GPU, written to give the CPU reference's bytes exactly
// (src/formats/format_nf4_fp4.cpp, itself bit-exact with bitsandbytes' CPU path):
//   absmax  = max |w| over the block (order-free, so a warp reduction is exact);
//   full block:   s = clamp(w * (1 / max(absmax, 1e-38)), -1, 1), the reciprocal once in fp32;
//   partial last: s = clamp(w / max(absmax, 1e-38), -1, 1) and the stored absmax is the clamped one;
//   code = code_at[number of fp32 midpoints of the sorted table strictly below s] (ties go to
//          the lower value; NaN compares false everywhere and lands on position 0 as on the CPU);
//   an odd total leaves the last low nibble = the code of 0.0.
// The midpoints are computed on the host with the CPU's expression ((a + b) / 2 in fp32 over the
// stable-sorted table) and passed by value. Every rounding is an explicit IEEE op (__fmul_rn,
// __fdiv_rn, __frcp_rn) so that no compiler flag can change it.
// One warp per block of values; each lane writes whole bytes (blocks are even-sized and start at
// even indices, so no two blocks share a byte).
#include "formats/code_tables.h"
#include <algorithm>
#include <array>
#include <numeric>

#include "kernels/common.cuh"
#include "kernels/quantize_nf4_fp4.cuh"

namespace lowbit::kernels {

namespace {

constexpr int kWarpsPerBlock = 8;
constexpr float kTinyAbsmax = 1e-38f;

// Code 0..15 (src/formats/code_tables.h, shared with the CPU reference).
constexpr std::array<float, 16> kNf4Table = LOWBIT_NF4_CODES;
constexpr std::array<float, 16> kFp4Table = LOWBIT_FP4_CODES;

struct Encoder {
  float midpoints[15];  // ascending
  unsigned char code_at[16];
};

Encoder make_encoder(const std::array<float, 16>& table) {
  std::array<int, 16> order;
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return table[size_t(a)] < table[size_t(b)]; });
  Encoder e{};
  for (int i = 0; i < 16; ++i) e.code_at[i] = static_cast<unsigned char>(order[size_t(i)]);
  for (int i = 0; i < 15; ++i) e.midpoints[i] = (table[size_t(order[size_t(i)])] + table[size_t(order[size_t(i + 1)])]) / 2.0f;
  return e;
}

__device__ __forceinline__ unsigned encode(const Encoder& e, float s) {
  int position = 0;
#pragma unroll
  for (int i = 0; i < 15; ++i) position += e.midpoints[i] < s ? 1 : 0;
  return e.code_at[position];
}

// std::clamp(v, -1, 1) including its NaN behaviour (NaN passes through).
__device__ __forceinline__ float clamp_unit(float v) { return v < -1.0f ? -1.0f : (1.0f < v ? 1.0f : v); }

__global__ void __launch_bounds__(kWarpsPerBlock * 32)
    quantize_four_bit_kernel(const float* __restrict__ w, int64_t n, int block_size, Encoder e,
                             uint8_t* __restrict__ codes, float* __restrict__ absmax) {
  const int lane = threadIdx.x & 31;
  const int64_t block = int64_t(blockIdx.x) * kWarpsPerBlock + (threadIdx.x >> 5);
  const int64_t n_blocks = (n + block_size - 1) / block_size;
  if (block >= n_blocks) return;
  const int64_t lo = block * block_size, hi = lo + block_size < n ? lo + block_size : n;
  float amax = 0.0f;
  for (int64_t i = lo + lane; i < hi; i += 32) {
    const float v = fabsf(w[i]);
    amax = amax < v ? v : amax;  // std::max: a NaN never replaces the running value
  }
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) {
    const float other = __shfl_xor_sync(kFullWarp, amax, offset);
    amax = amax < other ? other : amax;
  }
  const bool partial = hi - lo < block_size;
  const float clamped = amax < kTinyAbsmax ? kTinyAbsmax : amax;
  const float inv = __fdiv_rn(1.0f, clamped);
  if (lane == 0) absmax[block] = partial ? clamped : amax;
  for (int64_t first = lo + 2 * lane; first < hi; first += 64) {
    unsigned byte = 0;
#pragma unroll
    for (int k = 0; k < 2; ++k) {
      const int64_t i = first + k;
      unsigned code;
      if (i < hi)
        code = encode(e, clamp_unit(partial ? __fdiv_rn(w[i], clamped) : __fmul_rn(w[i], inv)));
      else
        code = encode(e, 0.0f);  // odd total: bnb pads with 0.0 (only the tensor's very last byte)
      byte |= k == 0 ? code << 4 : code;
    }
    codes[first / 2] = static_cast<uint8_t>(byte);
  }
}

}  // namespace

cudaError_t launch_quantize_four_bit(const float* w, int64_t n, int block_size, bool nf4, uint8_t* codes,
                                     float* absmax, cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  if (block_size <= 0 || block_size % 2 != 0) return cudaErrorInvalidValue;
  static const Encoder nf4_encoder = make_encoder(kNf4Table), fp4_encoder = make_encoder(kFp4Table);
  const int64_t n_blocks = (n + block_size - 1) / block_size;
  const unsigned grid = unsigned((n_blocks + kWarpsPerBlock - 1) / kWarpsPerBlock);
  return launch<quantize_four_bit_kernel>({grid, kWarpsPerBlock * 32, 0, stream}, w, n, block_size,
                                          nf4 ? nf4_encoder : fp4_encoder, codes, absmax);
}

}  // namespace lowbit::kernels
