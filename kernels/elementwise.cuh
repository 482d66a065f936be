// Element-wise ops on fp32 activations: MLP activations, residual add, bias add, bf16 conversion.
#pragma once
#include <cstddef>
#include <cstdint>

#include <cuda_runtime_api.h>

namespace lowbit::kernels {

// SwiGLU: out[t, i] = silu(gu[t, i]) * gu[t, hidden + i], gu rows of 2*hidden.
cudaError_t launch_swiglu(const float* gu, int n_rows, int hidden, float* out, cudaStream_t stream);
// GELU (exact, erf): out[i] = 0.5 x (1 + erf(x / sqrt 2)) for i < n.
cudaError_t launch_gelu(const float* gu, size_t n, float* out, cudaStream_t stream);
// x[i] += y[i] for i < n.
cudaError_t launch_add(float* x, const float* y, size_t n, cudaStream_t stream);
// y[t, r] += bias[r] for t < n_rows, r < cols.
cudaError_t launch_add_bias(float* y, const float* bias, int n_rows, int cols, cudaStream_t stream);
// out[i] = bf16 bits of x[i] (round to nearest even) for i < n.
cudaError_t launch_to_bf16(const float* x, size_t n, uint16_t* out, cudaStream_t stream);

}  // namespace lowbit::kernels
