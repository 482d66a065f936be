// Format names and dispatch: the one place that maps a Format to the file that defines it.
// Validation of shapes and options happens here once, so the per-format files can assume it.
#include "formats/format.h"

#include <algorithm>
#include <cctype>
#include <string>

#include "core/cpu_features.h"
#include "core/error.h"
#include "formats/format_impl.h"

namespace lowbit {

namespace {

struct FormatName {
  Format format;
  std::string_view name;  // canonical CLI spelling; parsing is case-insensitive
};

constexpr FormatName kFormatNames[] = {
    {Format::F32, "f32"},       {Format::BF16, "bf16"},     {Format::INT8, "int8"},
    {Format::NF4, "nf4"},       {Format::FP4, "fp4"},       {Format::NF4_DQ, "nf4-dq"},
    {Format::FP4_DQ, "fp4-dq"}, {Format::W4A16, "W4A16"},   {Format::W8A8, "W8A8"},
    {Format::W8A8_FP8, "W8A8-fp8"},
};

bool equals_ignoring_case(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
         });
}

const formats::FormatOps& ops_for(Format f) {
  switch (f) {
    case Format::F32:
    case Format::BF16: return formats::float_ops(f);
    case Format::NF4:
    case Format::FP4:
    case Format::NF4_DQ:
    case Format::FP4_DQ: return formats::four_bit_ops(f);
    case Format::INT8: return formats::int8_ops();
    case Format::W4A16: return formats::w4a16_ops();
    case Format::W8A8: return formats::w8a8_ops();
    case Format::W8A8_FP8: return formats::w8a8_fp8_ops();
  }
  throw Error(ExitCode::input, "unknown weight format id " + std::to_string(int(f)));
}

}  // namespace

Format parse_format(std::string_view name) {
  for (const auto& entry : kFormatNames)
    if (equals_ignoring_case(name, entry.name)) return entry.format;
  std::string valid;
  for (const auto& entry : kFormatNames) valid += (valid.empty() ? "" : ", ") + std::string(entry.name);
  throw UsageError("unknown weight format '" + std::string(name) + "' (valid: " + valid + ")");
}

std::string_view format_name(Format f) {
  for (const auto& entry : kFormatNames)
    if (entry.format == f) return entry.name;
  return "unknown";
}

std::vector<Format> all_formats() {
  std::vector<Format> formats;
  for (const auto& entry : kFormatNames) formats.push_back(entry.format);
  return formats;
}

QuantizedTensor quantize(Format f, const float* w, int64_t rows, int64_t cols, const QuantOptions& opts,
                         ThreadPool& pool) {
  if (rows < 0 || cols < 0)
    throw InputError("cannot quantize a tensor of shape [" + std::to_string(rows) + ", " + std::to_string(cols) + "]");
  if (is_blockwise_four_bit(f) && (opts.block_size <= 0 || opts.block_size % 2 != 0))
    throw UsageError("block size must be a positive even number, got " + std::to_string(opts.block_size));
  if (f == Format::W4A16 && opts.w4_group <= 0)
    throw UsageError("W4A16 group size must be positive, got " + std::to_string(opts.w4_group));
  QuantizedTensor q;
  q.format = f;
  q.rows = rows;
  q.cols = cols;
  q.opts = opts;
  ops_for(f).quantize(q, w, pool);
  return q;
}

QuantizedTensor quantize(Format f, const float* w, int64_t rows, int64_t cols, const QuantOptions& opts) {
  ThreadPool pool;
  return quantize(f, w, rows, cols, opts, pool);
}

void set_scalar_decode_only(bool scalar_only) {
  set_cpu_level_limit(scalar_only ? CpuLevel::plain : CpuLevel::avx512_vnni);
}

#if LOWBIT_HAVE_AVX2_DECODE
bool formats::avx2_decode() { return cpu_level() >= CpuLevel::avx2; }
#endif

void double_quantize_scales(QuantizedTensor& q) {
  if (q.format != Format::NF4 && q.format != Format::FP4)
    throw InputError(std::string("double_quantize_scales: ") + std::string(format_name(q.format)) +
                     " is not nf4 or fp4");
  formats::double_quantize_four_bit(q);
}

void dequantize(const QuantizedTensor& q, float* out) {
  const auto& ops = ops_for(q.format);
  for (int64_t r = 0; r < q.rows; ++r) ops.dequantize_row(q, r, out + r * q.cols);
}

void dequantize_row(const QuantizedTensor& q, int64_t row, float* out) {
  if (row < 0 || row >= q.rows)
    throw InputError("row " + std::to_string(row) + " out of range for a tensor with " + std::to_string(q.rows) + " rows");
  ops_for(q.format).dequantize_row(q, row, out);
}

void matmul(const QuantizedTensor& q, const float* x, int64_t n_tokens, float* y, ThreadPool& pool,
            const float* bias) {
  if (n_tokens <= 0 || q.rows == 0) return;
  ops_for(q.format).matmul(q, x, n_tokens, bias, y, pool);
}

LinearWeight::LinearWeight(QuantizedTensor single) { parts.push_back({std::move(single), {}}); }

LinearWeight::LinearWeight(std::vector<WeightPart> ps) : parts(std::move(ps)) {
  if (parts.empty()) throw InputError("a linear weight needs at least one part");
  const QuantizedTensor& first = parts.front().tensor;
  for (const WeightPart& p : parts) {
    const QuantizedTensor& t = p.tensor;
    if (t.format != first.format || t.cols != first.cols || t.opts.block_size != first.opts.block_size ||
        t.opts.int8_threshold != first.opts.int8_threshold || t.opts.w4_symmetric != first.opts.w4_symmetric ||
        t.opts.w4_group != first.opts.w4_group)
      throw InputError("the parts of a linear weight differ in format, columns or options (" +
                       std::string(format_name(t.format)) + " [" + std::to_string(t.rows) + ", " +
                       std::to_string(t.cols) + "] after " + std::string(format_name(first.format)) + " [" +
                       std::to_string(first.rows) + ", " + std::to_string(first.cols) + "])");
    if (p.row_order.empty()) continue;
    if (int64_t(p.row_order.size()) != t.rows)
      throw InputError("a row order of " + std::to_string(p.row_order.size()) + " entries for a part of " +
                       std::to_string(t.rows) + " rows");
    std::vector<uint8_t> seen(p.row_order.size(), 0);
    for (int32_t r : p.row_order) {
      if (r < 0 || r >= t.rows || seen[size_t(r)])
        throw InputError("a part's row order is not a permutation of its " + std::to_string(t.rows) + " rows");
      seen[size_t(r)] = 1;
    }
  }
}

int64_t LinearWeight::rows() const {
  int64_t total = 0;
  for (const WeightPart& p : parts) total += p.tensor.rows;
  return total;
}

bool quantizes_rows_independently(Format f) { return !is_blockwise_four_bit(f); }

std::vector<int64_t> output_rows(const LinearWeight& w) {
  std::vector<int64_t> out;
  out.reserve(size_t(w.rows()));
  int64_t first = 0;
  for (const WeightPart& p : w.parts) {
    for (int64_t r = 0; r < p.tensor.rows; ++r) out.push_back(first + (p.row_order.empty() ? r : p.row_order[size_t(r)]));
    first += p.tensor.rows;
  }
  return out;
}

namespace {
// Moves whole rows of one plane: row r of `in` (rows equal chunks) to row dst[r] of `out`.
template <class T>
void place_rows(const std::vector<T>& in, int64_t rows, const int64_t* dst, std::vector<T>& out) {
  if (rows == 0 || in.empty()) return;
  const size_t chunk = in.size() / size_t(rows);
  for (int64_t r = 0; r < rows; ++r)
    std::copy_n(in.begin() + std::ptrdiff_t(size_t(r) * chunk), chunk, out.begin() + std::ptrdiff_t(size_t(dst[r]) * chunk));
}
}  // namespace

QuantizedTensor stack_rows(const LinearWeight& w) {
  if (!quantizes_rows_independently(w.format()))
    throw InputError(std::string("stack_rows: ") + std::string(format_name(w.format())) +
                     " blocks run across rows; its parts cannot be stacked without re-quantizing");
  if (w.is_single()) return w.parts.front().tensor;
  const QuantizedTensor& first = w.parts.front().tensor;
  QuantizedTensor out;
  out.format = first.format;
  out.rows = w.rows();
  out.cols = first.cols;
  out.opts = first.opts;
  // Every plane of a row-wise format holds the same number of entries for each row (read from
  // the first part that has rows).
  size_t codes_per_row = 0, scales_per_row = 0, scales16_per_row = 0, zeros_per_row = 0;
  for (const WeightPart& p : w.parts)
    if (p.tensor.rows > 0) {
      const QuantizedTensor& t = p.tensor;
      codes_per_row = t.codes.size() / size_t(t.rows);
      scales_per_row = t.scales.size() / size_t(t.rows);
      scales16_per_row = t.scales16.size() / size_t(t.rows);
      zeros_per_row = t.zeros.size() / size_t(t.rows);
      break;
    }
  out.codes.resize(codes_per_row * size_t(out.rows));
  out.scales.resize(scales_per_row * size_t(out.rows));
  out.scales16.resize(scales16_per_row * size_t(out.rows));
  out.zeros.resize(zeros_per_row * size_t(out.rows));
  const std::vector<int64_t> dst = output_rows(w);
  int64_t first_row = 0;
  for (const WeightPart& p : w.parts) {
    const QuantizedTensor& t = p.tensor;
    const int64_t* part_dst = dst.data() + first_row;
    place_rows(t.codes, t.rows, part_dst, out.codes);
    place_rows(t.scales, t.rows, part_dst, out.scales);
    place_rows(t.scales16, t.rows, part_dst, out.scales16);
    place_rows(t.zeros, t.rows, part_dst, out.zeros);
    first_row += t.rows;
  }
  return out;
}

LinearWeight quantize_parts(Format f, const std::vector<HostWeightPart>& parts, int64_t cols, const QuantOptions& opts) {
  ThreadPool pool;
  return quantize_parts(f, parts, cols, opts, pool);
}

LinearWeight quantize_parts(Format f, const std::vector<HostWeightPart>& parts, int64_t cols, const QuantOptions& opts,
                            ThreadPool& pool) {
  std::vector<WeightPart> quantized;
  for (const HostWeightPart& p : parts) quantized.push_back({quantize(f, p.values, p.rows, cols, opts, pool), p.row_order});
  LinearWeight w(std::move(quantized));
  if (quantizes_rows_independently(f) && !w.is_single()) return LinearWeight(stack_rows(w));
  return w;
}

size_t weight_bytes(const LinearWeight& w) {
  size_t total = 0;
  for (const WeightPart& p : w.parts) total += weight_bytes(p.tensor) + p.row_order.size() * sizeof(int32_t);
  return total;
}

size_t quantized_bytes(Format f, int64_t rows, int64_t cols, const QuantOptions& opts) {
  // The planes each format's quantize() allocates (see the layout comment in its .cpp file).
  const size_t n = size_t(rows) * size_t(cols), r = size_t(rows);
  switch (f) {
    case Format::F32: return 4 * n;
    case Format::BF16: return 2 * n;
    case Format::INT8:
    case Format::W8A8:
    case Format::W8A8_FP8: return n + 4 * r;  // int8 / e4m3 codes + one fp32 scale per row
    case Format::W4A16: {
      const size_t groups = size_t((cols + opts.w4_group - 1) / opts.w4_group);
      return r * size_t((cols + 1) / 2) + 2 * r * groups + (opts.w4_symmetric ? 0 : r * groups);
    }
    case Format::NF4:
    case Format::FP4:
    case Format::NF4_DQ:
    case Format::FP4_DQ: {
      const size_t blocks = (n + size_t(opts.block_size) - 1) / size_t(opts.block_size);
      const size_t codes = (n + 1) / 2;
      if (!is_double_quantized(f)) return codes + 4 * blocks;
      return codes + blocks + 4 * ((blocks + 255) / 256) + 4;  // 8-bit absmax codes, fp32 per 256, offset
    }
  }
  return 0;
}

size_t weight_bytes(const QuantizedTensor& q) {
  return q.codes.size() + q.scales.size() * sizeof(float) + q.scale_codes.size() +
         q.scales2.size() * sizeof(float) + (q.format == Format::NF4_DQ || q.format == Format::FP4_DQ ? sizeof(float) : 0) +
         q.scales16.size() * sizeof(uint16_t) + q.zeros.size();
}

}  // namespace lowbit
