#include <catch2/catch.hpp>

#include <atomic>
#include <cmath>
#include <limits>
#include <vector>

#include "core/half.h"
#include "core/parallel.h"

using namespace lowbit;

TEST_CASE("bf16 rounds to nearest even", "[core]") {
  // 1 + 2^-8 is exactly halfway between bf16 neighbours 1 and 1+2^-7: ties to even (1.0).
  CHECK(round_bf16(1.0f + std::ldexp(1.0f, -8)) == 1.0f);
  // 1 + 3*2^-8 is halfway between 1+2^-7 (odd) and 1+2^-6 (even): goes up.
  CHECK(round_bf16(1.0f + 3 * std::ldexp(1.0f, -8)) == 1.0f + std::ldexp(1.0f, -6));
  CHECK(f32_to_bf16(-2.0f) == 0xc000);
  CHECK(std::isnan(bf16_to_f32(f32_to_bf16(std::numeric_limits<float>::quiet_NaN()))));
  CHECK(bf16_to_f32(f32_to_bf16(std::numeric_limits<float>::infinity())) == std::numeric_limits<float>::infinity());
}

TEST_CASE("f16 conversion matches IEEE binary16", "[core]") {
  CHECK(f32_to_f16(1.0f) == 0x3c00);
  CHECK(f32_to_f16(-2.0f) == 0xc000);
  CHECK(f32_to_f16(65504.0f) == 0x7bff);
  CHECK(f32_to_f16(65520.0f) == 0x7c00);              // rounds to inf
  CHECK(f32_to_f16(std::ldexp(1.0f, -24)) == 0x0001);  // smallest subnormal
  CHECK(f32_to_f16(std::ldexp(1.0f, -25)) == 0x0000);  // tie to even: 0
  CHECK(f32_to_f16(std::ldexp(3.0f, -26)) == 0x0001);  // 0.75 ulp rounds up
  CHECK(f32_to_f16(1.0f + std::ldexp(1.0f, -11)) == 0x3c00);      // tie to even
  CHECK(f32_to_f16(1.0f + 3 * std::ldexp(1.0f, -11)) == 0x3c02);  // tie to even (up)
  // Round trip of every finite half value.
  for (uint32_t h = 0; h < 0x10000; ++h) {
    if (((h >> 10) & 0x1f) == 0x1f) continue;
    REQUIRE(f32_to_f16(f16_to_f32(uint16_t(h))) == h);
  }
  CHECK(f16_to_f32(0x0001) == std::ldexp(1.0f, -24));
}

TEST_CASE("parallel_for covers every index exactly once", "[core]") {
  ThreadPool pool(3);
  for (int64_t n : {0, 1, 2, 5, 1000}) {
    std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
    for (int rep = 0; rep < 3; ++rep)
      pool.parallel_for(n, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) hits[size_t(i)]++;
      });
    for (auto& h : hits) REQUIRE(h.load() == 3);
  }
}
