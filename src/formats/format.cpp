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

void matmul(const QuantizedTensor& q, const float* x, int64_t n_tokens, float* y, ThreadPool& pool) {
  if (n_tokens <= 0 || q.rows == 0) return;
  ops_for(q.format).matmul(q, x, n_tokens, y, pool);
}

size_t weight_bytes(const QuantizedTensor& q) {
  return q.codes.size() + q.scales.size() * sizeof(float) + q.scale_codes.size() +
         q.scales2.size() * sizeof(float) + (q.format == Format::NF4_DQ || q.format == Format::FP4_DQ ? sizeof(float) : 0) +
         q.scales16.size() * sizeof(uint16_t) + q.zeros.size();
}

}  // namespace lowbit
