// Decode attention ("flash-decoding") for any batch: one block per (token, KV head, split of
// keys), serving up to 8 q heads of that KV head (a larger group, e.g. MQA's 71, takes several
// blocks of 8), so under GQA each key and value row is read once per 8 q heads. The grid is fixed by max_context (one CUDA graph serves every step); the split
// size is computed on the device from the token's position, so a short context uses few splits
// and each does a real share of work. The last block to finish a (token, KV head) merges the
// splits (an atomic counter it resets), so decode attention is one kernel.
//
// Fast path (head_dim * element size a multiple of 16 bytes, rows 16-byte aligned, head_dim <=
// 32 chunks): a key row is read by head_dim/8 (bf16) or head_dim/4 (fp32) lanes with one 16-byte
// load each, so a warp has several keys in flight per step (4 at head_dim 64 in bf16); the partial
// dot products of a key are reduced among its lanes, and each lane accumulates the value dims it
// loaded. Any other shape (head_dim 80, 20, ... or a misaligned row) takes the general kernel:
// lanes across head_dim, one key per warp step.
//
// Fused decode step (launch_rope_attention_decode): qkv arrives unrotated; each block rotates
// its q heads into shared memory, and the block whose split holds the token's own position
// rotates the new key, stores it and the value in the cache (rounded to the cache's type) and
// uses those stored values for that position, so no block reads what this launch writes. This
// replaces the rope and kv-store kernels: rope's arithmetic is rope.cu's (angle = float(pos) *
// inv_freq, cos/sin in double rounded to float). The tokens must be in distinct slots.
#include <cuda_bf16.h>

#include "kernels/attention.cuh"
#include "kernels/common.cuh"

namespace lowbit::kernels {

namespace {

constexpr int kWarps = 4;
constexpr int kMaxSplits = 32;
constexpr int kMinKeysPerSplit = 32;

__device__ __forceinline__ float widen(float v) { return v; }
__device__ __forceinline__ float widen(__nv_bfloat16 v) { return __bfloat162float(v); }

// Elements of a 16-byte chunk, widened to fp32.
template <typename Elem>
struct Chunk16;
template <>
struct Chunk16<float> {
  static constexpr int kElems = 4;
  __device__ static void load(const float* p, float (&v)[kElems]) {
    const float4 r = *reinterpret_cast<const float4*>(p);
    v[0] = r.x;
    v[1] = r.y;
    v[2] = r.z;
    v[3] = r.w;
  }
};
template <>
struct Chunk16<__nv_bfloat16> {
  static constexpr int kElems = 8;
  __device__ static void load(const __nv_bfloat16* p, float (&v)[kElems]) {
    const uint4 r = *reinterpret_cast<const uint4*>(p);
    const unsigned parts[4] = {r.x, r.y, r.z, r.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      v[2 * i] = __uint_as_float(parts[i] << 16);
      v[2 * i + 1] = __uint_as_float(parts[i] & 0xffff0000u);
    }
  }
};

// The keys split `split` of a token at `pos` covers: [begin, end) (empty past the last active).
struct SplitRange {
  int begin, end, active;
};
__device__ __forceinline__ SplitRange split_range(int pos, int split, int n_splits) {
  const int length = pos + 1;
  int chunk = (length + n_splits - 1) / n_splits;
  chunk = chunk < kMinKeysPerSplit ? kMinKeysPerSplit : chunk;
  const int active = (length + chunk - 1) / chunk;
  const int begin = split * chunk;
  return {begin, min(begin + chunk, length), active};
}

// What the fused step needs: inv_freq (null: qkv is already rotated and stored, nothing to do)
// and the cache arrays to store the new key and value in.
template <typename Elem>
struct Fresh {
  const float* inv_freq = nullptr;
  Elem* k_store = nullptr;
  Elem* v_store = nullptr;
};

__device__ __forceinline__ void store_elem(float* p, float v) { *p = v; }
__device__ __forceinline__ void store_elem(__nv_bfloat16* p, float v) { *p = __float2bfloat16_rn(v); }
__device__ __forceinline__ float stored_value(float v, float*) { return v; }
__device__ __forceinline__ float stored_value(float v, __nv_bfloat16*) { return __bfloat162float(__float2bfloat16_rn(v)); }

// Shared state of a fused step: the block's rotated q heads, and the new key and value as the
// cache holds them.
template <int kGroup, int kMaxHeadDim>
struct FreshShared {
  float q[kGroup][kMaxHeadDim];
  float k[kMaxHeadDim], v[kMaxHeadDim];
};

// Rotates the block's q heads into sh.q; the owner (the block whose split holds `pos`) also
// rotates the kv head's new key and stores key and value at (slot, pos). Ends with a barrier.
template <typename Elem, int kGroup, int kMaxHeadDim>
__device__ void fresh_prologue(const Fresh<Elem>& fresh, FreshShared<kGroup, kMaxHeadDim>& sh, const float* qkv_row,
                               int first_head, int heads, int kvh, int n_heads, int n_kv_heads, int head_dim, int pos,
                               bool owner, size_t cache_row) {
  const int half = head_dim / 2, q_dim = n_heads * head_dim, kv_dim = n_kv_heads * head_dim;
  const float* k_in = qkv_row + q_dim + size_t(kvh) * head_dim;
  const float* v_in = qkv_row + q_dim + kv_dim + size_t(kvh) * head_dim;
  for (int i = threadIdx.x; i < half; i += blockDim.x) {
    const float angle = float(pos) * fresh.inv_freq[i];
    double sd = 0.0, cd = 0.0;
    sincos(double(angle), &sd, &cd);
    const float cf = float(cd), sf = float(sd);
    for (int g = 0; g < heads; ++g) {
      const float* q = qkv_row + size_t(first_head + g) * head_dim;
      const float x0 = q[i], x1 = q[i + half];
      sh.q[g][i] = x0 * cf - x1 * sf;
      sh.q[g][i + half] = x1 * cf + x0 * sf;
    }
    if (owner) {
      const float x0 = k_in[i], x1 = k_in[i + half];
      const float k0 = x0 * cf - x1 * sf, k1 = x1 * cf + x0 * sf;
      store_elem(fresh.k_store + cache_row + i, k0);
      store_elem(fresh.k_store + cache_row + i + half, k1);
      sh.k[i] = stored_value(k0, fresh.k_store);
      sh.k[i + half] = stored_value(k1, fresh.k_store);
    }
  }
  if (owner) {
    for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
      store_elem(fresh.v_store + cache_row + d, v_in[d]);
      sh.v[d] = stored_value(v_in[d], fresh.v_store);
    }
  }
  __syncthreads();
}

// One block's result for each q head of its group, (m, l, acc[head_dim]), merged over its warps
// in shared memory and written as this split's partial; then the split merge by the last block.
// partial layout: [token][q head][split] x (head_dim values), stats [token][q head][split] x (m, l).
template <int kGroup, int kMaxHeadDim>
struct BlockMerge {
  float m[kWarps][kGroup], l[kWarps][kGroup];
  float acc[kWarps][kGroup][kMaxHeadDim];
  int is_last;
};

// The q heads of a block: `heads` (<= kGroup) of them from `first_head`; `counter` its
// (token, KV head, group chunk)'s.
struct BlockHeads {
  int first_head, heads;
  int* counter;
};

template <int kGroup, int kMaxHeadDim>
__device__ void finish_block(BlockMerge<kGroup, kMaxHeadDim>& sh, int head_dim, int t, BlockHeads bh, int n_heads,
                             int split, int n_splits, int active, float* __restrict__ partial_values,
                             float* __restrict__ partial_stats, float* __restrict__ out) {
  __syncthreads();  // every warp's (m, l, acc) is in shared memory
  for (int g = 0; g < bh.heads; ++g) {
    const int h = bh.first_head + g;
    const size_t partial = (size_t(t) * n_heads + h) * n_splits + split;
    float block_m = -INFINITY;
    for (int w = 0; w < kWarps; ++w) block_m = fmaxf(block_m, sh.m[w][g]);
    float weight[kWarps];
    for (int w = 0; w < kWarps; ++w) weight[w] = sh.m[w][g] == -INFINITY ? 0.0f : expf(sh.m[w][g] - block_m);
    for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
      float a = 0.0f;
      for (int w = 0; w < kWarps; ++w) a += weight[w] * sh.acc[w][g][d];
      partial_values[partial * head_dim + d] = a;
    }
    if (threadIdx.x == 0) {
      float block_l = 0.0f;
      for (int w = 0; w < kWarps; ++w) block_l += weight[w] * sh.l[w][g];
      partial_stats[2 * partial] = block_m;
      partial_stats[2 * partial + 1] = block_l;
    }
  }
  // The last of the `active` blocks of these heads merges the splits.
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) sh.is_last = atomicAdd(bh.counter, 1) == active - 1;
  __syncthreads();
  if (!sh.is_last) return;
  __threadfence();
  for (int g = 0; g < bh.heads; ++g) {
    const int h = bh.first_head + g;
    const size_t first = (size_t(t) * n_heads + h) * n_splits;
    const float* stats = partial_stats + 2 * first;
    float global_m = -INFINITY;
    for (int s = 0; s < active; ++s) global_m = fmaxf(global_m, stats[2 * s]);
    float total_l = 0.0f;
    for (int s = 0; s < active; ++s)
      if (stats[2 * s] != -INFINITY) total_l += expf(stats[2 * s] - global_m) * stats[2 * s + 1];
    const float inv_l = 1.0f / total_l;  // > 0: split 0 holds position 0
    const float* values = partial_values + first * head_dim;
    float* y = out + size_t(t) * n_heads * head_dim + size_t(h) * head_dim;
    for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
      float a = 0.0f;
      for (int s = 0; s < active; ++s)
        if (stats[2 * s] != -INFINITY) a += expf(stats[2 * s] - global_m) * values[size_t(s) * head_dim + d];
      y[d] = a * inv_l;
    }
  }
  if (threadIdx.x == 0) *bh.counter = 0;  // ready for the next launch (graph replays included)
}

// blockIdx.x = (token * n_kv_heads + kv head) * chunks + chunk of kGroup q heads.
template <int kGroup>
__device__ __forceinline__ BlockHeads block_heads(int n_heads, int n_kv_heads, int* counters, int* t, int* kvh) {
  const int group = n_heads / n_kv_heads, chunks = (group + kGroup - 1) / kGroup;
  const int chunk = blockIdx.x % chunks, tk = blockIdx.x / chunks;
  *t = tk / n_kv_heads;
  *kvh = tk % n_kv_heads;
  const int first = chunk * kGroup;
  return {*kvh * group + first, min(kGroup, group - first), counters + blockIdx.x};
}

// Fast path. kLanes lanes read one key (one 16-byte chunk each), 32 / kLanes keys per warp step.
template <typename Elem, int kLanes, int kGroup>
__global__ void __launch_bounds__(kWarps * 32)
    attention_decode_kernel(const float* __restrict__ qkv, const Elem* __restrict__ k_layer,
                            const Elem* __restrict__ v_layer, const int32_t* __restrict__ positions,
                            const int32_t* __restrict__ slots, int n_heads, int n_kv_heads, int max_context,
                            float scale, float* __restrict__ partial_values, float* __restrict__ partial_stats,
                            int* __restrict__ counters, float* __restrict__ out, Fresh<Elem> fresh) {
  using C = Chunk16<Elem>;
  constexpr int kHeadDim = kLanes * C::kElems;
  constexpr int kKeysPerStep = 32 / kLanes;
  __shared__ BlockMerge<kGroup, kHeadDim> sh;
  __shared__ FreshShared<kGroup, kHeadDim> fs;
  int t = 0, kvh = 0;
  const BlockHeads bh = block_heads<kGroup>(n_heads, n_kv_heads, counters, &t, &kvh);
  const int split = blockIdx.y, n_splits = gridDim.y;
  const int pos = positions[t];
  const SplitRange range = split_range(pos, split, n_splits);
  if (split >= range.active) return;  // the whole block: this split has no keys at this length
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int sub = lane / kLanes, part = lane % kLanes;  // which key of the step, which chunk of it
  const int q_dim = n_heads * kHeadDim, kv_dim = n_kv_heads * kHeadDim, qkv_dim = q_dim + 2 * kv_dim;
  const size_t head0 = size_t(slots[t]) * size_t(max_context) * size_t(kv_dim) + size_t(kvh) * kHeadDim;
  const size_t row0 = head0 + size_t(part) * C::kElems;
  const bool fused = fresh.inv_freq != nullptr;      // block-uniform
  const bool owner = fused && split == range.active - 1;  // this split holds pos
  if (fused)
    fresh_prologue(fresh, fs, qkv + size_t(t) * qkv_dim, bh.first_head, bh.heads, kvh, n_heads, n_kv_heads, kHeadDim,
                   pos, owner, head0 + size_t(pos) * kv_dim);

  float q[kGroup][C::kElems], acc[kGroup][C::kElems], m[kGroup], l[kGroup];
#pragma unroll
  for (int g = 0; g < kGroup; ++g) {
    const float* qg = qkv + size_t(t) * qkv_dim + size_t(bh.first_head + g) * kHeadDim + part * C::kElems;
#pragma unroll
    for (int e = 0; e < C::kElems; ++e) {
      q[g][e] = g < bh.heads ? (fused ? fs.q[g][part * C::kElems + e] : qg[e]) * scale : 0.0f;
      acc[g][e] = 0.0f;
    }
    m[g] = -INFINITY;
    l[g] = 0.0f;
  }
  for (int k0 = range.begin + warp * kKeysPerStep; k0 < range.end; k0 += kWarps * kKeysPerStep) {
    const int key = k0 + sub;
    const bool valid = key < range.end;
    float kv[C::kElems], vv[C::kElems];
    if (valid && owner && key == pos) {  // the new key and value, as this launch stored them
#pragma unroll
      for (int e = 0; e < C::kElems; ++e) {
        kv[e] = fs.k[part * C::kElems + e];
        vv[e] = fs.v[part * C::kElems + e];
      }
    } else if (valid) {  // both loads before any math
      C::load(k_layer + row0 + size_t(key) * kv_dim, kv);
      C::load(v_layer + row0 + size_t(key) * kv_dim, vv);
    } else {
#pragma unroll
      for (int e = 0; e < C::kElems; ++e) kv[e] = vv[e] = 0.0f;
    }
#pragma unroll
    for (int g = 0; g < kGroup; ++g) {
      float dot = 0.0f;
#pragma unroll
      for (int e = 0; e < C::kElems; ++e) dot += q[g][e] * kv[e];
#pragma unroll
      for (int o = kLanes / 2; o > 0; o >>= 1) dot += __shfl_xor_sync(kFullWarp, dot, o);  // within the key's lanes
      const float score = valid ? dot : -INFINITY;
      const float new_m = fmaxf(m[g], score);
      const float correction = new_m == -INFINITY ? 1.0f : expf(m[g] - new_m);
      const float p = valid ? expf(score - new_m) : 0.0f;
      l[g] = l[g] * correction + p;
#pragma unroll
      for (int e = 0; e < C::kElems; ++e) acc[g][e] = acc[g][e] * correction + p * vv[e];
      m[g] = new_m;
    }
  }
  // Merge the warp's key slots (lanes with the same chunk, 32 / kLanes of them) by shuffles.
#pragma unroll
  for (int g = 0; g < kGroup; ++g) {
#pragma unroll
    for (int o = kLanes; o < 32; o <<= 1) {
      const float om = __shfl_xor_sync(kFullWarp, m[g], o), ol = __shfl_xor_sync(kFullWarp, l[g], o);
      const float new_m = fmaxf(m[g], om);
      const float a = m[g] == -INFINITY ? 0.0f : expf(m[g] - new_m);
      const float b = om == -INFINITY ? 0.0f : expf(om - new_m);
#pragma unroll
      for (int e = 0; e < C::kElems; ++e) acc[g][e] = acc[g][e] * a + __shfl_xor_sync(kFullWarp, acc[g][e], o) * b;
      l[g] = l[g] * a + ol * b;
      m[g] = new_m;
    }
    if (sub == 0) {
#pragma unroll
      for (int e = 0; e < C::kElems; ++e) sh.acc[warp][g][part * C::kElems + e] = acc[g][e];
    }
    if (lane == 0) {
      sh.m[warp][g] = m[g];
      sh.l[warp][g] = l[g];
    }
  }
  finish_block(sh, kHeadDim, t, bh, n_heads, split, n_splits, range.active, partial_values, partial_stats, out);
}

// Any shape: lanes across head_dim (kMaxHeadDim / 32 dims each), one key per warp step.
template <typename Elem, int kMaxHeadDim, int kGroup>
__global__ void __launch_bounds__(kWarps * 32)
    attention_decode_general_kernel(const float* __restrict__ qkv, const Elem* __restrict__ k_layer,
                                    const Elem* __restrict__ v_layer, const int32_t* __restrict__ positions,
                                    const int32_t* __restrict__ slots, int n_heads, int n_kv_heads, int head_dim,
                                    int max_context, float scale, float* __restrict__ partial_values,
                                    float* __restrict__ partial_stats, int* __restrict__ counters,
                                    float* __restrict__ out, Fresh<Elem> fresh) {
  constexpr int kPerLane = kMaxHeadDim / 32;
  __shared__ BlockMerge<kGroup, kMaxHeadDim> sh;
  __shared__ FreshShared<kGroup, kMaxHeadDim> fs;
  int t = 0, kvh = 0;
  const BlockHeads bh = block_heads<kGroup>(n_heads, n_kv_heads, counters, &t, &kvh);
  const int split = blockIdx.y, n_splits = gridDim.y;
  const int pos = positions[t];
  const SplitRange range = split_range(pos, split, n_splits);
  if (split >= range.active) return;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int q_dim = n_heads * head_dim, kv_dim = n_kv_heads * head_dim, qkv_dim = q_dim + 2 * kv_dim;
  const size_t row0 = size_t(slots[t]) * size_t(max_context) * size_t(kv_dim) + size_t(kvh) * head_dim;
  const bool fused = fresh.inv_freq != nullptr;           // block-uniform
  const bool owner = fused && split == range.active - 1;  // this split holds pos
  if (fused)
    fresh_prologue(fresh, fs, qkv + size_t(t) * qkv_dim, bh.first_head, bh.heads, kvh, n_heads, n_kv_heads, head_dim,
                   pos, owner, row0 + size_t(pos) * kv_dim);

  float q[kGroup][kPerLane], acc[kGroup][kPerLane], m[kGroup], l[kGroup];
#pragma unroll
  for (int g = 0; g < kGroup; ++g) {
    const float* qg = qkv + size_t(t) * qkv_dim + size_t(bh.first_head + g) * head_dim;
#pragma unroll
    for (int e = 0; e < kPerLane; ++e) {
      const int d = lane + 32 * e;
      q[g][e] = g < bh.heads && d < head_dim ? (fused ? fs.q[g][d] : qg[d]) * scale : 0.0f;
      acc[g][e] = 0.0f;
    }
    m[g] = -INFINITY;
    l[g] = 0.0f;
  }
  for (int key = range.begin + warp; key < range.end; key += kWarps) {
    const Elem* k = k_layer + row0 + size_t(key) * kv_dim;
    const Elem* v = v_layer + row0 + size_t(key) * kv_dim;
    float kv[kPerLane], vv[kPerLane];
    const bool mine = owner && key == pos;  // the new key and value, as this launch stored them
#pragma unroll
    for (int e = 0; e < kPerLane; ++e) {  // the key's and value's loads together
      const int d = lane + 32 * e;
      kv[e] = d < head_dim ? (mine ? fs.k[d] : widen(k[d])) : 0.0f;
      vv[e] = d < head_dim ? (mine ? fs.v[d] : widen(v[d])) : 0.0f;
    }
#pragma unroll
    for (int g = 0; g < kGroup; ++g) {
      float dot = 0.0f;
#pragma unroll
      for (int e = 0; e < kPerLane; ++e) dot += q[g][e] * kv[e];
      const float score = warp_sum(dot);
      const float new_m = fmaxf(m[g], score);
      const float correction = expf(m[g] - new_m);
      const float p = expf(score - new_m);
      l[g] = l[g] * correction + p;
#pragma unroll
      for (int e = 0; e < kPerLane; ++e) acc[g][e] = acc[g][e] * correction + p * vv[e];
      m[g] = new_m;
    }
  }
#pragma unroll
  for (int g = 0; g < kGroup; ++g) {
#pragma unroll
    for (int e = 0; e < kPerLane; ++e) {
      const int d = lane + 32 * e;
      if (d < head_dim) sh.acc[warp][g][d] = acc[g][e];
    }
    if (lane == 0) {
      sh.m[warp][g] = m[g];
      sh.l[warp][g] = l[g];
    }
  }
  finish_block(sh, head_dim, t, bh, n_heads, split, n_splits, range.active, partial_values, partial_stats, out);
}

struct Workspace {
  float* values;
  float* stats;
  int* counters;
};

Workspace carve(float* base, int* counters, int n_tokens, const AttentionGeometry& g) {
  const DecodeSplit s = decode_split_for(g.max_context);
  const size_t n_partials = size_t(n_tokens) * g.n_heads * s.n_splits;
  return {base, base + n_partials * g.head_dim, counters};
}

template <typename Elem, int kGroup>
cudaError_t launch_group(const float* qkv, const void* k, const void* v, const int32_t* positions,
                         const int32_t* slots, int n_tokens, const AttentionGeometry& g, Workspace ws, float* out,
                         Fresh<Elem> fresh, cudaStream_t stream) {
  const DecodeSplit split = decode_split_for(g.max_context);
  const int chunks = (g.n_heads / g.n_kv_heads + kGroup - 1) / kGroup;
  const dim3 grid(unsigned(n_tokens * g.n_kv_heads * chunks), unsigned(split.n_splits));
  const LaunchShape shape{grid, kWarps * 32, 0, stream};
  const float scale = 1.0f / sqrtf(float(g.head_dim));
  const auto* ke = static_cast<const Elem*>(k);
  const auto* ve = static_cast<const Elem*>(v);
  constexpr int kElems = Chunk16<Elem>::kElems;
  const int lanes = g.head_dim / kElems;
  // 16-byte loads need whole chunks per head and 16-byte aligned rows (kv_dim * size a multiple of 16).
  const bool fast = g.head_dim % kElems == 0 && (lanes == 8 || lanes == 16 || lanes == 32) &&
                    (size_t(g.n_kv_heads) * g.head_dim * sizeof(Elem)) % 16 == 0;
  if (fast && lanes == 8)
    return launch<attention_decode_kernel<Elem, 8, kGroup>>(shape, qkv, ke, ve, positions, slots, g.n_heads,
                                                            g.n_kv_heads, g.max_context, scale, ws.values, ws.stats,
                                                            ws.counters, out, fresh);
  if (fast && lanes == 16)
    return launch<attention_decode_kernel<Elem, 16, kGroup>>(shape, qkv, ke, ve, positions, slots, g.n_heads,
                                                             g.n_kv_heads, g.max_context, scale, ws.values, ws.stats,
                                                             ws.counters, out, fresh);
  if (fast && lanes == 32)
    return launch<attention_decode_kernel<Elem, 32, kGroup>>(shape, qkv, ke, ve, positions, slots, g.n_heads,
                                                             g.n_kv_heads, g.max_context, scale, ws.values, ws.stats,
                                                             ws.counters, out, fresh);
  if (g.head_dim <= 64)
    return launch<attention_decode_general_kernel<Elem, 64, kGroup>>(shape, qkv, ke, ve, positions, slots, g.n_heads,
                                                                     g.n_kv_heads, g.head_dim, g.max_context, scale,
                                                                     ws.values, ws.stats, ws.counters, out, fresh);
  if (g.head_dim <= 128)
    return launch<attention_decode_general_kernel<Elem, 128, kGroup>>(shape, qkv, ke, ve, positions, slots, g.n_heads,
                                                                      g.n_kv_heads, g.head_dim, g.max_context, scale,
                                                                      ws.values, ws.stats, ws.counters, out, fresh);
  return launch<attention_decode_general_kernel<Elem, 256, kGroup>>(shape, qkv, ke, ve, positions, slots, g.n_heads,
                                                                    g.n_kv_heads, g.head_dim, g.max_context, scale,
                                                                    ws.values, ws.stats, ws.counters, out, fresh);
}

template <typename Elem>
cudaError_t launch_elem(const float* qkv, const void* k, const void* v, const int32_t* positions, const int32_t* slots,
                        int n_tokens, const AttentionGeometry& g, Workspace ws, float* out, const float* inv_freq,
                        void* k_store, void* v_store, cudaStream_t stream) {
  const Fresh<Elem> fresh{inv_freq, static_cast<Elem*>(k_store), static_cast<Elem*>(v_store)};
  // q heads per block: the group itself up to 8 (a power of two covering it), else chunks of 8.
  const int group = g.n_heads / g.n_kv_heads;
  if (group == 1) return launch_group<Elem, 1>(qkv, k, v, positions, slots, n_tokens, g, ws, out, fresh, stream);
  if (group == 2) return launch_group<Elem, 2>(qkv, k, v, positions, slots, n_tokens, g, ws, out, fresh, stream);
  if (group <= 4) return launch_group<Elem, 4>(qkv, k, v, positions, slots, n_tokens, g, ws, out, fresh, stream);
  return launch_group<Elem, 8>(qkv, k, v, positions, slots, n_tokens, g, ws, out, fresh, stream);
}

cudaError_t launch_decode(const float* qkv, const void* k_layer, const void* v_layer, const int32_t* positions,
                          const int32_t* slots, int n_tokens, const AttentionGeometry& g, float* workspace,
                          int* counters, float* out, const float* inv_freq, void* k_store, void* v_store,
                          cudaStream_t stream) {
  if (n_tokens <= 0) return cudaSuccess;
  if (g.head_dim <= 0 || g.head_dim > 256 || g.head_dim % 2 != 0 || g.n_kv_heads <= 0 || g.n_heads % g.n_kv_heads != 0)
    return cudaErrorInvalidValue;
  const Workspace ws = carve(workspace, counters, n_tokens, g);
  if (g.bf16_cache)
    return launch_elem<__nv_bfloat16>(qkv, k_layer, v_layer, positions, slots, n_tokens, g, ws, out, inv_freq, k_store,
                                      v_store, stream);
  return launch_elem<float>(qkv, k_layer, v_layer, positions, slots, n_tokens, g, ws, out, inv_freq, k_store, v_store,
                            stream);
}

}  // namespace

DecodeSplit decode_split_for(int max_context) {
  DecodeSplit s;
  const int wanted = (max_context + kMinKeysPerSplit - 1) / kMinKeysPerSplit;
  s.n_splits = wanted < 1 ? 1 : (wanted > kMaxSplits ? kMaxSplits : wanted);
  s.chunk = (max_context + s.n_splits - 1) / s.n_splits;
  return s;
}

size_t decode_workspace_floats(int n_tokens, const AttentionGeometry& g) {
  const DecodeSplit s = decode_split_for(g.max_context);
  // partial values and (m, l) per (token, q head, split)
  return size_t(n_tokens) * g.n_heads * s.n_splits * (size_t(g.head_dim) + 2);
}

size_t decode_counters(int n_tokens, const AttentionGeometry& g) {
  return size_t(n_tokens) * size_t(g.n_heads);  // one per block of q heads, at most one per q head
}

cudaError_t launch_attention_decode(const float* qkv, const void* k_layer, const void* v_layer,
                                    const int32_t* positions, const int32_t* slots, int n_tokens,
                                    const AttentionGeometry& g, float* workspace, int* counters, float* out,
                                    cudaStream_t stream) {
  return launch_decode(qkv, k_layer, v_layer, positions, slots, n_tokens, g, workspace, counters, out, nullptr,
                       nullptr, nullptr, stream);
}

cudaError_t launch_rope_attention_decode(const float* qkv, void* k_layer, void* v_layer, const int32_t* positions,
                                         const int32_t* slots, const float* inv_freq, int n_tokens,
                                         const AttentionGeometry& g, float* workspace, int* counters, float* out,
                                         cudaStream_t stream) {
  if (inv_freq == nullptr) return cudaErrorInvalidValue;
  return launch_decode(qkv, k_layer, v_layer, positions, slots, n_tokens, g, workspace, counters, out, inv_freq,
                       k_layer, v_layer, stream);
}

}  // namespace lowbit::kernels
