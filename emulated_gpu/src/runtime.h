// Internals shared by the emulated device's parts: the memory registry, queued operations,
// streams, faults and configuration. One recursive mutex guards all of it; work queued on a
// stream runs on the host thread that synchronizes, inside that lock.
#pragma once
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "cuda_runtime_api.h"
#include "lowbit_emu/launch.h"

struct CUstream_st;
struct CUevent_st;
struct CUgraph_st;
struct CUgraphExec_st;

namespace lowbit_emu {

std::recursive_mutex& api_mutex();
using Lock = std::lock_guard<std::recursive_mutex>;

// --- configuration (environment, read once) -----------------------------------------------
enum class Order { forward, reverse, random };
struct Config {
  Order order = Order::forward;
  uint64_t seed = 1;
  size_t device_bytes = size_t(16) << 30;  // LOWBIT_EMU_DEVICE_MEMORY_MIB
};
const Config& config();
// The scheduling order in force (config()'s, unless a test set another).
Order current_order();
uint64_t current_seed();

// --- faults: an emulated device error that a real GPU would report as a crash --------------
[[noreturn]] void fault(const std::string& message);

// --- memory ---------------------------------------------------------------------------------
enum class MemoryKind { pageable, device, pinned };
struct Allocation {
  uintptr_t base = 0;
  size_t size = 0;
  MemoryKind kind = MemoryKind::pageable;
};
// The registered allocation holding [p, p + bytes) (device or pinned), or null for memory the
// runtime did not allocate (pageable host memory). A range that starts inside an allocation but
// runs past its end returns the allocation and sets *overflows.
const Allocation* find_allocation(const void* p, size_t bytes = 0, bool* overflows = nullptr);
MemoryKind memory_kind(const void* p);

// --- queued work ----------------------------------------------------------------------------
struct Op {
  std::string what;            // for fault messages
  std::function<void()> run;   // executes the operation
};

// The stream a handle names (nullptr = the legacy default stream).
CUstream_st* resolve(cudaStream_t s);
// Queues op on the stream, or appends it to the graph being captured on it. Returns
// cudaErrorStreamCaptureUnsupported (and invalidates the capture) for work that cannot be captured.
cudaError_t enqueue(CUstream_st* stream, Op op, bool capturable = true);
// Runs queued work: one stream, or all streams.
void flush(CUstream_st* stream);
void flush_all();
// True (and the capture invalidated) when a host-synchronizing or allocating call is not allowed
// now because this thread is capturing (global or thread-local mode, as CUDA rules).
bool refuse_during_capture();

// --- kernels --------------------------------------------------------------------------------
void run_kernel(const LaunchRequest& launch);  // every block, on the calling host thread
void count_launch(const std::string& name);
int max_dynamic_shared(const void* kernel);  // the cudaFuncAttributeMaxDynamicSharedMemorySize set

void set_last_error(cudaError_t e);

}  // namespace lowbit_emu
