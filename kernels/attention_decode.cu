#include "kernels/attention.cuh"
#include "kernels/common.cuh"

namespace lowbit::kernels {

namespace {

constexpr int kWarps = 4;
constexpr int kMaxSplits = 32;
constexpr int kMinChunk = 128;

// Block = one (token, q head, chunk of keys); each warp walks every 4th key of the chunk with
// the lanes spread over head_dim (coalesced reads of a key/value row), keeping its own online
// softmax state; the 4 warps are merged in shared memory and the block writes one partial:
// (max, sum of exp, unnormalized weighted values). Splitting the keys gives a decode step with
// one token and few heads enough blocks to fill the GPU.
template <int kMaxHeadDim>
__global__ void __launch_bounds__(kWarps * 32)
    attention_decode_kernel(const float* __restrict__ qkv, const float* __restrict__ k_layer,
                            const float* __restrict__ v_layer, const int32_t* __restrict__ positions,
                            const int32_t* __restrict__ slots, int n_heads, int n_kv_heads, int head_dim,
                            int max_context, int chunk, float scale, float* __restrict__ partial_values,
                            float* __restrict__ partial_stats) {
  constexpr int kPerLane = kMaxHeadDim / 32;
  __shared__ float warp_m[kWarps], warp_l[kWarps];
  __shared__ float warp_acc[kWarps][kMaxHeadDim];

  const int token_head = blockIdx.x;
  const int t = token_head / n_heads, h = token_head % n_heads;
  const int kvh = h / (n_heads / n_kv_heads);
  const int split = blockIdx.y, n_splits = gridDim.y;
  const int q_dim = n_heads * head_dim, kv_dim = n_kv_heads * head_dim;
  const int qkv_dim = q_dim + 2 * kv_dim;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;

  const int pos = positions[t];
  const int begin = split * chunk;
  const int end = min(begin + chunk, pos + 1);
  const size_t slot_base = size_t(slots[t]) * size_t(max_context) * size_t(kv_dim) + size_t(kvh) * head_dim;

  float q[kPerLane], acc[kPerLane];
#pragma unroll
  for (int e = 0; e < kPerLane; ++e) {
    const int d = lane + 32 * e;
    q[e] = d < head_dim ? qkv[size_t(t) * qkv_dim + size_t(h) * head_dim + d] : 0.0f;
    acc[e] = 0.0f;
  }
  float m = -INFINITY, l = 0.0f;
  for (int key = begin + warp; key < end; key += kWarps) {
    const float* k = k_layer + slot_base + size_t(key) * kv_dim;
    const float* v = v_layer + slot_base + size_t(key) * kv_dim;
    float dot = 0.0f;
    float v_reg[kPerLane];
#pragma unroll
    for (int e = 0; e < kPerLane; ++e) {  // issue the k and v loads together: two rows in flight
      const int d = lane + 32 * e;
      const bool in = d < head_dim;
      dot += in ? q[e] * k[d] : 0.0f;
      v_reg[e] = in ? v[d] : 0.0f;
    }
    const float score = warp_sum(dot) * scale;
    const float new_m = fmaxf(m, score);
    const float correction = expf(m - new_m);
    const float p = expf(score - new_m);
    l = l * correction + p;
#pragma unroll
    for (int e = 0; e < kPerLane; ++e) acc[e] = acc[e] * correction + p * v_reg[e];
    m = new_m;
  }

  if (lane == 0) {
    warp_m[warp] = m;
    warp_l[warp] = l;
  }
#pragma unroll
  for (int e = 0; e < kPerLane; ++e) {
    const int d = lane + 32 * e;
    if (d < head_dim) warp_acc[warp][d] = acc[e];
  }
  __syncthreads();

  float block_m = -INFINITY;
  for (int w = 0; w < kWarps; ++w) block_m = fmaxf(block_m, warp_m[w]);
  float weight[kWarps];
#pragma unroll
  for (int w = 0; w < kWarps; ++w) weight[w] = warp_m[w] == -INFINITY ? 0.0f : expf(warp_m[w] - block_m);

  const size_t partial = size_t(token_head) * n_splits + split;
  for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
    float a = 0.0f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) a += weight[w] * warp_acc[w][d];
    partial_values[partial * head_dim + d] = a;
  }
  if (threadIdx.x == 0) {
    float block_l = 0.0f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) block_l += weight[w] * warp_l[w];
    partial_stats[2 * partial] = block_m;  // -inf for a chunk past the token's position
    partial_stats[2 * partial + 1] = block_l;
  }
}

// One block per (token, head): merges its n_splits partials into the output row.
__global__ void attention_decode_reduce_kernel(const float* __restrict__ partial_values,
                                               const float* __restrict__ partial_stats, int n_heads, int head_dim,
                                               int n_splits, float* __restrict__ out) {
  const int token_head = blockIdx.x;
  const int t = token_head / n_heads, h = token_head % n_heads;
  const float* stats = partial_stats + size_t(token_head) * n_splits * 2;
  float global_m = -INFINITY;
  for (int s = 0; s < n_splits; ++s) global_m = fmaxf(global_m, stats[2 * s]);
  float total_l = 0.0f;
  for (int s = 0; s < n_splits; ++s)
    if (stats[2 * s] != -INFINITY) total_l += expf(stats[2 * s] - global_m) * stats[2 * s + 1];
  const float inv_l = 1.0f / total_l;  // > 0: chunk 0 always holds position 0
  const float* values = partial_values + size_t(token_head) * n_splits * head_dim;
  float* y = out + size_t(t) * n_heads * head_dim + size_t(h) * head_dim;
  for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
    float a = 0.0f;
    for (int s = 0; s < n_splits; ++s)
      if (stats[2 * s] != -INFINITY) a += expf(stats[2 * s] - global_m) * values[size_t(s) * head_dim + d];
    y[d] = a * inv_l;
  }
}

template <int kMaxHeadDim>
cudaError_t launch_decode_for(const float* qkv, const float* k_layer, const float* v_layer, const int32_t* positions,
                              const int32_t* slots, int n_tokens, const AttentionGeometry& g, float* workspace,
                              float* out, cudaStream_t stream) {
  const DecodeSplit split = decode_split_for(g.max_context);
  const size_t n_partials = size_t(n_tokens) * g.n_heads * split.n_splits;
  float* partial_values = workspace;
  float* partial_stats = workspace + n_partials * g.head_dim;
  const dim3 grid(unsigned(n_tokens * g.n_heads), unsigned(split.n_splits));
  cudaError_t err = launch<attention_decode_kernel<kMaxHeadDim>>(
      {grid, kWarps * 32, 0, stream}, qkv, k_layer, v_layer, positions, slots, g.n_heads, g.n_kv_heads, g.head_dim,
      g.max_context, split.chunk, 1.0f / sqrtf(float(g.head_dim)), partial_values, partial_stats);
  if (err != cudaSuccess) return err;
  return launch<attention_decode_reduce_kernel>({unsigned(n_tokens * g.n_heads), 128, 0, stream}, partial_values,
                                                partial_stats, g.n_heads, g.head_dim, split.n_splits, out);
}

}  // namespace

DecodeSplit decode_split_for(int max_context) {
  DecodeSplit s;
  const int wanted = (max_context + kMinChunk - 1) / kMinChunk;
  s.n_splits = wanted < 1 ? 1 : (wanted > kMaxSplits ? kMaxSplits : wanted);
  s.chunk = (max_context + s.n_splits - 1) / s.n_splits;
  return s;
}

size_t decode_workspace_floats(int n_tokens, const AttentionGeometry& g) {
  const DecodeSplit s = decode_split_for(g.max_context);
  return size_t(n_tokens) * g.n_heads * s.n_splits * (size_t(g.head_dim) + 2);
}

cudaError_t launch_attention_decode(const float* qkv, const float* k_layer, const float* v_layer,
                                    const int32_t* positions, const int32_t* slots, int n_tokens,
                                    const AttentionGeometry& g, float* workspace, float* out, cudaStream_t stream) {
  if (n_tokens <= 0) return cudaSuccess;
  if (g.head_dim <= 0 || g.head_dim > 256 || g.n_kv_heads <= 0 || g.n_heads % g.n_kv_heads != 0)
    return cudaErrorInvalidValue;
  if (g.head_dim <= 64)
    return launch_decode_for<64>(qkv, k_layer, v_layer, positions, slots, n_tokens, g, workspace, out, stream);
  if (g.head_dim <= 128)
    return launch_decode_for<128>(qkv, k_layer, v_layer, positions, slots, n_tokens, g, workspace, out, stream);
  return launch_decode_for<256>(qkv, k_layer, v_layer, positions, slots, n_tokens, g, workspace, out, stream);
}

}  // namespace lowbit::kernels
