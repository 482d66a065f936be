// AVX-512 kernels of the formats whose activations are fp32 (contract in kernels.h).
//
// Decoders give 16 consecutive exact weights of one row as one zmm register:
//   f32    a load;
//   bf16   the 16-bit patterns zero-extended to 32 bits and shifted left by 16 (exact widening);
//   nf4/fp4 (-dq), W4A16
//          the current block's 16 possible values (table[code] * absmax, or (code - zero) * scale,
//          one fp32 multiply each, as the plain loops round them) sit in one register and the
//          codes index it with one vpermps; the block's multiply is done once for 16 lanes
//          instead of once per weight.
// GEMV (one token): four rows at a time, each with a zmm accumulator of dot_f32's sixteen lane
//   sums: acc += x[c..c+15] * w[c..c+15] (one multiply, one add) adds column c+k to lane k:
//   dot_f32's order. The four rows' chains are independent, so the adds' latency overlaps and
//   each row is one sequential stream for the prefetchers.
// GEMM (several tokens): a panel of 32 rows x 512 columns is decoded once into a packed buffer
//   (per group of 4 rows, per step of 16 columns, the 4 rows' 16 weights) and multiplied with
//   tiles of up to 6 tokens (x packed per column block as [tile][step][token][16]): 6 x 4 zmm
//   accumulators, each one (token, row)'s sixteen lane sums of dot_f32, advanced column step by
//   column step and kept in a buffer between column blocks. So prompt and decode give
//   bit-identical rows.
// No FMA anywhere: contraction is switched off below, since dot_f32 rounds each product.
// GCC 12 warns inside its own AVX-512 headers (_mm512_undefined_*'s self-initialization, GCC bug
// 105593); the pragma must precede the headers to cover them.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include <immintrin.h>

#include "core/half.h"
#include "formats/format_impl.h"
#include "formats/four_bit.h"
#include "formats/kernels.h"

// Everything below is compiled for AVX-512 and only called after cpu_level() says the CPU has it.
// The headers above are included first so that no inline function they define is compiled here
// for AVX-512 (the linker could pick that copy for the portable code).
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,f16c,avx512f,avx512bw,avx512vl,avx512dq"))), \
                             apply_to = function)
#pragma clang fp contract(off)
#else
#pragma GCC push_options
#pragma GCC target("avx2,f16c,avx512f,avx512bw,avx512vl,avx512dq")
#pragma GCC optimize("fp-contract=off")
#endif

namespace lowbit::formats::avx512 {

namespace {

constexpr int64_t kWholeRow = int64_t(1) << 40;  // segment length of decoders without blocks
constexpr int kPrefetchBytes = 768;               // how far ahead of each row's reads to prefetch

// dot_f32's final sum of its sixteen lane sums and its scalar tail.
inline float sum_lanes(__m512 acc, float tail) {
  alignas(64) float p[kDotLanes];
  _mm512_store_ps(p, acc);
  return sum_lanes16(p, tail);
}

// ---- decoders -------------------------------------------------------------------------------
// Each gives kStep consecutive exact weights of one row (kStep / 16 zmm registers):
//   Row row(r)                      a cursor on row r
//   int64_t segment_length()        columns per block (a multiple of kStep; blocks start at column
//                                   0 of each row), kWholeRow if the format has no blocks
//   Segment segment(row, k)         the state for block k of the row
//   void decode(seg, row, c, out)   columns c .. c + kStep - 1 (c a multiple of kStep)
//   const char* bytes(row, c)       where those weights are, to prefetch
// Elementwise decoders (no blocks) take any column count: decode16 and at() serve the tail.

struct F32Decoder {
  static constexpr bool kElementwise = true;
  static constexpr int kStep = 16;
  struct Segment {};
  using Row = const float*;
  const float* w;
  int64_t cols;

  Row row(int64_t r) const { return w + r * cols; }
  int64_t segment_length() const { return kWholeRow; }
  Segment segment(Row, int64_t) const { return {}; }
  void decode(Segment, Row row, int64_t c, __m512* out) const { out[0] = _mm512_loadu_ps(row + c); }
  __m512 decode16(Row row, int64_t c) const { return _mm512_loadu_ps(row + c); }
  float at(Row row, int64_t c) const { return row[c]; }
  const char* bytes(Row row, int64_t c) const { return reinterpret_cast<const char*>(row + c); }
};

struct Bf16Decoder {
  static constexpr bool kElementwise = true;
  static constexpr int kStep = 32;
  struct Segment {};
  using Row = const uint16_t*;
  const uint16_t* w;
  int64_t cols;

  Row row(int64_t r) const { return w + r * cols; }
  int64_t segment_length() const { return kWholeRow; }
  Segment segment(Row, int64_t) const { return {}; }
  static __m512 widen(const uint16_t* p) {
    const __m256i bits = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(bits), 16));
  }
  void decode(Segment, Row row, int64_t c, __m512* out) const {
    out[0] = widen(row + c);
    out[1] = widen(row + c + 16);
  }
  __m512 decode16(Row row, int64_t c) const { return widen(row + c); }
  float at(Row row, int64_t c) const { return bf16_to_f32(row[c]); }
  const char* bytes(Row row, int64_t c) const { return reinterpret_cast<const char*>(row + c); }
};

// 16 code bytes at p -> 32 codes in element order, as the low 4 bits of 32-bit lanes (vpermps
// reads only those, so the other bits need no masking), then looked up in `values`. The first
// element of each byte is its high nibble (nf4/fp4) or its low nibble (W4A16).
template <bool kHighFirst>
inline void decode_codes(const uint8_t* p, __m512 values, __m512* out) {
  const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  const __m128i shifted = _mm_srli_epi16(bytes, 4);  // low 4 bits of each byte: its high nibble
  const __m128i first = kHighFirst ? shifted : bytes, second = kHighFirst ? bytes : shifted;
  out[0] = _mm512_permutexvar_ps(_mm512_cvtepu8_epi32(_mm_unpacklo_epi8(first, second)), values);
  out[1] = _mm512_permutexvar_ps(_mm512_cvtepu8_epi32(_mm_unpackhi_epi8(first, second)), values);
}

// nf4, fp4, nf4-dq, fp4-dq: flat blocks of block_size values, the first element of each byte in
// its high nibble. Blocks must start at row starts (cols % block_size == 0).
struct FourBitDecoder {
  static constexpr bool kElementwise = false;
  static constexpr int kStep = 32;
  using Segment = __m512;  // table[code] * absmax for code 0..15
  struct Row {
    const uint8_t* codes;
    int64_t first_block;
  };
  const QuantizedTensor* q;
  const uint8_t* codes;
  int64_t cols, block;
  __m512 table;

  explicit FourBitDecoder(const QuantizedTensor& t)
      : q(&t), codes(t.codes.data()), cols(t.cols), block(t.opts.block_size),
        table(_mm512_loadu_ps(code_table(t.format).data())) {}
  Row row(int64_t r) const { return {codes + r * cols / 2, r * (cols / block)}; }
  int64_t segment_length() const { return block; }
  Segment segment(const Row& row, int64_t k) const {
    return _mm512_mul_ps(table, _mm512_set1_ps(block_absmax(*q, row.first_block + k)));
  }
  void decode(Segment values, const Row& row, int64_t c, __m512* out) const {
    decode_codes<true>(row.codes + c / 2, values, out);
  }
  const char* bytes(const Row& row, int64_t c) const { return reinterpret_cast<const char*>(row.codes + c / 2); }
};

// W4A16: each row's bytes start on a byte, column 2j in the low nibble; groups of w4_group
// columns with an fp16 scale and a zero point (8 when symmetric).
struct W4a16Decoder {
  static constexpr bool kElementwise = false;
  static constexpr int kStep = 32;
  using Segment = __m512;  // (code - zero) * scale for code 0..15
  struct Row {
    const uint8_t* codes;
    int64_t first_group;
  };
  const QuantizedTensor* q;
  const uint8_t* codes;
  int64_t bytes_per_row, group, groups;
  __m512i iota;

  explicit W4a16Decoder(const QuantizedTensor& t)
      : q(&t), codes(t.codes.data()), bytes_per_row((t.cols + 1) / 2), group(t.opts.w4_group),
        groups((t.cols + t.opts.w4_group - 1) / t.opts.w4_group),
        iota(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)) {}
  Row row(int64_t r) const { return {codes + r * bytes_per_row, r * groups}; }
  int64_t segment_length() const { return group; }
  Segment segment(const Row& row, int64_t k) const {
    const int64_t g = row.first_group + k;
    const float scale = f16_to_f32(q->scales16[size_t(g)]);
    const int zero = q->opts.w4_symmetric ? 8 : q->zeros[size_t(g)];
    return _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(iota, _mm512_set1_epi32(zero))), _mm512_set1_ps(scale));
  }
  void decode(Segment values, const Row& row, int64_t c, __m512* out) const {
    decode_codes<false>(row.codes + c / 2, values, out);
  }
  const char* bytes(const Row& row, int64_t c) const { return reinterpret_cast<const char*>(row.codes + c / 2); }
};

// ---- GEMV -----------------------------------------------------------------------------------

// y[r] for rows r0 .. r0 + R - 1.
template <int R, class D>
inline void gemv_rows(const D& d, const float* x, int64_t cols, int64_t r0, float* y) {
  constexpr int kStep = D::kStep, kVectors = kStep / 16;
  typename D::Row rows[R];
  __m512 acc[R];
  for (int i = 0; i < R; ++i) {
    rows[i] = d.row(r0 + i);
    acc[i] = _mm512_setzero_ps();
  }
  const int64_t whole = cols / kStep * kStep, length = d.segment_length();
  for (int64_t k = 0, s0 = 0; s0 < whole; ++k, s0 += length) {
    const int64_t s1 = std::min(whole, s0 + length);
    typename D::Segment seg[R];
    for (int i = 0; i < R; ++i) seg[i] = d.segment(rows[i], k);
    for (int64_t c = s0; c < s1; c += kStep) {
      __m512 xv[kVectors];
#pragma GCC unroll 2
      for (int v = 0; v < kVectors; ++v) xv[v] = _mm512_loadu_ps(x + c + 16 * v);
#pragma GCC unroll 4
      for (int i = 0; i < R; ++i) {
        _mm_prefetch(d.bytes(rows[i], c) + kPrefetchBytes, _MM_HINT_T0);
        __m512 w[kVectors];
        d.decode(seg[i], rows[i], c, w);
#pragma GCC unroll 2
        for (int v = 0; v < kVectors; ++v) acc[i] = _mm512_add_ps(acc[i], _mm512_mul_ps(xv[v], w[v]));
      }
    }
  }
  int64_t c = whole;
  if constexpr (D::kElementwise) {
    for (; c + 16 <= cols; c += 16) {
      const __m512 xv = _mm512_loadu_ps(x + c);
      for (int i = 0; i < R; ++i) acc[i] = _mm512_add_ps(acc[i], _mm512_mul_ps(xv, d.decode16(rows[i], c)));
    }
  }
  for (int i = 0; i < R; ++i) {
    float tail = 0.0f;
    if constexpr (D::kElementwise)
      for (int64_t k = c; k < cols; ++k) tail += x[k] * d.at(rows[i], k);
    y[r0 + i] = sum_lanes(acc[i], tail);
  }
}

template <class D>
void gemv(const D& d, const float* x, int64_t rows, int64_t cols, float* y, ThreadPool& pool) {
  constexpr int kRows = 4;
  pool.parallel_for(
      rows,
      [&](int64_t begin, int64_t end) {
        int64_t r = begin;
        for (; r + kRows <= end; r += kRows) gemv_rows<kRows>(d, x, cols, r, y);
        for (; r < end; ++r) gemv_rows<1>(d, x, cols, r, y);
      },
      cols);
}

// ---- GEMM -----------------------------------------------------------------------------------

constexpr int kGroupRows = 4;                  // rows per micro-kernel
constexpr int kPanelGroups = 8;                // 32 rows per decoded panel
constexpr int kPanelRows = kGroupRows * kPanelGroups;
constexpr int64_t kPanelCols = 512;            // columns per block, a multiple of 32
constexpr int kTileTokens = 6;                 // tokens per micro-kernel: 6 x 4 accumulators
constexpr int kTileFloats = kTileTokens * kGroupRows * 16;  // lane sums of one (tile, group)

// x [n, cols] -> per column block [k0, k1) of kPanelCols, per tile of 6 tokens (t0 ..), the
// steps of 16 columns of each token in the tile: xp[k0 * n + t0 * (k1 - k0) + (s * mr + t) * 16 + i]
// = x[t0 + t, k0 + 16s + i] (mr = tokens in the tile). One column block of all tiles is one
// contiguous stream, read in order by the micro-kernel calls.
void pack_tokens(const float* x, int64_t n, int64_t cols, int64_t whole16, float* xp) {
  for (int64_t k0 = 0; k0 < whole16; k0 += kPanelCols) {
    const int64_t k1 = std::min(whole16, k0 + kPanelCols), block_steps = (k1 - k0) / 16;
    for (int64_t t0 = 0; t0 < n; t0 += kTileTokens) {
      const int64_t mr = std::min<int64_t>(kTileTokens, n - t0);
      float* out = xp + k0 * n + t0 * (k1 - k0);
      for (int64_t s = 0; s < block_steps; ++s)
        for (int64_t t = 0; t < mr; ++t)
          _mm512_storeu_ps(out + (s * mr + t) * 16, _mm512_loadu_ps(x + (t0 + t) * cols + k0 + s * 16));
    }
  }
}

// Rows [p0, p0 + 32) x columns [k0, k1) of W (rows past the matrix as zeros) into
// wp[group g][step s][row j][16]: row p0 + 4g + j, columns k0 + 16s .. k0 + 16s + 15. k0 is a
// multiple of kPanelCols, k1 - k0 one of 16 (of kStep for blocked decoders).
template <class D>
void decode_panel(const D& d, int64_t rows, int64_t p0, int64_t k0, int64_t k1, float* wp) {
  constexpr int kStep = D::kStep, kVectors = kStep / 16;
  const int64_t steps = (k1 - k0) / 16, length = d.segment_length();
  for (int g = 0; g < kPanelGroups; ++g)
    for (int j = 0; j < kGroupRows; ++j) {
      const int64_t r = p0 + kGroupRows * g + j;
      float* out = wp + (g * steps * kGroupRows + j) * 16;  // + s * kGroupRows * 16 per step
      if (r >= rows) {
        for (int64_t s = 0; s < steps; ++s) _mm512_storeu_ps(out + s * kGroupRows * 16, _mm512_setzero_ps());
        continue;
      }
      const typename D::Row row = d.row(r);
      int64_t c = k0;
      while (c + kStep <= k1) {
        const int64_t k = c / length, segment_end = std::min(k1, (k + 1) * length);
        const typename D::Segment seg = d.segment(row, k);
        for (; c + kStep <= segment_end; c += kStep) {
          // The same row's next column block, so that the next panel's decode finds it cached
          // (32 rows far apart are too many streams for the hardware prefetchers).
          _mm_prefetch(d.bytes(row, c + kPanelCols), _MM_HINT_T0);
          __m512 w[kVectors];
          d.decode(seg, row, c, w);
          for (int v = 0; v < kVectors; ++v) _mm512_storeu_ps(out + ((c - k0) / 16 + v) * kGroupRows * 16, w[v]);
        }
      }
      if constexpr (D::kElementwise)
        for (; c < k1; c += 16) _mm512_storeu_ps(out + (c - k0) / 16 * kGroupRows * 16, d.decode16(row, c));
    }
}

// The lane sums of MR tokens x 4 rows (part, [token][row][16]) advanced over `steps` column
// steps. The loops over tokens and rows are unrolled by pragma: GCC 12 otherwise keeps the
// accumulator array in memory.
template <int MR>
inline void micro_tile(const float* xp, const float* wp, int64_t steps, float* part) {
  __m512 acc[MR][kGroupRows];
#pragma GCC unroll 8
  for (int t = 0; t < MR; ++t)
#pragma GCC unroll 4
    for (int j = 0; j < kGroupRows; ++j) acc[t][j] = _mm512_loadu_ps(part + (t * kGroupRows + j) * 16);
  for (int64_t s = 0; s < steps; ++s) {
    const float* ws = wp + s * kGroupRows * 16;
    __m512 w[kGroupRows];
#pragma GCC unroll 4
    for (int j = 0; j < kGroupRows; ++j) w[j] = _mm512_loadu_ps(ws + 16 * j);
    const float* xs = xp + s * MR * 16;
#pragma GCC unroll 8
    for (int t = 0; t < MR; ++t) {
      const __m512 xv = _mm512_loadu_ps(xs + 16 * t);
#pragma GCC unroll 4
      for (int j = 0; j < kGroupRows; ++j) acc[t][j] = _mm512_add_ps(acc[t][j], _mm512_mul_ps(xv, w[j]));
    }
  }
#pragma GCC unroll 8
  for (int t = 0; t < MR; ++t)
#pragma GCC unroll 4
    for (int j = 0; j < kGroupRows; ++j) _mm512_storeu_ps(part + (t * kGroupRows + j) * 16, acc[t][j]);
}

void micro_tile_n(int64_t mr, const float* xp, const float* wp, int64_t steps, float* part) {
  switch (mr) {
    case 1: micro_tile<1>(xp, wp, steps, part); break;
    case 2: micro_tile<2>(xp, wp, steps, part); break;
    case 3: micro_tile<3>(xp, wp, steps, part); break;
    case 4: micro_tile<4>(xp, wp, steps, part); break;
    case 5: micro_tile<5>(xp, wp, steps, part); break;
    default: micro_tile<6>(xp, wp, steps, part); break;
  }
}

template <class D>
void gemm(const D& d, const float* x, int64_t n, int64_t rows, int64_t cols, float* y, ThreadPool& pool) {
  const int64_t whole16 = cols / 16 * 16;
  const int64_t tiles = (n + kTileTokens - 1) / kTileTokens;
  std::vector<float> xp(size_t(std::max<int64_t>(1, n * whole16)));
  pack_tokens(x, n, cols, whole16, xp.data());
  const int64_t panels = (rows + kPanelRows - 1) / kPanelRows;
  pool.parallel_for(
      panels,
      [&](int64_t begin, int64_t end) {
        std::vector<float> wp(size_t(kPanelRows * kPanelCols));
        std::vector<float> part(size_t(tiles * kPanelGroups * kTileFloats), 0.0f);
        for (int64_t p = begin; p < end; ++p) {
          const int64_t p0 = p * kPanelRows;
          const int groups = int(std::min<int64_t>(kPanelGroups, (rows - p0 + kGroupRows - 1) / kGroupRows));
          std::fill(part.begin(), part.end(), 0.0f);
          for (int64_t k0 = 0; k0 < whole16; k0 += kPanelCols) {
            const int64_t k1 = std::min(whole16, k0 + kPanelCols), block_steps = (k1 - k0) / 16;
            decode_panel(d, rows, p0, k0, k1, wp.data());
            // Tiles outside, groups inside: a tile's activations (6 x 512 floats) stay in L1 while
            // the panel's 8 groups pass over them.
            for (int64_t tile = 0; tile < tiles; ++tile)
              for (int g = 0; g < groups; ++g) {
                const int64_t t0 = tile * kTileTokens, mr = std::min<int64_t>(kTileTokens, n - t0);
                micro_tile_n(mr, xp.data() + k0 * n + t0 * (k1 - k0), wp.data() + g * block_steps * kGroupRows * 16,
                             block_steps, part.data() + (tile * kPanelGroups + g) * kTileFloats);
              }
          }
          for (int64_t tile = 0; tile < tiles; ++tile) {
            const int64_t t0 = tile * kTileTokens, mr = std::min<int64_t>(kTileTokens, n - t0);
            for (int g = 0; g < groups; ++g)
              for (int64_t t = 0; t < mr; ++t)
                for (int j = 0; j < kGroupRows; ++j) {
                  const int64_t r = p0 + kGroupRows * g + j;
                  if (r >= rows) continue;
                  const float* lanes = part.data() + (tile * kPanelGroups + g) * kTileFloats + (t * kGroupRows + j) * 16;
                  float tail = 0.0f;
                  if constexpr (D::kElementwise)
                    for (int64_t c = whole16; c < cols; ++c) tail += x[(t0 + t) * cols + c] * d.at(d.row(r), c);
                  y[(t0 + t) * rows + r] = sum_lanes16(lanes, tail);
                }
          }
        }
      },
      int64_t(kPanelRows) * cols * n);
}

template <class D>
void run(const D& d, const float* x, int64_t n, int64_t rows, int64_t cols, float* y, ThreadPool& pool) {
  if (n == 1)
    gemv(d, x, rows, cols, y, pool);
  else
    gemm(d, x, n, rows, cols, y, pool);
}

}  // namespace

bool matmul_f32(const QuantizedTensor& q, const float* x, int64_t n_tokens, float* y, ThreadPool& pool) {
  run(F32Decoder{reinterpret_cast<const float*>(q.codes.data()), q.cols}, x, n_tokens, q.rows, q.cols, y, pool);
  return true;
}

bool matmul_bf16(const QuantizedTensor& q, const float* x, int64_t n_tokens, float* y, ThreadPool& pool) {
  run(Bf16Decoder{reinterpret_cast<const uint16_t*>(q.codes.data()), q.cols}, x, n_tokens, q.rows, q.cols, y, pool);
  return true;
}

bool matmul_four_bit(const QuantizedTensor& q, const float* x, int64_t n_tokens, float* y, ThreadPool& pool) {
  const int64_t bs = q.opts.block_size;
  if (q.cols % 32 != 0 || bs % 32 != 0 || q.cols % bs != 0) return false;
  run(FourBitDecoder(q), x, n_tokens, q.rows, q.cols, y, pool);
  return true;
}

bool matmul_w4a16(const QuantizedTensor& q, const float* x16, int64_t n_tokens, float* y, ThreadPool& pool) {
  if (q.cols % 32 != 0 || q.opts.w4_group % 32 != 0) return false;
  run(W4a16Decoder(q), x16, n_tokens, q.rows, q.cols, y, pool);
  return true;
}

void round_f16(const float* x, int64_t n, float* out) {
  const __m512i sign = _mm512_set1_epi32(int32_t(0x80000000u)), quiet_nan = _mm512_set1_epi32(0x7fc00000);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 v = _mm512_loadu_ps(x + i);
    const __m512 rounded = _mm512_cvtph_ps(_mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    // round_f16 turns every NaN into the quiet NaN of its sign; vcvtps2ph would keep payload bits.
    const __m512 nan = _mm512_castsi512_ps(_mm512_or_si512(_mm512_and_si512(_mm512_castps_si512(v), sign), quiet_nan));
    _mm512_storeu_ps(out + i, _mm512_mask_mov_ps(rounded, _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q), nan));
  }
  for (; i < n; ++i) out[i] = lowbit::round_f16(x[i]);
}

float absmax_below(const float* x, int64_t n, float threshold) {
  const __m512 limit = _mm512_set1_ps(threshold > 0.0f ? threshold : INFINITY);
  const bool inclusive = !(threshold > 0.0f);  // no threshold: infinity counts too
  __m512 acc = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 v = _mm512_abs_ps(_mm512_loadu_ps(x + i));
    const __mmask16 keep = inclusive ? __mmask16(0xffff) : _mm512_cmp_ps_mask(v, limit, _CMP_LT_OQ);
    acc = _mm512_mask_max_ps(acc, keep, v, acc);  // vmaxps returns its second operand for a NaN first
  }
  float absmax = _mm512_reduce_max_ps(acc);
  for (; i < n; ++i) {
    const float v = std::fabs(x[i]);
    if (!(threshold > 0.0f && v >= threshold)) absmax = std::max(absmax, v);
  }
  return absmax;
}

namespace {
// rint, clamp to [-128, 127], to int8 (lanes finite).
inline __m128i round_clamp_int8(__m512 v) {
  const __m512 r = _mm512_roundscale_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m512 clamped = _mm512_min_ps(_mm512_max_ps(r, _mm512_set1_ps(-128.0f)), _mm512_set1_ps(127.0f));
  return _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(clamped));
}
}  // namespace

void divide_round_int8(const float* x, int64_t n, float scale, int8_t* out) {
  const __m512 s = _mm512_set1_ps(scale);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i), round_clamp_int8(_mm512_div_ps(_mm512_loadu_ps(x + i), s)));
  for (; i < n; ++i) out[i] = int8_t(std::clamp(std::nearbyint(x[i] / scale), -128.0f, 127.0f));
}

void scale_round_int8(const float* x, int64_t n, float factor, const uint8_t* zero, int8_t* out) {
  const __m512 f = _mm512_set1_ps(factor);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 v = _mm512_mul_ps(_mm512_loadu_ps(x + i), f);
    const __mmask16 nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    const __mmask16 zeroed = _mm_cmpneq_epi8_mask(_mm_loadu_si128(reinterpret_cast<const __m128i*>(zero + i)),
                                                  _mm_setzero_si128());
    const __m128i q = round_clamp_int8(_mm512_mask_mov_ps(v, nan, _mm512_setzero_ps()));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i), _mm_mask_mov_epi8(q, __mmask16(zeroed | nan), _mm_setzero_si128()));
  }
  for (; i < n; ++i) {
    const float v = x[i] * factor;
    out[i] = (zero[i] || std::isnan(v)) ? int8_t(0) : int8_t(std::clamp(std::nearbyint(v), -128.0f, 127.0f));
  }
}

}  // namespace lowbit::formats::avx512

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
