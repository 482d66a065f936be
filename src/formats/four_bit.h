// The decoding half of bitsandbytes' blockwise 4-bit formats (nf4, fp4, nf4-dq, fp4-dq), whose
// definition is in format_nf4_fp4.cpp: the code tables and each block's absmax. Shared by that
// file's plain loops and the vector kernels, so the weight values are defined once.
#pragma once
#include <array>
#include <cstdint>

#include "formats/code_tables.h"
#include "formats/format.h"
#include "formats/layout_four_bit.h"

namespace lowbit::formats {

inline constexpr std::array<float, 16> kNf4Table = LOWBIT_NF4_CODES;

// bnb builds FP4 as {0, 0.0625, 8, 12, 4, 6, 2, 3, -0, ...} divided by 12 in fp32. Code 8 decodes
// to +0.0 as libbitsandbytes_cpu's dequantizer does (its torch fallback for odd column counts
// gives -0.0; the value is the same). The encoder's order does not depend on the sign of zero.
inline constexpr std::array<float, 16> kFp4Table = LOWBIT_FP4_CODES;

// bnb's create_dynamic_map(signed=True) (256 sorted fp32 values, as torch builds them).
inline constexpr std::array<float, 256> kDynamicMap = LOWBIT_DYNAMIC_MAP_SIGNED;

inline const std::array<float, 16>& code_table(Format f) {
  return (f == Format::NF4 || f == Format::NF4_DQ) ? kNf4Table : kFp4Table;
}

// fl(fl(a * b) + c): the two roundings bnb performs (a multiply kernel, then a torch add). The
// volatile keeps the compiler from fusing them into one FMA on targets that have it.
inline float multiply_then_add(float a, float b, float c) {
  volatile float product = a * b;
  return product + c;
}

// The absmax of flat block `block`: stored (nf4, fp4) or decoded from its 8-bit code (-dq).
inline float block_absmax(const QuantizedTensor& q, int64_t block) {
  if (!is_double_quantized(q.format)) return q.scales[size_t(block)];
  return multiply_then_add(kDynamicMap[q.scale_codes[size_t(block)]], q.scales2[size_t(block / kDqBlock)], q.offset);
}

}  // namespace lowbit::formats
