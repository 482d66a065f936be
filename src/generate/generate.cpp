#include "generate/generate.h"

#include <algorithm>

#include <fmt/format.h>

#include "core/error.h"

namespace lowbit {

namespace {

double seconds_between(Sequence::Clock::time_point a, Sequence::Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// One token for s from a row of host logits: runs the inspector, samples with sampler.h, and
// appends the log-probability when asked.
int32_t sample_on_host(Sequence& s, std::span<const float> logits) {
  const GenerationRequest& req = *s.req;
  if (req.inspect_logits) req.inspect_logits(logits, s.history);
  const int32_t tok = sample_token(logits, req.sampling, s.history, uint64_t(s.result.tokens.size()));
  if (req.logprobs) s.result.logprobs.push_back(log_softmax_at(logits, tok));
  return tok;
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

std::string prompt_problem(size_t n_tokens, int context, std::string_view hint) {
  if (n_tokens == 0) return "the prompt encodes to no tokens";
  if (n_tokens >= size_t(context))
    return fmt::format("the prompt has {} tokens but the context holds {} ({})", n_tokens, context, hint);
  return {};
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

bool needs_host_logits(const GenerationRequest& req) { return req.logprobs || bool(req.inspect_logits); }

Sequence::Sequence(const GenerationRequest& request, int kv_slot)
    : req(&request), slot(kv_slot), history(request.prompt), position(int(request.prompt.size())),
      start(Clock::now()) {
  result.prompt_tokens = int(request.prompt.size());
}

SampleSpec Sequence::next_spec() const { return SampleSpec{req->sampling, history, uint64_t(result.tokens.size())}; }

int32_t prefill(Model& model, Sequence& s) {
  const TokenBatch prompt = prefill_batch(s.req->prompt, s.slot);
  const std::vector<int> last{prompt.size() - 1};
  int32_t tok;
  if (needs_host_logits(*s.req)) {
    std::vector<float> logits(size_t(model.config().vocab_size));
    model.forward(prompt, last, logits.data());
    tok = sample_on_host(s, logits);
  } else {
    const SampleSpec spec = s.next_spec();
    tok = model.forward_sample(prompt, last, std::span<const SampleSpec>(&spec, 1))[0];
  }
  s.first_token = Sequence::Clock::now();
  s.result.prefill_seconds = seconds_between(s.start, s.first_token);
  return tok;
}

std::vector<int32_t> decode_step(Model& model, std::span<Sequence* const> seqs) {
  // Row r of the batch is seqs[r]'s last token.
  TokenBatch batch;
  std::vector<int> rows;
  std::vector<SampleSpec> specs;
  for (Sequence* s : seqs) {
    specs.push_back(s->next_spec());
    rows.push_back(batch.size());
    batch.tokens.push_back(s->result.tokens.back());
    batch.positions.push_back(s->position++);
    batch.slots.push_back(s->slot);
  }
  if (std::none_of(seqs.begin(), seqs.end(), [](const Sequence* s) { return needs_host_logits(*s->req); }))
    return model.forward_sample(batch, rows, specs);
  const size_t vocab = size_t(model.config().vocab_size);
  std::vector<float> logits(vocab * seqs.size());
  model.forward(batch, rows, logits.data());
  std::vector<int32_t> ids;
  for (size_t r = 0; r < seqs.size(); ++r)
    ids.push_back(sample_on_host(*seqs[r], std::span<const float>(logits.data() + r * vocab, vocab)));
  return ids;
}

bool take_token(const Model& model, Sequence& s, int32_t tok, bool keep_going) {
  const GenerationRequest& req = *s.req;
  s.result.tokens.push_back(tok);
  s.history.push_back(tok);
  const int generated = int(s.result.tokens.size());
  bool done = true;
  if (std::find(req.stop_ids.begin(), req.stop_ids.end(), tok) != req.stop_ids.end())
    s.result.stop = StopReason::eos;
  else if (!keep_going)
    s.result.stop = StopReason::interrupted;
  else if (req.stop_after && req.stop_after(s.result.tokens))
    s.result.stop = StopReason::stop_string;
  else if (generated >= req.max_new_tokens)
    s.result.stop = StopReason::length;
  else if (s.position >= model.max_context())
    s.result.stop = StopReason::context;
  else
    done = false;
  if (done) s.result.decode_seconds = seconds_between(s.first_token, Sequence::Clock::now());
  return done;
}

GenerationResult generate(Model& model, const GenerationRequest& req, const TokenCallback& on_token) {
  const std::string problem = prompt_problem(req.prompt.size(), model.max_context(), "use --ctx, or --truncate");
  if (!problem.empty()) throw InputError(problem);
  Sequence s(req, req.slot);
  if (req.max_new_tokens <= 0) return s.result;
  Sequence* const one[] = {&s};
  // The prompt first, then one token per step; the backend samples (on a GPU only the id returns).
  for (int32_t tok = prefill(model, s);; tok = decode_step(model, one)[0])
    if (take_token(model, s, tok, on_token(tok))) break;
  return std::move(s.result);
}

}  // namespace lowbit
