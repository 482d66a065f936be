// Runs a kernel launch: blocks one after another, the threads of a block as fibers that switch
// only at barriers and warp collectives, in the configured order (forward, reverse, random).
//
// Scheduling: the scheduler picks a warp with runnable lanes and runs one pass over its lanes
// (in lane order, or shuffled); each lane runs until it parks at a collective, at a barrier, or
// exits, and then hands the CPU straight to the next runnable lane of the pass (one context
// switch per lane and collective; the last lane of a pass returns to the scheduler). A
// collective completes when every lane of its mask has parked at it; those lanes are then
// runnable with their results. A barrier completes when every thread of the block is at
// it. forward/reverse run a warp until all of its lanes are parked at a barrier (or done), so
// warp 0 (or the last warp) always goes first; random re-picks the warp after every pass, which
// interleaves warps at collective granularity.
//
// Faults (each aborts with the kernel, block and thread): a thread exiting, or parking at a
// barrier, while lanes of its warp wait for it in a collective; a thread exiting while others of
// its block wait at a barrier; threads of a block at different barriers; lanes of a warp at
// different collectives (or the same one with different masks); a shuffle reading a lane outside
// its mask; a mask without the caller's own lane or naming lanes the block does not have.
#include <pthread.h>

#include <algorithm>
#include <bit>
#include <cstring>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "fiber.h"
#include "lowbit_emu/device.h"
#include "runtime.h"

namespace lowbit_emu {

thread_local const ThreadIndex* current_index = nullptr;

namespace {

enum class State : uint8_t { runnable, at_collective, at_barrier, exited };

struct Thread {
  ThreadIndex index;
  int linear = 0, warp = 0, lane = 0;
  State state = State::runnable;
  bool started = false;
  Context context = nullptr;  // where this fiber resumes
  void* fake_stack = nullptr;  // ASan's per-fiber bookkeeping
  // The collective or barrier this thread is parked at.
  WarpOp op = WarpOp::sync;
  unsigned mask = 0, size = 0;
  uint64_t bits = 0, result = 0;
  int param = 0, width = 32, predicate = 0;
  const char* name = "";
  const char* file = "";
  int line = 0;
};

struct Block {
  const LaunchRequest* launch = nullptr;
  std::vector<Thread>* threads = nullptr;
  int n_threads = 0, n_warps = 0;
  int n_exited = 0, n_at_barrier = 0;
  std::vector<int> runnable_in_warp;
  // Per warp, the lanes in each waiting state (bit l = lane l): O(1) completion and fault checks.
  std::vector<unsigned> lanes_at_collective, lanes_at_barrier, lanes_exited;
  std::unique_ptr<unsigned char[]> dynamic_shared;
  // The pass in progress: lanes of `pass_warp` in the order they get the CPU.
  int pass_warp = 0;
  std::vector<int> pass;
  size_t pass_next = 0;
  Context scheduler = nullptr;  // where the scheduler resumes
  void* scheduler_fake_stack = nullptr;
  Stack host_stack;             // the host thread's stack (ASan)
  const StackPool* stacks = nullptr;
};

thread_local Block* current_block = nullptr;

// Every state change goes through here, so the counts and lane masks stay consistent.
void set_state(Block& b, Thread& t, State s) {
  const size_t w = size_t(t.warp);
  const unsigned bit = 1u << t.lane;
  auto leave = [&](State old) {
    if (old == State::runnable) --b.runnable_in_warp[w];
    if (old == State::at_collective) b.lanes_at_collective[w] &= ~bit;
    if (old == State::at_barrier) {
      b.lanes_at_barrier[w] &= ~bit;
      --b.n_at_barrier;
    }
  };
  leave(t.state);
  t.state = s;
  if (s == State::runnable) ++b.runnable_in_warp[w];
  if (s == State::at_collective) b.lanes_at_collective[w] |= bit;
  if (s == State::at_barrier) {
    b.lanes_at_barrier[w] |= bit;
    ++b.n_at_barrier;
  }
  if (s == State::exited) {
    b.lanes_exited[w] |= bit;
    ++b.n_exited;
  }
}
thread_local Thread* current_thread = nullptr;

int lanes_in_warp(const Block& b, int warp) { return std::min(32, b.n_threads - 32 * warp); }

Thread& thread_at(Block& b, int warp, int lane) { return (*b.threads)[size_t(32 * warp + lane)]; }

std::string where(const Block& b, const Thread& t) {
  const ThreadIndex& i = t.index;
  return fmt::format("kernel {}, block ({},{},{}), thread ({},{},{}) [thread {} of the block, warp {} lane {}]",
                     b.launch->name, i.block_idx.x, i.block_idx.y, i.block_idx.z, i.thread_idx.x, i.thread_idx.y,
                     i.thread_idx.z, t.linear, t.warp, t.lane);
}

std::string site(const Thread& t) { return fmt::format("{} at {}:{}", t.name, t.file, t.line); }

// Same call site: __builtin_FILE() strings of one file may be distinct copies in different
// translation units.
bool same_site(const Thread& a, const Thread& b) {
  return a.line == b.line && (a.file == b.file || std::strcmp(a.file, b.file) == 0);
}

[[noreturn]] void thread_fault(const Block& b, const Thread& t, const std::string& what) {
  fault(where(b, t) + ": " + what);
}

// Who switched to a context: a lane, or null for the scheduler (so the switcher's own
// context can be stored where its next resumer will look for it).
struct FirstStart {
  Thread* target;
  Thread* from;
};

void fiber_main(Context from, void* data);

// Switches from `self` to `target` (null = the scheduler, on the host stack) and returns when
// something switches back to `self`. `dying`: self has exited and is never resumed.
void transfer(Block& b, Thread* self, Thread* target, bool dying = false) {
  void** fake = self != nullptr ? &self->fake_stack : &b.scheduler_fake_stack;
  const Stack& to_stack = target != nullptr ? b.stacks->at(size_t(target->linear)) : b.host_stack;
  begin_switch(fake, to_stack.lowest, to_stack.size, dying);
  current_thread = target;
  current_index = target != nullptr ? &target->index : nullptr;
  Transfer back;
  if (target != nullptr && !target->started) {
    target->started = true;
    FirstStart first{target, self};
    StartData start{fiber_main, &first};
    back = switch_to(target->context, &start);
  } else {
    back = switch_to(target != nullptr ? target->context : b.scheduler, self);
  }
  // Resumed: `back.data` names who switched here; its context is where it continues.
  end_switch(*fake, nullptr, nullptr);
  auto* switcher = static_cast<Thread*>(back.data);
  if (switcher != nullptr)
    switcher->context = back.from;
  else
    b.scheduler = back.from;
  current_thread = self;
  current_index = self != nullptr ? &self->index : nullptr;
}

// The next lane of the pass that can run, or null (the pass is over: back to the scheduler).
Thread* next_in_pass(Block& b) {
  while (b.pass_next < b.pass.size()) {
    Thread& t = (*b.threads)[size_t(32 * b.pass_warp + b.pass[b.pass_next++])];
    if (t.state == State::runnable) return &t;
  }
  return nullptr;
}

// A lane that cannot go on hands over to the next one.
void park(Block& b, Thread& self) { transfer(b, &self, next_in_pass(b)); }

// The lanes of t's warp that wait in a collective whose mask includes t.
const Thread* waiting_for(Block& b, const Thread& t) {
  for (unsigned waiting = b.lanes_at_collective[size_t(t.warp)] & ~(1u << t.lane); waiting != 0;
       waiting &= waiting - 1) {
    const Thread& o = thread_at(b, t.warp, std::countr_zero(waiting));
    if (o.mask >> t.lane & 1u) return &o;
  }
  return nullptr;
}

// Source lane of a shuffle for `lane`, CUDA's rules for width < 32 included; -1 = own value.
int shuffle_source(const Thread& t) {
  const int w = t.width, seg = t.lane & ~(w - 1);
  switch (t.op) {
    case WarpOp::shfl_idx:
      return seg + (t.param & (w - 1));
    case WarpOp::shfl_up:
      return t.lane - seg >= t.param ? t.lane - t.param : -1;
    case WarpOp::shfl_down:
      return t.lane - seg + t.param < w ? t.lane + t.param : -1;
    case WarpOp::shfl_xor: {
      const int src = t.lane ^ t.param;
      return src < seg + w ? src : -1;  // later groups are out of reach: own value
    }
    default:
      return -1;
  }
}

// Called by the lane that completes a group: every lane of `mask` is parked at a collective.
void complete_collective(Block& b, Thread& last) {
  const unsigned mask = last.mask;
  for (int l = 0; l < 32; ++l) {
    if (!(mask >> l & 1u)) continue;
    const Thread& o = thread_at(b, last.warp, l);
    if (o.mask != mask || o.op != last.op || !same_site(o, last) || o.width != last.width)
      thread_fault(b, last,
                   fmt::format("lanes of warp {} wait in different collectives: lane {} in {} (mask {:#010x}), lane {} "
                               "in {} (mask {:#010x})",
                               last.warp, last.lane, site(last), last.mask, o.lane, site(o), o.mask));
  }
  unsigned ballot = 0;
  for (int l = 0; l < 32; ++l)
    if ((mask >> l & 1u) && thread_at(b, last.warp, l).bits != 0) ballot |= 1u << l;
  for (int l = 0; l < 32; ++l) {
    if (!(mask >> l & 1u)) continue;
    Thread& o = thread_at(b, last.warp, l);
    switch (o.op) {
      case WarpOp::shfl_idx:
      case WarpOp::shfl_up:
      case WarpOp::shfl_down:
      case WarpOp::shfl_xor: {
        const int src = shuffle_source(o);
        if (src >= 0 && !(mask >> src & 1u))
          thread_fault(b, o, fmt::format("{} reads lane {}, which is not in its mask {:#010x}", site(o), src, mask));
        o.result = src < 0 ? o.bits : thread_at(b, o.warp, src).bits;
        break;
      }
      case WarpOp::ballot:
        o.result = ballot;
        break;
      case WarpOp::any:
        o.result = ballot != 0;
        break;
      case WarpOp::all:
        o.result = ballot == mask;
        break;
      case WarpOp::sync:
        o.result = 0;
        break;
      case WarpOp::match_any: {
        unsigned same = 0;
        for (int j = 0; j < 32; ++j)
          if ((mask >> j & 1u) && thread_at(b, o.warp, j).bits == o.bits) same |= 1u << j;
        o.result = same;
        break;
      }
    }
  }
  for (int l = 0; l < 32; ++l)
    if (mask >> l & 1u) set_state(b, thread_at(b, last.warp, l), State::runnable);
}

void on_exit(Block& b, Thread& self) {
  set_state(b, self, State::exited);
  if (const Thread* o = waiting_for(b, self))
    thread_fault(b, self, fmt::format("thread {} exited while lanes of its warp wait in {} (lane {})", self.linear,
                                      site(*o), o->lane));
  if (b.n_at_barrier > 0) {
    for (const Thread& o : *b.threads)
      if (o.state == State::at_barrier)
        thread_fault(b, self,
                     fmt::format("thread {} exited while {} threads of its block wait at {} (thread {} among them)",
                                 self.linear, b.n_at_barrier, site(o), o.linear));
  }
}

void fiber_main(Context from, void* data) {
  Block& b = *current_block;
  const FirstStart first = *static_cast<FirstStart*>(data);
  end_switch(nullptr, nullptr, nullptr);
  if (first.from != nullptr)
    first.from->context = from;
  else
    b.scheduler = from;
  current_thread = first.target;
  current_index = &first.target->index;
  b.launch->body->run();
  on_exit(b, *first.target);
  transfer(b, first.target, next_in_pass(b), true);  // never resumed
  std::abort();
}

class Schedule {
 public:
  Schedule(Order order, uint64_t seed) : order_(order), rng_(seed) {}
  // Lane order for one pass over a warp of n lanes.
  void lanes(int n, std::vector<int>& out) {
    out.resize(size_t(n));
    std::iota(out.begin(), out.end(), 0);
    if (order_ == Order::reverse) std::reverse(out.begin(), out.end());
    if (order_ == Order::random) std::shuffle(out.begin(), out.end(), rng_);
  }
  // The next warp to run among those with runnable lanes, or -1.
  int pick(const std::vector<int>& runnable) {
    const int n = int(runnable.size());
    if (order_ == Order::forward) {
      for (int w = 0; w < n; ++w)
        if (runnable[size_t(w)] > 0) return w;
      return -1;
    }
    if (order_ == Order::reverse) {
      for (int w = n - 1; w >= 0; --w)
        if (runnable[size_t(w)] > 0) return w;
      return -1;
    }
    int count = 0;
    for (int r : runnable) count += r > 0;
    if (count == 0) return -1;
    int k = int(std::uniform_int_distribution<int>(0, count - 1)(rng_));
    for (int w = 0; w < n; ++w)
      if (runnable[size_t(w)] > 0 && k-- == 0) return w;
    return -1;
  }
  bool one_pass() const { return order_ == Order::random; }
  std::mt19937_64& rng() { return rng_; }

 private:
  Order order_;
  std::mt19937_64 rng_;
};

void release_barrier(Block& b) {
  if (b.n_exited > 0) {
    const Thread* waiting = nullptr;
    for (const Thread& t : *b.threads)
      if (t.state == State::at_barrier) waiting = &t;
    for (const Thread& t : *b.threads)
      if (t.state == State::exited)
        thread_fault(b, t, fmt::format("thread {} exited while {} threads of its block wait at {} (thread {} among them)",
                                       t.linear, b.n_at_barrier, site(*waiting), waiting->linear));
  }
  const Thread* first = nullptr;
  int count = 0;
  for (const Thread& t : *b.threads) {
    if (t.state != State::at_barrier) continue;
    if (first == nullptr) first = &t;
    if (!same_site(t, *first))
      thread_fault(b, t, fmt::format("threads of a block wait at different barriers: thread {} at {}, thread {} at {}",
                                     first->linear, site(*first), t.linear, site(t)));
    count += t.predicate;
  }
  for (Thread& t : *b.threads) {
    t.result = uint64_t(count);
    set_state(b, t, State::runnable);
  }
}

[[noreturn]] void deadlock(Block& b) {
  std::string states;
  for (const Thread& t : *b.threads) {
    if (t.state == State::at_collective || t.state == State::at_barrier) {
      states = fmt::format("thread {} waits in {}", t.linear, site(t));
      break;
    }
  }
  fault(fmt::format("kernel {}, block ({},{},{}): no thread can make progress ({} exited, {} at a barrier; {})",
                    b.launch->name, (*b.threads)[0].index.block_idx.x, (*b.threads)[0].index.block_idx.y,
                    (*b.threads)[0].index.block_idx.z, b.n_exited, b.n_at_barrier, states));
}

// The host thread's stack, for ASan's switch annotations.
Stack host_stack() {
  thread_local Stack stack = [] {
    Stack st;
    pthread_attr_t attr;
    if (pthread_getattr_np(pthread_self(), &attr) == 0) {
      pthread_attr_getstack(&attr, &st.lowest, &st.size);
      pthread_attr_destroy(&attr);
    }
    return st;
  }();
  return stack;
}

struct Workers {
  StackPool stacks;
  std::vector<Thread> threads;
};

Workers& workers() {
  thread_local Workers w;
  return w;
}

void run_block(const LaunchRequest& launch, uint3 block_idx, Schedule& order) {
  Workers& w = workers();
  const dim3 bd = launch.block;
  const int n = int(bd.x * bd.y * bd.z);
  w.stacks.reserve(size_t(n));
  w.threads.assign(size_t(n), Thread{});
  Block b;
  b.launch = &launch;
  b.threads = &w.threads;
  b.n_threads = n;
  b.n_warps = (n + 31) / 32;
  b.runnable_in_warp.assign(size_t(b.n_warps), 0);
  b.lanes_at_collective.assign(size_t(b.n_warps), 0u);
  b.lanes_at_barrier.assign(size_t(b.n_warps), 0u);
  b.lanes_exited.assign(size_t(b.n_warps), 0u);
  b.stacks = &w.stacks;
  if (launch.shared_bytes > 0) {
    b.dynamic_shared.reset(new unsigned char[launch.shared_bytes]);
    std::memset(b.dynamic_shared.get(), 0xff, launch.shared_bytes);  // NaN as float, -1 as int
  }
  for (int i = 0; i < n; ++i) {
    Thread& t = w.threads[size_t(i)];
    t.linear = i;
    t.warp = i / 32;
    t.lane = i % 32;
    t.index.thread_idx = uint3{unsigned(i) % bd.x, unsigned(i) / bd.x % bd.y, unsigned(i) / (bd.x * bd.y)};
    t.index.block_idx = block_idx;
    t.index.block_dim = bd;
    t.index.grid_dim = launch.grid;
    unpoison(w.stacks.at(size_t(i)));
    t.context = make_context(w.stacks.at(size_t(i)), size_t(i));
    t.state = State::runnable;
    ++b.runnable_in_warp[size_t(t.warp)];
  }
  b.host_stack = host_stack();
  Block* outer = current_block;
  current_block = &b;
  for (;;) {
    const int warp = order.pick(b.runnable_in_warp);
    if (warp < 0) {
      if (b.n_exited == b.n_threads) break;
      if (b.n_at_barrier > 0 && b.n_at_barrier + b.n_exited == b.n_threads) {
        release_barrier(b);
        continue;
      }
      deadlock(b);
    }
    do {
      order.lanes(lanes_in_warp(b, warp), b.pass);
      b.pass_warp = warp;
      b.pass_next = 0;
      if (Thread* first = next_in_pass(b)) transfer(b, nullptr, first);
    } while (!order.one_pass() && b.runnable_in_warp[size_t(warp)] > 0);
  }
  current_block = outer;
}

}  // namespace

uint64_t warp_collective(WarpOp op, unsigned mask, uint64_t bits, unsigned size, int param, int width,
                         const char* name, const char* file, int line) {
  Block* bp = current_block;
  Thread* tp = current_thread;
  if (bp == nullptr || tp == nullptr) fault(fmt::format("{} called outside a kernel", name));
  Block& b = *bp;
  Thread& self = *tp;
  self.op = op;
  self.mask = mask;
  self.bits = size < 8 ? bits & ((uint64_t(1) << (8 * size)) - 1) : bits;
  self.size = size;
  self.param = param;
  self.width = width;
  self.name = name;
  self.file = file;
  self.line = line;
  if (!(mask >> self.lane & 1u))
    thread_fault(b, self, fmt::format("{}: the mask {:#010x} does not include the calling lane", site(self), mask));
  const int lanes = lanes_in_warp(b, self.warp);
  if (lanes < 32 && (mask >> lanes) != 0)
    thread_fault(b, self, fmt::format("{}: the mask {:#010x} names lanes this warp of {} threads does not have",
                                      site(self), mask, lanes));
  if (width <= 0 || width > 32 || (width & (width - 1)) != 0)
    thread_fault(b, self, fmt::format("{}: width {} is not a power of two <= 32", site(self), width));
  const size_t w = size_t(self.warp);
  if (const unsigned gone = mask & b.lanes_exited[w])
    thread_fault(b, self, fmt::format("{} waits for lane {}, which has exited", site(self), std::countr_zero(gone)));
  if (const unsigned away = mask & b.lanes_at_barrier[w]) {
    const int l = std::countr_zero(away);
    thread_fault(b, self, fmt::format("{} waits for lane {}, which waits at {}", site(self), l,
                                      site(thread_at(b, self.warp, l))));
  }
  set_state(b, self, State::at_collective);
  if ((b.lanes_at_collective[w] & mask) == mask) complete_collective(b, self);
  park(b, self);
  return self.result;
}

int block_barrier(int predicate, const char* name, const char* file, int line) {
  Block* bp = current_block;
  Thread* tp = current_thread;
  if (bp == nullptr || tp == nullptr) fault(fmt::format("{} called outside a kernel", name));
  Block& b = *bp;
  Thread& self = *tp;
  self.name = name;
  self.file = file;
  self.line = line;
  self.predicate = predicate;
  self.mask = 0;
  if (const Thread* o = waiting_for(b, self))
    thread_fault(b, self, fmt::format("thread {} reached {} while lanes of its warp wait for it in {} (lane {})",
                                      self.linear, site(self), site(*o), o->lane));
  set_state(b, self, State::at_barrier);
  park(b, self);
  return int(self.result);
}

void* dynamic_shared_memory() {
  if (current_block == nullptr) fault("dynamic_shared_memory() called outside a kernel");
  return current_block->dynamic_shared.get();
}

void run_kernel(const LaunchRequest& launch) {
  count_launch(launch.name);
  thread_local uint64_t launches = 0;
  const Order policy = current_order();
  Schedule order(policy, current_seed() * 0x9E3779B97F4A7C15ull + ++launches);
  const dim3 g = launch.grid;
  const uint64_t n_blocks = uint64_t(g.x) * g.y * g.z;
  std::vector<uint64_t> sequence(n_blocks);
  std::iota(sequence.begin(), sequence.end(), uint64_t(0));
  if (policy == Order::reverse) std::reverse(sequence.begin(), sequence.end());
  if (policy == Order::random) std::shuffle(sequence.begin(), sequence.end(), order.rng());
  for (uint64_t i : sequence) {
    const uint3 idx{unsigned(i % g.x), unsigned(i / g.x % g.y), unsigned(i / (uint64_t(g.x) * g.y))};
    run_block(launch, idx, order);
  }
}

}  // namespace lowbit_emu
