// Weight formats: bit-exactness against bitsandbytes fixtures (tools/make_format_fixtures.py),
// run-time arithmetic against a plain fp64 matmul on the dequantized weights, layout traps
// (nibble order, block boundaries, scales), and the format names.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <tuple>
#include <fstream>
#include <iterator>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "backend/cpu_backend.h"
#include "core/error.h"
#include "core/fp8.h"
#include "core/half.h"
#include "formats/format.h"
#include "test_fixtures.h"
#include "test_util.h"

using namespace lowbit;
using nlohmann::json;

using lowbit::test::nmse;
using lowbit::test::random_values;

namespace {

// tests/data/formats: index.json (array name -> dtype, shape, byte offset) + arrays.bin (raw LE).
// tests/data/formats/fp8.{json,bin} (tools/make_fp8_fixtures.py) has the same layout.
class Fixtures {
 public:
  explicit Fixtures(const std::string& index_name = "index.json", const std::string& blob_name = "arrays.bin") {
    const std::string dir = test::data_dir() + "/formats/";
    std::ifstream index_file(dir + index_name);
    REQUIRE(index_file.good());
    index_ = json::parse(index_file);
    std::ifstream blob_file(dir + blob_name, std::ios::binary);
    REQUIRE(blob_file.good());
    blob_.assign(std::istreambuf_iterator<char>(blob_file), std::istreambuf_iterator<char>());
  }
  const json& index() const { return index_; }

  template <class T>
  std::vector<T> get(const std::string& name) const {
    REQUIRE(index_["arrays"].contains(name));
    const json& a = index_["arrays"][name];
    const size_t offset = a["offset"], nbytes = a["nbytes"];
    REQUIRE(offset + nbytes <= blob_.size());
    REQUIRE(nbytes % sizeof(T) == 0);
    std::vector<T> out(nbytes / sizeof(T));
    std::memcpy(out.data(), blob_.data() + offset, nbytes);
    return out;
  }

 private:
  json index_;
  std::vector<char> blob_;
};

const Fixtures& fixtures() {
  static const Fixtures f;
  return f;
}

const Fixtures& fp8_fixtures() {
  static const Fixtures f("fp8.json", "fp8.bin");
  return f;
}

uint32_t bits(float f) { return f32_to_bits(f); }

// Index of the first element whose bit pattern differs (NaN, -0 included), or -1.
int64_t first_bit_difference(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return 0;
  for (size_t i = 0; i < a.size(); ++i)
    if (bits(a[i]) != bits(b[i])) return int64_t(i);
  return -1;
}

// Same, but +0 and -0 count as equal: bnb's FP4 code 8 dequantizes to +0 in its native CPU
// kernel and to -0 in its torch fallback (odd column counts), so the sign of zero is not defined.
int64_t first_value_difference(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return 0;
  for (size_t i = 0; i < a.size(); ++i)
    if (bits(a[i]) != bits(b[i]) && !(a[i] == 0.0f && b[i] == 0.0f)) return int64_t(i);
  return -1;
}

Format four_bit_format(const std::string& quant_type, bool double_quant) {
  if (quant_type == "nf4") return double_quant ? Format::NF4_DQ : Format::NF4;
  return double_quant ? Format::FP4_DQ : Format::FP4;
}

// Plain fp64 reference y[t, r] = sum_c x[t, c] * w[r, c].
std::vector<double> reference_matmul(const std::vector<float>& w, const std::vector<float>& x, int64_t rows,
                                     int64_t cols, int64_t n_tokens) {
  std::vector<double> y(size_t(n_tokens * rows), 0.0);
  for (int64_t t = 0; t < n_tokens; ++t)
    for (int64_t r = 0; r < rows; ++r) {
      double acc = 0;
      for (int64_t c = 0; c < cols; ++c) acc += double(x[size_t(t * cols + c)]) * w[size_t(r * cols + c)];
      y[size_t(t * rows + r)] = acc;
    }
  return y;
}


}  // namespace

TEST_CASE("parse_format round trip and bad names", "[formats]") {
  for (Format f : all_formats()) REQUIRE(parse_format(format_name(f)) == f);
  // all_formats() is format_list.h's order, the enum's, with distinct names.
  const std::vector<Format> formats = all_formats();
  for (size_t i = 0; i < formats.size(); ++i) {
    REQUIRE(formats[i] == Format(i));
    REQUIRE(format_info(formats[i]).format == formats[i]);
    for (size_t j = 0; j < i; ++j) REQUIRE(format_name(formats[j]) != format_name(formats[i]));
  }
  REQUIRE(parse_format("NF4-DQ") == Format::NF4_DQ);
  REQUIRE(parse_format("w4a16") == Format::W4A16);
  REQUIRE(parse_format("w8a8") == Format::W8A8);
  REQUIRE(parse_format("w8a8-FP8") == Format::W8A8_FP8);
  REQUIRE(format_name(Format::W8A8_FP8) == "W8A8-fp8");
  REQUIRE(parse_format("BF16") == Format::BF16);
  REQUIRE_THROWS_AS(parse_format("q4_0"), UsageError);
  REQUIRE_THROWS_AS(parse_format(""), UsageError);
  try {
    parse_format("nf5");
    FAIL("no exception");
  } catch (const UsageError& e) {
    const std::string msg = e.what();
    REQUIRE(msg.find("nf5") != std::string::npos);
    for (Format f : all_formats()) REQUIRE(msg.find(std::string(format_name(f))) != std::string::npos);
  }
}

TEST_CASE("F32 and BF16 are exact", "[formats]") {
  const int64_t rows = 7, cols = 33;
  auto w = random_values(rows * cols, 1);
  w[0] = 1.00390625f;  // halfway between two bf16 values: rounds to even (1.0)
  w[1] = 1.01171875f;  // halfway, rounds up to even (1.015625)
  auto q = quantize(Format::BF16, w.data(), rows, cols, {});
  std::vector<float> dq(size_t(rows * cols));
  dequantize(q, dq.data());
  REQUIRE(dq[0] == 1.0f);
  REQUIRE(dq[1] == 1.015625f);
  for (size_t i = 0; i < w.size(); ++i) REQUIRE(dq[i] == round_bf16(w[i]));
  REQUIRE(weight_bytes(q) == size_t(rows * cols * 2));
  auto f = quantize(Format::F32, w.data(), rows, cols, {});
  dequantize(f, dq.data());
  REQUIRE(dq == w);
  REQUIRE(weight_bytes(f) == size_t(rows * cols * 4));
}

TEST_CASE("NF4/FP4 (+dq) are bit-exact with bitsandbytes", "[formats][bnb]") {
  const auto& fx = fixtures();
  const json& cases = fx.index()["four_bit"];
  REQUIRE(cases.size() >= 20);
  for (const json& c : cases) {
    const std::string label = c["name"].get<std::string>() + "/" + c["quant_type"].get<std::string>() + "/bs" +
                              std::to_string(c["block_size"].get<int>());
    INFO(label);
    const int64_t rows = c["shape"][0], cols = c["shape"][1];
    const auto input = fx.get<float>(c["input"]);
    QuantOptions opts;
    opts.block_size = c["block_size"];
    const auto packed = fx.get<uint8_t>(c["packed"]);
    for (bool dq : {false, true}) {
      INFO((dq ? "double quant" : "plain"));
      auto q = quantize(four_bit_format(c["quant_type"], dq), input.data(), rows, cols, opts);
      REQUIRE(q.codes == packed);
      std::vector<float> out(size_t(rows * cols));
      dequantize(q, out.data());
      if (!dq) {
        REQUIRE(first_bit_difference(q.scales, fx.get<float>(c["absmax"])) == -1);
        REQUIRE(first_value_difference(out, fx.get<float>(c["dequant"])) == -1);
        REQUIRE(weight_bytes(q) == packed.size() + 4 * q.scales.size());
      } else {
        REQUIRE(bits(q.offset) == bits(c["dq_offset"].get<float>()));
        REQUIRE(q.scale_codes == fx.get<uint8_t>(c["dq_scale_codes"]));
        REQUIRE(first_bit_difference(q.scales2, fx.get<float>(c["dq_absmax2"])) == -1);
        REQUIRE(q.scales.empty());
        REQUIRE(first_value_difference(out, fx.get<float>(c["dq_dequant"])) == -1);
        REQUIRE(weight_bytes(q) == packed.size() + q.scale_codes.size() + 4 * q.scales2.size() + 4);
      }
      // dequantize_row agrees with dequantize (rows may start mid-byte and mid-block)
      std::vector<float> row(static_cast<size_t>(cols));
      for (int64_t r = 0; r < rows; ++r) {
        dequantize_row(q, r, row.data());
        REQUIRE(std::memcmp(row.data(), out.data() + r * cols, size_t(cols) * 4) == 0);
      }
    }
  }
}

TEST_CASE("LLM.int8 weights and matmul match bitsandbytes", "[formats][bnb]") {
  const auto& fx = fixtures();
  const json& cases = fx.index()["int8"];
  REQUIRE(cases.size() >= 40);
  ThreadPool pool(2);
  int with_outliers = 0, with_bias = 0;
  for (const json& c : cases) {
    const std::string label = c["weight"].get<std::string>() + "/" + c["x"].get<std::string>() + "/t" +
                              std::to_string(c["threshold"].get<double>());
    INFO(label);
    const int64_t rows = c["rows"], cols = c["cols"], n_tokens = c["n_tokens"];
    const auto w = fx.get<float>(c["input_w"]);
    QuantOptions opts;
    opts.int8_threshold = c["threshold"];
    auto q = quantize(Format::INT8, w.data(), rows, cols, opts);
    const auto cb = fx.get<int8_t>(c["CB"]);
    REQUIRE(std::memcmp(q.codes.data(), cb.data(), cb.size()) == 0);
    REQUIRE(q.codes.size() == cb.size());
    REQUIRE(first_bit_difference(q.scales, fx.get<float>(c["SCB"])) == -1);
    REQUIRE(weight_bytes(q) == size_t(rows * cols + 4 * rows));

    const auto x = fx.get<float>(c["input_x"]);
    const auto expected = fx.get<float>(c["out"]);
    std::vector<float> y(size_t(n_tokens * rows));
    const std::vector<float> bias = c.contains("bias") ? fx.get<float>(c["bias"]) : std::vector<float>{};
    with_bias += !bias.empty();
    matmul(q, x.data(), n_tokens, y.data(), pool, bias.empty() ? nullptr : bias.data());
    // The int8 path is exact up to fp16 rounding of the output; the outlier path adds an fp16
    // matmul whose internal summation order differs from torch's: allow one fp16 ulp there.
    int exact = 0;
    for (size_t i = 0; i < y.size(); ++i) {
      const float ulp = std::ldexp(1.0f, std::ilogb(std::max(std::fabs(expected[i]), 6.1e-5f)) - 10);
      INFO("element " << i << ": lowbit " << y[i] << " bnb " << expected[i]);
      REQUIRE(std::fabs(y[i] - expected[i]) <= ulp);
      exact += y[i] == expected[i];
    }
    if (c["threshold"].get<double>() == 0.0 || c["x"] == "x_plain") {
      REQUIRE(exact == int(y.size()));  // no outlier columns: bit-exact
    } else {
      ++with_outliers;
      REQUIRE(exact >= int(0.9 * y.size()));
    }
  }
  REQUIRE(with_outliers >= 4);
  REQUIRE(with_bias >= 12);
}

// torch evaluates bnb's `127.0 / row_stats` as row_stats.reciprocal() * 127, which rounds twice:
// a value at exactly half its row's absmax lands on 63.500004 and rounds to 64, where a true
// division gives 63.5 and rounds to even, 63 (the cases bitsandbytes 0.50.2 was seen to give).
TEST_CASE("LLM.int8 rounds the .5 ties as torch's reciprocal-then-multiply", "[formats][bnb]") {
  const float scb = 0.1850586f, half = 0.0925293f;  // fp16 values: 1516 and 758 * 2^-13
  REQUIRE(round_f16(scb) == scb);
  REQUIRE(round_f16(half) == half);
  std::vector<float> w(64, 0.0f);
  w[0] = scb;
  w[1] = half;
  const QuantizedTensor q = quantize(Format::INT8, w.data(), 1, 64, {});
  const auto* cb = reinterpret_cast<const int8_t*>(q.codes.data());
  CHECK(q.scales[0] == scb);
  CHECK(int(cb[0]) == 127);
  CHECK(int(cb[1]) == 64);  // a division would give 63
  CHECK(std::nearbyint(half * (127.0f / scb)) == 63.0f);

  // The activation side: x = [scb, half, 0, ...] quantizes to CA = [127, 64]. Against a weight
  // whose only non-zero is column 1 (CB 127, SCB 1) the output is 64 * 127 * scb * 6.200124e-05.
  std::vector<float> unit(64, 0.0f);
  unit[1] = 1.0f;
  QuantOptions opts;
  opts.int8_threshold = 0.0f;
  const QuantizedTensor e1 = quantize(Format::INT8, unit.data(), 1, 64, opts);
  ThreadPool pool(1);
  float y = 0.0f;
  matmul(e1, w.data(), 1, &y, pool);
  CHECK(y == round_f16(float(64 * 127) * (scb * 1.0f) * 6.200124e-05f));
  CHECK(y != round_f16(float(63 * 127) * (scb * 1.0f) * 6.200124e-05f));
}

TEST_CASE("bnb fixture comparisons catch layout mistakes", "[formats][bnb]") {
  const auto& fx = fixtures();
  const json& c = fx.index()["four_bit"][0];  // normal / nf4 / bs64
  REQUIRE(c["quant_type"] == "nf4");
  REQUIRE(c["block_size"] == 64);
  const int64_t rows = c["shape"][0], cols = c["shape"][1];
  const auto input = fx.get<float>(c["input"]);
  const auto expected = fx.get<float>(c["dequant"]);
  auto q = quantize(Format::NF4, input.data(), rows, cols, {});
  std::vector<float> out(size_t(rows * cols));

  SECTION("nibble swap") {
    for (auto& b : q.codes) b = uint8_t((b << 4) | (b >> 4));
    REQUIRE(q.codes != fx.get<uint8_t>(c["packed"]));
    dequantize(q, out.data());
    REQUIRE(first_value_difference(out, expected) != -1);
  }
  SECTION("wrong block boundary") {
    q.opts.block_size = 128;  // reads absmax of the wrong block from element 64 on
    dequantize(q, out.data());
    REQUIRE(first_value_difference(out, expected) == 64);
  }
  SECTION("wrong scale") {
    q.scales[3] = std::nextafter(q.scales[3], 1.0f);
    dequantize(q, out.data());
    REQUIRE(first_value_difference(out, expected) / 64 == 3);
  }
  SECTION("re-quantizing with another block size differs from bnb") {
    QuantOptions opts;
    opts.block_size = 128;
    auto other = quantize(Format::NF4, input.data(), rows, cols, opts);
    REQUIRE(other.codes != fx.get<uint8_t>(c["packed"]));
  }
}

TEST_CASE("NF4 and FP4 hand-computed codes", "[formats]") {
  // One block of 4 values, absmax 2: scaled 1, -1, 0.25, -0.0625.
  const float w[5] = {2.0f, -2.0f, 0.5f, -0.125f, 0.0f};
  auto nf4 = quantize(Format::NF4, w, 1, 5, {});
  // NF4 codes: 1 -> 15, -1 -> 0, 0.25 -> 10 (0.2461), -0.0625 -> 6 (-0.0911), 0 -> 7, pad 0 -> 7
  REQUIRE(nf4.codes == std::vector<uint8_t>{0xF0, 0xA6, 0x77});
  REQUIRE(nf4.scales == std::vector<float>{2.0f});  // a partial block stores its absmax
  auto fp4 = quantize(Format::FP4, w, 1, 5, {});
  // FP4 codes: 1 -> 0b0011, -1 -> 0b1011, 0.25 -> 0b0111, -0.0625 -> 0b1001 (-0.0052: |x| lies
  // between the cut points 0.0026 and 0.0859), 0 -> 0b0000, pad 0 -> 0b0000
  REQUIRE(fp4.codes == std::vector<uint8_t>{0x3B, 0x79, 0x00});
}

// The GPU quantizer produces NF4/FP4 planes and double-quantizes their absmax with this: it must
// give exactly what quantize() gives for the -dq formats (more than 256 blocks, a partial last
// block, a non-default block size).
TEST_CASE("double_quantize_scales(quantize(nf4)) is quantize(nf4-dq) byte for byte", "[formats]") {
  const auto w = random_values(size_t(37 * 1001), 21, 0.05f);
  for (auto [plain, dq] : {std::pair{Format::NF4, Format::NF4_DQ}, std::pair{Format::FP4, Format::FP4_DQ}}) {
    for (int block : {64, 128}) {
      INFO(format_name(dq) << " block " << block);
      QuantOptions opts;
      opts.block_size = block;
      QuantizedTensor q = quantize(plain, w.data(), 37, 1001, opts);
      const QuantizedTensor expected = quantize(dq, w.data(), 37, 1001, opts);
      REQUIRE(expected.scale_codes.size() > 256);
      double_quantize_scales(q);
      CHECK(q.format == dq);
      CHECK(q.codes == expected.codes);
      CHECK(q.scales.empty());
      CHECK(q.scale_codes == expected.scale_codes);
      CHECK(q.scales2 == expected.scales2);
      CHECK(std::memcmp(&q.offset, &expected.offset, sizeof(float)) == 0);
      CHECK(weight_bytes(q) == weight_bytes(expected));
    }
  }
  QuantizedTensor int8 = quantize(Format::INT8, w.data(), 37, 1001, {});
  CHECK_THROWS_AS(double_quantize_scales(int8), InputError);
}

// Where the CPU has AVX2 the 4-bit matmuls decode with intrinsics; the plain loops are the
// reference, and the two must agree bit for bit (shapes with segments of 1, 3 and many bytes,
// blocks straddling rows, one and several tokens).
TEST_CASE("the AVX2 decoders give the plain loops' matmul bit for bit", "[formats]") {
  if (!__builtin_cpu_supports("avx2")) WARN("no AVX2 on this CPU: both runs take the plain loops");
  ThreadPool pool(2);
  for (Format f : {Format::NF4, Format::FP4, Format::NF4_DQ, Format::FP4_DQ, Format::W4A16}) {
    for (auto [rows, cols, block] : {std::tuple{33, 200, 64}, std::tuple{5, 70, 64}, std::tuple{7, 38, 6},
                                     std::tuple{17, 1024, 128}, std::tuple{3, 256, 2}}) {
      QuantOptions opts;
      opts.block_size = block;
      opts.w4_group = block == 2 ? 4 : block;  // W4A16 groups: odd-sized tails too
      const auto w = random_values(size_t(rows * cols), 31, 0.05f);
      const QuantizedTensor q = quantize(f, w.data(), rows, cols, opts);
      for (int64_t n_tokens : {int64_t(1), int64_t(3)}) {
        INFO(format_name(f) << " " << rows << "x" << cols << " block " << block << " tokens " << n_tokens);
        const auto x = random_values(size_t(n_tokens * cols), 32);
        std::vector<float> fast(size_t(n_tokens * rows)), plain(fast.size());
        set_scalar_decode_only(false);
        matmul(q, x.data(), n_tokens, fast.data(), pool);
        set_scalar_decode_only(true);
        matmul(q, x.data(), n_tokens, plain.data(), pool);
        set_scalar_decode_only(false);
        REQUIRE(std::memcmp(fast.data(), plain.data(), fast.size() * sizeof(float)) == 0);
      }
    }
  }
}

TEST_CASE("W4A16 pack/unpack round trip and error bounds", "[formats]") {
  for (bool symmetric : {false, true}) {
    INFO((symmetric ? "symmetric" : "asymmetric"));
    const int64_t rows = 9, cols = 300;  // 300 = 2 groups of 128 + a partial group of 44
    auto w = random_values(size_t(rows * cols), 7, 0.05f);
    QuantOptions opts;
    opts.w4_symmetric = symmetric;
    auto q = quantize(Format::W4A16, w.data(), rows, cols, opts);
    REQUIRE(q.codes.size() == size_t(rows * cols / 2));
    REQUIRE(q.scales16.size() == size_t(rows * 3));
    REQUIRE(q.zeros.size() == (symmetric ? 0u : size_t(rows * 3)));
    REQUIRE(weight_bytes(q) == q.codes.size() + 2 * q.scales16.size() + q.zeros.size());
    std::vector<float> dq(w.size());
    dequantize(q, dq.data());
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) {
        const int64_t g = c / 128;
        const float scale = f16_to_f32(q.scales16[size_t(r * 3 + g)]);
        // round to nearest: at most half a step (plus the scale's fp16 rounding) from the weight
        REQUIRE(std::fabs(dq[size_t(r * cols + c)] - w[size_t(r * cols + c)]) <= 0.5f * scale * 1.01f + 1e-7f);
      }
    // quantizing the dequantized weights reproduces the same codes (round trip of the packing)
    auto again = quantize(Format::W4A16, dq.data(), rows, cols, opts);
    std::vector<float> dq2(w.size());
    dequantize(again, dq2.data());
    REQUIRE(first_bit_difference(dq2, dq) == -1);
  }
  // hand-computed: asymmetric group {-1, 0, 2}: scale = 3/15 = 0.2, zero = 5 -> q = 0, 5, 15
  const float w[3] = {-1.0f, 0.0f, 2.0f};
  auto q = quantize(Format::W4A16, w, 1, 3, {});
  REQUIRE(q.zeros == std::vector<uint8_t>{5});
  REQUIRE(q.codes == std::vector<uint8_t>{0x50, 0x0F});  // column 0 in the low nibble
  REQUIRE(f16_to_f32(q.scales16[0]) == round_f16(0.2f));
}

TEST_CASE("W8A8 pack/unpack round trip", "[formats]") {
  const int64_t rows = 5, cols = 70;
  auto w = random_values(size_t(rows * cols), 8, 0.1f);
  std::fill(w.begin() + 2 * cols, w.begin() + 3 * cols, 0.0f);  // an all-zero row
  auto q = quantize(Format::W8A8, w.data(), rows, cols, {});
  REQUIRE(weight_bytes(q) == size_t(rows * cols + 4 * rows));
  std::vector<float> dq(w.size());
  dequantize(q, dq.data());
  for (int64_t r = 0; r < rows; ++r) {
    const float scale = q.scales[size_t(r)];
    for (int64_t c = 0; c < cols; ++c) REQUIRE(std::fabs(dq[size_t(r * cols + c)] - w[size_t(r * cols + c)]) <= 0.5f * scale * 1.0001f);
  }
  REQUIRE(q.scales[2] == 0.0f);
  auto again = quantize(Format::W8A8, dq.data(), rows, cols, {});
  REQUIRE(again.codes == q.codes);
}

// W8A8-fp8 against torch 2.15 and compressed-tensors 0.20 (tools/make_fp8_fixtures.py).
TEST_CASE("fp32 -> e4m3 is torch's cast after the scheme's clamp, byte for byte", "[formats][fp8]") {
  const auto& fx = fp8_fixtures();
  const auto input = fx.get<float>("cast.input");
  const auto raw = fx.get<uint8_t>("cast.raw");
  const auto scheme = fx.get<uint8_t>("cast.scheme");
  REQUIRE(input.size() > 20000);
  REQUIRE(raw.size() == input.size());
  REQUIRE(scheme.size() == input.size());
  size_t ties = 0, saturated = 0, subnormal = 0, nans = 0;
  for (size_t i = 0; i < input.size(); ++i) {
    INFO("input " << input[i] << " (bits " << std::hex << bits(input[i]) << ")");
    REQUIRE(int(f32_to_e4m3(input[i])) == int(scheme[i]));
    REQUIRE(int(f32_to_e4m3(input[i])) == int(raw[i]));  // torch 2.15's cast saturates as the clamp does
    const float a = std::fabs(input[i]);
    saturated += a > 448.0f;
    subnormal += a > 0.0f && a < 0.015625f;
    nans += std::isnan(a);
    // A tie: exactly halfway between the two e4m3 neighbours of the result.
    const float v = std::fabs(e4m3_to_f32(scheme[i]));
    if (a < 448.0f && !std::isnan(a) && a != v) {
      const uint8_t other = uint8_t((scheme[i] & 0x7f) + (a > v ? 1 : -1));
      ties += std::fabs(e4m3_to_f32(other)) - a == a - v;
    }
  }
  // The fixture holds what it claims to: every midpoint (and its negative), inputs past 448, inf,
  // subnormals and both NaNs.
  CHECK(ties >= 2 * 125);
  CHECK(saturated >= 20);
  CHECK(subnormal >= 30);
  CHECK(nans == 2);
  // Spot values: ties to even, saturation, the smallest subnormal, the sign of zero and NaN.
  CHECK(int(f32_to_e4m3(1.0625f)) == 0x38);   // 1 + 1/16: tie between 1 and 1.125 -> 1 (even)
  CHECK(int(f32_to_e4m3(1.1875f)) == 0x3a);   // tie between 1.125 and 1.25 -> 1.25 (even)
  CHECK(int(f32_to_e4m3(464.0f)) == 0x7e);    // past 448: saturated, never NaN
  CHECK(int(f32_to_e4m3(-INFINITY)) == 0xfe);
  CHECK(int(f32_to_e4m3(0.0009765625f)) == 0x00);  // 2^-10, halfway to the smallest subnormal
  CHECK(int(f32_to_e4m3(-0.0f)) == 0x80);
  CHECK(int(f32_to_e4m3(NAN)) == 0x7f);
}

TEST_CASE("e4m3 -> fp32 is torch's for all 256 bytes", "[formats][fp8]") {
  const auto decoded = fp8_fixtures().get<float>("cast.decoded");
  REQUIRE(decoded.size() == 256);
  for (int b = 0; b < 256; ++b) {
    INFO("byte " << b);
    if (std::isnan(decoded[size_t(b)]))
      CHECK(std::isnan(e4m3_to_f32(uint8_t(b))));
    else
      CHECK(bits(e4m3_to_f32(uint8_t(b))) == bits(decoded[size_t(b)]));
  }
  CHECK(e4m3_to_f32(0x7e) == 448.0f);
  CHECK(e4m3_to_f32(0x01) == 0.001953125f);
}

TEST_CASE("W8A8-fp8 weights, activations and matmul are compressed-tensors' bit for bit", "[formats][fp8]") {
  const auto& fx = fp8_fixtures();
  ThreadPool pool(2);
  const auto cases = fx.index().at("weights").get<std::vector<std::string>>();
  REQUIRE(cases.size() == 2);
  for (const std::string& name : cases) {
    INFO("case " << name);
    const auto& shape = fx.index()["arrays"]["weights." + name + ".w"]["shape"];
    const int64_t rows = shape[0], cols = shape[1];
    const auto w = fx.get<float>("weights." + name + ".w");
    const QuantizedTensor q = quantize(Format::W8A8_FP8, w.data(), rows, cols, {});
    CHECK(q.codes == fx.get<uint8_t>("weights." + name + ".codes"));
    CHECK(first_bit_difference(q.scales, fx.get<float>("weights." + name + ".scales")) == -1);
    REQUIRE(weight_bytes(q) == quantized_bytes(Format::W8A8_FP8, rows, cols, {}));

    // The per-token activation quantizer is the per-channel one on the token rows.
    const auto& xshape = fx.index()["arrays"]["tokens." + name + ".x"]["shape"];
    const int64_t n_tokens = xshape[0];
    REQUIRE(int64_t(xshape[1]) == cols);
    const auto x = fx.get<float>("tokens." + name + ".x");
    const QuantizedTensor xq = quantize(Format::W8A8_FP8, x.data(), n_tokens, cols, {});
    CHECK(xq.codes == fx.get<uint8_t>("tokens." + name + ".codes"));
    CHECK(first_bit_difference(xq.scales, fx.get<float>("tokens." + name + ".scales")) == -1);

    std::vector<float> y(size_t(n_tokens * rows));
    matmul(q, x.data(), n_tokens, y.data(), pool);
    CHECK(first_bit_difference(y, fx.get<float>("matmul." + name + ".y")) == -1);
    // Any one token alone gives its row of the batch (the scales are per token).
    std::vector<float> y1(static_cast<size_t>(rows));
    matmul(q, x.data() + (n_tokens - 1) * cols, 1, y1.data(), pool);
    CHECK(std::equal(y1.begin(), y1.end(), y.begin() + (n_tokens - 1) * rows));
  }
}

TEST_CASE("W8A8-fp8 round trip, zero rows and the fixture checks catch mistakes", "[formats][fp8]") {
  const int64_t rows = 5, cols = 70;
  auto w = random_values(size_t(rows * cols), 8, 0.1f);
  std::fill(w.begin() + 2 * cols, w.begin() + 3 * cols, 0.0f);  // an all-zero row
  const auto q = quantize(Format::W8A8_FP8, w.data(), rows, cols, {});
  REQUIRE(weight_bytes(q) == size_t(rows * cols + 4 * rows));
  CHECK(q.scales[2] == FLT_EPSILON);  // compressed-tensors' eps for a zero scale
  std::vector<float> dq(w.size());
  dequantize(q, dq.data());
  for (int64_t i = 0; i < rows * cols; ++i) {
    // e4m3 keeps 3 mantissa bits: relative error <= 2^-4 above the subnormals, whose spacing is
    // 2^-9 * scale.
    const float scale = q.scales[size_t(i / cols)];
    REQUIRE(std::fabs(dq[size_t(i)] - w[size_t(i)]) <= std::max(std::fabs(w[size_t(i)]) / 16.0f, scale / 1024.0f) * 1.0001f);
  }
  for (int64_t c = 0; c < cols; ++c) REQUIRE(dq[size_t(2 * cols + c)] == 0.0f);
  // Quantizing the dequantized weight again is a fixed point: the absmax maps back to 448.
  const auto again = quantize(Format::W8A8_FP8, dq.data(), rows, cols, {});
  CHECK(again.codes == q.codes);
  // Row r's absmax is the code 0x7e (448) or 0xfe.
  for (int64_t r = 0; r < rows; ++r) {
    if (r == 2) continue;
    int top = 0;
    for (int64_t c = 0; c < cols; ++c) top = std::max(top, q.codes[size_t(r * cols + c)] & 0x7f);
    CHECK(top == 0x7e);
  }
  // A cast that truncated instead of rounding, or rounded ties away from zero, fails the fixture.
  const auto& fx = fp8_fixtures();
  const auto input = fx.get<float>("cast.input");
  const auto scheme = fx.get<uint8_t>("cast.scheme");
  size_t truncated_differs = 0, away_differs = 0;
  for (size_t i = 0; i < input.size(); ++i) {
    const float a = std::fabs(input[i]);
    if (!(a < 448.0f) || a < 0.015625f) continue;
    const uint32_t rebias = f32_to_bits(a) - (120u << 23);
    truncated_differs += uint8_t(rebias >> 20) != (scheme[i] & 0x7f);
    away_differs += uint8_t((rebias + 0x80000u) >> 20) != (scheme[i] & 0x7f);
  }
  CHECK(truncated_differs > 100);
  CHECK(away_differs >= 60);  // the midpoints whose lower neighbour is even
}

TEST_CASE("matmul equals a fp64 matmul on the dequantized weights", "[formats]") {
  ThreadPool pool(2);
  // Bounds on the normalized MSE of the run-time arithmetic against the stored weights, set about
  // 3x above the largest measured value over these shapes: fp32 accumulation 6e-14; fp16
  // activations (W4A16) 5.5e-8; per-token int8 activations (W8A8, LLM.int8) 6.6e-5, which is
  // (absmax/127)^2/12 relative to E[x^2] for a normal vector (absmax ~ 3.5 sigma); per-token e4m3
  // activations (W8A8-fp8) 1.0e-3: a relative rounding step of 2^-4 to 2^-3, about 7e-4 of E[x^2].
  // By the format's kind of activations (FormatInfo::activations).
  const std::map<Activations, double> bound = {{Activations::fp32, 2e-13},
                                               {Activations::fp16, 2e-7},
                                               {Activations::llm_int8, 2e-4},
                                               {Activations::int8_per_token, 2e-4},
                                               {Activations::e4m3_per_token, 3e-3}};
  for (auto [rows, cols] : {std::pair<int64_t, int64_t>{33, 200}, {64, 257}, {17, 1024}}) {
    auto w = random_values(size_t(rows * cols), 11, 0.05f);
    for (int64_t n_tokens : {int64_t(1), int64_t(5)}) {
      auto x = random_values(size_t(n_tokens * cols), 12);
      for (Format f : all_formats()) {
        INFO(std::string(format_name(f)) << " " << rows << "x" << cols << " tokens " << n_tokens);
        auto q = quantize(f, w.data(), rows, cols, {});
        std::vector<float> dq(w.size()), y(size_t(n_tokens * rows));
        dequantize(q, dq.data());
        matmul(q, x.data(), n_tokens, y.data(), pool);
        const double e = nmse(y, reference_matmul(dq, x, rows, cols, n_tokens));
        INFO("nmse " << e);
        REQUIRE(e < bound.at(format_info(f).activations));
      }
    }
  }
}

TEST_CASE("LLM.int8 outlier columns use the dequantized int8 weights", "[formats]") {
  ThreadPool pool(1);
  const int64_t rows = 8, cols = 64;
  auto w = random_values(size_t(rows * cols), 21, 0.05f);
  auto x = random_values(size_t(cols), 22);
  for (auto& v : x) v = std::clamp(v, -3.0f, 3.0f);
  x[10] = 40.0f;  // one outlier column dominating the output
  QuantOptions opts;
  auto q = quantize(Format::INT8, w.data(), rows, cols, opts);
  std::vector<float> dq(w.size()), y(static_cast<size_t>(rows)), y_plain(static_cast<size_t>(rows));
  dequantize(q, dq.data());
  matmul(q, x.data(), 1, y.data(), pool);
  auto ref = reference_matmul(dq, x, rows, cols, 1);
  opts.int8_threshold = 0.0f;
  auto q_plain = quantize(Format::INT8, w.data(), rows, cols, opts);
  matmul(q_plain, x.data(), 1, y_plain.data(), pool);
  // With decomposition the other columns keep their resolution; without, the absmax 40 crushes them.
  REQUIRE(nmse(y, ref) < nmse(y_plain, ref) / 10);
}

// transformers + bitsandbytes quantize each nn.Linear weight on its own. A layer lowbit runs as
// one matmul (q|k|v, gate|up, Falcon's reordered QKV) keeps each checkpoint tensor as a part:
// the blockwise 4-bit formats keep the parts (their blocks, absmax, -dq offset and groups of 256
// are the tensor's own); the row-wise formats are stacked, which moves whole quantized rows and
// is exactly quantizing the stacked rows.
TEST_CASE("quantize_parts quantizes each checkpoint tensor on its own", "[formats]") {
  const int64_t cols = 72;  // 5 x 72 = 360 values: 5.625 blocks of 64
  const std::vector<int64_t> part_rows = {5, 3, 4};
  std::vector<std::vector<float>> values;
  for (size_t p = 0; p < part_rows.size(); ++p) values.push_back(random_values(size_t(part_rows[p] * cols), 40 + uint32_t(p), 0.05f));
  const std::vector<int32_t> order = {2, 0, 1};  // the middle part's rows, placed after quantization
  std::vector<HostWeightPart> parts;
  for (size_t p = 0; p < part_rows.size(); ++p)
    parts.push_back({values[p].data(), part_rows[p], p == 1 ? order : std::vector<int32_t>{}});
  // The rows in output order, as one fp32 tensor.
  std::vector<float> stacked(size_t(12 * cols));
  const std::vector<int64_t> dst_of_part_row = {0, 1, 2, 3, 4, 5 + 2, 5 + 0, 5 + 1, 8, 9, 10, 11};
  for (int64_t r = 0, p = 0, first = 0; r < 12; ++r) {
    if (r - first == part_rows[size_t(p)]) first += part_rows[size_t(p++)];
    std::copy_n(values[size_t(p)].begin() + (r - first) * cols, cols, stacked.begin() + dst_of_part_row[size_t(r)] * cols);
  }
  for (Format f : all_formats()) {
    INFO(format_name(f));
    const LinearWeight w = quantize_parts(f, parts, cols, {});
    REQUIRE(w.rows() == 12);
    REQUIRE(w.cols() == cols);
    CHECK(output_rows(w).size() == 12);
    const QuantizedTensor whole = quantize(f, stacked.data(), 12, cols, {});
    if (quantizes_rows_independently(f)) {
      REQUIRE(w.is_single());
      const QuantizedTensor& t = w.parts.front().tensor;
      CHECK(t.codes == whole.codes);
      CHECK(t.scales == whole.scales);
      CHECK(t.scales16 == whole.scales16);
      CHECK(t.zeros == whole.zeros);
      CHECK(weight_bytes(w) == weight_bytes(whole));
    } else {
      REQUIRE(w.parts.size() == 3);
      CHECK(output_rows(w) == dst_of_part_row);
      for (size_t p = 0; p < 3; ++p) {
        const QuantizedTensor alone = quantize(f, values[p].data(), part_rows[p], cols, {});
        const QuantizedTensor& t = w.parts[p].tensor;
        CHECK(t.codes == alone.codes);
        CHECK(t.scales == alone.scales);
        CHECK(t.scale_codes == alone.scale_codes);
        CHECK(t.scales2 == alone.scales2);
        CHECK(std::memcmp(&t.offset, &alone.offset, sizeof(float)) == 0);
      }
      // Fusing first would have changed the values: blocks straddle the parts.
      std::vector<float> fused(size_t(whole.rows * whole.cols)), own(fused.size());
      std::vector<float> row(static_cast<size_t>(cols));
      dequantize(whole, fused.data());
      const auto dst = output_rows(w);
      for (size_t p = 0, r = 0; p < 3; ++p)
        for (int64_t pr = 0; pr < part_rows[p]; ++pr, ++r) {
          dequantize_row(w.parts[p].tensor, pr, row.data());
          std::copy(row.begin(), row.end(), own.begin() + dst[r] * cols);
        }
      CHECK(first_value_difference(fused, own) != -1);
      CHECK_THROWS_AS(stack_rows(w), InputError);
    }
  }
  // Parts that cannot make one layer.
  std::vector<WeightPart> mixed;
  mixed.push_back({quantize(Format::NF4, values[0].data(), 5, cols, {}), {}});
  mixed.push_back({quantize(Format::NF4, values[1].data(), 3, cols - 8, {}), {}});
  CHECK_THROWS_AS(LinearWeight(std::move(mixed)), InputError);
  std::vector<WeightPart> bad_order;
  bad_order.push_back({quantize(Format::NF4, values[1].data(), 3, cols, {}), {0, 0, 1}});
  CHECK_THROWS_AS(LinearWeight(std::move(bad_order)), InputError);
  CHECK_THROWS_AS(LinearWeight(std::vector<WeightPart>{}), InputError);
}

// The CPU backend multiplies each part into its output rows, with its bias entries: bit for bit
// the part's own matmul, scattered (one token and several, every format).
TEST_CASE("a layer of parts multiplies each part into its output rows", "[formats]") {
  const int64_t cols = 72;
  const std::vector<int64_t> part_rows = {5, 3, 4};
  std::vector<std::vector<float>> values;
  for (size_t p = 0; p < part_rows.size(); ++p) values.push_back(random_values(size_t(part_rows[p] * cols), 50 + uint32_t(p), 0.05f));
  const std::vector<int32_t> order = {1, 2, 0};
  std::vector<HostWeightPart> parts;
  for (size_t p = 0; p < part_rows.size(); ++p)
    parts.push_back({values[p].data(), part_rows[p], p == 1 ? order : std::vector<int32_t>{}});
  const auto bias = random_values(12, 59, 0.1f);
  ThreadPool pool(2);
  for (Format f : all_formats()) {
    const LinearWeight w = quantize_parts(f, parts, cols, {});
    const auto dst = output_rows(w);
    for (int n : {1, 3}) {
      INFO(format_name(f) << " tokens " << n);
      CpuBackend backend(2);
      auto linear = backend.upload_quantizing(f, parts, cols, {}, bias);
      auto x = random_values(size_t(n * cols), 60 + uint32_t(n));
      x[5] = 9.0f;  // an LLM.int8 outlier column
      auto xb = backend.alloc(x.size(), "x");
      auto yb = backend.alloc(size_t(n * 12), "y");
      // x reaches the backend as the rows of an f32 "embedding" table looked up by tokens 0..n-1.
      TokenBatch batch;
      for (int t = 0; t < n; ++t) {
        batch.tokens.push_back(t);
        batch.positions.push_back(t);
        batch.slots.push_back(0);
      }
      backend.set_batch(batch);
      auto table = backend.upload_linear(quantize(Format::F32, x.data(), n, cols, {}), {});
      backend.embed(*table, *xb);
      std::vector<float> got(size_t(n * 12)), want(got.size());
      // Expected: each part's matmul with its bias entries, scattered to its output rows.
      size_t r = 0;
      for (const WeightPart& p : w.parts) {
        std::vector<float> part_bias, part_y(size_t(n) * size_t(p.tensor.rows));
        for (int64_t pr = 0; pr < p.tensor.rows; ++pr) part_bias.push_back(bias[size_t(dst[r + size_t(pr)])]);
        matmul(p.tensor, x.data(), n, part_y.data(), pool, part_bias.data());
        for (int t = 0; t < n; ++t)
          for (int64_t pr = 0; pr < p.tensor.rows; ++pr)
            want[size_t(t) * 12 + size_t(dst[r + size_t(pr)])] = part_y[size_t(t) * size_t(p.tensor.rows) + size_t(pr)];
        r += size_t(p.tensor.rows);
      }
      backend.matmul(*linear, *xb, *yb);
      backend.download(*yb, 0, got.size(), got.data());
      REQUIRE(std::memcmp(got.data(), want.data(), got.size() * sizeof(float)) == 0);
    }
  }
}

// bitsandbytes takes the -dq offset as torch's absmax.mean(); torch's CPU reduction of more than
// 32,768 values splits across its threads, so the last bit of the offset depends on the thread
// count (tools/measure_dq_offset.py). lowbit matches single-threaded torch (the one order that
// does not depend on the machine): here 262,144 blocks, as a 4096 x 4096 weight has, whose absmax
// values are a fixed integer sequence, pinned to torch 2.15's single-threaded mean 0x3f000099
// (2 threads give 0x3f000098, one ulp below).
TEST_CASE("double-quant offset of 262,144 blocks is single-threaded torch's mean", "[formats][bnb]") {
  const int64_t blocks = 262144, block = 64;
  std::vector<float> w(size_t(blocks * block), 0.0f);
  for (int64_t b = 0; b < blocks; ++b)
    w[size_t(b * block)] = float(((uint64_t(b) * 2654435761ULL) % 1000003ULL) + 1) / 1e6f;
  const QuantizedTensor q = quantize(Format::NF4_DQ, w.data(), 4096, 4096, {});
  CHECK(bits(q.offset) == 0x3f000099u);
}

// The planes a format states (FormatInfo::plane_sizes) are the planes its quantize() fills, for
// every format, shape and option that changes them: weight_bytes, quantized_bytes and the plane
// sizes agree, and a row-wise format's stacked parts are the stacked quantized rows.
TEST_CASE("every format fills exactly the planes it states", "[formats]") {
  QuantOptions symmetric;
  symmetric.w4_symmetric = true;
  QuantOptions small;
  small.block_size = 32;
  small.w4_group = 32;
  for (auto [rows, cols] : {std::pair<int64_t, int64_t>{3, 200}, {17, 64}, {1, 7}, {0, 16}}) {
    const auto w = random_values(size_t(rows * cols), 71, 0.05f);
    for (const QuantOptions& opts : {QuantOptions{}, symmetric, small}) {
      for (Format f : all_formats()) {
        INFO(format_name(f) << " " << rows << "x" << cols << " block " << opts.block_size << " group "
                            << opts.w4_group << (opts.w4_symmetric ? " symmetric" : ""));
        const QuantizedTensor q = quantize(f, w.data(), rows, cols, opts);
        const PlaneSizes sizes = format_info(f).plane_sizes(rows, cols, opts);
        size_t bytes = sizes.scalar_bytes;
        q.each([&](Plane p, const auto& plane, auto* element) {
          CHECK(plane.size() == sizes.elements[int(p)]);
          bytes += plane.size() * sizeof(*element);
        });
        CHECK(weight_bytes(q) == bytes);
        CHECK(quantized_bytes(f, rows, cols, opts) == bytes);
        if (!quantizes_rows_independently(f) || rows < 2) continue;
        // Rows [0, 1) and [1, rows) quantized apart and stacked == quantized together.
        const LinearWeight parts = quantize_parts(
            f, {{w.data(), 1, {}}, {w.data() + cols, rows - 1, {}}}, cols, opts);
        REQUIRE(parts.is_single());
        zip_planes([&](Plane, auto*, const auto& a, const auto& b) { CHECK(a == b); }, parts.parts.front().tensor, q);
      }
    }
  }
}
