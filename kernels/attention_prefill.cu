#include <cuda_bf16.h>

#include "kernels/attention.cuh"
#include "kernels/common.cuh"

namespace lowbit::kernels {

namespace {

constexpr int kWarps = 4;
constexpr int kQueriesPerWarp = 4;
constexpr int kTileQ = kWarps * kQueriesPerWarp;  // queries per block
constexpr int kTileK = 32;                        // keys per shared-memory tile: one per lane

size_t prefill_shared_bytes(int head_dim) {
  // q tile [kTileQ][head_dim], k tile [kTileK][head_dim + 1], v tile [kTileK][head_dim]
  return sizeof(float) * (size_t(kTileQ) * head_dim + size_t(kTileK) * (head_dim + 1) + size_t(kTileK) * head_dim);
}

// Block = 4 warps x 4 queries of one q head; grid = (query tiles, q heads).
// Per 32-key tile each lane scores one key against a query (k tile rows padded by one float so
// the 32 lanes reading 32 different rows hit 32 different banks), the warp takes the tile's
// max and sum with shuffles (online softmax: one rescale per tile, not per key), and then each
// lane accumulates its head_dim/32 output dimensions over the 32 keys (v tile rows read
// contiguously across lanes). Per-lane state lives in registers indexed only by unrolled
// constants, so nothing spills to local memory.
__device__ __forceinline__ float widen(float v) { return v; }
__device__ __forceinline__ float widen(__nv_bfloat16 v) { return __bfloat162float(v); }

// Elem: the cache's element (fp32 or bf16); the tiles in shared memory are fp32.
template <typename Elem, int kMaxHeadDim>
__global__ void __launch_bounds__(kWarps * 32)
    attention_prefill_kernel(const float* __restrict__ qkv, const Elem* __restrict__ k_layer,
                             const Elem* __restrict__ v_layer, const int32_t* __restrict__ positions,
                             const int32_t* __restrict__ slots, int n_tokens, int n_heads, int n_kv_heads,
                             int head_dim, int max_context, float scale, float* __restrict__ out) {
  constexpr int kPerLane = kMaxHeadDim / 32;
  float* smem = dynamic_shared_memory<float>();
  float* q_tile = smem;
  float* k_tile = q_tile + kTileQ * head_dim;
  float* v_tile = k_tile + kTileK * (head_dim + 1);
  const int k_stride = head_dim + 1;

  const int h = blockIdx.y;
  const int kvh = h / (n_heads / n_kv_heads);
  const int t0 = blockIdx.x * kTileQ;
  const int q_dim = n_heads * head_dim, kv_dim = n_kv_heads * head_dim;
  const int qkv_dim = q_dim + 2 * kv_dim;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;

  const size_t slot_base = size_t(slots[t0]) * size_t(max_context) * size_t(kv_dim) + size_t(kvh) * head_dim;
  const Elem* k_base = k_layer + slot_base;
  const Elem* v_base = v_layer + slot_base;

  int key_end = 0;  // one past the largest position in the tile
  for (int r = 0; r < kTileQ && t0 + r < n_tokens; ++r) key_end = max(key_end, positions[t0 + r] + 1);

  for (int idx = threadIdx.x; idx < kTileQ * head_dim; idx += blockDim.x) {
    const int r = idx / head_dim, d = idx % head_dim, t = t0 + r;
    q_tile[idx] = t < n_tokens ? qkv[size_t(t) * qkv_dim + size_t(h) * head_dim + d] : 0.0f;
  }

  float m[kQueriesPerWarp], l[kQueriesPerWarp], acc[kQueriesPerWarp][kPerLane];
  int query_pos[kQueriesPerWarp];
#pragma unroll
  for (int qi = 0; qi < kQueriesPerWarp; ++qi) {
    const int t = t0 + warp * kQueriesPerWarp + qi;
    query_pos[qi] = t < n_tokens ? positions[t] : -1;
    m[qi] = -INFINITY;
    l[qi] = 0.0f;
#pragma unroll
    for (int e = 0; e < kPerLane; ++e) acc[qi][e] = 0.0f;
  }

  for (int kb = 0; kb < key_end; kb += kTileK) {
    __syncthreads();  // the previous tile (and, the first time, the q tile writes) are done
    for (int idx = threadIdx.x; idx < kTileK * head_dim; idx += blockDim.x) {
      const int j = idx / head_dim, d = idx % head_dim, key = kb + j;
      const bool valid = key < key_end;
      k_tile[j * k_stride + d] = valid ? widen(k_base[size_t(key) * kv_dim + d]) : 0.0f;
      v_tile[j * head_dim + d] = valid ? widen(v_base[size_t(key) * kv_dim + d]) : 0.0f;
    }
    __syncthreads();
#pragma unroll
    for (int qi = 0; qi < kQueriesPerWarp; ++qi) {
      if (query_pos[qi] < kb) continue;  // warp-uniform: every key of this tile is in its future
      const float* q = q_tile + (warp * kQueriesPerWarp + qi) * head_dim;
      const float* k = k_tile + lane * k_stride;
      float dot = 0.0f;
      for (int d = 0; d < head_dim; ++d) dot += q[d] * k[d];
      const int key = kb + lane;
      const float score = key <= query_pos[qi] ? dot * scale : -INFINITY;
      const float new_m = fmaxf(m[qi], warp_max(score));  // finite: key kb <= query_pos
      const float correction = expf(m[qi] - new_m);      // 0 on the first tile (m = -inf)
      const float p = expf(score - new_m);                // 0 for masked keys
      l[qi] = l[qi] * correction + warp_sum(p);
      m[qi] = new_m;
#pragma unroll
      for (int e = 0; e < kPerLane; ++e) acc[qi][e] *= correction;
      for (int j = 0; j < kTileK; ++j) {
        const float pj = __shfl_sync(kFullWarp, p, j);
#pragma unroll
        for (int e = 0; e < kPerLane; ++e) {
          const int d = lane + 32 * e;
          if (d < head_dim) acc[qi][e] += pj * v_tile[j * head_dim + d];
        }
      }
    }
  }

#pragma unroll
  for (int qi = 0; qi < kQueriesPerWarp; ++qi) {
    if (query_pos[qi] < 0) continue;
    const int t = t0 + warp * kQueriesPerWarp + qi;
    float* y = out + size_t(t) * q_dim + size_t(h) * head_dim;
    const float inv_l = 1.0f / l[qi];
#pragma unroll
    for (int e = 0; e < kPerLane; ++e) {
      const int d = lane + 32 * e;
      if (d < head_dim) y[d] = acc[qi][e] * inv_l;
    }
  }
}

template <typename Elem, int kMaxHeadDim>
cudaError_t launch_prefill_for(const float* qkv, const void* k_layer, const void* v_layer, const int32_t* positions,
                               const int32_t* slots, int n_tokens, const AttentionGeometry& g, float* out,
                               cudaStream_t stream) {
  const size_t shared = prefill_shared_bytes(g.head_dim);
  constexpr auto kernel = attention_prefill_kernel<Elem, kMaxHeadDim>;
  if (shared > 48 * 1024) {
    // Above 48 KB a kernel must opt in to dynamic shared memory (head_dim > 186 only).
    cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(shared));
    if (err != cudaSuccess) return err;
  }
  const dim3 grid(unsigned((n_tokens + kTileQ - 1) / kTileQ), unsigned(g.n_heads));
  return launch<kernel>({grid, kWarps * 32, shared, stream}, qkv, static_cast<const Elem*>(k_layer),
                        static_cast<const Elem*>(v_layer), positions, slots, n_tokens, g.n_heads, g.n_kv_heads,
                        g.head_dim, g.max_context, 1.0f / sqrtf(float(g.head_dim)), out);
}

template <typename Elem>
cudaError_t launch_prefill_elem(const float* qkv, const void* k_layer, const void* v_layer, const int32_t* positions,
                                const int32_t* slots, int n_tokens, const AttentionGeometry& g, float* out,
                                cudaStream_t stream) {
  // Instantiations by the largest head_dim they hold: registers scale with it.
  if (g.head_dim <= 64)
    return launch_prefill_for<Elem, 64>(qkv, k_layer, v_layer, positions, slots, n_tokens, g, out, stream);
  if (g.head_dim <= 128)
    return launch_prefill_for<Elem, 128>(qkv, k_layer, v_layer, positions, slots, n_tokens, g, out, stream);
  return launch_prefill_for<Elem, 256>(qkv, k_layer, v_layer, positions, slots, n_tokens, g, out, stream);
}

}  // namespace

cudaError_t launch_attention_prefill(const float* qkv, const void* k_layer, const void* v_layer,
                                     const int32_t* positions, const int32_t* slots, int n_tokens,
                                     const AttentionGeometry& g, float* out, cudaStream_t stream) {
  if (n_tokens <= 0) return cudaSuccess;
  if (g.head_dim <= 0 || g.head_dim > 256 || g.n_kv_heads <= 0 || g.n_heads % g.n_kv_heads != 0)
    return cudaErrorInvalidValue;
  if (g.bf16_cache)
    return launch_prefill_elem<__nv_bfloat16>(qkv, k_layer, v_layer, positions, slots, n_tokens, g, out, stream);
  return launch_prefill_elem<float>(qkv, k_layer, v_layer, positions, slots, n_tokens, g, out, stream);
}

}  // namespace lowbit::kernels
