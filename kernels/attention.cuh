// Attention over the KV cache: storing each token's k/v, causal prefill, split-K decode.
//
// KV cache layout (per layer, separate K and V arrays, fp32 or bf16 -- AttentionGeometry::bf16_cache):
//   [n_slots][max_context][kv_dim], kv_dim = n_kv_heads * head_dim; kv head g of position p of
//   slot s starts at ((s * max_context) + p) * kv_dim + g * head_dim.
// qkv rows are [q heads | k heads | v heads] (stride qkv_dim = (n_heads + 2 n_kv_heads) head_dim),
// out rows are [n_heads * head_dim]. Each token t attends to positions 0..positions[t] of its
// slot slots[t]; q head h reads kv head h / (n_heads / n_kv_heads) (GQA; MQA is n_kv_heads = 1).
// head_dim must be even and at most 256; positions must lie in [0, max_context) (checked on the host).
#pragma once
#include <cstddef>
#include <cstdint>

#include <cuda_runtime_api.h>

namespace lowbit::kernels {

struct AttentionGeometry {
  int n_heads = 0, n_kv_heads = 0, head_dim = 0;
  int max_context = 0;      // positions per slot in the cache
  bool bf16_cache = false;  // K and V stored as bf16 (rounded to nearest even by kv_store), else fp32
  int qkv_dim() const { return (n_heads + 2 * n_kv_heads) * head_dim; }
  int kv_dim() const { return n_kv_heads * head_dim; }
};

// k_layer/v_layer[slot, pos, :] = the k/v part of qkv row t, for every token t.
cudaError_t launch_kv_store(const float* qkv, const int32_t* positions, const int32_t* slots, int n_tokens,
                            const AttentionGeometry& g, void* k_layer, void* v_layer, cudaStream_t stream);

// Causal attention for a batch whose tokens all belong to slots[0]'s sequence (a prompt chunk):
// tiles of 16 queries share each 32-key tile of K and V loaded once into shared memory, with an
// online (flash-attention) softmax. Positions need not be consecutive or sorted.
cudaError_t launch_attention_prefill(const float* qkv, const void* k_layer, const void* v_layer,
                                     const int32_t* positions, const int32_t* slots, int n_tokens,
                                     const AttentionGeometry& g, float* out, cudaStream_t stream);

// Split-K ("flash-decoding") attention for any batch (one token per slot in batched decode),
// one kernel (kernels/attention_decode.cu): up to n_splits blocks per (token, KV head, 8 q heads),
// each over a share of the token's positions 0..pos computed on the device; the last one merges
// the partials. The grid depends only on n_tokens and max_context, never on the positions, so a
// CUDA graph captured once replays for every decode step.
struct DecodeSplit {
  int n_splits = 1, chunk = 1;
};
DecodeSplit decode_split_for(int max_context);
// Floats of partial results the decode path needs for n_tokens tokens (any contents), and the
// counters (ints) it needs: those must be zero before the first launch (zero them when allocated);
// every launch leaves them at zero, and a launch for fewer tokens uses a prefix of them, so one
// zeroed buffer serves every batch size up to its own.
size_t decode_workspace_floats(int n_tokens, const AttentionGeometry& g);
size_t decode_counters(int n_tokens, const AttentionGeometry& g);
cudaError_t launch_attention_decode(const float* qkv, const void* k_layer, const void* v_layer,
                                    const int32_t* positions, const int32_t* slots, int n_tokens,
                                    const AttentionGeometry& g, float* workspace, int* counters, float* out,
                                    cudaStream_t stream);

// The fused decode step: qkv unrotated; rotates q and k by each token's position (inv_freq:
// head_dim / 2 frequencies, rope.cu's arithmetic), stores k and v at (slot, position) and attends,
// in one kernel. The tokens must be in distinct slots (a decode step); the cache arrays are
// written, so they are not const.
cudaError_t launch_rope_attention_decode(const float* qkv, void* k_layer, void* v_layer, const int32_t* positions,
                                         const int32_t* slots, const float* inv_freq, int n_tokens,
                                         const AttentionGeometry& g, float* workspace, int* counters, float* out,
                                         cudaStream_t stream);

}  // namespace lowbit::kernels
