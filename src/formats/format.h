// Weight formats: every format is defined once (its own .cpp: bit layout, code table, block size,
// scale storage) and reached through these functions. The byte planes of a QuantizedTensor are laid
// out exactly as the CUDA kernels read them, so uploading to the GPU is a copy, not a re-pack.
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/parallel.h"
#include "formats/format_list.h"
#include "formats/planes.h"

namespace lowbit {

// The weight formats, in the order of format_list.h (each one's definition: its FormatInfo, in
// the format's src/formats/format_*.cpp).
enum class Format {
#define LOWBIT_FORMAT_ENUM(id, symbol) id,
  LOWBIT_FORMATS(LOWBIT_FORMAT_ENUM)
#undef LOWBIT_FORMAT_ENUM
};

struct QuantOptions {
  int block_size = 64;          // nf4/fp4 (-dq) block of consecutive values
  float int8_threshold = 6.0f;  // LLM.int8 outlier threshold; 0 = no decomposition
  bool w4_symmetric = false;    // W4A16: symmetric variant (no zero point)
  int w4_group = 128;           // W4A16 group size along the input dimension
};

// Parses a CLI format name ("bf16", "nf4", "fp4-dq", "W4A16", ...; case-insensitive).
// Throws UsageError naming the value and listing the valid names.
Format parse_format(std::string_view name);
std::string_view format_name(Format f);  // canonical CLI spelling
std::vector<Format> all_formats();
// "f32, bf16, int8, ...": every canonical name, in all_formats() order (help texts, errors).
std::string format_names();

// bitsandbytes' blockwise 4-bit formats: nf4, fp4, nf4-dq, fp4-dq (format_nf4_fp4.cpp).
inline bool is_blockwise_four_bit(Format f) {
  return f == Format::NF4 || f == Format::FP4 || f == Format::NF4_DQ || f == Format::FP4_DQ;
}
// The two of them with double-quantized absmax.
inline bool is_double_quantized(Format f) { return f == Format::NF4_DQ || f == Format::FP4_DQ; }

// A quantized 2-D weight of shape [rows = out_features, cols = in_features], flattened row-major:
// the planes of planes.h as host vectors (codes, scales, scale_codes, scales2, scales16, zeros),
// each format's layout documented in its own .cpp file, plus the shape, the options and one
// per-tensor scalar.
template <class T>
using HostPlane = std::vector<T>;
struct QuantizedTensor : Planes<HostPlane> {
  Format format = Format::F32;
  int64_t rows = 0, cols = 0;
  QuantOptions opts;
  float offset = 0.0f;  // double quantization: mean of absmax, once per tensor

  int64_t numel() const { return rows * cols; }
};

// How a format's matmul treats the activations (what its reference does at run time).
enum class Activations {
  fp32,            // x as given: y = W_dequantized x in fp32
  fp16,            // x rounded to fp16 first (W4A16)
  llm_int8,        // LLM.int8: fp16 x, int8 rows by absmax per token, outlier columns in fp16
  int8_per_token,  // W8A8: symmetric int8 per token
  e4m3_per_token,  // W8A8-fp8: e4m3 per token
};

// The KL(bf16 || format) a format may reach on a fixture model: 1.5x what it measured there, the
// contract test_quant_model checks (docs/quality.md).
struct KlBound {
  std::string_view model;  // fixture folder name (tests/data/models/<model>, or stories260K)
  double max_kl;
};

// What the rest of lowbit knows about a format: its definition, in the format's own .cpp file.
struct FormatInfo {
  Format format;
  std::string_view name;     // canonical CLI spelling (parsing is case-insensitive)
  std::string_view summary;  // one line: what the format is
  Activations activations;
  // Every output row quantized on its own: parts of a layer may be stacked (stack_rows).
  bool rows_independent;
  // The planes quantize() fills for a shape, element counts (quantized_bytes, weight_bytes).
  PlaneSizes (*plane_sizes)(int64_t rows, int64_t cols, const QuantOptions& opts);
  std::span<const KlBound> kl_bounds;
};

// The definition of f (throws InputError for an id outside the enum).
const FormatInfo& format_info(Format f);

// Quantization runs on `pool` (the caller's threads); the overload without one uses all cores.
QuantizedTensor quantize(Format f, const float* w, int64_t rows, int64_t cols, const QuantOptions& opts,
                         ThreadPool& pool);
QuantizedTensor quantize(Format f, const float* w, int64_t rows, int64_t cols, const QuantOptions& opts);

// NF4 / FP4 -> NF4_DQ / FP4_DQ: double-quantizes the per-block absmax of a quantized tensor
// (the codes do not change: -dq quantizes values against the exact absmax, then stores it
// compressed). quantize(NF4_DQ, w) == double_quantize_scales(quantize(NF4, w)) byte for byte;
// a GPU quantizer that produces NF4 planes uses this for the -dq formats.
void double_quantize_scales(QuantizedTensor& q);

// Reconstructs all rows*cols values as the reference dequantizer does.
void dequantize(const QuantizedTensor& q, float* out);
// Reconstructs one row (cols values); used for embedding lookups.
void dequantize_row(const QuantizedTensor& q, int64_t row, float* out);

// y[t, r] = sum_c x[t, c] * W[r, c] (+ bias[r]) for t < n_tokens, with the format's own run-time
// arithmetic (LLM.int8 decomposition for INT8, per-token int8 activations for W8A8, per-token
// e4m3 activations for W8A8-fp8, 16-bit activations for W4A16). x is [n_tokens, cols], y is [n_tokens, rows], both fp32; bias is null
// or `rows` fp32 values. The bias goes where the reference adds it: LLM.int8 as bitsandbytes'
// Linear8bitLt in fp16 (the bias rounded to fp16, added in fp32 to the rescaled int32 sums
// before the fp16 output rounding, the outlier columns after); every other format adds it in
// fp32 after the dot product, as F.linear on the dequantized weight.
void matmul(const QuantizedTensor& q, const float* x, int64_t n_tokens, float* y, ThreadPool& pool,
            const float* bias = nullptr);

// The CPU matmuls run vector kernels chosen by cpu_level() (core/cpu_features.h), giving exactly
// the plain loops' values; true here caps the level at plain for the whole process (tests compare
// the two), false lifts the cap. set_cpu_level_limit caps at any level.
void set_scalar_decode_only(bool scalar_only);

// Exact bytes the weight occupies: codes plus every scale, zero point and double-quant state.
size_t weight_bytes(const QuantizedTensor& q);
// weight_bytes(quantize(f, w, rows, cols, opts)) from the shape alone, without quantizing.
size_t quantized_bytes(Format f, int64_t rows, int64_t cols, const QuantOptions& opts);

// --- a layer's weight made of checkpoint tensors -------------------------------------------------
// transformers + bitsandbytes quantize every nn.Linear weight on its own, in the checkpoint's
// layout. lowbit runs Llama's q|k|v and gate|up as one matmul each, and wants Falcon's fused
// query_key_value in [q heads | k heads | v heads] order; a LinearWeight does both without
// changing one quantized value: each checkpoint tensor is a part, quantized on its own, and each
// part says where its rows land in the layer's output.
//
// Output row of row r of part p = (rows of parts 0..p-1) + (row_order empty ? r : row_order[r]);
// row_order is a permutation of 0..rows-1 (Falcon's head reorder, applied to whole output rows
// after quantization, never to the values before it).
struct WeightPart {
  QuantizedTensor tensor;
  std::vector<int32_t> row_order;
};

struct LinearWeight {
  std::vector<WeightPart> parts;

  LinearWeight(QuantizedTensor single);  // NOLINT: implicit, a plain tensor is a one-part weight
  // Throws InputError unless there is at least one part, all parts share format, cols and options,
  // and every row_order is empty or a permutation of its part's rows.
  explicit LinearWeight(std::vector<WeightPart> parts);

  Format format() const { return parts.front().tensor.format; }
  int64_t rows() const;
  int64_t cols() const { return parts.front().tensor.cols; }
  // One part in checkpoint row order: the weight is that tensor.
  bool is_single() const { return parts.size() == 1 && parts.front().row_order.empty(); }
};

// A host fp32 checkpoint tensor [rows, cols] and where its rows go (WeightPart::row_order).
struct HostWeightPart {
  const float* values = nullptr;
  int64_t rows = 0;
  std::vector<int32_t> row_order;
};

// The formats that quantize each output row on its own: every format but the blockwise 4-bit
// ones, whose blocks run across rows (and, for -dq, whose offset and groups of 256 absmax values
// span the tensor). Stacking or reordering their quantized rows is the same as quantizing the
// stacked or reordered fp32 rows, so for them parts may be merged.
inline bool quantizes_rows_independently(Format f) { return format_info(f).rows_independent; }

// A row-wise format's weight as one tensor in output row order (exact: whole quantized rows are
// moved). Throws InputError for the blockwise 4-bit formats.
QuantizedTensor stack_rows(const LinearWeight& w);

// Quantizes each part on its own; for a row-wise format the parts are then stacked into one
// tensor, so the result is always exactly what the reference gives for each checkpoint tensor.
LinearWeight quantize_parts(Format f, const std::vector<HostWeightPart>& parts, int64_t cols,
                            const QuantOptions& opts);
// The same on `pool`'s threads.
LinearWeight quantize_parts(Format f, const std::vector<HostWeightPart>& parts, int64_t cols,
                            const QuantOptions& opts, ThreadPool& pool);

// Output row of each row of each part, concatenated over the parts ([rows()] values).
std::vector<int64_t> output_rows(const LinearWeight& w);

// Bytes of every part (weight_bytes) plus 4 per row of each row_order (the map lives with them).
size_t weight_bytes(const LinearWeight& w);

}  // namespace lowbit
