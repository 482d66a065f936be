// The one way kernels are launched, in both builds: nvcc's <<<grid, block, shared, stream>>>, or
// the emulated device's launcher (emulated_gpu/, -Dgpu_emulation=true), which runs the same
// kernel on the CPU. Returns what cudaGetLastError() returns after the launch.
//   return launch<my_kernel<T, 4>>({grid, block, shared_bytes, stream}, args...);
#pragma once
#include <cstddef>
#include <utility>

#include <cuda_runtime.h>

namespace lowbit::kernels {

struct LaunchShape {
  dim3 grid;
  dim3 block;
  size_t shared_bytes = 0;
  cudaStream_t stream = nullptr;
};

template <auto Kernel, typename... Args>
cudaError_t launch(const LaunchShape& s, Args&&... args) {
#if LOWBIT_EMULATED_GPU
  return ::lowbit_emu::launch<Kernel>(s.grid, s.block, s.shared_bytes, s.stream, std::forward<Args>(args)...);
#else
  Kernel<<<s.grid, s.block, s.shared_bytes, s.stream>>>(std::forward<Args>(args)...);
  return cudaGetLastError();
#endif
}

}  // namespace lowbit::kernels
