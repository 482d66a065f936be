#include "backend/backend.h"

#include <fmt/format.h>

#include "backend/cpu_backend.h"
#include "core/error.h"
#include "lowbit_config.h"

#if LOWBIT_CUDA_MODULE
#include <dlfcn.h>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>
#elif LOWBIT_HAVE_CUDA
#include "backend/cuda_backend.h"
#include "kernels/device.cuh"
#endif

namespace lowbit {

#if LOWBIT_CUDA_MODULE
namespace {

// The lowbit binary's CUDA backend lives in liblowbit_cuda.so (cuda_module.cpp), loaded on first
// use. Without a driver (no libcuda.so.1) nothing is loaded: no GPU can be there.
struct CudaModule {
  int (*device_count)() = nullptr;
  Backend* (*make)(int, size_t, bool) = nullptr;
  std::string error;  // why it is not loaded
};

const CudaModule& cuda_module() {
  static const CudaModule module = [] {
    CudaModule m;
    if (dlopen("libcuda.so.1", RTLD_LAZY | RTLD_LOCAL) == nullptr) {
      m.error = "no CUDA driver (libcuda.so.1 not found)";
      return m;
    }
    // LOWBIT_CUDA_MODULE names the file; else next to the binary (the build folder), else the
    // install's library folder.
    std::vector<std::string> paths;
    if (const char* env = std::getenv("LOWBIT_CUDA_MODULE"); env != nullptr && *env != '\0') paths.emplace_back(env);
    std::error_code ec;
    const std::filesystem::path exe = std::filesystem::read_symlink("/proc/self/exe", ec);
    if (!ec) paths.push_back((exe.parent_path() / "liblowbit_cuda.so").string());
    paths.emplace_back(LOWBIT_CUDA_MODULE_INSTALLED);
    for (const std::string& path : paths) {
      void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
      if (handle == nullptr) {
        const char* why = dlerror();
        if (m.error.empty()) m.error = why != nullptr ? why : path + ": not loadable";
        continue;
      }
      m.device_count = reinterpret_cast<int (*)()>(dlsym(handle, "lowbit_cuda_device_count"));
      m.make = reinterpret_cast<Backend* (*)(int, size_t, bool)>(dlsym(handle, "lowbit_make_cuda_backend"));
      if (m.device_count != nullptr && m.make != nullptr) {
        m.error.clear();
        return m;
      }
      m = CudaModule{};
      m.error = path + ": not lowbit's CUDA module (entry points missing)";
    }
    return m;
  }();
  return module;
}

std::unique_ptr<Backend> make_cuda_backend(int device_index, size_t memory_cap_bytes, bool fast_prefill) {
  const CudaModule& m = cuda_module();
  if (m.make == nullptr) throw DeviceError("the CUDA backend could not be loaded: " + m.error);
  return std::unique_ptr<Backend>(m.make(device_index, memory_cap_bytes, fast_prefill));
}

}  // namespace
#endif

std::unique_ptr<DeviceLinear> Backend::upload_quantizing(Format f, const std::vector<HostWeightPart>& parts,
                                                         int64_t cols, const QuantOptions& opts,
                                                         std::vector<float> bias) {
  return upload_linear(quantize_parts(f, parts, cols, opts), std::move(bias));
}

void Backend::linear(const DeviceLinear& w, const DeviceBuffer& x, DeviceBuffer& out, const LinearSteps& s) {
  if (s.activate && s.accumulate) throw DeviceError("linear: an activation and a residual add at once");
  const DeviceBuffer* in = &x;
  if (s.norm != nullptr) {
    if (s.normed == nullptr) throw DeviceError("linear: a fused norm needs its `normed` scratch buffer");
    norm(x, *s.norm, s.norm_kind, s.norm_eps, int(w.cols()), *s.normed);
    in = s.normed;
  }
  if (!s.activate && !s.accumulate) return matmul(w, *in, out);
  if (s.pre == nullptr) throw DeviceError("linear: an activation or residual add needs its `pre` scratch buffer");
  matmul(w, *in, *s.pre);
  if (s.activate) {
    activation(*s.pre, s.act, s.hidden, out);
  } else {
    add(out, *s.pre, int(w.rows()));
  }
}

void Backend::rope_attention(DeviceBuffer& qkv, KvCache& cache, int layer, const AttentionShape& shape,
                             DeviceBuffer& out) {
  rope(qkv, shape);
  attention(qkv, cache, layer, shape, out);
}

void Backend::begin_recording(const void*, int) {
  throw DeviceError(fmt::format("the {} backend cannot record a forward pass", name()));
}

void Backend::replay(const void*, int batch_size) {
  throw DeviceError(fmt::format("the {} backend has no recording for batch size {}", name(), batch_size));
}

const char* kv_dtype_name(KvDtype d) { return d == KvDtype::bf16 ? "bf16" : "f32"; }

bool cuda_available() {
#if LOWBIT_CUDA_MODULE
  const CudaModule& m = cuda_module();
  return m.device_count != nullptr && m.device_count() > 0;
#elif LOWBIT_HAVE_CUDA
  return cuda::device_count() > 0;
#else
  return false;
#endif
}

std::unique_ptr<Backend> make_backend(const std::string& device, int n_threads, size_t memory_cap_bytes,
                                      bool cpu_bf16_activations, bool cuda_fast_prefill) {
  auto cpu = [&] {
    if (cuda_fast_prefill)
      throw UsageError("--cuda-fast-prefill applies to the CUDA backend only (this run would use the CPU)");
    return std::make_unique<CpuBackend>(n_threads, memory_cap_bytes, cpu_bf16_activations);
  };
  if (device == "cpu") return cpu();
  if (device == "cuda" || device == "auto") {
#if LOWBIT_HAVE_CUDA
    // The emulated device (a test build) runs kernels on the CPU, far slower than the CPU
    // backend: it is used only when asked for by name.
    if (cuda_available() && !(LOWBIT_EMULATED_GPU && device == "auto")) {
      if (cpu_bf16_activations)
        throw UsageError("--cpu-bf16-activations applies to the CPU backend only (add --device cpu)");
      return make_cuda_backend(0, memory_cap_bytes, cuda_fast_prefill);
    }
#endif
    if (device == "auto") return cpu();
#if LOWBIT_CUDA_MODULE
    const std::string& why = cuda_module().error;
    throw DeviceError("--device cuda: no CUDA device is available (" +
                      (why.empty() ? std::string("the driver reports none") : why) + ")");
#elif LOWBIT_HAVE_CUDA
    throw DeviceError("--device cuda: no CUDA device is available (no GPU or no driver)");
#else
    throw DeviceError("--device cuda: this lowbit was built without CUDA");
#endif
  }
  throw UsageError(fmt::format("--device: unknown device '{}' (use auto, cpu or cuda)", device));
}

}  // namespace lowbit
