// NF4 / FP4 quantization on the GPU, byte-identical to the CPU reference
// (src/formats/format_nf4_fp4.cpp): codes [ceil(n / 2)] bytes, absmax [ceil(n / block_size)].
#pragma once
#include <cstdint>

#include <cuda_runtime_api.h>

namespace lowbit::kernels {

// w: n fp32 values (the row-major flattened weight) on the device; block_size even and > 0.
cudaError_t launch_quantize_four_bit(const float* w, int64_t n, int block_size, bool nf4, uint8_t* codes,
                                     float* absmax, cudaStream_t stream);

}  // namespace lowbit::kernels
