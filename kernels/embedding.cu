#include "kernels/common.cuh"
#include "kernels/embedding.cuh"

namespace lowbit::kernels {

namespace {

// One block per token; threads stride over the row. A gather is a pure copy, so plain
// coalesced loads are already at the bandwidth limit for the few rows a batch touches.
template <typename T>
__global__ void embedding_kernel(const T* __restrict__ table, const int32_t* __restrict__ tokens, int dim,
                                 float* __restrict__ out) {
  const int t = blockIdx.x;
  const T* row = table + size_t(tokens[t]) * size_t(dim);
  float* dst = out + size_t(t) * size_t(dim);
  for (int i = threadIdx.x; i < dim; i += blockDim.x) {
    if constexpr (sizeof(T) == 2)
      dst[i] = bf16_bits_to_float(row[i]);
    else
      dst[i] = row[i];
  }
}

}  // namespace

cudaError_t launch_embedding(const void* table, bool table_is_bf16, const int32_t* tokens, int n_tokens, int dim,
                             float* out, cudaStream_t stream) {
  if (n_tokens <= 0) return cudaSuccess;
  const int threads = 256;
  if (table_is_bf16)
    return launch<embedding_kernel<unsigned short>>({n_tokens, threads, 0, stream},
                                                    static_cast<const unsigned short*>(table), tokens, dim, out);
  return launch<embedding_kernel<float>>({n_tokens, threads, 0, stream}, static_cast<const float*>(table), tokens,
                                         dim, out);
}

}  // namespace lowbit::kernels
