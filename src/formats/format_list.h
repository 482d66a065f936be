// Every weight format, in CLI / sweep order: X(enum id, symbol). This list is the only place a
// format is enumerated; the Format enum (format.h), the CPU definitions (formats::<symbol>_format,
// in the format's src/formats/format_*.cpp) and the CUDA kernels (kernels::<symbol>_kernels, in its
// kernels/*.cu) are all derived from it. Adding a format: docs/adding-a-format.md.
// Plain preprocessor text, no includes: nvcc and the host compiler both read it.
#pragma once

#define LOWBIT_FORMATS(X) \
  X(F32, f32)             \
  X(BF16, bf16)           \
  X(INT8, int8)           \
  X(NF4, nf4)             \
  X(FP4, fp4)             \
  X(NF4_DQ, nf4_dq)       \
  X(FP4_DQ, fp4_dq)       \
  X(W4A16, w4a16)         \
  X(W8A8, w8a8)           \
  X(W8A8_FP8, w8a8_fp8)
