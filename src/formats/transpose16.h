// A 16 x 16 transpose of 32-bit words in AVX-512 registers, for the kernels that repack weight
// panels as [column step][row][4 bytes] (kernels_int8.cpp, kernels_bf16.cpp). Its own target
// attribute: it is inlined only into AVX-512 functions.
#pragma once
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

namespace lowbit::formats {

// A 16 x 16 matrix of 32-bit words in 16 registers, transposed in place (four rounds of
// in-lane unpacks and 128-bit lane shuffles).
__attribute__((target("avx512f"), always_inline)) inline void transpose16(__m512i* m) {
  __m512i t[16];
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_epi32(m[i], m[i + 1]);
    t[i + 1] = _mm512_unpackhi_epi32(m[i], m[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) {
    m[i] = _mm512_unpacklo_epi64(t[i], t[i + 2]);
    m[i + 1] = _mm512_unpackhi_epi64(t[i], t[i + 2]);
    m[i + 2] = _mm512_unpacklo_epi64(t[i + 1], t[i + 3]);
    m[i + 3] = _mm512_unpackhi_epi64(t[i + 1], t[i + 3]);
  }
  // Now m[4a + b] holds, in 128-bit lane l, words (4a .. 4a+3, column 4l + c(b)): gather lanes.
  for (int i = 0; i < 4; ++i) {
    t[i] = _mm512_shuffle_i32x4(m[i], m[4 + i], 0x88);        // lanes 0, 2 of each
    t[4 + i] = _mm512_shuffle_i32x4(m[i], m[4 + i], 0xdd);    // lanes 1, 3
    t[8 + i] = _mm512_shuffle_i32x4(m[8 + i], m[12 + i], 0x88);
    t[12 + i] = _mm512_shuffle_i32x4(m[8 + i], m[12 + i], 0xdd);
  }
  for (int i = 0; i < 4; ++i) {
    m[i] = _mm512_shuffle_i32x4(t[i], t[8 + i], 0x88);
    m[8 + i] = _mm512_shuffle_i32x4(t[i], t[8 + i], 0xdd);
    m[4 + i] = _mm512_shuffle_i32x4(t[4 + i], t[12 + i], 0x88);
    m[12 + i] = _mm512_shuffle_i32x4(t[4 + i], t[12 + i], 0xdd);
  }
}

}  // namespace lowbit::formats
#endif
