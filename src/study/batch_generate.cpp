#include "study/batch_generate.h"

#include <algorithm>
#include <chrono>

#include <fmt/format.h>

#include "core/error.h"

namespace lowbit::study {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// A sequence occupying a KV slot.
struct ActiveSequence {
  size_t index = 0;
  const GenerationRequest* req = nullptr;
  std::vector<int32_t> history;  // prompt + generated, for the repetition penalty
  GenerationResult result;
  int position = 0;              // where the next fed token goes
  Clock::time_point start, first_token;
};

bool is_stop(const GenerationRequest& req, int32_t tok) {
  return std::find(req.stop_ids.begin(), req.stop_ids.end(), tok) != req.stop_ids.end();
}

// What the sequence's next token is drawn with: its settings, history and draw number.
SampleSpec next_spec(const ActiveSequence& s) {
  return SampleSpec{s.req->sampling, s.history, uint64_t(s.result.tokens.size())};
}

// Takes the sampled token `tok` as step `result.tokens.size()` and applies generate()'s stop
// rules. Returns true when the sequence is finished.
bool take_token(const Model& model, ActiveSequence& s, int32_t tok) {
  const GenerationRequest& req = *s.req;
  const int step = int(s.result.tokens.size());
  if (step == 0) {
    s.first_token = Clock::now();
    s.result.prefill_seconds = seconds_between(s.start, s.first_token);
  }
  s.result.tokens.push_back(tok);
  s.history.push_back(tok);
  if (is_stop(req, tok)) {
    s.result.stop = StopReason::eos;
    return true;
  }
  if (req.stop_after && req.stop_after(s.result.tokens)) {
    s.result.stop = StopReason::stop_string;
    return true;
  }
  if (step + 1 == req.max_new_tokens) {
    s.result.stop = StopReason::length;
    return true;
  }
  if (s.position >= model.max_context()) {
    s.result.stop = StopReason::context;
    return true;
  }
  return false;
}

}  // namespace

bool generate_batched(Model& model, std::span<const GenerationRequest> requests, const FinishedCallback& on_finished,
                      const std::function<bool()>& keep_going) {
  const int n_slots = model.options().n_slots;
  for (size_t i = 0; i < requests.size(); ++i) {
    const size_t n = requests[i].prompt.size();
    if (n == 0) throw InputError(fmt::format("request {}: the prompt is empty (no tokens to condition on)", i));
    if (int(n) >= model.max_context())
      throw InputError(fmt::format("request {}: the prompt has {} tokens but the context holds {} (use --ctx)", i, n,
                                   model.max_context()));
  }
  std::vector<std::optional<ActiveSequence>> slots(static_cast<size_t>(n_slots));
  size_t next = 0;
  // Requests that want their logits (logprobs, an inspector) make every decode step bring all
  // rows' logits to the host and sample there (sampler.h, the draw the backend would make).
  const bool any_on_host = std::any_of(requests.begin(), requests.end(), needs_host_logits);
  const size_t vocab = size_t(model.config().vocab_size);
  std::vector<float> logits(any_on_host ? vocab * size_t(n_slots) : 0);

  auto finish = [&](std::optional<ActiveSequence>& slot) {
    ActiveSequence& s = *slot;
    if (!s.result.tokens.empty()) s.result.decode_seconds = seconds_between(s.first_token, Clock::now());
    on_finished(s.index, s.result);
    slot.reset();
  };

  // Fills empty slots: prefill each new prompt alone (its own forward pass) and take its first
  // token. A request that finishes at once (max_new_tokens 0 or 1, EOS first) frees the slot again.
  auto refill = [&]() {
    for (int slot = 0; slot < n_slots; ++slot) {
      auto& cur = slots[size_t(slot)];
      while (!cur && next < requests.size()) {
        const GenerationRequest& req = requests[next];
        ActiveSequence s;
        s.index = next++;
        s.req = &req;
        s.history = req.prompt;
        s.result.prompt_tokens = int(req.prompt.size());
        s.start = Clock::now();
        s.position = int(req.prompt.size());
        cur.emplace(std::move(s));
        if (req.max_new_tokens <= 0) {
          finish(cur);
          continue;
        }
        const TokenBatch prompt = prefill_batch(req.prompt, slot);
        const std::vector<int> last{int(prompt.size()) - 1};
        int32_t tok;
        if (needs_host_logits(req)) {
          model.forward(prompt, last, logits.data());
          tok = sample_on_host(req, std::span<const float>(logits.data(), vocab), cur->history, 0, cur->result);
        } else {
          const SampleSpec spec = next_spec(*cur);
          tok = model.forward_sample(prompt, last, std::span<const SampleSpec>(&spec, 1))[0];
        }
        if (take_token(model, *cur, tok)) finish(cur);
      }
    }
  };

  refill();
  while (std::any_of(slots.begin(), slots.end(), [](const auto& s) { return s.has_value(); })) {
    if (!keep_going()) return false;
    // One decode step for every active slot: row r of the batch is slot active[r]'s last token.
    TokenBatch batch;
    std::vector<int> rows;
    std::vector<int> active;
    std::vector<SampleSpec> specs;
    for (int slot = 0; slot < n_slots; ++slot) {
      auto& cur = slots[size_t(slot)];
      if (!cur) continue;
      specs.push_back(next_spec(*cur));
      rows.push_back(batch.size());
      active.push_back(slot);
      batch.tokens.push_back(cur->result.tokens.back());
      batch.positions.push_back(cur->position++);
      batch.slots.push_back(slot);
    }
    std::vector<int32_t> ids;
    if (any_on_host) {
      model.forward(batch, rows, logits.data());
      for (size_t r = 0; r < active.size(); ++r) {
        ActiveSequence& cur = *slots[size_t(active[r])];
        ids.push_back(sample_on_host(*cur.req, std::span<const float>(logits.data() + r * vocab, vocab), cur.history,
                                     specs[r].step, cur.result));
      }
    } else {
      ids = model.forward_sample(batch, rows, specs);
    }
    for (size_t r = 0; r < active.size(); ++r) {
      auto& cur = slots[size_t(active[r])];
      if (take_token(model, *cur, ids[r])) finish(cur);
    }
    refill();
  }
  return true;
}

}  // namespace lowbit::study
