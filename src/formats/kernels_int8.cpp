// int8 x int8 -> int32 dot products for LLM.int8 and W8A8 (contract in kernels.h). Integer sums
// are exact in any order, so every level gives the plain loop's int32 values:
//   plain        the loop in this file's plain_dot (what the compiler makes of it);
//   avx2         16 columns at a time: sign-extend to int16, vpmaddwd (pairs summed into int32);
//   avx512       the same 32 columns wide (AVX-512BW);
//   avx512-vnni  vpdpbusd: 64 products per instruction. Its first operand is unsigned, so the
//                weights go in as w + 128 (w ^ 0x80) and 128 * sum_c a[t, c] is subtracted per
//                token. |sum| <= 255 * 128 * cols stays inside int32 for cols <= 65793; wider
//                rows take the avx512 kernel.
//   One token: four weight rows at a time against the activations (each row streamed once).
//   More tokens (VNNI): a panel of 32 rows x 1024 columns is repacked once as
//   [column step of 4][32 rows][4 bytes] and multiplied with tiles of up to 12 tokens whose
//   activations are packed as [step][token] 4-byte words: 12 x 2 zmm accumulators of 16 rows.
// GCC 12 warns inside its own AVX-512 headers (_mm512_undefined_*'s self-initialization, GCC bug
// 105593); the pragma must precede the headers to cover them.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>
#include <vector>

#include <immintrin.h>

#include "formats/kernels.h"
#include "formats/transpose16.h"

namespace lowbit::formats {

namespace {

constexpr int64_t kVnniMaxCols = 65793;  // 255 * 128 * cols < 2^31
constexpr int kVnniTileTokens = 12;
constexpr int kVnniPanelRows = 32;
constexpr int64_t kVnniPanelCols = 1024;  // a multiple of 4

int32_t plain_dot(const int8_t* a, const int8_t* b, int64_t n) {
  int32_t acc = 0;
  for (int64_t i = 0; i < n; ++i) acc += int32_t(a[i]) * int32_t(b[i]);
  return acc;
}

void plain_rows(const Int8Activations& a, const int8_t* w, int64_t r0, int64_t r1, int32_t* acc, int64_t ld) {
  const int64_t cols = a.cols();
  for (int64_t r = r0; r < r1; ++r)
    for (int64_t t = 0; t < a.n_tokens(); ++t) acc[t * ld + r] = plain_dot(a.rows() + t * cols, w + r * cols, cols);
}

bool uses_vnni(CpuLevel level, int64_t cols) { return level >= CpuLevel::avx512_vnni && cols <= kVnniMaxCols; }

}  // namespace

#if defined(__x86_64__) && defined(__GNUC__)
#define LOWBIT_INT8_KERNELS 1

namespace {

// AVX2 level: its own target attribute, outside the AVX-512 region below, since it runs on CPUs
// without AVX-512.
__attribute__((target("avx2"))) int32_t avx2_dot(const int8_t* a, const int8_t* w, int64_t n) {
  __m256i acc = _mm256_setzero_si256();
  int64_t c = 0;
  for (; c + 16 <= n; c += 16) {
    const __m256i a16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a + c)));
    const __m256i w16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w + c)));
    acc = _mm256_add_epi32(acc, _mm256_madd_epi16(a16, w16));
  }
  alignas(32) int32_t lanes[8];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), acc);
  int32_t sum = 0;
  for (int32_t v : lanes) sum += v;
  for (; c < n; ++c) sum += int32_t(a[c]) * int32_t(w[c]);
  return sum;
}

__attribute__((target("avx2"))) void avx2_rows(const Int8Activations& a, const int8_t* w, int64_t r0, int64_t r1,
                                               int32_t* acc, int64_t ld) {
  const int64_t cols = a.cols();
  for (int64_t r = r0; r < r1; ++r)
    for (int64_t t = 0; t < a.n_tokens(); ++t) acc[t * ld + r] = avx2_dot(a.rows() + t * cols, w + r * cols, cols);
}

}  // namespace

// Below: two regions compiled for AVX-512 (then AVX-512 + VNNI), each called only where
// cpu_level() allows: a region's target lets the compiler use its instructions anywhere in it,
// so the avx512 level's kernel must not sit in the VNNI region. The headers come first, so that
// none of their inline functions is compiled here for a wider target.
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,avx512f,avx512bw,avx512vl,avx512dq"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,avx512f,avx512bw,avx512vl,avx512dq")
#endif

namespace {

// AVX-512BW: four rows against one token, 32 columns per step, the tail through a masked load.
void avx512_rows(const Int8Activations& a, const int8_t* w, int64_t r0, int64_t r1, int32_t* acc, int64_t ld) {
  const int64_t cols = a.cols();
  const int64_t whole = cols / 32 * 32;
  const __mmask32 tail_mask = _cvtu32_mask32(uint32_t((uint64_t(1) << (cols - whole)) - 1));
  for (int64_t t = 0; t < a.n_tokens(); ++t) {
    const int8_t* x = a.rows() + t * cols;
    int64_t r = r0;
    auto rows_at = [&](auto rows_const) {
      constexpr int R = decltype(rows_const)::value;
      __m512i sum[R];
      for (int i = 0; i < R; ++i) sum[i] = _mm512_setzero_si512();
      for (int64_t c = 0; c < cols; c += 32) {
        const bool full = c < whole;
        const __m256i xa = full ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + c))
                                : _mm256_maskz_loadu_epi8(tail_mask, x + c);
        const __m512i x16 = _mm512_cvtepi8_epi16(xa);
        for (int i = 0; i < R; ++i) {
          const int8_t* row = w + (r + i) * cols + c;
          const __m256i wa = full ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row))
                                  : _mm256_maskz_loadu_epi8(tail_mask, row);
          sum[i] = _mm512_add_epi32(sum[i], _mm512_madd_epi16(x16, _mm512_cvtepi8_epi16(wa)));
        }
      }
      for (int i = 0; i < R; ++i) acc[t * ld + r + i] = _mm512_reduce_add_epi32(sum[i]);
    };
    for (; r + 4 <= r1; r += 4) rows_at(std::integral_constant<int, 4>{});
    for (; r < r1; ++r) rows_at(std::integral_constant<int, 1>{});
  }
}

}  // namespace

#if defined(__clang__)
#pragma clang attribute pop
#pragma clang attribute push(__attribute__((target("avx2,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni"))), \
                             apply_to = function)
#else
#pragma GCC pop_options
#pragma GCC push_options
#pragma GCC target("avx2,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")
#endif

namespace {

// VNNI, one token at a time: four rows, 64 columns per step, weights made unsigned with ^ 0x80
// (a masked-off tail byte becomes 0x80 = weight 0 against activation 0).
void vnni_gemv_rows(const Int8Activations& a, const int8_t* w, int64_t r0, int64_t r1, int32_t* acc, int64_t ld) {
  const int64_t cols = a.cols();
  const int64_t whole = cols / 64 * 64;
  const __mmask64 tail_mask = _cvtu64_mask64(cols - whole == 0 ? 0 : (~uint64_t(0) >> (64 - (cols - whole))));
  const __m512i flip = _mm512_set1_epi8(char(0x80));
  for (int64_t t = 0; t < a.n_tokens(); ++t) {
    const int8_t* x = a.rows() + t * cols;
    const int32_t offset = a.offsets()[t];
    int64_t r = r0;
    auto rows_at = [&](auto rows_const) {
      constexpr int R = decltype(rows_const)::value;
      __m512i sum[R];
      for (int i = 0; i < R; ++i) sum[i] = _mm512_setzero_si512();
      for (int64_t c = 0; c < cols; c += 64) {
        const bool full = c < whole;
        const __m512i xa = full ? _mm512_loadu_si512(x + c) : _mm512_maskz_loadu_epi8(tail_mask, x + c);
        for (int i = 0; i < R; ++i) {
          const int8_t* row = w + (r + i) * cols + c;
          _mm_prefetch(reinterpret_cast<const char*>(row) + 1024, _MM_HINT_T0);
          const __m512i wa = full ? _mm512_loadu_si512(row) : _mm512_maskz_loadu_epi8(tail_mask, row);
          sum[i] = _mm512_dpbusd_epi32(sum[i], _mm512_xor_si512(wa, flip), xa);
        }
      }
      for (int i = 0; i < R; ++i) acc[t * ld + r + i] = _mm512_reduce_add_epi32(sum[i]) - offset;
    };
    for (; r + 4 <= r1; r += 4) rows_at(std::integral_constant<int, 4>{});
    for (; r < r1; ++r) rows_at(std::integral_constant<int, 1>{});
  }
}

// Rows [p0, p0 + 32) x columns [k0, k0 + 4 * steps) as [step][row][4 bytes], unsigned (w ^ 0x80);
// rows past r1 and columns past cols as 0x80 (weight 0). Whole 16-row x 64-column squares go
// through a register transpose, the edges word by word.
void vnni_pack_panel(const int8_t* w, int64_t cols, int64_t p0, int64_t r1, int64_t k0, int64_t steps, uint8_t* wp) {
  const __m512i flip = _mm512_set1_epi8(char(0x80));
  for (int half = 0; half < kVnniPanelRows; half += 16) {
    const bool full_rows = p0 + half + 16 <= r1;
    int64_t s = 0;
    if (full_rows)
      for (; s + 16 <= steps && k0 + 4 * (s + 16) <= cols; s += 16) {
        __m512i m[16];
        for (int i = 0; i < 16; ++i)
          m[i] = _mm512_xor_si512(_mm512_loadu_si512(w + (p0 + half + i) * cols + k0 + 4 * s), flip);
        transpose16(m);  // m[j] = column word j (step s + j) of the 16 rows
        for (int j = 0; j < 16; ++j) _mm512_storeu_si512(wp + ((s + j) * kVnniPanelRows + half) * 4, m[j]);
      }
    for (; s < steps; ++s)
      for (int i = half; i < half + 16; ++i) {
        const int64_t r = p0 + i, c = k0 + 4 * s;
        uint8_t* out = wp + (s * kVnniPanelRows + i) * 4;
        for (int b = 0; b < 4; ++b) out[b] = (r < r1 && c + b < cols) ? uint8_t(w[r * cols + c + b] ^ 0x80) : 0x80;
      }
  }
}

// The sums of MR tokens x 32 rows (part, [token][32]) advanced over `steps` column steps; loops
// unrolled by pragma, since GCC 12 otherwise keeps the accumulator array in memory.
template <int MR>
inline void vnni_tile(const int32_t* ap, const uint8_t* wp, int64_t steps, int32_t* part) {
  __m512i acc[MR][2];
#pragma GCC unroll 16
  for (int t = 0; t < MR; ++t)
#pragma GCC unroll 2
    for (int h = 0; h < 2; ++h) acc[t][h] = _mm512_loadu_si512(part + t * 32 + 16 * h);
  for (int64_t s = 0; s < steps; ++s) {
    const __m512i w0 = _mm512_loadu_si512(wp + s * 128), w1 = _mm512_loadu_si512(wp + s * 128 + 64);
#pragma GCC unroll 16
    for (int t = 0; t < MR; ++t) {
      const __m512i x = _mm512_set1_epi32(ap[s * MR + t]);
      acc[t][0] = _mm512_dpbusd_epi32(acc[t][0], w0, x);
      acc[t][1] = _mm512_dpbusd_epi32(acc[t][1], w1, x);
    }
  }
#pragma GCC unroll 16
  for (int t = 0; t < MR; ++t)
#pragma GCC unroll 2
    for (int h = 0; h < 2; ++h) _mm512_storeu_si512(part + t * 32 + 16 * h, acc[t][h]);
}

template <int... MR>
void vnni_tile_n(std::integer_sequence<int, MR...>, int mr, const int32_t* ap, const uint8_t* wp, int64_t steps,
                 int32_t* part) {
  ((mr == MR + 1 ? vnni_tile<MR + 1>(ap, wp, steps, part) : void()), ...);
}

// Several tokens: the blocked kernel over panels of 32 rows.
void vnni_gemm_rows(const Int8Activations& a, const int8_t* w, int64_t r0, int64_t r1, int32_t* acc, int64_t ld) {
  const int64_t cols = a.cols(), n = a.n_tokens();
  const int64_t steps = (cols + 3) / 4, tiles = (n + kVnniTileTokens - 1) / kVnniTileTokens;
  const int64_t block_steps = kVnniPanelCols / 4;
  std::vector<uint8_t> wp(size_t(kVnniPanelRows * kVnniPanelCols));
  std::vector<int32_t> part(size_t(tiles * kVnniTileTokens * kVnniPanelRows));
  for (int64_t p0 = r0; p0 < r1; p0 += kVnniPanelRows) {
    std::fill(part.begin(), part.end(), 0);
    for (int64_t s0 = 0; s0 < steps; s0 += block_steps) {
      const int64_t bs = std::min(block_steps, steps - s0);
      vnni_pack_panel(w, cols, p0, r1, 4 * s0, bs, wp.data());
      for (int64_t tile = 0; tile < tiles; ++tile) {
        const int64_t t0 = tile * kVnniTileTokens, mr = std::min<int64_t>(kVnniTileTokens, n - t0);
        const int32_t* ap = a.tiles() + t0 * steps + s0 * mr;
        vnni_tile_n(std::make_integer_sequence<int, kVnniTileTokens>{}, int(mr), ap, wp.data(), bs,
                    part.data() + tile * kVnniTileTokens * kVnniPanelRows);
      }
    }
    for (int64_t t = 0; t < n; ++t) {
      const int64_t tile = t / kVnniTileTokens, i = t % kVnniTileTokens;
      const int32_t* sums = part.data() + tile * kVnniTileTokens * kVnniPanelRows + i * kVnniPanelRows;
      for (int64_t r = p0; r < std::min(r1, p0 + kVnniPanelRows); ++r)
        acc[t * ld + r] = sums[r - p0] - a.offsets()[t];
    }
  }
}

}  // namespace

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
#else
#define LOWBIT_INT8_KERNELS 0
#endif

Int8Activations::Int8Activations(const int8_t* a, int64_t n_tokens, int64_t cols, CpuLevel level)
    : level_(level), n_tokens_(n_tokens), cols_(cols), rows_(a) {
  if (!uses_vnni(level, cols)) return;
  // 128 * sum_c a[t, c], the excess of the unsigned weights' products.
  offsets_.resize(size_t(n_tokens));
  for (int64_t t = 0; t < n_tokens; ++t) {
    int32_t sum = 0;
    for (int64_t c = 0; c < cols; ++c) sum += a[t * cols + c];
    offsets_[size_t(t)] = 128 * sum;
  }
  if (n_tokens == 1) return;
  // Tiles of 12 tokens, each [step s][token] 4-byte words of columns 4s..4s+3 (zero past cols).
  const int64_t steps = (cols + 3) / 4, whole = cols / 4;
  tiles_.assign(size_t(n_tokens * steps), 0);
  for (int64_t t0 = 0; t0 < n_tokens; t0 += kVnniTileTokens) {
    const int64_t mr = std::min<int64_t>(kVnniTileTokens, n_tokens - t0);
    int32_t* tile = tiles_.data() + t0 * steps;
    for (int64_t t = 0; t < mr; ++t) {
      const int8_t* row = a + (t0 + t) * cols;
      for (int64_t s = 0; s < whole; ++s) std::memcpy(tile + s * mr + t, row + 4 * s, 4);
      if (whole < steps) std::memcpy(tile + whole * mr + t, row + 4 * whole, size_t(cols - 4 * whole));
    }
  }
}

void int8_dot_rows(const Int8Activations& a, const int8_t* w, int64_t r0, int64_t r1, int32_t* acc, int64_t ld) {
#if LOWBIT_INT8_KERNELS
  if (uses_vnni(a.level(), a.cols())) {
    if (a.n_tokens() == 1)
      vnni_gemv_rows(a, w, r0, r1, acc, ld);
    else
      vnni_gemm_rows(a, w, r0, r1, acc, ld);
    return;
  }
  if (a.level() >= CpuLevel::avx512) return avx512_rows(a, w, r0, r1, acc, ld);
  if (a.level() >= CpuLevel::avx2) return avx2_rows(a, w, r0, r1, acc, ld);
#endif
  plain_rows(a, w, r0, r1, acc, ld);
}

}  // namespace lowbit::formats
