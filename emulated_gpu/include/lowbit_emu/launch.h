// Kernel launches on the emulated device. kernels/launch.cuh routes every launch here in the
// emulated build (and to <<<...>>> under nvcc), so both builds compile the same kernel files.
#pragma once
#include <cstddef>
#include <memory>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "cuda_runtime_api.h"

namespace lowbit_emu {

// A kernel's arguments, copied at launch as CUDA copies them; run() calls the kernel with them
// on the current emulated thread.
struct LaunchBody {
  virtual ~LaunchBody() = default;
  virtual void run() = 0;
};

struct LaunchRequest {
  const void* kernel = nullptr;  // key for cudaFuncSetAttribute
  std::string name;              // e.g. "gemv_kernel<Bf16Weights, 1>"
  dim3 grid, block;
  size_t shared_bytes = 0;
  cudaStream_t stream = nullptr;
  std::shared_ptr<LaunchBody> body;
  std::vector<const void*> pointers;  // every pointer argument, checked to be device memory
};

// Validates the launch (configuration, shared memory limits, pointer arguments) and queues it on
// the stream (or the graph being captured). Returns what cudaGetLastError would after <<<>>>.
cudaError_t enqueue_launch(LaunchRequest request);

// "lowbit::kernels::{anonymous}::gemv_kernel<...Bf16Weights, 1>" -> "gemv_kernel<Bf16Weights, 1>".
std::string short_kernel_name(const char* pretty_function);

template <auto Kernel>
const char* pretty_name() {
  return __PRETTY_FUNCTION__;
}

template <typename F>
struct KernelParams;
template <typename... P>
struct KernelParams<void (*)(P...)> {
  using Tuple = std::tuple<std::decay_t<P>...>;
};

template <auto Kernel, typename Tuple>
struct Body final : LaunchBody {
  explicit Body(Tuple t) : args(std::move(t)) {}
  void run() override {
    Tuple copy = args;  // each thread gets its own by-value parameters
    std::apply(Kernel, copy);
  }
  Tuple args;
};

// Pointers hidden in struct arguments: a type that carries device pointers (a weight view, a
// workspace) declares them with an ADL-found `emu_device_pointers(const T&)` returning a range
// of pointers, so the launch checks those too.
template <typename T>
void collect_pointers(const T& arg, std::vector<const void*>& out) {
  if constexpr (std::is_pointer_v<T>) {
    out.push_back(reinterpret_cast<const void*>(arg));
  } else if constexpr (requires { emu_device_pointers(arg); }) {
    for (const void* p : emu_device_pointers(arg)) out.push_back(p);
  }
}

template <auto Kernel, typename... Args>
cudaError_t launch(dim3 grid, dim3 block, size_t shared_bytes, cudaStream_t stream, Args&&... args) {
  using Tuple = typename KernelParams<decltype(Kernel)>::Tuple;
  static_assert(std::tuple_size_v<Tuple> == sizeof...(Args), "wrong number of kernel arguments");
  auto body = std::make_shared<Body<Kernel, Tuple>>(Tuple(std::forward<Args>(args)...));
  LaunchRequest r;
  r.kernel = reinterpret_cast<const void*>(Kernel);
  static const std::string name = short_kernel_name(pretty_name<Kernel>());
  r.name = name;
  r.grid = grid;
  r.block = block;
  r.shared_bytes = shared_bytes;
  r.stream = stream;
  std::apply([&](const auto&... a) { (collect_pointers(a, r.pointers), ...); }, body->args);
  r.body = std::move(body);
  return enqueue_launch(std::move(r));
}

}  // namespace lowbit_emu
