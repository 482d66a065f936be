// bitsandbytes blockwise 4-bit weights: NF4, FP4, and their double-quantized variants (-dq),
// bit-exact with bitsandbytes 0.50.2 on the CPU (tools/make_format_fixtures.py, tests/test_formats).
//
// Values: the [rows, cols] weight is flattened row-major; blocks of opts.block_size (64 by default)
// consecutive values; a block may straddle two rows and the last block may be partial.
//   absmax[b]  = max |w| over block b (fp32)
//   full block:    s = clamp(w * (1 / max(absmax, 1e-38)), -1, 1)   (reciprocal once, fp32)
//   partial last:  s = clamp(w / max(absmax, 1e-38), -1, 1), and bnb STORES max(absmax, 1e-38)
//   code = the code whose sorted position is the number of fp32 midpoints (a+b)/2 of the sorted
//          code table strictly below s (torch.bucketize): a tie goes to the lower value. An
//          all-zero block encodes as the code of 0.0 (NF4 7, FP4 0), as bnb's CPU path does
//          (its CUDA kernel gives NaN -> code 0 there; we follow the CPU reference).
//   dequantized value = table[code] * absmax[block] (one fp32 multiply).
// NF4 table (code 0..15, sorted): -1, -0.6961928, ..., 0 (code 7), ..., 0.7229568, 1.
// FP4 table (bnb's own, not E2M1): bit 3 = sign, low bits 000 0, 001 0.0625/12, 010 8/12,
//   011 1, 100 4/12, 101 6/12, 110 2/12, 111 3/12. Sorted order of codes (ties +0 before -0, as
//   torch.argsort gives): 11 10 13 12 15 14 9 0 8 1 6 7 4 5 2 3 -- so a tiny negative value
//   encodes as +0 (code 0) and a tiny positive one as -0 (code 8), exactly as bnb's CPU path.
//
// Planes (CUDA GEMV layout: one contiguous byte stream, uploaded as is):
//   codes  [ceil(rows*cols / 2)] bytes: element 2j in the HIGH nibble, 2j+1 in the low nibble
//          (element 2j = flat index 2j, so a row starts mid-byte when rows*cols offsets are odd);
//          an odd total count leaves the last low nibble = the code of 0.0 (bnb pads with 0).
//   scales [n_blocks] fp32 absmax (plain NF4/FP4 only).
// Double quantization (-dq), stored instead of `scales`:
//   offset       = mean(absmax), fp32, summed exactly as torch's CPU sum kernel does (below)
//   scale_codes  [n_blocks] uint8: absmax - offset quantized blockwise in blocks of 256 with
//                bnb's signed dynamic map (create_dynamic_map(signed=True), kDynamicMap):
//                absmax2 = max |.| per 256-block; s = clamp(v * (1/absmax2), -1, 1);
//                code = lut[uint16(((s + 1) * 0.5) * 65535 + 0.5)] where the 65536-entry lut
//                maps each grid point to its nearest code (libbitsandbytes_cpu's
//                quantize_blockwise; this is NOT always the exact nearest code).
//   scales2      [ceil(n_blocks / 256)] fp32 absmax2
//   absmax[b]    = kDynamicMap[scale_codes[b]] * scales2[b / 256] + offset (two fp32 roundings)
#include <algorithm>
#include <array>
#include <cmath>
#include <numeric>
#include <vector>

#include "core/cpu_features.h"
#include "formats/format_impl.h"
#include "formats/four_bit.h"
#include "formats/kernels.h"

namespace lowbit::formats {

namespace {

constexpr float kTinyAbsmax = 1e-38f;  // bnb's absmax.clamp(min=1e-38) (a subnormal float)
// The 4-bit encoder as bnb's CPU path runs it: bucketize against the midpoints of the sorted table.
struct FourBitEncoder {
  std::array<float, 15> midpoints;   // ascending, fp32 (a + b) / 2
  std::array<uint8_t, 16> code_at;   // code of the i-th smallest table value

  explicit FourBitEncoder(const std::array<float, 16>& table) {
    std::array<uint8_t, 16> order;
    std::iota(order.begin(), order.end(), uint8_t(0));
    std::stable_sort(order.begin(), order.end(), [&](uint8_t a, uint8_t b) { return table[a] < table[b]; });
    code_at = order;
    for (int i = 0; i < 15; ++i) midpoints[i] = (table[order[i]] + table[order[i + 1]]) / 2.0f;
  }
  uint8_t encode(float scaled) const {
    // number of midpoints strictly below `scaled` == torch.bucketize(right=False)
    int position = int(std::lower_bound(midpoints.begin(), midpoints.end(), scaled) - midpoints.begin());
    return code_at[position];
  }
};

const FourBitEncoder& encoder_for(Format f) {
  static const FourBitEncoder nf4(kNf4Table), fp4(kFp4Table);
  return (f == Format::NF4 || f == Format::NF4_DQ) ? nf4 : fp4;
}

// libbitsandbytes_cpu's quantize_blockwise lookup: 65536 grid points on [-1, 1], each mapped to
// the first code whose upper midpoint is not below it.
struct DynamicMapLut {
  std::vector<uint8_t> code_at_grid = std::vector<uint8_t>(65536);
  DynamicMapLut() {
    std::array<float, 255> midpoints;
    for (int i = 0; i < 255; ++i) midpoints[i] = 0.5f * (kDynamicMap[i] + kDynamicMap[i + 1]);
    int code = 0;
    for (int i = 0; i < 65536; ++i) {
      float grid = -1.0f + (2.0f * float(i)) / 65535.0f;
      while (code < 255 && midpoints[code] < grid) ++code;
      code_at_grid[i] = uint8_t(code);
    }
  }
  uint8_t encode(float scaled) const {
    float v = std::clamp(scaled, -1.0f, 1.0f);
    float t = (v + 1.0f) * 0.5f;
    t = t * 65535.0f;
    t = t + 0.5f;
    return code_at_grid[uint16_t(t)];
  }
};

// torch's CPU float sum of a contiguous vector (aten SumKernel: lanes of 8 floats, 4-way ILP,
// 4-level cascade), so mean(absmax) matches bnb to the bit. This mirrors single-threaded torch;
// torch splits reductions of more than 32768 values across threads (a thread-count-dependent order).
// Sums `size` elements of `lanes` consecutive floats lane-wise; returns the lane sums.
std::vector<float> torch_row_sum(const float* data, int lanes, int64_t size) {
  constexpr int kLevels = 4, kIlp = 4;
  auto ceil_log2 = [](int64_t x) -> int64_t {
    if (x <= 2) return 1;
    int64_t bits = 0;
    for (uint64_t v = uint64_t(x - 1); v; v >>= 1) ++bits;
    return bits;
  };
  const int64_t size_ilp = size / kIlp;
  const int64_t level_power = std::max<int64_t>(4, ceil_log2(size_ilp) / kLevels);
  const int64_t level_step = int64_t(1) << level_power, level_mask = level_step - 1;
  std::vector<float> acc(size_t(kLevels * kIlp * lanes), 0.0f);  // [level][ilp row][lane]
  auto at = [&](int level, int row, int lane) -> float& { return acc[size_t((level * kIlp + row) * lanes + lane)]; };
  auto add_group = [&](int64_t group) {
    for (int k = 0; k < kIlp; ++k)
      for (int l = 0; l < lanes; ++l) at(0, k, l) += data[(group * kIlp + k) * lanes + l];
  };
  int64_t i = 0;
  while (i + level_step <= size_ilp) {
    for (int64_t j = 0; j < level_step; ++j, ++i) add_group(i);
    for (int j = 1; j < kLevels; ++j) {
      for (int k = 0; k < kIlp; ++k)
        for (int l = 0; l < lanes; ++l) {
          at(j, k, l) += at(j - 1, k, l);
          at(j - 1, k, l) = 0.0f;
        }
      if ((i & (level_mask << (j * level_power))) != 0) break;
    }
  }
  for (; i < size_ilp; ++i) add_group(i);
  for (int j = 1; j < kLevels; ++j)
    for (int k = 0; k < kIlp; ++k)
      for (int l = 0; l < lanes; ++l) at(0, k, l) += at(j, k, l);
  std::vector<float> sum(static_cast<size_t>(lanes));
  for (int l = 0; l < lanes; ++l) sum[size_t(l)] = at(0, 0, l);
  for (int64_t e = size_ilp * kIlp; e < size; ++e)
    for (int l = 0; l < lanes; ++l) sum[size_t(l)] += data[e * lanes + l];
  for (int k = 1; k < kIlp; ++k)
    for (int l = 0; l < lanes; ++l) sum[size_t(l)] += at(0, k, l);
  return sum;
}

float torch_mean(const std::vector<float>& v) {
  const int64_t n = int64_t(v.size());
  constexpr int kLanes = 8;
  float total;
  if (n >= kLanes) {
    const int64_t vectors = n / kLanes;
    std::vector<float> lanes = torch_row_sum(v.data(), kLanes, vectors);
    total = 0.0f;
    for (int64_t k = vectors * kLanes; k < n; ++k) total += v[size_t(k)];
    for (float lane : lanes) total += lane;
  } else {
    total = torch_row_sum(v.data(), 1, n)[0];
  }
  return total / float(n);
}

int64_t block_count(const QuantizedTensor& q) { return (q.numel() + q.opts.block_size - 1) / q.opts.block_size; }

void double_quantize_absmax(QuantizedTensor& q, const std::vector<float>& absmax, ThreadPool& pool) {
  static const DynamicMapLut lut;
  const int64_t n = int64_t(absmax.size());
  q.offset = torch_mean(absmax);
  q.scale_codes.assign(size_t(n), 0);
  q.scales2.assign(size_t((n + kDqBlock - 1) / kDqBlock), 0.0f);
  pool.parallel_for(int64_t(q.scales2.size()), [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      const int64_t lo = b * kDqBlock, hi = std::min(n, lo + kDqBlock);
      float centered[kDqBlock];
      float amax = 0.0f;
      for (int64_t i = lo; i < hi; ++i) {
        centered[i - lo] = absmax[size_t(i)] - q.offset;
        amax = std::max(amax, std::fabs(centered[i - lo]));
      }
      q.scales2[size_t(b)] = amax;
      if (amax == 0.0f) continue;  // codes stay 0, as bnb writes them
      const float inv = 1.0f / amax;
      for (int64_t i = lo; i < hi; ++i) q.scale_codes[size_t(i)] = lut.encode(centered[i - lo] * inv);
    }
  });
}

void four_bit_quantize(QuantizedTensor& q, const float* w, ThreadPool& pool) {
  const FourBitEncoder& encoder = encoder_for(q.format);
  const int64_t n = q.numel(), bs = q.opts.block_size, blocks = block_count(q);
  std::vector<float> absmax(static_cast<size_t>(blocks));
  allocate_planes(q);
  pool.parallel_for(blocks, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      const int64_t lo = b * bs, hi = std::min(n, lo + bs);
      float amax = 0.0f;
      for (int64_t i = lo; i < hi; ++i) amax = std::max(amax, std::fabs(w[i]));
      const bool partial = hi - lo < bs;
      const float clamped = std::max(amax, kTinyAbsmax);
      const float inv = 1.0f / clamped;
      absmax[size_t(b)] = partial ? clamped : amax;
      // Blocks have an even size and start at even indices, so they own whole bytes.
      for (int64_t i = lo; i < hi; ++i) {
        const float scaled = std::clamp(partial ? w[i] / clamped : w[i] * inv, -1.0f, 1.0f);
        const uint8_t code = encoder.encode(scaled);
        q.codes[size_t(i / 2)] |= uint8_t(i % 2 == 0 ? code << 4 : code);
      }
    }
  });
  if (n % 2 == 1) q.codes.back() |= encoder.encode(0.0f);  // bnb pads the odd tail with 0.0
  if (is_double_quantized(q.format))
    double_quantize_absmax(q, absmax, pool);
  else
    q.scales = std::move(absmax);
}

// Decodes flat elements [begin, begin + count) into out. A block boundary may fall anywhere.
void decode_range(const QuantizedTensor& q, int64_t begin, int64_t count, float* out) {
  const std::array<float, 16>& table = code_table(q.format);
  const uint8_t* codes = q.codes.data();
  const int64_t bs = q.opts.block_size, stop = begin + count;
  int64_t i = begin;
  while (i < stop) {
    const int64_t block = i / bs;
    const int64_t segment_end = std::min(stop, (block + 1) * bs);
    const float scale = block_absmax(q, block);
    if (i % 2 == 1) {  // starts on a low nibble
      *out++ = table[codes[i / 2] & 15] * scale;
      ++i;
    }
    for (; i + 1 < segment_end; i += 2) {  // whole bytes: high nibble first
      const uint8_t byte = codes[i / 2];
      out[0] = table[byte >> 4] * scale;
      out[1] = table[byte & 15] * scale;
      out += 2;
    }
    if (i < segment_end) {  // ends on a high nibble
      *out++ = table[codes[i / 2] >> 4] * scale;
      ++i;
    }
  }
}

void four_bit_dequantize_row(const QuantizedTensor& q, int64_t row, float* out) {
  decode_range(q, row * q.cols, q.cols, out);
}

// The two values of every code byte (high nibble first), so a whole byte decodes with one lookup.
struct NibblePair {
  float first, second;
};
using PairTable = std::array<NibblePair, 256>;

PairTable make_pair_table(const std::array<float, 16>& table) {
  PairTable out{};
  for (int b = 0; b < 256; ++b) out[size_t(b)] = {table[size_t(b >> 4)], table[size_t(b & 15)]};
  return out;
}

#if LOWBIT_HAVE_AVX2_DECODE
// The 16-entry code table as two 8-lane halves; lookup() gives table[idx] per lane with two
// permutes and a blend.
struct TableAvx2 {
  __m256 low_half, high_half;
  __attribute__((target("avx2"))) explicit TableAvx2(const std::array<float, 16>& table)
      : low_half(_mm256_loadu_ps(table.data())), high_half(_mm256_loadu_ps(table.data() + 8)) {}
  __attribute__((target("avx2"))) __m256 lookup(__m256i idx) const {
    const __m256 upper = _mm256_castsi256_ps(_mm256_slli_epi32(idx, 28));  // sign bit = idx >= 8
    return _mm256_blendv_ps(_mm256_permutevar8x32_ps(low_half, idx), _mm256_permutevar8x32_ps(high_half, idx),
                            upper);
  }
};

// n_bytes code bytes -> 2 * n_bytes values table[code] * scale, high nibble first: the scalar
// loop's products, 8 at a time.
__attribute__((target("avx2"))) void decode_bytes_avx2(const uint8_t* codes, int64_t n_bytes,
                                                       const std::array<float, 16>& table, float scale, float* out) {
  const TableAvx2 lut(table);
  const __m256 s = _mm256_set1_ps(scale);
  int64_t j = 0;
  for (; j + 4 <= n_bytes; j += 4)
    _mm256_storeu_ps(out + 2 * j, _mm256_mul_ps(lut.lookup(nibbles_of_4_bytes(codes + j, true)), s));
  for (; j < n_bytes; ++j) {
    out[2 * j] = table[codes[j] >> 4] * scale;
    out[2 * j + 1] = table[codes[j] & 15] * scale;
  }
}

// dot(x, row) for one token without materializing the row, when cols and the block size are
// multiples of 16: lane k of the two accumulators (lanes 0-7, 8-15) sums elements k, k + 16, ...
// of the row in order with separate multiplies and adds, exactly dot_f32's part[k], and the lanes
// are summed as dot_f32 sums them, so the result is the decode-then-dot_f32 result bit for bit.
__attribute__((target("avx2"))) float fused_dot_avx2(const QuantizedTensor& q, int64_t row, const float* x) {
  const TableAvx2 lut(code_table(q.format));
  __m256 lo = _mm256_setzero_ps(), hi = _mm256_setzero_ps();
  const int64_t bs = q.opts.block_size, begin = row * q.cols, stop = begin + q.cols;
  for (int64_t i = begin; i < stop;) {
    const int64_t block = i / bs, segment_end = std::min(stop, (block + 1) * bs);
    const __m256 s = _mm256_set1_ps(block_absmax(q, block));
    const uint8_t* codes = q.codes.data() + i / 2;
    const float* xs = x + (i - begin);
    for (int64_t j = 0; j < (segment_end - i) / 2; j += 8) {
      const __m256 w0 = _mm256_mul_ps(lut.lookup(nibbles_of_4_bytes(codes + j, true)), s);
      const __m256 w1 = _mm256_mul_ps(lut.lookup(nibbles_of_4_bytes(codes + j + 4, true)), s);
      lo = _mm256_add_ps(lo, _mm256_mul_ps(_mm256_loadu_ps(xs + 2 * j), w0));
      hi = _mm256_add_ps(hi, _mm256_mul_ps(_mm256_loadu_ps(xs + 2 * j + 8), w1));
    }
    i = segment_end;
  }
  float part[kDotLanes];
  _mm256_storeu_ps(part, lo);
  _mm256_storeu_ps(part + 8, hi);
  return sum_lanes16(part, 0.0f);
}
#endif

// decode_range for a row that starts on a byte boundary and whose blocks hold an even number of
// values (the usual case: even cols and block size): one pair lookup per byte, the same products.
inline void decode_row_by_bytes(const QuantizedTensor& q, const PairTable& pairs, int64_t row, float* out,
                                bool avx2) {
  const int64_t bs = q.opts.block_size, begin = row * q.cols, stop = begin + q.cols;
  for (int64_t i = begin; i < stop;) {
    const int64_t block = i / bs, segment_end = std::min(stop, (block + 1) * bs);
    const float scale = block_absmax(q, block);
    const uint8_t* codes = q.codes.data() + i / 2;
    const int64_t n_bytes = (segment_end - i) / 2;
#if LOWBIT_HAVE_AVX2_DECODE
    if (avx2) {
      decode_bytes_avx2(codes, n_bytes, code_table(q.format), scale, out);
      out += 2 * n_bytes;
      i = segment_end;
      continue;
    }
#endif
    for (int64_t j = 0; j < n_bytes; ++j) {
      const NibblePair p = pairs[codes[j]];
      out[2 * j] = p.first * scale;
      out[2 * j + 1] = p.second * scale;
    }
    out += 2 * n_bytes;
    i = segment_end;
  }
}

LOWBIT_VECTOR_CLONES void four_bit_rows(const QuantizedTensor& q, const float* x, int64_t n_tokens, float* y,
                                        int64_t begin, int64_t end, float* w) {
  static const PairTable nf4_pairs = make_pair_table(kNf4Table), fp4_pairs = make_pair_table(kFp4Table);
  if (q.cols % 2 == 0 && q.opts.block_size % 2 == 0) {
    const bool use_avx2 = avx2_decode();
#if LOWBIT_HAVE_AVX2_DECODE
    if (use_avx2 && n_tokens == 1 && q.cols % 16 == 0 && q.opts.block_size % 16 == 0) {
      for (int64_t r = begin; r < end; ++r) y[r] = fused_dot_avx2(q, r, x);
      return;
    }
#endif
    const PairTable& pairs = &code_table(q.format) == &kNf4Table ? nf4_pairs : fp4_pairs;
    decoded_rows(q, x, n_tokens, y, begin, end, w,
                 [&](int64_t r, float* out) { decode_row_by_bytes(q, pairs, r, out, use_avx2); });
  } else {
    decoded_rows(q, x, n_tokens, y, begin, end, w,
                 [&](int64_t r, float* out) { decode_range(q, r * q.cols, q.cols, out); });
  }
}

void four_bit_matmul(const QuantizedTensor& q, const float* x, int64_t n_tokens, const float* bias, float* y,
                     ThreadPool& pool) {
  if (cpu_level() >= CpuLevel::avx512 && avx512::matmul_four_bit(q, x, n_tokens, y, pool)) {
    add_bias_after(q, bias, n_tokens, y);
    return;
  }
  matmul_by_decoded_rows(q, x, n_tokens, y, pool, four_bit_rows);
  add_bias_after(q, bias, n_tokens, y);
}

// Codes: one nibble per value; nf4 / fp4: an fp32 absmax per block; -dq: an 8-bit code per block,
// an fp32 scale per 256 blocks and the offset.
PlaneSizes four_bit_planes(int64_t rows, int64_t cols, const QuantOptions& opts, bool double_quant) {
  PlaneSizes s;
  const size_t n = size_t(rows) * size_t(cols), blocks = (n + size_t(opts.block_size) - 1) / size_t(opts.block_size);
  s[Plane::codes] = (n + 1) / 2;
  if (!double_quant) {
    s[Plane::scales] = blocks;
    return s;
  }
  s[Plane::scale_codes] = blocks;
  s[Plane::scales2] = (blocks + kDqBlock - 1) / kDqBlock;
  s.scalar_bytes = sizeof(float);
  return s;
}
PlaneSizes plain_planes(int64_t rows, int64_t cols, const QuantOptions& opts) {
  return four_bit_planes(rows, cols, opts, false);
}
PlaneSizes dq_planes(int64_t rows, int64_t cols, const QuantOptions& opts) {
  return four_bit_planes(rows, cols, opts, true);
}

// KL(bf16 || format) bounds on the fixture models: 1.5x the measured values (docs/quality.md).
constexpr KlBound kNf4Kl[] = {
    {"falcon-40b-style", 0.19},
    {"falcon-7b-style", 0.19},
    {"falcon-mha-bias", 0.38},
    {"llama-gqa-tied", 0.86},
    {"falcon-untidy", 0.39},
    {"llama-untidy", 1.24},
    {"llama-linear-rope-bf16", 0.74},
    {"llama3-rope", 0.72},
    {"stories260K", 0.24},
};
constexpr KlBound kFp4Kl[] = {
    {"falcon-40b-style", 0.33},
    {"falcon-7b-style", 0.32},
    {"falcon-mha-bias", 0.74},
    {"llama-gqa-tied", 1.4},
    {"falcon-untidy", 0.86},
    {"llama-untidy", 1.5},
    {"llama-linear-rope-bf16", 1.3},
    {"llama3-rope", 1.3},
    {"stories260K", 0.51},
};
constexpr KlBound kNf4DqKl[] = {
    {"falcon-40b-style", 0.19},
    {"falcon-7b-style", 0.19},
    {"falcon-mha-bias", 0.38},
    {"llama-gqa-tied", 0.86},
    {"falcon-untidy", 0.39},
    {"llama-untidy", 1.25},
    {"llama-linear-rope-bf16", 0.74},
    {"llama3-rope", 0.72},
    {"stories260K", 0.23},
};
constexpr KlBound kFp4DqKl[] = {
    {"falcon-40b-style", 0.33},
    {"falcon-7b-style", 0.32},
    {"falcon-mha-bias", 0.73},
    {"llama-gqa-tied", 1.4},
    {"falcon-untidy", 0.86},
    {"llama-untidy", 1.5},
    {"llama-linear-rope-bf16", 1.3},
    {"llama3-rope", 1.3},
    {"stories260K", 0.51},
};

}  // namespace

// Blocks run across rows (and -dq's offset and groups of 256 absmax values span the tensor): no
// row stacking.
const FormatDefinition nf4_format{
    {Format::NF4, "nf4", "bitsandbytes NF4: blocks of block_size, fp32 absmax per block", Activations::fp32, false,
     plain_planes, kNf4Kl},
    four_bit_quantize, four_bit_dequantize_row, four_bit_matmul};
const FormatDefinition fp4_format{
    {Format::FP4, "fp4", "bitsandbytes FP4 (its own code table, not E2M1), fp32 absmax per block", Activations::fp32,
     false, plain_planes, kFp4Kl},
    four_bit_quantize, four_bit_dequantize_row, four_bit_matmul};
const FormatDefinition nf4_dq_format{
    {Format::NF4_DQ, "nf4-dq", "NF4 with double-quantized absmax (8-bit dynamic code, blocks of 256, mean offset)",
     Activations::fp32, false, dq_planes, kNf4DqKl},
    four_bit_quantize, four_bit_dequantize_row, four_bit_matmul};
const FormatDefinition fp4_dq_format{
    {Format::FP4_DQ, "fp4-dq", "FP4 with double-quantized absmax", Activations::fp32, false, dq_planes, kFp4DqKl},
    four_bit_quantize, four_bit_dequantize_row, four_bit_matmul};

void double_quantize_four_bit(QuantizedTensor& q) {
  ThreadPool pool;
  const std::vector<float> absmax = std::move(q.scales);
  q.scales.clear();
  q.format = q.format == Format::NF4 ? Format::NF4_DQ : Format::FP4_DQ;
  double_quantize_absmax(q, absmax, pool);
}

}  // namespace lowbit::formats
