// Quantized weights on the CUDA backend: their device planes (each QuantizedTensor plane copied
// as is -- the CPU format files define the layouts the kernels read; W4A16's code words are
// interleaved after the copy) and the ONE table that maps a format to its kernels. Adding a
// format: its kernel file in kernels/, one line in kQuantizedKernels (cuda_quantized.cpp), its
// tests in tests/test_gpu_formats.cpp.
#pragma once
#include <cstddef>
#include <cstdint>

#include "backend/cuda_context.h"
#include "formats/format.h"
#include "kernels/dequant.cuh"
#include "kernels/gemv.cuh"

namespace lowbit {

// Every plane of a QuantizedTensor on the device; planes the format does not use stay empty.
// One change of layout: W4A16 codes with cols % 8 == 0 have their 32-bit words interleaved on
// the device for the decode GEMV (kernels/quant_math.h, w4a16_interleave); the download undoes it.
struct DeviceQuantizedPlanes {
  Format format = Format::F32;
  int64_t rows = 0, cols = 0;
  QuantOptions opts;
  DeviceMemory codes, scales, scale_codes, scales2, scales16, zeros;
  float offset = 0.0f;
  bool w4a16_interleaved = false;

  // Counted as weight_bytes() counts the host tensor (the -dq offset included).
  size_t bytes() const;
  kernels::QuantizedWeightView view() const;
};

// The kernels of one format (F32 and BF16 included). gemv: n_tokens <= kMaxGemvTokens;
// `workspace` holds at least gemv_workspace_bytes(n_tokens, cols) bytes (may be null when that is
// 0). dequantize: the whole weight to bf16 [rows, cols] for the prefill GEMM (null for F32 / BF16).
struct QuantizedKernels {
  Format format;
  cudaError_t (*gemv)(const kernels::QuantizedWeightView& w, const float* bias, const float* x, int n_tokens, float* y,
                      void* workspace, cudaStream_t stream);
  size_t (*gemv_workspace_bytes)(int n_tokens, int cols);
  cudaError_t (*dequantize)(const kernels::QuantizedWeightView& w, uint16_t* out, cudaStream_t stream);
  // Every part of a layer in one launch with a norm before and an output step after
  // (kernels/gemv.cuh's GemvSteps); null where the format has none (the steps then run apart).
  kernels::FusedGemvLauncher fused_gemv;
};

// The entry for f, or null for a format without CUDA kernels.
const QuantizedKernels* quantized_kernels(Format f);

// Copies every plane of q to the device (synchronously: q may die after the call); W4A16 codes
// with cols % 8 == 0 are interleaved there, in place, by a kernel on the same stream.
DeviceQuantizedPlanes upload_quantized_planes(CudaContext& ctx, const QuantizedTensor& q, const std::string& what);

// Quantizes host fp32 weights [rows, cols] to NF4 / FP4 / NF4-DQ / FP4-DQ on the device (for -dq
// the small absmax plane is double-quantized on the host by the reference code); the planes stay
// there. Throws DeviceError for other formats.
DeviceQuantizedPlanes quantize_four_bit_on_device(CudaContext& ctx, Format f, const float* host_weights, int64_t rows,
                                                  int64_t cols, const QuantOptions& opts);

// Copies the planes back into a host QuantizedTensor in the CPU layout (W4A16 codes
// de-interleaved on the host; tests compare it with quantize()).
QuantizedTensor download_quantized_planes(CudaContext& ctx, const DeviceQuantizedPlanes& planes);

}  // namespace lowbit
