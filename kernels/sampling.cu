// One block of 1024 threads samples one row: a handful of passes over the vocabulary (each
// pass is a coalesced read of at most 512 KB for a 128k vocabulary, from L2 after the first),
// with selection done by radix select instead of a sort:
//  - top-k: the k-th largest score by four 8-bit digit passes over an order-preserving key;
//  - top-p: the (score, id)-ordered prefix whose mass stays <= 1 - top_p, found by eight digit
//    passes over a 64-bit (score key, id) key with a mass histogram per digit.
// One block is enough: sampling runs once per generated token and is ~10 us against a decode
// step of milliseconds; what it saves is the logits download and the CPU pass.
#include <cstdint>

#include "kernels/common.cuh"
#include "kernels/sampling.cuh"

namespace lowbit::kernels {

namespace {

constexpr int kThreads = 1024;
// Top-p bin masses are summed as 2^-62 fixed point with integer atomics, so the sum does not
// depend on the order threads arrive in (a double atomicAdd would make the same seed give a
// different token when a cut falls within rounding). Probabilities sum to <= 1 (+ rounding), far
// below the 4.0 an unsigned 64-bit value holds at this scale.
constexpr double kMassOne = 0x1p62;

// Orders floats as unsigned integers: a < b (as floats, for non-NaN) iff key(a) < key(b),
// with -0 just below +0.
__device__ __forceinline__ uint32_t ordered_key(float f) {
  const uint32_t u = __float_as_uint(f);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
__device__ __forceinline__ float from_ordered_key(uint32_t k) {
  return __uint_as_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k);
}

// sampler.cpp's uniform01, bit for bit: splitmix64 output of mix(seed) + (step + 1) * gamma.
__device__ __forceinline__ uint64_t splitmix64_mix(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
__device__ __forceinline__ double uniform01(uint64_t seed, uint64_t step) {
  constexpr uint64_t kGoldenGamma = 0x9E3779B97F4A7C15ull;
  const uint64_t bits = splitmix64_mix(splitmix64_mix(seed) + (step + 1) * kGoldenGamma);
  return static_cast<double>(bits >> 11) * 0x1.0p-53;
}

__device__ __forceinline__ bool survives(float s) { return s != -INFINITY && !isnan(s); }

struct SharedState {
  float f_scratch[32];
  double d_scratch[32];
  int i_scratch[32];
  int count_hist[256];
  unsigned long long mass_hist[256];  // fixed point, kMassOne = 1.0 (integer sums: order-free)
  double chunk_prefix[kThreads];
  uint64_t prefix;
  double below;
  int remaining;
};

__device__ int block_sum_int(int v, SharedState& sh) { return block_sum(v, sh.i_scratch); }

__device__ int block_min_int(int v, SharedState& sh) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = min(v, __shfl_xor_sync(kFullWarp, v, o));
  if (lane == 0) sh.i_scratch[warp] = v;
  __syncthreads();
  int r = sh.i_scratch[lane];  // 32 warps: every lane reads one
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) r = min(r, __shfl_xor_sync(kFullWarp, r, o));
  __syncthreads();
  return r;
}

__device__ int block_max_int(int v, SharedState& sh) { return -block_min_int(-v, sh); }

// Largest score, lowest id among equals (sampler.cpp's argmax_lowest_index). NaN never wins.
__device__ int block_argmax(const float* scores, int vocab, SharedState& sh) {
  float best = -INFINITY;
  int best_id = INT32_MAX;
  for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
    const float s = scores[i];
    if (s > best || (s == best && i < best_id)) {
      best = s;
      best_id = i;
    }
  }
  const float top = block_max(best, sh.f_scratch);
  return block_min_int(best == top ? best_id : INT32_MAX, sh);
}

// exp(score - max) in double (softmax_terms) for survivors; 0 for removed tokens.
__device__ __forceinline__ double softmax_weight(float s, float max_score) {
  return survives(s) ? exp(static_cast<double>(s) - static_cast<double>(max_score)) : 0.0;
}

__device__ float survivor_max(const float* scores, int vocab, SharedState& sh) {
  float m = -INFINITY;
  for (int i = threadIdx.x; i < vocab; i += blockDim.x)
    if (survives(scores[i])) m = fmaxf(m, scores[i]);
  return block_max(m, sh.f_scratch);
}

__device__ double weight_sum(const float* scores, int vocab, float max_score, SharedState& sh) {
  double total = 0.0;
  for (int i = threadIdx.x; i < vocab; i += blockDim.x) total += softmax_weight(scores[i], max_score);
  return block_sum(total, sh.d_scratch);
}

// TopKLogitsWarper: removes scores strictly below the k-th largest (ties with it survive).
__device__ void apply_top_k(float* scores, int vocab, int top_k, SharedState& sh) {
  uint32_t prefix = 0, mask = 0;
  if (threadIdx.x == 0) sh.remaining = top_k;
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (int b = threadIdx.x; b < 256; b += blockDim.x) sh.count_hist[b] = 0;
    __syncthreads();
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
      const float s = scores[i];
      if (isnan(s)) continue;
      const uint32_t key = ordered_key(s);
      if ((key & mask) == prefix) atomicAdd(&sh.count_hist[(key >> shift) & 0xffu], 1);
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      // From the largest digit down: the bin holding the remaining-th largest key.
      int cumulative = 0, digit = 0;
      for (int b = 255; b >= 0; --b) {
        if (cumulative + sh.count_hist[b] >= sh.remaining) {
          digit = b;
          break;
        }
        cumulative += sh.count_hist[b];
      }
      sh.remaining -= cumulative;
      sh.prefix = uint64_t(digit);
    }
    __syncthreads();
    prefix |= uint32_t(sh.prefix) << shift;
    mask |= 0xffu << shift;
    __syncthreads();  // sh.prefix is rewritten next pass
  }
  const float threshold = from_ordered_key(prefix);
  for (int i = threadIdx.x; i < vocab; i += blockDim.x)
    if (scores[i] < threshold) scores[i] = -INFINITY;
  __syncthreads();
}

// TopPLogitsWarper: in ascending (score, id) order, removes the longest prefix whose cumulative
// probability is <= 1 - top_p, never the last (most likely) token.
__device__ void apply_top_p(float* scores, int vocab, float top_p, SharedState& sh) {
  const float max_score = survivor_max(scores, vocab, sh);
  const double sum = weight_sum(scores, vocab, max_score, sh);
  const double removal_mass = 1.0 - static_cast<double>(top_p);
  uint64_t prefix = 0, mask = 0;
  if (threadIdx.x == 0) sh.below = 0.0;  // mass of keys below the current prefix's range
  for (int shift = 56; shift >= 0; shift -= 8) {
    for (int b = threadIdx.x; b < 256; b += blockDim.x) {
      sh.count_hist[b] = 0;
      sh.mass_hist[b] = 0ull;
    }
    __syncthreads();
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
      const float s = scores[i];
      if (!survives(s)) continue;
      const uint64_t key = (uint64_t(ordered_key(s)) << 32) | uint32_t(i);
      if ((key & mask) != prefix) continue;
      const int bin = int((key >> shift) & 0xffu);
      atomicAdd(&sh.count_hist[bin], 1);
      atomicAdd(&sh.mass_hist[bin], __double2ull_rn(softmax_weight(s, max_score) / sum * kMassOne));
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      // The first bin where the cumulative mass passes the removal mass; if none does (rounding
      // with a tiny top_p), the last non-empty bin, which leads to the most likely token.
      double cumulative = sh.below, before_last = sh.below;
      int digit = -1, last_nonempty = 0;
      for (int b = 0; b < 256; ++b) {
        if (sh.count_hist[b] == 0) continue;
        const double mass = static_cast<double>(sh.mass_hist[b]) / kMassOne;
        if (cumulative + mass > removal_mass) {
          digit = b;
          break;
        }
        before_last = cumulative;
        last_nonempty = b;
        cumulative += mass;
      }
      if (digit < 0) {
        digit = last_nonempty;
        cumulative = before_last;
      }
      sh.below = cumulative;
      sh.prefix = uint64_t(digit);
    }
    __syncthreads();
    prefix |= sh.prefix << shift;
    mask |= uint64_t(0xffu) << shift;
    __syncthreads();
  }
  // `prefix` is now the first kept key: everything strictly below it is removed.
  for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
    const float s = scores[i];
    if (!survives(s)) continue;
    const uint64_t key = (uint64_t(ordered_key(s)) << 32) | uint32_t(i);
    if (key < prefix) scores[i] = -INFINITY;
  }
  __syncthreads();
}

// MinPLogitsWarper: removes tokens whose probability is below min_p times the top probability.
__device__ void apply_min_p(float* scores, int vocab, float min_p, SharedState& sh) {
  const float max_score = survivor_max(scores, vocab, sh);
  const double sum = weight_sum(scores, vocab, max_score, sh);
  const double threshold = static_cast<double>(min_p) * (1.0 / sum);  // top weight is exp(0) = 1
  for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
    const float s = scores[i];
    if (survives(s) && softmax_weight(s, max_score) / sum < threshold) scores[i] = -INFINITY;
  }
  __syncthreads();
}

// Inverse CDF over ids in increasing order: each thread owns a contiguous chunk of ids, the
// chunk sums are prefix-summed, and the thread whose chunk crosses u finds the id.
__device__ int draw(const float* scores, int vocab, double u, SharedState& sh) {
  const float max_score = survivor_max(scores, vocab, sh);
  const double sum = weight_sum(scores, vocab, max_score, sh);
  const int chunk = (vocab + kThreads - 1) / kThreads;
  const int begin = min(vocab, int(threadIdx.x) * chunk), end = min(vocab, begin + chunk);
  double mine = 0.0;
  int last_possible = -1;
  for (int i = begin; i < end; ++i) {
    const double p = softmax_weight(scores[i], max_score) / sum;
    if (p > 0.0) {
      mine += p;
      last_possible = i;
    }
  }
  sh.chunk_prefix[threadIdx.x] = mine;
  __syncthreads();
  if (threadIdx.x == 0) {
    double running = 0.0;
    for (int t = 0; t < kThreads; ++t) {
      const double c = sh.chunk_prefix[t];
      sh.chunk_prefix[t] = running;
      running += c;
    }
  }
  __syncthreads();
  double cumulative = sh.chunk_prefix[threadIdx.x];
  int found = INT32_MAX;
  for (int i = begin; i < end; ++i) {
    const double p = softmax_weight(scores[i], max_score) / sum;
    if (p <= 0.0) continue;
    cumulative += p;
    if (u < cumulative) {
      found = i;
      break;
    }
  }
  const int first = block_min_int(found, sh);
  if (first != INT32_MAX) return first;
  return block_max_int(last_possible, sh);  // u a hair above the rounded total
}

__global__ void __launch_bounds__(kThreads)
    sample_kernel(const float* __restrict__ logits, int vocab, const int32_t* __restrict__ history, int n_history,
                  SamplingKernelParams p, float* __restrict__ scores, int32_t* __restrict__ result) {
  __shared__ SharedState sh;
  int first_nan = INT32_MAX;
  for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
    scores[i] = logits[i];
    if (isnan(logits[i])) first_nan = min(first_nan, i);
  }
  // sampler.cpp refuses NaN logits, naming the first: so does the device (kNanResult - id).
  first_nan = block_min_int(first_nan, sh);
  if (first_nan != INT32_MAX) {
    if (threadIdx.x == 0) *result = kNanResult - first_nan;
    return;
  }
  if (p.repetition_penalty != 1.0f) {
    // Every occurrence writes the same value (penalized from the original logit): duplicates
    // in the history are harmless.
    for (int k = threadIdx.x; k < n_history; k += blockDim.x) {
      const int id = history[k];
      if (id < 0 || id >= vocab) continue;
      const float logit = logits[id];
      scores[id] = logit < 0.0f ? logit * p.repetition_penalty : logit / p.repetition_penalty;
    }
    __syncthreads();
  }
  if (p.temperature == 0.0f) {
    const int id = block_argmax(scores, vocab, sh);
    if (threadIdx.x == 0) *result = id;
    return;
  }
  if (p.temperature != 1.0f) {
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) scores[i] = scores[i] / p.temperature;
    __syncthreads();
  }
  if (p.top_k > 0 && p.top_k < vocab) apply_top_k(scores, vocab, p.top_k, sh);
  int n_alive = 0;
  for (int i = threadIdx.x; i < vocab; i += blockDim.x) n_alive += survives(scores[i]) ? 1 : 0;
  n_alive = block_sum_int(n_alive, sh);
  if (n_alive == 0) {
    if (threadIdx.x == 0) *result = kAllMinusInfResult;
    return;
  }
  if (p.top_p < 1.0f && n_alive > 1) apply_top_p(scores, vocab, p.top_p, sh);
  if (p.min_p > 0.0f) apply_min_p(scores, vocab, p.min_p, sh);
  const int id = draw(scores, vocab, uniform01(p.seed, p.step), sh);
  if (threadIdx.x == 0) *result = id;
}

}  // namespace

size_t sampling_workspace_bytes(int vocab) { return size_t(vocab > 0 ? vocab : 0) * sizeof(float); }

cudaError_t launch_sample(const float* logits, int vocab, const int32_t* history, int n_history,
                          const SamplingKernelParams& params, void* workspace, int32_t* result, cudaStream_t stream) {
  if (vocab <= 0) return cudaErrorInvalidValue;
  return launch<sample_kernel>({1, kThreads, 0, stream}, logits, vocab, history, n_history, params,
                               static_cast<float*>(workspace), result);
}

}  // namespace lowbit::kernels
