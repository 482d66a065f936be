// Weight formats: bit-exactness against bitsandbytes fixtures (tools/make_format_fixtures.py),
// run-time arithmetic against a plain fp64 matmul on the dequantized weights, layout traps
// (nibble order, block boundaries, scales), and the format names.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <fstream>
#include <iterator>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/half.h"
#include "formats/format.h"
#include "test_util.h"

using namespace lowbit;
using nlohmann::json;

namespace {

// tests/data/formats: index.json (array name -> dtype, shape, byte offset) + arrays.bin (raw LE).
class Fixtures {
 public:
  Fixtures() {
    const std::string dir = test::data_dir() + "/formats/";
    std::ifstream index_file(dir + "index.json");
    REQUIRE(index_file.good());
    index_ = json::parse(index_file);
    std::ifstream blob_file(dir + "arrays.bin", std::ios::binary);
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

std::vector<float> random_vector(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd;
  std::vector<float> v(n);
  for (auto& x : v) x = nd(rng) * scale;
  return v;
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

// Normalized mean squared error, as llama.cpp's test-backend-ops: sum (a-b)^2 / sum b^2.
double nmse(const std::vector<float>& a, const std::vector<double>& b) {
  double err = 0, norm = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    err += (a[i] - b[i]) * (a[i] - b[i]);
    norm += b[i] * b[i];
  }
  return norm > 0 ? err / norm : err;
}

}  // namespace

TEST_CASE("parse_format round trip and bad names", "[formats]") {
  for (Format f : all_formats()) REQUIRE(parse_format(format_name(f)) == f);
  REQUIRE(all_formats().size() == 9);
  REQUIRE(parse_format("NF4-DQ") == Format::NF4_DQ);
  REQUIRE(parse_format("w4a16") == Format::W4A16);
  REQUIRE(parse_format("w8a8") == Format::W8A8);
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
  auto w = random_vector(rows * cols, 1);
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
