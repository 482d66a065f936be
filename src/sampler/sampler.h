// Token sampling with transformers' order: repetition penalty, then temperature, top-k, top-p,
// min-p, softmax and a draw. Temperature 0 is greedy (argmax, lowest id on ties).
// The random draw at step s is a pure function of (seed, s) (a counter-based generator), so the
// same seed gives the same output on the CPU and on the GPU.
#pragma once
#include <cstdint>
#include <span>
#include <vector>

namespace lowbit {

struct SamplingParams {
  float temperature = 1.0f;         // 0 = greedy
  int top_k = 0;                    // 0 = off
  float top_p = 1.0f;               // 1 = off; must be in (0, 1]
  float min_p = 0.0f;               // 0 = off
  float repetition_penalty = 1.0f;  // 1 = off (CTRL-style, as transformers)
  uint64_t seed = 0;
};

// Throws UsageError naming the flag for out-of-range values (negative temperature, top-p outside
// (0,1], top-k < 0, min-p outside [0,1], repetition penalty <= 0).
void validate(const SamplingParams& p);

// Uniform double in [0, 1) for draw number `step` of stream `seed` (splitmix64-based).
double uniform01(uint64_t seed, uint64_t step);

// The probability of every token after all filters (zeros for filtered-out tokens). For
// temperature 0, a one-hot vector at the argmax. `history` feeds the repetition penalty.
std::vector<double> sampling_distribution(std::span<const float> logits, const SamplingParams& p,
                                          std::span<const int32_t> history);

// log softmax(logits)[id] of the raw logits (no penalty, temperature or filter), computed
// stably (max subtracted) in double: a token's log-probability under the model, in nats.
double log_softmax_at(std::span<const float> logits, int32_t id);

// Draws one token; `step` selects the random number (use the number of tokens generated so far).
int32_t sample_token(std::span<const float> logits, const SamplingParams& p,
                     std::span<const int32_t> history, uint64_t step);

}  // namespace lowbit
