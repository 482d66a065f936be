#include "backend/cuda_quantized.h"

#include <cstring>

#include <fmt/format.h>

#include "core/error.h"
#include "kernels/gemv.cuh"
#include "kernels/gemv_fp8.cuh"
#include "kernels/gemv_int8.cuh"
#include "kernels/gemv_nf4_fp4.cuh"
#include "kernels/gemv_w4a16.cuh"
#include "kernels/quant_math.h"
#include "kernels/quantize_nf4_fp4.cuh"

namespace lowbit {

namespace {

size_t no_workspace(int, int) { return 0; }

// One line per format: the GEMV of decode (kernels/gemv_template.cuh for all of them) and the
// bf16 dequantizer of the prefill path (F32 and BF16 need none: their values are the GEMM's input).
constexpr QuantizedKernels kQuantizedKernels[] = {
    {Format::F32, kernels::launch_gemv_f32, no_workspace, nullptr, kernels::launch_fused_gemv_f32},
    {Format::BF16, kernels::launch_gemv_bf16, no_workspace, nullptr, kernels::launch_fused_gemv_bf16},
    {Format::NF4, kernels::launch_gemv_four_bit, no_workspace, kernels::launch_dequantize_four_bit,
     kernels::launch_fused_gemv_four_bit},
    {Format::FP4, kernels::launch_gemv_four_bit, no_workspace, kernels::launch_dequantize_four_bit,
     kernels::launch_fused_gemv_four_bit},
    {Format::NF4_DQ, kernels::launch_gemv_four_bit, no_workspace, kernels::launch_dequantize_four_bit,
     kernels::launch_fused_gemv_four_bit},
    {Format::FP4_DQ, kernels::launch_gemv_four_bit, no_workspace, kernels::launch_dequantize_four_bit,
     kernels::launch_fused_gemv_four_bit},
    {Format::INT8, kernels::launch_gemv_int8, kernels::int8_gemv_workspace_bytes, kernels::launch_dequantize_int8,
     kernels::launch_fused_gemv_int8},
    {Format::W8A8, kernels::launch_gemv_w8a8, kernels::int8_gemv_workspace_bytes, kernels::launch_dequantize_w8a8,
     kernels::launch_fused_gemv_w8a8},
    {Format::W4A16, kernels::launch_gemv_w4a16, no_workspace, kernels::launch_dequantize_w4a16,
     kernels::launch_fused_gemv_w4a16},
    {Format::W8A8_FP8, kernels::launch_gemv_w8a8_fp8, kernels::fp8_gemv_workspace_bytes,
     kernels::launch_dequantize_w8a8_fp8, kernels::launch_fused_gemv_w8a8_fp8},
};

template <typename T>
DeviceMemory upload_plane(CudaContext& ctx, const std::vector<T>& plane, const std::string& what) {
  DeviceMemory mem = ctx.allocate(plane.size() * sizeof(T), what);
  if (!plane.empty())
    LOWBIT_CUDA_CHECK(
        cudaMemcpyAsync(mem.get(), plane.data(), plane.size() * sizeof(T), cudaMemcpyHostToDevice, ctx.stream()));
  return mem;
}

template <typename T>
std::vector<T> download_plane(CudaContext& ctx, const DeviceMemory& mem) {
  std::vector<T> plane(mem.bytes() / sizeof(T));
  if (!plane.empty())
    LOWBIT_CUDA_CHECK(cudaMemcpyAsync(plane.data(), mem.get(), mem.bytes(), cudaMemcpyDeviceToHost, ctx.stream()));
  return plane;
}

}  // namespace

const QuantizedKernels* quantized_kernels(Format f) {
  for (const auto& k : kQuantizedKernels)
    if (k.format == f) return &k;
  return nullptr;
}

size_t DeviceQuantizedPlanes::bytes() const {
  return codes.bytes() + scales.bytes() + scale_codes.bytes() + scales2.bytes() + scales16.bytes() + zeros.bytes() +
         (is_double_quantized(format) ? sizeof(float) : 0);
}

kernels::QuantizedWeightView DeviceQuantizedPlanes::view() const {
  kernels::QuantizedWeightView v;
  v.rows = int(rows);
  v.cols = int(cols);
  v.out_stride = int(rows);
  v.codes = codes.as<uint8_t>();
  v.scales = scales.as<float>();
  v.scale_codes = scale_codes.as<uint8_t>();
  v.scales2 = scales2.as<float>();
  v.offset = offset;
  v.scales16 = scales16.as<uint16_t>();
  // Symmetric W4A16 has no zero points (8 implied): the kernels test the pointer.
  v.zeros = zeros.bytes() > 0 ? zeros.as<uint8_t>() : nullptr;
  v.w4a16_interleaved = w4a16_interleaved;
  v.block_size = opts.block_size;
  v.group = opts.w4_group;
  v.nf4 = format == Format::NF4 || format == Format::NF4_DQ;
  v.double_quant = is_double_quantized(format);
  v.int8_threshold = opts.int8_threshold;
  return v;
}

DeviceQuantizedPlanes upload_quantized_planes(CudaContext& ctx, const QuantizedTensor& q, const std::string& what) {
  if (q.rows > INT32_MAX || q.cols > INT32_MAX)
    throw DeviceError(fmt::format("{}: {}x{} is too large for the CUDA kernels", what, q.rows, q.cols));
  DeviceQuantizedPlanes p;
  p.format = q.format;
  p.rows = q.rows;
  p.cols = q.cols;
  p.opts = q.opts;
  p.offset = q.offset;
  p.codes = upload_plane(ctx, q.codes, what);
  p.scales = upload_plane(ctx, q.scales, "the scales of " + what);
  p.scale_codes = upload_plane(ctx, q.scale_codes, "the scale codes of " + what);
  p.scales2 = upload_plane(ctx, q.scales2, "the second-level scales of " + what);
  p.scales16 = upload_plane(ctx, q.scales16, "the fp16 scales of " + what);
  p.zeros = upload_plane(ctx, q.zeros, "the zero points of " + what);
  // W4A16 for the decode GEMV's lop3 conversion: rows of whole 32-bit words are interleaved in
  // place on the device (one pass at memory speed, queued behind the copy), not on the host,
  // which would need a second host copy of the plane and a CPU pass over it at every load.
  if (q.format == Format::W4A16 && q.cols % 8 == 0 && !q.codes.empty()) {
    cuda_check(kernels::launch_w4a16_interleave(p.codes.as<uint8_t>(), int64_t(p.codes.bytes()), ctx.stream()),
               "launch_w4a16_interleave");
    p.w4a16_interleaved = true;
  }
  ctx.synchronize();  // pageable sources: the host tensor may die after this call
  return p;
}

DeviceQuantizedPlanes quantize_four_bit_on_device(CudaContext& ctx, Format f, const float* host_weights, int64_t rows,
                                                  int64_t cols, const QuantOptions& opts) {
  if (is_double_quantized(f)) {
    // Codes and absmax on the GPU (the -dq codes are the plain ones: values are quantized against
    // the exact absmax); the absmax, 1/block_size of the values, is double-quantized on the host
    // by the reference code and the two small planes go back up.
    const Format plain = f == Format::NF4_DQ ? Format::NF4 : Format::FP4;
    DeviceQuantizedPlanes p = quantize_four_bit_on_device(ctx, plain, host_weights, rows, cols, opts);
    QuantizedTensor absmax;
    absmax.format = plain;
    absmax.rows = rows;
    absmax.cols = cols;
    absmax.opts = opts;
    absmax.scales = download_plane<float>(ctx, p.scales);
    ctx.synchronize();
    double_quantize_scales(absmax);
    const std::string what = fmt::format("a {}x{} {} weight", rows, cols, format_name(f));
    p.format = f;
    p.scales = DeviceMemory{};
    p.scale_codes = upload_plane(ctx, absmax.scale_codes, "the scale codes of " + what);
    p.scales2 = upload_plane(ctx, absmax.scales2, "the second-level scales of " + what);
    p.offset = absmax.offset;
    ctx.synchronize();  // pageable sources die on return
    return p;
  }
  if (f != Format::NF4 && f != Format::FP4)
    throw DeviceError(fmt::format("quantizing to {} on the GPU is not implemented (the 4-bit formats are)",
                                  format_name(f)));
  if (opts.block_size <= 0 || opts.block_size % 2 != 0)
    throw UsageError(fmt::format("block size must be a positive even number, got {}", opts.block_size));
  if (rows < 0 || cols < 0 || rows > INT32_MAX || cols > INT32_MAX)
    throw DeviceError(fmt::format("cannot quantize a tensor of shape [{}, {}] on the GPU", rows, cols));
  const int64_t n = rows * cols;
  const std::string what = fmt::format("a {}x{} {} weight", rows, cols, format_name(f));
  DeviceMemory source = ctx.allocate(size_t(n) * sizeof(float), "the fp32 source of " + what);
  if (n > 0)
    LOWBIT_CUDA_CHECK(cudaMemcpyAsync(source.get(), host_weights, size_t(n) * sizeof(float), cudaMemcpyHostToDevice,
                                      ctx.stream()));
  DeviceQuantizedPlanes p;
  p.format = f;
  p.rows = rows;
  p.cols = cols;
  p.opts = opts;
  p.codes = ctx.allocate(size_t((n + 1) / 2), what);
  p.scales = ctx.allocate(size_t((n + opts.block_size - 1) / opts.block_size) * sizeof(float), "the scales of " + what);
  cuda_check(kernels::launch_quantize_four_bit(source.as<float>(), n, opts.block_size, f == Format::NF4,
                                               p.codes.as<uint8_t>(), p.scales.as<float>(), ctx.stream()),
             "launch_quantize_four_bit");
  ctx.synchronize();  // the source buffer is freed on return
  return p;
}

QuantizedTensor download_quantized_planes(CudaContext& ctx, const DeviceQuantizedPlanes& p) {
  QuantizedTensor q;
  q.format = p.format;
  q.rows = p.rows;
  q.cols = p.cols;
  q.opts = p.opts;
  q.offset = p.offset;
  q.codes = download_plane<uint8_t>(ctx, p.codes);
  q.scales = download_plane<float>(ctx, p.scales);
  q.scale_codes = download_plane<uint8_t>(ctx, p.scale_codes);
  q.scales2 = download_plane<float>(ctx, p.scales2);
  q.scales16 = download_plane<uint16_t>(ctx, p.scales16);
  q.zeros = download_plane<uint8_t>(ctx, p.zeros);
  ctx.synchronize();
  if (p.w4a16_interleaved)
    for (size_t i = 0; i + 4 <= q.codes.size(); i += 4) {
      uint32_t word;
      std::memcpy(&word, q.codes.data() + i, 4);
      word = kernels::w4a16_deinterleave(word);
      std::memcpy(q.codes.data() + i, &word, 4);
    }
  return q;
}

}  // namespace lowbit
