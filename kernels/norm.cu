#include "kernels/common.cuh"
#include "kernels/norm.cuh"

namespace lowbit::kernels {

namespace {

// One block per row. The row is read once to reduce (after the optional residual add, written
// back in the same pass), then again to normalize; the second read hits L1/L2, and a row
// (<= 16k floats) is far too small for the extra read to matter against the weights.
// LayerNorm uses two passes (mean, then sum of squared deviations) as the CPU oracle does,
// which avoids the cancellation of E[x^2] - E[x]^2.
__global__ void norm_kernel(float* __restrict__ x, const float* __restrict__ delta, const float* __restrict__ weight,
                            const float* __restrict__ bias, NormKindGpu kind, float eps, int dim,
                            float* __restrict__ out) {
  __shared__ float scratch[32];
  float* row = x + size_t(blockIdx.x) * size_t(dim);
  float* dst = out + size_t(blockIdx.x) * size_t(dim);
  float partial = 0.0f;
  if (delta != nullptr) {
    const float* d = delta + size_t(blockIdx.x) * size_t(dim);
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
      const float v = row[i] + d[i];
      row[i] = v;  // each element is re-read below only by the thread that wrote it
      partial += kind == NormKindGpu::rms ? v * v : v;
    }
  } else {
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
      const float v = row[i];
      partial += kind == NormKindGpu::rms ? v * v : v;
    }
  }
  const float total = block_sum(partial, scratch);
  if (kind == NormKindGpu::rms) {
    const float scale = 1.0f / sqrtf(total / float(dim) + eps);
    for (int i = threadIdx.x; i < dim; i += blockDim.x) dst[i] = weight[i] * (row[i] * scale);
    return;
  }
  const float mean = total / float(dim);
  float sq = 0.0f;
  for (int i = threadIdx.x; i < dim; i += blockDim.x) {
    const float c = row[i] - mean;
    sq += c * c;
  }
  const float var = block_sum(sq, scratch) / float(dim);
  const float inv = 1.0f / sqrtf(var + eps);
  for (int i = threadIdx.x; i < dim; i += blockDim.x) {
    const float y = (row[i] - mean) * inv * weight[i];
    dst[i] = bias != nullptr ? y + bias[i] : y;
  }
}

}  // namespace

cudaError_t launch_norm(float* x, const float* residual_delta, const float* weight, const float* bias,
                        NormKindGpu kind, float eps, int n_rows, int dim, float* out, cudaStream_t stream) {
  if (n_rows <= 0) return cudaSuccess;
  // 256 threads: a 4096-wide row is 16 values per thread; more threads only add reduction cost.
  return launch<norm_kernel>({n_rows, 256, 0, stream}, x, residual_delta, weight, bias, kind, eps, dim, out);
}

}  // namespace lowbit::kernels
