// Format names and dispatch: the one place that maps a Format to the file that defines it.
// Validation of shapes and options happens here once, so the per-format files can assume it.
#include "formats/format.h"

#include <algorithm>
#include <cctype>
#include <iterator>
#include <string>

#include "core/cpu_features.h"
#include "core/error.h"
#include "formats/format_impl.h"

namespace lowbit {

namespace {

// Every format's definition, in format_list.h order (= enum order).
#define LOWBIT_FORMAT_DEFINITION(id, symbol) &formats::symbol##_format,
const formats::FormatDefinition* const kDefinitions[] = {LOWBIT_FORMATS(LOWBIT_FORMAT_DEFINITION)};
#undef LOWBIT_FORMAT_DEFINITION

bool equals_ignoring_case(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
         });
}

const formats::FormatDefinition& definition(Format f) {
  const auto i = size_t(f);
  if (i >= std::size(kDefinitions) || kDefinitions[i]->info.format != f)
    throw Error(ExitCode::input, "unknown weight format id " + std::to_string(int(f)));
  return *kDefinitions[i];
}

}  // namespace

const FormatInfo& format_info(Format f) { return definition(f).info; }

Format parse_format(std::string_view name) {
  for (const auto* d : kDefinitions)
    if (equals_ignoring_case(name, d->info.name)) return d->info.format;
  throw UsageError("unknown weight format '" + std::string(name) + "' (valid: " + format_names() + ")");
}

std::string_view format_name(Format f) {
  const auto i = size_t(f);
  return i < std::size(kDefinitions) ? kDefinitions[i]->info.name : "unknown";
}

std::vector<Format> all_formats() {
  std::vector<Format> formats;
  for (const auto* d : kDefinitions) formats.push_back(d->info.format);
  return formats;
}

std::string format_names() {
  std::string names;
  for (const auto* d : kDefinitions) names += (names.empty() ? "" : ", ") + std::string(d->info.name);
  return names;
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
  const formats::FormatDefinition& d = definition(f);
  d.quantize(q, w, pool);
  // The planes are what the format's plane_sizes says (byte counts and the device copy rely on it).
  const PlaneSizes sizes = d.info.plane_sizes(rows, cols, opts);
  q.each([&](Plane p, const auto& plane, auto*) {
    if (plane.size() != sizes.elements[int(p)])
      throw Error(ExitCode::input, "internal error: " + std::string(format_name(f)) + " quantize() filled " +
                                          std::to_string(plane.size()) + " " + kPlaneDescriptions[int(p)] +
                                          " where its plane_sizes says " + std::to_string(sizes.elements[int(p)]));
  });
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
  const auto& d = definition(q.format);
  for (int64_t r = 0; r < q.rows; ++r) d.dequantize_row(q, r, out + r * q.cols);
}

void dequantize_row(const QuantizedTensor& q, int64_t row, float* out) {
  if (row < 0 || row >= q.rows)
    throw InputError("row " + std::to_string(row) + " out of range for a tensor with " + std::to_string(q.rows) + " rows");
  definition(q.format).dequantize_row(q, row, out);
}

void matmul(const QuantizedTensor& q, const float* x, int64_t n_tokens, float* y, ThreadPool& pool,
            const float* bias) {
  if (n_tokens <= 0 || q.rows == 0) return;
  definition(q.format).matmul(q, x, n_tokens, bias, y, pool);
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
  // Every plane of a row-wise format holds the same number of entries for each row.
  const PlaneSizes per_row = format_info(out.format).plane_sizes(1, out.cols, out.opts);
  out.each([&](Plane p, auto& plane, auto*) { plane.resize(per_row.elements[int(p)] * size_t(out.rows)); });
  const std::vector<int64_t> dst = output_rows(w);
  int64_t first_row = 0;
  for (const WeightPart& part : w.parts) {
    const QuantizedTensor& t = part.tensor;
    const int64_t* part_dst = dst.data() + first_row;
    zip_planes([&](Plane, auto*, const auto& from, auto& to) { place_rows(from, t.rows, part_dst, to); }, t, out);
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

namespace {
size_t plane_bytes(const PlaneSizes& s) {
  size_t total = s.scalar_bytes;
  zip_planes([&](Plane p, auto* element) { total += s.elements[int(p)] * sizeof(*element); });
  return total;
}
}  // namespace

size_t quantized_bytes(Format f, int64_t rows, int64_t cols, const QuantOptions& opts) {
  return plane_bytes(format_info(f).plane_sizes(rows, cols, opts));
}

size_t weight_bytes(const QuantizedTensor& q) {
  size_t total = format_info(q.format).plane_sizes(q.rows, q.cols, q.opts).scalar_bytes;
  q.each([&](Plane, const auto& plane, auto* element) { total += plane.size() * sizeof(*element); });
  return total;
}

}  // namespace lowbit
