// float8_e4m3fn (OCP FP8 E4M3, "fn": no infinities, one NaN pattern per sign, max 448) conversions
// for the W8A8-fp8 format (src/formats/format_w8a8_fp8.cpp). Bit layout s eeee mmm, bias 7;
// exponent 0 holds the subnormals m * 2^-9; s 1111 111 is NaN.
//
// f32_to_e4m3 is compressed-tensors' round_to_quantized_type_args for an fp8 scheme:
// torch.clamp(x, -448, 448).to(torch.float8_e4m3fn) -- round to nearest, ties to the even
// mantissa; finite values past 448 and +-inf saturate to +-448 (the clamp; torch 2.15's cast
// alone saturates the same way); NaN stays NaN, its sign kept (0x7f, 0xff). Pinned byte for byte
// against torch in tests/test_formats.cpp (tools/make_fp8_fixtures.py).
#pragma once
#include <cmath>
#include <cstdint>

#include "core/half.h"

namespace lowbit {

inline uint8_t f32_to_e4m3(float f) {
  const uint32_t u = f32_to_bits(f);
  const uint8_t sign = uint8_t((u >> 24) & 0x80u);
  const uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return uint8_t(sign | 0x7fu);  // NaN
  if (a >= 0x43e00000u) return uint8_t(sign | 0x7eu);  // >= 448 (and inf): saturated
  if (a < 0x3c800000u) {
    // Below 2^-6, the smallest normal: the subnormals m * 2^-9, m = 0..8 (8 is 2^-6 itself).
    // The scaling by 512 is exact; nearbyint rounds half to even.
    return uint8_t(sign | uint8_t(std::nearbyint(bits_to_f32(a) * 512.0f)));
  }
  // Normal: rebias the exponent (127 -> 7) and drop 20 mantissa bits, nearest even; a carry into
  // the exponent is the right result (at most 448: a < 448 here).
  const uint32_t rebias = a - (120u << 23);
  return uint8_t(sign | ((rebias + 0x7ffffu + ((rebias >> 20) & 1u)) >> 20));
}

inline float e4m3_to_f32(uint8_t b) {
  const uint32_t sign = uint32_t(b & 0x80u) << 24;
  const uint32_t mag = b & 0x7fu;
  if (mag == 0x7fu) return bits_to_f32(sign | 0x7fc00000u);  // NaN
  const uint32_t e = mag >> 3, m = mag & 7u;
  const float v = e == 0 ? float(m) * 0.001953125f : bits_to_f32(((e + 120u) << 23) | (m << 20));
  return sign ? -v : v;
}

}  // namespace lowbit
