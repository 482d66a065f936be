// Decode matrix-vector products, one template for every weight format (kernels/gemv_template.cuh):
//   y[t * out_stride + out_row(r)] = sum_c W[r, c] x[t, c] (+ bias[r]),  t < n_tokens <= kMaxGemvTokens
// W is a QuantizedWeightView (f32 and bf16: `codes` holds the fp32 / bf16 values, row-major);
// x is fp32 [n_tokens, cols]; y is fp32 with rows out_stride (0: w.rows) floats apart.
#pragma once
#include <cstddef>
#include <cstdint>

#include <cuda_runtime_api.h>

#include "formats/format_list.h"
#include "kernels/dequant.cuh"

namespace lowbit::kernels {

constexpr int kMaxGemvTokens = 16;

// Every format's GEMV launcher has this signature (the int8 formats use `workspace`:
// int8_gemv_workspace_bytes; the others take null).
using GemvLauncher = cudaError_t (*)(const QuantizedWeightView& w, const float* bias, const float* x, int n_tokens,
                                     float* y, void* workspace, cudaStream_t stream);

// A layer of up to three parts (checkpoint tensors quantized on their own, e.g. Llama's q, k, v
// in a 4-bit format) computed by one launch: part p holds rows [first_row[p], first_row[p + 1])
// of the `rows` the launch covers (its view's out_rows, when set, reorders them within that
// range); y rows are `ldy` floats apart.
struct GemvParts {
  static constexpr int kMax = 3;
  QuantizedWeightView part[kMax];
  int first_row[kMax] = {0, 0, 0};
  int n_parts = 0;
  int rows = 0, ldy = 0;
};

#if LOWBIT_EMULATED_GPU
inline auto emu_device_pointers(const GemvParts& p) {
  std::array<const void*, 7 * GemvParts::kMax> all{};
  for (int i = 0; i < GemvParts::kMax; ++i) {
    const auto one = emu_device_pointers(p.part[i]);
    for (size_t j = 0; j < one.size(); ++j) all[size_t(i) * one.size() + j] = one[j];
  }
  return all;
}
#endif

// What a fused GEMV does around the product (CudaBackend::linear), for n_tokens <= kMaxFusedTokens:
//  in:  norm_weight set: x is normalized per token first, in the block (RMSNorm, or LayerNorm with
//       norm_bias), as norm.cu computes it up to the order of the reduction;
//  out: kStore y = W x + b; kAccumulate y += W x + b (the residual add); kGelu y = gelu(W x + b);
//       kSwiglu y[t, i] = silu(g) * u with g, u rows i and hidden + i of W x + b (y rows of `hidden`).
constexpr int kMaxFusedTokens = 4;
enum class GemvOut { kStore, kAccumulate, kGelu, kSwiglu };
struct GemvSteps {
  const float* norm_weight = nullptr;
  const float* norm_bias = nullptr;
  bool layer_norm = false;
  float norm_eps = 0.0f;
  GemvOut out = GemvOut::kStore;
  int hidden = 0;
};
#if LOWBIT_EMULATED_GPU
inline auto emu_device_pointers(const GemvSteps& s) {
  return std::array<const void*, 2>{s.norm_weight, s.norm_bias};
}
#endif
// The most dynamic shared memory a fused launch's activations (normalized x, or int8 / e4m3 codes
// and scales) may take: without an opt-in a block gets 48 KB of shared memory in all, and the
// kernels' static tables and reduction scratch take at most 4 KB of it (nf4-dq's 1 KB map).
constexpr size_t kMaxNormedBytes = 44 * 1024;

// The fused launchers: cudaErrorNotSupported when this shape or these steps have no fused kernel
// (the caller then runs the steps apart).
using FusedGemvLauncher = cudaError_t (*)(const GemvParts& parts, const float* bias, const float* x, int n_tokens,
                                          float* y, const GemvSteps& steps, cudaStream_t stream);

// The cuBLAS GEMM the CUDA backend runs a prompt's matmul through, in the format's own arithmetic
// (src/backend/cuda_backend.cpp): none (the GEMV, 16 tokens per pass), fp32 (F32's true fp32
// GEMM), int8 (W8A8: per-token int8 activations, exact int32 IMMA sums), e4m3 (W8A8-fp8: per-token
// e4m3 activations on the fp8 tensor cores).
enum class PrefillGemm { none, fp32, int8, e4m3 };

// The kernels of one format (F32 and BF16 included), defined in the format's kernel file as
// kernels::<symbol>_kernels, one per line of src/formats/format_list.h; the CUDA backend reaches
// every format through them (src/backend/cuda_quantized.h).
struct QuantizedKernels {
  // Decode: n_tokens <= kMaxGemvTokens, or any n_tokens in one call where gemv_any_batch (the
  // activations quantized once for the whole batch: LLM.int8's outlier columns span it).
  // `workspace` holds at least gemv_workspace_bytes(n_tokens, cols) bytes (null where that is 0).
  GemvLauncher gemv;
  size_t (*gemv_workspace_bytes)(int n_tokens, int cols);
  bool gemv_any_batch;
  // The whole weight to bf16 [rows, cols] for --cuda-fast-prefill's bf16 GEMM (null for F32 and
  // BF16, whose values are a GEMM's input).
  cudaError_t (*dequantize)(const QuantizedWeightView& w, uint16_t* out, cudaStream_t stream);
  // Every part of a layer in one launch with a norm before and an output step after (GemvSteps).
  FusedGemvLauncher fused_gemv;
  // A layout change of the codes on the device after the upload, for the decode GEMV (W4A16: its
  // code words interleaved), and its inverse on a host copy; null: none. repack returns
  // cudaErrorNotSupported (and leaves the codes alone) where the shape keeps the CPU layout; the
  // view's `repacked` then stays false.
  cudaError_t (*repack)(uint8_t* codes, int64_t bytes, int rows, int cols, cudaStream_t stream);
  void (*unrepack)(uint8_t* host_codes, size_t bytes);
  PrefillGemm prefill_gemm;
  // The weight's own values are bf16 (BF16): --cuda-fast-prefill's bf16 GEMM reads them without a
  // dequantize pass.
  bool values_bf16;
};

inline size_t no_gemv_workspace(int, int) { return 0; }

#define LOWBIT_DECLARE_KERNELS(id, symbol) extern const QuantizedKernels symbol##_kernels;
LOWBIT_FORMATS(LOWBIT_DECLARE_KERNELS)
#undef LOWBIT_DECLARE_KERNELS

cudaError_t launch_gemv_f32(const QuantizedWeightView& w, const float* bias, const float* x, int n_tokens, float* y,
                            void* workspace, cudaStream_t stream);
cudaError_t launch_gemv_bf16(const QuantizedWeightView& w, const float* bias, const float* x, int n_tokens, float* y,
                             void* workspace, cudaStream_t stream);
cudaError_t launch_fused_gemv_f32(const GemvParts& parts, const float* bias, const float* x, int n_tokens, float* y,
                                  const GemvSteps& steps, cudaStream_t stream);
cudaError_t launch_fused_gemv_bf16(const GemvParts& parts, const float* bias, const float* x, int n_tokens, float* y,
                                   const GemvSteps& steps, cudaStream_t stream);

}  // namespace lowbit::kernels
