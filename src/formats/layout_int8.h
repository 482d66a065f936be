// The int8 rows of LLM.int8 and W8A8 (format_int8.cpp, format_w8a8.cpp), shared by the CPU
// reference and the CUDA kernels: bitsandbytes' two dequantization constants and torch's rounding
// to int8. (The rescaling arithmetic each side writes on its own: kernels/quant_math.h is pinned
// to the CPU reference by tests/test_kernel_math.cpp.)
#pragma once
#include "formats/hd_math.h"

namespace lowbit {

inline constexpr float kInvSquare127 = 6.200124e-05f;    // bnb's int8_mm_dequant constant
inline constexpr float kInv127 = 7.874015718698502e-3f;  // bnb's int8_vectorwise_dequant constant

// torch's round().to(int8): half to even, saturated to -128..127; NaN (0 * inf from a zero
// scale) -> 0.
LOWBIT_HD int8_t round_to_int8(float v) {
#ifdef __CUDA_ARCH__
  if (isnan(v)) return 0;
  return int8_t(fminf(fmaxf(rintf(v), -128.0f), 127.0f));
#else
  if (std::isnan(v)) return 0;
  const float r = std::nearbyint(v);
  return int8_t(r < -128.0f ? -128.0f : (r > 127.0f ? 127.0f : r));
#endif
}

}  // namespace lowbit
