// LLM.int8() (bitsandbytes MatMul8bitLt forward, inference path), mirrored on the CPU with the
// rounding points of bitsandbytes 0.50.2's CPU kernels.
//
// Weights (Int8Params._quantize): the weight is first cast to fp16, then per output row
//   SCB[r] = max_c |w16[r, c]|                    (fp32)
//   CB[r, c] = rint(w16[r, c] * factor[r])        (fp32 product, round half to even; 0 if SCB = 0)
//   factor[r] = fl(fl(1 / SCB[r]) * 127)           torch evaluates bnb's `127.0 / row_stats` as
//                                                  row_stats.reciprocal() * 127: two roundings, not
//                                                  a true division (they differ at the .5 ties:
//                                                  w = 0.0925293, SCB = 0.1850586 gives 64, not 63)
// Planes (CUDA layout: row-major int8 rows, one fp32 scale per row):
//   codes  [rows, cols] int8 CB (stored as bytes)
//   scales [rows] fp32 SCB
// Dequantized weight (int8_vectorwise_dequant): fl(fl(CB * SCB) * 7.874015718698502e-3f).
//
// matmul(x) with threshold t = opts.int8_threshold (0 disables the decomposition):
//   a = fp16(x)                                   activations are cast to fp16
//   outlier column c: some token has |a[., c]| >= t
//   rowStat[tok] = max |a[tok, c]| over the elements below t (outlier ELEMENTS are zeroed first,
//                  so other values in an outlier column still count, as in bnb)
//   CA[tok, c] = rint(a * fl(fl(1 / rowStat) * 127)), 0 in outlier columns (and 0 if rowStat = 0)
//   acc = sum_c CA * CB (int32)
//   out = fp16(fl(fl(float(acc) * fl(rowStat * SCB)) * 6.200124e-05f) [+ fp16(bias)])
//         (bnb's 1/127^2 constant; int8_mm_dequant adds Linear8bitLt's fp16 bias in fp32 before
//         the cast to fp16)
//   outliers: out = fp16(out + sum_{c outlier} a[tok, c] * fp16(dequantized W[r, c])) with the sum
//             in fp32 (bnb: output.addmm(subA, subB) in fp16)
// y holds these fp16 values as fp32.
#include <algorithm>
#include <cmath>
#include <vector>

#include "core/cpu_features.h"
#include "core/half.h"
#include "formats/format_impl.h"
#include "formats/kernels.h"
#include "formats/layout_int8.h"

namespace lowbit::formats {

namespace {

// bnb's `127.0 / row_stats` as torch computes it: a reciprocal, then a multiply by 127.
float int8_factor(float absmax) { return (1.0f / absmax) * 127.0f; }

const int8_t* cb_row(const QuantizedTensor& q, int64_t row) {
  return reinterpret_cast<const int8_t*>(q.codes.data()) + row * q.cols;
}

void int8_quantize(QuantizedTensor& q, const float* w, ThreadPool& pool) {
  allocate_planes(q);
  pool.parallel_for(q.rows, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const float* in = w + r * q.cols;
      float absmax = 0.0f;
      for (int64_t c = 0; c < q.cols; ++c) absmax = std::max(absmax, std::fabs(round_f16(in[c])));
      q.scales[size_t(r)] = absmax;
      const float factor = int8_factor(absmax);
      auto* out = reinterpret_cast<int8_t*>(q.codes.data()) + r * q.cols;
      for (int64_t c = 0; c < q.cols; ++c) out[c] = round_to_int8(round_f16(in[c]) * factor);
    }
  });
}

float dequantized_weight(int8_t cb, float scb) {
  const float product = float(cb) * scb;
  return product * kInv127;
}

void int8_dequantize_row(const QuantizedTensor& q, int64_t row, float* out) {
  const int8_t* cb = cb_row(q, row);
  const float scb = q.scales[size_t(row)];
  for (int64_t c = 0; c < q.cols; ++c) out[c] = dequantized_weight(cb[c], scb);
}

// round_f16 of n values, with the AVX-512 loop where the CPU has it (the same values).
void round_f16_all(const float* x, int64_t n, float* out, bool avx512) {
  if (avx512) return avx512::round_f16(x, n, out);
  for (int64_t i = 0; i < n; ++i) out[i] = round_f16(x[i]);
}

void int8_matmul(const QuantizedTensor& q, const float* x, int64_t n_tokens, const float* bias, float* y,
                 ThreadPool& pool) {
  const int64_t rows = q.rows, cols = q.cols;
  const float threshold = q.opts.int8_threshold;
  const CpuLevel level = cpu_level();
  const bool avx512 = level >= CpuLevel::avx512;
  // Activation side, once per call: fp16 cast, outlier columns, per-token int8 quantization.
  std::vector<float> a16(size_t(n_tokens * cols));
  pool.parallel_for(n_tokens, [&](int64_t begin, int64_t end) {
    round_f16_all(x + begin * cols, (end - begin) * cols, a16.data() + begin * cols, avx512);
  }, cols);
  std::vector<int64_t> outlier_cols;  // ascending
  std::vector<uint8_t> is_outlier(static_cast<size_t>(cols), 0);
  if (threshold > 0.0f) {
    for (int64_t t = 0; t < n_tokens; ++t)
      for (int64_t c = 0; c < cols; ++c)
        if (std::fabs(a16[size_t(t * cols + c)]) >= threshold) is_outlier[size_t(c)] = 1;
    for (int64_t c = 0; c < cols; ++c)
      if (is_outlier[size_t(c)]) outlier_cols.push_back(c);
  }
  std::vector<int8_t> ca(size_t(n_tokens * cols));
  std::vector<float> row_stat(static_cast<size_t>(n_tokens));
  pool.parallel_for(n_tokens, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const float* a = a16.data() + t * cols;
      int8_t* out = ca.data() + t * cols;
      float absmax = 0.0f;
      if (avx512) {
        absmax = avx512::absmax_below(a, cols, threshold);
      } else {
        for (int64_t c = 0; c < cols; ++c) {
          const float v = std::fabs(a[c]);
          if (!(threshold > 0.0f && v >= threshold)) absmax = std::max(absmax, v);
        }
      }
      row_stat[size_t(t)] = absmax;
      const float factor = int8_factor(absmax);
      if (avx512) {
        avx512::scale_round_int8(a, cols, factor, is_outlier.data(), out);
      } else {
        for (int64_t c = 0; c < cols; ++c) out[c] = is_outlier[size_t(c)] ? int8_t(0) : round_to_int8(a[c] * factor);
      }
    }
  }, 4 * cols);
  // acc = sum_c CA * CB (int32, exact: kernels.h), then the epilogue, a row range at a time.
  const Int8Activations activations(ca.data(), n_tokens, cols, level);
  std::vector<int32_t> acc_all(size_t(n_tokens * rows));
  const size_t n_outliers = outlier_cols.size();
  pool.parallel_for(rows, [&](int64_t begin, int64_t end) {
    int8_dot_rows(activations, reinterpret_cast<const int8_t*>(q.codes.data()), begin, end, acc_all.data(), rows);
    const size_t count = size_t(end - begin);
    // fp16(dequantized W[r, c]) of the outlier columns, once per row rather than per token.
    std::vector<float> outlier_w(count * n_outliers);
    for (int64_t r = begin; r < end; ++r)
      for (size_t k = 0; k < n_outliers; ++k)
        outlier_w[size_t(r - begin) * n_outliers + k] =
            round_f16(dequantized_weight(cb_row(q, r)[outlier_cols[k]], q.scales[size_t(r)]));
    // The bias in fp16, added before the output's fp16 rounding (bitsandbytes' epilogue).
    std::vector<float> bias16(bias != nullptr ? count : 0);
    for (size_t i = 0; i < bias16.size(); ++i) bias16[i] = round_f16(bias[begin + int64_t(i)]);
    std::vector<float> scaled(count);
    for (int64_t t = 0; t < n_tokens; ++t) {
      float* out = y + t * rows + begin;
      for (int64_t r = begin; r < end; ++r)
        scaled[size_t(r - begin)] = float(acc_all[size_t(t * rows + r)]) * (row_stat[size_t(t)] * q.scales[size_t(r)]) *
                                    kInvSquare127;
      if (bias != nullptr)
        for (size_t i = 0; i < count; ++i) scaled[i] += bias16[i];
      round_f16_all(scaled.data(), int64_t(count), out, avx512);
      if (n_outliers == 0) continue;
      const float* a = a16.data() + t * cols;
      for (size_t i = 0; i < count; ++i) {
        float outlier_sum = 0.0f;
        for (size_t k = 0; k < n_outliers; ++k) outlier_sum += a[outlier_cols[k]] * outlier_w[i * n_outliers + k];
        out[i] = round_f16(out[i] + outlier_sum);
      }
    }
  }, cols * n_tokens);
}

// KL(bf16 || format) bounds on the fixture models: 1.5x the measured values (docs/quality.md).
constexpr KlBound kInt8Kl[] = {
    {"falcon-40b-style", 0.0021},
    {"falcon-7b-style", 0.0021},
    {"falcon-mha-bias", 0.0041},
    {"llama-gqa-tied", 0.0079},
    {"falcon-untidy", 0.005},
    {"llama-untidy", 0.012},
    {"llama-linear-rope-bf16", 0.0077},
    {"llama3-rope", 0.008},
    {"stories260K", 0.0021},
};

}  // namespace

const FormatDefinition int8_format{
    {Format::INT8, "int8", "LLM.int8(): int8 rows (absmax per output row) + fp16 outlier columns at run time",
     Activations::llm_int8, true, int8_row_planes, kInt8Kl},
    int8_quantize, int8_dequantize_row, int8_matmul};

}  // namespace lowbit::formats
