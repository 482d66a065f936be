// RMSNorm and LayerNorm over fp32 rows [n_rows, dim], optionally fused with the residual add.
#pragma once
#include <cuda_runtime_api.h>

namespace lowbit::kernels {

enum class NormKindGpu { rms, layer };

// out[t, :] = norm(x[t, :]) * weight (+ bias, LayerNorm only, may be null).
// When `residual_delta` is not null the pre-norm residual step is fused in: x[t, :] +=
// residual_delta[t, :] (written back to x), then out = norm of the new x. out must not alias x.
cudaError_t launch_norm(float* x, const float* residual_delta, const float* weight, const float* bias,
                        NormKindGpu kind, float eps, int n_rows, int dim, float* out, cudaStream_t stream);

}  // namespace lowbit::kernels
