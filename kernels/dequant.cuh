// The device view of a quantized weight (every plane of a QuantizedTensor, uploaded as is; see
// the format's src/formats/format_*.cpp for each plane's layout) and the generic dequantizer the
// prefill path uses: W -> bf16 [rows, cols] row-major, fed to the cuBLAS bf16 GEMM.
// Host-visible part: plain structs and launch declarations. Device part (nvcc only): the
// dequantize kernel template every format file instantiates with its own element decoder.
#pragma once
#include <array>
#include <cstdint>

#include <cuda_runtime_api.h>

#include "formats/planes.h"

namespace lowbit::kernels {

template <class T>
using DevicePlane = const T*;

// The planes of src/formats/planes.h as device pointers (codes, scales, scale_codes, scales2,
// scales16, zeros); planes a format does not use are null (W4A16's zeros: null = symmetric, 8).
struct QuantizedWeightView : Planes<DevicePlane> {
  int rows = 0, cols = 0;
  float offset = 0.0f;                   // -dq: mean absmax
  bool repacked = false;                 // codes repacked at upload by the format (W4A16: interleaved, quant_math.h)
  int block_size = 64;                   // nf4/fp4 block of consecutive flat values
  int group = 128;                       // W4A16 group along a row
  bool nf4 = true;                       // nf4 table (else bnb fp4)
  bool double_quant = false;             // nf4-dq / fp4-dq
  float int8_threshold = 0.0f;           // LLM.int8 outlier threshold (0 = none)
  // Where the rows land (a layer made of several checkpoint tensors, each quantized on its own):
  // row r is written to output row out_rows[r] (null: r) of an output whose rows are out_stride
  // floats apart, y and bias already offset to the part's first row. Honoured by the nf4/fp4 GEMV
  // and by dequantize_bf16_kernel; the other GEMVs only ever see whole tensors (out_stride = rows;
  // 0 means rows).
  int out_stride = 0;
  const int32_t* out_rows = nullptr;
};

#if LOWBIT_EMULATED_GPU
// The emulated device checks at launch that the planes a kernel receives are device memory.
inline auto emu_device_pointers(const QuantizedWeightView& w) {
  std::array<const void*, kPlaneCount + 1> all{};
  w.each([&](Plane p, const void* plane, auto*) { all[size_t(p)] = plane; });
  all[kPlaneCount] = w.out_rows;
  return all;
}
#endif

}  // namespace lowbit::kernels

#ifdef __CUDACC__
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "kernels/launch.cuh"

namespace lowbit::kernels {

// out[out_row(r) * cols + c] = bf16(Decoder::value(w, r, c)). Each thread writes 8 consecutive
// columns of a row (one 16-byte store when `vector`: cols % 8 == 0 and out 16-byte aligned, so
// every row's 8-column groups are aligned; else 8 scalar stores, the row's last group cut short).
// Threads along x walk a row's groups, threads along y and the grid's y cover the rows in a loop:
// no division anywhere, and int64 only for the output offset.
template <typename Decoder>
__global__ void dequantize_bf16_kernel(QuantizedWeightView w, __nv_bfloat16* __restrict__ out, bool vector) {
  const int64_t c0 = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) * 8;
  if (c0 >= w.cols) return;  // no barrier or collective below
  const int col = int(c0), n = w.cols - col < 8 ? w.cols - col : 8;
  for (int r = blockIdx.y * blockDim.y + threadIdx.y; r < w.rows; r += gridDim.y * blockDim.y) {
    const int out_row = w.out_rows != nullptr ? w.out_rows[r] : r;
    __nv_bfloat16* dst = out + int64_t(out_row) * w.cols + col;
    if (vector) {
      unsigned packed[4];
#pragma unroll
      for (int i = 0; i < 4; ++i)
        packed[i] = unsigned(__bfloat16_as_ushort(__float2bfloat16_rn(Decoder::value(w, r, col + 2 * i)))) |
                    unsigned(__bfloat16_as_ushort(__float2bfloat16_rn(Decoder::value(w, r, col + 2 * i + 1)))) << 16;
      *reinterpret_cast<uint4*>(dst) = make_uint4(packed[0], packed[1], packed[2], packed[3]);
    } else {
      for (int i = 0; i < n; ++i) dst[i] = __float2bfloat16_rn(Decoder::value(w, r, col + i));
    }
  }
}

// Blocks of 256 threads: x a power of two from 32 to 256 covering a row's 8-column groups (whole
// warps on one row), y the rest; at most 65535 blocks along y, each looping over its rows.
template <typename Decoder>
cudaError_t launch_dequantize_bf16(const QuantizedWeightView& w, uint16_t* out, cudaStream_t stream) {
  if (w.rows <= 0 || w.cols <= 0) return cudaSuccess;
  const int groups = (w.cols + 7) / 8;
  unsigned tx = 32;
  while (tx < 256 && int(tx) < groups) tx *= 2;
  const unsigned ty = 256 / tx;
  const unsigned gx = unsigned((groups + int(tx) - 1) / int(tx));
  const int64_t wanted_y = (int64_t(w.rows) + ty - 1) / ty;
  const unsigned gy = unsigned(wanted_y < 65535 ? wanted_y : 65535);
  const bool vector = w.cols % 8 == 0 && reinterpret_cast<uintptr_t>(out) % 16 == 0;
  return launch<dequantize_bf16_kernel<Decoder>>({dim3(gx, gy), dim3(tx, ty), 0, stream}, w,
                                                 reinterpret_cast<__nv_bfloat16*>(out), vector);
}

// IEEE fp16 round trip (round to nearest even, overflow to inf): core/half.h's round_f16.
__device__ __forceinline__ float round_to_half(float v) { return __half2float(__float2half_rn(v)); }

}  // namespace lowbit::kernels
#endif
