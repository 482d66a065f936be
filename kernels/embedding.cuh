// Embedding gather. Each launcher in kernels/ returns cudaGetLastError() of its launch.
#pragma once
#include <cstdint>

#include <cuda_runtime_api.h>

namespace lowbit::kernels {

// out[t, :] = table[tokens[t], :] widened to fp32. table is [vocab, dim] row-major: bf16 bit
// patterns (table_is_bf16) or fp32. Token ids are checked on the host before the launch.
cudaError_t launch_embedding(const void* table, bool table_is_bf16, const int32_t* tokens, int n_tokens, int dim,
                             float* out, cudaStream_t stream);

}  // namespace lowbit::kernels
