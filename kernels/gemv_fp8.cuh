// W8A8-fp8 on the GPU (layout: src/formats/format_w8a8_fp8.cpp: row-major e4m3 rows [rows, cols]
// + one fp32 scale per row): the decode GEMV with per-token e4m3 activations and the bf16
// dequantizer of the --cuda-fast-prefill path.
#pragma once
#include <cstddef>
#include <cstdint>

#include <cuda_runtime_api.h>

#include "kernels/dequant.cuh"
#include "kernels/gemv.cuh"

namespace lowbit::kernels {

// Device scratch of the GEMV for n_tokens activation rows of `cols` values (e4m3 activations,
// per-token scales).
size_t fp8_gemv_workspace_bytes(int n_tokens, int cols);

// y[t, r] = fp32(sum_c e4m3(xq[t, c]) e4m3(wq[r, c])) * (w_scale[r] * x_scale[t]) (+ bias), for any
// n_tokens: every token quantized once, then the GEMV kMaxGemvTokens tokens at a time.
cudaError_t launch_gemv_w8a8_fp8(const QuantizedWeightView& w, const float* bias, const float* x, int n_tokens,
                                 float* y, void* workspace, cudaStream_t stream);
// The fused decode step (kernels/gemv.cuh's GemvSteps): each block quantizes the (normalized)
// activations itself; cudaErrorNotSupported where that does not apply.
cudaError_t launch_fused_gemv_w8a8_fp8(const GemvParts& parts, const float* bias, const float* x, int n_tokens,
                                       float* y, const GemvSteps& steps, cudaStream_t stream);
cudaError_t launch_dequantize_w8a8_fp8(const QuantizedWeightView& w, uint16_t* out, cudaStream_t stream);

// W8A8-fp8 prompts around an e4m3 x e4m3 -> fp32 GEMM (cuBLASLt on sm_89+): the per-token
// activation quantizer alone (xq [n_tokens, cols] e4m3 bytes, x_scale [n_tokens]; the GEMV's own
// pre-pass), then y = acc * (w_scale[r] * x_scale[t]) (+ bias) from acc fp32 [n_tokens, rows]
// (acc may be y: rescaled in place).
cudaError_t launch_fp8_quantize_activations(const float* x, int n_tokens, int cols, uint8_t* xq, float* x_scale,
                                            cudaStream_t stream);
cudaError_t launch_fp8_rescale(const float* acc, const float* w_scale, const float* x_scale, const float* bias,
                               int n_tokens, int rows, float* y, cudaStream_t stream);

}  // namespace lowbit::kernels
