#include "generate/perplexity.h"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

#include "core/error.h"

namespace lowbit {

std::vector<PerplexityWindow> plan_windows(int64_t n_tokens, int window, int stride) {
  if (window < 2) throw UsageError(fmt::format("perplexity window {}: must be at least 2 tokens", window));
  // With stride >= window a window would start with a token whose context is in no window, and
  // that token would go unscored (HF's loop silently drops it); every token is scored only when
  // consecutive windows overlap.
  if (stride < 1 || stride >= window)
    throw UsageError(fmt::format("perplexity stride {}: must be in [1, window - 1 = {}]", stride, window - 1));
  std::vector<PerplexityWindow> plan;
  int64_t prev_end = 0;
  for (int64_t begin = 0; begin < n_tokens; begin += stride) {
    const int64_t end = std::min(begin + window, n_tokens);
    const int64_t first_target = std::max(prev_end, begin + 1);
    if (first_target < end) plan.push_back({begin, end, first_target});
    prev_end = end;
    if (end == n_tokens) break;
  }
  return plan;
}

void log_softmax(const float* logits, int n, double* out) {
  double max = -INFINITY;
  for (int i = 0; i < n; ++i) max = std::max(max, double(logits[i]));
  double sum = 0;
  for (int i = 0; i < n; ++i) sum += std::exp(double(logits[i]) - max);
  const double log_z = max + std::log(sum);
  for (int i = 0; i < n; ++i) out[i] = double(logits[i]) - log_z;
}

namespace {

int argmax(const float* x, int n) {
  return int(std::max_element(x, x + n) - x);
}

// Logits of the rows that predict window w's targets: row r predicts token first_target + r.
std::vector<float> window_logits(Model& model, const std::vector<int32_t>& tokens, const PerplexityWindow& w) {
  TokenBatch batch;
  for (int64_t i = w.begin; i < w.end; ++i) {
    batch.tokens.push_back(tokens[size_t(i)]);
    batch.positions.push_back(int32_t(i - w.begin));
    batch.slots.push_back(0);
  }
  std::vector<int> rows;
  for (int64_t t = w.first_target; t < w.end; ++t) rows.push_back(int(t - 1 - w.begin));
  std::vector<float> logits(rows.size() * size_t(model.config().vocab_size));
  model.forward(batch, rows, logits.data());
  return logits;
}

}  // namespace

PerplexityResult compute_perplexity(Model& model, const std::vector<int32_t>& tokens, int window, int stride,
                                    Model* base, const PerplexityProgress& progress) {
  if (tokens.size() < 2)
    throw InputError(fmt::format("perplexity needs at least 2 tokens, got {}", tokens.size()));
  const int vocab = model.config().vocab_size;
  for (Model* m : {&model, base}) {
    if (m && window > m->max_context())
      throw UsageError(fmt::format("perplexity window {}: longer than the model's context ({})", window,
                                   m->max_context()));
  }
  if (base && base->config().vocab_size != vocab)
    throw InputError(fmt::format("base model vocabulary {} differs from the model's {}", base->config().vocab_size,
                                 vocab));
  for (int32_t t : tokens)
    if (t < 0 || t >= vocab) throw InputError(fmt::format("token id {} outside the vocabulary of {}", t, vocab));

  const std::vector<PerplexityWindow> plan = plan_windows(int64_t(tokens.size()), window, stride);
  PerplexityResult r;
  r.has_base = base != nullptr;
  r.windows = int(plan.size());
  double nll = 0, base_nll = 0, kl = 0;
  int64_t agree = 0;
  std::vector<double> lp(static_cast<size_t>(vocab)), base_lp(static_cast<size_t>(vocab));
  for (size_t wi = 0; wi < plan.size(); ++wi) {
    const PerplexityWindow& w = plan[wi];
    const std::vector<float> logits = window_logits(model, tokens, w);
    const std::vector<float> base_logits = base ? window_logits(*base, tokens, w) : std::vector<float>{};
    for (int64_t t = w.first_target; t < w.end; ++t) {
      const size_t row = size_t(t - w.first_target) * size_t(vocab);
      const size_t target = size_t(tokens[size_t(t)]);
      log_softmax(logits.data() + row, vocab, lp.data());
      nll -= lp[target];
      if (base) {
        log_softmax(base_logits.data() + row, vocab, base_lp.data());
        base_nll -= base_lp[target];
        double row_kl = 0;
        for (int i = 0; i < vocab; ++i) row_kl += std::exp(base_lp[size_t(i)]) * (base_lp[size_t(i)] - lp[size_t(i)]);
        kl += row_kl;
        agree += argmax(logits.data() + row, vocab) == argmax(base_logits.data() + row, vocab);
      }
      ++r.tokens_scored;
    }
    if (progress) progress(int(wi + 1), int(plan.size()));
  }
  const double n = double(r.tokens_scored);
  r.mean_nll = nll / n;
  r.perplexity = std::exp(r.mean_nll);
  if (base) {
    r.base_mean_nll = base_nll / n;
    r.base_perplexity = std::exp(r.base_mean_nll);
    r.mean_kl = kl / n;
    r.top1_agreement = double(agree) / n;
  }
  return r;
}

}  // namespace lowbit
