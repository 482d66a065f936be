#include "core/cpu_features.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>

#include "core/error.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#endif

namespace lowbit {

namespace {

constexpr std::pair<CpuLevel, std::string_view> kLevelNames[] = {
    {CpuLevel::plain, "plain"},
    {CpuLevel::avx2, "avx2"},
    {CpuLevel::avx512, "avx512"},
    {CpuLevel::avx512_vnni, "avx512-vnni"},
};

CpuFeatures detect() {
  CpuFeatures f;
#if defined(__x86_64__) && defined(__GNUC__)
  __builtin_cpu_init();
  f.avx2 = __builtin_cpu_supports("avx2");
  f.fma = __builtin_cpu_supports("fma");
  f.avx512f = __builtin_cpu_supports("avx512f");
  // F16C is not a level of its own (AVX2 CPUs all have it); clang's __builtin_cpu_supports does
  // not know it, so CPUID leaf 1 (ECX bit 29) says. The AVX checks above already include the
  // OS's saving of the vector registers.
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  f.f16c = __get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx & (1u << 29)) != 0;
  f.avx512bw = __builtin_cpu_supports("avx512bw");
  f.avx512vl = __builtin_cpu_supports("avx512vl");
  f.avx512dq = __builtin_cpu_supports("avx512dq");
  f.avx512vnni = __builtin_cpu_supports("avx512vnni");
  f.avx512bf16 = __builtin_cpu_supports("avx512bf16");
#endif
  return f;
}

// The cap from LOWBIT_CPU_KERNELS, read once; an unknown name is an error the first kernel call
// reports (the message lists the valid names).
CpuLevel environment_limit() {
  static const CpuLevel limit = [] {
    const char* v = std::getenv("LOWBIT_CPU_KERNELS");
    if (v == nullptr || *v == '\0') return CpuLevel::avx512_vnni;
    return parse_cpu_level(v);
  }();
  return limit;
}

std::atomic<int> g_level_limit{int(CpuLevel::avx512_vnni)};

}  // namespace

const CpuFeatures& cpu_features() {
  static const CpuFeatures f = detect();
  return f;
}

CpuLevel detected_cpu_level() {
  const CpuFeatures& f = cpu_features();
  // The AVX2 kernels use F16C too (fp16 activations); every AVX2 CPU has it.
  if (!(f.avx2 && f.f16c)) return CpuLevel::plain;
  if (!(f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq)) return CpuLevel::avx2;
  return f.avx512vnni ? CpuLevel::avx512_vnni : CpuLevel::avx512;
}

CpuLevel cpu_level() {
  static const CpuLevel detected = detected_cpu_level();
  return CpuLevel(std::min({int(detected), int(environment_limit()), g_level_limit.load(std::memory_order_relaxed)}));
}

void set_cpu_level_limit(CpuLevel limit) { g_level_limit = int(limit); }

std::string_view cpu_level_name(CpuLevel level) {
  for (const auto& [l, name] : kLevelNames)
    if (l == level) return name;
  return "unknown";
}

CpuLevel parse_cpu_level(std::string_view name) {
  for (const auto& [l, n] : kLevelNames)
    if (n == name) return l;
  std::string valid;
  for (const auto& [l, n] : kLevelNames) valid += (valid.empty() ? "" : ", ") + std::string(n);
  throw UsageError("LOWBIT_CPU_KERNELS='" + std::string(name) + "' is not a kernel level (valid: " + valid + ")");
}

std::string cpu_kernel_summary() {
  const CpuFeatures& f = cpu_features();
  std::string found;
  auto add = [&](bool has, const char* what) {
    if (has) found += (found.empty() ? "" : ", ") + std::string(what);
  };
  add(f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq, "AVX-512 F/BW/VL/DQ");
  add(f.avx512vnni, "VNNI");
  add(f.avx512bf16, "BF16");
  add(f.avx2, "AVX2");
  add(f.fma, "FMA");
  add(f.f16c, "F16C");
  return std::string(cpu_level_name(cpu_level())) + " kernels (" + (found.empty() ? "no vector extensions" : found) +
         ")";
}

}  // namespace lowbit
