// LOWBIT_EMU_STATS=1: after generation, the kernels the decode steps launched, per decoded token
// and per layer, per kernel name, from the emulated GPU's launch counter (build/lowbit-emu). The
// first performance figure of the GPU path that can be tracked without a GPU.
#pragma once
#include <cstdint>
#include <map>
#include <string>

namespace lowbit::cli {

class KernelStats {
 public:
  KernelStats(int n_layers, std::string device);
  // Call after each generated token; the first one ends the prefill.
  void on_token();
  // Prints the table to stderr (nothing unless LOWBIT_EMU_STATS=1).
  void report() const;

 private:
  bool enabled_ = false;
  int n_layers_ = 0;
  std::string device_;
  int tokens_ = 0;
  std::map<std::string, uint64_t> at_first_, at_last_;
};

}  // namespace lowbit::cli
