// Quality of a quantized run against the bf16 run with the same prompt and settings. Pure
// functions (no model), so each is unit-tested on hand-computed cases; README "Study metrics"
// defines them for readers of runs.jsonl.
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "sampler/sampler.h"

namespace lowbit::study {

struct TokenAgreement {
  // Fraction of positions i < min(len a, len b) where a[i] == b[i]; 1 when both are empty,
  // 0 when exactly one is.
  double fraction = 1;
  // First index where the sequences differ (a length difference counts: min(len) when one is a
  // prefix of the other); -1 when they are identical.
  int64_t first_divergence = -1;
};
TokenAgreement token_agreement(std::span<const int32_t> a, std::span<const int32_t> b);

// Whitespace-separated words (runs of non-space characters).
std::vector<std::string_view> split_words(std::string_view text);
// Length of the longest common subsequence (O(len a * len b) time, O(len b) memory).
size_t lcs_length(std::span<const std::string_view> a, std::span<const std::string_view> b);
// ROUGE-L F1 over whitespace words: P = LCS/len(candidate), R = LCS/len(reference),
// F1 = 2PR/(P+R). 1 when both texts have no words, 0 when exactly one has none.
double rouge_l_f1(std::string_view reference, std::string_view candidate);

// Unique n-grams / total n-grams of the ids (0 when there are fewer than n ids).
double distinct_n(std::span<const int32_t> ids, int n);

// log softmax(logits)[id] (sampler.h; generation's --logprobs uses the same function).
using lowbit::log_softmax_at;

}  // namespace lowbit::study
