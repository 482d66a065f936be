// The CUDA backend: the whole forward pass on one GPU, fp32 activations, weights in BF16 (the
// fast path) or F32 (the exactness oracle, `--quant f32`), fp32 KV cache. Kernels live in
// kernels/ (one file per family); this class owns their buffers and launches them on the
// CudaContext's stream. docs/cuda-backend.md describes layouts and kernels.
//
// Its Backend::sample runs on the device (only the id is downloaded), and its recordings are CUDA
// graphs: the model captures a decode step once per batch size and replays it (the graph reads
// tokens/positions/slots from the device arrays set_batch fills). LOWBIT_CUDA_GRAPHS=0 turns
// graphs off.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "backend/cuda_context.h"
#include "backend/cuda_quantized.h"
#include "sampler/sampler.h"

namespace lowbit {

class CudaLinear;

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(const CudaContextOptions& opts);
  ~CudaBackend() override;
  std::string name() const override { return "cuda"; }
  std::string description() const override;
  // Prompts (more than 16 tokens) of BF16 and the dequantized formats through bf16 tensor-core
  // GEMMs instead of each format's own arithmetic (--cuda-fast-prefill). Off by default.
  void set_fast_prefill(bool on) { fast_prefill_ = on; }
  bool fast_prefill() const { return fast_prefill_; }

  std::unique_ptr<DeviceBuffer> alloc(size_t n_floats, const std::string& what) override;
  // F32 / BF16 weights, and every quantized format with an entry in cuda_quantized.cpp's table
  // (its planes copied as they are); anything else throws "format X has no CUDA kernel yet".
  // Parts of a row-wise format are stacked on the host first (exact); blockwise 4-bit parts stay
  // parts on the device, each with its row order.
  std::unique_ptr<DeviceLinear> upload_linear(LinearWeight w, std::vector<float> bias) override;
  // nf4, fp4, nf4-dq, fp4-dq are quantized on the GPU, part by part; the other formats on the
  // host. LOWBIT_GPU_QUANTIZE=0 quantizes everything on the host.
  std::unique_ptr<DeviceLinear> upload_quantizing(Format f, const std::vector<HostWeightPart>& parts, int64_t cols,
                                                  const QuantOptions& opts, std::vector<float> bias) override;
  std::unique_ptr<DeviceNorm> upload_norm(std::vector<float> weight, std::vector<float> bias) override;
  std::unique_ptr<KvCache> alloc_kv_cache(int n_layers, int n_slots, int max_context, int kv_dim,
                                          KvDtype dtype = KvDtype::f32) override;
  void download(const DeviceBuffer& src, size_t offset, size_t n, float* dst) override;
  void set_rope(std::vector<float> inv_freq) override;
  void set_batch(const TokenBatch& batch) override;

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
  void rope_attention(DeviceBuffer& qkv, KvCache& cache, int layer, const AttentionShape& shape,
                      DeviceBuffer& out) override;
  void activation(const DeviceBuffer& gu, Activation act, int hidden, DeviceBuffer& out) override;
  void linear(const DeviceLinear& w, const DeviceBuffer& x, DeviceBuffer& out, const LinearSteps& steps) override;
  void head(const DeviceBuffer& x, const std::vector<int>& rows, const DeviceNorm& w, NormKind kind, float eps, int dim,
            const DeviceLinear& head, DeviceBuffer& gathered, DeviceBuffer& normed, DeviceBuffer& logits) override;
  void synchronize() override;

  // Copies n floats from the host into dst at offset (tests, and inputs computed on the host).
  void upload(DeviceBuffer& dst, size_t offset, size_t n, const float* src);

  // Samples one token from logits[row * vocab .. + vocab) on the device with sampler.h's
  // semantics and uniform01(params.seed, step): the same id as sample_token() on the downloaded
  // row (up to the parallel rounding described in kernels/sampling.cuh). Waits for the result.
  int32_t sample(const DeviceBuffer& logits, size_t row, int vocab, const SamplingParams& params,
                 std::span<const int32_t> history, uint64_t step) override;

  // --- CUDA graphs of the decode step -----------------------------------------------------
  // Between begin_recording(owner, n) and end_recording() the ops of one forward over a batch of n
  // tokens are captured, not run. Preconditions: the same forward ran eagerly once (so every
  // buffer it needs exists; allocating while capturing throws), no download() inside, the batch
  // shape is the one replays will have (one token per slot for decode). set_batch() while
  // capturing only records the host copy: the graph reads tokens/positions/slots from fixed
  // device arrays. replay(owner, n) runs the graph on whatever batch the last set_batch(n tokens)
  // uploaded. Reallocating a buffer a graph points into (a larger workspace, say) drops every graph.
  bool can_record() const override;
  bool has_recording(const void* owner, int batch_size) const override;
  void begin_recording(const void* owner, int batch_size) override;
  void end_recording() override;
  void abort_recording() override;
  void replay(const void* owner, int batch_size) override;
  void drop_recordings(const void* owner) override;

  // Device-to-device cudaMemcpy bandwidth (read + write bytes).
  double copy_bandwidth_gbs() override;
  size_t peak_memory_bytes() const override { return ctx_.peak_bytes_in_use(); }

  // NF4 / FP4 (and -dq) quantization of host fp32 weights [rows, cols] on the GPU, byte-identical to
  // quantize(); returns the planes (downloaded). upload_quantized_on_device keeps them there.
  QuantizedTensor quantize_on_device(Format f, const float* host_weights, int64_t rows, int64_t cols,
                                     const QuantOptions& opts);
  std::unique_ptr<DeviceLinear> upload_quantized_on_device(Format f, const float* host_weights, int64_t rows,
                                                           int64_t cols, const QuantOptions& opts,
                                                           std::vector<float> bias);

 private:
  struct StagingSlot;
  void ensure_batch_capacity(int n);
  // `mem` holding at least `bytes` (grown by reallocation, which drops the CUDA graphs using it);
  // `zeroed`: a new allocation is zero-filled (on the stream) before use.
  float* ensure_workspace(DeviceMemory& mem, size_t bytes, const char* what, bool zeroed = false);
  // Destroys the graphs whose kernels read or write `mem` (they hold its address).
  void drop_graphs_using(const DeviceMemory& mem);
  void check_batch_in_cache(int n_slots, int max_context) const;
  // attention(); with rotate_and_store, the fused decode step (qkv unrotated, k/v stored by it).
  void attend(const DeviceBuffer& qkv, KvCache& cache, int layer, const AttentionShape& s, DeviceBuffer& out,
              bool rotate_and_store);
  // norm and matmul on the first n rows (the batch's n, or the head's rows).
  void norm_rows(const DeviceBuffer& x, const DeviceNorm& w, NormKind kind, float eps, int dim, int n, DeviceBuffer& out);
  void matmul_rows(const DeviceLinear& w, const DeviceBuffer& x, int n, DeviceBuffer& y);
  // y [n, rows] = W x^T from a bf16 [rows, cols] weight on the device (cuBLAS, fp32 accumulate).
  void gemm_bf16(const void* w_bf16, int rows, int cols, const float* x, int n, float* y);
  void matmul_layer(const CudaLinear& l, const float* x, int n, float* y);
  bool matmul_w8a8_int8_gemm(const DeviceQuantizedPlanes& w, const float* bias, const float* x, int n, float* y);
  bool matmul_fp8_gemm(const DeviceQuantizedPlanes& w, const float* bias, const float* x, int n, float* y);
  DeviceMemory bias_on_device(const std::vector<float>& bias, int64_t rows, const std::string& what);
  DeviceMemory row_order_on_device(const std::vector<int32_t>& order, const std::string& what);
  const int32_t* device_tokens() const;
  const int32_t* device_positions() const;
  const int32_t* device_slots() const;

  CudaContext ctx_;
  TokenBatch batch_;                 // host copy of the current batch
  bool batch_in_distinct_slots_ = true;  // one token per slot: a decode step (set_batch decides)
  DeviceMemory batch_device_;        // [tokens n | positions n | slots n] int32 for the current n
  int batch_capacity_ = 0;
  std::vector<StagingSlot> staging_;  // ring of pinned buffers for batch uploads
  size_t next_staging_ = 0;
  DeviceMemory inv_freq_;
  std::vector<float> inv_freq_host_;
  bool fast_prefill_ = false;
  bool fuse_ = true;  // LOWBIT_CUDA_FUSE=0 runs every step of a decode layer as its own kernel
  DeviceMemory attention_workspace_, attention_counters_, gemm_input_bf16_, sampling_workspace_, sampling_history_, sampling_result_;
  DeviceMemory quantized_workspace_, dequantized_bf16_;  // GEMV activation scratch; prefill bf16 weight
  using GraphKey = std::pair<const void*, int>;  // (owner, batch size)
  // A recorded decode step: its workspaces (growing one of them drops the graph, which holds the
  // old address; other buffers may grow freely) and the smallest KV cache its attention used,
  // which every replay's positions and slots are checked against (the replay skips attention()).
  struct Recording {
    cudaGraphExec_t exec = nullptr;
    std::set<const DeviceMemory*> workspaces;
    int n_slots = 0, max_context = 0;  // 0: no attention recorded
  };
  std::map<GraphKey, Recording> graphs_;
  int capturing_batch_ = 0;  // > 0 between begin_recording and end_recording
  const void* capturing_owner_ = nullptr;
  Recording capturing_;      // what the capture in progress has touched
};

std::unique_ptr<Backend> make_cuda_backend(int device_index, size_t memory_cap_bytes = 0, bool fast_prefill = false);

}  // namespace lowbit
