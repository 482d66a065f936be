// Entry point of the [gpu] test binaries: with no CUDA device (or no driver) the binary exits
// 77, which meson counts as SKIP; otherwise it runs the Catch2 session.
#include "catch_session.h"
#include <cuda_runtime.h>
#include <cstdio>

int main(int argc, char** argv) {
  int count = 0;
  cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess || count == 0) {
    std::printf("no CUDA device (%s): skipping GPU tests\n",
                err != cudaSuccess ? cudaGetErrorName(err) : "count 0");
    return 77;
  }
  return lowbit::test::run_catch_session(argc, argv);
}
