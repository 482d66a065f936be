// Matrix-vector products for decode: y[t, r] = sum_c W[r, c] x[t, c] (+ bias[r]) for a few
// tokens t < n_tokens <= kMaxGemvTokens. W is [rows, cols] row-major, bf16 bit patterns or fp32;
// x is fp32 [n_tokens, cols], y fp32 [n_tokens, rows].
#pragma once
#include <cstdint>

#include <cuda_runtime_api.h>

namespace lowbit::kernels {

constexpr int kMaxGemvTokens = 16;

cudaError_t launch_gemv_bf16(const uint16_t* w, const float* bias, const float* x, int n_tokens, int rows, int cols,
                             float* y, cudaStream_t stream);
cudaError_t launch_gemv_f32(const float* w, const float* bias, const float* x, int n_tokens, int rows, int cols,
                            float* y, cudaStream_t stream);

}  // namespace lowbit::kernels
