// Layout of bitsandbytes' blockwise 4-bit formats (nf4, fp4, nf4-dq, fp4-dq; defined in
// format_nf4_fp4.cpp), shared by the CPU reference and the CUDA kernels: where a code sits in the
// nibble stream and the -dq block of absmax values. The code tables are in code_tables.h.
#pragma once
#include "formats/hd_math.h"

namespace lowbit {

inline constexpr int kDqBlock = 256;  // -dq: absmax values per second-level scale

// One nibble stream over the row-major flattened weight: flat element 2j in the HIGH nibble of
// byte j, 2j + 1 in the low one.
LOWBIT_HD int four_bit_code(const uint8_t* codes, int64_t flat) {
  const int byte = codes[flat >> 1];
  return (flat & 1) ? (byte & 15) : (byte >> 4);
}
// Code of element i (0..7) of a 32-bit little-endian load of that stream at an even element:
// byte i/2 holds elements i (high nibble, i even) and i + 1 (low nibble).
LOWBIT_HD int four_bit_word_code(uint32_t word, int i) {
  return int((word >> (8 * (i >> 1) + ((i & 1) ? 0 : 4))) & 15u);
}
// -dq: absmax = dynamic_map[code] * scales2[block / 256] + offset, rounded after the multiply and
// after the add (bnb: a multiply kernel, then a torch add).
LOWBIT_HD float dq_absmax(float map_value, float scale2, float offset) {
  return add_rn(mul_rn(map_value, scale2), offset);
}

}  // namespace lowbit
