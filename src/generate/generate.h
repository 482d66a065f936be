// The one generation engine: every command that generates (run, batch, sweep, bench) is built
// from the pieces declared here, so the prompt check, the prefill, the decode step and the stop
// rules are written once.
//
//   Sequence s(req, slot);         one sequence on one KV slot: its tokens, position, result
//   prefill(model, s)              the prompt forward + the first token
//   decode_step(model, {&s, ...})  one token per sequence, all in one forward
//   take_token(model, s, tok)      the stop rules; true when the sequence is finished
//
// generate() runs one sequence with them; study/batch_generate.h runs many over the KV slots.
#pragma once
#include <chrono>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "model/model.h"
#include "sampler/sampler.h"

namespace lowbit {

struct GenerationRequest {
  std::vector<int32_t> prompt;       // token ids, BOS included when wanted
  SamplingParams sampling;
  int max_new_tokens = 256;
  std::vector<int32_t> stop_ids;     // EOS ids: generation stops after emitting one
  int slot = 0;                      // the KV slot generate() uses (batched generation picks its own)
  // Fill GenerationResult::logprobs. Like inspect_logits, this brings each step's logits to the
  // host and samples there with sampler.h (the same draw the backend's sampler makes).
  bool logprobs = false;
  // Called with each step's raw logits and the tokens so far (prompt included), before sampling.
  std::function<void(std::span<const float> logits, std::span<const int32_t> history)> inspect_logits;
  // Called after each token that is not a stop id with every generated token so far; true ends
  // the run with StopReason::stop_string (stop strings: the caller decodes and matches).
  std::function<bool(std::span<const int32_t> generated)> stop_after;
};

enum class StopReason { eos, length, context, interrupted, stop_string };
const char* stop_reason_name(StopReason r);

struct GenerationResult {
  std::vector<int32_t> tokens;  // generated ids (a stop id included when it ended the run)
  StopReason stop = StopReason::length;
  double prefill_seconds = 0;   // prompt forward + first sample = time to first token
  double decode_seconds = 0;    // every later token
  int prompt_tokens = 0;
  std::vector<double> logprobs; // with req.logprobs: log p(token) under the raw logits, per token (nats)
  double decode_tokens_per_second() const;
};

// Why a prompt of n_tokens cannot be generated from in a context of `context` positions (it must
// leave one for the first generated token): "the prompt encodes to no tokens", "the prompt has N
// tokens but the context holds M (<hint>)"; empty when it fits.
std::string prompt_problem(size_t n_tokens, int context, std::string_view hint = "use --ctx");

// One sequence being generated on KV slot `slot`: the request, the tokens so far and its result.
struct Sequence {
  using Clock = std::chrono::steady_clock;
  Sequence(const GenerationRequest& request, int kv_slot);

  const GenerationRequest* req;
  int slot;
  std::vector<int32_t> history;  // prompt + generated: the repetition penalty's window
  int position;                  // where the next fed token goes
  GenerationResult result;
  Clock::time_point start, first_token;

  // What the next token is drawn with: the settings, the history and the draw number (tokens so far).
  SampleSpec next_spec() const;
};

// Feeds s's prompt into its slot at positions 0, 1, ... and returns the first token: drawn on the
// backend (on a GPU only the id comes back), or on the host when the request needs its logits.
// Records the time to first token.
int32_t prefill(Model& model, Sequence& s);
// One decode step: each sequence's last token at its position in its slot, all in one forward;
// returns each one's next token. When any of them needs host logits, every row's logits come to
// the host and are sampled there (sampler.h, the draw the backend would make).
std::vector<int32_t> decode_step(Model& model, std::span<Sequence* const> seqs);
// Takes `tok` as s's next token and applies the stop rules, in this order: a stop id (eos), the
// caller's keep_going false (interrupted), stop_after (stop_string), max_new_tokens reached
// (length), the context full (context). True when the sequence is finished; result.stop says why.
bool take_token(const Model& model, Sequence& s, int32_t tok, bool keep_going = true);

// Called with each new token; return false to stop (e.g. on SIGINT).
using TokenCallback = std::function<bool(int32_t)>;

// One sequence from its prompt to a stop rule, on KV slot req.slot. Throws InputError when the
// prompt is empty or does not fit the model's context.
GenerationResult generate(Model& model, const GenerationRequest& req, const TokenCallback& on_token);

// The prompt as one batch: its tokens at positions 0, 1, ... of `slot`.
TokenBatch prefill_batch(const std::vector<int32_t>& prompt, int slot);

// Whether a request needs its logits on the host (logprobs or a logits inspector).
bool needs_host_logits(const GenerationRequest& req);

}  // namespace lowbit
