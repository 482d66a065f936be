// The CPU backend's causal attention over its KV cache: the plain loops (the oracle) and an
// AVX-512 kernel that gives their results bit for bit (tests/test_kernels.cpp).
#pragma once
#include <cstddef>
#include <cstdint>

namespace lowbit::cpu_attention {

constexpr int kKeyBlock = 16;  // positions per transposed key block (one zmm of lanes)

// Where K and V live in the cache's two float arrays.
//   keys   [layer][slot][position / 16][kv_dim][position % 16]: transposed in blocks of 16
//          positions, so one vector load holds one dimension of 16 consecutive keys and a query's
//          16 dot products run in lanes, each summed over the dimensions in the plain loop's order
//   values [layer][slot][position][kv_dim]
// kv_dim is n_kv_heads * head_dim; kv head h owns dimensions [h * head_dim, (h + 1) * head_dim).
struct KvLayout {
  int n_layers = 0, n_slots = 0, max_context = 0, kv_dim = 0;

  int64_t blocks() const { return (max_context + kKeyBlock - 1) / kKeyBlock; }
  size_t key_floats() const { return size_t(n_layers) * size_t(n_slots) * size_t(blocks()) * kv_dim * kKeyBlock; }
  size_t value_floats() const { return size_t(n_layers) * size_t(n_slots) * size_t(max_context) * kv_dim; }
  // First float of key block `block` (positions 16 * block ...) of a slot.
  size_t key_block(int layer, int slot, int64_t block) const {
    return ((size_t(layer) * n_slots + slot) * size_t(blocks()) + size_t(block)) * size_t(kv_dim) * kKeyBlock;
  }
  size_t key_index(int layer, int slot, int pos, int dim) const {
    return key_block(layer, slot, pos / kKeyBlock) + size_t(dim) * kKeyBlock + size_t(pos % kKeyBlock);
  }
  size_t value_row(int layer, int slot, int pos) const {
    return ((size_t(layer) * n_slots + slot) * size_t(max_context) + size_t(pos)) * size_t(kv_dim);
  }
};

// One query head of one token: y = sum_j softmax_j(q . k_j * scale) v_j over positions j <= pos
// of `slot`, reading kv head `kv_head`. scores: scratch of at least pos + 16 floats.
// The plain loops: each dot product in dimension order, std::exp, the weights p_j = e_j / sum
// applied in position order.
struct AttentionJob {
  int layer, slot, pos, kv_head, head_dim;
  float scale;
  const float* q;  // head_dim values
  float* y;        // head_dim values
};
void attend_plain(const KvLayout& layout, const float* keys, const float* values, const AttentionJob& job,
                  float* scores);
// The same arithmetic with AVX-512 (16 keys per dot-product step, 16 dimensions per weighted sum).
void attend_avx512(const KvLayout& layout, const float* keys, const float* values, const AttentionJob& job,
                   float* scores);
// `count` jobs of one layer together (job k's scores at scores + k * scores_stride): their
// weighted sums advance side by side, which hides the adds' latency when head_dim is small.
// Each job's result is what attend_plain gives it.
void attend_avx512(const KvLayout& layout, const float* keys, const float* values, const AttentionJob* jobs,
                   int count, float* scores, int64_t scores_stride);
// How many heads of a token one attend_avx512 call should take: 16 / (16-dimension chunks).
int jobs_per_call(int head_dim);

}  // namespace lowbit::cpu_attention
