// The opt-in bf16-activation matmul of BF16 weights (--cpu-bf16-activations; contract in
// kernels.h). It is NOT the oracle's arithmetic: the activations are rounded to bf16 (round to
// nearest even by vcvtne2ps2bf16, which also flushes subnormals to zero) and vdpbf16ps adds each
// lane's two exact bf16 x bf16 products to its fp32 sum. The weights are the format's exact bf16
// values. tests/test_kernels.cpp bounds its error against the plain loops.
//
// Layout, as the VNNI int8 GEMM (kernels_int8.cpp) with 4-byte groups that are two bf16 columns:
// a panel of 32 rows x 512 columns is repacked by 16 x 16 register transposes as
// [column pair][32 rows][2 bf16], activations as tiles of 12 tokens [column pair][token][2 bf16];
// 12 x 2 zmm accumulators whose lanes are rows, so no horizontal sums.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"  // GCC 12's own AVX-512 headers (bug 105593)
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

#include <immintrin.h>

#include "formats/kernels.h"
#include "formats/transpose16.h"

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,avx512f,avx512bw,avx512vl,avx512dq,avx512bf16"))), \
                             apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")
#endif

namespace lowbit::formats::avx512_bf16 {

namespace {

constexpr int kTileTokens = 12;
constexpr int kPanelRows = 32;
constexpr int64_t kPanelPairs = 256;  // column pairs per block: 512 columns

// x [n, cols] -> bf16 pairs: per tile of 12 tokens (t0 ..), [pair s < pairs][token t < mr] as
// 32-bit words (low half column 2s, high half 2s + 1; 0 past cols). Tile at t0 starts at t0 * pairs.
void pack_activations(const float* x, int64_t n, int64_t cols, int64_t pairs, uint32_t* out) {
  std::vector<float> row(size_t(2 * pairs + 32), 0.0f);
  std::vector<uint32_t> words(size_t(pairs + 16));
  for (int64_t t = 0; t < n; ++t) {
    std::copy_n(x + t * cols, cols, row.begin());
    for (int64_t s = 0; s < pairs; s += 16) {
      // 32 columns -> 16 words; vcvtne2ps2bf16(hi, lo) puts lo's 16 values in the low halves... of
      // consecutive 16-bit lanes: lane j = column j of the 32.
      const __m512bh b = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(row.data() + 2 * s + 16), _mm512_loadu_ps(row.data() + 2 * s));
      _mm512_storeu_si512(words.data() + s, reinterpret_cast<const __m512i&>(b));
    }
    const int64_t t0 = t / kTileTokens * kTileTokens, mr = std::min<int64_t>(kTileTokens, n - t0);
    uint32_t* tile = out + t0 * pairs;
    for (int64_t s = 0; s < pairs; ++s) tile[s * mr + (t - t0)] = words[size_t(s)];
  }
}

// Rows [p0, p0 + 32) x column pairs [s0, s0 + steps) of the bf16 weight as [pair][row][2 bf16];
// rows past r1 and columns past cols as 0.
void pack_panel(const uint16_t* w, int64_t cols, int64_t p0, int64_t r1, int64_t s0, int64_t steps, uint32_t* wp) {
  for (int half = 0; half < kPanelRows; half += 16) {
    const bool full_rows = p0 + half + 16 <= r1;
    int64_t s = 0;
    if (full_rows)
      for (; s + 16 <= steps && 2 * (s0 + s + 16) <= cols; s += 16) {
        __m512i m[16];
        for (int i = 0; i < 16; ++i) m[i] = _mm512_loadu_si512(w + (p0 + half + i) * cols + 2 * (s0 + s));
        transpose16(m);
        for (int j = 0; j < 16; ++j) _mm512_storeu_si512(wp + (s + j) * kPanelRows + half, m[j]);
      }
    for (; s < steps; ++s)
      for (int i = half; i < half + 16; ++i) {
        const int64_t r = p0 + i, c = 2 * (s0 + s);
        const uint32_t lo = (r < r1 && c < cols) ? w[r * cols + c] : 0;
        const uint32_t hi = (r < r1 && c + 1 < cols) ? w[r * cols + c + 1] : 0;
        wp[s * kPanelRows + i] = lo | (hi << 16);
      }
  }
}

template <int MR>
inline void tile(const uint32_t* ap, const uint32_t* wp, int64_t steps, float* part) {
  __m512 acc[MR][2];
#pragma GCC unroll 16
  for (int t = 0; t < MR; ++t)
#pragma GCC unroll 2
    for (int h = 0; h < 2; ++h) acc[t][h] = _mm512_loadu_ps(part + t * 32 + 16 * h);
  for (int64_t s = 0; s < steps; ++s) {
    const __m512i w0 = _mm512_loadu_si512(wp + s * kPanelRows), w1 = _mm512_loadu_si512(wp + s * kPanelRows + 16);
#pragma GCC unroll 16
    for (int t = 0; t < MR; ++t) {
      const __m512i x = _mm512_set1_epi32(int32_t(ap[s * MR + t]));
      acc[t][0] = _mm512_dpbf16_ps(acc[t][0], reinterpret_cast<const __m512bh&>(w0), reinterpret_cast<const __m512bh&>(x));
      acc[t][1] = _mm512_dpbf16_ps(acc[t][1], reinterpret_cast<const __m512bh&>(w1), reinterpret_cast<const __m512bh&>(x));
    }
  }
#pragma GCC unroll 16
  for (int t = 0; t < MR; ++t)
#pragma GCC unroll 2
    for (int h = 0; h < 2; ++h) _mm512_storeu_ps(part + t * 32 + 16 * h, acc[t][h]);
}

template <int... MR>
void tile_n(std::integer_sequence<int, MR...>, int mr, const uint32_t* ap, const uint32_t* wp, int64_t steps,
            float* part) {
  ((mr == MR + 1 ? tile<MR + 1>(ap, wp, steps, part) : void()), ...);
}

}  // namespace

bool matmul(const QuantizedTensor& q, const float* x, int64_t n, float* y, ThreadPool& pool) {
  if (q.format != Format::BF16) return false;
  const int64_t rows = q.rows, cols = q.cols, pairs = (cols + 1) / 2;
  const auto* w = reinterpret_cast<const uint16_t*>(q.codes.data());
  std::vector<uint32_t> act(size_t(n * pairs));
  pack_activations(x, n, cols, pairs, act.data());
  const int64_t tiles = (n + kTileTokens - 1) / kTileTokens, panels = (rows + kPanelRows - 1) / kPanelRows;
  pool.parallel_for(
      panels,
      [&](int64_t begin, int64_t end) {
        std::vector<uint32_t> wp(size_t(kPanelRows * kPanelPairs));
        std::vector<float> part(size_t(tiles * kTileTokens * kPanelRows));
        for (int64_t p = begin; p < end; ++p) {
          const int64_t p0 = p * kPanelRows;
          std::fill(part.begin(), part.end(), 0.0f);
          for (int64_t s0 = 0; s0 < pairs; s0 += kPanelPairs) {
            const int64_t steps = std::min(kPanelPairs, pairs - s0);
            pack_panel(w, cols, p0, rows, s0, steps, wp.data());
            for (int64_t t = 0; t < tiles; ++t) {
              const int64_t t0 = t * kTileTokens, mr = std::min<int64_t>(kTileTokens, n - t0);
              tile_n(std::make_integer_sequence<int, kTileTokens>{}, int(mr), act.data() + t0 * pairs + s0 * mr,
                     wp.data(), steps, part.data() + t * kTileTokens * kPanelRows);
            }
          }
          for (int64_t t = 0; t < n; ++t) {
            const float* sums = part.data() + (t / kTileTokens) * kTileTokens * kPanelRows + (t % kTileTokens) * kPanelRows;
            for (int64_t r = p0; r < std::min(rows, p0 + kPanelRows); ++r) y[t * rows + r] = sums[r - p0];
          }
        }
      },
      int64_t(kPanelRows) * cols * n);
  return true;
}

}  // namespace lowbit::formats::avx512_bf16

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
