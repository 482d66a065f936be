#include "cli/kernel_stats.h"

#include <cstdio>
#include <cstdlib>
#include <string_view>
#include <vector>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "lowbit_config.h"
#if LOWBIT_EMULATED_GPU
#include "lowbit_emu/control.h"
#endif

namespace lowbit::cli {

namespace {

std::map<std::string, uint64_t> counts() {
#if LOWBIT_EMULATED_GPU
  return lowbit_emu::launch_counts();
#else
  return {};
#endif
}

}  // namespace

KernelStats::KernelStats(int n_layers, std::string device) : n_layers_(n_layers), device_(std::move(device)) {
  const char* v = std::getenv("LOWBIT_EMU_STATS");
  if (v == nullptr || std::string_view(v) != "1") return;
  if (!LOWBIT_EMULATED_GPU || device_ != "cuda") {
    spdlog::warn("LOWBIT_EMU_STATS=1 counts kernels of the emulated GPU: run build/lowbit-emu with --device cuda");
    return;
  }
  enabled_ = true;
}

void KernelStats::on_token() {
  if (!enabled_) return;
  ++tokens_;
  (tokens_ == 1 ? at_first_ : at_last_) = counts();
}

void KernelStats::report() const {
  if (!enabled_) return;
  const int steps = tokens_ - 1;  // each token after the first is one decode step
  if (steps <= 0) {
    std::fprintf(stderr, "emulated GPU: no decode step ran (fewer than two tokens generated)\n");
    return;
  }
  std::vector<std::pair<std::string, double>> rows;
  double total = 0;
  for (const auto& [name, n] : at_last_) {
    auto it = at_first_.find(name);
    const uint64_t before = it != at_first_.end() ? it->second : 0;
    if (n == before) continue;
    const double per_step = double(n - before) / steps;
    rows.emplace_back(name, per_step);
    total += per_step;
  }
  std::string out = fmt::format(
      "emulated GPU: kernels launched per decoded token over {} decode steps, {} layers (per layer = per token / "
      "{}; the embedding, final norm, head and sampling are included)\n",
      steps, n_layers_, n_layers_);
  out += fmt::format("  {:<60} {:>10} {:>10}\n", "kernel", "per token", "per layer");
  for (const auto& [name, per_step] : rows)
    out += fmt::format("  {:<60} {:>10.2f} {:>10.2f}\n", name, per_step, per_step / n_layers_);
  out += fmt::format("  {:<60} {:>10.2f} {:>10.2f}\n", "total", total, total / n_layers_);
  std::fputs(out.c_str(), stderr);
}

}  // namespace lowbit::cli
