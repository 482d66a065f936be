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
#include "kernels/common.cuh"
#include "kernels/gemv.cuh"
#include "kernels/gemv_nf4_fp4.cuh"

namespace lowbit::kernels {

namespace {

constexpr int kWarpsPerBlock = 8;
constexpr int kDqBlock = 256;  // absmax values per second-level scale

// Code tables, the CPU file's values: [0] NF4, [1] bnb FP4 (its own code, bit 3 = sign).
__constant__ float kFourBitTables[2][16] = {
    {-1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f, -0.28444138169288635f,
     -0.18477343022823334f, -0.09105003625154495f, 0.0f, 0.07958029955625534f, 0.16093020141124725f,
     0.24611230194568634f, 0.33791524171829224f, 0.44070982933044434f, 0.5626170039176941f, 0.7229568362236023f,
     1.0f},
    {0.0f, 0.0625f / 12.0f, 8.0f / 12.0f, 1.0f, 4.0f / 12.0f, 6.0f / 12.0f, 2.0f / 12.0f, 3.0f / 12.0f, 0.0f,
     -0.0625f / 12.0f, -8.0f / 12.0f, -1.0f, -4.0f / 12.0f, -6.0f / 12.0f, -2.0f / 12.0f, -3.0f / 12.0f}};

// bnb's create_dynamic_map(signed=True), copied from src/formats/format_nf4_fp4.cpp.
__constant__ float kDynamicMap[256] = {
    -0x1.fc6666p-1f, -0x1.f53334p-1f, -0x1.eep-1f, -0x1.e6ccccp-1f, -0x1.df999ap-1f, -0x1.d86666p-1f,
    -0x1.d13334p-1f, -0x1.cap-1f, -0x1.c2ccccp-1f, -0x1.bb999ap-1f, -0x1.b46666p-1f, -0x1.ad3334p-1f,
    -0x1.a6p-1f, -0x1.9eccccp-1f, -0x1.97999ap-1f, -0x1.906666p-1f, -0x1.893334p-1f, -0x1.82p-1f,
    -0x1.7accccp-1f, -0x1.73999ap-1f, -0x1.6c6668p-1f, -0x1.653334p-1f, -0x1.5ep-1f, -0x1.56ccccp-1f,
    -0x1.4f999ap-1f, -0x1.486668p-1f, -0x1.413334p-1f, -0x1.3ap-1f, -0x1.32ccccp-1f, -0x1.2b999ap-1f,
    -0x1.246668p-1f, -0x1.1d3334p-1f, -0x1.16p-1f, -0x1.0eccccp-1f, -0x1.079998p-1f, -0x1.006666p-1f,
    -0x1.f26664p-2f, -0x1.e4p-2f, -0x1.d59998p-2f, -0x1.c73334p-2f, -0x1.b8ccccp-2f, -0x1.aa6666p-2f,
    -0x1.9cp-2f, -0x1.8d9998p-2f, -0x1.7f3334p-2f, -0x1.70ccccp-2f, -0x1.626666p-2f, -0x1.54p-2f,
    -0x1.459998p-2f, -0x1.373334p-2f, -0x1.28ccccp-2f, -0x1.1a6668p-2f, -0x1.0cp-2f, -0x1.fb3332p-3f,
    -0x1.de6666p-3f, -0x1.c1999ap-3f, -0x1.a4ccccp-3f, -0x1.88p-3f, -0x1.6b3334p-3f, -0x1.4e6666p-3f,
    -0x1.31999ap-3f, -0x1.14ccccp-3f, -0x1.fp-4f, -0x1.b66668p-4f, -0x1.93d70ap-4f, -0x1.8851eep-4f,
    -0x1.7ccccep-4f, -0x1.7147aep-4f, -0x1.65c29p-4f, -0x1.5a3d7p-4f, -0x1.4eb854p-4f, -0x1.433334p-4f,
    -0x1.37ae14p-4f, -0x1.2c28f6p-4f, -0x1.20a3d6p-4f, -0x1.151ebap-4f, -0x1.09999ap-4f, -0x1.fc28f6p-5f,
    -0x1.e51ebap-5f, -0x1.ce147ap-5f, -0x1.b70a3ep-5f, -0x1.ap-5f, -0x1.88f5c2p-5f, -0x1.71eb86p-5f,
    -0x1.5ae146p-5f, -0x1.43d70ap-5f, -0x1.2ccccep-5f, -0x1.15c29p-5f, -0x1.fd70a4p-6f, -0x1.cf5c2ap-6f,
    -0x1.a147aep-6f, -0x1.733334p-6f, -0x1.451ebap-6f, -0x1.170a3ep-6f, -0x1.d1eb86p-7f, -0x1.75c29p-7f,
    -0x1.3e76c8p-7f, -0x1.2c083p-7f, -0x1.19999ap-7f, -0x1.072b02p-7f, -0x1.e978d4p-8f, -0x1.c49ba6p-8f,
    -0x1.9fbe76p-8f, -0x1.7ae148p-8f, -0x1.56041ap-8f, -0x1.3126e8p-8f, -0x1.0c49bap-8f, -0x1.ced914p-9f,
    -0x1.851eb8p-9f, -0x1.3b645ap-9f, -0x1.e353f8p-10f, -0x1.4fdf3ap-10f, -0x1.eecbfep-11f, -0x1.b3d07cp-11f,
    -0x1.78d5p-11f, -0x1.3dd982p-11f, -0x1.02de02p-11f, -0x1.8fc506p-12f, -0x1.19ce0ap-12f, -0x1.47ae16p-13f,
    -0x1.743e96p-14f, -0x1.15df66p-14f, -0x1.6f0068p-15f, -0x1.64840cp-16f, -0x1.040bfep-17f, -0x1.b43528p-19f,
    -0x1.27476ep-21f, 0.0f, 0x1.27476ep-21f, 0x1.b43528p-19f, 0x1.040bfep-17f, 0x1.64840cp-16f,
    0x1.6f0068p-15f, 0x1.15df66p-14f, 0x1.743e96p-14f, 0x1.47ae16p-13f, 0x1.19ce0ap-12f, 0x1.8fc506p-12f,
    0x1.02de02p-11f, 0x1.3dd982p-11f, 0x1.78d5p-11f, 0x1.b3d07cp-11f, 0x1.eecbfep-11f, 0x1.4fdf3ap-10f,
    0x1.e353f8p-10f, 0x1.3b645ap-9f, 0x1.851eb8p-9f, 0x1.ced914p-9f, 0x1.0c49bap-8f, 0x1.3126e8p-8f,
    0x1.56041ap-8f, 0x1.7ae148p-8f, 0x1.9fbe76p-8f, 0x1.c49ba6p-8f, 0x1.e978d4p-8f, 0x1.072b02p-7f,
    0x1.19999ap-7f, 0x1.2c083p-7f, 0x1.3e76c8p-7f, 0x1.75c29p-7f, 0x1.d1eb86p-7f, 0x1.170a3ep-6f,
    0x1.451ebap-6f, 0x1.733334p-6f, 0x1.a147aep-6f, 0x1.cf5c2ap-6f, 0x1.fd70a4p-6f, 0x1.15c29p-5f,
    0x1.2ccccep-5f, 0x1.43d70ap-5f, 0x1.5ae146p-5f, 0x1.71eb86p-5f, 0x1.88f5c2p-5f, 0x1.ap-5f,
    0x1.b70a3ep-5f, 0x1.ce147ap-5f, 0x1.e51ebap-5f, 0x1.fc28f6p-5f, 0x1.09999ap-4f, 0x1.151ebap-4f,
    0x1.20a3d6p-4f, 0x1.2c28f6p-4f, 0x1.37ae14p-4f, 0x1.433334p-4f, 0x1.4eb854p-4f, 0x1.5a3d7p-4f,
    0x1.65c29p-4f, 0x1.7147aep-4f, 0x1.7ccccep-4f, 0x1.8851eep-4f, 0x1.93d70ap-4f, 0x1.b66668p-4f,
    0x1.fp-4f, 0x1.14ccccp-3f, 0x1.31999ap-3f, 0x1.4e6666p-3f, 0x1.6b3334p-3f, 0x1.88p-3f,
    0x1.a4ccccp-3f, 0x1.c1999ap-3f, 0x1.de6666p-3f, 0x1.fb3332p-3f, 0x1.0cp-2f, 0x1.1a6668p-2f,
    0x1.28ccccp-2f, 0x1.373334p-2f, 0x1.459998p-2f, 0x1.54p-2f, 0x1.626666p-2f, 0x1.70ccccp-2f,
    0x1.7f3334p-2f, 0x1.8d9998p-2f, 0x1.9cp-2f, 0x1.aa6666p-2f, 0x1.b8ccccp-2f, 0x1.c73334p-2f,
    0x1.d59998p-2f, 0x1.e4p-2f, 0x1.f26664p-2f, 0x1.006666p-1f, 0x1.079998p-1f, 0x1.0eccccp-1f,
    0x1.16p-1f, 0x1.1d3334p-1f, 0x1.246668p-1f, 0x1.2b999ap-1f, 0x1.32ccccp-1f, 0x1.3ap-1f,
    0x1.413334p-1f, 0x1.486668p-1f, 0x1.4f999ap-1f, 0x1.56ccccp-1f, 0x1.5ep-1f, 0x1.653334p-1f,
    0x1.6c6668p-1f, 0x1.73999ap-1f, 0x1.7accccp-1f, 0x1.82p-1f, 0x1.893334p-1f, 0x1.906666p-1f,
    0x1.97999ap-1f, 0x1.9eccccp-1f, 0x1.a6p-1f, 0x1.ad3334p-1f, 0x1.b46666p-1f, 0x1.bb999ap-1f,
    0x1.c2ccccp-1f, 0x1.cap-1f, 0x1.d13334p-1f, 0x1.d86666p-1f, 0x1.df999ap-1f, 0x1.e6ccccp-1f,
    0x1.eep-1f, 0x1.f53334p-1f, 0x1.fc6666p-1f, 0x1p+0f,
};

__device__ __forceinline__ float block_absmax(const QuantizedWeightView& w, int64_t block) {
  if (!w.double_quant) return w.scales[block];
  // __fmul_rn / __fadd_rn: two roundings, never contracted into an FMA (the CPU's volatile).
  return __fadd_rn(__fmul_rn(kDynamicMap[w.scale_codes[block]], w.scales2[block / kDqBlock]), w.offset);
}

__device__ __forceinline__ int code_at(const uint8_t* codes, int64_t flat) {
  const int byte = codes[flat >> 1];
  return (flat & 1) ? (byte & 15) : (byte >> 4);
}

struct FourBitDecoder {
  __device__ static float value(const QuantizedWeightView& w, int r, int c) {
    const int64_t flat = int64_t(r) * w.cols + c;
    return kFourBitTables[w.nf4 ? 0 : 1][code_at(w.codes, flat)] * block_absmax(w, flat / w.block_size);
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
      for (int i = 0; i < 4; ++i) {  // little-endian: byte i holds elements 2i (high) and 2i+1 (low)
        const uint32_t byte = (word >> (8 * i)) & 0xffu;
        wv[2 * i] = table[byte >> 4] * scale;
        wv[2 * i + 1] = table[byte & 15u] * scale;
      }
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
      const float wv = table[code_at(w.codes, flat)] * block_absmax(w, flat / w.block_size);
#pragma unroll
      for (int t = 0; t < kTokens; ++t)
        if (t < n_tokens) acc[t] += wv * x[size_t(t) * cols + col];
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

cudaError_t launch_gemv_four_bit(const QuantizedWeightView& w, const float* bias, const float* x, int n_tokens,
                                 float* y, cudaStream_t stream) {
  if (n_tokens <= 0 || w.rows <= 0) return cudaSuccess;
  if (n_tokens > kMaxGemvTokens || w.block_size <= 0) return cudaErrorInvalidValue;
  const unsigned blocks = unsigned((w.rows + kWarpsPerBlock - 1) / kWarpsPerBlock), threads = kWarpsPerBlock * 32;
  if (n_tokens <= 1)
    gemv_four_bit_kernel<1><<<blocks, threads, 0, stream>>>(w, bias, x, n_tokens, y);
  else if (n_tokens <= 2)
    gemv_four_bit_kernel<2><<<blocks, threads, 0, stream>>>(w, bias, x, n_tokens, y);
  else if (n_tokens <= 4)
    gemv_four_bit_kernel<4><<<blocks, threads, 0, stream>>>(w, bias, x, n_tokens, y);
  else if (n_tokens <= 8)
    gemv_four_bit_kernel<8><<<blocks, threads, 0, stream>>>(w, bias, x, n_tokens, y);
  else
    gemv_four_bit_kernel<16><<<blocks, threads, 0, stream>>>(w, bias, x, n_tokens, y);
  return cudaGetLastError();
}

cudaError_t launch_dequantize_four_bit(const QuantizedWeightView& w, uint16_t* out, cudaStream_t stream) {
  return launch_dequantize_bf16<FourBitDecoder>(w, out, stream);
}

}  // namespace lowbit::kernels
