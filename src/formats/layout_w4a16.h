// Layout of W4A16 (defined in format_w4a16.cpp), shared by the CPU reference and the CUDA
// kernels: rows start on a byte, column 2j in the LOW nibble of byte j of its row; one fp16 scale
// (and, asymmetric, one zero point byte) per (row, group of `group` columns).
#pragma once
#include "formats/hd_math.h"

namespace lowbit {

inline constexpr int kW4a16SymmetricZero = 8;  // the implied zero point of the symmetric variant

LOWBIT_HD int64_t w4a16_row_bytes(int64_t cols) { return (cols + 1) / 2; }
// Groups per row: the columns of the [rows, groups] scale and zero planes.
LOWBIT_HD int64_t w4a16_groups(int64_t cols, int64_t group) { return (cols + group - 1) / group; }
LOWBIT_HD int w4a16_code(const uint8_t* codes, int row, int col, int cols) {
  const int byte = codes[size_t(row) * size_t(w4a16_row_bytes(cols)) + size_t(col / 2)];
  return (col & 1) ? (byte >> 4) : (byte & 15);
}
// Index of (row, col)'s group in the [rows, groups] scale and zero planes.
LOWBIT_HD size_t w4a16_group_index(int row, int col, int cols, int group) {
  return size_t(row) * size_t(w4a16_groups(cols, group)) + size_t(col / group);
}
// Code of column i (0..7) of a 32-bit little-endian load at an even column: nibble i.
LOWBIT_HD int w4a16_word_code(uint32_t word, int i) { return int((word >> (4 * i)) & 15u); }
// (code - zero) * scale: exact in fp32 (a small integer times an fp16 value).
LOWBIT_HD float w4a16_value(int code, int zero, float scale) { return float(code - zero) * scale; }

}  // namespace lowbit
