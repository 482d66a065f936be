// Which vector instruction sets the CPU kernels may use, detected once at run time, so one
// portable binary runs the AVX-512 kernels where the CPU has them and the AVX2 or plain loops
// elsewhere. Every level's kernels are pinned by tests to the plain loops (tests/test_kernels.cpp).
#pragma once
#include <string>
#include <string_view>

namespace lowbit {

// Kernel levels, each a superset of the one below.
//   plain       scalar loops (what the compiler makes of them for baseline x86-64): the oracle
//   avx2        AVX2 decoders (8 lanes), no FMA
//   avx512      AVX-512 F/BW/VL/DQ: 16-lane decoders, register table lookups, blocked GEMM
//   avx512_vnni + AVX512-VNNI: int8 dot products with vpdpbusd (LLM.int8 and W8A8)
enum class CpuLevel : int { plain = 0, avx2 = 1, avx512 = 2, avx512_vnni = 3 };

struct CpuFeatures {
  bool avx2 = false, fma = false, f16c = false;
  bool avx512f = false, avx512bw = false, avx512vl = false, avx512dq = false;
  bool avx512vnni = false, avx512bf16 = false;
};

// What this CPU has (cpuid, read once).
const CpuFeatures& cpu_features();
// The highest level the CPU supports.
CpuLevel detected_cpu_level();
// The level the kernels use now: the detected one, capped by the LOWBIT_CPU_KERNELS environment
// variable (plain, avx2, avx512, avx512-vnni; read once) and by set_cpu_level_limit.
CpuLevel cpu_level();
// Caps the level for the whole process (tests run every variant on one machine; `lowbit bench`
// compares them). A cap above what the CPU has gives the detected level.
void set_cpu_level_limit(CpuLevel limit);

std::string_view cpu_level_name(CpuLevel level);
// Parses a level name as LOWBIT_CPU_KERNELS spells it; throws UsageError listing the valid names.
CpuLevel parse_cpu_level(std::string_view name);
// "avx512-vnni (AVX-512 F/BW/VL/DQ, VNNI, BF16; AVX2, FMA, F16C)": the level in use and the
// features found, for logs and bench headers.
std::string cpu_kernel_summary();

}  // namespace lowbit
