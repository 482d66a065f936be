// Prefill then decode, one sequence at a time (batched decode over slots comes with the batch
// command). Kept small: prefill() and decode_step() are the two things a reader looks for.
#pragma once
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "model/model.h"
#include "sampler/sampler.h"

namespace lowbit {

struct GenerationRequest {
  std::vector<int32_t> prompt;       // token ids, BOS included when wanted
  SamplingParams sampling;
  int max_new_tokens = 256;
  std::vector<int32_t> stop_ids;     // EOS ids: generation stops after emitting one
  int slot = 0;
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

// Called with each new token; return false to stop (e.g. on SIGINT).
using TokenCallback = std::function<bool(int32_t)>;

// Throws InputError when the prompt is empty or does not fit the model's context.
GenerationResult generate(Model& model, const GenerationRequest& req, const TokenCallback& on_token);

// The prompt as one batch: its tokens at positions 0, 1, ... of `slot`.
TokenBatch prefill_batch(const std::vector<int32_t>& prompt, int slot);
// Logits of the last prompt token after prefilling the prompt into `slot` from position 0.
std::vector<float> prefill(Model& model, const std::vector<int32_t>& prompt, int slot);
// Feeds one token at `position` and returns the next logits.
std::vector<float> decode_step(Model& model, int32_t token, int position, int slot);

// Whether a request needs its logits on the host (logprobs or a logits inspector).
bool needs_host_logits(const GenerationRequest& req);
// One token for `req` from a row of host logits at draw `step`: runs the inspector, samples with
// sampler.h, and appends the log-probability when asked.
int32_t sample_on_host(const GenerationRequest& req, std::span<const float> logits, std::span<const int32_t> history,
                       uint64_t step, GenerationResult& result);

}  // namespace lowbit
