#include "generate/generate.h"

#include <algorithm>
#include <chrono>

#include <fmt/format.h>

#include "core/error.h"

namespace lowbit {

namespace {
double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}
}  // namespace

const char* stop_reason_name(StopReason r) {
  switch (r) {
    case StopReason::eos: return "eos";
    case StopReason::length: return "length";
    case StopReason::context: return "context";
    case StopReason::interrupted: return "interrupted";
    case StopReason::stop_string: return "stop";
  }
  return "?";
}

double GenerationResult::decode_tokens_per_second() const {
  // The first token comes from prefill; the rest are decode steps.
  size_t steps = tokens.size() > 1 ? tokens.size() - 1 : 0;
  return decode_seconds > 0 ? double(steps) / decode_seconds : 0.0;
}

TokenBatch prefill_batch(const std::vector<int32_t>& prompt, int slot) {
  TokenBatch b;
  for (size_t i = 0; i < prompt.size(); ++i) {
    b.tokens.push_back(prompt[i]);
    b.positions.push_back(int32_t(i));
    b.slots.push_back(slot);
  }
  return b;
}

std::vector<float> prefill(Model& model, const std::vector<int32_t>& prompt, int slot) {
  const TokenBatch b = prefill_batch(prompt, slot);
  std::vector<float> logits(size_t(model.config().vocab_size));
  model.forward(b, {b.size() - 1}, logits.data());
  return logits;
}

std::vector<float> decode_step(Model& model, int32_t token, int position, int slot) {
  TokenBatch b{{token}, {position}, {slot}};
  std::vector<float> logits(size_t(model.config().vocab_size));
  model.forward(b, {0}, logits.data());
  return logits;
}

bool needs_host_logits(const GenerationRequest& req) { return req.logprobs || bool(req.inspect_logits); }

int32_t sample_on_host(const GenerationRequest& req, std::span<const float> logits, std::span<const int32_t> history,
                       uint64_t step, GenerationResult& result) {
  if (req.inspect_logits) req.inspect_logits(logits, history);
  const int32_t tok = sample_token(logits, req.sampling, history, step);
  if (req.logprobs) result.logprobs.push_back(log_softmax_at(logits, tok));
  return tok;
}

GenerationResult generate(Model& model, const GenerationRequest& req, const TokenCallback& on_token) {
  const int n_prompt = int(req.prompt.size());
  if (n_prompt == 0) throw InputError("the prompt is empty (no tokens to condition on)");
  if (n_prompt >= model.max_context())
    throw InputError(fmt::format("the prompt has {} tokens but the context holds {} (use --ctx, or --truncate)",
                                 n_prompt, model.max_context()));
  GenerationResult res;
  res.prompt_tokens = n_prompt;
  std::vector<int32_t> history = req.prompt;
  auto t0 = std::chrono::steady_clock::now();
  // The prompt first, then one token per step; the backend samples (on a GPU only the id returns).
  TokenBatch batch = prefill_batch(req.prompt, req.slot);
  std::vector<int> rows{n_prompt - 1};
  int position = n_prompt;
  const bool on_host = needs_host_logits(req);
  std::vector<float> logits(on_host ? size_t(model.config().vocab_size) : 0);
  for (int step = 0; step < req.max_new_tokens; ++step) {
    int32_t tok;
    if (on_host) {
      model.forward(batch, rows, logits.data());
      tok = sample_on_host(req, logits, history, uint64_t(step), res);
    } else {
      const SampleSpec spec{req.sampling, history, uint64_t(step)};
      tok = model.forward_sample(batch, rows, std::span<const SampleSpec>(&spec, 1))[0];
    }
    if (step == 0) {
      res.prefill_seconds = seconds_since(t0);
      t0 = std::chrono::steady_clock::now();
    }
    res.tokens.push_back(tok);
    history.push_back(tok);
    bool keep_going = on_token(tok);
    if (std::find(req.stop_ids.begin(), req.stop_ids.end(), tok) != req.stop_ids.end()) {
      res.stop = StopReason::eos;
      break;
    }
    if (!keep_going) {
      res.stop = StopReason::interrupted;
      break;
    }
    if (req.stop_after && req.stop_after(res.tokens)) {
      res.stop = StopReason::stop_string;
      break;
    }
    if (step + 1 == req.max_new_tokens) break;
    if (position >= model.max_context()) {
      res.stop = StopReason::context;
      break;
    }
    batch = TokenBatch{{tok}, {position++}, {req.slot}};
    rows = {0};
  }
  if (!res.tokens.empty()) res.decode_seconds = seconds_since(t0);
  return res;
}

}  // namespace lowbit
