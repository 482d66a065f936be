// The device half of the emulated CUDA device: what kernel code sees when kernels/*.cu are
// compiled as C++ by the host compiler. A launch runs its blocks one after another; the threads
// of a block are cooperative fibers that switch only at __syncthreads() and at warp collectives
// (__shfl*_sync, __ballot_sync, ...), so between two of those points each thread runs alone and
// a lane's view of shared memory is deterministic for a given scheduling order
// (LOWBIT_EMU_ORDER = forward | reverse | random[:seed]). The scheduler aborts the process with
// the kernel's name and the thread when a thread leaves (or branches away) while others of its
// warp wait in a collective or others of its block wait at a barrier.
//
// Qualifiers: __shared__ is `static thread_local` (one instance per kernel per host thread,
// reused block after block, which is what per-block shared memory is when blocks run one at a
// time); __constant__/__device__ variables are plain globals; dynamic shared memory comes from
// dynamic_shared_memory() (kernels/common.cuh), sized by the launch and filled with NaN bytes.
#pragma once
#include <math.h>

#include <bit>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "cuda_runtime_api.h"

#define __global__
#define __device__
#define __host__
#define __constant__
#define __managed__
#define __shared__ static thread_local
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __align__(n) alignas(n)

namespace lowbit_emu {

struct ThreadIndex {
  uint3 thread_idx, block_idx;
  dim3 block_dim, grid_dim;
};
// The running emulated thread's indices; set by the scheduler before it resumes a thread.
extern thread_local const ThreadIndex* current_index;

enum class WarpOp : uint8_t { shfl_idx, shfl_up, shfl_down, shfl_xor, ballot, any, all, sync, match_any };

// Parks the calling thread until every lane of `mask` has arrived at the same collective, then
// returns this lane's result (value bits of `size` bytes for shuffles, a lane mask or a flag
// otherwise). `name`, `file` and `line` identify the call in fault reports.
uint64_t warp_collective(WarpOp op, unsigned mask, uint64_t bits, unsigned size, int param, int width,
                         const char* name, const char* file, int line);
// __syncthreads and its counting forms: parks the thread until every thread of the block is at
// the same barrier; returns the number of threads whose predicate was non-zero.
int block_barrier(int predicate, const char* name, const char* file, int line);
// The current block's dynamic shared memory (the launch's shared_bytes, NaN-filled).
void* dynamic_shared_memory();

template <typename T>
uint64_t to_bits(T v) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable_v<T>, "shuffles move at most 8 bytes");
  uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(T));
  return bits;
}
template <typename T>
T from_bits(uint64_t bits) {
  T v;
  std::memcpy(&v, &bits, sizeof(T));
  return v;
}

}  // namespace lowbit_emu

#define threadIdx (::lowbit_emu::current_index->thread_idx)
#define blockIdx (::lowbit_emu::current_index->block_idx)
#define blockDim (::lowbit_emu::current_index->block_dim)
#define gridDim (::lowbit_emu::current_index->grid_dim)
constexpr int warpSize = 32;

// --- barriers and warp collectives ----------------------------------------------------------
#define LOWBIT_EMU_SITE const char *lowbit_emu_file = __builtin_FILE(), int lowbit_emu_line = __builtin_LINE()

inline void __syncthreads(LOWBIT_EMU_SITE) {
  lowbit_emu::block_barrier(1, "__syncthreads", lowbit_emu_file, lowbit_emu_line);
}
inline int __syncthreads_count(int predicate, LOWBIT_EMU_SITE) {
  return lowbit_emu::block_barrier(predicate != 0, "__syncthreads_count", lowbit_emu_file, lowbit_emu_line);
}
inline int __syncthreads_or(int predicate, LOWBIT_EMU_SITE) {
  return lowbit_emu::block_barrier(predicate != 0, "__syncthreads_or", lowbit_emu_file, lowbit_emu_line) > 0;
}
inline int __syncthreads_and(int predicate, LOWBIT_EMU_SITE) {
  return lowbit_emu::block_barrier(predicate != 0, "__syncthreads_and", lowbit_emu_file, lowbit_emu_line) ==
         int(blockDim.x * blockDim.y * blockDim.z);
}
inline void __syncwarp(unsigned mask = 0xffffffffu, LOWBIT_EMU_SITE) {
  lowbit_emu::warp_collective(lowbit_emu::WarpOp::sync, mask, 0, 0, 0, 32, "__syncwarp", lowbit_emu_file,
                              lowbit_emu_line);
}

#define LOWBIT_EMU_SHUFFLE(fn, op)                                                                               \
  template <typename T>                                                                                          \
  inline T fn(unsigned mask, T var, int param, int width = 32, LOWBIT_EMU_SITE) {                                \
    return lowbit_emu::from_bits<T>(lowbit_emu::warp_collective(lowbit_emu::WarpOp::op, mask,                    \
                                                                lowbit_emu::to_bits(var), unsigned(sizeof(T)), \
                                                                param, width, #fn, lowbit_emu_file,              \
                                                                lowbit_emu_line));                               \
  }
LOWBIT_EMU_SHUFFLE(__shfl_sync, shfl_idx)
LOWBIT_EMU_SHUFFLE(__shfl_up_sync, shfl_up)
LOWBIT_EMU_SHUFFLE(__shfl_down_sync, shfl_down)
LOWBIT_EMU_SHUFFLE(__shfl_xor_sync, shfl_xor)
#undef LOWBIT_EMU_SHUFFLE

inline unsigned __ballot_sync(unsigned mask, int predicate, LOWBIT_EMU_SITE) {
  return unsigned(lowbit_emu::warp_collective(lowbit_emu::WarpOp::ballot, mask, predicate != 0, 4, 0, 32,
                                              "__ballot_sync", lowbit_emu_file, lowbit_emu_line));
}
inline int __any_sync(unsigned mask, int predicate, LOWBIT_EMU_SITE) {
  return int(lowbit_emu::warp_collective(lowbit_emu::WarpOp::any, mask, predicate != 0, 4, 0, 32, "__any_sync",
                                         lowbit_emu_file, lowbit_emu_line));
}
inline int __all_sync(unsigned mask, int predicate, LOWBIT_EMU_SITE) {
  return int(lowbit_emu::warp_collective(lowbit_emu::WarpOp::all, mask, predicate != 0, 4, 0, 32, "__all_sync",
                                         lowbit_emu_file, lowbit_emu_line));
}
template <typename T>
inline unsigned __match_any_sync(unsigned mask, T value, LOWBIT_EMU_SITE) {
  return unsigned(lowbit_emu::warp_collective(lowbit_emu::WarpOp::match_any, mask, lowbit_emu::to_bits(value),
                                              unsigned(sizeof(T)), 0, 32, "__match_any_sync", lowbit_emu_file,
                                              lowbit_emu_line));
}
#undef LOWBIT_EMU_SITE

inline void __threadfence() {}
inline void __threadfence_block() {}

// --- atomics: threads switch only at barriers and collectives, so a read-modify-write is atomic --
template <typename T>
inline T atomicAdd(T* address, std::type_identity_t<T> v) {
  const T old = *address;
  *address = T(old + v);
  return old;
}
template <typename T>
inline T atomicSub(T* address, std::type_identity_t<T> v) {
  const T old = *address;
  *address = T(old - v);
  return old;
}
template <typename T>
inline T atomicMax(T* address, std::type_identity_t<T> v) {
  const T old = *address;
  *address = old < v ? v : old;
  return old;
}
template <typename T>
inline T atomicMin(T* address, std::type_identity_t<T> v) {
  const T old = *address;
  *address = v < old ? v : old;
  return old;
}
template <typename T>
inline T atomicExch(T* address, std::type_identity_t<T> v) {
  const T old = *address;
  *address = v;
  return old;
}
template <typename T>
inline T atomicCAS(T* address, std::type_identity_t<T> compare, std::type_identity_t<T> v) {
  const T old = *address;
  if (old == compare) *address = v;
  return old;
}
template <typename T>
inline T atomicOr(T* address, std::type_identity_t<T> v) {
  const T old = *address;
  *address = old | v;
  return old;
}
template <typename T>
inline T atomicAnd(T* address, std::type_identity_t<T> v) {
  const T old = *address;
  *address = old & v;
  return old;
}

// --- integer and bit intrinsics -------------------------------------------------------------------
inline int __popc(unsigned x) { return std::popcount(x); }
inline int __popcll(unsigned long long x) { return std::popcount(x); }
inline int __clz(int x) { return std::countl_zero(unsigned(x)); }
inline int __clzll(long long x) { return std::countl_zero((unsigned long long)(x)); }
inline int __ffs(int x) { return x == 0 ? 0 : std::countr_zero(unsigned(x)) + 1; }
inline int __ffsll(long long x) { return x == 0 ? 0 : std::countr_zero((unsigned long long)(x)) + 1; }
inline unsigned __brev(unsigned x) {
  unsigned r = 0;
  for (int i = 0; i < 32; ++i) r |= ((x >> i) & 1u) << (31 - i);
  return r;
}
inline unsigned __umulhi(unsigned a, unsigned b) { return unsigned((uint64_t(a) * b) >> 32); }
inline int __mulhi(int a, int b) { return int((int64_t(a) * b) >> 32); }
// PTX prmt.b32 in its default mode: result byte i is byte (s >> 4i) & 7 of the 8 bytes {y:x};
// with bit 3 of that selector set, the selected byte's sign bit fills the byte instead.
inline unsigned __byte_perm(unsigned x, unsigned y, unsigned s) {
  const uint64_t bytes = (uint64_t(y) << 32) | x;
  unsigned r = 0;
  for (int i = 0; i < 4; ++i) {
    const unsigned sel = (s >> (4 * i)) & 15u;
    unsigned b = unsigned(bytes >> (8 * (sel & 7u))) & 0xffu;
    if (sel & 8u) b = (b & 0x80u) ? 0xffu : 0u;
    r |= b << (8 * i);
  }
  return r;
}
inline unsigned __funnelshift_l(unsigned lo, unsigned hi, unsigned shift) {
  const uint64_t v = (uint64_t(hi) << 32) | lo;
  return unsigned((v << (shift & 31u)) >> 32);
}
inline unsigned __funnelshift_r(unsigned lo, unsigned hi, unsigned shift) {
  const uint64_t v = (uint64_t(hi) << 32) | lo;
  return unsigned(v >> (shift & 31u));
}
// Four signed (or unsigned) byte products summed into c, exactly.
inline int __dp4a(int a, int b, int c) {
  for (int i = 0; i < 4; ++i) c += int(int8_t(uint32_t(a) >> (8 * i))) * int(int8_t(uint32_t(b) >> (8 * i)));
  return c;
}
inline unsigned __dp4a(unsigned a, unsigned b, unsigned c) {
  for (int i = 0; i < 4; ++i) c += ((a >> (8 * i)) & 0xffu) * ((b >> (8 * i)) & 0xffu);
  return c;
}

// --- float intrinsics: IEEE operations with round-to-nearest-even, never contracted ------------
inline float __uint_as_float(unsigned x) { return std::bit_cast<float>(x); }
inline unsigned __float_as_uint(float x) { return std::bit_cast<unsigned>(x); }
inline float __int_as_float(int x) { return std::bit_cast<float>(x); }
inline int __float_as_int(float x) { return std::bit_cast<int>(x); }
inline double __longlong_as_double(long long x) { return std::bit_cast<double>(x); }
inline long long __double_as_longlong(double x) { return std::bit_cast<long long>(x); }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __frcp_rn(float a) { return 1.0f / a; }
inline float __fsqrt_rn(float a) { return sqrtf(a); }
inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline float __fdividef(float a, float b) { return a / b; }
inline float __expf(float a) { return expf(a); }
inline float __logf(float a) { return logf(a); }
inline float __sinf(float a) { return sinf(a); }
inline float __cosf(float a) { return cosf(a); }
inline float rsqrtf(float a) { return 1.0f / sqrtf(a); }
inline float __saturatef(float a) { return a < 0.0f ? 0.0f : (a > 1.0f ? 1.0f : (a != a ? 0.0f : a)); }
inline int __float2int_rn(float a) { return int(nearbyintf(a)); }
inline int __float2int_rz(float a) { return int(a); }
inline int __float2int_rd(float a) { return int(floorf(a)); }
inline float __int2float_rn(int a) { return float(a); }
inline unsigned long long __double2ull_rn(double a) {
  if (!(a > 0.0)) return 0;  // negative and NaN: 0, as cvt.rni.u64.f64 saturates
  if (a >= 18446744073709551616.0) return ~0ull;
  return (unsigned long long)nearbyint(a);
}
inline long long __double2ll_rn(double a) { return (long long)nearbyint(a); }

// CUDA's global min/max overloads for device code.
#define LOWBIT_EMU_MINMAX(T)                          \
  inline T min(T a, T b) { return b < a ? b : a; } \
  inline T max(T a, T b) { return a < b ? b : a; }
LOWBIT_EMU_MINMAX(int)
LOWBIT_EMU_MINMAX(unsigned)
LOWBIT_EMU_MINMAX(long)
LOWBIT_EMU_MINMAX(unsigned long)
LOWBIT_EMU_MINMAX(long long)
LOWBIT_EMU_MINMAX(unsigned long long)
#undef LOWBIT_EMU_MINMAX
inline float min(float a, float b) { return fminf(a, b); }
inline float max(float a, float b) { return fmaxf(a, b); }
inline double min(double a, double b) { return fmin(a, b); }
inline double max(double a, double b) { return fmax(a, b); }

template <typename T>
inline T __ldg(const T* p) {
  return *p;
}
