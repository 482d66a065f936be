// int8 weights on the GPU: LLM.int8 (INT8, src/formats/format_int8.cpp) and W8A8
// (src/formats/format_w8a8.cpp). Both keep row-major int8 rows [rows, cols] + one fp32 scale per
// row; they differ in how the activations are quantized and how the int32 sums are rescaled.
#pragma once
#include <cstddef>
#include <cstdint>

#include <cuda_runtime_api.h>

#include "kernels/dequant.cuh"
#include "kernels/gemv.cuh"

namespace lowbit::kernels {

// Device scratch the decode GEMVs need for n_tokens activation rows of `cols` values (int8
// activations, per-token scales, LLM.int8's outlier columns).
size_t int8_gemv_workspace_bytes(int n_tokens, int cols);

// y[t, r] = W x[t] (+ bias) with the format's run-time arithmetic, for any n_tokens: activation
// quantization of every token (and LLM.int8's outlier columns over the whole batch) once, then
// the dp4a GEMV kMaxGemvTokens tokens at a time (one launch for a decode step).
cudaError_t launch_gemv_int8(const QuantizedWeightView& w, const float* bias, const float* x, int n_tokens, float* y,
                             void* workspace, cudaStream_t stream);
cudaError_t launch_gemv_w8a8(const QuantizedWeightView& w, const float* bias, const float* x, int n_tokens, float* y,
                             void* workspace, cudaStream_t stream);

// The fused decode step (kernels/gemv.cuh's GemvSteps): each block quantizes the (normalized)
// activations itself, so one launch and no workspace; cudaErrorNotSupported where it does not
// apply (more than kMaxFusedTokens tokens, cols % 16 != 0, activations over 48 KB of shared memory).
cudaError_t launch_fused_gemv_int8(const GemvParts& parts, const float* bias, const float* x, int n_tokens, float* y,
                                   const GemvSteps& steps, cudaStream_t stream);
cudaError_t launch_fused_gemv_w8a8(const GemvParts& parts, const float* bias, const float* x, int n_tokens, float* y,
                                   const GemvSteps& steps, cudaStream_t stream);

cudaError_t launch_dequantize_int8(const QuantizedWeightView& w, uint16_t* out, cudaStream_t stream);
cudaError_t launch_dequantize_w8a8(const QuantizedWeightView& w, uint16_t* out, cudaStream_t stream);

// W8A8 prefill around an int8 x int8 -> int32 GEMM: per-token quantization of any number of
// rows (xq [n_tokens, cols] int8, x_scale [n_tokens]), then y = acc * (w_scale[r] * x_scale[t])
// (+ bias) from acc int32 [n_tokens, rows].
cudaError_t launch_w8a8_quantize_activations(const float* x, int n_tokens, int cols, int8_t* xq, float* x_scale,
                                             cudaStream_t stream);
cudaError_t launch_w8a8_rescale(const int32_t* acc, const float* w_scale, const float* x_scale, const float* bias,
                                int n_tokens, int rows, float* y, cudaStream_t stream);

}  // namespace lowbit::kernels
