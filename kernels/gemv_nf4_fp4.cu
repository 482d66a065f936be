// NF4 / FP4 and their -dq forms: the decode GEMV (the template in kernels/gemv_template.cuh with
// the format below) and the bf16 dequantizer of the prefill path. The weight is one byte stream
// over the row-major flattened tensor (element 2j in the HIGH nibble of byte j); blocks of
// block_size consecutive flat values share an fp32 absmax (plain) or an 8-bit code of
// (absmax - offset) with an fp32 scale per 256 blocks (-dq: absmax = dynamic_map[code] *
// scales2[b / 256] + offset, rounded after the multiply and after the add as the CPU reference
// does, so no FMA). Layout: src/formats/format_nf4_fp4.cpp.
//
// A 16-byte chunk is 32 consecutive codes of a row. When rows start on a chunk (cols % 32 == 0)
// and blocks are a power of two of at least 32 values, a chunk lies in one block: its absmax is
// found by a shift and applied once to sum_i table[code_i] x_i. The 16-entry table (and, for -dq,
// the 256-entry map) sit in shared memory: the index is a run-time nibble, which registers cannot
// take and constant memory would serialize across lanes.
#include "formats/code_tables.h"
#include "kernels/gemv_nf4_fp4.cuh"
#include "kernels/gemv_template.cuh"

namespace lowbit::kernels {

namespace {

// Code tables (src/formats/code_tables.h): [0] NF4, [1] bnb FP4 (its own code, bit 3 = sign).
__constant__ float kFourBitTables[2][16] = {LOWBIT_NF4_CODES, LOWBIT_FP4_CODES};

// bnb's create_dynamic_map(signed=True) (src/formats/code_tables.h).
__constant__ float kDynamicMap[256] = LOWBIT_DYNAMIC_MAP_SIGNED;

__device__ __forceinline__ float block_absmax(const QuantizedWeightView& w, int64_t block) {
  if (!w.double_quant) return w.scales[block];
  return dq_absmax(kDynamicMap[w.scale_codes[block]], w.scales2[block / kDqBlock], w.offset);
}

struct FourBitDecoder {
  __device__ static float value(const QuantizedWeightView& w, int r, int c) {
    const int64_t flat = int64_t(r) * w.cols + c;
    return kFourBitTables[w.nf4 ? 0 : 1][four_bit_code(w.codes, flat)] * block_absmax(w, flat / w.block_size);
  }
};

// log2 of a power of two: one instruction (the fast path's block sizes are powers of two).
__device__ __forceinline__ int log2_exact(int v) { return __ffs(v) - 1; }

template <bool kDoubleQuant>
struct FourBitFormat : gemv::Fp32Activations {
  struct Shared {
    float table[16];
    float map[kDoubleQuant ? 256 : 1];
  };
  struct Chunk {
    float absmax;
  };
  static constexpr int kValues = 32, kSub = 8;
  static constexpr bool kScaled = true;
  static constexpr int rows_per_warp(int tokens) { return tokens <= 2 ? 4 : (tokens <= 4 ? 2 : 1); }
  static bool fast(const QuantizedWeightView& w) {
    const int b = w.block_size;
    return w.cols % kValues == 0 && b >= kValues && (b & (b - 1)) == 0;
  }
  static bool valid(const QuantizedWeightView& w) { return w.block_size > 0; }
  __device__ static void load_shared(const QuantizedWeightView& w, Shared& s) {
    if (threadIdx.x < 16) s.table[threadIdx.x] = kFourBitTables[w.nf4 ? 0 : 1][threadIdx.x];
    if (kDoubleQuant)
      for (int i = threadIdx.x; i < 256; i += blockDim.x) s.map[i] = kDynamicMap[i];
  }
  __device__ static __forceinline__ uint4 load(const QuantizedWeightView& w, int r, int c) {
    return reinterpret_cast<const uint4*>(w.codes + size_t(r) * size_t(w.cols / 2))[c];
  }
  __device__ static __forceinline__ Chunk chunk(const QuantizedWeightView& w, const Shared& s, int r, int c) {
    const int64_t block = (int64_t(r) * w.cols + int64_t(c) * kValues) >> log2_exact(w.block_size);
    if (!kDoubleQuant) return {w.scales[block]};
    return {dq_absmax(s.map[w.scale_codes[block]], w.scales2[block >> 8], w.offset)};
  }
  __device__ static __forceinline__ float scale(Chunk c) { return c.absmax; }
  // Word s of the chunk holds codes 8s..8s+7: byte i/2 has code i in its high nibble (i even).
  __device__ static __forceinline__ void decode(const Shared& s, Chunk, uint4 raw, int sub, float (&v)[kSub]) {
    const unsigned word = sub == 0 ? raw.x : sub == 1 ? raw.y : sub == 2 ? raw.z : raw.w;
#pragma unroll
    for (int i = 0; i < kSub; ++i) v[i] = s.table[four_bit_word_code(word, i)];
  }
  __device__ static float value(const QuantizedWeightView& w, const Shared& s, int r, int c) {
    const int64_t flat = int64_t(r) * w.cols + c;
    const int64_t block = flat / w.block_size;
    const float absmax =
        kDoubleQuant ? dq_absmax(s.map[w.scale_codes[block]], w.scales2[block / kDqBlock], w.offset) : w.scales[block];
    return s.table[four_bit_code(w.codes, flat)] * absmax;
  }
};

}  // namespace

cudaError_t launch_gemv_four_bit(const QuantizedWeightView& w, const float* bias, const float* x, int n_tokens,
                                 float* y, void*, cudaStream_t stream) {
  if (w.double_quant) return gemv::launch_gemv<FourBitFormat<true>>(w, bias, x, n_tokens, y, stream);
  return gemv::launch_gemv<FourBitFormat<false>>(w, bias, x, n_tokens, y, stream);
}

cudaError_t launch_fused_gemv_four_bit(const GemvParts& parts, const float* bias, const float* x, int n_tokens,
                                       float* y, const GemvSteps& steps, cudaStream_t stream) {
  if (parts.part[0].double_quant)
    return gemv::launch_fused_gemv<FourBitFormat<true>>(parts, bias, x, n_tokens, y, steps, stream);
  return gemv::launch_fused_gemv<FourBitFormat<false>>(parts, bias, x, n_tokens, y, steps, stream);
}

cudaError_t launch_dequantize_four_bit(const QuantizedWeightView& w, uint16_t* out, cudaStream_t stream) {
  return launch_dequantize_bf16<FourBitDecoder>(w, out, stream);
}

// One set for the four formats: the view's nf4 / double_quant flags pick the table and the absmax.
#define LOWBIT_FOUR_BIT_KERNELS                                                                              \
  {launch_gemv_four_bit, no_gemv_workspace, false, launch_dequantize_four_bit, launch_fused_gemv_four_bit, \
   nullptr, nullptr, PrefillGemm::none, false}
extern const QuantizedKernels nf4_kernels LOWBIT_FOUR_BIT_KERNELS;
extern const QuantizedKernels fp4_kernels LOWBIT_FOUR_BIT_KERNELS;
extern const QuantizedKernels nf4_dq_kernels LOWBIT_FOUR_BIT_KERNELS;
extern const QuantizedKernels fp4_dq_kernels LOWBIT_FOUR_BIT_KERNELS;
#undef LOWBIT_FOUR_BIT_KERNELS

}  // namespace lowbit::kernels
