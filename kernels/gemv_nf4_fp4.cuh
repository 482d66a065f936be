// bitsandbytes 4-bit weights (NF4, FP4 and their -dq variants) on the GPU: the fused decode GEMV
// and the bf16 dequantizer of the prefill path. Layout: src/formats/format_nf4_fp4.cpp.
#pragma once
#include <cstdint>

#include <cuda_runtime_api.h>

#include "kernels/dequant.cuh"
#include "kernels/gemv.cuh"

namespace lowbit::kernels {

// y[t, r] = sum_c W[r, c] x[t, c] (+ bias[r]) for n_tokens <= kMaxGemvTokens fp32 rows of x.
cudaError_t launch_gemv_four_bit(const QuantizedWeightView& w, const float* bias, const float* x, int n_tokens,
                                 float* y, void* workspace, cudaStream_t stream);
// Every part of a layer in one launch with its fused steps (kernels/gemv.cuh).
cudaError_t launch_fused_gemv_four_bit(const GemvParts& parts, const float* bias, const float* x, int n_tokens,
                                       float* y, const GemvSteps& steps, cudaStream_t stream);
// out = bf16(W) [rows, cols] row-major.
cudaError_t launch_dequantize_four_bit(const QuantizedWeightView& w, uint16_t* out, cudaStream_t stream);

}  // namespace lowbit::kernels
