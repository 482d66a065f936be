// Rotary position embedding, applied in place to the q and k heads of qkv rows.
#pragma once
#include <cstdint>

#include <cuda_runtime_api.h>

namespace lowbit::kernels {

// qkv rows are [n_heads q heads | n_kv_heads k heads | v heads], each head head_dim floats,
// row stride qkv_dim. Half rotation: pairs (i, i + head_dim/2) of every q and k head rotate by
// angle = float(positions[t]) * inv_freq[i] (inv_freq has head_dim/2 values).
cudaError_t launch_rope(float* qkv, const int32_t* positions, const float* inv_freq, int n_tokens, int n_heads,
                        int n_kv_heads, int head_dim, int qkv_dim, cudaStream_t stream);

}  // namespace lowbit::kernels
