// Token sampling, matching transformers' generate() logits processors step for step:
//   RepetitionPenaltyLogitsProcessor, TemperatureLogitsWarper, TopKLogitsWarper,
//   TopPLogitsWarper, MinPLogitsWarper, softmax, draw.
// Scores after the penalty and temperature are kept in float, as transformers keeps them in the
// model's fp32 logits, so every threshold test sees the same values; the softmaxes and cumulative
// sums are done in double (transformers: float), which only matters for a token lying within
// rounding distance of a top-p or min-p threshold.
#include "sampler/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <functional>
#include <sstream>
#include <string>

#include "core/error.h"

namespace lowbit {
namespace {

// transformers' filter_value: a removed token gets -inf, so it has probability exactly 0.
constexpr float kRemoved = -std::numeric_limits<float>::infinity();

std::string flag_error(const char* flag, const char* requirement, double value) {
  std::ostringstream message;
  message << flag << " must be " << requirement << " (got " << value << ")";
  return message.str();
}

// The splitmix64 output function (Steele, Lea, Flood 2014): a bijection on 64 bits whose outputs
// look independent for consecutive inputs.
uint64_t splitmix64_mix(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// Returns the index of the largest value, the lowest index among equal maxima.
size_t argmax_lowest_index(std::span<const float> scores) {
  size_t best = 0;
  for (size_t i = 1; i < scores.size(); ++i) {
    if (scores[i] > scores[best]) best = i;
  }
  return best;
}

void check_logits(std::span<const float> logits) {
  if (logits.empty()) throw InputError("sampler: empty logits vector");
  for (size_t i = 0; i < logits.size(); ++i) {
    if (std::isnan(logits[i])) {
      throw InputError("sampler: logit of token " + std::to_string(i) + " is NaN");
    }
  }
}

// RepetitionPenaltyLogitsProcessor: every distinct id in the history is penalized once, from its
// original logit (transformers gathers, penalizes and scatters). Ids outside the vocabulary are
// ignored, as transformers' clamp-and-drop does for ids past the output vocabulary.
void apply_repetition_penalty(std::vector<float>& scores, std::span<const float> logits,
                              float penalty, std::span<const int32_t> history) {
  if (penalty == 1.0f) return;
  for (int32_t id : history) {
    if (id < 0 || static_cast<size_t>(id) >= scores.size()) continue;
    const float logit = logits[static_cast<size_t>(id)];
    scores[static_cast<size_t>(id)] = logit < 0.0f ? logit * penalty : logit / penalty;
  }
}

// TopKLogitsWarper: removes scores strictly below the k-th largest, so ties with the k-th
// largest all survive. nth_element keeps this O(vocab) even for a 128k vocabulary.
void apply_top_k(std::vector<float>& scores, int top_k) {
  if (top_k <= 0 || static_cast<size_t>(top_k) >= scores.size()) return;
  std::vector<float> copy(scores);
  const auto kth = copy.begin() + (top_k - 1);
  std::nth_element(copy.begin(), kth, copy.end(), std::greater<float>());
  const float threshold = *kth;
  for (float& s : scores) {
    if (s < threshold) s = kRemoved;
  }
}

// Ids of the tokens not yet removed; the later filters and the softmax only visit these, which
// after a small top-k is a handful out of the vocabulary.
std::vector<int32_t> surviving_ids(const std::vector<float>& scores) {
  std::vector<int32_t> ids;
  for (size_t i = 0; i < scores.size(); ++i) {
    if (scores[i] != kRemoved) ids.push_back(static_cast<int32_t>(i));
  }
  return ids;
}

// exp(score - max) for each surviving id and their sum: an unnormalized softmax in double.
struct SoftmaxTerms {
  std::vector<double> weight;  // [ids.size()], parallel to the ids
  double sum = 0.0;
};
SoftmaxTerms softmax_terms(const std::vector<float>& scores, std::span<const int32_t> ids) {
  SoftmaxTerms terms;
  float max_score = kRemoved;
  for (int32_t id : ids) max_score = std::max(max_score, scores[static_cast<size_t>(id)]);
  terms.weight.reserve(ids.size());
  for (int32_t id : ids) {
    const double w = std::exp(static_cast<double>(scores[static_cast<size_t>(id)]) - max_score);
    terms.weight.push_back(w);
    terms.sum += w;
  }
  return terms;
}

// TopPLogitsWarper: sorts ascending and removes every token whose cumulative probability (summed
// from the least likely up to and including itself) is <= 1 - top_p, always keeping the most
// likely one. That cumulative sum is 1 minus the mass of the tokens ranked above, so, walking
// from the top, a token is kept while the mass above it is < top_p. Walking from the top lets a
// partial sort of a growing prefix stand in for the full sort of up to 128k scores: the kept set
// is usually a few dozen tokens.
// Equal scores rank by id as a stable ascending sort would order them (torch's sort leaves it
// unspecified): within a tie straddling the threshold, lower ids are removed first.
// Only a mass within float rounding (~1e-7) of top_p can land differently than in transformers,
// which sums in float.
void apply_top_p(std::vector<float>& scores, std::vector<int32_t>& ids, float top_p) {
  if (top_p >= 1.0f || ids.size() <= 1) return;
  const SoftmaxTerms terms = softmax_terms(scores, ids);
  float max_score = kRemoved;
  for (int32_t id : ids) max_score = std::max(max_score, scores[static_cast<size_t>(id)]);
  auto ranks_higher = [&](int32_t a, int32_t b) {
    const float sa = scores[static_cast<size_t>(a)], sb = scores[static_cast<size_t>(b)];
    return sa > sb || (sa == sb && a > b);
  };
  const double keep_mass = static_cast<double>(top_p) * terms.sum;  // unnormalized, like weights
  size_t sorted = std::min<size_t>(ids.size(), 64);
  size_t kept = ids.size();
  for (;;) {
    std::partial_sort(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(sorted), ids.end(),
                      ranks_higher);
    double mass_above = 0.0;
    size_t rank = 0;
    for (; rank < sorted && mass_above < keep_mass; ++rank) {
      mass_above +=
          std::exp(static_cast<double>(scores[static_cast<size_t>(ids[rank])]) - max_score);
    }
    if (rank < sorted || sorted == ids.size()) {
      if (rank < sorted) kept = rank;
      break;
    }
    sorted = std::min(ids.size(), sorted * 8);  // the cut lies further down: sort more
  }
  for (size_t i = kept; i < ids.size(); ++i) scores[static_cast<size_t>(ids[i])] = kRemoved;
  ids.resize(kept);
  std::sort(ids.begin(), ids.end());
}

// MinPLogitsWarper: removes tokens whose probability is below min_p times the top probability.
// The most likely token always survives (its ratio is 1 >= min_p).
void apply_min_p(std::vector<float>& scores, std::vector<int32_t>& ids, float min_p) {
  if (min_p <= 0.0f || ids.empty()) return;
  const SoftmaxTerms terms = softmax_terms(scores, ids);
  const double max_prob = *std::max_element(terms.weight.begin(), terms.weight.end()) / terms.sum;
  const double threshold = static_cast<double>(min_p) * max_prob;
  std::vector<int32_t> kept;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (terms.weight[i] / terms.sum < threshold) {
      scores[static_cast<size_t>(ids[i])] = kRemoved;
    } else {
      kept.push_back(ids[i]);
    }
  }
  ids = std::move(kept);
}

}  // namespace

void validate(const SamplingParams& p) {
  // Each test is written so that NaN fails it.
  if (!(p.temperature >= 0.0f) || std::isinf(p.temperature)) {
    throw UsageError(flag_error("--temperature", "a finite number >= 0", p.temperature));
  }
  if (p.top_k < 0) throw UsageError(flag_error("--top-k", ">= 0 (0 = off)", p.top_k));
  if (!(p.top_p > 0.0f && p.top_p <= 1.0f)) {
    throw UsageError(flag_error("--top-p", "in (0, 1]", p.top_p));
  }
  if (!(p.min_p >= 0.0f && p.min_p <= 1.0f)) {
    throw UsageError(flag_error("--min-p", "in [0, 1]", p.min_p));
  }
  if (!(p.repetition_penalty > 0.0f) || std::isinf(p.repetition_penalty)) {
    throw UsageError(flag_error("--repeat-penalty", "a finite number > 0", p.repetition_penalty));
  }
}

// Output number `step` of a splitmix64 generator whose state starts at mix(seed): any draw is
// computed directly from (seed, step) with integer arithmetic, so a GPU kernel gets the same bits.
// Mixing the seed first keeps nearby seeds (0, 1, 2...) from giving shifted copies of one stream.
double uniform01(uint64_t seed, uint64_t step) {
  constexpr uint64_t kGoldenGamma = 0x9E3779B97F4A7C15ull;
  const uint64_t bits = splitmix64_mix(splitmix64_mix(seed) + (step + 1) * kGoldenGamma);
  return static_cast<double>(bits >> 11) * 0x1.0p-53;  // top 53 bits: exact, in [0, 1)
}

std::vector<double> sampling_distribution(std::span<const float> logits, const SamplingParams& p,
                                          std::span<const int32_t> history) {
  validate(p);
  check_logits(logits);
  std::vector<float> scores(logits.begin(), logits.end());
  apply_repetition_penalty(scores, logits, p.repetition_penalty, history);

  std::vector<double> probs(scores.size(), 0.0);
  if (p.temperature == 0.0f) {
    // Greedy: transformers applies the repetition penalty (a processor) but no warper.
    probs[argmax_lowest_index(scores)] = 1.0;
    return probs;
  }
  if (p.temperature != 1.0f) {
    for (float& s : scores) s /= p.temperature;
  }
  apply_top_k(scores, p.top_k);
  std::vector<int32_t> ids = surviving_ids(scores);
  if (ids.empty()) throw InputError("sampler: every logit is -inf");
  apply_top_p(scores, ids, p.top_p);
  apply_min_p(scores, ids, p.min_p);

  const SoftmaxTerms terms = softmax_terms(scores, ids);
  for (size_t i = 0; i < ids.size(); ++i) {
    probs[static_cast<size_t>(ids[i])] = terms.weight[i] / terms.sum;
  }
  return probs;
}

double log_softmax_at(std::span<const float> logits, int32_t id) {
  double max = -INFINITY;
  for (float v : logits) max = std::max(max, double(v));
  double sum = 0;
  for (float v : logits) sum += std::exp(double(v) - max);
  return double(logits[size_t(id)]) - max - std::log(sum);
}

// Inverts the CDF taken over token ids in increasing order: the token is the first id whose
// cumulative probability exceeds u. Id order (not probability order) makes the choice a simple
// function of (distribution, u) that a GPU kernel can reproduce with a prefix sum.
int32_t sample_token(std::span<const float> logits, const SamplingParams& p,
                     std::span<const int32_t> history, uint64_t step) {
  const std::vector<double> probs = sampling_distribution(logits, p, history);
  const double u = uniform01(p.seed, step);
  double cumulative = 0.0;
  size_t last_possible = 0;
  for (size_t i = 0; i < probs.size(); ++i) {
    if (probs[i] <= 0.0) continue;
    cumulative += probs[i];
    last_possible = i;
    if (u < cumulative) return static_cast<int32_t>(i);
  }
  // Rounding left the total a hair below u (u within ~1e-16 of 1): take the last possible token.
  return static_cast<int32_t>(last_possible);
}

}  // namespace lowbit
