// FP8 for the emulated device: the storage types and the E4M3 conversions lowbit's kernels use
// (cuda_fp8.h's __nv_cvt_* on sm_89+, i.e. cvt.rn.satfinite.e4m3x2.f32 and cvt.rn.f16x2.e4m3x2),
// in software and exact: fp32 -> e4m3 rounds to nearest even, saturates finite values past 448
// and +-inf to +-448 (__NV_SATFINITE) and gives the canonical NaN 0x7f for any NaN; e4m3 -> fp16
// is exact (every e4m3 value is an fp16 value), NaN -> 0x7fff. Written independently of
// src/core/fp8.h and kernels/quant_math.h (this one goes through fp64) so that each checks the
// others. E5M2 and __NV_NOSAT are not used by lowbit and abort.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

#include "cuda_fp16.h"
#include "vector_types.h"

typedef unsigned char __nv_fp8_storage_t;
typedef unsigned short __nv_fp8x2_storage_t;
typedef unsigned int __nv_fp8x4_storage_t;
enum __nv_saturation_t { __NV_NOSAT, __NV_SATFINITE };
enum __nv_fp8_interpretation_t { __NV_E4M3, __NV_E5M2 };
struct __half_raw {
  unsigned short x;
};
struct __half2_raw {
  unsigned short x, y;
};

namespace lowbit_emu {
inline void fp8_require_e4m3_satfinite(__nv_fp8_interpretation_t kind, __nv_saturation_t sat) {
  if (kind != __NV_E4M3 || sat != __NV_SATFINITE) {
    std::fprintf(stderr, "emulated cuda_fp8.h: only E4M3 with __NV_SATFINITE is implemented\n");
    std::abort();
  }
}
// |x| in units of the e4m3 step at its binade, rounded half to even in fp64 (exact: an fp32 value
// scaled by a power of two).
inline unsigned char e4m3_from_float(float f) {
  if (std::isnan(f)) return 0x7f;
  const unsigned char sign = std::signbit(f) ? 0x80 : 0x00;
  const double a = std::fabs(double(f));
  if (a >= 448.0) return sign | 0x7e;
  int exp;  // a = frac * 2^exp, frac in [0.5, 1)
  std::frexp(a, &exp);
  const int e = exp - 1 < -6 ? -6 : exp - 1;  // binade 2^e; below 2^-6 the subnormal step 2^-9
  const double steps = std::nearbyint(std::ldexp(a, 3 - e));  // multiples of 2^(e-3)
  if (a == 0.0) return sign;
  // steps in [8, 16] for a normal binade (16: rounded up into the next one), [0, 8] subnormal.
  const int biased = e + 7;  // >= 1
  const long code = steps >= 8.0 ? long(biased) * 8 + long(steps) - 8 : long(steps);
  return static_cast<unsigned char>(sign | code);
}
inline unsigned short e4m3_to_half_bits(unsigned char b) {
  if ((b & 0x7f) == 0x7f) return 0x7fff;
  const int e = (b >> 3) & 15, m = b & 7;
  const double v = e == 0 ? std::ldexp(double(m), -9) : std::ldexp(double(8 + m), e - 10);
  return static_cast<unsigned short>(float_to_half_bits(float((b & 0x80) ? -v : v)));
}
}  // namespace lowbit_emu

inline __nv_fp8_storage_t __nv_cvt_float_to_fp8(float x, __nv_saturation_t sat, __nv_fp8_interpretation_t kind) {
  lowbit_emu::fp8_require_e4m3_satfinite(kind, sat);
  return lowbit_emu::e4m3_from_float(x);
}
inline __nv_fp8x2_storage_t __nv_cvt_float2_to_fp8x2(float2 x, __nv_saturation_t sat, __nv_fp8_interpretation_t kind) {
  return static_cast<__nv_fp8x2_storage_t>(__nv_cvt_float_to_fp8(x.x, sat, kind) |
                                           (__nv_cvt_float_to_fp8(x.y, sat, kind) << 8));
}
inline __half_raw __nv_cvt_fp8_to_halfraw(__nv_fp8_storage_t x, __nv_fp8_interpretation_t kind) {
  lowbit_emu::fp8_require_e4m3_satfinite(kind, __NV_SATFINITE);
  return __half_raw{lowbit_emu::e4m3_to_half_bits(x)};
}
// Low byte -> .x, high byte -> .y.
inline __half2_raw __nv_cvt_fp8x2_to_halfraw2(__nv_fp8x2_storage_t x, __nv_fp8_interpretation_t kind) {
  return __half2_raw{__nv_cvt_fp8_to_halfraw(static_cast<__nv_fp8_storage_t>(x & 0xff), kind).x,
                     __nv_cvt_fp8_to_halfraw(static_cast<__nv_fp8_storage_t>(x >> 8), kind).x};
}
