// The emulated CUDA runtime: device memory as host allocations (so AddressSanitizer sees device
// out-of-bounds accesses), streams that queue work and run it only at synchronization points,
// events with elapsed times, CUDA graphs as recorded operation lists, the error state, and the
// device's properties. Every entry point takes the API lock.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <new>
#include <set>
#include <string>
#include <string_view>
#include <thread>

#include <fmt/format.h>

#include "lowbit_emu/control.h"
#include "runtime.h"

struct CUstream_st {
  unsigned flags = 0;
  std::deque<lowbit_emu::Op> queue;
  bool capturing = false, capture_invalidated = false;
  cudaStreamCaptureMode capture_mode = cudaStreamCaptureModeGlobal;
  std::thread::id capture_thread;
  std::vector<lowbit_emu::Op> captured;
};

struct CUevent_st {
  unsigned flags = 0;
  CUstream_st* stream = nullptr;
  uint64_t pending = 0;  // queued records not yet run; the event is complete when 0
  bool timed = false;    // a record has run
  std::chrono::steady_clock::time_point time;
};

struct CUgraph_st {
  std::vector<lowbit_emu::Op> ops;
};

struct CUgraphExec_st {
  std::vector<lowbit_emu::Op> ops;
};

namespace lowbit_emu {

namespace {

constexpr size_t kAlignment = 256;  // cudaMalloc's alignment

struct State {
  std::map<uintptr_t, Allocation> allocations;  // by base address
  size_t device_in_use = 0;
  CUstream_st legacy_stream;
  std::set<CUstream_st*> streams;  // created streams (the legacy one is separate)
  std::map<const void*, int> max_dynamic_shared;
  std::map<std::string, uint64_t> launches;
};

State& state() {
  static State* s = new State();  // never destroyed: handles may be released during static destruction
  return *s;
}

thread_local cudaError_t last_error = cudaSuccess;

size_t parse_mib(const char* name, size_t fallback) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return fallback;
  char* end = nullptr;
  const unsigned long long mib = std::strtoull(v, &end, 10);
  if (end == v || *end != '\0' || mib == 0) {
    std::fprintf(stderr, "emulated GPU: %s=%s is not a positive number of MiB\n", name, v);
    std::exit(2);
  }
  return size_t(mib) << 20;
}

bool parse_order(const char* v, Order* order, uint64_t* seed) {
  const std::string_view s(v);
  if (s == "forward" || s.empty()) {
    *order = Order::forward;
  } else if (s == "reverse") {
    *order = Order::reverse;
  } else if (s == "random" || s.substr(0, 7) == "random:") {
    *order = Order::random;
    if (s.size() > 7) *seed = std::strtoull(v + 7, nullptr, 10);
  } else {
    return false;
  }
  return true;
}

Config read_config() {
  Config c;
  c.device_bytes = parse_mib("LOWBIT_EMU_DEVICE_MEMORY_MIB", c.device_bytes);
  if (const char* v = std::getenv("LOWBIT_EMU_ORDER"); v != nullptr && !parse_order(v, &c.order, &c.seed)) {
    std::fprintf(stderr, "emulated GPU: LOWBIT_EMU_ORDER=%s is not forward, reverse or random[:seed]\n", v);
    std::exit(2);
  }
  return c;
}

struct OrderOverride {
  bool set = false;
  Order order = Order::forward;
  uint64_t seed = 1;
};
OrderOverride& order_override() {
  static OrderOverride o;
  return o;
}

bool host_side(MemoryKind k) { return k == MemoryKind::pageable || k == MemoryKind::pinned; }

cudaError_t allocate(void** ptr, size_t bytes, MemoryKind kind) {
  if (ptr == nullptr) return cudaErrorInvalidValue;
  *ptr = nullptr;
  if (refuse_during_capture()) return cudaErrorStreamCaptureUnsupported;
  if (bytes == 0) return cudaSuccess;
  State& s = state();
  const size_t rounded = (bytes + kAlignment - 1) / kAlignment * kAlignment;
  if (kind == MemoryKind::device && (rounded < bytes || s.device_in_use + rounded > config().device_bytes))
    return cudaErrorMemoryAllocation;
  // Exactly `bytes`, so that AddressSanitizer flags an access one element past the end even
  // where a GPU's 256-byte rounding would hide it.
  void* p = ::operator new(bytes, std::align_val_t(kAlignment), std::nothrow);
  if (p == nullptr) return cudaErrorMemoryAllocation;
  if (kind == MemoryKind::device) {
    std::memset(p, 0xff, bytes);  // cudaMalloc does not clear: poison (NaN floats, -1 ints)
    s.device_in_use += rounded;
  }
  s.allocations[reinterpret_cast<uintptr_t>(p)] = Allocation{reinterpret_cast<uintptr_t>(p), bytes, kind};
  *ptr = p;
  return cudaSuccess;
}

cudaError_t release(void* ptr, MemoryKind kind) {
  if (ptr == nullptr) return cudaSuccess;
  if (refuse_during_capture()) return cudaErrorStreamCaptureUnsupported;
  State& s = state();
  auto it = s.allocations.find(reinterpret_cast<uintptr_t>(ptr));
  if (it == s.allocations.end() || it->second.kind != kind) return cudaErrorInvalidValue;
  // CUDA's free waits for the device to be done with the memory.
  flush_all();
  if (kind == MemoryKind::device) s.device_in_use -= (it->second.size + kAlignment - 1) / kAlignment * kAlignment;
  s.allocations.erase(it);
  ::operator delete(ptr, std::align_val_t(kAlignment));
  return cudaSuccess;
}

void run_front(CUstream_st* st) {
  Op op = std::move(st->queue.front());
  st->queue.pop_front();
  op.run();
}

// Where a memcpy's pointers live, checked against the kind the caller named.
cudaError_t check_copy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind, MemoryKind* dk, MemoryKind* sk) {
  bool dst_over = false, src_over = false;
  const Allocation* da = find_allocation(dst, bytes, &dst_over);
  const Allocation* sa = find_allocation(src, bytes, &src_over);
  *dk = da != nullptr ? da->kind : MemoryKind::pageable;
  *sk = sa != nullptr ? sa->kind : MemoryKind::pageable;
  if (bytes == 0) return cudaSuccess;
  if (dst == nullptr || src == nullptr) return cudaErrorInvalidValue;
  if (dst_over || src_over) return cudaErrorInvalidValue;
  const bool dst_dev = *dk == MemoryKind::device, src_dev = *sk == MemoryKind::device;
  switch (kind) {
    case cudaMemcpyHostToDevice:
      return dst_dev && !src_dev ? cudaSuccess : cudaErrorInvalidValue;
    case cudaMemcpyDeviceToHost:
      return src_dev && !dst_dev ? cudaSuccess : cudaErrorInvalidValue;
    case cudaMemcpyDeviceToDevice:
      return src_dev && dst_dev ? cudaSuccess : cudaErrorInvalidValue;
    case cudaMemcpyHostToHost:
      return host_side(*dk) && host_side(*sk) ? cudaSuccess : cudaErrorInvalidValue;
    case cudaMemcpyDefault:
      return cudaSuccess;
  }
  return cudaErrorInvalidMemcpyDirection;
}

cudaError_t copy_async(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind, CUstream_st* st) {
  MemoryKind dk, sk;
  if (cudaError_t e = check_copy(dst, src, bytes, kind, &dk, &sk); e != cudaSuccess) return e;
  if (bytes == 0) return cudaSuccess;
  const std::string what = fmt::format("cudaMemcpyAsync of {} bytes", bytes);
  if (sk == MemoryKind::pageable) {
    // CUDA stages a pageable source before the call returns: the caller may reuse it at once.
    if (st->capturing) return enqueue(st, Op{what, nullptr}, false);
    auto staged = std::make_shared<std::vector<unsigned char>>(static_cast<const unsigned char*>(src),
                                                               static_cast<const unsigned char*>(src) + bytes);
    return enqueue(st, Op{what, [dst, staged] { std::memcpy(dst, staged->data(), staged->size()); }});
  }
  if (dk == MemoryKind::pageable) {
    // Into pageable memory the copy is synchronous: the call returns with the bytes there.
    if (st->capturing) return enqueue(st, Op{what, nullptr}, false);
    cudaError_t e = enqueue(st, Op{what, [dst, src, bytes] { std::memcpy(dst, src, bytes); }});
    if (e == cudaSuccess) flush(st);
    return e;
  }
  // Device and pinned memory are read and written when the stream gets there.
  return enqueue(st, Op{what, [dst, src, bytes] { std::memmove(dst, src, bytes); }});
}

cudaError_t memset_async(void* dst, int value, size_t bytes, CUstream_st* st) {
  if (bytes == 0) return cudaSuccess;
  bool over = false;
  const Allocation* a = find_allocation(dst, bytes, &over);
  if (a == nullptr || a->kind != MemoryKind::device || over) return cudaErrorInvalidValue;
  return enqueue(st, Op{fmt::format("cudaMemsetAsync of {} bytes", bytes),
                        [dst, value, bytes] { std::memset(dst, value, bytes); }});
}

CUstream_st* capturing_stream_of_this_thread() {
  State& s = state();
  for (CUstream_st* st : s.streams) {
    if (!st->capturing) continue;
    if (st->capture_mode == cudaStreamCaptureModeGlobal) return st;
    if (st->capture_mode == cudaStreamCaptureModeThreadLocal && st->capture_thread == std::this_thread::get_id())
      return st;
  }
  return nullptr;
}

bool valid_stream(CUstream_st* st) { return st == &state().legacy_stream || state().streams.count(st) != 0; }

}  // namespace

std::recursive_mutex& api_mutex() {
  static std::recursive_mutex m;
  return m;
}

const Config& config() {
  static const Config c = read_config();
  return c;
}

void fault(const std::string& message) {
  std::fprintf(stderr, "emulated GPU fault: %s\n", message.c_str());
  std::fflush(stderr);
  std::abort();
}

const Allocation* find_allocation(const void* p, size_t bytes, bool* overflows) {
  if (overflows != nullptr) *overflows = false;
  if (p == nullptr) return nullptr;
  State& s = state();
  const auto addr = reinterpret_cast<uintptr_t>(p);
  auto it = s.allocations.upper_bound(addr);
  if (it == s.allocations.begin()) return nullptr;
  --it;
  const Allocation& a = it->second;
  if (addr > a.base + a.size) return nullptr;  // one past the end still belongs to it
  if (overflows != nullptr) *overflows = addr + bytes > a.base + a.size;
  return &a;
}

MemoryKind memory_kind(const void* p) {
  const Allocation* a = find_allocation(p);
  return a != nullptr ? a->kind : MemoryKind::pageable;
}

CUstream_st* resolve(cudaStream_t s) { return s == nullptr ? &state().legacy_stream : s; }

cudaError_t enqueue(CUstream_st* st, Op op, bool capturable) {
  if (st->capturing) {
    if (!capturable) {
      st->capture_invalidated = true;
      return cudaErrorStreamCaptureUnsupported;
    }
    st->captured.push_back(std::move(op));
    return cudaSuccess;
  }
  st->queue.push_back(std::move(op));
  return cudaSuccess;
}

void flush(CUstream_st* st) {
  while (!st->queue.empty()) run_front(st);
}

void flush_all() {
  State& s = state();
  flush(&s.legacy_stream);
  for (CUstream_st* st : s.streams) flush(st);
}

bool refuse_during_capture() {
  CUstream_st* st = capturing_stream_of_this_thread();
  if (st == nullptr) return false;
  st->capture_invalidated = true;
  return true;
}

void count_launch(const std::string& name) { ++state().launches[name]; }

int max_dynamic_shared(const void* kernel) {
  auto it = state().max_dynamic_shared.find(kernel);
  return it != state().max_dynamic_shared.end() ? it->second : 0;
}

void set_last_error(cudaError_t e) {
  if (e != cudaSuccess) last_error = e;
}

cudaError_t enqueue_launch(LaunchRequest r) {
  Lock lock(api_mutex());
  auto fail = [](cudaError_t e) {
    set_last_error(e);
    return e;
  };
  const uint64_t threads = uint64_t(r.block.x) * r.block.y * r.block.z;
  if (threads == 0 || threads > 1024 || r.block.z > 64 || r.grid.x == 0 || r.grid.y == 0 || r.grid.z == 0 ||
      r.grid.x > 0x7fffffffu || r.grid.y > 65535 || r.grid.z > 65535)
    return fail(cudaErrorInvalidConfiguration);
  // Above 48 KB a kernel must have opted in with cudaFuncSetAttribute, as on the GPU.
  const size_t limit = std::max<size_t>(48 * 1024, size_t(max_dynamic_shared(r.kernel)));
  if (r.shared_bytes > limit) return fail(cudaErrorInvalidValue);
  CUstream_st* st = resolve(r.stream);
  if (!valid_stream(st)) return fail(cudaErrorInvalidResourceHandle);
  for (size_t i = 0; i < r.pointers.size(); ++i) {
    const void* p = r.pointers[i];
    if (p != nullptr && memory_kind(p) == MemoryKind::pageable)
      fault(fmt::format("launching {}: pointer argument {} ({}) is host memory, not device or pinned memory", r.name,
                        i, p));
  }
  auto req = std::make_shared<LaunchRequest>(std::move(r));
  return enqueue(st, Op{"kernel " + req->name, [req] { run_kernel(*req); }});
}

std::string short_kernel_name(const char* pretty) {
  std::string_view s(pretty);
  // GCC: "... [with auto Kernel = ns::name<args>]"; clang: "... [Kernel = &ns::name<args>]".
  const size_t at = s.find("Kernel = ");
  std::string name(at == std::string_view::npos ? s : s.substr(at + 9));
  if (!name.empty() && name.back() == ']') name.pop_back();
  if (!name.empty() && name.front() == '&') name.erase(0, 1);
  for (const char* anon : {"(anonymous namespace)::", "{anonymous}::"})
    for (size_t p; (p = name.find(anon)) != std::string::npos;) name.erase(p, std::strlen(anon));
  // Drop the remaining namespace (and class) qualifiers, outside and inside template arguments.
  std::string out;
  for (size_t i = 0; i < name.size(); ++i) {
    if (name[i] == ':' && i + 1 < name.size() && name[i + 1] == ':') {
      const size_t cut = out.find_last_of("<, (*&");
      out.erase(cut == std::string::npos ? 0 : cut + 1);
      ++i;
      continue;
    }
    out += name[i];
  }
  return out;
}

std::map<std::string, uint64_t> launch_counts() {
  Lock lock(api_mutex());
  return state().launches;
}

Order current_order() { return order_override().set ? order_override().order : config().order; }
uint64_t current_seed() { return order_override().set ? order_override().seed : config().seed; }

bool set_schedule_order(const char* order) {
  Lock lock(api_mutex());
  OrderOverride o;
  if (!parse_order(order, &o.order, &o.seed)) return false;
  o.set = true;
  order_override() = o;
  return true;
}

const char* schedule_order() {
  switch (current_order()) {
    case Order::forward:
      return "forward";
    case Order::reverse:
      return "reverse";
    case Order::random:
      return "random";
  }
  return "?";
}

}  // namespace lowbit_emu

using namespace lowbit_emu;

// --- device ---------------------------------------------------------------------------------------
cudaError_t cudaGetDeviceCount(int* count) {
  if (count == nullptr) return cudaErrorInvalidValue;
  *count = 1;
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int device) { return device == 0 ? cudaSuccess : cudaErrorInvalidDevice; }
cudaError_t cudaGetDevice(int* device) {
  if (device == nullptr) return cudaErrorInvalidValue;
  *device = 0;
  return cudaSuccess;
}
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int device) {
  if (p == nullptr) return cudaErrorInvalidValue;
  if (device != 0) return cudaErrorInvalidDevice;
  *p = cudaDeviceProp{};
  std::snprintf(p->name, sizeof(p->name), "lowbit emulated GPU (sm_90 limits, runs on the CPU)");
  p->totalGlobalMem = config().device_bytes;
  p->sharedMemPerBlock = 48 * 1024;
  p->sharedMemPerBlockOptin = 227 * 1024;
  p->regsPerBlock = 65536;
  p->warpSize = 32;
  p->maxThreadsPerBlock = 1024;
  p->maxThreadsDim[0] = 1024;
  p->maxThreadsDim[1] = 1024;
  p->maxThreadsDim[2] = 64;
  p->maxGridSize[0] = 0x7fffffff;
  p->maxGridSize[1] = 65535;
  p->maxGridSize[2] = 65535;
  p->major = 9;
  p->minor = 0;
  p->multiProcessorCount = 132;
  p->l2CacheSize = 50 << 20;
  p->memoryBusWidth = 5120;
  return cudaSuccess;
}
cudaError_t cudaDriverGetVersion(int* v) {
  if (v == nullptr) return cudaErrorInvalidValue;
  *v = 13000;
  return cudaSuccess;
}
cudaError_t cudaRuntimeGetVersion(int* v) { return cudaDriverGetVersion(v); }

cudaError_t cudaDeviceSynchronize() {
  Lock lock(api_mutex());
  if (refuse_during_capture()) return cudaErrorStreamCaptureUnsupported;
  flush_all();
  return cudaSuccess;
}

cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes) {
  Lock lock(api_mutex());
  if (free_bytes == nullptr || total_bytes == nullptr) return cudaErrorInvalidValue;
  *total_bytes = config().device_bytes;
  *free_bytes = config().device_bytes - state().device_in_use;
  return cudaSuccess;
}

// --- errors ---------------------------------------------------------------------------------------
cudaError_t cudaGetLastError() {
  const cudaError_t e = last_error;
  last_error = cudaSuccess;
  return e;
}
cudaError_t cudaPeekAtLastError() { return last_error; }

const char* cudaGetErrorName(cudaError_t e) {
  switch (e) {
#define LOWBIT_EMU_NAME(x) \
  case x:                  \
    return #x;
    LOWBIT_EMU_NAME(cudaSuccess)
    LOWBIT_EMU_NAME(cudaErrorInvalidValue)
    LOWBIT_EMU_NAME(cudaErrorMemoryAllocation)
    LOWBIT_EMU_NAME(cudaErrorInitializationError)
    LOWBIT_EMU_NAME(cudaErrorInvalidConfiguration)
    LOWBIT_EMU_NAME(cudaErrorInvalidDevicePointer)
    LOWBIT_EMU_NAME(cudaErrorInvalidMemcpyDirection)
    LOWBIT_EMU_NAME(cudaErrorInsufficientDriver)
    LOWBIT_EMU_NAME(cudaErrorNoDevice)
    LOWBIT_EMU_NAME(cudaErrorInvalidDevice)
    LOWBIT_EMU_NAME(cudaErrorInvalidResourceHandle)
    LOWBIT_EMU_NAME(cudaErrorNotReady)
    LOWBIT_EMU_NAME(cudaErrorIllegalAddress)
    LOWBIT_EMU_NAME(cudaErrorLaunchOutOfResources)
    LOWBIT_EMU_NAME(cudaErrorLaunchFailure)
    LOWBIT_EMU_NAME(cudaErrorNotSupported)
    LOWBIT_EMU_NAME(cudaErrorStreamCaptureUnsupported)
    LOWBIT_EMU_NAME(cudaErrorStreamCaptureInvalidated)
    LOWBIT_EMU_NAME(cudaErrorStreamCaptureWrongThread)
    LOWBIT_EMU_NAME(cudaErrorUnknown)
#undef LOWBIT_EMU_NAME
  }
  return "cudaErrorUnknown";
}

const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess:
      return "no error";
    case cudaErrorInvalidValue:
      return "invalid argument";
    case cudaErrorMemoryAllocation:
      return "out of memory";
    case cudaErrorInvalidConfiguration:
      return "invalid configuration argument";
    case cudaErrorInvalidResourceHandle:
      return "invalid resource handle";
    case cudaErrorNotReady:
      return "device not ready";
    case cudaErrorStreamCaptureUnsupported:
      return "operation not permitted when stream is capturing";
    case cudaErrorStreamCaptureInvalidated:
      return "operation failed due to a previous error during capture";
    default:
      return cudaGetErrorName(e);
  }
}

// --- memory ---------------------------------------------------------------------------------------
cudaError_t cudaMalloc(void** ptr, size_t bytes) {
  Lock lock(api_mutex());
  return allocate(ptr, bytes, MemoryKind::device);
}
cudaError_t cudaFree(void* ptr) {
  Lock lock(api_mutex());
  return release(ptr, MemoryKind::device);
}
cudaError_t cudaMallocHost(void** ptr, size_t bytes) {
  Lock lock(api_mutex());
  return allocate(ptr, bytes, MemoryKind::pinned);
}
cudaError_t cudaHostAlloc(void** ptr, size_t bytes, unsigned int) { return cudaMallocHost(ptr, bytes); }
cudaError_t cudaFreeHost(void* ptr) {
  Lock lock(api_mutex());
  return release(ptr, MemoryKind::pinned);
}

cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind) {
  Lock lock(api_mutex());
  if (refuse_during_capture()) return cudaErrorStreamCaptureUnsupported;
  CUstream_st* st = resolve(nullptr);
  MemoryKind dk, sk;
  if (cudaError_t e = check_copy(dst, src, bytes, kind, &dk, &sk); e != cudaSuccess) return e;
  // On the legacy stream: ordered after its work (not after non-blocking streams'), then done.
  if (bytes > 0) enqueue(st, Op{"cudaMemcpy", [dst, src, bytes] { std::memmove(dst, src, bytes); }});
  flush(st);
  return cudaSuccess;
}

cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind, cudaStream_t stream) {
  Lock lock(api_mutex());
  CUstream_st* st = resolve(stream);
  if (!valid_stream(st)) return cudaErrorInvalidResourceHandle;
  return copy_async(dst, src, bytes, kind, st);
}

cudaError_t cudaMemset(void* dst, int value, size_t bytes) {
  Lock lock(api_mutex());
  if (refuse_during_capture()) return cudaErrorStreamCaptureUnsupported;
  CUstream_st* st = resolve(nullptr);
  cudaError_t e = memset_async(dst, value, bytes, st);
  flush(st);
  return e;
}

cudaError_t cudaMemsetAsync(void* dst, int value, size_t bytes, cudaStream_t stream) {
  Lock lock(api_mutex());
  CUstream_st* st = resolve(stream);
  if (!valid_stream(st)) return cudaErrorInvalidResourceHandle;
  return memset_async(dst, value, bytes, st);
}

// --- streams --------------------------------------------------------------------------------------
cudaError_t cudaStreamCreate(cudaStream_t* stream) { return cudaStreamCreateWithFlags(stream, cudaStreamDefault); }
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned int flags) {
  Lock lock(api_mutex());
  if (stream == nullptr) return cudaErrorInvalidValue;
  auto* st = new CUstream_st();
  st->flags = flags;
  state().streams.insert(st);
  *stream = st;
  return cudaSuccess;
}
cudaError_t cudaStreamDestroy(cudaStream_t stream) {
  Lock lock(api_mutex());
  if (stream == nullptr || state().streams.count(stream) == 0) return cudaErrorInvalidResourceHandle;
  flush(stream);  // queued work still runs, as on a GPU
  state().streams.erase(stream);
  delete stream;
  return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t stream) {
  Lock lock(api_mutex());
  CUstream_st* st = resolve(stream);
  if (!valid_stream(st)) return cudaErrorInvalidResourceHandle;
  if (st->capturing || refuse_during_capture()) {
    st->capture_invalidated = st->capture_invalidated || st->capturing;
    return cudaErrorStreamCaptureUnsupported;
  }
  flush(st);
  if (st == &state().legacy_stream) flush_all();
  return cudaSuccess;
}
cudaError_t cudaStreamQuery(cudaStream_t stream) {
  Lock lock(api_mutex());
  CUstream_st* st = resolve(stream);
  if (!valid_stream(st)) return cudaErrorInvalidResourceHandle;
  if (st->capturing) return cudaErrorStreamCaptureUnsupported;
  // Nothing runs by itself here; a query is where a polling host gets the work done.
  flush(st);
  return cudaSuccess;
}
cudaError_t cudaStreamWaitEvent(cudaStream_t stream, cudaEvent_t event, unsigned int) {
  Lock lock(api_mutex());
  CUstream_st* st = resolve(stream);
  if (!valid_stream(st) || event == nullptr) return cudaErrorInvalidResourceHandle;
  CUstream_st* source = event->stream;
  if (source == nullptr || source == st) return cudaSuccess;
  // Work queued on `stream` after this point runs after the event's stream reaches the record.
  return enqueue(st, Op{"cudaStreamWaitEvent", [event] {
                          while (event->pending > 0 && event->stream != nullptr && !event->stream->queue.empty())
                            run_front(event->stream);
                        }});
}
cudaError_t cudaStreamBeginCapture(cudaStream_t stream, cudaStreamCaptureMode mode) {
  Lock lock(api_mutex());
  CUstream_st* st = resolve(stream);
  if (st == &state().legacy_stream) return cudaErrorStreamCaptureUnsupported;  // the legacy stream cannot be captured
  if (!valid_stream(st)) return cudaErrorInvalidResourceHandle;
  if (st->capturing) return cudaErrorStreamCaptureUnsupported;
  st->capturing = true;
  st->capture_invalidated = false;
  st->capture_mode = mode;
  st->capture_thread = std::this_thread::get_id();
  st->captured.clear();
  return cudaSuccess;
}
cudaError_t cudaStreamEndCapture(cudaStream_t stream, cudaGraph_t* graph) {
  Lock lock(api_mutex());
  CUstream_st* st = resolve(stream);
  if (!valid_stream(st) || graph == nullptr) return cudaErrorInvalidValue;
  *graph = nullptr;
  if (!st->capturing) return cudaErrorInvalidValue;
  st->capturing = false;
  if (st->capture_mode != cudaStreamCaptureModeRelaxed && st->capture_thread != std::this_thread::get_id())
    return cudaErrorStreamCaptureWrongThread;
  std::vector<Op> ops = std::move(st->captured);
  st->captured.clear();
  if (st->capture_invalidated) return cudaErrorStreamCaptureInvalidated;
  *graph = new CUgraph_st{std::move(ops)};
  return cudaSuccess;
}
cudaError_t cudaStreamIsCapturing(cudaStream_t stream, cudaStreamCaptureStatus* status) {
  Lock lock(api_mutex());
  CUstream_st* st = resolve(stream);
  if (!valid_stream(st) || status == nullptr) return cudaErrorInvalidValue;
  *status = !st->capturing            ? cudaStreamCaptureStatusNone
            : st->capture_invalidated ? cudaStreamCaptureStatusInvalidated
                                      : cudaStreamCaptureStatusActive;
  return cudaSuccess;
}

// --- events ---------------------------------------------------------------------------------------
cudaError_t cudaEventCreate(cudaEvent_t* event) { return cudaEventCreateWithFlags(event, cudaEventDefault); }
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* event, unsigned int flags) {
  Lock lock(api_mutex());
  if (event == nullptr) return cudaErrorInvalidValue;
  if (refuse_during_capture()) return cudaErrorStreamCaptureUnsupported;
  *event = new CUevent_st();
  (*event)->flags = flags;
  return cudaSuccess;
}
cudaError_t cudaEventDestroy(cudaEvent_t event) {
  Lock lock(api_mutex());
  if (event == nullptr) return cudaErrorInvalidResourceHandle;
  // Records still queued would touch the event: run them first.
  if (event->pending > 0 && event->stream != nullptr) flush(event->stream);
  delete event;
  return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream) {
  Lock lock(api_mutex());
  CUstream_st* st = resolve(stream);
  if (event == nullptr || !valid_stream(st)) return cudaErrorInvalidResourceHandle;
  if (!st->capturing) {
    event->stream = st;
    ++event->pending;
  }
  return enqueue(st, Op{"cudaEventRecord", [event, st] {
                          if (event->stream == st && event->pending > 0) --event->pending;
                          event->timed = true;
                          event->time = std::chrono::steady_clock::now();
                        }});
}
cudaError_t cudaEventSynchronize(cudaEvent_t event) {
  Lock lock(api_mutex());
  if (event == nullptr) return cudaErrorInvalidResourceHandle;
  if (refuse_during_capture()) return cudaErrorStreamCaptureUnsupported;
  while (event->pending > 0 && event->stream != nullptr && !event->stream->queue.empty()) run_front(event->stream);
  return cudaSuccess;
}
cudaError_t cudaEventQuery(cudaEvent_t event) {
  Lock lock(api_mutex());
  if (event == nullptr) return cudaErrorInvalidResourceHandle;
  // Nothing runs by itself: a query lets the work before the event run.
  while (event->pending > 0 && event->stream != nullptr && !event->stream->queue.empty()) run_front(event->stream);
  return cudaSuccess;
}
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end) {
  Lock lock(api_mutex());
  if (ms == nullptr || start == nullptr || end == nullptr) return cudaErrorInvalidValue;
  if ((start->flags & cudaEventDisableTiming) || (end->flags & cudaEventDisableTiming))
    return cudaErrorInvalidResourceHandle;
  if (start->pending > 0 || end->pending > 0) return cudaErrorNotReady;
  if (!start->timed || !end->timed) return cudaErrorInvalidResourceHandle;
  *ms = std::chrono::duration<float, std::milli>(end->time - start->time).count();
  return cudaSuccess;
}

// --- graphs ---------------------------------------------------------------------------------------
cudaError_t cudaGraphInstantiate(cudaGraphExec_t* exec, cudaGraph_t graph, unsigned long long) {
  Lock lock(api_mutex());
  if (exec == nullptr || graph == nullptr) return cudaErrorInvalidValue;
  if (refuse_during_capture()) return cudaErrorStreamCaptureUnsupported;
  *exec = new CUgraphExec_st{graph->ops};
  return cudaSuccess;
}
cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t stream) {
  Lock lock(api_mutex());
  CUstream_st* st = resolve(stream);
  if (exec == nullptr || !valid_stream(st)) return cudaErrorInvalidResourceHandle;
  // Replays run the recorded operations with their recorded arguments.
  for (const Op& op : exec->ops)
    if (cudaError_t e = enqueue(st, op); e != cudaSuccess) return e;
  return cudaSuccess;
}
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec) {
  Lock lock(api_mutex());
  if (exec == nullptr) return cudaErrorInvalidValue;
  flush_all();  // queued replays hold copies of the operations, but finish them as CUDA would
  delete exec;
  return cudaSuccess;
}
cudaError_t cudaGraphDestroy(cudaGraph_t graph) {
  Lock lock(api_mutex());
  if (graph == nullptr) return cudaErrorInvalidValue;
  delete graph;
  return cudaSuccess;
}

cudaError_t lowbit_emu_func_set_attribute(const void* func, cudaFuncAttribute attr, int value) {
  Lock lock(api_mutex());
  if (func == nullptr) return cudaErrorInvalidValue;
  if (attr == cudaFuncAttributeMaxDynamicSharedMemorySize) {
    if (value < 0 || value > 227 * 1024) return cudaErrorInvalidValue;  // sharedMemPerBlockOptin
    state().max_dynamic_shared[func] = value;
    return cudaSuccess;
  }
  if (attr == cudaFuncAttributePreferredSharedMemoryCarveout) return cudaSuccess;
  return cudaErrorInvalidValue;
}
