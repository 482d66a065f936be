// Every op of the CUDA backend against the CPU backend (the oracle) over a sweep of shapes,
// compared by normalized mean squared error as llama.cpp's test-backend-ops does:
//   nmse = sum((gpu - cpu)^2) / sum(cpu^2)
// fp32 paths must stay below 1e-6; bf16 weight paths below 1e-4 (CPU computed on the same
// bf16-rounded weights, so only the GPU's arithmetic is measured, never quantization error).
// Plus: GPU sampling against the CPU sampler (same ids for the same (seed, step), and draw
// histograms against sampling_distribution by chi-square), the out-of-memory error, formats
// without a kernel, and CUDA graph capture/replay of a decode-like step.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstring>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "backend/cpu_backend.h"
#include "backend/cuda_backend.h"
#include "core/error.h"
#include "formats/format.h"
#include "kernels/gemv_fp8.cuh"
#include "lowbit_config.h"
#include "sampler/sampler.h"
#include "test_fixtures.h"
#if LOWBIT_EMULATED_GPU
#include "lowbit_emu/control.h"
#endif

using namespace lowbit;

using lowbit::test::nmse;
using lowbit::test::random_values;

namespace {

constexpr double kFp32Nmse = 1e-6;
constexpr double kBf16Nmse = 1e-4;


TokenBatch batch_of(std::vector<int32_t> positions, std::vector<int32_t> slots) {
  TokenBatch b;
  b.tokens.assign(positions.size(), 0);
  b.positions = std::move(positions);
  b.slots = std::move(slots);
  return b;
}

TokenBatch prompt_batch(int n, int first_pos = 0, int slot = 0) {
  std::vector<int32_t> pos(static_cast<size_t>(n)), slots(static_cast<size_t>(n), slot);
  std::iota(pos.begin(), pos.end(), first_pos);
  return batch_of(pos, slots);
}

// The CPU buffer has no upload: a row gather from an F32 table is an exact copy, so an
// embedding lookup of rows 0..n-1 writes `values` into the buffer. The batch is restored after.
void fill(CpuBackend& cpu, DeviceBuffer& buf, const std::vector<float>& values, int cols, const TokenBatch& restore) {
  const int rows = int(values.size() / size_t(cols));
  auto table = cpu.upload_linear(quantize(Format::F32, values.data(), rows, cols, QuantOptions{}), {});
  TokenBatch b = prompt_batch(rows);
  std::iota(b.tokens.begin(), b.tokens.end(), 0);
  cpu.set_batch(b);
  cpu.embed(*table, buf);
  cpu.set_batch(restore);
}

// The pair of backends every test compares, with same-shaped buffers on both.
struct Backends {
  CpuBackend cpu{0};
  CudaBackend gpu{CudaContextOptions{}};

  struct Buffer {
    std::unique_ptr<DeviceBuffer> cpu, gpu;
  };
  Buffer alloc(size_t n) { return {cpu.alloc(n, "test buffer"), gpu.alloc(n, "test buffer")}; }
  // Allocates rows x cols, fills both sides with `values`, leaves `batch` current.
  Buffer input(const std::vector<float>& values, int cols, const TokenBatch& batch) {
    Buffer b = alloc(values.size());
    fill(cpu, *b.cpu, values, cols, batch);
    gpu.upload(*b.gpu, 0, values.size(), values.data());
    gpu.set_batch(batch);
    return b;
  }
  void set_batch(const TokenBatch& b) {
    cpu.set_batch(b);
    gpu.set_batch(b);
  }
  std::vector<float> read_cpu(const DeviceBuffer& b, size_t n) {
    std::vector<float> v(n);
    cpu.download(b, 0, n, v.data());
    return v;
  }
  std::vector<float> read_gpu(const DeviceBuffer& b, size_t n) {
    std::vector<float> v(n);
    gpu.download(b, 0, n, v.data());
    return v;
  }
  double compare(const Buffer& b, size_t n) { return nmse(read_gpu(*b.gpu, n), read_cpu(*b.cpu, n)); }
};

std::vector<float> rope_frequencies(int head_dim, double base = 10000.0) {
  std::vector<float> f(size_t(head_dim / 2));
  for (int i = 0; i < head_dim / 2; ++i) f[size_t(i)] = float(1.0 / std::pow(base, 2.0 * i / head_dim));
  return f;
}

}  // namespace

TEST_CASE("embedding rows are gathered exactly from bf16 and fp32 tables", "[gpu]") {
  Backends be;
  for (Format f : {Format::F32, Format::BF16})
    for (int dim : {1, 7, 64, 4099}) {
      const int vocab = 37;
      auto table_values = random_values(size_t(vocab) * dim, 11u + unsigned(dim));
      auto q = quantize(f, table_values.data(), vocab, dim, QuantOptions{});
      auto cpu_table = be.cpu.upload_linear(q, {});
      auto gpu_table = be.gpu.upload_linear(q, {});
      TokenBatch b = prompt_batch(9);
      b.tokens = {0, 36, 5, 5, 17, 1, 35, 0, 20};
      be.set_batch(b);
      auto out = be.alloc(size_t(9) * dim);
      be.cpu.embed(*cpu_table, *out.cpu);
      be.gpu.embed(*gpu_table, *out.gpu);
      INFO("format " << format_name(f) << " dim " << dim);
      CHECK(be.read_gpu(*out.gpu, size_t(9) * dim) == be.read_cpu(*out.cpu, size_t(9) * dim));
    }
}

TEST_CASE("token ids outside the vocabulary are rejected", "[gpu]") {
  Backends be;
  auto values = random_values(4 * 8, 1);
  auto table = be.gpu.upload_linear(quantize(Format::F32, values.data(), 4, 8, QuantOptions{}), {});
  TokenBatch b = prompt_batch(1);
  b.tokens = {4};
  be.gpu.set_batch(b);
  auto out = be.gpu.alloc(8, "out");
  CHECK_THROWS_AS(be.gpu.embed(*table, *out), InputError);
}

TEST_CASE("RMSNorm and LayerNorm match the CPU, plain and fused with the residual add", "[gpu]") {
  Backends be;
  for (NormKind kind : {NormKind::RMSNorm, NormKind::LayerNorm})
    for (bool with_bias : {false, true})
      for (int dim : {1, 5, 64, 1000, 4096})
        for (int rows : {1, 3, 17}) {
          if (kind == NormKind::RMSNorm && with_bias) continue;
          INFO("kind " << int(kind) << " bias " << with_bias << " dim " << dim << " rows " << rows);
          const TokenBatch batch = prompt_batch(rows);
          const size_t n = size_t(rows) * dim;
          auto w = random_values(size_t(dim), 3u + unsigned(dim));
          auto b = with_bias ? random_values(size_t(dim), 4u + unsigned(dim)) : std::vector<float>{};
          auto cpu_norm = be.cpu.upload_norm(w, b);
          auto gpu_norm = be.gpu.upload_norm(w, b);
          // An offset mean makes LayerNorm's centering matter.
          auto xv = random_values(n, 5u + unsigned(dim) + unsigned(rows), 2.0f);
          for (auto& v : xv) v += 0.5f;
          auto x = be.input(xv, dim, batch);
          auto out = be.alloc(n);
          be.cpu.norm(*x.cpu, *cpu_norm, kind, 1e-5f, dim, *out.cpu);
          be.gpu.norm(*x.gpu, *gpu_norm, kind, 1e-5f, dim, *out.gpu);
          CHECK(be.compare(out, n) < kFp32Nmse);
          CHECK(be.compare(x, n) == 0.0);  // the input is untouched

          auto delta = be.input(random_values(n, 6u + unsigned(dim)), dim, batch);
          be.cpu.add_norm(*x.cpu, *delta.cpu, *cpu_norm, kind, 1e-6f, dim, *out.cpu);
          be.gpu.add_norm(*x.gpu, *delta.gpu, *gpu_norm, kind, 1e-6f, dim, *out.gpu);
          CHECK(be.compare(x, n) < 1e-12);  // the residual after += (an exact fp32 add)
          CHECK(be.compare(out, n) < kFp32Nmse);
        }
}

TEST_CASE("add, gather_rows and the activations match the CPU", "[gpu]") {
  Backends be;
  for (int dim : {1, 11, 1000}) {
    for (int rows : {1, 4, 19}) {
      INFO("dim " << dim << " rows " << rows);
      const TokenBatch batch = prompt_batch(rows);
      const size_t n = size_t(rows) * dim;
      auto x = be.input(random_values(n, 21u + unsigned(n)), dim, batch);
      auto y = be.input(random_values(n, 22u + unsigned(n)), dim, batch);
      be.cpu.add(*x.cpu, *y.cpu, dim);
      be.gpu.add(*x.gpu, *y.gpu, dim);
      CHECK(be.compare(x, n) == 0.0);

      // SwiGLU reads rows of 2*dim (gate | up), GELU rows of dim.
      auto gu = be.input(random_values(2 * n, 23u + unsigned(n), 3.0f), 2 * dim, batch);
      auto act = be.alloc(n);
      be.cpu.activation(*gu.cpu, Activation::SwiGLU, dim, *act.cpu);
      be.gpu.activation(*gu.gpu, Activation::SwiGLU, dim, *act.gpu);
      CHECK(be.compare(act, n) < kFp32Nmse);
      be.cpu.activation(*gu.cpu, Activation::GELU, dim, *act.cpu);
      be.gpu.activation(*gu.gpu, Activation::GELU, dim, *act.gpu);
      CHECK(be.compare(act, n) < kFp32Nmse);
    }
    // Runs, repeats and reordering.
    const std::vector<int> rows = {3, 4, 5, 0, 7, 7, 2};
    const TokenBatch batch = prompt_batch(8);
    auto src = be.input(random_values(size_t(8) * dim, 24u + unsigned(dim)), dim, batch);
    auto dst = be.alloc(rows.size() * size_t(dim));
    be.cpu.gather_rows(*src.cpu, rows, dim, *dst.cpu);
    be.gpu.gather_rows(*src.gpu, rows, dim, *dst.gpu);
    CHECK(be.compare(dst, rows.size() * size_t(dim)) == 0.0);
  }
}

TEST_CASE("matmul (GEMV for <= 16 tokens, cuBLAS beyond) matches the CPU on the same weights", "[gpu]") {
  Backends be;
  struct Shape {
    int rows, cols;
  };
  const std::vector<Shape> shapes = {{1, 8}, {7, 3}, {64, 64}, {257, 1000}, {300, 1024}, {1000, 257}, {512, 4096}};
  for (Format f : {Format::F32, Format::BF16})
    for (const Shape& s : shapes)
      for (bool with_bias : {false, true}) {
        auto wv = random_values(size_t(s.rows) * s.cols, unsigned(s.rows * 31 + s.cols), 0.05f);
        auto q = quantize(f, wv.data(), s.rows, s.cols, QuantOptions{});
        auto bias = with_bias ? random_values(size_t(s.rows), unsigned(s.rows)) : std::vector<float>{};
        auto cpu_w = be.cpu.upload_linear(q, bias);
        auto gpu_w = be.gpu.upload_linear(q, bias);
        CHECK(gpu_w->bytes() == cpu_w->bytes());
        // Every GEMV instantiation (1, 2, 4, 8, 16 tokens, partial ones) and cuBLAS past 16; under
        // ASan one of each kind.
        const std::vector<int> token_counts = LOWBIT_TEST_SANITIZED ? std::vector<int>{1, 3, 16, 17, 33}
                                                                    : std::vector<int>{1, 2, 3, 5, 8, 13, 16, 17, 33, 64};
        for (int n : token_counts) {
          INFO("format " << format_name(f) << " " << s.rows << "x" << s.cols << " bias " << with_bias << " n " << n);
          const TokenBatch batch = prompt_batch(n);
          auto x = be.input(random_values(size_t(n) * s.cols, unsigned(n * 7 + s.cols)), s.cols, batch);
          auto y = be.alloc(size_t(n) * s.rows);
          be.cpu.matmul(*cpu_w, *x.cpu, *y.cpu);
          be.gpu.matmul(*gpu_w, *x.gpu, *y.gpu);
          CHECK(be.compare(y, size_t(n) * s.rows) < (f == Format::F32 ? kFp32Nmse : kBf16Nmse));
        }
      }
}

// W8A8-fp8 (kernels/gemv_fp8.cu) against the CPU backend: the per-token e4m3 activation quantizer
// byte for byte (hardware conversions on sm_89/sm_90, the emulated intrinsics of
// emulated_gpu/include/cuda_fp8.h here, the software ones on sm_80), then the GEMV (every
// instantiation, the 16-byte and the column-by-column paths, prompts in passes of 16) against the
// CPU's exact sums: only the GPU's fp32 accumulation differs.
TEST_CASE("W8A8-fp8 activation quantizer and GEMV match the CPU backend", "[gpu][fp8]") {
  Backends be;
  {
    // Tokens: normal values, all zeros, e4m3 midpoints (absmax 448 x 2^-3: the division is exact,
    // so these are ties), fp32 subnormals, an outlier, a NaN.
    const int cols = 96, n = 6;
    std::vector<float> x = random_values(size_t(n) * cols, 5);
    std::fill(x.begin() + cols, x.begin() + 2 * cols, 0.0f);
    for (int c = 0; c < cols; ++c) {
      const int b = (c * 37) % 126;
      const float lo = float(b < 8 ? b / 512.0 : std::ldexp(1.0 + (b % 8) / 8.0, b / 8 - 7));
      const float hi = float(b + 1 < 8 ? (b + 1) / 512.0 : std::ldexp(1.0 + ((b + 1) % 8) / 8.0, (b + 1) / 8 - 7));
      x[size_t(2 * cols + c)] = float((double(lo) + double(hi)) / 2 * 0.125 * (c % 2 ? -1 : 1));
      x[size_t(3 * cols + c)] = 1e-39f * float(c - 40);
    }
    x[size_t(2 * cols)] = 56.0f;  // 448 / 8: the token's absmax, scale 0.125
    x[size_t(4 * cols + 3)] = 300.0f;
    x[size_t(5 * cols + 9)] = NAN;
    const QuantizedTensor want = quantize(Format::W8A8_FP8, x.data(), n, cols, QuantOptions{});
    REQUIRE(want.scales[2] == 0.125f);
    float* dx = nullptr;
    float* dscale = nullptr;
    uint8_t* dq = nullptr;
    REQUIRE(cudaMalloc(reinterpret_cast<void**>(&dx), x.size() * sizeof(float)) == cudaSuccess);
    REQUIRE(cudaMalloc(reinterpret_cast<void**>(&dscale), size_t(n) * sizeof(float)) == cudaSuccess);
    REQUIRE(cudaMalloc(reinterpret_cast<void**>(&dq), x.size()) == cudaSuccess);
    REQUIRE(cudaMemcpy(dx, x.data(), x.size() * sizeof(float), cudaMemcpyHostToDevice) == cudaSuccess);
    REQUIRE(kernels::launch_fp8_quantize_activations(dx, n, cols, dq, dscale, nullptr) == cudaSuccess);
    std::vector<uint8_t> codes(x.size());
    std::vector<float> scales(static_cast<size_t>(n));
    REQUIRE(cudaMemcpy(codes.data(), dq, codes.size(), cudaMemcpyDeviceToHost) == cudaSuccess);
    REQUIRE(cudaMemcpy(scales.data(), dscale, scales.size() * sizeof(float), cudaMemcpyDeviceToHost) == cudaSuccess);
    cudaFree(dx);
    cudaFree(dscale);
    cudaFree(dq);
    for (int t = 0; t < n; ++t) {
      INFO("token " << t);
      if (t == 5) {  // NaN in the token: NaN scale, every code NaN (0x7f here; the CPU keeps signs)
        CHECK(std::isnan(scales[size_t(t)]));
        for (int c = 0; c < cols; ++c) CHECK((codes[size_t(t * cols + c)] & 0x7f) == 0x7f);
        continue;
      }
      CHECK(std::memcmp(&scales[size_t(t)], &want.scales[size_t(t)], sizeof(float)) == 0);
      for (int c = 0; c < cols; ++c) {
        INFO("column " << c << " x " << x[size_t(t * cols + c)]);
        CHECK(int(codes[size_t(t * cols + c)]) == int(want.codes[size_t(t * cols + c)]));
      }
    }
  }
  struct Shape {
    int rows, cols;
  };
  // 64x64 and 80x160 (rows and cols multiples of 16) take cuBLASLt's e4m3 GEMM for prompts on sm_89+
  // (the emulated device is an sm_90); the others the fp8 GEMV in passes.
  for (const Shape& s : {Shape{1, 8}, Shape{7, 3}, Shape{64, 64}, Shape{80, 160}, Shape{257, 1000}, Shape{45, 2048},
                         Shape{33, 250}})
    for (bool with_bias : {false, true}) {
      auto wv = random_values(size_t(s.rows) * s.cols, unsigned(s.rows * 29 + s.cols), 0.05f);
      auto q = quantize(Format::W8A8_FP8, wv.data(), s.rows, s.cols, QuantOptions{});
      auto bias = with_bias ? random_values(size_t(s.rows), unsigned(s.rows)) : std::vector<float>{};
      auto cpu_w = be.cpu.upload_linear(q, bias);
      auto gpu_w = be.gpu.upload_linear(q, bias);
      CHECK(gpu_w->bytes() == cpu_w->bytes());
      const std::vector<int> token_counts = LOWBIT_TEST_SANITIZED ? std::vector<int>{1, 3, 17}
                                                                  : std::vector<int>{1, 2, 3, 5, 8, 13, 16, 17, 33};
      for (int n : token_counts) {
        INFO(s.rows << "x" << s.cols << " bias " << with_bias << " n " << n);
        const TokenBatch batch = prompt_batch(n);
        auto x = be.input(random_values(size_t(n) * s.cols, unsigned(n * 5 + s.cols)), s.cols, batch);
        auto y = be.alloc(size_t(n) * s.rows);
        be.cpu.matmul(*cpu_w, *x.cpu, *y.cpu);
#if LOWBIT_EMULATED_GPU
        const uint64_t gemms_before = lowbit_emu::launch_counts()["cublasLtMatmul"];
#endif
        be.gpu.matmul(*gpu_w, *x.gpu, *y.gpu);
        // The same e4m3 operands and scales: fp32 summation order only (~3e-15 measured).
        CHECK(be.compare(y, size_t(n) * s.rows) < 1e-10);
#if LOWBIT_EMULATED_GPU
        const bool gemm_shape = s.rows % 16 == 0 && s.cols % 16 == 0 && n > 16;
        CHECK(lowbit_emu::launch_counts()["cublasLtMatmul"] == gemms_before + (gemm_shape ? 1 : 0));
        // The emulated GEMM sums exactly, as the CPU does: there the prompt path is bit for bit.
        if (gemm_shape) CHECK(be.read_gpu(*y.gpu, size_t(n) * s.rows) == be.read_cpu(*y.cpu, size_t(n) * s.rows));
#endif
      }
    }
}

TEST_CASE("rope rotates the q and k heads by each token's position", "[gpu]") {
  Backends be;
  for (int head_dim : {64, 80, 128})
    for (auto heads : {std::pair{4, 4}, std::pair{8, 2}, std::pair{6, 1}}) {
      AttentionShape s{heads.first, heads.second, head_dim};
      be.cpu.set_rope(rope_frequencies(head_dim));
      be.gpu.set_rope(rope_frequencies(head_dim));
      const TokenBatch batch = batch_of({0, 1, 17, 4095, 100000, 3}, {0, 0, 0, 0, 0, 0});
      const size_t n = size_t(batch.size()) * s.qkv_dim();
      auto qkv = be.input(random_values(n, unsigned(head_dim + heads.first)), s.qkv_dim(), batch);
      be.cpu.rope(*qkv.cpu, s);
      be.gpu.rope(*qkv.gpu, s);
      INFO("head_dim " << head_dim << " heads " << heads.first << "/" << heads.second);
      CHECK(be.compare(qkv, n) < kFp32Nmse);
    }
}

namespace {

// Runs one attention call on both backends for `batch` with fresh random qkv rows and checks
// the outputs (and so, through later calls, the cache contents).
void attention_step(Backends& be, KvCache& cpu_cache, KvCache& gpu_cache, int layer, const AttentionShape& s,
                    const TokenBatch& batch, uint32_t seed) {
  const size_t n_in = size_t(batch.size()) * s.qkv_dim(), n_out = size_t(batch.size()) * s.q_dim();
  auto qkv = be.input(random_values(n_in, seed), s.qkv_dim(), batch);
  auto out = be.alloc(n_out);
  be.cpu.attention(*qkv.cpu, cpu_cache, layer, s, *out.cpu);
  be.gpu.attention(*qkv.gpu, gpu_cache, layer, s, *out.gpu);
  CHECK(be.compare(out, n_out) < kFp32Nmse);
}

}  // namespace

TEST_CASE("attention: prefill and decode over the KV cache, MHA/GQA/MQA, head_dim 64/80/128", "[gpu]") {
  Backends be;
  struct Config {
    int n_heads, n_kv_heads, head_dim;
  };
  // GQA ratios 1, 3 (SmolLM2), 4 and 8, MQA with 8 and 16 q heads (two blocks of 8 per KV head);
  // head_dim 64 and 128 take the 16-byte path, 80 and 20 the general one; both cache types.
  const std::vector<Config> configs = {{4, 4, 64}, {8, 2, 80}, {8, 1, 128}, {16, 2, 128}, {4, 4, 128},
                                       {9, 3, 64}, {16, 1, 64}, {6, 2, 20}};
  for (const Config& c : configs) {
    for (KvDtype dtype : {KvDtype::f32, KvDtype::bf16}) {
      const AttentionShape s{c.n_heads, c.n_kv_heads, c.head_dim};
      const int max_context = 300, n_slots = 3, n_layers = 2;
      auto cpu_cache = be.cpu.alloc_kv_cache(n_layers, n_slots, max_context, s.kv_dim(), dtype);
      auto gpu_cache = be.gpu.alloc_kv_cache(n_layers, n_slots, max_context, s.kv_dim(), dtype);
      INFO("heads " << c.n_heads << "/" << c.n_kv_heads << " head_dim " << c.head_dim << " cache "
                    << kv_dtype_name(dtype));
      uint32_t seed = 1000;
      // Prompts of different lengths into three slots (layer 1: the layer offset is exercised),
      // one of them in two chunks and one a single token.
      for (auto [slot, first, len] : {std::tuple{0, 0, 200}, std::tuple{1, 0, 7}, std::tuple{1, 7, 33},
                                      std::tuple{2, 0, 1}}) {
        INFO("prefill slot " << slot << " positions " << first << ".." << first + len - 1);
        attention_step(be, *cpu_cache, *gpu_cache, 1, s, prompt_batch(len, first, slot), ++seed);
      }
      // Batched decode: one token per slot (the split-K path with several tokens).
      for (int step = 0; step < 3; ++step) {
        INFO("batched decode step " << step);
        attention_step(be, *cpu_cache, *gpu_cache, 1, s, batch_of({200 + step, 40 + step, 1 + step}, {0, 1, 2}),
                       ++seed);
      }
      // Single-token decode, up to the last position of the cache.
      for (int pos : {203, 204, max_context - 1}) {
        INFO("decode position " << pos);
        attention_step(be, *cpu_cache, *gpu_cache, 1, s, batch_of({pos}, {0}), ++seed);
      }
      // Unsorted positions in one slot take the prefill path too.
      attention_step(be, *cpu_cache, *gpu_cache, 0, s, batch_of({5, 2, 9, 0, 1}, {2, 2, 2, 2, 2}), ++seed);
    }
  }
}

// rope_attention: prompt chunks run rope, then attention; decode steps (one token per slot) are
// one fused kernel that rotates q and k, stores k and v and attends. Later steps read what the
// fused ones stored, so the cache contents are checked too.
TEST_CASE("rope_attention: the fused decode step equals the CPU's rope then attention", "[gpu]") {
  Backends be;
  struct Config {
    int n_heads, n_kv_heads, head_dim;
  };
  const std::vector<Config> configs = {{4, 4, 64}, {8, 2, 80}, {16, 1, 64}, {9, 3, 128}, {6, 2, 20}};
  for (const Config& c : configs)
    for (KvDtype dtype : {KvDtype::f32, KvDtype::bf16}) {
      const AttentionShape s{c.n_heads, c.n_kv_heads, c.head_dim};
      be.cpu.set_rope(rope_frequencies(c.head_dim));
      be.gpu.set_rope(rope_frequencies(c.head_dim));
      const int max_context = 160;
      auto cpu_cache = be.cpu.alloc_kv_cache(1, 3, max_context, s.kv_dim(), dtype);
      auto gpu_cache = be.gpu.alloc_kv_cache(1, 3, max_context, s.kv_dim(), dtype);
      INFO("heads " << c.n_heads << "/" << c.n_kv_heads << " head_dim " << c.head_dim << " cache "
                    << kv_dtype_name(dtype));
      uint32_t seed = 2000;
      auto step = [&](const TokenBatch& batch, bool fused_attention) {
        const size_t n_in = size_t(batch.size()) * s.qkv_dim(), n_out = size_t(batch.size()) * s.q_dim();
        auto qkv = be.input(random_values(n_in, ++seed), s.qkv_dim(), batch);
        auto out = be.alloc(n_out);
        be.cpu.rope_attention(*qkv.cpu, *cpu_cache, 0, s, *out.cpu);
        if (fused_attention) {
          be.gpu.rope_attention(*qkv.gpu, *gpu_cache, 0, s, *out.gpu);
        } else {
          be.gpu.rope(*qkv.gpu, s);
          be.gpu.attention(*qkv.gpu, *gpu_cache, 0, s, *out.gpu);
        }
        CHECK(be.compare(out, n_out) < kFp32Nmse);
      };
      step(prompt_batch(70, 0, 0), true);  // a prompt chunk: rope, then prefill attention
      step(prompt_batch(5, 0, 1), true);
      step(batch_of({0}, {2}), true);      // a one-token prompt is a decode step
      for (int i = 0; i < 3; ++i) {
        INFO("batched decode step " << i);
        step(batch_of({70 + i, 5 + i, 1 + i}, {0, 1, 2}), true);
      }
      step(batch_of({73}, {0}), true);
      step(batch_of({74}, {0}), false);  // reads every key the fused steps stored
      step(batch_of({max_context - 1}, {1}), true);
    }
}

TEST_CASE("attention over a long context (prefill in chunks, then decode)", "[gpu]") {
  Backends be;
  const AttentionShape s{4, 1, 64};  // kept small: the CPU oracle is quadratic
  // 4090 positions on a GPU. The emulated device switches threads at every shuffle of the
  // prefill kernel's inner loop, and the cost is quadratic in the context: it runs 1000, which
  // takes the same paths (two chunks of 512, then decode over all 32 splits); 500 under ASan. None
  // is a multiple of the 32-key tile, so the last prefill tile runs past the end of the cache
  // allocation: a missing key bound there is an out-of-bounds read that ASan reports.
  const int max_context = test::sized(4090, 1000, 500);
  auto cpu_cache = be.cpu.alloc_kv_cache(1, 1, max_context, s.kv_dim(), KvDtype::bf16);
  auto gpu_cache = be.gpu.alloc_kv_cache(1, 1, max_context, s.kv_dim(), KvDtype::bf16);
  uint32_t seed = 7;
  for (int first = 0; first < max_context - 1; first += 512) {
    const int len = std::min(512, max_context - 1 - first);
    INFO("chunk at " << first);
    attention_step(be, *cpu_cache, *gpu_cache, 0, s, prompt_batch(len, first), ++seed);
  }
  attention_step(be, *cpu_cache, *gpu_cache, 0, s, batch_of({max_context - 1}, {0}), ++seed);
}

TEST_CASE("positions outside the KV cache are rejected", "[gpu]") {
  Backends be;
  const AttentionShape s{2, 2, 64};
  auto cache = be.gpu.alloc_kv_cache(1, 1, 8, s.kv_dim());
  const TokenBatch b = batch_of({8}, {0});
  auto qkv = be.gpu.alloc(size_t(s.qkv_dim()), "qkv");
  auto out = be.gpu.alloc(size_t(s.q_dim()), "out");
  be.gpu.set_batch(b);
  CHECK_THROWS_AS(be.gpu.attention(*qkv, *cache, 0, s, *out), InputError);
}

TEST_CASE("out of memory names the allocation and the sizes", "[gpu]") {
  CudaContextOptions opts;
  opts.max_bytes = size_t(64) << 20;  // the cuBLAS workspace takes 32 MiB of it
  CudaBackend gpu(opts);
  CHECK_THROWS_WITH(gpu.alloc(size_t(16) << 20, "the residual stream"),
                    Catch::Contains("out of GPU memory allocating the residual stream: need 64.0 MiB") &&
                        Catch::Contains("MiB free"));
  CHECK_NOTHROW(gpu.alloc(size_t(1) << 20, "a small buffer"));
  // A real device allocation that cannot fit (1 PiB of floats).
  CudaBackend uncapped{CudaContextOptions{}};
  CHECK_THROWS_WITH(uncapped.alloc(size_t(1) << 48, "a huge buffer"),
                    Catch::Contains("out of GPU memory allocating a huge buffer"));
  // The device still works afterwards.
  auto ok = uncapped.alloc(16, "after the failure");
  std::vector<float> v(16, 1.0f), back(16);
  uncapped.upload(*ok, 0, 16, v.data());
  uncapped.download(*ok, 0, 16, back.data());
  CHECK(back == v);
}

namespace {

std::vector<float> sampler_logits(int vocab, uint32_t seed, float scale) {
  auto v = random_values(size_t(vocab), seed, scale);
  return v;
}

double chi_square(const std::vector<int>& counts, const std::vector<double>& probs, int draws, int* zero_hits) {
  double statistic = 0.0;
  *zero_hits = 0;
  for (size_t i = 0; i < counts.size(); ++i) {
    if (probs[i] == 0.0) {
      *zero_hits += counts[i];
      continue;
    }
    const double expected = probs[i] * draws;
    statistic += (counts[i] - expected) * (counts[i] - expected) / expected;
  }
  return statistic;
}

}  // namespace

TEST_CASE("GPU sampling draws the CPU sampler's token for the same (seed, step)", "[gpu]") {
  Backends be;
  std::vector<SamplingParams> cases;
  auto add = [&](float t, int k, float p, float mp, float rep) {
    SamplingParams s;
    s.temperature = t;
    s.top_k = k;
    s.top_p = p;
    s.min_p = mp;
    s.repetition_penalty = rep;
    s.seed = 1234 + cases.size();
    cases.push_back(s);
  };
  add(0.0f, 0, 1.0f, 0.0f, 1.0f);   // greedy
  add(0.0f, 0, 1.0f, 0.0f, 1.3f);   // greedy with a penalty
  add(1.0f, 0, 1.0f, 0.0f, 1.0f);   // plain softmax
  add(0.7f, 40, 1.0f, 0.0f, 1.0f);  // top-k
  add(1.0f, 0, 0.9f, 0.0f, 1.0f);   // top-p over the whole vocabulary
  add(0.8f, 50, 0.95f, 0.05f, 1.2f);  // everything
  add(1.3f, 0, 1.0f, 0.1f, 1.0f);   // min-p
  const std::vector<int32_t> history = {3, 3, 17, 250, 31999, 5, -1, 40000};
  // Llama-2's, Falcon's and Llama-3's vocabularies among them; 16k and below run the 256-thread block.
  for (int vocab : {7, 1000, 16384, 32000, 65024, 128256}) {
    auto logits = sampler_logits(vocab, unsigned(vocab), 2.0f);
    logits[size_t(vocab / 2)] = logits[0];  // a tie
    auto buf = be.gpu.alloc(size_t(2 * vocab), "logits");
    be.gpu.upload(*buf, size_t(vocab), size_t(vocab), logits.data());  // row 1
    for (size_t c = 0; c < cases.size(); ++c) {
      int mismatches = 0;
      const int steps = vocab > 32000 ? test::sized(6, 3, 2) : test::sized(60, 24, 8);
      for (int step = 0; step < steps; ++step) {
        const int32_t gpu_id = be.gpu.sample(*buf, 1, vocab, cases[c], history, uint64_t(step));
        const int32_t cpu_id = sample_token(logits, cases[c], history, uint64_t(step));
        mismatches += gpu_id != cpu_id;
      }
      INFO("vocab " << vocab << " case " << c);
      CHECK(mismatches == 0);  // u is bit-exact; only a draw within ~1e-15 of a boundary could differ
    }
  }
  // Every logit -inf is an error, as on the CPU.
  std::vector<float> dead(10, -std::numeric_limits<float>::infinity());
  auto buf = be.gpu.alloc(10, "logits");
  be.gpu.upload(*buf, 0, 10, dead.data());
  SamplingParams p;
  CHECK_THROWS_AS(be.gpu.sample(*buf, 0, 10, p, {}, 0), InputError);
}

TEST_CASE("GPU sampling histograms follow sampling_distribution (chi-square)", "[gpu]") {
  Backends be;
  // Every draw is a 1024-thread block with dozens of barriers; the emulated device switches
  // threads at each, so it draws fewer (the bound below holds for any number of draws).
  const int vocab = 24, draws = test::sized(6000, 1500, 600);
  auto logits = sampler_logits(vocab, 99, 1.0f);
  auto buf = be.gpu.alloc(size_t(vocab), "logits");
  be.gpu.upload(*buf, 0, size_t(vocab), logits.data());
  for (auto [t, k, p, mp] : {std::tuple{1.0f, 0, 1.0f, 0.0f}, std::tuple{0.7f, 10, 1.0f, 0.0f},
                             std::tuple{1.0f, 0, 0.8f, 0.0f}, std::tuple{1.5f, 0, 1.0f, 0.2f}}) {
    SamplingParams sp;
    sp.temperature = t;
    sp.top_k = k;
    sp.top_p = p;
    sp.min_p = mp;
    sp.seed = 42;
    const std::vector<int32_t> history = {1, 2};
    sp.repetition_penalty = 1.1f;
    auto probs = sampling_distribution(logits, sp, history);
    std::vector<int> counts(size_t(vocab), 0);
    for (int step = 0; step < draws; ++step) ++counts[size_t(be.gpu.sample(*buf, 0, vocab, sp, history, uint64_t(step)))];
    int zero_hits = 0;
    const double stat = chi_square(counts, probs, draws, &zero_hits);
    const int df = int(std::count_if(probs.begin(), probs.end(), [](double q) { return q > 0; })) - 1;
    INFO("t " << t << " k " << k << " p " << p << " min_p " << mp << " chi2 " << stat << " df " << df);
    CHECK(zero_hits == 0);
    // Far beyond the 99.99th percentile of chi-square(df <= 23) (about 57): a broken kernel
    // lands in the hundreds or thousands.
    CHECK(stat < 3.0 * df + 40.0);
  }
}

TEST_CASE("a captured decode step replays with new positions and tokens", "[gpu]") {
  Backends be;
  const AttentionShape s{8, 2, 64};
  const int dim = 96, n = 2, max_context = 64;
  be.cpu.set_rope(rope_frequencies(s.head_dim));
  be.gpu.set_rope(rope_frequencies(s.head_dim));
  auto wv = random_values(size_t(s.qkv_dim()) * dim, 5, 0.1f);
  auto q = quantize(Format::BF16, wv.data(), s.qkv_dim(), dim, QuantOptions{});
  auto cpu_w = be.cpu.upload_linear(q, {});
  auto gpu_w = be.gpu.upload_linear(q, {});
  auto cpu_cache = be.cpu.alloc_kv_cache(1, n, max_context, s.kv_dim());
  auto gpu_cache = be.gpu.alloc_kv_cache(1, n, max_context, s.kv_dim());
  auto x = be.alloc(size_t(n) * dim);
  auto qkv = be.alloc(size_t(n) * s.qkv_dim());
  auto out = be.alloc(size_t(n) * s.q_dim());
  auto step_ops = [&](Backend& b, DeviceBuffer& xb, DeviceBuffer& qkvb, KvCache& cache, DeviceBuffer& outb) {
    b.matmul(*(&b == &be.cpu ? cpu_w : gpu_w), xb, qkvb);
    b.rope(qkvb, s);
    b.attention(qkvb, cache, 0, s, outb);
  };
  bool captured = false;
  for (int step = 0; step < 6; ++step) {
    const TokenBatch batch = batch_of({step, 2 * step}, {0, 1});
    auto xv = random_values(size_t(n) * dim, 300u + unsigned(step));
    fill(be.cpu, *x.cpu, xv, dim, batch);
    be.gpu.upload(*x.gpu, 0, xv.size(), xv.data());
    step_ops(be.cpu, *x.cpu, *qkv.cpu, *cpu_cache, *out.cpu);
    be.gpu.set_batch(batch);
    if (step == 0) {
      step_ops(be.gpu, *x.gpu, *qkv.gpu, *gpu_cache, *out.gpu);  // eager warm-up allocates workspaces
    } else {
      if (!captured) {
        be.gpu.begin_recording(&s, n);
        try {
          step_ops(be.gpu, *x.gpu, *qkv.gpu, *gpu_cache, *out.gpu);
        } catch (...) {
          be.gpu.abort_recording();
          throw;
        }
        be.gpu.end_recording();
        captured = true;
      }
      REQUIRE(be.gpu.has_recording(&s, n));
      be.gpu.replay(&s, n);
    }
    INFO("step " << step);
    CHECK(be.compare(out, size_t(n) * s.q_dim()) < kFp32Nmse);
  }
}

// Regressions found by reading the code and kept under the emulated GPU: a replay skips
// attention()'s bounds checks, so replay() checks the batch itself; growing a workspace drops
// only the graphs that use it.
TEST_CASE("replays check positions, and only growing a graph's own workspace drops it", "[gpu]") {
  Backends be;
  const AttentionShape s{4, 2, 64};
  const int dim = 64, max_context = 32;
  be.gpu.set_rope(rope_frequencies(s.head_dim));
  auto wv = random_values(size_t(s.qkv_dim()) * dim, 8, 0.1f);
  auto gpu_w = be.gpu.upload_linear(quantize(Format::BF16, wv.data(), s.qkv_dim(), dim, QuantOptions{}), {});
  auto cache = be.gpu.alloc_kv_cache(1, 1, max_context, s.kv_dim());
  auto x = be.gpu.alloc(size_t(dim), "x");
  auto qkv = be.gpu.alloc(size_t(s.qkv_dim()), "qkv");
  auto out = be.gpu.alloc(size_t(s.q_dim()), "out");
  auto step = [&] {
    be.gpu.matmul(*gpu_w, *x, *qkv);
    be.gpu.rope(*qkv, s);
    be.gpu.attention(*qkv, *cache, 0, s, *out);
  };
  be.gpu.set_batch(batch_of({0}, {0}));
  step();
  be.gpu.begin_recording(&s, 1);
  step();
  be.gpu.end_recording();
  REQUIRE(be.gpu.has_recording(&s, 1));
  be.gpu.set_batch(batch_of({1}, {0}));
  be.gpu.replay(&s, 1);
  // A position past the cache: attention() would refuse it, and so must a replay.
  be.gpu.set_batch(batch_of({max_context}, {0}));
  CHECK_THROWS_AS(be.gpu.replay(&s, 1), InputError);
  be.gpu.set_batch(batch_of({2}, {1}));  // slot 1 of a one-slot cache
  CHECK_THROWS_AS(be.gpu.replay(&s, 1), InputError);
  // Sampling over a larger vocabulary grows buffers no graph uses: the recording stays.
  std::vector<float> logits(100000);
  for (size_t i = 0; i < logits.size(); ++i) logits[i] = float(i % 97) * 0.01f;
  auto lb = be.gpu.alloc(logits.size(), "logits");
  be.gpu.upload(*lb, 0, logits.size(), logits.data());
  SamplingParams greedy;
  greedy.temperature = 0;
  CHECK(be.gpu.sample(*lb, 0, int(logits.size()), greedy, {}, 0) == 96);
  CHECK(be.gpu.has_recording(&s, 1));
  // So does the prefill path's dequantize scratch (a 4-bit weight over 17 tokens).
  auto q4 = be.gpu.upload_linear(quantize(Format::NF4, wv.data(), s.qkv_dim(), dim, QuantOptions{}), {});
  be.gpu.set_batch(prompt_batch(17));
  auto x17 = be.gpu.alloc(size_t(17) * dim, "x17");
  auto y17 = be.gpu.alloc(size_t(17) * s.qkv_dim(), "y17");
  be.gpu.matmul(*q4, *x17, *y17);
  CHECK(be.gpu.has_recording(&s, 1));
  // The decode attention workspace is the graph's own: growing it past its first 1 MiB (16
  // tokens in 16 slots of 64 heads of 256) drops the graph.
  const AttentionShape wide{64, 64, 256};
  const int n = 16;
  auto wide_cache = be.gpu.alloc_kv_cache(1, n, max_context, wide.kv_dim());
  auto wide_qkv = be.gpu.alloc(size_t(n) * wide.qkv_dim(), "qkv");
  auto wide_out = be.gpu.alloc(size_t(n) * wide.q_dim(), "out");
  std::vector<int32_t> positions(static_cast<size_t>(n), 0), slots(static_cast<size_t>(n));
  std::iota(slots.begin(), slots.end(), 0);
  be.gpu.set_batch(batch_of(positions, slots));
  be.gpu.attention(*wide_qkv, *wide_cache, 0, wide, *wide_out);
  CHECK_FALSE(be.gpu.has_recording(&s, 1));
}

TEST_CASE("GPU sampling refuses NaN logits as the CPU sampler does", "[gpu]") {
  Backends be;
  const int vocab = 3000;
  for (bool all_nan : {false, true})
    for (float temperature : {0.0f, 0.8f}) {
      std::vector<float> logits = random_values(size_t(vocab), 4);
      if (all_nan)
        std::fill(logits.begin(), logits.end(), std::numeric_limits<float>::quiet_NaN());
      else
        logits[1234] = std::numeric_limits<float>::quiet_NaN();
      auto buf = be.gpu.alloc(size_t(vocab), "logits");
      be.gpu.upload(*buf, 0, size_t(vocab), logits.data());
      SamplingParams p;
      p.temperature = temperature;
      std::string cpu_error;
      try {
        sample_token(logits, p, {}, 0);
      } catch (const InputError& e) {
        cpu_error = e.what();
      }
      INFO("all NaN " << all_nan << " temperature " << temperature);
      REQUIRE(!cpu_error.empty());
      CHECK_THROWS_WITH(be.gpu.sample(*buf, 0, vocab, p, {}, 0), cpu_error);
    }
}
