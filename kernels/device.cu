// Device discovery, kept in CUDA so the C++ side needs only this header.
#include "kernels/device.cuh"

#include <cuda_runtime.h>

namespace lowbit::cuda {

int device_count() {
  int count = 0;
  // With no driver this returns cudaErrorInsufficientDriver (35) and leaves count untouched.
  if (cudaGetDeviceCount(&count) != cudaSuccess) return 0;
  return count;
}

}  // namespace lowbit::cuda
