// Prefill then decode, one sequence at a time (batched decode over slots comes with the batch
// command). Kept small: prefill() and decode_step() are the two things a reader looks for.
#pragma once
#include <cstdint>
#include <functional>
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
};

enum class StopReason { eos, length, context, interrupted };
const char* stop_reason_name(StopReason r);

struct GenerationResult {
  std::vector<int32_t> tokens;  // generated ids (a stop id included when it ended the run)
  StopReason stop = StopReason::length;
  double prefill_seconds = 0;   // prompt forward + first sample = time to first token
  double decode_seconds = 0;    // every later token
  int prompt_tokens = 0;
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

}  // namespace lowbit
