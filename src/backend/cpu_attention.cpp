#include "backend/cpu_attention.h"

// GCC 12 warns inside its own AVX-512 headers (_mm512_undefined_*'s self-initialization, GCC bug
// 105593); the pragma must precede the headers to cover them.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include <algorithm>
#include <cmath>
#include <limits>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif

namespace lowbit::cpu_attention {

// Softmax weights in place: scores[j] = exp(scores[j] - max) / sum for j <= pos, summed in
// position order (std::exp is the definition). max_score as the plain loop finds it.
static void softmax_weights(float* scores, int pos, float max_score) {
  float sum = 0;
  for (int j = 0; j <= pos; ++j) sum += (scores[j] = std::exp(scores[j] - max_score));
  for (int j = 0; j <= pos; ++j) scores[j] = scores[j] / sum;
}

void attend_plain(const KvLayout& layout, const float* keys, const float* values, const AttentionJob& job,
                  float* scores) {
  const int d0 = job.kv_head * job.head_dim;
  for (int j = 0; j <= job.pos; ++j) {
    float dot = 0;
    for (int i = 0; i < job.head_dim; ++i) dot += job.q[i] * keys[layout.key_index(job.layer, job.slot, j, d0 + i)];
    scores[j] = dot * job.scale;
  }
  float max_score = -std::numeric_limits<float>::infinity();
  for (int j = 0; j <= job.pos; ++j) max_score = std::max(max_score, scores[j]);
  softmax_weights(scores, job.pos, max_score);
  std::fill_n(job.y, job.head_dim, 0.0f);
  for (int j = 0; j <= job.pos; ++j) {
    const float* v = values + layout.value_row(job.layer, job.slot, j) + d0;
    const float p = scores[j];
    for (int i = 0; i < job.head_dim; ++i) job.y[i] += p * v[i];
  }
}

#if defined(__x86_64__) && defined(__GNUC__)
// Compiled for AVX-512, called only where cpu_level() says the CPU has it (headers above, so no
// inline function of theirs is compiled here for AVX-512). No FMA: the plain loops round each
// product.
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,avx512f,avx512bw,avx512vl,avx512dq"))), apply_to = function)
#pragma clang fp contract(off)
#else
#pragma GCC push_options
#pragma GCC target("avx2,avx512f,avx512bw,avx512vl,avx512dq")
#pragma GCC optimize("fp-contract=off")
#endif

// Scores of one job: the dot products of 16 positions at once (lane l sums q[i] * k_{16b + l}[i]
// over i in order), then the plain loop's softmax weights.
static void job_weights(const KvLayout& layout, const float* keys, const AttentionJob& job, float* scores) {
  const int d0 = job.kv_head * job.head_dim;
  const __m512 scale = _mm512_set1_ps(job.scale);
  for (int64_t b = 0; b <= job.pos / kKeyBlock; ++b) {
    const float* kt = keys + layout.key_block(job.layer, job.slot, b) + size_t(d0) * kKeyBlock;
    __m512 dot = _mm512_setzero_ps();
    for (int i = 0; i < job.head_dim; ++i)
      dot = _mm512_add_ps(dot, _mm512_mul_ps(_mm512_set1_ps(job.q[i]), _mm512_loadu_ps(kt + size_t(i) * kKeyBlock)));
    _mm512_storeu_ps(scores + b * kKeyBlock, _mm512_mul_ps(dot, scale));  // lanes past pos unused
  }
  // The plain loop's max: vmaxps(v, acc) returns acc for a NaN v, as std::max(max, v) keeps max;
  // which zero wins a tie of -0 and +0 changes no exp(x - max).
  __m512 top = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  int j = 0;
  for (; j + 16 <= job.pos + 1; j += 16) top = _mm512_max_ps(_mm512_loadu_ps(scores + j), top);
  float max_score = _mm512_reduce_max_ps(top);
  for (; j <= job.pos; ++j) max_score = std::max(max_score, scores[j]);
  softmax_weights(scores, job.pos, max_score);
}

void attend_avx512(const KvLayout& layout, const float* keys, const float* values, const AttentionJob* jobs,
                   int count, float* scores, int64_t scores_stride) {
  // y[i] = sum_j p_j v_j[i] in position order, 16 dimensions per register. The jobs' 16-dimension
  // chunks are independent sums, so they advance together, position by position: up to
  // kMaxChains additions in flight instead of one chain waiting on its own latency.
  constexpr int kMaxChains = 16;
  const int hd = jobs[0].head_dim, chunks = (hd + 15) / 16;
  if (count * chunks > kMaxChains) {
    if (count > 1) {
      for (int k = 0; k < count; ++k) attend_avx512(layout, keys, values, &jobs[k], 1, scores + k * scores_stride, 0);
      return;
    }
    const AttentionJob& job = jobs[0];  // head_dim above 256: one chunk at a time
    job_weights(layout, keys, job, scores);
    for (int i0 = 0; i0 < hd; i0 += 16) {
      const __mmask16 lanes = _cvtu32_mask16(hd - i0 >= 16 ? 0xffffu : (1u << (hd - i0)) - 1u);
      __m512 y = _mm512_setzero_ps();
      for (int j = 0; j <= job.pos; ++j) {
        const float* v = values + layout.value_row(job.layer, job.slot, j) + job.kv_head * hd + i0;
        y = _mm512_add_ps(y, _mm512_mul_ps(_mm512_set1_ps(scores[j]), _mm512_maskz_loadu_ps(lanes, v)));
      }
      _mm512_mask_storeu_ps(job.y + i0, lanes, y);
    }
    return;
  }
  for (int k = 0; k < count; ++k) job_weights(layout, keys, jobs[k], scores + k * scores_stride);
  __m512 y[kMaxChains];
  for (int c = 0; c < count * chunks; ++c) y[c] = _mm512_setzero_ps();
  const __mmask16 tail = _cvtu32_mask16(hd % 16 == 0 ? 0xffffu : (1u << (hd % 16)) - 1u);
  int max_pos = 0;
  for (int k = 0; k < count; ++k) max_pos = std::max(max_pos, jobs[k].pos);
  for (int j = 0; j <= max_pos; ++j)
    for (int k = 0; k < count; ++k) {
      const AttentionJob& job = jobs[k];
      if (j > job.pos) continue;
      const __m512 p = _mm512_set1_ps(scores[k * scores_stride + j]);
      const float* v = values + layout.value_row(job.layer, job.slot, j) + job.kv_head * hd;
      for (int c = 0; c < chunks; ++c) {
        const __mmask16 lanes = c == chunks - 1 ? tail : __mmask16(0xffff);
        y[k * chunks + c] = _mm512_add_ps(y[k * chunks + c], _mm512_mul_ps(p, _mm512_maskz_loadu_ps(lanes, v + 16 * c)));
      }
    }
  for (int k = 0; k < count; ++k)
    for (int c = 0; c < chunks; ++c)
      _mm512_mask_storeu_ps(jobs[k].y + 16 * c, c == chunks - 1 ? tail : __mmask16(0xffff), y[k * chunks + c]);
}

void attend_avx512(const KvLayout& layout, const float* keys, const float* values, const AttentionJob& job,
                   float* scores) {
  attend_avx512(layout, keys, values, &job, 1, scores, 0);
}

int jobs_per_call(int head_dim) { return std::max(1, 16 / ((head_dim + 15) / 16)); }

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
#else
void attend_avx512(const KvLayout& layout, const float* keys, const float* values, const AttentionJob* jobs,
                   int count, float* scores, int64_t scores_stride) {
  for (int k = 0; k < count; ++k) attend_plain(layout, keys, values, jobs[k], scores + k * scores_stride);
}
void attend_avx512(const KvLayout& layout, const float* keys, const float* values, const AttentionJob& job,
                   float* scores) {
  attend_plain(layout, keys, values, job, scores);
}
int jobs_per_call(int) { return 1; }
#endif

}  // namespace lowbit::cpu_attention
