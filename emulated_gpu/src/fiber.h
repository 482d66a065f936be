// Fibers for the emulated GPU's threads: Boost.Context's fcontext (a register save and a stack
// switch, ~10 ns) on stacks from a pool with a guard page each, annotated for AddressSanitizer
// so that ASan follows the stack switches (and still sees device-memory overflows).
#pragma once
#include <cstddef>
#include <vector>

namespace lowbit_emu {

// Where a suspended fiber (or the scheduler) resumes.
using Context = void*;

struct Stack {
  void* lowest = nullptr;  // first usable byte (above the guard page)
  size_t size = 0;
};

// Stacks are reused launch after launch: mapping 1024 of them per block would dominate.
class StackPool {
 public:
  StackPool() = default;
  StackPool(const StackPool&) = delete;
  StackPool& operator=(const StackPool&) = delete;
  ~StackPool();
  // At least n stacks; stack i stays the same memory for the life of the pool.
  void reserve(size_t n);
  const Stack& at(size_t i) const { return stacks_[i]; }

 private:
  std::vector<Stack> stacks_;
};

// The entry function of a fiber receives (the context that started it, the data pointer).
using FiberEntry = void (*)(Context from, void* data);

// What the first switch to a fresh context must pass: the entry and its data.
struct StartData {
  FiberEntry entry;
  void* data;
};

// A fresh context on `stack` (the index-th of the pool: it sets where in the stack it starts);
// the first switch_to(it, &start) runs start.entry(from, start.data).
Context make_context(const Stack& stack, size_t index);

// Switches to `to`, handing it `data`; returns (when something switches back) the context that
// switched back and the data it passed.
struct Transfer {
  Context from;
  void* data;
};
Transfer switch_to(Context to, void* data);

// ASan bookkeeping around a switch: call begin_switch just before switch_to and end_switch just
// after it returns (and first thing in a fiber's entry). `dying` marks the last switch away
// from a fiber that will never be resumed.
void begin_switch(void** fake_stack_save, const void* target_bottom, size_t target_size, bool dying);
void end_switch(void* fake_stack_save, const void** source_bottom, size_t* source_size);
// Clears stale ASan poison from a reused stack.
void unpoison(const Stack& stack);

}  // namespace lowbit_emu
