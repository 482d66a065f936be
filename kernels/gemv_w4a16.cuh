// W4A16 on the GPU (layout: src/formats/format_w4a16.cpp): the fused decode GEMV and the bf16
// dequantizer of the prefill path.
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

}  // namespace lowbit::kernels
