// 16-bit float conversions used by the loader and the formats. Round to nearest even, as
// torch's .to(bfloat16) / .half() do, so quantized bytes match the reference.
#pragma once
#include <cstdint>
#include <cstring>
#include <cmath>

namespace lowbit {

inline float bits_to_f32(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }
inline uint32_t f32_to_bits(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }

inline float bf16_to_f32(uint16_t h) { return bits_to_f32(uint32_t(h) << 16); }

inline uint16_t f32_to_bf16(float f) {
  uint32_t u = f32_to_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}

inline float round_bf16(float f) { return bf16_to_f32(f32_to_bf16(f)); }

inline float f16_to_f32(uint16_t h) {
  uint32_t sign = uint32_t(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t man = h & 0x3ffu;
  if (exp == 0) {
    if (man == 0) return bits_to_f32(sign);
    // subnormal: value = man * 2^-24
    float v = std::ldexp(float(man), -24);
    return sign ? -v : v;
  }
  if (exp == 31) return bits_to_f32(sign | 0x7f800000u | (man << 13));
  return bits_to_f32(sign | ((exp + 112u) << 23) | (man << 13));
}

inline uint16_t f32_to_f16(float f) {
  uint32_t u = f32_to_bits(f);
  uint32_t sign = (u >> 16) & 0x8000u;
  uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return uint16_t(sign | 0x7e00u);          // NaN
  if (a >= 0x477ff000u) return uint16_t(sign | 0x7c00u);         // overflow (>= 65520) -> inf
  if (a < 0x38800000u) {                                         // below 2^-14: subnormal or zero
    // value in units of 2^-24, rounded to nearest even
    float v = bits_to_f32(a) * 16777216.0f;  // exact: scaling by a power of two
    float r = std::nearbyint(v);             // default rounding mode: nearest even
    return uint16_t(sign | uint32_t(r));
  }
  uint32_t mant_odd = (a >> 13) & 1u;
  a += 0xc8000fffu + mant_odd;  // rebias exponent (-112 << 23) and round to nearest even
  return uint16_t(sign | (a >> 13));
}

inline float round_f16(float f) { return f16_to_f32(f32_to_f16(f)); }

}  // namespace lowbit
