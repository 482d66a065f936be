// The CPU backend: plain fp32 loops, multithreaded over rows/heads. It is the oracle every
// other backend is tested against, so clarity wins over speed except in matmul (the formats'
// own multithreaded kernels).
#pragma once
#include "backend/backend.h"
#include "core/parallel.h"

namespace lowbit {

// Bytes held by a backend's buffers, weights and caches, against an optional cap.
class MemoryBudget {
 public:
  explicit MemoryBudget(size_t cap) : cap_(cap) {}
  void take(size_t bytes, const std::string& what);  // throws DeviceError past the cap
  void give(size_t bytes) { used_ -= bytes; }
  size_t used() const { return used_; }
  size_t peak() const { return peak_; }

 private:
  size_t cap_, used_ = 0, peak_ = 0;
};

// What one allocation took from the budget, given back when its owner is destroyed.
class BudgetCharge {
 public:
  BudgetCharge(MemoryBudget& budget, size_t bytes, const std::string& what) : budget_(&budget), bytes_(bytes) {
    budget.take(bytes, what);
  }
  ~BudgetCharge() { budget_->give(bytes_); }
  BudgetCharge(const BudgetCharge&) = delete;
  BudgetCharge& operator=(const BudgetCharge&) = delete;

 private:
  MemoryBudget* budget_;
  size_t bytes_;
};

class CpuBackend final : public Backend {
 public:
  // memory_cap_bytes > 0: allocations past the cap throw DeviceError as a full device would.
  // bf16_activations: bf16 weights multiply several tokens at once with activations rounded to
  // bf16 (formats/kernels.h, avx512_bf16); off by default, since it is not the oracle's
  // arithmetic. Needs AVX512-BF16 (UsageError otherwise); runs where cpu_level() >= avx512.
  explicit CpuBackend(int n_threads, size_t memory_cap_bytes = 0, bool bf16_activations = false);
  std::string name() const override { return "cpu"; }
  std::string description() const override;

  std::unique_ptr<DeviceBuffer> alloc(size_t n_floats, const std::string& what) override;
  std::unique_ptr<DeviceLinear> upload_linear(LinearWeight w, std::vector<float> bias) override;
  // Quantizes on this backend's threads (-t), not on all cores.
  std::unique_ptr<DeviceLinear> upload_quantizing(Format f, const std::vector<HostWeightPart>& parts, int64_t cols,
                                                  const QuantOptions& opts, std::vector<float> bias) override;
  std::unique_ptr<DeviceNorm> upload_norm(std::vector<float> weight, std::vector<float> bias) override;
  std::unique_ptr<KvCache> alloc_kv_cache(int n_layers, int n_slots, int max_context, int kv_dim,
                                          KvDtype dtype = KvDtype::f32) override;
  void download(const DeviceBuffer& src, size_t offset, size_t n, float* dst) override;
  void set_rope(std::vector<float> inv_freq) override { inv_freq_ = std::move(inv_freq); }
  void set_batch(const TokenBatch& batch) override { batch_ = batch; }

  void embed(const DeviceLinear& table, DeviceBuffer& out) override;
  void norm(const DeviceBuffer& x, const DeviceNorm& w, NormKind kind, float eps, int dim, DeviceBuffer& out) override;
  void add_norm(DeviceBuffer& residual, const DeviceBuffer& delta, const DeviceNorm& w, NormKind kind, float eps,
                int dim, DeviceBuffer& out) override;
  void gather_rows(const DeviceBuffer& src, const std::vector<int>& rows, int dim, DeviceBuffer& dst) override;
  void add(DeviceBuffer& x, const DeviceBuffer& y, int dim) override;
  void matmul(const DeviceLinear& w, const DeviceBuffer& x, DeviceBuffer& y) override;
  void rope(DeviceBuffer& qkv, const AttentionShape& shape) override;
  void attention(const DeviceBuffer& qkv, KvCache& cache, int layer, const AttentionShape& shape,
                 DeviceBuffer& out) override;
  void activation(const DeviceBuffer& gu, Activation act, int hidden, DeviceBuffer& out) override;
  void head(const DeviceBuffer& x, const std::vector<int>& rows, const DeviceNorm& w, NormKind kind, float eps, int dim,
            const DeviceLinear& head, DeviceBuffer& gathered, DeviceBuffer& normed, DeviceBuffer& logits) override;
  void synchronize() override {}
  int32_t sample(const DeviceBuffer& logits, size_t row, int vocab, const SamplingParams& params,
                 std::span<const int32_t> history, uint64_t step) override;
  // Best of 3 copies of a 1 GiB host buffer, one contiguous part per thread.
  double copy_bandwidth_gbs() override;
  size_t peak_memory_bytes() const override { return budget_.peak(); }

 private:
  // norm and matmul on the first n rows (the batch's n, or the head's rows).
  void norm_rows(const DeviceBuffer& x, const DeviceNorm& w, NormKind kind, float eps, int dim, int n, DeviceBuffer& out);
  void matmul_rows(const DeviceLinear& w, const DeviceBuffer& x, int n, DeviceBuffer& y);

  ThreadPool pool_;
  MemoryBudget budget_;
  bool bf16_activations_;
  std::vector<float> inv_freq_;
  TokenBatch batch_;
};

}  // namespace lowbit
