// What the layout headers shared by the CPU reference and the CUDA kernels (layout_*.h) need:
// LOWBIT_HD (__host__ __device__ under nvcc, plain inline elsewhere) and the two IEEE roundings
// that must never be contracted into an FMA. No library includes beyond <cmath>.
#pragma once
#include <cmath>
#include <cstddef>
#include <cstdint>

#ifdef __CUDACC__
#define LOWBIT_HD __host__ __device__ __forceinline__
#else
#define LOWBIT_HD inline
#endif

namespace lowbit {

// fl(a * b) and fl(a + b) as separate IEEE roundings, never contracted into an FMA (device:
// __fmul_rn / __fadd_rn; host: a volatile product, as the CPU reference writes it).
LOWBIT_HD float mul_rn(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fmul_rn(a, b);
#else
  volatile float product = a * b;
  return product;
#endif
}
LOWBIT_HD float add_rn(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}

}  // namespace lowbit
