#include "kernels/attention.cuh"
#include "kernels/common.cuh"

namespace lowbit::kernels {

namespace {

// One block per token: two contiguous kv_dim copies, coalesced.
__global__ void kv_store_kernel(const float* __restrict__ qkv, const int32_t* __restrict__ positions,
                                const int32_t* __restrict__ slots, int qkv_dim, int q_dim, int kv_dim,
                                int max_context, float* __restrict__ k_layer, float* __restrict__ v_layer) {
  const int t = blockIdx.x;
  const float* row = qkv + size_t(t) * size_t(qkv_dim);
  const size_t dst = (size_t(slots[t]) * size_t(max_context) + size_t(positions[t])) * size_t(kv_dim);
  for (int i = threadIdx.x; i < kv_dim; i += blockDim.x) {
    k_layer[dst + i] = row[q_dim + i];
    v_layer[dst + i] = row[q_dim + kv_dim + i];
  }
}

}  // namespace

cudaError_t launch_kv_store(const float* qkv, const int32_t* positions, const int32_t* slots, int n_tokens,
                            const AttentionGeometry& g, float* k_layer, float* v_layer, cudaStream_t stream) {
  if (n_tokens <= 0) return cudaSuccess;
  return launch<kv_store_kernel>({n_tokens, 256, 0, stream}, qkv, positions, slots, g.qkv_dim(),
                                 g.n_heads * g.head_dim, g.kv_dim(), g.max_context, k_layer, v_layer);
}

}  // namespace lowbit::kernels
