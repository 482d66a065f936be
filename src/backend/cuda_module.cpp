// The CUDA backend as a module (liblowbit_cuda.so) that the lowbit binary loads only when a run
// may use CUDA (backend.cpp, LOWBIT_CUDA_MODULE): a CPU-only run neither maps cudart, cuBLAS and
// cuBLASLt nor pays their start-up. The binary is linked with --export-dynamic, so the lowbit
// code in this module binds to the binary's copy (one logger, one set of globals).
#include "backend/cuda_backend.h"
#include "kernels/device.cuh"

extern "C" __attribute__((visibility("default"))) int lowbit_cuda_device_count() {
  return lowbit::cuda::device_count();
}

// Ownership passes to the caller. Exceptions (DeviceError, UsageError) cross the boundary as
// usual: one libstdc++, the binary's type information.
extern "C" __attribute__((visibility("default"))) lowbit::Backend* lowbit_make_cuda_backend(int device_index,
                                                                                          size_t memory_cap_bytes,
                                                                                          bool fast_prefill) {
  return lowbit::make_cuda_backend(device_index, memory_cap_bytes, fast_prefill).release();
}
