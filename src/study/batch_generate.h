// Batched decoding: up to n_slots sequences at once, one token per active slot per forward pass
// (a TokenBatch with one row per slot), each with its own position, sampling parameters and
// seed. A slot is refilled with the next request as soon as its sequence finishes.
//
// Each sequence follows generate()'s rules exactly (same stop reasons, draw s is (seed, s)), so a
// request gives the same tokens batched or alone, as long as the format's matmul treats token
// rows independently: true for every format except int8, whose LLM.int8 outlier columns are
// chosen from the whole batch of activations (as bitsandbytes does).
#pragma once
#include <functional>
#include <optional>
#include <span>

#include "generate/generate.h"

namespace lowbit::study {

// Called when request `index` finishes (in completion order, not request order).
using FinishedCallback = std::function<void(size_t index, const GenerationResult& result)>;

// Runs every request (their `slot` fields are ignored) on the model's n_slots KV slots. Stops
// early, leaving unfinished requests unreported, when keep_going() returns false (polled once per
// decode step); returns false then. Throws InputError for an empty or too-long prompt.
bool generate_batched(Model& model, std::span<const GenerationRequest> requests, const FinishedCallback& on_finished,
                      const std::function<bool()>& keep_going);

}  // namespace lowbit::study
