// What lowbit and its tests may ask the emulated device (emulated builds only).
#pragma once
#include <cstdint>
#include <map>
#include <string>

namespace lowbit_emu {

// Kernels run so far, by short kernel name ("gemv_kernel<Bf16Weights, 1>"); graph replays
// count each of their kernels; cuBLAS calls count as "cublasGemmEx".
std::map<std::string, uint64_t> launch_counts();
// The scheduling order in force: "forward", "reverse" or "random" (LOWBIT_EMU_ORDER).
const char* schedule_order();
// Tests of the emulator itself: switch the order ("forward", "reverse", "random[:seed]") for the
// launches that follow. Returns false for an unknown name.
bool set_schedule_order(const char* order);

}  // namespace lowbit_emu
