#include <cuda_bf16.h>

#include "kernels/attention.cuh"
#include "kernels/common.cuh"

namespace lowbit::kernels {

namespace {

__device__ __forceinline__ void store(float* p, float v) { *p = v; }
__device__ __forceinline__ void store(__nv_bfloat16* p, float v) { *p = __float2bfloat16_rn(v); }

// One block per token: two contiguous kv_dim copies, coalesced (rounded to bf16 for a bf16 cache).
template <typename Elem>
__global__ void kv_store_kernel(const float* __restrict__ qkv, const int32_t* __restrict__ positions,
                                const int32_t* __restrict__ slots, int qkv_dim, int q_dim, int kv_dim,
                                int max_context, Elem* __restrict__ k_layer, Elem* __restrict__ v_layer) {
  const int t = blockIdx.x;
  const float* row = qkv + size_t(t) * size_t(qkv_dim);
  const size_t dst = (size_t(slots[t]) * size_t(max_context) + size_t(positions[t])) * size_t(kv_dim);
  for (int i = threadIdx.x; i < kv_dim; i += blockDim.x) {
    store(k_layer + dst + i, row[q_dim + i]);
    store(v_layer + dst + i, row[q_dim + kv_dim + i]);
  }
}

}  // namespace

cudaError_t launch_kv_store(const float* qkv, const int32_t* positions, const int32_t* slots, int n_tokens,
                            const AttentionGeometry& g, void* k_layer, void* v_layer, cudaStream_t stream) {
  if (n_tokens <= 0) return cudaSuccess;
  if (g.bf16_cache)
    return launch<kv_store_kernel<__nv_bfloat16>>({n_tokens, 256, 0, stream}, qkv, positions, slots, g.qkv_dim(),
                                                  g.n_heads * g.head_dim, g.kv_dim(), g.max_context,
                                                  static_cast<__nv_bfloat16*>(k_layer),
                                                  static_cast<__nv_bfloat16*>(v_layer));
  return launch<kv_store_kernel<float>>({n_tokens, 256, 0, stream}, qkv, positions, slots, g.qkv_dim(),
                                        g.n_heads * g.head_dim, g.kv_dim(), g.max_context,
                                        static_cast<float*>(k_layer), static_cast<float*>(v_layer));
}

}  // namespace lowbit::kernels
