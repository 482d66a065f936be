#include "backend/cuda_quantized.h"

#include <iterator>
#include <type_traits>

#include <fmt/format.h>

#include "core/error.h"
#include "kernels/gemv.cuh"
#include "kernels/quantize_nf4_fp4.cuh"

namespace lowbit {

namespace {

// Every format's kernels, in format_list.h (= enum) order.
#define LOWBIT_KERNELS_ENTRY(id, symbol) &kernels::symbol##_kernels,
const QuantizedKernels* const kQuantizedKernels[] = {LOWBIT_FORMATS(LOWBIT_KERNELS_ENTRY)};
#undef LOWBIT_KERNELS_ENTRY

std::string plane_label(Plane p, const std::string& what) {
  return p == Plane::codes ? what : "the " + std::string(kPlaneDescriptions[int(p)]) + " of " + what;
}

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
  const auto i = size_t(f);
  return i < std::size(kQuantizedKernels) ? kQuantizedKernels[i] : nullptr;
}

size_t DeviceQuantizedPlanes::bytes() const {
  size_t total = format_info(format).plane_sizes(rows, cols, opts).scalar_bytes;
  each([&](Plane, const DeviceMemory& plane, auto*) { total += plane.bytes(); });
  return total;
}

kernels::QuantizedWeightView DeviceQuantizedPlanes::view() const {
  kernels::QuantizedWeightView v;
  v.rows = int(rows);
  v.cols = int(cols);
  v.out_stride = int(rows);
  // An empty plane is a null pointer (symmetric W4A16 has no zero points, 8 implied: the kernels
  // test the pointer).
  zip_planes(
      [](Plane, auto* element, const DeviceMemory& plane, auto& pointer) {
        using T = std::remove_pointer_t<decltype(element)>;
        pointer = plane.bytes() > 0 ? plane.as<T>() : nullptr;
      },
      *this, v);
  v.offset = offset;
  v.repacked = repacked;
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
  zip_planes([&](Plane id, auto*, const auto& plane, DeviceMemory& mem) { mem = upload_plane(ctx, plane, plane_label(id, what)); },
             q, p);
  const QuantizedKernels* k = quantized_kernels(q.format);
  if (k != nullptr && k->repack != nullptr) {
    const cudaError_t e = k->repack(p.codes.bytes() > 0 ? p.codes.as<uint8_t>() : nullptr, int64_t(p.codes.bytes()),
                                    int(q.rows), int(q.cols), ctx.stream());
    if (e != cudaErrorNotSupported) cuda_check(e, "the repack of the codes after their upload");
    p.repacked = e == cudaSuccess;
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
  zip_planes(
      [&](Plane, auto* element, const DeviceMemory& mem, auto& plane) {
        plane = download_plane<std::remove_pointer_t<decltype(element)>>(ctx, mem);
      },
      p, q);
  ctx.synchronize();
  if (p.repacked) quantized_kernels(p.format)->unrepack(q.codes.data(), q.codes.size());
  return q;
}

}  // namespace lowbit
