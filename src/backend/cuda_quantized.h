// Quantized weights on the CUDA backend: their device planes (each QuantizedTensor plane copied
// as is -- the CPU format files define the layouts the kernels read -- then repacked by the
// format's kernels where they ask for it) and the table of every format's kernels, built from
// src/formats/format_list.h (each format's kernels::<symbol>_kernels, kernels/gemv.cuh).
#pragma once
#include <cstddef>
#include <cstdint>

#include "backend/cuda_context.h"
#include "formats/format.h"
#include "kernels/dequant.cuh"
#include "kernels/gemv.cuh"

namespace lowbit {

using kernels::QuantizedKernels;

template <class>
using DevicePlaneMemory = DeviceMemory;

// Every plane of a QuantizedTensor on the device (planes.h); planes the format does not use stay
// empty. `repacked`: the format's QuantizedKernels::repack changed the codes' layout after the
// copy (W4A16 with cols % 8 == 0: its 32-bit words interleaved); the download undoes it.
struct DeviceQuantizedPlanes : Planes<DevicePlaneMemory> {
  Format format = Format::F32;
  int64_t rows = 0, cols = 0;
  QuantOptions opts;
  float offset = 0.0f;
  bool repacked = false;

  // Counted as weight_bytes() counts the host tensor (the -dq offset included).
  size_t bytes() const;
  kernels::QuantizedWeightView view() const;
};

// The entry for f, or null for a format without CUDA kernels.
const QuantizedKernels* quantized_kernels(Format f);

// Copies every plane of q to the device (synchronously: q may die after the call), then runs the
// format's repack there (in place, on the same stream) where it has one.
DeviceQuantizedPlanes upload_quantized_planes(CudaContext& ctx, const QuantizedTensor& q, const std::string& what);

// Quantizes host fp32 weights [rows, cols] to NF4 / FP4 / NF4-DQ / FP4-DQ on the device (for -dq
// the small absmax plane is double-quantized on the host by the reference code); the planes stay
// there. Throws DeviceError for other formats.
DeviceQuantizedPlanes quantize_four_bit_on_device(CudaContext& ctx, Format f, const float* host_weights, int64_t rows,
                                                  int64_t cols, const QuantOptions& opts);

// Copies the planes back into a host QuantizedTensor in the CPU layout (a repack undone on the
// host; tests compare it with quantize()).
QuantizedTensor download_quantized_planes(CudaContext& ctx, const DeviceQuantizedPlanes& planes);

}  // namespace lowbit
