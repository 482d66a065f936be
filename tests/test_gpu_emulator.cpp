// The emulated CUDA device itself (emulated builds only): warp collectives with CUDA's lane
// rules, barriers, scheduling orders, the faults it must raise (checked in a forked child, since
// a fault aborts like a GPU error), streams that queue work, graphs, events, memory, launch
// checks and the reference cuBLAS GEMM.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "kernels/common.cuh"
#include "kernels/launch.cuh"
#include "lowbit_emu/control.h"

using lowbit::kernels::launch;
using lowbit::kernels::LaunchShape;

namespace {

constexpr unsigned kFull = 0xffffffffu;

// Runs `body` in a forked child with its stderr captured; the child's fate and what it said.
struct Child {
  bool aborted = false;
  int exit_code = -1;
  std::string stderr_text;
};
Child in_child(const std::function<void()>& body) {
  int fds[2];
  REQUIRE(pipe(fds) == 0);
  std::fflush(stdout);
  std::fflush(stderr);
  const pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    // The child dies by the fault's abort: without Catch's handler and report.
    signal(SIGABRT, SIG_DFL);
    dup2(fds[1], 2);
    const int null = open("/dev/null", O_WRONLY);
    if (null >= 0) dup2(null, 1);
    close(fds[0]);
    body();
    cudaDeviceSynchronize();
    _exit(0);
  }
  close(fds[1]);
  Child c;
  char buf[4096];
  for (ssize_t n; (n = read(fds[0], buf, sizeof buf)) > 0;) c.stderr_text.append(buf, size_t(n));
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  c.aborted = WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT;
  if (WIFEXITED(status)) c.exit_code = WEXITSTATUS(status);
  return c;
}

template <typename T>
T* device_array(size_t n) {
  T* p = nullptr;
  REQUIRE(cudaMalloc(&p, n * sizeof(T)) == cudaSuccess);
  return p;
}

template <typename T>
std::vector<T> read_back(const T* p, size_t n) {
  std::vector<T> v(n);
  REQUIRE(cudaMemcpy(v.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost) == cudaSuccess);
  return v;
}

// --- kernels under test ---------------------------------------------------------------------
__global__ void shuffle_kernel(int op, int param, int width, int* out) {
  const int lane = int(threadIdx.x);
  const int v = 100 + lane;
  int r = 0;
  if (op == 0) r = __shfl_sync(kFull, v, param, width);
  if (op == 1) r = __shfl_up_sync(kFull, v, param, width);
  if (op == 2) r = __shfl_down_sync(kFull, v, param, width);
  if (op == 3) r = __shfl_xor_sync(kFull, v, param, width);
  out[lane] = r;
}

__global__ void vote_kernel(unsigned* out) {
  const int lane = int(threadIdx.x);
  out[0 * 32 + lane] = __ballot_sync(kFull, lane % 3 == 0);
  out[1 * 32 + lane] = unsigned(__any_sync(kFull, lane == 17));
  out[2 * 32 + lane] = unsigned(__all_sync(kFull, lane < 31));
  out[3 * 32 + lane] = __match_any_sync(kFull, lane / 8);
  // Half-warp masks: each half reduces on its own.
  const unsigned half = lane < 16 ? 0x0000ffffu : 0xffff0000u;
  out[4 * 32 + lane] = __ballot_sync(half, lane % 2 == 0);
  out[5 * 32 + lane] = unsigned(__syncthreads_count(lane < 5));
}

// 64 threads: warp 0 writes shared memory that warp 1 reads, with or without the barrier.
__global__ void exchange_kernel(bool with_barrier, int stamp, int* out) {
  __shared__ int cell[32];
  const int lane = int(threadIdx.x % 32), warp = int(threadIdx.x / 32);
  if (warp == 0) cell[lane] = stamp + lane;
  if (with_barrier) __syncthreads();
  if (warp == 1) out[lane] = cell[lane];
}

__global__ void block_sum_kernel(const float* x, int n, float* out) {
  __shared__ float scratch[32];
  float v = 0.0f;
  for (int i = int(threadIdx.x); i < n; i += int(blockDim.x)) v += x[i];
  const float total = lowbit::kernels::block_sum(v, scratch);
  if (threadIdx.x == 0) out[blockIdx.x] = total;
}

__global__ void dynamic_shared_kernel(int n, float* out) {
  float* s = lowbit::kernels::dynamic_shared_memory<float>();
  out[threadIdx.x] = s[threadIdx.x];  // never written: the launch's NaN fill
  s[threadIdx.x] = float(n);
}

__global__ void store_kernel(int value, int* out) { out[threadIdx.x] = value + int(threadIdx.x); }

__global__ void index_kernel(int* out) {
  const unsigned block = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
  const unsigned thread = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
  out[block * blockDim.x * blockDim.y * blockDim.z + thread] = int(block * 1000 + thread);
}

// Faulty kernels (each one mistake).
__global__ void exit_before_shuffle_kernel(int* out) {
  if (threadIdx.x == 5) return;
  out[threadIdx.x] = __shfl_xor_sync(kFull, int(threadIdx.x), 1);
}
__global__ void divergent_barrier_kernel(int* out) {
  if (threadIdx.x < 64) __syncthreads();
  out[threadIdx.x] = 1;
}
__global__ void two_barriers_kernel(int* out) {
  if (threadIdx.x < 64) {
    __syncthreads();
  } else {
    __syncthreads();
  }
  out[threadIdx.x] = 1;
}
__global__ void barrier_in_shuffle_kernel(int* out) {
  int v = int(threadIdx.x);
  if (threadIdx.x == 3) __syncthreads();
  else v = __shfl_xor_sync(kFull, v, 1);
  out[threadIdx.x] = v;
}
__global__ void foreign_mask_kernel(int* out) {
  out[threadIdx.x] = __shfl_sync(0x0000ffffu, int(threadIdx.x), 0);  // lanes 16..31 are not in it
}

void expect_fault(const std::function<void()>& body, const std::string& message) {
  const Child c = in_child(body);
  INFO("child stderr: " << c.stderr_text);
  CHECK(c.aborted);
  CHECK_THAT(c.stderr_text, Catch::Contains("emulated GPU fault") && Catch::Contains(message));
}

}  // namespace

TEST_CASE("shuffles follow CUDA's lane rules, widths below 32 included", "[gpu][emulator]") {
  int* out = device_array<int>(32);
  for (int op = 0; op < 4; ++op)
    for (int width : {32, 16, 8, 4, 2, 1})
      for (int param : {0, 1, 3, 5, 16, 31}) {
        REQUIRE(launch<shuffle_kernel>({1, 32, 0, nullptr}, op, param, width, out) == cudaSuccess);
        const auto got = read_back(out, 32);
        for (int lane = 0; lane < 32; ++lane) {
          const int seg = lane & ~(width - 1);
          int src = lane;
          if (op == 0) src = seg + (param % width);
          if (op == 1 && lane - seg >= param) src = lane - param;
          if (op == 2 && lane - seg + param < width) src = lane + param;
          if (op == 3 && (lane ^ param) < seg + width) src = lane ^ param;
          INFO("op " << op << " width " << width << " param " << param << " lane " << lane);
          CHECK(got[size_t(lane)] == 100 + src);
        }
      }
  cudaFree(out);
}

TEST_CASE("votes, match_any, partial masks and counting barriers", "[gpu][emulator]") {
  unsigned* out = device_array<unsigned>(6 * 32);
  REQUIRE(launch<vote_kernel>({1, 32, 0, nullptr}, out) == cudaSuccess);
  const auto v = read_back(out, 6 * 32);
  unsigned ballot = 0, even_lo = 0, even_hi = 0;
  for (int l = 0; l < 32; ++l) {
    if (l % 3 == 0) ballot |= 1u << l;
    if (l % 2 == 0) (l < 16 ? even_lo : even_hi) |= 1u << l;
  }
  for (int l = 0; l < 32; ++l) {
    INFO("lane " << l);
    CHECK(v[size_t(l)] == ballot);
    CHECK(v[size_t(32 + l)] == 1u);
    CHECK(v[size_t(64 + l)] == 0u);
    CHECK(v[size_t(96 + l)] == 0xffu << (8 * (l / 8)));
    CHECK(v[size_t(128 + l)] == (l < 16 ? even_lo : even_hi));
    CHECK(v[size_t(160 + l)] == 5u);
  }
  cudaFree(out);
}

TEST_CASE("a missing barrier shows up as a difference between scheduling orders", "[gpu][emulator]") {
  int* out = device_array<int>(32);
  auto run = [&](const char* order, bool barrier, int stamp) {
    REQUIRE(lowbit_emu::set_schedule_order(order));
    REQUIRE(launch<exchange_kernel>({1, 64, 0, nullptr}, barrier, stamp, out) == cudaSuccess);
    return read_back(out, 32);
  };
  std::vector<int> expected(32);
  for (int l = 0; l < 32; ++l) expected[size_t(l)] = 7000 + l;
  // With the barrier every order reads warp 0's values.
  for (const char* order : {"forward", "reverse", "random:3"}) CHECK(run(order, true, 7000) == expected);
  // Without it, forward happens to work (warp 0 runs first) and reverse reads stale memory.
  CHECK(run("forward", false, 7000) == expected);
  std::vector<int> expected9(32);
  for (int l = 0; l < 32; ++l) expected9[size_t(l)] = 9000 + l;
  CHECK(run("reverse", false, 9000) != expected9);
  REQUIRE(lowbit_emu::set_schedule_order("forward"));
  cudaFree(out);
}

TEST_CASE("block reductions agree across orders and block shapes", "[gpu][emulator]") {
  std::mt19937 rng(5);
  std::uniform_int_distribution<int> small(-8, 8);
  const int n = 5000;
  std::vector<float> x(static_cast<size_t>(n));
  double expected = 0;
  for (auto& v : x) {
    v = float(small(rng));  // integers: every summation order gives the same float
    expected += v;
  }
  float* dx = device_array<float>(size_t(n));
  float* dout = device_array<float>(3);
  REQUIRE(cudaMemcpy(dx, x.data(), x.size() * sizeof(float), cudaMemcpyHostToDevice) == cudaSuccess);
  for (const char* order : {"forward", "reverse", "random:11"})
    for (unsigned threads : {32u, 96u, 256u, 1024u}) {
      REQUIRE(lowbit_emu::set_schedule_order(order));
      REQUIRE(launch<block_sum_kernel>({3, threads, 0, nullptr}, dx, n, dout) == cudaSuccess);
      INFO(order << " " << threads << " threads");
      for (float v : read_back(dout, 3)) CHECK(double(v) == expected);
    }
  REQUIRE(lowbit_emu::set_schedule_order("forward"));
  cudaFree(dx);
  cudaFree(dout);
}

TEST_CASE("grid and block indices cover a 3-D launch", "[gpu][emulator]") {
  const dim3 grid(3, 2, 2), block(4, 3, 2);
  const size_t n = 12 * 24;
  int* out = device_array<int>(n);
  REQUIRE(launch<index_kernel>({grid, block, 0, nullptr}, out) == cudaSuccess);
  const auto v = read_back(out, n);
  for (size_t i = 0; i < n; ++i) CHECK(v[i] == int((i / 24) * 1000 + i % 24));
  cudaFree(out);
}

TEST_CASE("dynamic shared memory is NaN-filled and limited as on an sm_90 GPU", "[gpu][emulator]") {
  float* out = device_array<float>(64);
  REQUIRE(launch<dynamic_shared_kernel>({1, 64, 64 * sizeof(float), nullptr}, 1, out) == cudaSuccess);
  for (float v : read_back(out, 64)) CHECK(std::isnan(v));
  // Above 48 KB only after opting in, and never above the 227 KB opt-in limit.
  CHECK(launch<dynamic_shared_kernel>({1, 64, 64 * 1024, nullptr}, 1, out) == cudaErrorInvalidValue);
  CHECK(cudaGetLastError() == cudaErrorInvalidValue);
  CHECK(cudaGetLastError() == cudaSuccess);
  CHECK(cudaFuncSetAttribute(dynamic_shared_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 300 * 1024) ==
        cudaErrorInvalidValue);
  REQUIRE(cudaFuncSetAttribute(dynamic_shared_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 64 * 1024) ==
          cudaSuccess);
  CHECK(launch<dynamic_shared_kernel>({1, 64, 64 * 1024, nullptr}, 1, out) == cudaSuccess);
  cudaFree(out);
}

TEST_CASE("launch configurations outside CUDA's limits are refused", "[gpu][emulator]") {
  int* out = device_array<int>(2048);
  CHECK(launch<store_kernel>({1, 1025, 0, nullptr}, 0, out) == cudaErrorInvalidConfiguration);
  CHECK(launch<store_kernel>({dim3(1, 70000), 32, 0, nullptr}, 0, out) == cudaErrorInvalidConfiguration);
  CHECK(launch<store_kernel>({0, 32, 0, nullptr}, 0, out) == cudaErrorInvalidConfiguration);
  CHECK(launch<store_kernel>({1, dim3(1, 1, 65), 0, nullptr}, 0, out) == cudaErrorInvalidConfiguration);
  (void)cudaGetLastError();
  cudaFree(out);
}

TEST_CASE("streams queue work until a synchronization point", "[gpu][emulator]") {
  cudaStream_t s = nullptr;
  REQUIRE(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking) == cudaSuccess);
  int* dev = device_array<int>(4);
  int* pinned = nullptr;
  REQUIRE(cudaMallocHost(reinterpret_cast<void**>(&pinned), 4 * sizeof(int)) == cudaSuccess);
  std::vector<int> pageable = {1, 2, 3, 4};
  // From pinned memory the copy reads the buffer when the stream runs it: overwriting it before
  // the copy has run is a bug a real GPU shows only sometimes, and the emulator always.
  for (int i = 0; i < 4; ++i) pinned[i] = 10 + i;
  REQUIRE(cudaMemcpyAsync(dev, pinned, 4 * sizeof(int), cudaMemcpyHostToDevice, s) == cudaSuccess);
  for (int i = 0; i < 4; ++i) pinned[i] = 20 + i;
  REQUIRE(cudaStreamSynchronize(s) == cudaSuccess);
  CHECK(read_back(dev, 4) == std::vector<int>{20, 21, 22, 23});
  // From pageable memory CUDA stages the bytes before returning.
  REQUIRE(cudaMemcpyAsync(dev, pageable.data(), 4 * sizeof(int), cudaMemcpyHostToDevice, s) == cudaSuccess);
  pageable.assign(4, -1);
  REQUIRE(cudaStreamSynchronize(s) == cudaSuccess);
  CHECK(read_back(dev, 4) == std::vector<int>{1, 2, 3, 4});
  // A kernel has not run before the host synchronizes.
  REQUIRE(launch<store_kernel>({1, 4, 0, s}, 50, dev) == cudaSuccess);
  REQUIRE(cudaMemcpyAsync(pinned, dev, 4 * sizeof(int), cudaMemcpyDeviceToHost, s) == cudaSuccess);
  CHECK(pinned[0] == 20);
  cudaEvent_t done = nullptr;
  REQUIRE(cudaEventCreateWithFlags(&done, cudaEventDisableTiming) == cudaSuccess);
  REQUIRE(cudaEventRecord(done, s) == cudaSuccess);
  REQUIRE(cudaEventSynchronize(done) == cudaSuccess);
  CHECK(std::vector<int>(pinned, pinned + 4) == std::vector<int>{50, 51, 52, 53});
  // Into pageable memory a copy is synchronous.
  std::vector<int> back(4, 0);
  REQUIRE(launch<store_kernel>({1, 4, 0, s}, 60, dev) == cudaSuccess);
  REQUIRE(cudaMemcpyAsync(back.data(), dev, 4 * sizeof(int), cudaMemcpyDeviceToHost, s) == cudaSuccess);
  CHECK(back == std::vector<int>{60, 61, 62, 63});
  // Wrong directions and out-of-range copies are refused.
  CHECK(cudaMemcpyAsync(dev, pageable.data(), 4 * sizeof(int), cudaMemcpyDeviceToHost, s) == cudaErrorInvalidValue);
  CHECK(cudaMemcpyAsync(dev, pageable.data(), 5 * sizeof(int), cudaMemcpyHostToDevice, s) == cudaErrorInvalidValue);
  cudaEventDestroy(done);
  cudaFreeHost(pinned);
  cudaFree(dev);
  cudaStreamDestroy(s);
}

TEST_CASE("events time the work between them", "[gpu][emulator]") {
  cudaStream_t s = nullptr;
  REQUIRE(cudaStreamCreate(&s) == cudaSuccess);
  cudaEvent_t a = nullptr, b = nullptr, untimed = nullptr;
  REQUIRE(cudaEventCreate(&a) == cudaSuccess);
  REQUIRE(cudaEventCreate(&b) == cudaSuccess);
  REQUIRE(cudaEventCreateWithFlags(&untimed, cudaEventDisableTiming) == cudaSuccess);
  int* dev = device_array<int>(1024);
  REQUIRE(cudaEventRecord(a, s) == cudaSuccess);
  REQUIRE(launch<store_kernel>({1, 1024, 0, s}, 1, dev) == cudaSuccess);
  REQUIRE(cudaEventRecord(b, s) == cudaSuccess);
  REQUIRE(cudaEventRecord(untimed, s) == cudaSuccess);
  float ms = -1;
  CHECK(cudaEventElapsedTime(&ms, a, b) == cudaErrorNotReady);  // nothing has run yet
  REQUIRE(cudaEventSynchronize(b) == cudaSuccess);
  REQUIRE(cudaEventElapsedTime(&ms, a, b) == cudaSuccess);
  CHECK(ms >= 0.0f);
  REQUIRE(cudaEventSynchronize(untimed) == cudaSuccess);
  CHECK(cudaEventElapsedTime(&ms, a, untimed) == cudaErrorInvalidResourceHandle);
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  cudaEventDestroy(untimed);
  cudaFree(dev);
  cudaStreamDestroy(s);
}

TEST_CASE("graphs replay their recorded arguments; capture forbids syncs and allocations", "[gpu][emulator]") {
  cudaStream_t s = nullptr;
  REQUIRE(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking) == cudaSuccess);
  int* dev = device_array<int>(8);
  int value = 5;
  REQUIRE(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal) == cudaSuccess);
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  REQUIRE(cudaStreamIsCapturing(s, &status) == cudaSuccess);
  CHECK(status == cudaStreamCaptureStatusActive);
  REQUIRE(launch<store_kernel>({1, 8, 0, s}, value, dev) == cudaSuccess);
  cudaGraph_t graph = nullptr;
  REQUIRE(cudaStreamEndCapture(s, &graph) == cudaSuccess);
  CHECK(read_back(dev, 8)[0] != 5);  // captured, not run
  cudaGraphExec_t exec = nullptr;
  REQUIRE(cudaGraphInstantiate(&exec, graph, 0) == cudaSuccess);
  value = 99;  // the graph keeps the arguments it recorded
  REQUIRE(cudaGraphLaunch(exec, s) == cudaSuccess);
  REQUIRE(cudaStreamSynchronize(s) == cudaSuccess);
  CHECK(read_back(dev, 8) == std::vector<int>{5, 6, 7, 8, 9, 10, 11, 12});
  const auto before = lowbit_emu::launch_counts()["store_kernel"];
  REQUIRE(cudaGraphLaunch(exec, s) == cudaSuccess);
  REQUIRE(cudaGraphLaunch(exec, s) == cudaSuccess);
  REQUIRE(cudaStreamSynchronize(s) == cudaSuccess);
  CHECK(lowbit_emu::launch_counts()["store_kernel"] == before + 2);  // replays count their kernels
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);

  // An allocation during capture fails and invalidates the capture, as CUDA does.
  REQUIRE(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal) == cudaSuccess);
  void* p = nullptr;
  CHECK(cudaMalloc(&p, 64) == cudaErrorStreamCaptureUnsupported);
  CHECK(cudaStreamEndCapture(s, &graph) == cudaErrorStreamCaptureInvalidated);
  CHECK(graph == nullptr);
  // So does a host synchronization, or a copy into pageable memory.
  REQUIRE(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal) == cudaSuccess);
  CHECK(cudaStreamSynchronize(s) == cudaErrorStreamCaptureUnsupported);
  CHECK(cudaStreamEndCapture(s, &graph) == cudaErrorStreamCaptureInvalidated);
  std::vector<int> host(8);
  REQUIRE(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal) == cudaSuccess);
  CHECK(cudaMemcpyAsync(host.data(), dev, 8 * sizeof(int), cudaMemcpyDeviceToHost, s) ==
        cudaErrorStreamCaptureUnsupported);
  CHECK(cudaStreamEndCapture(s, &graph) == cudaErrorStreamCaptureInvalidated);
  // The legacy stream cannot be captured.
  CHECK(cudaStreamBeginCapture(nullptr, cudaStreamCaptureModeGlobal) == cudaErrorStreamCaptureUnsupported);
  cudaFree(dev);
  cudaStreamDestroy(s);
}

TEST_CASE("device memory is bounded and accounted", "[gpu][emulator]") {
  size_t free0 = 0, total = 0;
  REQUIRE(cudaMemGetInfo(&free0, &total) == cudaSuccess);
  CHECK(free0 <= total);
  cudaDeviceProp prop{};
  REQUIRE(cudaGetDeviceProperties(&prop, 0) == cudaSuccess);
  CHECK(prop.totalGlobalMem == total);
  CHECK(prop.major == 9);
  void* p = nullptr;
  REQUIRE(cudaMalloc(&p, 1 << 20) == cudaSuccess);
  size_t free1 = 0;
  REQUIRE(cudaMemGetInfo(&free1, &total) == cudaSuccess);
  CHECK(free0 - free1 == size_t(1) << 20);
  void* huge = nullptr;
  CHECK(cudaMalloc(&huge, total) == cudaErrorMemoryAllocation);
  CHECK(huge == nullptr);
  CHECK(cudaFree(p) == cudaSuccess);
  CHECK(cudaFree(p) == cudaErrorInvalidValue);  // twice
  REQUIRE(cudaMemGetInfo(&free1, &total) == cudaSuccess);
  CHECK(free1 == free0);
}

TEST_CASE("cuBLAS GEMMs equal a plain GEMM for every transpose, leading dimension and alpha/beta",
          "[gpu][emulator]") {
  cublasHandle_t h = nullptr;
  REQUIRE(cublasCreate(&h) == CUBLAS_STATUS_SUCCESS);
  std::mt19937 rng(9);
  std::uniform_int_distribution<int> small(-4, 4);
  const int m = 5, n = 7, k = 6;
  for (auto [ta_, tb_] : {std::pair{CUBLAS_OP_N, CUBLAS_OP_N}, std::pair{CUBLAS_OP_T, CUBLAS_OP_N},
                          std::pair{CUBLAS_OP_N, CUBLAS_OP_T}, std::pair{CUBLAS_OP_T, CUBLAS_OP_T}}) {
    const cublasOperation_t ta = ta_, tb = tb_;  // lambdas cannot capture structured bindings in clang 14
    const int a_rows = ta == CUBLAS_OP_N ? m : k, a_cols = ta == CUBLAS_OP_N ? k : m;
    const int b_rows = tb == CUBLAS_OP_N ? k : n, b_cols = tb == CUBLAS_OP_N ? n : k;
    const int lda = a_rows + 3, ldb = b_rows + 1, ldc = m + 2;
    std::vector<float> A(size_t(lda * a_cols)), B(size_t(ldb * b_cols)), C(size_t(ldc * n));
    for (auto& v : A) v = float(small(rng));
    for (auto& v : B) v = float(small(rng));
    for (auto& v : C) v = float(small(rng));
    auto at = [&](int i, int p) { return ta == CUBLAS_OP_N ? A[size_t(p * lda + i)] : A[size_t(i * lda + p)]; };
    auto bt = [&](int p, int j) { return tb == CUBLAS_OP_N ? B[size_t(j * ldb + p)] : B[size_t(p * ldb + j)]; };
    float* dA = device_array<float>(A.size());
    float* dB = device_array<float>(B.size());
    float* dC = device_array<float>(C.size());
    cudaMemcpy(dA, A.data(), A.size() * 4, cudaMemcpyHostToDevice);
    cudaMemcpy(dB, B.data(), B.size() * 4, cudaMemcpyHostToDevice);
    cudaMemcpy(dC, C.data(), C.size() * 4, cudaMemcpyHostToDevice);
    const float alpha = 2.0f, beta = -1.0f;
    REQUIRE(cublasGemmEx(h, ta, tb, m, n, k, &alpha, dA, CUDA_R_32F, lda, dB, CUDA_R_32F, ldb, &beta, dC, CUDA_R_32F,
                         ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_SUCCESS);
    const auto got = read_back(dC, C.size());
    for (int j = 0; j < n; ++j)
      for (int i = 0; i < ldc; ++i) {
        float want = C[size_t(j * ldc + i)];  // rows past m are untouched
        if (i < m) {
          float acc = 0;
          for (int p = 0; p < k; ++p) acc += at(i, p) * bt(p, j);
          want = alpha * acc + beta * want;
        }
        INFO("ta " << ta << " tb " << tb << " i " << i << " j " << j);
        CHECK(got[size_t(j * ldc + i)] == want);
      }
    cudaFree(dA);
    cudaFree(dB);
    cudaFree(dC);
  }
  // int8 x int8 -> int32 (IMMA's "TN"), and its leading-dimension rule.
  const int kk = 8;
  std::vector<int8_t> A(size_t(kk * m)), B(size_t(kk * n));
  for (auto& v : A) v = int8_t(small(rng) * 30);
  for (auto& v : B) v = int8_t(small(rng) * 30);
  auto* dA = device_array<int8_t>(A.size());
  auto* dB = device_array<int8_t>(B.size());
  auto* dC = device_array<int32_t>(size_t(8 * n));
  cudaMemcpy(dA, A.data(), A.size(), cudaMemcpyHostToDevice);
  cudaMemcpy(dB, B.data(), B.size(), cudaMemcpyHostToDevice);
  const int32_t one = 1, zero = 0;
  REQUIRE(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, m, n, kk, &one, dA, CUDA_R_8I, kk, dB, CUDA_R_8I, kk, &zero, dC,
                       CUDA_R_32I, 8, CUBLAS_COMPUTE_32I, CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_SUCCESS);
  const auto got = read_back(dC, size_t(8 * n));
  for (int j = 0; j < n; ++j)
    for (int i = 0; i < m; ++i) {
      int32_t want = 0;
      for (int p = 0; p < kk; ++p) want += int32_t(A[size_t(i * kk + p)]) * int32_t(B[size_t(j * kk + p)]);
      CHECK(got[size_t(j * 8 + i)] == want);
    }
  CHECK(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, m, n, 6, &one, dA, CUDA_R_8I, 6, dB, CUDA_R_8I, 6, &zero, dC,
                     CUDA_R_32I, 8, CUBLAS_COMPUTE_32I, CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_NOT_SUPPORTED);
  CHECK(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, m, n, kk, &one, dA, CUDA_R_8I, kk, dB, CUDA_R_8I, kk, &zero, dC,
                     CUDA_R_32F, 8, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_NOT_SUPPORTED);
  cudaFree(dA);
  cudaFree(dB);
  cudaFree(dC);
  cublasDestroy(h);
}

TEST_CASE("faults name the kernel, the thread and the collective", "[gpu][emulator]") {
  SECTION("a thread exits while its warp waits in a shuffle") {
    for (const char* order : {"forward", "reverse"})
      expect_fault(
          [order] {
            lowbit_emu::set_schedule_order(order);
            int* out = device_array<int>(32);
            launch<exit_before_shuffle_kernel>({1, 32, 0, nullptr}, out);
          },
          "exit_before_shuffle_kernel, block (0,0,0), thread (5,0,0) [thread 5 of the block, warp 0 lane 5]: thread 5 "
          "exited while lanes of its warp wait in __shfl_xor_sync");
  }
  SECTION("__syncthreads in a thread-dependent branch") {
    for (const char* order : {"forward", "reverse", "random:2"})
      expect_fault(
          [order] {
            lowbit_emu::set_schedule_order(order);
            int* out = device_array<int>(128);
            launch<divergent_barrier_kernel>({1, 128, 0, nullptr}, out);
          },
          "threads of its block wait at __syncthreads");
  }
  SECTION("two different barriers") {
    expect_fault(
        [] {
          int* out = device_array<int>(128);
          launch<two_barriers_kernel>({1, 128, 0, nullptr}, out);
        },
        "wait at different barriers");
  }
  SECTION("a barrier while the warp waits in a shuffle") {
    expect_fault(
        [] {
          int* out = device_array<int>(32);
          launch<barrier_in_shuffle_kernel>({1, 32, 0, nullptr}, out);
        },
        "__syncthreads");
  }
  SECTION("a mask without the calling lane") {
    expect_fault(
        [] {
          int* out = device_array<int>(32);
          launch<foreign_mask_kernel>({1, 32, 0, nullptr}, out);
        },
        "does not include the calling lane");
  }
  SECTION("a host pointer passed to a kernel") {
    expect_fault(
        [] {
          std::vector<int> host(32);
          launch<store_kernel>({1, 32, 0, nullptr}, 1, host.data());
        },
        "is host memory, not device or pinned memory");
  }
}

TEST_CASE("the launch counter counts kernels by name", "[gpu][emulator]") {
  int* out = device_array<int>(32);
  const auto before = lowbit_emu::launch_counts();
  for (int i = 0; i < 3; ++i) REQUIRE(launch<store_kernel>({1, 32, 0, nullptr}, i, out) == cudaSuccess);
  cudaDeviceSynchronize();
  auto after = lowbit_emu::launch_counts();
  const uint64_t was = before.count("store_kernel") ? before.at("store_kernel") : 0;
  CHECK(after["store_kernel"] == was + 3);
  cudaFree(out);
}
