// Sampling one token from one row of logits on the GPU, with the semantics of
// src/sampler/sampler.cpp: repetition penalty, temperature, top-k, top-p, min-p, softmax, then
// the first id (in increasing id order) whose cumulative probability exceeds
// u = uniform01(seed, step). uniform01 is reproduced bit for bit; the filters and the softmax
// use the same float/double arithmetic, with sums taken in parallel (different rounding order:
// only a token within ~1e-15 of a top-p/min-p threshold or of u can land differently).
#pragma once
#include <cstddef>
#include <cstdint>

#include <cuda_runtime_api.h>

namespace lowbit::kernels {

struct SamplingKernelParams {
  float temperature = 1.0f;  // 0 = greedy (argmax, lowest id on ties)
  int top_k = 0;
  float top_p = 1.0f;
  float min_p = 0.0f;
  float repetition_penalty = 1.0f;
  uint64_t seed = 0;
  uint64_t step = 0;
};

// Bytes of device workspace sample needs for a vocabulary of `vocab` tokens.
size_t sampling_workspace_bytes(int vocab);

// What *result holds besides an id: every logit -inf; a NaN logit at id i (kNanResult - i).
constexpr int32_t kAllMinusInfResult = -1;
constexpr int32_t kNanResult = -2;

// Writes the sampled id to *result (device memory), or one of the codes above.
// `history` (n_history ids, device memory) feeds the repetition penalty.
cudaError_t launch_sample(const float* logits, int vocab, const int32_t* history, int n_history,
                          const SamplingKernelParams& params, void* workspace, int32_t* result, cudaStream_t stream);

}  // namespace lowbit::kernels
