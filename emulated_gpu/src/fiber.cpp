#include "fiber.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include <boost/context/detail/fcontext.hpp>

#if defined(__SANITIZE_ADDRESS__)
#define LOWBIT_EMU_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define LOWBIT_EMU_ASAN 1
#endif
#endif

#if LOWBIT_EMU_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

namespace lowbit_emu {

namespace bctx = boost::context::detail;

namespace {

size_t stack_bytes() {
  // Kernels keep small arrays in registers; a few KB of frames is typical. ASan's redzones and
  // its larger frames want more. LOWBIT_EMU_STACK_KIB overrides.
#if LOWBIT_EMU_ASAN
  size_t kib = 512;
#else
  size_t kib = 192;  // 128 KB for frames + up to 64 KB of cache colouring (make_context)
#endif
  if (const char* v = std::getenv("LOWBIT_EMU_STACK_KIB")) {
    const long parsed = std::strtol(v, nullptr, 10);
    if (parsed >= 16) kib = size_t(parsed);
  }
  return kib << 10;
}

}  // namespace

StackPool::~StackPool() {
  const size_t page = size_t(sysconf(_SC_PAGESIZE));
  for (const Stack& s : stacks_) munmap(static_cast<char*>(s.lowest) - page, s.size + page);
}

void StackPool::reserve(size_t n) {
  const size_t page = size_t(sysconf(_SC_PAGESIZE));
  const size_t size = (stack_bytes() + page - 1) / page * page;
  while (stacks_.size() < n) {
    void* base = mmap(nullptr, size + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (base == MAP_FAILED) {
      std::fprintf(stderr, "emulated GPU: cannot map a %zu KiB thread stack\n", size >> 10);
      std::abort();
    }
    mprotect(base, page, PROT_NONE);  // an overflowing thread faults instead of corrupting its neighbour
    stacks_.push_back(Stack{static_cast<char*>(base) + page, size});
  }
}

namespace {

// Fibers start here: fcontext passes (from, data), data being the StartData of the first switch.
void trampoline(bctx::transfer_t t) {
  const StartData start = *static_cast<StartData*>(t.data);
  start.entry(t.fctx, start.data);
  std::fprintf(stderr, "emulated GPU: a fiber returned from its entry\n");
  std::abort();
}

}  // namespace

Context make_context(const Stack& stack, size_t index) {
  // Stacks sit at one fixed stride, so their tops would all map to the same cache sets and 32
  // lanes switching in turn would evict each other: start each a different number of cache lines
  // below the top (within 64 KB, which the stack size allows for).
  const size_t color = (index * 17 % 1024) * 64;
  void* top = static_cast<char*>(stack.lowest) + stack.size - color;  // fcontext wants the top: stacks grow down
  return bctx::make_fcontext(top, stack.size - color, trampoline);
}

Transfer switch_to(Context to, void* data) {
  bctx::transfer_t t = bctx::jump_fcontext(to, data);
  return Transfer{t.fctx, t.data};
}

void begin_switch(void** fake_stack_save, const void* target_bottom, size_t target_size, bool dying) {
#if LOWBIT_EMU_ASAN
  __sanitizer_start_switch_fiber(dying ? nullptr : fake_stack_save, target_bottom, target_size);
#else
  (void)fake_stack_save;
  (void)target_bottom;
  (void)target_size;
  (void)dying;
#endif
}

void end_switch(void* fake_stack_save, const void** source_bottom, size_t* source_size) {
#if LOWBIT_EMU_ASAN
  __sanitizer_finish_switch_fiber(fake_stack_save, source_bottom, source_size);
#else
  (void)fake_stack_save;
  (void)source_bottom;
  (void)source_size;
#endif
}

void unpoison(const Stack& stack) {
#if LOWBIT_EMU_ASAN
  // A fiber that ran to its end has popped its frames (ASan unpoisons them on return); what
  // may stay poisoned is the entry frames at the top, which never return.
  const size_t top = stack.size < (size_t(8) << 10) ? stack.size : (size_t(8) << 10);
  __asan_unpoison_memory_region(static_cast<char*>(stack.lowest) + stack.size - top, top);
#else
  (void)stack;
#endif
}

}  // namespace lowbit_emu
