#include "backend/cuda_context.h"

#include <algorithm>
#include <utility>

#include <fmt/format.h>

#include "core/error.h"

namespace lowbit {

void cuda_check(cudaError_t err, const char* call) {
  if (err == cudaSuccess) return;
  throw DeviceError(fmt::format("{} failed: {} ({})", call, cudaGetErrorName(err), cudaGetErrorString(err)));
}

void cublas_check(cublasStatus_t status, const char* call) {
  if (status == CUBLAS_STATUS_SUCCESS) return;
  throw DeviceError(fmt::format("{} failed: {}", call, cublasGetStatusName(status)));
}

DeviceMemory& DeviceMemory::operator=(DeviceMemory&& o) noexcept {
  if (this != &o) {
    release();
    ctx_ = std::exchange(o.ctx_, nullptr);
    ptr_ = std::exchange(o.ptr_, nullptr);
    bytes_ = std::exchange(o.bytes_, 0);
  }
  return *this;
}

void DeviceMemory::release() {
  if (ptr_ != nullptr) {
    cudaFree(ptr_);  // a destructor must not throw; a failing free leaks at worst
    if (ctx_ != nullptr) ctx_->on_free(bytes_);
  }
  ctx_ = nullptr;
  ptr_ = nullptr;
  bytes_ = 0;
}

PinnedMemory::PinnedMemory(size_t bytes) : bytes_(bytes) {
  if (bytes > 0) LOWBIT_CUDA_CHECK(cudaMallocHost(&ptr_, bytes));
}

PinnedMemory& PinnedMemory::operator=(PinnedMemory&& o) noexcept {
  if (this != &o) {
    if (ptr_ != nullptr) cudaFreeHost(ptr_);
    ptr_ = std::exchange(o.ptr_, nullptr);
    bytes_ = std::exchange(o.bytes_, 0);
  }
  return *this;
}

PinnedMemory::~PinnedMemory() {
  if (ptr_ != nullptr) cudaFreeHost(ptr_);
}

CudaContext::CudaContext(const CudaContextOptions& opts) : opts_(opts) {
  LOWBIT_CUDA_CHECK(cudaSetDevice(opts_.device_index));
  LOWBIT_CUDA_CHECK(cudaGetDeviceProperties(&props_, opts_.device_index));
  // Non-blocking: the legacy default stream must not serialize against our work.
  LOWBIT_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  try {
    LOWBIT_CUBLAS_CHECK(cublasCreate(&cublas_));
    LOWBIT_CUBLAS_CHECK(cublasLtCreate(&cublas_lt_));
    LOWBIT_CUBLAS_CHECK(cublasSetStream(cublas_, stream_));
    // fp32 GEMMs stay true fp32 (no TF32): the F32 format is the exactness oracle.
    LOWBIT_CUBLAS_CHECK(cublasSetMathMode(cublas_, CUBLAS_DEFAULT_MATH));
    cublas_workspace_ = allocate(opts_.cublas_workspace_bytes, "the cuBLAS workspace");
    LOWBIT_CUBLAS_CHECK(cublasSetWorkspace(cublas_, cublas_workspace_.get(), cublas_workspace_.bytes()));
  } catch (...) {
    if (cublas_lt_ != nullptr) cublasLtDestroy(cublas_lt_);
    if (cublas_ != nullptr) cublasDestroy(cublas_);
    cudaStreamDestroy(stream_);
    throw;
  }
}

CudaContext::~CudaContext() {
  cudaStreamSynchronize(stream_);
  cublasLtDestroy(cublas_lt_);
  cublasDestroy(cublas_);
  cublas_workspace_.release();
  cudaStreamDestroy(stream_);
}

DeviceMemory CudaContext::allocate(size_t bytes, const std::string& what) {
  constexpr double kMiB = 1024.0 * 1024.0;
  if (bytes == 0) return DeviceMemory(this, nullptr, 0);
  if (opts_.max_bytes > 0 && bytes_in_use_ + bytes > opts_.max_bytes) {
    const size_t free_bytes = opts_.max_bytes > bytes_in_use_ ? opts_.max_bytes - bytes_in_use_ : 0;
    throw DeviceError(fmt::format("out of GPU memory allocating {}: need {:.1f} MiB, {:.1f} MiB free (memory cap {:.1f} MiB)",
                                  what, double(bytes) / kMiB, double(free_bytes) / kMiB, double(opts_.max_bytes) / kMiB));
  }
  void* ptr = nullptr;
  cudaError_t err = cudaMalloc(&ptr, bytes);
  if (err == cudaErrorMemoryAllocation) {
    (void)cudaGetLastError();  // clear the sticky-free error so later calls do not report it
    size_t free_bytes = 0, total_bytes = 0;
    cudaMemGetInfo(&free_bytes, &total_bytes);
    throw DeviceError(fmt::format("out of GPU memory allocating {}: need {:.1f} MiB, {:.1f} MiB free", what,
                                  double(bytes) / kMiB, double(free_bytes) / kMiB));
  }
  if (err != cudaSuccess)
    throw DeviceError(fmt::format("cudaMalloc for {} failed: {} ({})", what, cudaGetErrorName(err), cudaGetErrorString(err)));
  bytes_in_use_ += bytes;
  peak_bytes_in_use_ = std::max(peak_bytes_in_use_, bytes_in_use_);
  DeviceMemory mem(this, ptr, bytes);
  // Zero-filled like the CPU backend's buffers, so a read before a write is deterministic.
  LOWBIT_CUDA_CHECK(cudaMemsetAsync(ptr, 0, bytes, stream_));
  return mem;
}

void CudaContext::synchronize() { LOWBIT_CUDA_CHECK(cudaStreamSynchronize(stream_)); }

}  // namespace lowbit
