// The quantized CUDA kernels' per-element math (kernels/quant_math.h, compiled here as plain C++)
// against the CPU format reference (src/formats), on this machine, no GPU: nibble order and
// byte offsets of both 4-bit layouts, the 32-bit word decoding of the kernels' fast paths, block /
// group / double-quant indexing, and the int8 rounding and rescaling points. Each loop below walks
// the weight the way the kernel does (fast path: aligned 32-bit words; scalar path: flat index)
// and must reproduce lowbit::dequantize / lowbit::matmul bit for bit.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "core/fp8.h"
#include "core/half.h"
#include "core/parallel.h"
#include "formats/code_tables.h"
#include "formats/format.h"
#include "kernels/quant_math.h"
#include "test_fixtures.h"

using namespace lowbit;
using namespace lowbit::kernels;
using lowbit::test::random_values;

namespace {

constexpr float kNf4[16] = LOWBIT_NF4_CODES;
constexpr float kFp4[16] = LOWBIT_FP4_CODES;
constexpr float kDynamicMap[256] = LOWBIT_DYNAMIC_MAP_SIGNED;

uint32_t load_le32(const uint8_t* p) {  // what a 32-bit load gives on the (little-endian) GPU
  return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24;
}

bool same_bits(float a, float b) { return std::memcmp(&a, &b, sizeof(float)) == 0; }

std::vector<float> cpu_dequantized(const QuantizedTensor& q) {
  std::vector<float> out(size_t(q.numel()));
  dequantize(q, out.data());
  return out;
}

bool is_nf4(Format f) { return f == Format::NF4 || f == Format::NF4_DQ; }
bool is_dq(Format f) { return f == Format::NF4_DQ || f == Format::FP4_DQ; }

// gemv_nf4_fp4.cu's block_absmax.
float four_bit_absmax(const QuantizedTensor& q, int64_t block) {
  if (!is_dq(q.format)) return q.scales[size_t(block)];
  return dq_absmax(kDynamicMap[q.scale_codes[size_t(block)]], q.scales2[size_t(block / kDqBlock)], q.offset);
}

// The scalar path / dequantizer: value of every flat index.
std::vector<float> four_bit_scalar_walk(const QuantizedTensor& q) {
  const float* table = is_nf4(q.format) ? kNf4 : kFp4;
  std::vector<float> out(size_t(q.numel()));
  for (int64_t flat = 0; flat < q.numel(); ++flat)
    out[size_t(flat)] = table[four_bit_code(q.codes.data(), flat)] * four_bit_absmax(q, flat / q.opts.block_size);
  return out;
}

// The fast path (cols % 8 == 0, block_size % 8 == 0): per row, one 32-bit word = 8 codes per step.
std::vector<float> four_bit_word_walk(const QuantizedTensor& q) {
  const float* table = is_nf4(q.format) ? kNf4 : kFp4;
  std::vector<float> out(size_t(q.numel()));
  for (int64_t row = 0; row < q.rows; ++row) {
    const int64_t base = row * q.cols;
    const uint8_t* packed = q.codes.data() + base / 2;
    for (int64_t col = 0; col < q.cols; col += 8) {
      const uint32_t word = load_le32(packed + col / 2);
      const float scale = four_bit_absmax(q, (base + col) / q.opts.block_size);
      for (int i = 0; i < 8; ++i) out[size_t(base + col + i)] = table[four_bit_word_code(word, i)] * scale;
    }
  }
  return out;
}

void check_bits(const std::vector<float>& got, const std::vector<float>& want) {
  REQUIRE(got.size() == want.size());
  size_t mismatches = 0, first = 0;
  for (size_t i = 0; i < got.size(); ++i)
    if (!same_bits(got[i], want[i]) && mismatches++ == 0) first = i;
  INFO("first mismatch at " << first << ": " << got[first] << " vs " << want[first]);
  CHECK(mismatches == 0);
}

}  // namespace

TEST_CASE("4-bit code index: every byte value, high nibble first, in bytes and in 32-bit words", "[kernel_math]") {
  for (Format f : {Format::NF4, Format::FP4}) {
    QuantizedTensor q;
    q.format = f;
    q.rows = 2;
    q.cols = 256;  // 512 values: 256 bytes holding every byte value once
    q.opts.block_size = 64;
    q.codes.resize(256);
    for (int b = 0; b < 256; ++b) q.codes[size_t(b)] = uint8_t(b);
    for (int block = 0; block < 8; ++block) q.scales.push_back(0.25f + 0.5f * float(block));
    const std::vector<float> want = cpu_dequantized(q);
    INFO(format_name(f));
    check_bits(four_bit_scalar_walk(q), want);
    check_bits(four_bit_word_walk(q), want);
    // Spelled out for one byte: 0x1e holds code 1 (element 0) then code 14 (element 1).
    CHECK(four_bit_code(q.codes.data(), 2 * 0x1e) == 1);
    CHECK(four_bit_code(q.codes.data(), 2 * 0x1e + 1) == 14);
    CHECK(four_bit_word_code(0x78563412u, 0) == 1);  // byte 0x12: element 0 high nibble
    CHECK(four_bit_word_code(0x78563412u, 1) == 2);
    CHECK(four_bit_word_code(0x78563412u, 6) == 7);
    CHECK(four_bit_word_code(0x78563412u, 7) == 8);
  }
}

TEST_CASE("4-bit kernels' decoding equals dequantize() for quantized weights, -dq and odd shapes", "[kernel_math]") {
  struct Case {
    int64_t rows, cols;
    int block;
  };
  // (37, 200, 64): fast path; (29, 333, 64): odd cols, rows start mid-byte; (29, 333, 100): blocks
  // straddle rows; (3, 1000, 8): > 256 blocks, so -dq uses several second-level scales.
  const Case cases[] = {{37, 200, 64}, {29, 333, 64}, {29, 333, 100}, {3, 1000, 8}, {300, 64, 64}};
  for (Format f : {Format::NF4, Format::FP4, Format::NF4_DQ, Format::FP4_DQ})
    for (const Case& c : cases) {
      QuantOptions opts;
      opts.block_size = c.block;
      const auto w = random_values(size_t(c.rows * c.cols), uint32_t(c.cols + c.block), 0.05f);
      const QuantizedTensor q = quantize(f, w.data(), c.rows, c.cols, opts);
      INFO(format_name(f) << " " << c.rows << "x" << c.cols << " block " << c.block);
      const std::vector<float> want = cpu_dequantized(q);
      check_bits(four_bit_scalar_walk(q), want);
      if (c.cols % 8 == 0 && c.block % 8 == 0) check_bits(four_bit_word_walk(q), want);
      if (is_dq(f)) CHECK(q.scales2.size() == size_t((q.scale_codes.size() + kDqBlock - 1) / kDqBlock));
    }
}

namespace {

// gemv_w4a16.cu's group_scale + value, scalar path.
std::vector<float> w4a16_scalar_walk(const QuantizedTensor& q) {
  std::vector<float> out(size_t(q.numel()));
  const int rows = int(q.rows), cols = int(q.cols), group = q.opts.w4_group;
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < cols; ++c) {
      const size_t g = w4a16_group_index(r, c, cols, group);
      const int zero = q.zeros.empty() ? 8 : q.zeros[g];
      out[size_t(r) * cols + c] = w4a16_value(w4a16_code(q.codes.data(), r, c, cols), zero, f16_to_f32(q.scales16[g]));
    }
  return out;
}

// Fast path (cols % 8 == 0, group % 8 == 0): one 32-bit word = 8 columns of one group.
std::vector<float> w4a16_word_walk(const QuantizedTensor& q) {
  std::vector<float> out(size_t(q.numel()));
  const int rows = int(q.rows), cols = int(q.cols), group = q.opts.w4_group;
  for (int r = 0; r < rows; ++r) {
    const uint8_t* packed = q.codes.data() + size_t(r) * size_t(cols / 2);
    for (int col = 0; col < cols; col += 8) {
      const uint32_t word = load_le32(packed + col / 2);
      const size_t g = w4a16_group_index(r, col, cols, group);
      const int zero = q.zeros.empty() ? 8 : q.zeros[g];
      for (int i = 0; i < 8; ++i)
        out[size_t(r) * cols + col + i] = w4a16_value(w4a16_word_code(word, i), zero, f16_to_f32(q.scales16[g]));
    }
  }
  return out;
}

}  // namespace

TEST_CASE("W4A16 code index: every byte value, low nibble first; groups, zero points, fp16 scales", "[kernel_math]") {
  QuantizedTensor q;
  q.format = Format::W4A16;
  q.rows = 2;
  q.cols = 256;
  q.opts.w4_group = 128;
  q.codes.resize(256);
  for (int b = 0; b < 256; ++b) q.codes[size_t(b)] = uint8_t(b);
  q.scales16 = {f32_to_f16(0.5f), f32_to_f16(1.5f), f32_to_f16(0.01f), f32_to_f16(3.0f)};
  q.zeros = {8, 3, 15, 0};
  const std::vector<float> want = cpu_dequantized(q);
  check_bits(w4a16_scalar_walk(q), want);
  check_bits(w4a16_word_walk(q), want);
  CHECK(w4a16_code(q.codes.data(), 0, 2 * 0x1e, 256) == 14);  // byte 0x1e: column 0 low nibble
  CHECK(w4a16_code(q.codes.data(), 0, 2 * 0x1e + 1, 256) == 1);
  CHECK(w4a16_word_code(0x78563412u, 0) == 2);
  CHECK(w4a16_word_code(0x78563412u, 7) == 7);
  CHECK(w4a16_group_index(1, 200, 256, 128) == 3);
  CHECK(w4a16_group_index(1, 200, 333, 50) == 11);  // 7 groups per row
}

namespace {

struct W4a16Case {
  int rows, cols, group;
  bool symmetric;
};

// Random weights of the case's shape quantized to W4A16 with its group and zero points.
QuantizedTensor quantize_w4a16_case(const W4a16Case& c, uint32_t seed) {
  QuantOptions opts;
  opts.w4_group = c.group;
  opts.w4_symmetric = c.symmetric;
  const auto w = random_values(size_t(c.rows) * c.cols, seed, 0.05f);
  return quantize(Format::W4A16, w.data(), c.rows, c.cols, opts);
}

}  // namespace

TEST_CASE("W4A16 kernels' decoding equals dequantize() for quantized weights and odd shapes", "[kernel_math]") {
  const W4a16Case cases[] = {{37, 200, 128, false}, {37, 200, 128, true}, {29, 333, 128, false},
                             {29, 333, 50, false},  {72, 1000, 50, true}, {8, 1024, 64, false}};
  for (const W4a16Case& c : cases) {
    const QuantizedTensor q = quantize_w4a16_case(c, uint32_t(c.cols * 3 + c.group));
    INFO(c.rows << "x" << c.cols << " group " << c.group << (c.symmetric ? " symmetric" : ""));
    CHECK(q.zeros.empty() == c.symmetric);  // the kernels tell the variants apart by this plane
    const std::vector<float> want = cpu_dequantized(q);
    check_bits(w4a16_scalar_walk(q), want);
    if (c.cols % 8 == 0 && c.group % 8 == 0) check_bits(w4a16_word_walk(q), want);
  }
}

namespace {

// gemv_w4a16.cu on the device planes: every 32-bit word of a row interleaved (cols % 8 == 0),
// as upload_quantized_planes leaves them.
std::vector<uint8_t> w4a16_interleaved_codes(const QuantizedTensor& q) {
  std::vector<uint8_t> codes = q.codes;
  for (size_t i = 0; i + 4 <= codes.size(); i += 4) {
    const uint32_t word = w4a16_interleave(load_le32(codes.data() + i));
    std::memcpy(codes.data() + i, &word, 4);
  }
  return codes;
}

// The fast path on the interleaved planes: per word, the chunk's zero pair and scale, pair k
// (columns 2k, 2k+1) by lop3 + fp16x2 subtraction; value = (q - zero) * scale, the scale applied
// after the conversion as the kernel applies it to the chunk's sum.
std::vector<float> w4a16_magic_walk(const QuantizedTensor& q, const std::vector<uint8_t>& codes) {
  std::vector<float> out(size_t(q.numel()));
  const int rows = int(q.rows), cols = int(q.cols), group = q.opts.w4_group;
  for (int r = 0; r < rows; ++r)
    for (int col = 0; col < cols; col += 8) {
      const uint32_t word = load_le32(codes.data() + size_t(r) * size_t(cols / 2) + size_t(col / 2));
      const size_t g = w4a16_group_index(r, col, cols, group);
      const uint32_t zero_pair = w4a16_zero_pair(q.zeros.empty() ? 8 : q.zeros[g]);
      const float scale = f16_to_f32(q.scales16[g]);
      for (int k = 0; k < 4; ++k) {
        float lo, hi;
        w4a16_pair_values(w4a16_magic_pair(word, k), zero_pair, lo, hi);
        out[size_t(r) * cols + col + 2 * k] = lo * scale;
        out[size_t(r) * cols + col + 2 * k + 1] = hi * scale;
      }
    }
  return out;
}

// The slow path and the dequantizer on the interleaved planes.
std::vector<float> w4a16_interleaved_walk(const QuantizedTensor& q, const std::vector<uint8_t>& codes) {
  std::vector<float> out(size_t(q.numel()));
  const int rows = int(q.rows), cols = int(q.cols), group = q.opts.w4_group;
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < cols; ++c) {
      const size_t g = w4a16_group_index(r, c, cols, group);
      const int zero = q.zeros.empty() ? 8 : q.zeros[g];
      out[size_t(r) * cols + c] =
          w4a16_value(w4a16_interleaved_code(codes.data(), r, c, cols), zero, f16_to_f32(q.scales16[g]));
    }
  return out;
}

}  // namespace

TEST_CASE("W4A16 interleave: nibble order 0,2,4,6,1,3,5,7 and back", "[kernel_math][w4a16]") {
  CHECK(w4a16_interleave(0x76543210u) == 0x75316420u);
  CHECK(w4a16_deinterleave(0x75316420u) == 0x76543210u);
  for (int i = 0; i < 8; ++i)
    for (uint32_t v = 0; v < 16; ++v) {  // every value in every column alone
      const uint32_t word = v << (4 * i);
      CHECK(w4a16_interleave(word) == v << (4 * w4a16_interleaved_nibble(i)));
      CHECK(w4a16_deinterleave(w4a16_interleave(word)) == word);
    }
  std::mt19937 rng(7);
  for (int n = 0; n < 100000; ++n) {
    const uint32_t word = rng();
    REQUIRE(w4a16_deinterleave(w4a16_interleave(word)) == word);
    REQUIRE(w4a16_interleave(w4a16_deinterleave(word)) == word);
  }
  // Interleaved byte offsets: column c of a row at byte 4 * (c / 8) + nibble / 2 of the row.
  std::vector<uint8_t> codes(16);
  for (size_t b = 0; b < codes.size(); ++b) codes[b] = uint8_t(b * 17 + 3);
  const int cols = 16;  // two rows of one word each
  for (int r = 0; r < 2; ++r)
    for (int c = 0; c < cols; ++c) {
      const uint32_t word = load_le32(codes.data() + size_t(r) * 8 + size_t(c / 8) * 4);
      CHECK(w4a16_interleaved_code(codes.data(), r, c, cols) == w4a16_word_code(w4a16_deinterleave(word), c % 8));
    }
}

TEST_CASE("W4A16 lop3 + fp16 magic conversion: q - zero exactly for every (q, zero) in every column",
          "[kernel_math][w4a16]") {
  CHECK(lop3_and_or(0xffffffffu, 0x000f000fu, kW4a16Magic) == 0x640f640fu);
  CHECK(f16_bits_to_float(kW4a16Magic & 0xffffu) == 1024.0f);
  CHECK(f16_bits_to_float(w4a16_zero_pair(15) >> 16) == 1039.0f);
  size_t checked = 0;
  for (int zero = 0; zero < 16; ++zero)
    for (int q0 = 0; q0 < 16; ++q0) {
      // Column i holds (q0 + 5 i) % 16: over q0 every value passes through every column.
      uint32_t word = 0;
      for (int i = 0; i < 8; ++i) word |= uint32_t((q0 + 5 * i) % 16) << (4 * i);
      const uint32_t interleaved = w4a16_interleave(word);
      for (int k = 0; k < 4; ++k) {
        const uint32_t magic = w4a16_magic_pair(interleaved, k);
        CHECK(f16_bits_to_float(magic & 0xffffu) == 1024.0f + float(w4a16_word_code(word, 2 * k)));
        float v[2];
        w4a16_pair_values(magic, w4a16_zero_pair(zero), v[0], v[1]);
        for (int j = 0; j < 2; ++j) {
          const int q = w4a16_word_code(word, 2 * k + j);
          CHECK(same_bits(v[j], float(q - zero)));
          CHECK(same_bits(v[j] * 0.01f, w4a16_value(q, zero, 0.01f)));
          ++checked;
        }
      }
    }
  CHECK(checked == 16 * 16 * 8);
}

TEST_CASE("W4A16 software fp16 conversions equal core/half.h", "[kernel_math][w4a16]") {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float want = f16_to_f32(uint16_t(h));
    REQUIRE((same_bits(f16_bits_to_float(h), want) || (std::isnan(want) && std::isnan(f16_bits_to_float(h)))));
    if (std::isnan(want)) continue;
    REQUIRE(float_to_f16_bits(want) == h);
    // The midpoint to the next half up (ties to even) and its neighbours.
    const float next = f16_to_f32(uint16_t(h + 1));
    if ((h & 0x7fffu) < 0x7c00u && !std::isnan(next) && !std::isinf(next)) {
      const float mid = float((double(want) + double(next)) / 2);
      for (float f : {mid, std::nextafter(mid, 0.0f), std::nextafter(mid, 1e30f), -mid})
        REQUIRE(float_to_f16_bits(f) == f32_to_f16(f));
    }
  }
  std::mt19937 rng(11);
  for (int n = 0; n < 1000000; ++n) {
    const uint32_t bits = rng();
    float f;
    std::memcpy(&f, &bits, 4);
    if (std::isnan(f)) continue;
    REQUIRE(float_to_f16_bits(f) == f32_to_f16(f));
  }
}

TEST_CASE("W4A16 interleaved planes: the fast and slow paths equal dequantize()", "[kernel_math][w4a16]") {
  const W4a16Case cases[] = {{37, 200, 128, false}, {37, 200, 128, true}, {72, 1000, 50, true},
                             {8, 1024, 64, false},  {45, 2048, 128, false}, {33, 96, 128, false}};
  for (const W4a16Case& c : cases) {
    const QuantizedTensor q = quantize_w4a16_case(c, uint32_t(c.cols * 5 + c.group));
    INFO(c.rows << "x" << c.cols << " group " << c.group << (c.symmetric ? " symmetric" : ""));
    const std::vector<float> want = cpu_dequantized(q);
    const std::vector<uint8_t> codes = w4a16_interleaved_codes(q);
    check_bits(w4a16_interleaved_walk(q, codes), want);
    if (c.group % 8 == 0) check_bits(w4a16_magic_walk(q, codes), want);
  }
}

TEST_CASE("int8 rounding: half to even, saturated, NaN to 0", "[kernel_math]") {
  CHECK(round_to_int8(2.5f) == 2);
  CHECK(round_to_int8(3.5f) == 4);
  CHECK(round_to_int8(-2.5f) == -2);
  CHECK(round_to_int8(126.5f) == 126);
  CHECK(round_to_int8(127.5f) == 127);
  // torch's 127 / row_stats is a reciprocal then a multiply: at half the absmax it gives 63.500004.
  CHECK(llm_int8_factor(0.1850586f) == (1.0f / 0.1850586f) * 127.0f);
  CHECK(llm_int8_activation(0.0925293f, llm_int8_factor(0.1850586f)) == 64);
  CHECK(llm_int8_activation(0.0925293f, 127.0f / 0.1850586f) == 63);
  CHECK(round_to_int8(-128.5f) == -128);
  CHECK(round_to_int8(1e9f) == 127);
  CHECK(round_to_int8(-std::numeric_limits<float>::infinity()) == -128);
  CHECK(round_to_int8(std::numeric_limits<float>::quiet_NaN()) == 0);
  CHECK(w8a8_activation(5.0f, 0.0f) == 0);
}

TEST_CASE("int8 kernels' dequantizers and epilogues reproduce the CPU format bit for bit", "[kernel_math]") {
  ThreadPool pool(1);
  const int rows = 37, cols = 200, n = 3;
  const auto w = random_values(size_t(rows) * cols, 7, 0.05f);
  auto x = random_values(size_t(n) * cols, 8);
  x[5] = 8.5f;  // LLM.int8 outlier columns 5 and 17 (threshold 6)
  x[size_t(2) * cols + 17] = -6.0f;

  SECTION("LLM.int8") {
    QuantOptions opts;
    opts.int8_threshold = 6.0f;
    const QuantizedTensor q = quantize(Format::INT8, w.data(), rows, cols, opts);
    const auto* cb = reinterpret_cast<const int8_t*>(q.codes.data());
    std::vector<float> deq(size_t(rows) * cols);
    for (int r = 0; r < rows; ++r)
      for (int c = 0; c < cols; ++c) deq[size_t(r) * cols + c] = llm_int8_weight(cb[size_t(r) * cols + c], q.scales[size_t(r)]);
    check_bits(deq, cpu_dequantized(q));
    // The weight quantizer rounds as the activation quantizer does: CB = rint(fp16(w) * fl(fl(1 / SCB) * 127)).
    size_t differing = 0;
    for (int r = 0; r < rows; ++r)
      for (int c = 0; c < cols; ++c)
        differing += llm_int8_activation(round_f16(w[size_t(r) * cols + c]), llm_int8_factor(q.scales[size_t(r)])) !=
                     cb[size_t(r) * cols + c];
    CHECK(differing == 0);

    // The kernels' flow: outlier columns (in increasing order), per-token rowStat and CA, int32
    // sums, the rescale, fp16, then the outlier columns added (here in the CPU's order).
    std::vector<int> outliers;
    for (int c = 0; c < cols; ++c)
      for (int t = 0; t < n; ++t)
        if (std::fabs(round_f16(x[size_t(t) * cols + c])) >= opts.int8_threshold) {
          outliers.push_back(c);
          break;
        }
    REQUIRE(outliers == std::vector<int>{5, 17});
    std::vector<float> y(size_t(n) * rows);
    for (int t = 0; t < n; ++t) {
      const float* xt = x.data() + size_t(t) * cols;
      float row_stat = 0.0f;
      for (int c = 0; c < cols; ++c) {
        const float v = std::fabs(round_f16(xt[c]));
        if (v < opts.int8_threshold) row_stat = std::max(row_stat, v);
      }
      const float factor = llm_int8_factor(row_stat);
      std::vector<int8_t> ca(static_cast<size_t>(cols));
      for (int c = 0; c < cols; ++c) {
        const bool outlier = c == 5 || c == 17;
        ca[size_t(c)] = outlier ? int8_t(0) : llm_int8_activation(round_f16(xt[c]), factor);
      }
      for (int r = 0; r < rows; ++r) {
        int32_t acc = 0;
        for (int c = 0; c < cols; ++c) acc += int32_t(ca[size_t(c)]) * int32_t(cb[size_t(r) * cols + c]);
        float out = round_f16(llm_int8_rescale(acc, row_stat, q.scales[size_t(r)]));
        float outlier_sum = 0.0f;
        for (int c : outliers) {
          const float wv = round_f16(llm_int8_weight(cb[size_t(r) * cols + c], q.scales[size_t(r)]));
          outlier_sum = add_rn(outlier_sum, mul_rn(round_f16(xt[c]), wv));
        }
        y[size_t(t) * rows + r] = round_f16(add_rn(out, outlier_sum));
      }
    }
    std::vector<float> want(size_t(n) * rows);
    matmul(q, x.data(), n, want.data(), pool);
    check_bits(y, want);
  }

  SECTION("W8A8") {
    const QuantizedTensor q = quantize(Format::W8A8, w.data(), rows, cols, QuantOptions{});
    const auto* wq = reinterpret_cast<const int8_t*>(q.codes.data());
    // Weights and activations share one quantizer on the CPU: sat(rint(v / scale)).
    size_t differing = 0;
    for (int r = 0; r < rows; ++r)
      for (int c = 0; c < cols; ++c)
        differing += w8a8_activation(w[size_t(r) * cols + c], q.scales[size_t(r)]) != wq[size_t(r) * cols + c];
    CHECK(differing == 0);
    std::vector<float> y(size_t(n) * rows);
    for (int t = 0; t < n; ++t) {
      const float* xt = x.data() + size_t(t) * cols;
      float absmax = 0.0f;
      for (int c = 0; c < cols; ++c) absmax = std::max(absmax, std::fabs(xt[c]));
      const float x_scale = absmax / 127.0f;
      for (int r = 0; r < rows; ++r) {
        int32_t acc = 0;
        for (int c = 0; c < cols; ++c) acc += int32_t(w8a8_activation(xt[c], x_scale)) * int32_t(wq[size_t(r) * cols + c]);
        y[size_t(t) * rows + r] = w8a8_rescale(acc, q.scales[size_t(r)], x_scale);
      }
    }
    std::vector<float> want(size_t(n) * rows);
    matmul(q, x.data(), n, want.data(), pool);
    check_bits(y, want);
  }
}

// W8A8-fp8's software conversions (the sm_80 kernels) against core/fp8.h (the CPU reference,
// pinned to torch in test_formats): every byte decodes alike; fp32 -> e4m3 agrees on every e4m3
// value, every midpoint and its two fp32 neighbours, values past 448, subnormals, infinities and
// 2^20 random bit patterns. The one allowed difference: NaN is 0x7f on the GPU (the hardware's
// canonical NaN), torch keeps its sign (0xff for -NaN).
TEST_CASE("e4m3 conversions of the kernels equal the CPU format's", "[kernel_math][fp8]") {
  for (uint32_t b = 0; b < 256; ++b) {
    INFO("byte " << b);
    const float want = e4m3_to_f32(uint8_t(b)), got = e4m3_value(b);
    if (std::isnan(want))
      CHECK(std::isnan(got));
    else
      CHECK(f32_to_bits(got) == f32_to_bits(want));
  }
  std::vector<float> inputs;
  for (int b = 0; b < 126; ++b) {
    const float lo = e4m3_to_f32(uint8_t(b)), hi = e4m3_to_f32(uint8_t(b + 1));
    const float mid = float((double(lo) + double(hi)) / 2);
    for (float v : {lo, mid, std::nextafter(mid, 0.0f), std::nextafter(mid, 1e9f)}) {
      inputs.push_back(v);
      inputs.push_back(-v);
    }
  }
  for (float v : {448.0f, 449.0f, 464.0f, 480.0f, 1e30f, INFINITY, -INFINITY, 1e-45f, 1e-40f, 0.0009765625f, -0.0f})
    inputs.push_back(v);
  std::mt19937 rng(7);
  for (int i = 0; i < (1 << 20); ++i) inputs.push_back(bits_to_f32(uint32_t(rng())));
  size_t nans = 0;
  for (float v : inputs) {
    INFO("input " << v << " bits " << std::hex << f32_to_bits(v));
    const uint8_t want = f32_to_e4m3(v), got = e4m3_code(v);
    if (std::isnan(v)) {
      ++nans;
      CHECK(int(got) == 0x7f);
      CHECK((want & 0x7f) == 0x7f);
    } else {
      REQUIRE(int(got) == int(want));
    }
  }
  CHECK(nans > 1000);  // random bit patterns hit NaNs of both signs
  CHECK(fp8_scale(0.0f) == std::numeric_limits<float>::epsilon());
  CHECK(fp8_scale(448.0f) == 1.0f);
}

// The GPU GEMV's arithmetic written out on the CPU: per-token scale, e4m3 codes through the
// software conversions, products summed in fp32 (in any order: here column order), the rescale.
// Against lowbit::matmul (exact sums) it may differ only by the fp32 accumulation's rounding.
TEST_CASE("W8A8-fp8 kernel arithmetic equals the CPU format up to fp32 summation", "[kernel_math][fp8]") {
  ThreadPool pool(2);
  const int rows = 23, cols = 200, n = 3;
  const auto w = random_values(size_t(rows) * cols, 31, 0.05f);
  const auto x = random_values(size_t(n) * cols, 32);
  const QuantizedTensor q = quantize(Format::W8A8_FP8, w.data(), rows, cols, QuantOptions{});
  for (int r = 0; r < rows; ++r) {
    float absmax = 0.0f;
    for (int c = 0; c < cols; ++c) absmax = std::max(absmax, std::fabs(w[size_t(r) * cols + c]));
    REQUIRE(f32_to_bits(fp8_scale(absmax)) == f32_to_bits(q.scales[size_t(r)]));
    for (int c = 0; c < cols; ++c) REQUIRE(e4m3_code(w[size_t(r) * cols + c] / q.scales[size_t(r)]) == q.codes[size_t(r) * cols + c]);
  }
  std::vector<float> y(size_t(n) * rows), want(y.size());
  double sum_abs = 0;
  for (int t = 0; t < n; ++t) {
    const float* xt = x.data() + size_t(t) * cols;
    float absmax = 0.0f;
    for (int c = 0; c < cols; ++c) absmax = std::max(absmax, std::fabs(xt[c]));
    const float x_scale = fp8_scale(absmax);
    for (int r = 0; r < rows; ++r) {
      float acc = 0.0f;
      for (int c = 0; c < cols; ++c) {
        const float p = e4m3_value(e4m3_code(xt[c] / x_scale)) * e4m3_value(q.codes[size_t(r) * cols + c]);
        acc += p;
        sum_abs += std::fabs(double(p)) * q.scales[size_t(r)] * x_scale;
      }
      y[size_t(t) * rows + r] = fp8_rescale(acc, q.scales[size_t(r)], x_scale);
    }
  }
  matmul(q, x.data(), n, want.data(), pool);
  // fp32 accumulation of `cols` terms: |error| <= cols * 2^-24 * sum |terms| (per output; the
  // bound below is over all outputs together).
  double worst = 0, differing = 0;
  for (size_t i = 0; i < y.size(); ++i) {
    worst = std::max(worst, std::fabs(double(y[i]) - double(want[i])));
    differing += y[i] != want[i];
  }
  CHECK(worst <= double(cols) * std::ldexp(1.0, -24) * sum_abs);
  CHECK(worst > 0);  // an fp32 running sum does round here: the CPU's exact sum is not it
  CHECK(differing < double(y.size()));
}
