// The CPU kernel levels (core/cpu_features.h, src/formats/kernels*.cpp) against the plain loops:
// every level this CPU has must give the plain loops' matmul bit for bit in every format (the
// kernels reorder registers, never the arithmetic), a prompt's rows must equal the same tokens
// decoded one at a time, and the weight values a kernel multiplies must be exactly the format's
// dequantized values (one-hot activations read them back).
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "backend/cpu_attention.h"
#include "backend/cpu_backend.h"
#include "core/cpu_features.h"
#include "core/error.h"
#include "core/half.h"
#include "formats/format.h"
#include "formats/kernels.h"
#include "test_fixtures.h"

using namespace lowbit;
using lowbit::test::random_values;

namespace {

// The levels this CPU can run, plain first.
std::vector<CpuLevel> levels_here() {
  std::vector<CpuLevel> out;
  for (int l = 0; l <= int(detected_cpu_level()); ++l) out.push_back(CpuLevel(l));
  return out;
}

// Caps the kernel level for one scope.
struct LevelCap {
  explicit LevelCap(CpuLevel level) { set_cpu_level_limit(level); }
  ~LevelCap() { set_cpu_level_limit(CpuLevel::avx512_vnni); }
  LevelCap(const LevelCap&) = delete;
  LevelCap& operator=(const LevelCap&) = delete;
};

// Index of the first element whose bits differ (two NaNs count as equal: which NaN payload an
// operation propagates is not part of any format), or -1.
int64_t first_bit_difference(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return 0;
  for (size_t i = 0; i < a.size(); ++i)
    if (f32_to_bits(a[i]) != f32_to_bits(b[i]) && !(std::isnan(a[i]) && std::isnan(b[i]))) return int64_t(i);
  return -1;
}

std::vector<float> matmul_at(CpuLevel level, const QuantizedTensor& q, const std::vector<float>& x, int64_t n,
                             ThreadPool& pool, const float* bias = nullptr) {
  LevelCap cap(level);
  std::vector<float> y(size_t(n * q.rows), -12345.0f);
  matmul(q, x.data(), n, y.data(), pool, bias);
  return y;
}

QuantOptions options_for(int block) {
  QuantOptions opts;
  opts.block_size = block;
  opts.w4_group = block;
  return opts;
}

}  // namespace

TEST_CASE("kernel levels: detection, names and caps", "[kernels]") {
  const CpuFeatures& f = cpu_features();
  const CpuLevel detected = detected_cpu_level();
  if (detected >= CpuLevel::avx2) CHECK((f.avx2 && f.f16c));
  if (detected >= CpuLevel::avx512) CHECK((f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq));
  if (detected >= CpuLevel::avx512_vnni) CHECK(f.avx512vnni);
  if (detected < CpuLevel::avx512_vnni)
    WARN("this CPU has kernel level " << cpu_level_name(detected) << ": the levels above it are not tested here");
  for (CpuLevel l : {CpuLevel::plain, CpuLevel::avx2, CpuLevel::avx512, CpuLevel::avx512_vnni})
    CHECK(parse_cpu_level(cpu_level_name(l)) == l);
  CHECK_THROWS_AS(parse_cpu_level("sse9"), UsageError);
  try {
    parse_cpu_level("avx1024");
  } catch (const UsageError& e) {
    CHECK(std::string(e.what()).find("avx512-vnni") != std::string::npos);
  }
  {
    LevelCap cap(CpuLevel::plain);
    CHECK(cpu_level() == CpuLevel::plain);
  }
  CHECK(cpu_level() == detected);  // LOWBIT_CPU_KERNELS is not set under meson test
  {
    LevelCap cap(CpuLevel::avx2);
    CHECK(cpu_level() == std::min(detected, CpuLevel::avx2));
  }
  CHECK(cpu_kernel_summary().find(std::string(cpu_level_name(detected))) == 0);
}

// Shapes: blocks that start at row starts or straddle them, column counts with 8- and 1-column
// tails, rows that fill no whole panel, more column blocks than one; tokens: the one-token GEMV,
// partial and whole GEMM tiles of 6, several tiles.
TEST_CASE("every kernel level gives the plain loops' matmul bit for bit", "[kernels]") {
  ThreadPool pool(2);
  const std::vector<CpuLevel> levels = levels_here();
  for (auto [rows, cols, block] : {std::tuple{37, 1088, 64}, std::tuple{70, 600, 40}, std::tuple{9, 172, 64},
                                   std::tuple{64, 2048, 128}, std::tuple{5, 96, 32}, std::tuple{3, 13, 2}}) {
    const auto w = random_values(size_t(rows * cols), 41, 0.05f);
    for (Format f : all_formats()) {
      const QuantizedTensor q = quantize(f, w.data(), rows, cols, options_for(block));
      for (int64_t n : {1, 2, 6, 7, 13}) {
        INFO(format_name(f) << " " << rows << "x" << cols << " block " << block << " tokens " << n);
        auto x = random_values(size_t(n * cols), 42);
        x[0] = 9.0f;          // an LLM.int8 outlier column
        x[size_t(cols / 2)] = -0.0f;
        x[size_t(n * cols - 1)] = 3e-39f;  // a subnormal
        // Every other token count with a bias: each format adds it at its own rounding point
        // (LLM.int8 before the fp16 output rounding), on every level.
        const std::vector<float> bias_values = random_values(size_t(rows), 43);
        const float* bias = n % 2 == 0 ? bias_values.data() : nullptr;
        const std::vector<float> plain = matmul_at(CpuLevel::plain, q, x, n, pool, bias);
        if (bias != nullptr) CHECK(first_bit_difference(plain, matmul_at(CpuLevel::plain, q, x, n, pool)) != -1);
        for (CpuLevel level : levels) {
          INFO("level " << cpu_level_name(level) << " bias " << (bias != nullptr));
          const std::vector<float> fast = matmul_at(level, q, x, n, pool, bias);
          REQUIRE(first_bit_difference(fast, plain) == -1);
          // The prompt's rows are the tokens decoded alone (LLM.int8 picks its outlier columns
          // from the whole batch, as bitsandbytes does, so it is the one exception).
          if (f == Format::INT8 || n == 1) continue;
          for (int64_t t : {int64_t(0), n - 1}) {
            const std::vector<float> one(x.begin() + t * cols, x.begin() + (t + 1) * cols);
            const std::vector<float> alone = matmul_at(level, q, one, 1, pool, bias);
            const std::vector<float> row(fast.begin() + t * rows, fast.begin() + (t + 1) * rows);
            REQUIRE(first_bit_difference(row, alone) == -1);
          }
        }
      }
    }
  }
}

// The AVX-512 kernels themselves (not only through matmul's dispatch) on shapes they accept.
TEST_CASE("the AVX-512 kernels accept the usual shapes and match the plain loops", "[kernels]") {
  if (detected_cpu_level() < CpuLevel::avx512) {
    WARN("no AVX-512 on this CPU: its kernels are not tested here");
    return;
  }
  ThreadPool pool(2);
  const int64_t rows = 45, cols = 1024;
  const auto w = random_values(size_t(rows * cols), 51, 0.05f);
  for (int64_t n : {1, 9}) {
    const auto x = random_values(size_t(n * cols), 52);
    std::vector<float> x16(x.size());
    for (size_t i = 0; i < x.size(); ++i) x16[i] = round_f16(x[i]);
    for (Format f : {Format::F32, Format::BF16, Format::NF4, Format::FP4, Format::NF4_DQ, Format::FP4_DQ, Format::W4A16}) {
      INFO(format_name(f) << " tokens " << n);
      const QuantizedTensor q = quantize(f, w.data(), rows, cols, {});
      std::vector<float> y(size_t(n * rows));
      bool taken = false;
      switch (f) {
        case Format::F32: taken = formats::avx512::matmul_f32(q, x.data(), n, y.data(), pool); break;
        case Format::BF16: taken = formats::avx512::matmul_bf16(q, x.data(), n, y.data(), pool); break;
        case Format::W4A16: taken = formats::avx512::matmul_w4a16(q, x16.data(), n, y.data(), pool); break;
        default: taken = formats::avx512::matmul_four_bit(q, x.data(), n, y.data(), pool); break;
      }
      REQUIRE(taken);
      REQUIRE(first_bit_difference(y, matmul_at(CpuLevel::plain, q, x, n, pool)) == -1);
    }
  }
  // Shapes outside what they handle are refused, so matmul falls back to the plain loops.
  QuantOptions odd_block;
  odd_block.block_size = 48;
  std::vector<float> y(static_cast<size_t>(rows));
  const auto x = random_values(size_t(cols), 53);
  CHECK_FALSE(formats::avx512::matmul_four_bit(quantize(Format::NF4, w.data(), rows, cols, odd_block), x.data(), 1,
                                               y.data(), pool));
  CHECK_FALSE(formats::avx512::matmul_four_bit(quantize(Format::NF4, w.data(), 1, rows * cols / 1000, {}), x.data(), 1,
                                               y.data(), pool));
}

// With token t's activations one-hot at column j_t, y[t, r] is W[r, j_t] exactly whatever the
// summation order: the kernels multiply the format's own dequantized values.
TEST_CASE("the kernels multiply exactly the dequantized weights", "[kernels]") {
  ThreadPool pool(2);
  const int64_t rows = 40, cols = 512;
  const auto w = random_values(size_t(rows * cols), 61, 0.05f);
  for (Format f : all_formats()) {
    // The formats that multiply x as given or rounded to fp16 (1.0 and 0.0 are exact in fp16);
    // the others quantize the activations.
    const Activations a = format_info(f).activations;
    if (a != Activations::fp32 && a != Activations::fp16) continue;
    const QuantizedTensor q = quantize(f, w.data(), rows, cols, {});
    std::vector<float> dq(w.size());
    dequantize(q, dq.data());
    for (int64_t n : {1, 8}) {
      std::vector<float> x(size_t(n * cols), 0.0f);
      std::vector<int64_t> hot(static_cast<size_t>(n));
      for (int64_t t = 0; t < n; ++t) {
        hot[size_t(t)] = (37 * t + 5) % cols;
        x[size_t(t * cols + hot[size_t(t)])] = 1.0f;
      }
      for (CpuLevel level : levels_here()) {
        INFO(format_name(f) << " tokens " << n << " level " << cpu_level_name(level));
        const std::vector<float> y = matmul_at(level, q, x, n, pool);
        for (int64_t t = 0; t < n; ++t)
          for (int64_t r = 0; r < rows; ++r) REQUIRE(y[size_t(t * rows + r)] == dq[size_t(r * cols + hot[size_t(t)])]);
      }
    }
  }
}

TEST_CASE("the vector fp16 rounding is round_f16 bit for bit", "[kernels]") {
  if (detected_cpu_level() < CpuLevel::avx512) {
    WARN("no AVX-512 on this CPU: its fp16 rounding is not tested here");
    return;
  }
  std::vector<float> x = {0.0f, -0.0f, 1.0f, -1.0f, 65504.0f, 65519.99f, 65520.0f, -65520.0f, 1e10f, -1e10f,
                          std::ldexp(1.0f, -24), std::ldexp(1.0f, -25), std::ldexp(1.5f, -25), std::ldexp(1.0f, -26),
                          std::ldexp(1.0f, -14), std::ldexp(1023.5f, -24), 3e-39f, -3e-39f, 1.00048828125f,
                          1.000732421875f, INFINITY, -INFINITY, bits_to_f32(0x7fc00001u), bits_to_f32(0xffa00000u),
                          bits_to_f32(0x7f800001u)};
  std::mt19937 rng(7);
  for (int i = 0; i < 200000; ++i) x.push_back(bits_to_f32(uint32_t(rng())));
  std::vector<float> fast(x.size()), plain(x.size());
  formats::avx512::round_f16(x.data(), int64_t(x.size()), fast.data());
  for (size_t i = 0; i < x.size(); ++i) plain[i] = round_f16(x[i]);
  for (size_t i = 0; i < x.size(); ++i) {
    INFO("input bits " << std::hex << f32_to_bits(x[i]));
    REQUIRE(f32_to_bits(fast[i]) == f32_to_bits(plain[i]));
  }
}

TEST_CASE("int8 dot products are the plain loop's at every level", "[kernels]") {
  std::mt19937 rng(11);
  for (int64_t cols : {1, 3, 4, 31, 32, 33, 63, 64, 65, 100, 1030, 4096}) {
    for (int64_t n : {1, 2, 12, 13, 25}) {
      const int64_t rows = 37;
      std::vector<int8_t> a(size_t(n * cols)), w(size_t(rows * cols));
      for (auto& v : a) v = int8_t(int(rng() % 256) - 128);
      for (auto& v : w) v = int8_t(int(rng() % 256) - 128);
      a[0] = -128;
      w[0] = -128;  // the extremes multiply to the largest product
      w[size_t(rows * cols - 1)] = 127;
      std::vector<int32_t> plain(size_t(n * rows), 0);
      for (int64_t t = 0; t < n; ++t)
        for (int64_t r = 0; r < rows; ++r) {
          int32_t s = 0;
          for (int64_t c = 0; c < cols; ++c) s += int32_t(a[size_t(t * cols + c)]) * int32_t(w[size_t(r * cols + c)]);
          plain[size_t(t * rows + r)] = s;
        }
      for (CpuLevel level : levels_here()) {
        INFO("cols " << cols << " tokens " << n << " level " << cpu_level_name(level));
        const formats::Int8Activations act(a.data(), n, cols, level);
        std::vector<int32_t> acc(size_t(n * rows), -7);
        // Rows [3, 35): a range that starts and ends inside a panel; rows outside stay untouched.
        formats::int8_dot_rows(act, w.data(), 3, 35, acc.data(), rows);
        for (int64_t t = 0; t < n; ++t)
          for (int64_t r = 0; r < rows; ++r)
            REQUIRE(acc[size_t(t * rows + r)] == (r >= 3 && r < 35 ? plain[size_t(t * rows + r)] : -7));
      }
    }
  }
  // All -128: the largest sums; and a row wider than the VNNI kernel takes (its unsigned products
  // could overflow int32), which the level below handles.
  for (int64_t cols : {int64_t(4096), int64_t(70001)}) {
    std::vector<int8_t> a(size_t(cols), -128), w(size_t(2 * cols), -128);
    for (CpuLevel level : levels_here()) {
      const formats::Int8Activations act(a.data(), 1, cols, level);
      std::vector<int32_t> acc(2);
      formats::int8_dot_rows(act, w.data(), 0, 2, acc.data(), 2);
      CHECK(acc[0] == int32_t(16384 * cols));
      CHECK(acc[1] == int32_t(16384 * cols));
    }
  }
}

TEST_CASE("the AVX-512 attention gives the plain loops' outputs bit for bit", "[kernels]") {
  if (detected_cpu_level() < CpuLevel::avx512) {
    WARN("no AVX-512 on this CPU: its attention kernel is not tested here");
    return;
  }
  for (int head_dim : {8, 64, 100, 128, 300}) {
    const int n_kv_heads = 2, max_context = 211;
    const cpu_attention::KvLayout layout{2, 3, max_context, n_kv_heads * head_dim};
    auto keys = random_values(layout.key_floats(), 71);
    const auto values = random_values(layout.value_floats(), 72);
    keys[layout.key_index(1, 2, 5, head_dim)] = 40.0f;  // one dominant score
    const auto q = random_values(size_t(head_dim), 73);
    std::vector<float> scores(size_t(layout.blocks() * cpu_attention::kKeyBlock));
    for (int pos : {0, 1, 15, 16, 17, 100, max_context - 1}) {
      INFO("head_dim " << head_dim << " pos " << pos);
      std::vector<float> fast(size_t(head_dim), -1.0f), plain(size_t(head_dim), -2.0f);
      const float scale = 1.0f / std::sqrt(float(head_dim));
      cpu_attention::AttentionJob job{1, 2, pos, 1, head_dim, scale, q.data(), plain.data()};
      cpu_attention::attend_plain(layout, keys.data(), values.data(), job, scores.data());
      job.y = fast.data();
      cpu_attention::attend_avx512(layout, keys.data(), values.data(), job, scores.data());
      REQUIRE(first_bit_difference(fast, plain) == -1);
      // Several heads in one call (different kv heads and positions) give each head's own result.
      const int count = cpu_attention::jobs_per_call(head_dim);
      const int64_t stride = layout.blocks() * cpu_attention::kKeyBlock;
      std::vector<float> many_scores(size_t(stride * count));
      std::vector<std::vector<float>> many(static_cast<size_t>(count), std::vector<float>(size_t(head_dim)));
      std::vector<cpu_attention::AttentionJob> jobs;
      const auto queries = random_values(size_t(count * head_dim), 74);
      for (int k = 0; k < count; ++k)
        jobs.push_back({1, 2, std::max(0, pos - 3 * k), k % n_kv_heads, head_dim, scale,
                        queries.data() + k * head_dim, many[size_t(k)].data()});
      cpu_attention::attend_avx512(layout, keys.data(), values.data(), jobs.data(), count, many_scores.data(), stride);
      for (int k = 0; k < count; ++k) {
        std::vector<float> alone(static_cast<size_t>(head_dim));
        cpu_attention::AttentionJob one = jobs[size_t(k)];
        one.y = alone.data();
        cpu_attention::attend_plain(layout, keys.data(), values.data(), one, scores.data());
        REQUIRE(first_bit_difference(many[size_t(k)], alone) == -1);
      }
      // The output is a convex combination of the value rows.
      for (int i = 0; i < head_dim; ++i) {
        float lo = INFINITY, hi = -INFINITY;
        for (int j = 0; j <= pos; ++j) {
          const float v = values[layout.value_row(1, 2, j) + size_t(head_dim + i)];
          lo = std::min(lo, v);
          hi = std::max(hi, v);
        }
        REQUIRE(plain[size_t(i)] >= lo - 1e-5f);
        REQUIRE(plain[size_t(i)] <= hi + 1e-5f);
      }
    }
  }
}

// The int8 formats' activation quantizers in AVX-512 against their plain definitions: ties of
// rint, saturation, the outlier threshold itself, NaN (skipped by the absmax, 0 in LLM.int8's CA).
TEST_CASE("the AVX-512 int8 activation quantizers are the plain loops'", "[kernels]") {
  if (detected_cpu_level() < CpuLevel::avx512) {
    WARN("no AVX-512 on this CPU: its activation quantizers are not tested here");
    return;
  }
  auto x = random_values(1000, 81, 2.0f);
  const float specials[] = {0.5f, 1.5f, 2.5f, -0.5f, -2.5f, 6.0f, -6.0f, 5.9999995f, 300.0f, -300.0f, 0.0f, -0.0f};
  for (size_t i = 0; i < std::size(specials); ++i) x[3 * i + 1] = specials[i];
  std::vector<float> with_nan = x;
  with_nan[17] = NAN;
  with_nan[999] = NAN;  // in the scalar tail
  for (float threshold : {0.0f, 6.0f}) {
    for (const auto* v : {&x, &with_nan}) {
      float plain = 0.0f;
      for (float e : *v)
        if (!(threshold > 0.0f && std::fabs(e) >= threshold)) plain = std::max(plain, std::fabs(e));
      CHECK(f32_to_bits(formats::avx512::absmax_below(v->data(), int64_t(v->size()), threshold)) == f32_to_bits(plain));
    }
  }
  std::vector<uint8_t> zero(x.size(), 0);
  zero[5] = zero[640] = 1;
  for (float scale : {1.0f, 0.0123f, 1.0f / 127.0f}) {
    std::vector<int8_t> fast(x.size()), plain(x.size());
    formats::avx512::divide_round_int8(x.data(), int64_t(x.size()), scale, fast.data());
    for (size_t i = 0; i < x.size(); ++i) plain[i] = int8_t(std::clamp(std::nearbyint(x[i] / scale), -128.0f, 127.0f));
    CHECK(fast == plain);
    formats::avx512::scale_round_int8(with_nan.data(), int64_t(x.size()), 1.0f / scale, zero.data(), fast.data());
    for (size_t i = 0; i < x.size(); ++i) {
      const float p = with_nan[i] * (1.0f / scale);
      plain[i] = (zero[i] || std::isnan(p)) ? int8_t(0) : int8_t(std::clamp(std::nearbyint(p), -128.0f, 127.0f));
    }
    CHECK(fast == plain);
  }
}

// The opt-in bf16-activation kernel is not the oracle: it rounds the activations to bf16 (unit
// roundoff 2^-8). Its error against the plain loops is bounded element by element by
// (2^-8 + 2 * gamma_cols) * sum_c |x_c w_c| (the rounding of x, plus both fp32 summations;
// gamma_n = n u / (1 - n u), u = 2^-24), and its normalized error is measured.
TEST_CASE("the bf16-activation kernel stays within its stated bound of the plain loops", "[kernels]") {
  if (detected_cpu_level() < CpuLevel::avx512 || !cpu_features().avx512bf16) {
    WARN("no AVX512-BF16 on this CPU: the bf16-activation kernel is not tested here");
    return;
  }
  ThreadPool pool(2);
  for (auto [rows, cols] : {std::pair<int64_t, int64_t>{45, 1024}, {70, 611}, {33, 4096}}) {
    const auto w = random_values(size_t(rows * cols), 91, 0.05f);
    const QuantizedTensor q = quantize(Format::BF16, w.data(), rows, cols, {});
    std::vector<float> dq(w.size());
    dequantize(q, dq.data());
    for (int64_t n : {2, 13, 40}) {
      INFO(rows << "x" << cols << " tokens " << n);
      const auto x = random_values(size_t(n * cols), 92);
      std::vector<float> fast(size_t(n * rows));
      REQUIRE(formats::avx512_bf16::matmul(q, x.data(), n, fast.data(), pool));
      const std::vector<float> plain = matmul_at(CpuLevel::plain, q, x, n, pool);
      const double u = std::ldexp(1.0, -24), gamma = double(cols) * u / (1.0 - double(cols) * u);
      double err = 0, ref = 0;
      for (int64_t t = 0; t < n; ++t)
        for (int64_t r = 0; r < rows; ++r) {
          double magnitude = 0;
          for (int64_t c = 0; c < cols; ++c)
            magnitude += std::fabs(double(x[size_t(t * cols + c)]) * dq[size_t(r * cols + c)]);
          const double d = double(fast[size_t(t * rows + r)]) - plain[size_t(t * rows + r)];
          REQUIRE(std::fabs(d) <= (std::ldexp(1.0, -8) + 2 * gamma) * magnitude);
          err += d * d;
          ref += double(plain[size_t(t * rows + r)]) * plain[size_t(t * rows + r)];
        }
      // From bf16 rounding of the activations: measured 2.3e-6 .. 3.2e-6 on these shapes.
      INFO("nmse " << err / ref);
      CHECK(err / ref < 1e-5);
    }
  }
  const QuantizedTensor nf4 = quantize(Format::NF4, random_values(64, 93).data(), 1, 64, {});
  std::vector<float> y(2);
  CHECK_FALSE(formats::avx512_bf16::matmul(nf4, random_values(128, 94).data(), 2, y.data(), pool));
}

// CpuBackend's --cpu-bf16-activations switch: several tokens of a bf16 weight take the
// bf16-activation kernel; one token, and every other format, stay the exact kernels.
TEST_CASE("CpuBackend uses the bf16-activation kernel only when asked, only for several tokens", "[kernels]") {
  if (detected_cpu_level() < CpuLevel::avx512 || !cpu_features().avx512bf16) {
    CHECK_THROWS_AS(CpuBackend(1, 0, true), UsageError);
    return;
  }
  const int64_t rows = 40, cols = 256;
  const auto w = random_values(size_t(rows * cols), 95, 0.05f);
  for (Format f : {Format::BF16, Format::NF4}) {
    for (int64_t n : {1, 5}) {
      INFO(format_name(f) << " tokens " << n);
      const auto x = random_values(size_t(n * cols), 96);
      std::vector<float> y[2];
      for (int fast = 0; fast < 2; ++fast) {
        CpuBackend be(2, 0, fast == 1);
        CHECK((be.description().find("bf16 activations") != std::string::npos) == (fast == 1));
        // The activations enter through an f32 embedding table whose rows are x.
        auto table = be.upload_linear(quantize(Format::F32, x.data(), n, cols, {}), {});
        auto weight = be.upload_linear(quantize(f, w.data(), rows, cols, {}), {});
        auto xb = be.alloc(size_t(n * cols), "x"), yb = be.alloc(size_t(n * rows), "y");
        TokenBatch batch;
        for (int t = 0; t < n; ++t) {
          batch.tokens.push_back(t);
          batch.positions.push_back(t);
          batch.slots.push_back(0);
        }
        be.set_batch(batch);
        be.embed(*table, *xb);
        be.matmul(*weight, *xb, *yb);
        y[fast].resize(size_t(n * rows));
        be.download(*yb, 0, y[fast].size(), y[fast].data());
      }
      if (f == Format::BF16 && n > 1) {
        CHECK(first_bit_difference(y[1], y[0]) != -1);  // a different kernel ran
        CHECK(lowbit::test::nmse(y[1], y[0]) < 1e-5);
      } else {
        CHECK(first_bit_difference(y[1], y[0]) == -1);
      }
    }
  }
}
