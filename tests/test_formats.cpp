// Weight formats: parse/dispatch, F32/BF16 exactness (bnb fixtures follow).
#include <catch2/catch.hpp>

#include <cmath>
#include <random>
#include <vector>

#include "core/error.h"
#include "core/half.h"
#include "formats/format.h"

using namespace lowbit;

TEST_CASE("parse_format round trip and bad names", "[formats]") {
  for (Format f : all_formats()) {
    REQUIRE(parse_format(format_name(f)) == f);
  }
  REQUIRE(parse_format("NF4-DQ") == Format::NF4_DQ);
  REQUIRE(parse_format("w4a16") == Format::W4A16);
  REQUIRE_THROWS_AS(parse_format("q4_0"), UsageError);
}

TEST_CASE("F32 and BF16 quantize, dequantize and matmul", "[formats]") {
  std::mt19937 rng(1);
  std::normal_distribution<float> nd;
  const int64_t rows = 7, cols = 33;
  std::vector<float> w(rows * cols), x(2 * cols);
  for (auto& v : w) v = nd(rng);
  for (auto& v : x) v = nd(rng);
  ThreadPool pool(2);
  for (Format f : {Format::F32, Format::BF16}) {
    auto q = quantize(f, w.data(), rows, cols, {});
    std::vector<float> dq(rows * cols), y(2 * rows);
    dequantize(q, dq.data());
    for (int64_t i = 0; i < rows * cols; ++i) REQUIRE(dq[i] == (f == Format::F32 ? w[i] : round_bf16(w[i])));
    matmul(q, x.data(), 2, y.data(), pool);
    for (int t = 0; t < 2; ++t)
      for (int64_t r = 0; r < rows; ++r) {
        double ref = 0;
        for (int64_t c = 0; c < cols; ++c) ref += double(x[t * cols + c]) * dq[r * cols + c];
        REQUIRE(std::abs(y[t * rows + r] - ref) < 1e-5);
      }
  }
}
