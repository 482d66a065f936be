// Decode matrix-vector products, one template for every weight format (kernels/gemv_template.cuh):
//   y[t * out_stride + out_row(r)] = sum_c W[r, c] x[t, c] (+ bias[r]),  t < n_tokens <= kMaxGemvTokens
// W is a QuantizedWeightView (f32 and bf16: `codes` holds the fp32 / bf16 values, row-major);
// x is fp32 [n_tokens, cols]; y is fp32 with rows out_stride (0: w.rows) floats apart.
#pragma once
#include <cstddef>
#include <cstdint>

#include <cuda_runtime_api.h>

#include "kernels/dequant.cuh"

namespace lowbit::kernels {

constexpr int kMaxGemvTokens = 16;

// Every format's GEMV launcher has this signature (the int8 formats use `workspace`:
// int8_gemv_workspace_bytes; the others take null).
using GemvLauncher = cudaError_t (*)(const QuantizedWeightView& w, const float* bias, const float* x, int n_tokens,
                                     float* y, void* workspace, cudaStream_t stream);

cudaError_t launch_gemv_f32(const QuantizedWeightView& w, const float* bias, const float* x, int n_tokens, float* y,
                            void* workspace, cudaStream_t stream);
cudaError_t launch_gemv_bf16(const QuantizedWeightView& w, const float* bias, const float* x, int n_tokens, float* y,
                             void* workspace, cudaStream_t stream);

}  // namespace lowbit::kernels
