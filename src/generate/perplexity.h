// Perplexity of a model over a token sequence with a sliding window, as in Hugging Face's
// perplexity guide: windows of `window` tokens advance by `stride`; each window is run from a
// fresh KV cache (positions restart at 0) and scores only the tokens the previous window did not,
// so every token after the first is scored exactly once, with up to window-1 tokens of context.
// Optionally compares against a base model (e.g. bf16 vs a 4-bit format): mean KL(base || model)
// over the same predictions and how often both pick the same top-1 token.
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "model/model.h"

namespace lowbit {

// One window: tokens [begin, end) are fed at positions 0..end-begin-1; targets
// [first_target, end) are scored, each predicted by the logits of the token before it.
struct PerplexityWindow {
  int64_t begin = 0, end = 0, first_target = 0;
};

// HF's loop: begin = 0, stride, 2*stride, ...; end = min(begin + window, n); targets start
// where the previous window ended (and never at a window's first token); stops at the window
// reaching the last token. Throws UsageError for window < 2 or stride outside [1, window - 1]
// (windows must overlap, else the first token of each later window would go unscored).
std::vector<PerplexityWindow> plan_windows(int64_t n_tokens, int window, int stride);

struct PerplexityResult {
  int64_t tokens_scored = 0;
  int windows = 0;
  double mean_nll = 0;        // nats per scored token
  double perplexity = 0;      // exp(mean_nll)
  bool has_base = false;      // the fields below are set only with a base model
  double base_mean_nll = 0;
  double base_perplexity = 0;
  double mean_kl = 0;         // mean over scored tokens of KL(base || model), nats
  double top1_agreement = 0;  // share of scored tokens where both argmaxes are equal
};

// Called after each window with (windows done, windows in all).
using PerplexityProgress = std::function<void(int, int)>;

// Scores `tokens` (at least 2) with `model`, and with `base` when given (same vocabulary; it
// sees exactly the same windows). Uses KV slot 0 of each model. Sums are in double and
// log-softmax subtracts the row maximum first, so large logits cannot overflow.
PerplexityResult compute_perplexity(Model& model, const std::vector<int32_t>& tokens, int window, int stride,
                                    Model* base = nullptr, const PerplexityProgress& progress = {});

// log_softmax(logits)[i] for a row of n logits, in double: x_i - max - log(sum_j exp(x_j - max)).
void log_softmax(const float* logits, int n, double* out);

}  // namespace lowbit
