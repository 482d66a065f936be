// One block samples one row (1024 threads; 256 for vocabularies up to 16k, which a few passes of
// 256 threads cover as well and whose barriers cost a quarter) with sampler.cpp's semantics (repetition penalty,
// temperature, top-k, top-p, min-p, softmax in double, inverse-CDF draw over ids in increasing
// order with uniform01(seed, step)). Passes over the vocabulary are coalesced reads of at most
// 512 KB for a 128k vocabulary (from L2 after the first).
//  - top-k: the k-th largest score by four 8-bit digit passes of radix select over an
//    order-preserving key. Histogram adds are warp-aggregated (__match_any_sync: one atomic per
//    distinct bin per warp), because the top digits of a real row of logits fall in a few bins.
//  - Then the survivors are counted. At most one per thread (every top-k up to ~1000 at 1024
//    threads, the settings people use) are compacted in id order into shared memory, and top-p, min-p
//    and the draw work on that list: a token is kept by top-p while the weight of the tokens that
//    rank above it is < top_p * sum (the CPU's rule, each thread summing over the list), and the
//    draw is a block-wide prefix sum over the list.
//  - More survivors (top-k off over a large vocabulary): top-p by radix select over the 64-bit
//    (score key, id) key with a mass histogram per digit (fixed point, integer atomics, so the
//    sums do not depend on arrival order; warp-aggregated), and a draw in which each warp owns a
//    contiguous range of ids (coalesced), warp totals are prefix-summed, and the warp holding u
//    scans its range 32 ids at a time.
// Sums are taken in parallel, so only a token whose cumulative mass lies within rounding of a
// top-p/min-p cut or of u can come out differently from sample_token (kernels/sampling.cuh).
#include <cstdint>

#include "kernels/common.cuh"
#include "kernels/sampling.cuh"

namespace lowbit::kernels {

namespace {

constexpr int kSmallVocab = 16384;  // up to here a 256-thread block
// Top-p bin masses as 2^-62 fixed point: probabilities sum to <= 1 (+ rounding), far below the
// 4.0 an unsigned 64-bit value holds at this scale.
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

// kThreads: the block size; the compact path holds one survivor per thread.
template <int kThreads>
struct SharedState {
  static constexpr int kWarps = kThreads / 32;
  float f_scratch[32];
  double d_scratch[32];
  int i_scratch[32];
  int count_hist[256];
  unsigned long long mass_hist[256];     // fixed point, kMassOne = 1.0 (integer sums: order-free)
  unsigned long long lane_mass[kWarps][32];  // a warp's masses while its bin leaders sum them
  // The compact path: survivors in id order, one per thread.
  float c_score[kThreads];
  int c_id[kThreads];
  double c_prob[kThreads];
  uint64_t prefix;
  double below;
  int remaining, n_compact;
};

template <typename S>
__device__ int block_sum_int(int v, S& sh) { return block_sum(v, sh.i_scratch); }

template <typename S>
__device__ int block_min_int(int v, S& sh) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = min(v, __shfl_xor_sync(kFullWarp, v, o));
  if (lane == 0) sh.i_scratch[warp] = v;
  __syncthreads();
  int r = lane < S::kWarps ? sh.i_scratch[lane] : INT32_MAX;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) r = min(r, __shfl_xor_sync(kFullWarp, r, o));
  __syncthreads();
  return r;
}

template <typename S>
__device__ int block_max_int(int v, S& sh) { return -block_min_int(-v, sh); }

// Inclusive prefix sum of a warp's values, lane order.
template <typename T>
__device__ __forceinline__ T warp_inclusive_scan(T v) {
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const T other = __shfl_up_sync(kFullWarp, v, o);
    if (lane >= o) v += other;
  }
  return v;
}

// Exclusive prefix of one value per warp over the block's warps (warp order); every thread gets
// its warp's prefix; `total` the block's sum.
template <typename T>
__device__ T warp_prefix(T warp_value, T* scratch, T* total) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = int(blockDim.x >> 5);
  if (lane == 0) scratch[warp] = warp_value;
  __syncthreads();
  T v = lane < n_warps ? scratch[lane] : T(0);
  const T inclusive = warp_inclusive_scan(v);
  const T all = __shfl_sync(kFullWarp, inclusive, 31);
  const T mine = __shfl_sync(kFullWarp, inclusive - v, warp);
  __syncthreads();
  *total = all;
  return mine;
}

// Adds 1 to hist[bin] for every lane with bin >= 0: one atomic per distinct bin of the warp.
// Every lane of the warp calls it.
__device__ __forceinline__ void histogram_count(int* hist, int bin) {
  const unsigned same = __match_any_sync(kFullWarp, bin);
  if (bin >= 0 && int(threadIdx.x & 31) == __ffs(same) - 1) atomicAdd(&hist[bin], __popc(same));
}

// Adds `mass` to masses[bin] and 1 to counts[bin] for every lane with bin >= 0: the leader of
// each distinct bin sums its group's masses (staged in shared memory) and adds once.
__device__ __forceinline__ void histogram_mass(int* counts, unsigned long long* masses, int bin,
                                               unsigned long long mass, unsigned long long* lane_mass) {
  const int lane = threadIdx.x & 31;
  const unsigned same = __match_any_sync(kFullWarp, bin);
  lane_mass[lane] = mass;
  __syncwarp();
  if (bin >= 0 && lane == __ffs(same) - 1) {
    unsigned long long sum = 0;
    for (unsigned m = same; m != 0; m &= m - 1) sum += lane_mass[__ffs(m) - 1];
    atomicAdd(&counts[bin], __popc(same));
    atomicAdd(&masses[bin], sum);
  }
  __syncwarp();
}

// Largest score, lowest id among equals (sampler.cpp's argmax_lowest_index). NaN never wins.
template <typename S>
__device__ int block_argmax(const float* scores, int vocab, S& sh) {
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

template <typename S>
__device__ float survivor_max(const float* scores, int vocab, S& sh) {
  float m = -INFINITY;
  for (int i = threadIdx.x; i < vocab; i += blockDim.x)
    if (survives(scores[i])) m = fmaxf(m, scores[i]);
  return block_max(m, sh.f_scratch);
}

template <typename S>
__device__ double weight_sum(const float* scores, int vocab, float max_score, S& sh) {
  double total = 0.0;
  for (int i = threadIdx.x; i < vocab; i += blockDim.x) total += softmax_weight(scores[i], max_score);
  return block_sum(total, sh.d_scratch);
}

// TopKLogitsWarper: removes scores strictly below the k-th largest (ties with it survive).
template <typename S>
__device__ void apply_top_k(float* scores, int vocab, int top_k, S& sh) {
  uint32_t prefix = 0, mask = 0;
  if (threadIdx.x == 0) sh.remaining = top_k;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (int b = threadIdx.x; b < 256; b += blockDim.x) sh.count_hist[b] = 0;
    __syncthreads();
    // Warp-strided so that every lane of a warp runs the same number of iterations.
    for (int base = warp * 32; base < vocab; base += int(blockDim.x)) {
      const int i = base + lane;
      int bin = -1;
      if (i < vocab && !isnan(scores[i])) {
        const uint32_t key = ordered_key(scores[i]);
        if ((key & mask) == prefix) bin = int((key >> shift) & 0xffu);
      }
      histogram_count(sh.count_hist, bin);
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

// --- survivors <= 1024: top-p, min-p and the draw over a compact list -----------------------------

// Survivors in id order into sh.c_score / sh.c_id (n_alive <= the block size): each warp owns a
// contiguous range of ids, counts its survivors, and writes them after the warps before it.
template <typename S>
__device__ void compact_survivors(const float* scores, int vocab, S& sh) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int n_warps = int(blockDim.x >> 5);
  const int span = ((vocab + n_warps - 1) / n_warps + 31) / 32 * 32;
  const int begin = min(vocab, warp * span), end = min(vocab, begin + span);
  int count = 0;
  for (int base = begin; base < end; base += 32) {
    const int i = base + lane;
    count += __popc(__ballot_sync(kFullWarp, i < end && survives(scores[i])));
  }
  int total = 0;
  int at = warp_prefix(count, sh.i_scratch, &total);
  for (int base = begin; base < end; base += 32) {
    const int i = base + lane;
    const bool keep = i < end && survives(scores[i]);
    const unsigned ballot = __ballot_sync(kFullWarp, keep);
    if (keep) {
      const int slot = at + __popc(ballot & ((1u << lane) - 1u));
      sh.c_score[slot] = scores[i];
      sh.c_id[slot] = i;
    }
    at += __popc(ballot);
  }
  if (threadIdx.x == 0) sh.n_compact = total;
  __syncthreads();
}

// A ranks above B in the descending (score, id) order sampler.cpp's top-p walks.
__device__ __forceinline__ bool ranks_higher(float sa, int a, float sb, int b) { return sa > sb || (sa == sb && a > b); }

// Returns the sampled id, walking the compact list (thread t holds survivor t).
template <typename S>
__device__ int sample_compact(const SamplingKernelParams& p, S& sh) {
  const int n = sh.n_compact, t = threadIdx.x;
  const bool mine = t < n;
  const float s = mine ? sh.c_score[t] : -INFINITY;
  const int id = mine ? sh.c_id[t] : INT32_MAX;
  bool keep = mine;
  const float max_score = block_max(s, sh.f_scratch);
  double w = mine ? exp(static_cast<double>(s) - static_cast<double>(max_score)) : 0.0;
  if (p.top_p < 1.0f && n > 1) {
    // Kept while the weight of the tokens ranked above is < top_p * sum (the top one always).
    const double sum = block_sum(w, sh.d_scratch);
    const double keep_mass = static_cast<double>(p.top_p) * sum;
    if (mine) sh.c_prob[t] = w;
    __syncthreads();
    double above = 0.0;
    if (mine)
      for (int j = 0; j < n; ++j)
        if (ranks_higher(sh.c_score[j], sh.c_id[j], s, id)) above += sh.c_prob[j];
    keep = mine && above < keep_mass;
    __syncthreads();
  }
  if (p.min_p > 0.0f) {
    // The top token is kept by top-p, so the maximum weight is still exp(0) = 1.
    const double sum = block_sum(keep ? w : 0.0, sh.d_scratch);
    const double threshold = static_cast<double>(p.min_p) * (1.0 / sum);
    keep = keep && !(w / sum < threshold);
  }
  if (!keep) w = 0.0;
  const double sum = block_sum(w, sh.d_scratch);
  const double prob = w / sum;
  // Inclusive prefix over the list in id order: warp scans, then the warps' totals.
  const double in_warp = warp_inclusive_scan(prob);
  double total = 0.0;
  const double before = warp_prefix(__shfl_sync(kFullWarp, in_warp, 31), sh.d_scratch, &total);
  const double cumulative = before + in_warp;
  const double u = uniform01(p.seed, p.step);
  const int first = block_min_int(keep && u < cumulative ? id : INT32_MAX, sh);
  if (first != INT32_MAX) return first;
  return block_max_int(keep ? id : -1, sh);  // u a hair above the rounded total
}

// --- more survivors: radix top-p over the vocabulary and a warp-range draw ------------------------

// TopPLogitsWarper: in ascending (score, id) order, removes the longest prefix whose cumulative
// probability is <= 1 - top_p, never the last (most likely) token.
template <typename S>
__device__ void apply_top_p(float* scores, int vocab, float top_p, S& sh) {
  const float max_score = survivor_max(scores, vocab, sh);
  const double sum = weight_sum(scores, vocab, max_score, sh);
  const double removal_mass = 1.0 - static_cast<double>(top_p);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  uint64_t prefix = 0, mask = 0;
  if (threadIdx.x == 0) sh.below = 0.0;  // mass of keys below the current prefix's range
  for (int shift = 56; shift >= 0; shift -= 8) {
    for (int b = threadIdx.x; b < 256; b += blockDim.x) {
      sh.count_hist[b] = 0;
      sh.mass_hist[b] = 0ull;
    }
    __syncthreads();
    for (int base = warp * 32; base < vocab; base += int(blockDim.x)) {
      const int i = base + lane;
      int bin = -1;
      unsigned long long mass = 0;
      if (i < vocab && survives(scores[i])) {
        const uint64_t key = (uint64_t(ordered_key(scores[i])) << 32) | uint32_t(i);
        if ((key & mask) == prefix) {
          bin = int((key >> shift) & 0xffu);
          mass = __double2ull_rn(softmax_weight(scores[i], max_score) / sum * kMassOne);
        }
      }
      histogram_mass(sh.count_hist, sh.mass_hist, bin, mass, sh.lane_mass[warp]);
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
template <typename S>
__device__ void apply_min_p(float* scores, int vocab, float min_p, S& sh) {
  const float max_score = survivor_max(scores, vocab, sh);
  const double sum = weight_sum(scores, vocab, max_score, sh);
  const double threshold = static_cast<double>(min_p) * (1.0 / sum);  // top weight is exp(0) = 1
  for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
    const float s = scores[i];
    if (survives(s) && softmax_weight(s, max_score) / sum < threshold) scores[i] = -INFINITY;
  }
  __syncthreads();
}

// Inverse CDF over ids in increasing order. Each warp owns a contiguous range of ids and sums
// its probabilities (lanes reading consecutive ids); the warp totals are prefix-summed; the warp
// whose range holds u walks it 32 ids at a time with a warp scan.
template <typename S>
__device__ int draw(const float* scores, int vocab, double u, S& sh) {
  const float max_score = survivor_max(scores, vocab, sh);
  const double sum = weight_sum(scores, vocab, max_score, sh);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int n_warps = int(blockDim.x >> 5);
  const int span = ((vocab + n_warps - 1) / n_warps + 31) / 32 * 32;
  const int begin = min(vocab, warp * span), end = min(vocab, begin + span);
  double mine = 0.0;
  int last_possible = -1;
  for (int i = begin + lane; i < end; i += 32) {
    const double p = softmax_weight(scores[i], max_score) / sum;
    if (p > 0.0) {
      mine += p;
      last_possible = i;
    }
  }
  const double warp_total = warp_sum(mine);
  double total = 0.0;
  const double before = warp_prefix(warp_total, sh.d_scratch, &total);
  int found = INT32_MAX;
  if (u >= before && u < before + warp_total) {  // warp-uniform
    double running = before;
    for (int base = begin; base < end && found == INT32_MAX; base += 32) {
      const int i = base + lane;
      const double p = i < end ? softmax_weight(scores[i], max_score) / sum : 0.0;
      const double cumulative = running + warp_inclusive_scan(p);
      const unsigned crossed = __ballot_sync(kFullWarp, p > 0.0 && u < cumulative);
      if (crossed != 0) found = base + __ffs(crossed) - 1;
      running = __shfl_sync(kFullWarp, cumulative, 31);
    }
  }
  const int first = block_min_int(found, sh);
  if (first != INT32_MAX) return first;
  return block_max_int(last_possible, sh);  // u a hair above the rounded total
}

template <int kThreads>
__global__ void __launch_bounds__(kThreads)
    sample_kernel(const float* __restrict__ logits, int vocab, const int32_t* __restrict__ history, int n_history,
                  SamplingKernelParams p, float* __restrict__ scores, int32_t* __restrict__ result) {
  __shared__ SharedState<kThreads> sh;
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
  int id;
  if (n_alive <= kThreads) {
    compact_survivors(scores, vocab, sh);
    id = sample_compact(p, sh);
  } else {
    if (p.top_p < 1.0f) apply_top_p(scores, vocab, p.top_p, sh);
    if (p.min_p > 0.0f) apply_min_p(scores, vocab, p.min_p, sh);
    id = draw(scores, vocab, uniform01(p.seed, p.step), sh);
  }
  if (threadIdx.x == 0) *result = id;
}

}  // namespace

size_t sampling_workspace_bytes(int vocab) { return size_t(vocab > 0 ? vocab : 0) * sizeof(float); }

cudaError_t launch_sample(const float* logits, int vocab, const int32_t* history, int n_history,
                          const SamplingKernelParams& params, void* workspace, int32_t* result, cudaStream_t stream) {
  if (vocab <= 0) return cudaErrorInvalidValue;
  if (vocab <= kSmallVocab)
    return launch<sample_kernel<256>>({1, 256, 0, stream}, logits, vocab, history, n_history, params,
                                      static_cast<float*>(workspace), result);
  return launch<sample_kernel<1024>>({1, 1024, 0, stream}, logits, vocab, history, n_history, params,
                                     static_cast<float*>(workspace), result);
}

}  // namespace lowbit::kernels
