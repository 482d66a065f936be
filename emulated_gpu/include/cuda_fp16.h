// IEEE binary16 for the emulated device: storage type and the conversions lowbit's kernels use,
// each rounding to nearest even exactly as the hardware's cvt.rn.f16.f32 (overflow to inf, NaN
// kept quiet). Written independently of src/core/half.h so that each checks the other.
#pragma once
#include <bit>
#include <cstdint>

struct __half {
  unsigned short __x;
};
struct __half2 {
  __half x, y;
};

namespace lowbit_emu {
inline unsigned short float_to_half_bits(float f) {
  const uint32_t u = std::bit_cast<uint32_t>(f);
  const uint32_t sign = (u >> 16) & 0x8000u;
  const uint32_t abs = u & 0x7fffffffu;
  if (abs > 0x7f800000u) return static_cast<unsigned short>(sign | 0x7e00u | ((abs >> 13) & 0x3ffu));  // NaN
  if (abs >= 0x477ff000u) return static_cast<unsigned short>(sign | 0x7c00u);  // >= 65520: inf
  if (abs < 0x38800000u) {
    // Subnormal half (or zero): value = abs_float / 2^-24, rounded to an integer, nearest even.
    const float scaled = std::bit_cast<float>(abs) * 16777216.0f;  // exact: a power of two
    const uint32_t whole = uint32_t(scaled);
    const float frac = scaled - float(whole);
    uint32_t r = whole;
    if (frac > 0.5f || (frac == 0.5f && (whole & 1u))) ++r;
    return static_cast<unsigned short>(sign | r);
  }
  // Normal: drop 13 mantissa bits with round to nearest even; a carry into the exponent is right.
  const uint32_t rebias = abs - (112u << 23);
  const uint32_t rounded = rebias + 0x0fffu + ((rebias >> 13) & 1u);
  return static_cast<unsigned short>(sign | (rounded >> 13));
}
inline float half_bits_to_float(unsigned short h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
  if (exp == 0) {
    const float v = float(man) * 5.9604644775390625e-08f;  // man * 2^-24, exact
    return sign ? -v : v;
  }
  if (exp == 31) return std::bit_cast<float>(sign | 0x7f800000u | (man << 13));
  return std::bit_cast<float>(sign | ((exp + 112u) << 23) | (man << 13));
}
}  // namespace lowbit_emu

inline __half __float2half_rn(float f) { return __half{lowbit_emu::float_to_half_bits(f)}; }
inline __half __float2half(float f) { return __float2half_rn(f); }
inline float __half2float(__half h) { return lowbit_emu::half_bits_to_float(h.__x); }
inline __half __ushort_as_half(unsigned short x) { return __half{x}; }
inline unsigned short __half_as_ushort(__half h) { return h.__x; }
