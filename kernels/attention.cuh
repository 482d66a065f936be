// Attention over the KV cache: storing each token's k/v, causal prefill, split-K decode.
//
// KV cache layout (per layer, separate K and V arrays, fp32):
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
  int max_context = 0;  // positions per slot in the cache
  int qkv_dim() const { return (n_heads + 2 * n_kv_heads) * head_dim; }
  int kv_dim() const { return n_kv_heads * head_dim; }
};

// k_layer/v_layer[slot, pos, :] = the k/v part of qkv row t, for every token t.
cudaError_t launch_kv_store(const float* qkv, const int32_t* positions, const int32_t* slots, int n_tokens,
                            const AttentionGeometry& g, float* k_layer, float* v_layer, cudaStream_t stream);

// Causal attention for a batch whose tokens all belong to slots[0]'s sequence (a prompt chunk):
// tiles of 16 queries share each 32-key tile of K and V loaded once into shared memory, with an
// online (flash-attention) softmax. Positions need not be consecutive or sorted.
cudaError_t launch_attention_prefill(const float* qkv, const float* k_layer, const float* v_layer,
                                     const int32_t* positions, const int32_t* slots, int n_tokens,
                                     const AttentionGeometry& g, float* out, cudaStream_t stream);

// Split-K ("flash-decoding") attention for any batch (one token per slot in batched decode):
// the positions of the cache are cut into n_splits chunks of `chunk` keys; one block per
// (token, head, chunk) writes a partial (max, sum, weighted values), then a reduction combines
// the chunks. The grid depends only on n_tokens and max_context, never on the positions, so a
// CUDA graph captured once replays for every decode step.
struct DecodeSplit {
  int n_splits = 1, chunk = 1;
};
DecodeSplit decode_split_for(int max_context);
// Floats of partial results the decode path needs for n_tokens tokens.
size_t decode_workspace_floats(int n_tokens, const AttentionGeometry& g);
cudaError_t launch_attention_decode(const float* qkv, const float* k_layer, const float* v_layer,
                                    const int32_t* positions, const int32_t* slots, int n_tokens,
                                    const AttentionGeometry& g, float* workspace, float* out, cudaStream_t stream);

}  // namespace lowbit::kernels
