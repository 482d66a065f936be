// W4A16 on the GPU (layout: src/formats/format_w4a16.cpp): the fused decode GEMV, the bf16
// dequantizer of the prefill path, and the interleave of the codes done at upload.
#pragma once
#include <cstdint>

#include <cuda_runtime_api.h>

#include "kernels/dequant.cuh"
#include "kernels/gemv.cuh"

namespace lowbit::kernels {

cudaError_t launch_gemv_w4a16(const QuantizedWeightView& w, const float* bias, const float* x, int n_tokens, float* y,
                              void* workspace, cudaStream_t stream);
cudaError_t launch_fused_gemv_w4a16(const GemvParts& parts, const float* bias, const float* x, int n_tokens, float* y,
                                    const GemvSteps& steps, cudaStream_t stream);
cudaError_t launch_dequantize_w4a16(const QuantizedWeightView& w, uint16_t* out, cudaStream_t stream);
// Interleaves every 32-bit word of a device codes plane of `bytes` bytes in place
// (kernels/quant_math.h's w4a16_interleave; for a weight with cols % 8 == 0).
cudaError_t launch_w4a16_interleave(uint8_t* codes, int64_t bytes, cudaStream_t stream);

}  // namespace lowbit::kernels
