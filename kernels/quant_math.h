// The per-element math of the quantized kernels (gemv_nf4_fp4.cu, gemv_w4a16.cu, gemv_int8.cu):
// where a value sits in the packed planes (each format's layout header in src/formats/layout_*.h,
// shared with its CPU reference) and the scalar arithmetic that decodes or rescales it.
// These are __host__ __device__ so that the kernels' own index math and rounding points are
// exercised on the CPU by tests/test_kernel_math.cpp against the format reference
// (src/formats/format_*.cpp), which is the oracle. g++ sees plain inline functions.
// Every function is a few integer or fp32 ops and is inlined: the kernels are not slowed down.
#pragma once
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__) && !LOWBIT_EMULATED_GPU
#include <cuda_fp16.h>  // __hsub2, __half22float2 (W4A16)
#endif

#include "formats/hd_math.h"
#include "formats/layout_four_bit.h"
#include "formats/layout_int8.h"
#include "formats/layout_w4a16.h"

namespace lowbit::kernels {

// The layout facts each format shares with its CPU reference (src/formats/layout_*.h), also
// reachable as kernels::name.
using lowbit::add_rn;
using lowbit::dq_absmax;
using lowbit::four_bit_code;
using lowbit::four_bit_word_code;
using lowbit::kDqBlock;
using lowbit::kInv127;
using lowbit::kInvSquare127;
using lowbit::mul_rn;
using lowbit::round_to_int8;
using lowbit::w4a16_code;
using lowbit::w4a16_group_index;
using lowbit::w4a16_row_bytes;
using lowbit::w4a16_value;
using lowbit::w4a16_word_code;

// --- W4A16 on the GPU: the interleaved words of the decode GEMV ----------------------------------
// At upload, when cols % 8 == 0 (every row a whole number of aligned 32-bit words), each word --
// columns 8s..8s+7 of a row, column i in nibble i -- is rewritten in place with its nibbles in the
// order 0,2,4,6,1,3,5,7 (AWQ / FasterTransformer's order): column i moves to nibble
// (i >> 1) | ((i & 1) << 2). Then (word >> 4k) & 0x000f000f holds columns 2k and 2k+1 in the low
// nibbles of its two 16-bit halves, and OR-ing in 0x6400 (fp16 1024, whose ulp is 1) makes each
// half the fp16 value 1024 + q: one shift and one lop3 per pair of columns, no int -> float
// conversion. Subtracting the fp16 pair (1024 + zero) leaves q - zero, exact (an integer in
// -15..15). The download undoes the interleave, so the planes read back are the CPU layout.
LOWBIT_HD int w4a16_interleaved_nibble(int column) { return (column >> 1) | ((column & 1) << 2); }
LOWBIT_HD uint32_t w4a16_interleave(uint32_t word) {
  uint32_t out = 0;
  for (int i = 0; i < 8; ++i) out |= ((word >> (4 * i)) & 15u) << (4 * w4a16_interleaved_nibble(i));
  return out;
}
LOWBIT_HD uint32_t w4a16_deinterleave(uint32_t word) {
  uint32_t out = 0;
  for (int i = 0; i < 8; ++i) out |= ((word >> (4 * w4a16_interleaved_nibble(i))) & 15u) << (4 * i);
  return out;
}
// Code of (row, col) in the interleaved planes (the slow path and the dequantizer).
LOWBIT_HD int w4a16_interleaved_code(const uint8_t* codes, int row, int col, int cols) {
  const int nibble = w4a16_interleaved_nibble(col & 7);
  const int byte = codes[size_t(row) * size_t(cols / 2) + size_t(col >> 3) * 4 + size_t(nibble >> 1)];
  return (nibble & 1) ? (byte >> 4) : (byte & 15);
}

// (a & b) | c: one lop3.b32 (lookup table 0xea = (0xf0 & 0xcc) | 0xaa) on the GPU; the plain
// expression on the host and on the emulated device (the host compiler takes no PTX).
LOWBIT_HD uint32_t lop3_and_or(uint32_t a, uint32_t b, uint32_t c) {
#if defined(__CUDA_ARCH__) && !LOWBIT_EMULATED_GPU
  uint32_t d;
  asm("lop3.b32 %0, %1, %2, %3, 0xea;" : "=r"(d) : "r"(a), "r"(b), "r"(c));
  return d;
#else
  return (a & b) | c;
#endif
}
constexpr uint32_t kW4a16Magic = 0x64006400u;  // fp16x2 {1024, 1024}
// fp16x2 {1024 + zero, 1024 + zero}, zero in 0..15.
LOWBIT_HD uint32_t w4a16_zero_pair(int zero) { return kW4a16Magic | uint32_t(zero) * 0x00010001u; }
// fp16x2 {1024 + q(2k), 1024 + q(2k + 1)} of an interleaved word, k in 0..3.
LOWBIT_HD uint32_t w4a16_magic_pair(uint32_t word, int k) {
  return lop3_and_or(word >> (4 * k), 0x000f000fu, kW4a16Magic);
}

// IEEE fp16 <-> fp32 in software, for the host side of w4a16_pair_values (the same results as
// the hardware's cvt: exact widening; narrowing to nearest even, overflow to inf, NaN stays NaN).
LOWBIT_HD float f16_bits_to_float(uint32_t h) {
  const uint32_t sign = (h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
  if (exp == 0) {
    const float v = float(man) * 5.9604644775390625e-08f;  // man * 2^-24, exact
    return sign ? -v : v;
  }
  const uint32_t bits = exp == 31 ? sign | 0x7f800000u | (man << 13) : sign | ((exp + 112u) << 23) | (man << 13);
  float v;
  memcpy(&v, &bits, 4);
  return v;
}
LOWBIT_HD uint32_t float_to_f16_bits(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  const uint32_t sign = (u >> 16) & 0x8000u, a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return sign | 0x7e00u;     // NaN
  if (a >= 0x477ff000u) return sign | 0x7c00u;    // 65520 and above round to inf
  if (a < 0x38800000u) {                          // below 2^-14: subnormal steps of 2^-24
    float mag;
    memcpy(&mag, &a, 4);
    const float scaled = mag * 16777216.0f;       // exact: a power of two
    const uint32_t whole = uint32_t(scaled);
    const float frac = scaled - float(whole);     // exact
    return sign | (whole + (frac > 0.5f || (frac == 0.5f && (whole & 1u)) ? 1u : 0u));
  }
  return sign | ((a - (112u << 23) + 0x0fffu + ((a >> 13) & 1u)) >> 13);  // nearest even
}

// q - zero of the two columns of a magic pair, as fp32: fp16x2 subtraction (one HSUB2 on the GPU),
// then widened (exact). Host / emulated device: the fp32 difference of the fp16 values rounded to
// fp16, which is the fp16 subtraction's result for any fp16 operands (fp32 has 24 >= 2 * 11 + 2
// significant bits, so the double rounding is innocuous); here every step is exact anyway.
LOWBIT_HD void w4a16_pair_values(uint32_t magic, uint32_t zero_pair, float& lo, float& hi) {
#if defined(__CUDA_ARCH__) && !LOWBIT_EMULATED_GPU
  __half2 a, z;
  memcpy(&a, &magic, 4);
  memcpy(&z, &zero_pair, 4);
  const float2 d = __half22float2(__hsub2(a, z));
  lo = d.x;
  hi = d.y;
#else
  const float lo32 = f16_bits_to_float(magic & 0xffffu) - f16_bits_to_float(zero_pair & 0xffffu);
  const float hi32 = f16_bits_to_float(magic >> 16) - f16_bits_to_float(zero_pair >> 16);
  lo = f16_bits_to_float(float_to_f16_bits(lo32));
  hi = f16_bits_to_float(float_to_f16_bits(hi32));
#endif
}

// --- int8 rows (LLM.int8, W8A8) -----------------------------------------------------------------
// LLM.int8 dequantized weight (int8_vectorwise_dequant): fl(fl(CB * SCB) * 1/127).
LOWBIT_HD float llm_int8_weight(int8_t cb, float scb) { return mul_rn(mul_rn(float(cb), scb), kInv127); }
// LLM.int8's per-row factor, bnb's `127.0 / row_stats` as torch evaluates it:
// row_stats.reciprocal() * 127, i.e. fl(fl(1 / rowStat) * 127) -- not a true division (the two
// differ at the .5 ties, e.g. x = 0.0925293 with rowStat = 0.1850586: 64, a division gives 63).
LOWBIT_HD float llm_int8_factor(float row_stat) {
#ifdef __CUDA_ARCH__
  return __fmul_rn(__frcp_rn(row_stat), 127.0f);
#else
  return mul_rn(1.0f / row_stat, 127.0f);
#endif
}
// LLM.int8 activation code: rint(fp16(x) * factor), factor = llm_int8_factor(rowStat).
LOWBIT_HD int8_t llm_int8_activation(float x16, float factor) { return round_to_int8(mul_rn(x16, factor)); }
// LLM.int8 int32 sum -> fl(fl(acc * fl(rowStat * SCB)) * 1/127^2), before the fp16 rounding.
LOWBIT_HD float llm_int8_rescale(int32_t acc, float row_stat, float scb) {
  return mul_rn(mul_rn(float(acc), mul_rn(row_stat, scb)), kInvSquare127);
}
// W8A8 activation code: sat(rint(x / x_scale)), 0 when the token's scale is 0.
LOWBIT_HD int8_t w8a8_activation(float x, float x_scale) {
  return x_scale > 0.0f ? round_to_int8(x / x_scale) : int8_t(0);
}
// W8A8 int32 sum -> acc * (w_scale * x_scale) in fp32.
LOWBIT_HD float w8a8_rescale(int32_t acc, float w_scale, float x_scale) {
  return mul_rn(float(acc), mul_rn(w_scale, x_scale));
}

// --- e4m3 rows (W8A8-fp8, src/formats/format_w8a8_fp8.cpp) -------------------------------------
// The software conversions of the sm_80 build (sm_89 and sm_90 convert in hardware, cuda_fp8.h);
// pinned to core/fp8.h, the CPU reference, by tests/test_kernel_math.cpp.
// e4m3 byte -> fp32 (s eeee mmm, bias 7; exponent 0: m * 2^-9; 0x7f / 0xff: NaN).
LOWBIT_HD float e4m3_value(uint32_t byte) {
  const uint32_t mag = byte & 0x7fu, sign = (byte & 0x80u) << 24;
  float v;
  if (mag < 0x08u) {
    v = float(mag) * 0.001953125f;  // zero and the subnormals m * 2^-9, exact
  } else {
    const uint32_t bits = mag == 0x7fu ? 0x7fc00000u : (mag << 20) + (120u << 23);  // rebias 7 -> 127
    memcpy(&v, &bits, 4);
  }
  return sign ? -v : v;
}
// fp32 -> e4m3 as cvt.rn.satfinite.e4m3x2.f32: nearest even; |v| past 448 (and +-inf) -> +-448;
// NaN -> 0x7f (the hardware's canonical NaN, unsigned; the CPU keeps torch's sign of NaN: both
// are NaN and make the same NaN outputs).
LOWBIT_HD uint8_t e4m3_code(float v) {
  uint32_t u;
  memcpy(&u, &v, 4);
  const uint32_t a = u & 0x7fffffffu, sign = (u >> 24) & 0x80u;
  if (a > 0x7f800000u) return uint8_t(0x7fu);
  if (a >= 0x43e00000u) return uint8_t(sign | 0x7eu);  // 448 and above
  float mag;
  memcpy(&mag, &a, 4);
  if (a < 0x3c800000u) {  // below 2^-6: subnormal steps of 2^-9, rounded to an integer count
#ifdef __CUDA_ARCH__
    return uint8_t(sign | uint32_t(rintf(mag * 512.0f)));
#else
    return uint8_t(sign | uint32_t(std::nearbyint(mag * 512.0f)));
#endif
  }
  // Normal: keep 3 of the 23 mantissa bits, nearest even (a carry into the exponent is right).
  const uint32_t kept = a >> 20, rest = a & 0xfffffu;
  const uint32_t up = rest > 0x80000u || (rest == 0x80000u && (kept & 1u)) ? 1u : 0u;
  return uint8_t(sign | (kept + up - (120u << 3)));
}
// The scheme's scale of a row or token: absmax / 448, a zero scale replaced by fp32 eps (2^-23).
LOWBIT_HD float fp8_scale(float absmax) {
  const float scale = absmax / 448.0f;
  return scale == 0.0f ? 1.1920928955078125e-07f : scale;
}
// W8A8-fp8 sum of e4m3 products -> sum * (w_scale * x_scale) in fp32.
LOWBIT_HD float fp8_rescale(float sum, float w_scale, float x_scale) { return mul_rn(sum, mul_rn(w_scale, x_scale)); }

}  // namespace lowbit::kernels
