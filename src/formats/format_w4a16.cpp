// W4A16: int4 weights by round to nearest, groups of opts.w4_group (128) along the input
// dimension of each row (the last group of a row may be partial), fp16 scales; activations are
// rounded to fp16 (as Marlin/GPTQ kernels consume them) and accumulated in fp32.
//
// Asymmetric (default, GPTQ-style range that always contains 0):
//   lo = min(min(group), 0), hi = max(max(group), 0)
//   scale = fp16((hi - lo) / 15); zero = clamp(rint(-lo / scale), 0, 15)
//   q = clamp(rint(w / scale) + zero, 0, 15); dequantized = (q - zero) * scale
// Symmetric (opts.w4_symmetric, Marlin-style): scale = fp16(absmax / 7),
//   q = clamp(rint(w / scale) + 8, 0, 15) (uses -7..7 around 8, no clipping); dequantized = (q - 8) * scale
// The fp16-rounded scale is the one used to quantize, so dequantization is exact in fp32
// ((q - zero) is a small integer, scale has 11 significant bits). A zero scale gives 0.
// Planes (CUDA layout: each row starts on a byte; two columns per byte):
//   codes    [rows, ceil(cols / 2)] bytes: column 2j in the LOW nibble, 2j+1 in the high nibble
//            (compressed-tensors order); an odd row leaves the last high nibble 0
//   scales16 [rows, groups] fp16 bit patterns, groups = ceil(cols / w4_group)
//   zeros    [rows, groups] zero points 0..15, one per byte (asymmetric only; symmetric: empty, 8)
#include <algorithm>
#include <cmath>
#include <vector>

#include "core/cpu_features.h"
#include "core/half.h"
#include "formats/format_impl.h"
#include "formats/kernels.h"
#include "formats/layout_w4a16.h"

namespace lowbit::formats {

namespace {

int64_t group_count(const QuantizedTensor& q) { return w4a16_groups(q.cols, q.opts.w4_group); }
int64_t row_bytes(const QuantizedTensor& q) { return w4a16_row_bytes(q.cols); }

PlaneSizes w4a16_planes(int64_t rows, int64_t cols, const QuantOptions& opts) {
  PlaneSizes s;
  const size_t r = size_t(rows), groups = size_t(w4a16_groups(cols, opts.w4_group));
  s[Plane::codes] = r * size_t(w4a16_row_bytes(cols));
  s[Plane::scales16] = r * groups;
  s[Plane::zeros] = opts.w4_symmetric ? 0 : r * groups;
  return s;
}

int clamp_code(float v) { return int(std::clamp(v, 0.0f, 15.0f)); }

void w4a16_quantize(QuantizedTensor& q, const float* w, ThreadPool& pool) {
  const int64_t groups = group_count(q), group = q.opts.w4_group;
  const bool symmetric = q.opts.w4_symmetric;
  allocate_planes(q);
  pool.parallel_for(q.rows, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const float* in = w + r * q.cols;
      uint8_t* out = q.codes.data() + r * row_bytes(q);
      for (int64_t g = 0; g < groups; ++g) {
        const int64_t lo_col = g * group, hi_col = std::min(q.cols, lo_col + group);
        float lo = 0.0f, hi = 0.0f, absmax = 0.0f;
        for (int64_t c = lo_col; c < hi_col; ++c) {
          lo = std::min(lo, in[c]);
          hi = std::max(hi, in[c]);
          absmax = std::max(absmax, std::fabs(in[c]));
        }
        const uint16_t scale16 = f32_to_f16(symmetric ? absmax / 7.0f : (hi - lo) / 15.0f);
        const float scale = f16_to_f32(scale16);
        int zero = kW4a16SymmetricZero;
        if (!symmetric) zero = scale > 0.0f ? clamp_code(std::nearbyint(-lo / scale)) : 0;
        q.scales16[size_t(r * groups + g)] = scale16;
        if (!symmetric) q.zeros[size_t(r * groups + g)] = uint8_t(zero);
        for (int64_t c = lo_col; c < hi_col; ++c) {
          const int code = scale > 0.0f ? clamp_code(std::nearbyint(in[c] / scale) + float(zero)) : zero;
          out[c / 2] |= uint8_t(c % 2 == 0 ? code : code << 4);
        }
      }
    }
  });
}

#if LOWBIT_HAVE_AVX2_DECODE
// n_bytes code bytes -> 2 * n_bytes values (code - zero) * scale, low nibble first: the scalar
// loop's conversions and products, 8 at a time.
__attribute__((target("avx2"))) void decode_bytes_avx2(const uint8_t* bytes, int64_t n_bytes, int zero, float scale,
                                                       float* dst) {
  const __m256i z = _mm256_set1_epi32(zero);
  const __m256 s = _mm256_set1_ps(scale);
  int64_t j = 0;
  for (; j + 4 <= n_bytes; j += 4) {
    const __m256i codes = nibbles_of_4_bytes(bytes + j, false);
    _mm256_storeu_ps(dst + 2 * j, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(codes, z)), s));
  }
  for (; j < n_bytes; ++j) {
    dst[2 * j] = float((bytes[j] & 15) - zero) * scale;
    dst[2 * j + 1] = float((bytes[j] >> 4) - zero) * scale;
  }
}
#endif

// One row; `avx2`: whole bytes through decode_bytes_avx2 (same values).
void decode_row(const QuantizedTensor& q, int64_t row, float* out, bool avx2) {
  const int64_t groups = group_count(q), group = q.opts.w4_group;
  const uint8_t* in = q.codes.data() + row * row_bytes(q);
  for (int64_t g = 0; g < groups; ++g) {
    const float scale = f16_to_f32(q.scales16[size_t(row * groups + g)]);
    const int zero = q.opts.w4_symmetric ? kW4a16SymmetricZero : q.zeros[size_t(row * groups + g)];
    const int64_t hi_col = std::min(q.cols, (g + 1) * group);
    int64_t c = g * group;
    // (q - zero) * scale, computed rather than looked up so the byte loop vectorizes.
    auto value = [&](int code) { return float(code - zero) * scale; };
    if (c % 2 == 1) {  // odd group size: the group starts on a high nibble
      out[c] = value(in[c / 2] >> 4);
      ++c;
    }
    const int64_t n_bytes = (hi_col - c) / 2;
    const uint8_t* bytes = in + c / 2;
    float* dst = out + c;
#if LOWBIT_HAVE_AVX2_DECODE
    if (avx2) decode_bytes_avx2(bytes, n_bytes, zero, scale, dst);
#endif
    for (int64_t j = 0; j < n_bytes && !avx2; ++j) {
      dst[2 * j] = value(bytes[j] & 15);
      dst[2 * j + 1] = value(bytes[j] >> 4);
    }
    c += 2 * n_bytes;
    if (c < hi_col) out[c] = value(in[c / 2] & 15);
  }
}

void w4a16_dequantize_row(const QuantizedTensor& q, int64_t row, float* out) { decode_row(q, row, out, false); }

LOWBIT_VECTOR_CLONES void w4a16_rows(const QuantizedTensor& q, const float* x, int64_t n_tokens, float* y,
                                     int64_t begin, int64_t end, float* w) {
  const bool avx2 = avx2_decode();
  decoded_rows(q, x, n_tokens, y, begin, end, w, [&](int64_t r, float* out) { decode_row(q, r, out, avx2); });
}

void w4a16_matmul(const QuantizedTensor& q, const float* x, int64_t n_tokens, const float* bias, float* y,
                  ThreadPool& pool) {
  std::vector<float> x16(size_t(n_tokens * q.cols));
  if (cpu_level() >= CpuLevel::avx512) {
    avx512::round_f16(x, n_tokens * q.cols, x16.data());
    if (avx512::matmul_w4a16(q, x16.data(), n_tokens, y, pool)) {
      add_bias_after(q, bias, n_tokens, y);
      return;
    }
  } else {
    for (int64_t i = 0; i < n_tokens * q.cols; ++i) x16[size_t(i)] = round_f16(x[i]);
  }
  matmul_by_decoded_rows(q, x16.data(), n_tokens, y, pool, w4a16_rows);
  add_bias_after(q, bias, n_tokens, y);
}

// KL(bf16 || format) bounds on the fixture models: 1.5x the measured values (docs/quality.md).
constexpr KlBound kW4a16Kl[] = {
    {"falcon-40b-style", 0.19},
    {"falcon-7b-style", 0.22},
    {"falcon-mha-bias", 0.37},
    {"llama-gqa-tied", 0.72},
    {"falcon-untidy", 0.56},
    {"llama-untidy", 1.3},
    {"llama-linear-rope-bf16", 0.68},
    {"llama3-rope", 0.77},
    {"stories260K", 0.22},
};

}  // namespace

const FormatDefinition w4a16_format{
    {Format::W4A16, "W4A16",
     "int4 groups of 128 along the input dim, asymmetric (zero point) or symmetric, fp16 scales; fp16 activations",
     Activations::fp16, true, w4a16_planes, kW4a16Kl},
    w4a16_quantize, w4a16_dequantize_row, w4a16_matmul};

}  // namespace lowbit::formats
