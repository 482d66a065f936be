// Internal interface between format.cpp (names, dispatch) and the per-format files. Each format
// file defines the FormatDefinition of its formats; nothing outside src/formats includes this
// header.
#pragma once
#include <cstdint>
#include <cstring>
#include <vector>
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif

#include "formats/format.h"

namespace lowbit::formats {

// A format's whole definition: what the rest of lowbit reads (FormatInfo) and its CPU reference.
// `quantize` fills every plane of `q` (format, rows, cols and opts are already set) to the sizes
// info.plane_sizes gives (format.cpp checks); `dequantize_row` writes the cols reconstructed values
// of one row.
struct FormatDefinition {
  FormatInfo info;
  void (*quantize)(QuantizedTensor& q, const float* w, ThreadPool& pool);
  void (*dequantize_row)(const QuantizedTensor& q, int64_t row, float* out);
  // bias: null or q.rows values, added where the format's reference adds it (see format.h).
  void (*matmul)(const QuantizedTensor& q, const float* x, int64_t n_tokens, const float* bias, float* y,
                 ThreadPool& pool);
};

// One definition per line of format_list.h: formats::<symbol>_format, in the format's own file.
#define LOWBIT_DECLARE_FORMAT(id, symbol) extern const FormatDefinition symbol##_format;
LOWBIT_FORMATS(LOWBIT_DECLARE_FORMAT)
#undef LOWBIT_DECLARE_FORMAT

// Every plane of q sized as format_info(q.format).plane_sizes gives, zero-filled: what a format's
// quantize() writes into.
inline void allocate_planes(QuantizedTensor& q) {
  const PlaneSizes s = format_info(q.format).plane_sizes(q.rows, q.cols, q.opts);
  q.each([&](Plane p, auto& plane, auto*) { plane.assign(s.elements[int(p)], {}); });
}

// The planes of the formats that store one int8 / e4m3 code per value and one fp32 scale per row
// (LLM.int8, W8A8, W8A8-fp8).
inline PlaneSizes int8_row_planes(int64_t rows, int64_t cols, const QuantOptions&) {
  PlaneSizes s;
  s[Plane::codes] = size_t(rows) * size_t(cols);
  s[Plane::scales] = size_t(rows);
  return s;
}

// y[t, r] += bias[r] in fp32 after the dot product (a no-op for a null bias): where every format
// but LLM.int8 adds its bias, as torch's F.linear on the dequantized weight does.
inline void add_bias_after(const QuantizedTensor& q, const float* bias, int64_t n_tokens, float* y) {
  if (bias == nullptr) return;
  for (int64_t t = 0; t < n_tokens; ++t)
    for (int64_t r = 0; r < q.rows; ++r) y[t * q.rows + r] += bias[r];
}

void double_quantize_four_bit(QuantizedTensor& q);  // NF4/FP4 -> NF4_DQ/FP4_DQ (format_nf4_fp4.cpp)

// The summation order of every fp32-activation matmul (the oracle's, which every vector kernel
// reproduces bit for bit): sixteen lane sums, lane k adding a[i] * b[i] for i = k, k + 16, k + 32,
// ... below n rounded down to 16, each product rounded before its add (no FMA); the rest summed
// in order into `tail`; then sum_lanes16. Sixteen lanes are one zmm register, so an AVX-512
// kernel adds a whole register of products per instruction; the compiler vectorizes this loop
// without -ffast-math (the order is fixed, hence deterministic across runs and machines).
constexpr int kDotLanes = 16;
// The lanes' sum: pairs k and k + 8 first, then the eight in a fixed tree, then the tail.
inline float sum_lanes16(const float* p, float tail) {
  const float q0 = p[0] + p[8], q1 = p[1] + p[9], q2 = p[2] + p[10], q3 = p[3] + p[11];
  const float q4 = p[4] + p[12], q5 = p[5] + p[13], q6 = p[6] + p[14], q7 = p[7] + p[15];
  return ((q0 + q4) + (q1 + q5)) + ((q2 + q6) + (q3 + q7)) + tail;
}
inline float dot_f32(const float* a, const float* b, int64_t n) {
  float part[kDotLanes] = {};
  int64_t i = 0;
  for (; i + kDotLanes <= n; i += kDotLanes)
    for (int k = 0; k < kDotLanes; ++k) part[k] += a[i + k] * b[i + k];
  float tail = 0.0f;
  for (; i < n; ++i) tail += a[i] * b[i];
  return sum_lanes16(part, tail);
}

// Hot loops compiled twice, for AVX2 and for baseline x86-64, the version picked once at load
// time (GCC/Clang function multiversioning), so a portable binary still vectorizes 8 floats wide.
// AVX2 alone, not FMA: both versions do the same fp32 multiplies and adds in the same order and
// give bit-identical results.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(LOWBIT_NO_CPU_CLONES)
#define LOWBIT_VECTOR_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define LOWBIT_VECTOR_CLONES
#endif

// The nibbles of packed 4-bit codes as 8-lane vectors, for the AVX2 decoders of the 4-bit
// formats (used behind a runtime check; each has a scalar twin that tests pin it to).
#if defined(__x86_64__) && defined(__GNUC__)
#define LOWBIT_HAVE_AVX2_DECODE 1
// cpu_level() is avx2 or above (the CPU has AVX2 and no cap is set).
bool avx2_decode();
// Bytes b0..b3 at p -> int32 lanes [b0 >> 4, b0 & 15, b1 >> 4, ...] (high_first) or
// [b0 & 15, b0 >> 4, ...] (low nibble first).
__attribute__((target("avx2"))) inline __m256i nibbles_of_4_bytes(const uint8_t* p, bool high_first) {
  int32_t four;
  std::memcpy(&four, p, 4);
  const __m128i b = _mm_cvtsi32_si128(four);
  const __m256i doubled = _mm256_cvtepu8_epi32(_mm_unpacklo_epi8(b, b));  // b0 b0 b1 b1 b2 b2 b3 b3
  const __m256i shifts = high_first ? _mm256_setr_epi32(4, 0, 4, 0, 4, 0, 4, 0) : _mm256_setr_epi32(0, 4, 0, 4, 0, 4, 0, 4);
  return _mm256_and_si256(_mm256_srlv_epi32(doubled, shifts), _mm256_set1_epi32(15));
}
#else
#define LOWBIT_HAVE_AVX2_DECODE 0
inline bool avx2_decode() { return false; }
#endif

// Output rows [begin, end) of y[t, r] = dot(x[t, :], W[r, :]), each weight row first reconstructed
// into `w` (cols floats, a per-thread buffer that stays in L1/L2, so a GEMV reads each packed byte
// once and never materializes the whole fp32 matrix) by `decode_row(r, w)`. Called from a
// format's LOWBIT_VECTOR_CLONES function, so the decoder and the dot product inline into each
// version.
template <class DecodeRow>
inline void decoded_rows(const QuantizedTensor& q, const float* x, int64_t n_tokens, float* y, int64_t begin,
                         int64_t end, float* w, const DecodeRow& decode_row) {
  for (int64_t r = begin; r < end; ++r) {
    decode_row(r, w);
    for (int64_t t = 0; t < n_tokens; ++t) y[t * q.rows + r] = dot_f32(x + t * q.cols, w, q.cols);
  }
}

// A format's rows kernel: decoded_rows with its decoder (signature of the parallel chunk).
using RowsKernel = void (*)(const QuantizedTensor& q, const float* x, int64_t n_tokens, float* y, int64_t begin,
                            int64_t end, float* w);

// The whole matmul, parallel over output rows, with one decode buffer per chunk.
inline void matmul_by_decoded_rows(const QuantizedTensor& q, const float* x, int64_t n_tokens, float* y,
                                   ThreadPool& pool, RowsKernel rows) {
  pool.parallel_for(
      q.rows,
      [&](int64_t begin, int64_t end) {
        std::vector<float> w(size_t(q.cols > 0 ? q.cols : 1));
        rows(q, x, n_tokens, y, begin, end, w.data());
      },
      q.cols * (n_tokens + 1));
}

}  // namespace lowbit::formats

