// The one object that owns a CUDA device's state for lowbit: the device index, one stream every
// op is issued on, the cuBLAS / cuBLASLt handles and their workspace, and a checked allocator
// that turns "out of memory" into a DeviceError naming the allocation. Nothing CUDA-related is
// global: everything a kernel launch needs is reached from here.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime_api.h>

namespace lowbit {

// Throws DeviceError "<call> failed: <cudaErrorName> (<description>)" unless err == cudaSuccess.
void cuda_check(cudaError_t err, const char* call);
// Throws DeviceError "<call> failed: <CUBLAS_STATUS_...>" unless status == CUBLAS_STATUS_SUCCESS.
void cublas_check(cublasStatus_t status, const char* call);

// Checks a CUDA runtime call, naming it (its source text) in the error.
#define LOWBIT_CUDA_CHECK(call) ::lowbit::cuda_check((call), #call)
#define LOWBIT_CUBLAS_CHECK(call) ::lowbit::cublas_check((call), #call)

class CudaContext;

// One device allocation; frees itself and returns its bytes to the context's count.
class DeviceMemory {
 public:
  DeviceMemory() = default;
  DeviceMemory(CudaContext* ctx, void* ptr, size_t bytes) : ctx_(ctx), ptr_(ptr), bytes_(bytes) {}
  DeviceMemory(DeviceMemory&& o) noexcept { *this = std::move(o); }
  DeviceMemory& operator=(DeviceMemory&& o) noexcept;
  DeviceMemory(const DeviceMemory&) = delete;
  DeviceMemory& operator=(const DeviceMemory&) = delete;
  ~DeviceMemory() { release(); }

  template <typename T>
  T* as() const { return static_cast<T*>(ptr_); }
  void* get() const { return ptr_; }
  size_t bytes() const { return bytes_; }
  void release();

 private:
  CudaContext* ctx_ = nullptr;
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

// Page-locked host memory (for asynchronous copies the stream can run ahead of the host with).
class PinnedMemory {
 public:
  PinnedMemory() = default;
  explicit PinnedMemory(size_t bytes);
  PinnedMemory(PinnedMemory&& o) noexcept { *this = std::move(o); }
  PinnedMemory& operator=(PinnedMemory&& o) noexcept;
  PinnedMemory(const PinnedMemory&) = delete;
  PinnedMemory& operator=(const PinnedMemory&) = delete;
  ~PinnedMemory();
  template <typename T>
  T* as() const { return static_cast<T*>(ptr_); }
  size_t bytes() const { return bytes_; }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

struct CudaContextOptions {
  int device_index = 0;
  // 0 = the whole device. Otherwise allocations past this many bytes fail as if the device were
  // full: lets tests (and a future --gpu-memory flag) exercise the out-of-memory path.
  size_t max_bytes = 0;
  // cuBLAS workspace. Given explicitly so that cuBLAS never allocates during CUDA graph capture.
  size_t cublas_workspace_bytes = size_t(32) << 20;
};

class CudaContext {
 public:
  explicit CudaContext(const CudaContextOptions& opts);
  ~CudaContext();
  CudaContext(const CudaContext&) = delete;
  CudaContext& operator=(const CudaContext&) = delete;

  int device_index() const { return opts_.device_index; }
  const cudaDeviceProp& properties() const { return props_; }
  cudaStream_t stream() const { return stream_; }
  cublasHandle_t cublas() const { return cublas_; }
  // Created with the context but not called by any kernel yet: kept for the FP8 prompt GEMMs
  // (cublasLtMatmul), which only cuBLASLt offers.
  cublasLtHandle_t cublas_lt() const { return cublas_lt_; }

  // Device memory of `bytes`, zero-filled. `what` names it in the out-of-memory error:
  // "out of GPU memory allocating <what>: need N MiB, M MiB free".
  DeviceMemory allocate(size_t bytes, const std::string& what);
  size_t peak_bytes_in_use() const { return peak_bytes_in_use_; }

  void synchronize();

 private:
  friend class DeviceMemory;
  void on_free(size_t bytes) { bytes_in_use_ -= bytes; }

  CudaContextOptions opts_;
  cudaDeviceProp props_{};
  cudaStream_t stream_ = nullptr;
  cublasHandle_t cublas_ = nullptr;
  cublasLtHandle_t cublas_lt_ = nullptr;
  DeviceMemory cublas_workspace_;
  size_t bytes_in_use_ = 0, peak_bytes_in_use_ = 0;
};

}  // namespace lowbit
