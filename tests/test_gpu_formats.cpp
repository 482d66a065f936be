// The quantized CUDA kernels (kernels/gemv_nf4_fp4.cu, gemv_int8.cu, gemv_w4a16.cu, gemv_fp8.cu,
// quantize_nf4_fp4.cu; dispatch in src/backend/cuda_quantized.cpp) against the CPU reference:
//  - every format's matmul (GEMV for m <= 16 tokens, the prefill path above) against a plain fp64
//    matmul on the CPU-DEQUANTIZED weights (lowbit::dequantize), so kernel error is separated from
//    quantization error, and against the CPU's own run-time arithmetic (lowbit::matmul: fp16
//    activations, LLM.int8 decomposition, int8 and e4m3 activations), over m = 1 ... 1024 and shapes whose
//    k and n are not multiples of any tile (odd cols: rows start mid-byte, 4-bit blocks straddle
//    rows, W4A16 groups are partial);
//  - GPU NF4 / FP4 quantization bytes equal quantize()'s;
//  - every fixture model: CUDA logits per format against CPU logits per format.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <random>
#include <vector>

#include "backend/cpu_backend.h"
#include "backend/cuda_backend.h"
#include "core/error.h"
#include "core/half.h"
#include "core/parallel.h"
#include "formats/format.h"
#include "generate/generate.h"
#include "lowbit_config.h"
#include "model/model.h"
#include "golden_quant.h"
#include "test_fixtures.h"
#if LOWBIT_EMULATED_GPU
#include "lowbit_emu/control.h"
#endif

using namespace lowbit;
using test::nmse;
using test::random_values;

namespace {

TokenBatch batch_of_size(int n) {
  TokenBatch b;
  for (int i = 0; i < n; ++i) {
    b.tokens.push_back(0);
    b.positions.push_back(i);
    b.slots.push_back(0);
  }
  return b;
}

struct FormatCase {
  Format format;
  QuantOptions opts;
  const char* label;
};

std::vector<FormatCase> format_cases() {
  QuantOptions base;
  QuantOptions symmetric = base;
  symmetric.w4_symmetric = true;
  QuantOptions odd_group = base;
  odd_group.w4_group = 50;  // even group, but rows of 333 columns end mid-group and mid-byte
  QuantOptions block_100 = base;
  block_100.block_size = 100;  // not a multiple of 8: the scalar path
  QuantOptions no_outliers = base;
  no_outliers.int8_threshold = 0.0f;
  // Every quantized format with the default options (F32 and BF16: test_gpu_kernels), then the
  // options that take other paths.
  std::vector<FormatCase> cases;
  for (Format f : all_formats())
    if (f != Format::F32 && f != Format::BF16) cases.push_back({f, base, format_name(f).data()});
  cases.push_back({Format::NF4, block_100, "nf4 block 100"});
  cases.push_back({Format::INT8, no_outliers, "int8 threshold 0"});
  cases.push_back({Format::W4A16, symmetric, "W4A16 symmetric"});
  cases.push_back({Format::W4A16, odd_group, "W4A16 group 50"});
  return cases;
}

// y[t, r] = sum_c x[t, c] * w[r, c] in fp64 (+ bias).
std::vector<double> reference_matmul(const std::vector<float>& w, const std::vector<float>& bias,
                                     const std::vector<float>& x, int m, int rows, int cols) {
  std::vector<double> y(size_t(m) * size_t(rows));
  for (int t = 0; t < m; ++t)
    for (int r = 0; r < rows; ++r) {
      double acc = bias.empty() ? 0.0 : double(bias[size_t(r)]);
      for (int c = 0; c < cols; ++c) acc += double(x[size_t(t) * cols + c]) * double(w[size_t(r) * cols + c]);
      y[size_t(t) * rows + size_t(r)] = acc;
    }
  return y;
}

// Kernel error bounds against the fp64 product on the dequantized weights. GEMV paths: fp32
// arithmetic, plus the format's own activation rounding (fp16 for W4A16; int8 per token for
// INT8 / W8A8, which dominates). Prefill of the dequantize path: bf16 weights and activations.
// `fast`: a prompt (m > 16) through --cuda-fast-prefill's bf16 tensor-core GEMM, which rounds
// the activations (and for the dequantized formats nothing else) to bf16. Otherwise a prompt runs
// each format's own arithmetic, exactly as decoding does: its GEMV 16 tokens at a time (F32 as an
// fp32 GEMM, W8A8 as an exact int8 GEMM).
bool int8_activations(Format f) {
  const Activations a = format_info(f).activations;
  return a == Activations::llm_int8 || a == Activations::int8_per_token;
}
bool e4m3_activations(Format f) { return format_info(f).activations == Activations::e4m3_per_token; }

double bound_vs_dequantized(Format f, int m, bool fast) {
  if (int8_activations(f)) return 1e-3;  // per-token int8 activations: ~1e-4 expected
  if (e4m3_activations(f)) return 3e-3;  // per-token e4m3 activations: 1.3e-3 measured
  return m > 16 && fast ? 1e-4 : 1e-6;
}

// Against the CPU's run-time arithmetic (lowbit::matmul).
double bound_vs_cpu(Format f, int m, bool fast) {
  // Fast prefill: W8A8 stays an exact int8 GEMM only where cuBLAS takes the shape (rows and cols
  // multiples of 4), else it is dequantized like the others and meets int8 activations' bound.
  if (m > 16 && fast) {
    // W8A8-fp8 keeps its e4m3 GEMM where that applies (sm_89+, rows and cols multiples of 16),
    // else it is dequantized to bf16: bf16 activations instead of its e4m3 ones (7.5e-4 measured).
    if (e4m3_activations(f)) return 3e-3;
    return f == Format::F32 ? 1e-9 : (int8_activations(f) ? 1e-3 : 1e-4);
  }
  if (format_info(f).activations == Activations::llm_int8) return 1e-6;  // fp16 output roundings may flip one ulp
  return 1e-9;  // the same values, only the order of fp32 sums differs
}

}  // namespace

TEST_CASE("quantized matmul on the GPU equals fp64 on the CPU-dequantized weights", "[gpu]") {
  CudaBackend gpu{CudaContextOptions{}};
  ThreadPool pool;
  struct Shape {
    int rows, cols;
  };
  // (37, 200): rows not a multiple of 8 warps; (29, 333): odd cols, scalar paths; (40, 1024):
  // the 16-byte paths of every format, IMMA-friendly; (72, 1000): partial W4A16 groups; (45, 2048):
  // 16-byte paths whose last warp has rows of its 2 or 4 missing; (33, 96): a W4A16 group (128)
  // wider than the row.
  const Shape shapes[] = {{37, 200}, {29, 333}, {40, 1024}, {72, 1000}, {45, 2048}, {33, 96}};
  for (const auto& fc : format_cases())
    for (const auto& s : shapes) {
      auto wv = random_values(size_t(s.rows) * s.cols, 11 + uint32_t(s.cols), 0.05f);
      auto bias = s.rows % 2 == 0 ? random_values(size_t(s.rows), 5) : std::vector<float>{};
      QuantizedTensor q = quantize(fc.format, wv.data(), s.rows, s.cols, fc.opts);
      std::vector<float> deq(size_t(s.rows) * s.cols);
      dequantize(q, deq.data());
      auto linear = gpu.upload_linear(q, bias);
      CHECK(linear->bytes() == weight_bytes(q) + bias.size() * sizeof(float));
      // Under emulation the largest batch is 130 tokens (a partial tile past two whole ones): 1024
      // tokens cost minutes of emulated threads and add no path that 130 does not take.
      const std::vector<int> batches = LOWBIT_EMULATED_GPU ? std::vector<int>{1, 2, 3, 7, 16, 17, 64, 130}
                                                           : std::vector<int>{1, 2, 3, 7, 16, 17, 64, 1024};
      for (int m : batches)
        for (bool fast : {false, true}) {
          if (fast && m <= 16) continue;  // decoding never takes the fast path
          gpu.set_fast_prefill(fast);
          INFO(fc.label << " " << s.rows << "x" << s.cols << " m=" << m << (fast ? " fast prefill" : ""));
          auto x = random_values(size_t(m) * s.cols, 100 + uint32_t(m));
          if (fc.format == Format::INT8 && s.cols > 17)  // outlier columns for the decomposition
            for (int t = 0; t < m; t += 2) {
              x[size_t(t) * s.cols + 5] = 8.5f;
              x[size_t(t) * s.cols + 17] = -6.0f;
            }
          auto xb = gpu.alloc(x.size(), "x");
          auto yb = gpu.alloc(size_t(m) * s.rows, "y");
          gpu.upload(*xb, 0, x.size(), x.data());
          gpu.set_batch(batch_of_size(m));
          gpu.matmul(*linear, *xb, *yb);
          std::vector<float> y(size_t(m) * s.rows);
          gpu.download(*yb, 0, y.size(), y.data());

          const auto expected = reference_matmul(deq, bias, x, m, s.rows, s.cols);
          const double e_deq = nmse(y, expected);
          std::vector<float> cpu(size_t(m) * s.rows);
          lowbit::matmul(q, x.data(), m, cpu.data(), pool, bias.empty() ? nullptr : bias.data());
          const double e_cpu = nmse(y, cpu);
          INFO("nmse vs fp64 on dequantized weights " << e_deq << ", vs the CPU format matmul " << e_cpu);
          CHECK(e_deq < bound_vs_dequantized(fc.format, m, fast));
          CHECK(e_cpu < bound_vs_cpu(fc.format, m, fast));
        }
      gpu.set_fast_prefill(false);
    }
}

// The planes on the device read back as quantize()'s bytes (W4A16's codes, interleaved on the
// device when cols % 8 == 0, de-interleaved on the way back), and the bf16 dequantizer of the
// fast prefill path (kernels/dequant.cuh) writes bf16(dequantize()) bit for bit for every format:
// 16-byte stores where cols % 8 == 0 and the output is aligned, scalar stores for odd cols, for an
// output one element off alignment, and for rows written in a permuted order (out_rows).
TEST_CASE("device planes read back unchanged; the bf16 dequantizer equals bf16(dequantize())", "[gpu]") {
  CudaContext ctx{CudaContextOptions{}};
  struct Shape {
    int rows, cols;
  };
  const Shape shapes[] = {{37, 200}, {29, 333}, {40, 1024}, {33, 96}, {3, 5}, {1, 8}};
  for (const auto& fc : format_cases())
    for (const auto& s : shapes) {
      INFO(fc.label << " " << s.rows << "x" << s.cols);
      const auto wv = random_values(size_t(s.rows) * s.cols, 21 + uint32_t(s.cols), 0.05f);
      const QuantizedTensor q = quantize(fc.format, wv.data(), s.rows, s.cols, fc.opts);
      std::vector<float> deq(size_t(s.rows) * s.cols);
      dequantize(q, deq.data());
      const DeviceQuantizedPlanes planes = upload_quantized_planes(ctx, q, "a test weight");
      CHECK(planes.repacked == (fc.format == Format::W4A16 && s.cols % 8 == 0));
      const QuantizedTensor back = download_quantized_planes(ctx, planes);
      CHECK(back.codes == q.codes);
      CHECK(back.scales16 == q.scales16);
      CHECK(back.zeros == q.zeros);
      CHECK(std::memcmp(back.scales.data(), q.scales.data(), q.scales.size() * sizeof(float)) == 0);

      const QuantizedKernels* k = quantized_kernels(fc.format);
      REQUIRE(k != nullptr);
      REQUIRE(k->dequantize != nullptr);
      const size_t n = size_t(s.rows) * size_t(s.cols);
      DeviceMemory out = ctx.allocate((n + 8) * sizeof(uint16_t), "the bf16 weight");
      std::vector<int32_t> order(size_t(s.rows));
      for (int r = 0; r < s.rows; ++r) order[size_t(r)] = s.rows - 1 - r;
      DeviceMemory order_device = ctx.allocate(order.size() * sizeof(int32_t), "the row order");
      REQUIRE(cudaMemcpyAsync(order_device.get(), order.data(), order.size() * sizeof(int32_t), cudaMemcpyHostToDevice,
                              ctx.stream()) == cudaSuccess);
      for (const char* variant : {"aligned", "one element off", "rows reversed"}) {
        INFO(variant);
        const bool off = std::strcmp(variant, "one element off") == 0;
        const bool reversed = std::strcmp(variant, "rows reversed") == 0;
        kernels::QuantizedWeightView v = planes.view();
        if (reversed) v.out_rows = order_device.as<int32_t>();
        uint16_t* dst = out.as<uint16_t>() + (off ? 1 : 0);
        REQUIRE(k->dequantize(v, dst, ctx.stream()) == cudaSuccess);
        std::vector<uint16_t> got(n), want(n);
        REQUIRE(cudaMemcpyAsync(got.data(), dst, n * sizeof(uint16_t), cudaMemcpyDeviceToHost, ctx.stream()) ==
                cudaSuccess);
        ctx.synchronize();
        for (int r = 0; r < s.rows; ++r)
          for (int c = 0; c < s.cols; ++c)
            want[size_t(reversed ? order[size_t(r)] : r) * s.cols + c] = f32_to_bf16(deq[size_t(r) * s.cols + c]);
        size_t mismatches = 0, first = 0;
        for (size_t i = 0; i < n; ++i)
          if (got[i] != want[i] && mismatches++ == 0) first = i;
        INFO(mismatches << " mismatches, the first at " << first);
        CHECK(mismatches == 0);
      }
    }
}

// A layer made of checkpoint tensors (Llama's q|k|v, Falcon's reordered QKV): each part quantized
// on its own (on the GPU for the 4-bit formats), each part's GEMV writing its rows of the layer's
// output through its row order, the prefill path dequantizing every part into its rows. Against
// the CPU backend given the same parts.
TEST_CASE("a layer of parts on the GPU equals the CPU's", "[gpu]") {
  CpuBackend cpu(0);
  CudaBackend gpu{CudaContextOptions{}};
  for (int cols : {200, 333}) {
    const std::vector<int> part_rows = {37, 29, 12};
    std::vector<std::vector<float>> values;
    for (size_t p = 0; p < part_rows.size(); ++p)
      values.push_back(random_values(size_t(part_rows[p]) * size_t(cols), 70 + uint32_t(p), 0.05f));
    std::vector<int32_t> order(29);
    for (int r = 0; r < 29; ++r) order[size_t(r)] = (r * 7) % 29;  // a permutation of the middle part
    std::vector<HostWeightPart> parts;
    for (size_t p = 0; p < part_rows.size(); ++p)
      parts.push_back({values[p].data(), part_rows[p], p == 1 ? order : std::vector<int32_t>{}});
    const int rows = 37 + 29 + 12;
    const auto bias = random_values(size_t(rows), 79, 0.1f);
    for (Format f : all_formats()) {
      auto cpu_linear = cpu.upload_quantizing(f, parts, cols, {}, bias);
      auto gpu_linear = gpu.upload_quantizing(f, parts, cols, {}, bias);
      CHECK(gpu_linear->bytes() == cpu_linear->bytes());
      for (int m : {1, 3, 17, 64}) {
        INFO(format_name(f) << " cols " << cols << " m=" << m);
        auto x = random_values(size_t(m) * size_t(cols), 90 + uint32_t(m));
        auto xg = gpu.alloc(x.size(), "x");
        auto yg = gpu.alloc(size_t(m) * rows, "y");
        gpu.upload(*xg, 0, x.size(), x.data());
        gpu.set_batch(batch_of_size(m));
        gpu.matmul(*gpu_linear, *xg, *yg);
        std::vector<float> y(size_t(m) * rows), want(y.size());
        gpu.download(*yg, 0, y.size(), y.data());
        // x into the CPU backend as the rows of an f32 table looked up by tokens 0..m-1.
        TokenBatch lookup = batch_of_size(m);
        for (int t = 0; t < m; ++t) lookup.tokens[size_t(t)] = t;
        cpu.set_batch(lookup);
        auto table = cpu.upload_linear(quantize(Format::F32, x.data(), m, cols, {}), {});
        auto xc = cpu.alloc(x.size(), "x");
        auto yc = cpu.alloc(y.size(), "y");
        cpu.embed(*table, *xc);
        cpu.matmul(*cpu_linear, *xc, *yc);
        cpu.download(*yc, 0, want.size(), want.data());
        const double e = nmse(y, want);
        INFO("nmse vs the CPU backend " << e);
        CHECK(e < bound_vs_cpu(f, m, false));
      }
    }
  }
}

namespace {

// x rows into the CPU backend: the rows of an f32 table looked up by tokens 0..m-1 (an exact copy).
void fill_cpu(CpuBackend& cpu, DeviceBuffer& buf, const std::vector<float>& x, int m, int cols) {
  TokenBatch lookup = batch_of_size(m);
  for (int t = 0; t < m; ++t) lookup.tokens[size_t(t)] = t;
  cpu.set_batch(lookup);
  auto table = cpu.upload_linear(quantize(Format::F32, x.data(), m, cols, {}), {});
  cpu.embed(*table, buf);
}

uint64_t launches_so_far() {
#if LOWBIT_EMULATED_GPU
  uint64_t n = 0;
  for (const auto& [name, count] : lowbit_emu::launch_counts()) n += count;
  return n;
#else
  return 0;
#endif
}

}  // namespace

// Backend::linear on CUDA fuses the norm before and the residual add / activation after a decode
// GEMV, every part of the layer in one launch; the CPU runs the same steps one by one. Every
// format, layers of one, two (gate | up) and three (q | k | v) parts, RMSNorm and LayerNorm, 1 to
// 5 tokens (5: past the fused path, the steps run apart on CUDA too), a fast-path width (256) and
// one off it (200).
TEST_CASE("fused decode linears (norm, residual add, SwiGLU, GELU) equal the CPU's steps", "[gpu]") {
  CpuBackend cpu(0);
  CudaBackend gpu{CudaContextOptions{}};
  struct Layer {
    const char* what;
    std::vector<int> part_rows;
    bool norm, swiglu, gelu, accumulate;
  };
  const int hidden = 48;
  const std::vector<Layer> layers = {
      {"q|k|v with RMSNorm", {64, 32, 32}, true, false, false, false},
      {"one part with LayerNorm", {96}, true, false, false, false},
      {"gate|up with RMSNorm and SwiGLU", {hidden, hidden}, true, true, false, false},
      {"one part with LayerNorm and GELU", {hidden}, true, false, true, false},
      {"one part added into the residual", {64}, false, false, false, true},
  };
  for (int cols : {256, 200})
    for (size_t li = 0; li < layers.size(); ++li) {
      const Layer& L = layers[li];
      const bool layer_norm = std::string(L.what).find("LayerNorm") != std::string::npos;
      std::vector<std::vector<float>> values;
      std::vector<HostWeightPart> parts;
      int rows = 0;
      for (size_t p = 0; p < L.part_rows.size(); ++p) {
        values.push_back(random_values(size_t(L.part_rows[p]) * size_t(cols), 300 + uint32_t(10 * li + p), 0.05f));
        rows += L.part_rows[p];
      }
      for (size_t p = 0; p < L.part_rows.size(); ++p) parts.push_back({values[p].data(), L.part_rows[p], {}});
      const auto bias = random_values(size_t(rows), 350 + uint32_t(li), 0.1f);
      const auto norm_w = random_values(size_t(cols), 360 + uint32_t(li), 1.0f);
      const auto norm_b = layer_norm ? random_values(size_t(cols), 370 + uint32_t(li), 0.2f) : std::vector<float>{};
      auto cpu_norm = cpu.upload_norm(norm_w, norm_b);
      auto gpu_norm = gpu.upload_norm(norm_w, norm_b);
      const int out_cols = L.swiglu ? hidden : rows;
      for (Format f : all_formats()) {
        auto cpu_linear = cpu.upload_quantizing(f, parts, cols, {}, bias);
        auto gpu_linear = gpu.upload_quantizing(f, parts, cols, {}, bias);
        for (int m : {1, 2, 3, 4, 5}) {
          INFO(format_name(f) << ", " << L.what << ", cols " << cols << ", m=" << m);
          const auto x = random_values(size_t(m) * size_t(cols), 400 + uint32_t(m));
          const auto residual = random_values(size_t(m) * size_t(out_cols), 420 + uint32_t(m));
          auto run = [&](Backend& be, const DeviceNorm& norm, auto&& put) {
            auto xb = be.alloc(x.size(), "x");
            auto out = be.alloc(size_t(m) * out_cols, "out");
            auto normed = be.alloc(x.size(), "normed");
            auto pre = be.alloc(size_t(m) * rows, "pre");
            put(*xb, x, cols);
            if (L.accumulate) put(*out, residual, out_cols);
            be.synchronize();
            Backend::LinearSteps s;
            if (L.norm) {
              s.norm = &norm;
              s.norm_kind = layer_norm ? NormKind::LayerNorm : NormKind::RMSNorm;
              s.norm_eps = 1e-5f;
              s.normed = normed.get();
            }
            s.activate = L.swiglu || L.gelu;
            s.act = L.swiglu ? Activation::SwiGLU : Activation::GELU;
            s.hidden = L.swiglu ? hidden : rows;
            s.accumulate = L.accumulate;
            s.pre = pre.get();
            be.set_batch(batch_of_size(m));
            const uint64_t before = launches_so_far();
            be.linear(&be == &cpu ? *cpu_linear : *gpu_linear, *xb, *out, s);
            std::vector<float> y(size_t(m) * out_cols);
            be.download(*out, 0, y.size(), y.data());  // waits: the kernels have run (and been counted)
            return std::pair{y, launches_so_far() - before};
          };
          const std::vector<float> want = run(cpu, *cpu_norm, [&](DeviceBuffer& b, const std::vector<float>& v, int c) {
            fill_cpu(cpu, b, v, int(v.size()) / c, c);
          }).first;
          const auto [got, launched] = run(gpu, *gpu_norm, [&](DeviceBuffer& b, const std::vector<float>& v, int) {
            gpu.upload(b, 0, v.size(), v.data());
          });
          const double e = nmse(got, want);
          INFO("nmse vs the CPU's steps " << e << ", " << launched << " launches");
          // The fused norm sums in another order than the CPU's: a last-bit difference in a
          // normalized value can move an activation rounding (fp16 for W4A16, int8 / e4m3 codes).
          const bool rounds_activations = format_info(f).activations != Activations::fp32;
          CHECK(e < (rounds_activations && L.norm ? 1e-5 : bound_vs_cpu(f, m, false) + 1e-11));
#if LOWBIT_EMULATED_GPU
          // The fused path: one launch for the whole layer (every format, on its fast path: cols a
          // multiple of 32 here; up to 4 tokens); past 4 tokens the steps run apart.
          if (cols == 256 && m <= 4) CHECK(launched == 1);
          if (m > 4) CHECK(launched > 1);
#endif
        }
      }
    }
}

TEST_CASE("NF4 / FP4 (and -dq) quantized on the GPU are byte-identical to quantize()", "[gpu]") {
  CudaBackend gpu{CudaContextOptions{}};
  struct Shape {
    int rows, cols;
  };
  const Shape shapes[] = {{37, 200}, {29, 333}, {1, 1}, {3, 5}, {64, 4096}};
  for (Format f : {Format::NF4, Format::FP4, Format::NF4_DQ, Format::FP4_DQ})
    for (int block : {64, 2, 100, 4096})
      for (const auto& s : shapes) {
        // Blocks of 2 over the 64x4096 weight are 131,072 one-warp blocks: minutes of fiber
        // switching on the emulated device for nothing the smaller shapes do not cover.
        if (LOWBIT_EMULATED_GPU && block == 2 && s.rows * s.cols > 100000) continue;
        {
          INFO(format_name(f) << " block " << block << " " << s.rows << "x" << s.cols);
          auto w = random_values(size_t(s.rows) * s.cols, 3 + uint32_t(block), 0.1f);
          // An all-zero block, tiny values, values at +-absmax, exact zeros inside a block.
          for (size_t i = 0; i < w.size() && i < 64; ++i) w[i] = 0.0f;
          for (size_t i = 64; i < w.size() && i < 80; ++i) w[i] = (i % 2 ? 1e-30f : -1e-30f);
          for (size_t i = 80; i < w.size() && i < 200; i += 7) w[i] = 0.0f;
          QuantOptions opts;
          opts.block_size = block;
          QuantizedTensor cpu = quantize(f, w.data(), s.rows, s.cols, opts);
          QuantizedTensor dev = gpu.quantize_on_device(f, w.data(), s.rows, s.cols, opts);
          REQUIRE(dev.codes.size() == cpu.codes.size());
          REQUIRE(dev.scales.size() == cpu.scales.size());
          CHECK(std::memcmp(dev.codes.data(), cpu.codes.data(), cpu.codes.size()) == 0);
          CHECK(std::memcmp(dev.scales.data(), cpu.scales.data(), cpu.scales.size() * sizeof(float)) == 0);
          CHECK(dev.scale_codes == cpu.scale_codes);
          CHECK(dev.scales2 == cpu.scales2);
          CHECK(std::memcmp(&dev.offset, &cpu.offset, sizeof(float)) == 0);
          // And the kept-on-device variant computes with the same planes.
          auto linear = gpu.upload_quantized_on_device(f, w.data(), s.rows, s.cols, opts, {});
          CHECK(linear->bytes() == weight_bytes(cpu));
        }
      }
  auto w = random_values(64 * 64, 1);
  CHECK_THROWS_AS(gpu.quantize_on_device(Format::W4A16, w.data(), 64, 64, QuantOptions{}), DeviceError);
}

TEST_CASE("CUDA logits equal the CPU's per quantized format on every fixture model", "[gpu]") {
  CpuBackend cpu(0);
  CudaBackend gpu{CudaContextOptions{}};
  for (const auto& dir : test::fixture_models())
    for (Format f : all_formats()) {
      if (f == Format::F32 || f == Format::BF16) continue;  // test_gpu_model covers them
      // The fixtures with golden-quant.* are checked against the reference itself (the last
      // test case), a stronger check than against the CPU.
      if (std::filesystem::exists(dir + "/golden-quant.json")) continue;
      DYNAMIC_SECTION(std::filesystem::path(dir).filename().string() << " " << format_name(f)) {
        test::Golden g = test::read_golden(dir);
        LoadOptions opts;
        opts.format = f;
        opts.max_context = 128;
        opts.max_batch_tokens = 64;
        auto cpu_model = Model::load(dir, cpu, opts);
        auto gpu_model = Model::load(dir, gpu, opts);
        CHECK(gpu_model->weight_bytes() == cpu_model->weight_bytes());
        const size_t vocab = size_t(cpu_model->config().vocab_size);
        for (size_t p = 0; p < g.prompts.size(); ++p) {
          const auto& prompt = g.prompts[p];
          std::vector<int> rows;
          TokenBatch b = test::prompt_batch(prompt, &rows);
          std::vector<float> c(prompt.size() * vocab), d(prompt.size() * vocab);
          cpu_model->forward(b, rows, c.data());
          gpu_model->forward(b, rows, d.data());
          INFO("prompt " << p << " (" << prompt.size() << " tokens) prefill nmse " << nmse(d, c));
          // Prompts past 16 tokens run each format's own arithmetic on the GPU as on the CPU.
          CHECK(nmse(d, c) < 1e-4);
          double worst = 0;
          for (size_t i = 0; i < prompt.size(); ++i) {
            if (!test::decode_checked(i, prompt.size())) continue;  // its KV entry stays the prefill's
            auto cd = test::decode_logits(*cpu_model, prompt[i], int(i), 0);
            auto gd = test::decode_logits(*gpu_model, prompt[i], int(i), 0);
            worst = std::max(worst, nmse(gd, cd));
          }
          INFO("prompt " << p << " decode worst nmse " << worst);
          CHECK(worst < 1e-3);
        }
      }
    }
}

// The model-level fidelity check of test_quant_model.cpp on the CUDA backend: every format's
// logits within 1e-4 of its transformers + bitsandbytes reference (the reference's 1-ulp spread
// for the formats that round activations, with room: see check_golden_quant), prompts (each format's own arithmetic) and decode
// steps, and the same greedy continuations, on the untidy fixtures.
TEST_CASE("every format on CUDA equals its transformers + bitsandbytes reference within 1e-4", "[gpu]") {
  CudaBackend gpu{CudaContextOptions{}};
  test::check_golden_quant(gpu, 1.5, size_t(test::sized(1 << 30, 8, 8)));
}

// LLM.int8's activation quantizer on the GPU rounds the ties as bitsandbytes does (torch's
// reciprocal, then a multiply): x = [0.1850586, 0.0925293, 0, ...] is CA = [127, 64], where
// dividing gives 63. With the same int8 weight, the GPU's outputs are the CPU's (pinned to
// bitsandbytes in test_formats) exactly, in decode and in a prompt.
TEST_CASE("LLM.int8 activation ties round on the GPU as in bitsandbytes", "[gpu]") {
  CudaBackend gpu{CudaContextOptions{}};
  ThreadPool pool;
  const int rows = 8, cols = 64;
  auto wv = random_values(size_t(rows) * cols, 3, 0.05f);
  QuantOptions opts;
  const QuantizedTensor q = quantize(Format::INT8, wv.data(), rows, cols, opts);
  auto linear = gpu.upload_linear(q, {});
  for (int m : {1, 20}) {
    std::vector<float> x(size_t(m) * cols, 0.0f);
    for (int t = 0; t < m; ++t) {
      x[size_t(t) * cols] = 0.1850586f;
      x[size_t(t) * cols + 1] = 0.0925293f;
      x[size_t(t) * cols + 2] = -0.0925293f * float(t % 3);  // more ties and zeros
    }
    auto xb = gpu.alloc(x.size(), "x");
    auto yb = gpu.alloc(size_t(m) * rows, "y");
    gpu.upload(*xb, 0, x.size(), x.data());
    gpu.set_batch(batch_of_size(m));
    gpu.matmul(*linear, *xb, *yb);
    std::vector<float> y(size_t(m) * rows), want(y.size());
    gpu.download(*yb, 0, y.size(), y.data());
    lowbit::matmul(q, x.data(), m, want.data(), pool);
    INFO("tokens " << m);
    CHECK(y == want);
    // Had the tie gone to 63, token 0's outputs would move by about SCB * w[r, 1] / 127^2 * 0.185.
    std::vector<float> half(x.begin(), x.begin() + cols);
    half[1] = 0.0924683f;  // the fp16 value below the tie: CA 63, the value a divide gives the tie
    std::vector<float> below(static_cast<size_t>(rows));
    lowbit::matmul(q, half.data(), 1, below.data(), pool);
    CHECK(below != std::vector<float>(want.begin(), want.begin() + rows));
  }
}
