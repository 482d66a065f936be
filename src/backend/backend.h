// The op interface every backend implements. Model code is written once against it and never
// knows whether it runs on the CPU (plain, the oracle) or CUDA (fused, fast).
//
// Activations are fp32 rows in backend-owned buffers. A forward pass works on a TokenBatch: n
// tokens, each with its own sequence slot and position, so one call covers a prompt's prefill
// (one slot, consecutive positions) and batched decode (one token per slot).
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "backend/op_kinds.h"
#include "formats/format.h"
#include "sampler/sampler.h"

namespace lowbit {

// fp32 activations on the backend's device, [rows, cols] row-major.
class DeviceBuffer {
 public:
  virtual ~DeviceBuffer() = default;
  size_t size() const { return size_; }

 protected:
  explicit DeviceBuffer(size_t n) : size_(n) {}
  size_t size_;
};

// A weight matrix (rows = out_features, cols = in_features) resident on the backend, in its
// quantized format, with an optional fp32 bias of `rows` values. It may be several checkpoint
// tensors, each quantized on its own (LinearWeight, formats/format.h); a matmul computes them all.
class DeviceLinear {
 public:
  virtual ~DeviceLinear() = default;
  int64_t rows() const { return rows_; }
  int64_t cols() const { return cols_; }
  Format format() const { return format_; }
  size_t bytes() const { return bytes_; }  // weight + scales + bias

 protected:
  DeviceLinear(int64_t rows, int64_t cols, Format f, size_t bytes) : rows_(rows), cols_(cols), format_(f), bytes_(bytes) {}
  int64_t rows_, cols_;
  Format format_;
  size_t bytes_;
};

// Norm parameters: weight and (LayerNorm only, may be empty) bias, fp32.
class DeviceNorm {
 public:
  virtual ~DeviceNorm() = default;
  size_t bytes() const { return bytes_; }

 protected:
  explicit DeviceNorm(size_t bytes) : bytes_(bytes) {}
  size_t bytes_;
};

// How the KV cache stores keys and values: fp32, or bf16 (each k and v rounded to nearest even
// when stored, widened exactly when read: half the bytes, the same values on every backend).
enum class KvDtype { f32, bf16 };
const char* kv_dtype_name(KvDtype d);

// Keys and values of every layer for `n_slots` sequences of up to `max_context` positions.
class KvCache {
 public:
  virtual ~KvCache() = default;
  int n_slots() const { return n_slots_; }
  int max_context() const { return max_context_; }
  KvDtype dtype() const { return dtype_; }

 protected:
  KvCache(int n_slots, int max_context, KvDtype dtype) : n_slots_(n_slots), max_context_(max_context), dtype_(dtype) {}
  int n_slots_, max_context_;
  KvDtype dtype_;
};

struct TokenBatch {
  std::vector<int32_t> tokens;
  std::vector<int32_t> positions;  // position of each token in its sequence
  std::vector<int32_t> slots;      // KV-cache slot (sequence) of each token
  int size() const { return int(tokens.size()); }
};

// Per-model constants an attention/rope op needs.
struct AttentionShape {
  int n_heads = 0, n_kv_heads = 0, head_dim = 0;
  int q_dim() const { return n_heads * head_dim; }
  int kv_dim() const { return n_kv_heads * head_dim; }
  int qkv_dim() const { return q_dim() + 2 * kv_dim(); }
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;
  // The device in words, for reports (e.g. "cuda: NVIDIA H100 80GB HBM3, sm_90, 79.1 GiB").
  virtual std::string description() const { return name(); }

  // --- memory ---------------------------------------------------------------------------
  // `what` names the allocation in an out-of-memory error.
  virtual std::unique_ptr<DeviceBuffer> alloc(size_t n_floats, const std::string& what) = 0;
  // bias: empty or w.rows() values in output row order.
  virtual std::unique_ptr<DeviceLinear> upload_linear(LinearWeight w, std::vector<float> bias) = 0;
  // Quantizes host fp32 checkpoint tensors (each [rows_i, cols], stacked as parts) to `f` and
  // uploads them, with exactly quantize_parts()'s bytes. Default: upload_linear(quantize_parts(...));
  // a backend may quantize on its device instead (CUDA: the 4-bit formats), so loading is bound
  // by reading the file, not by quantizing.
  virtual std::unique_ptr<DeviceLinear> upload_quantizing(Format f, const std::vector<HostWeightPart>& parts,
                                                          int64_t cols, const QuantOptions& opts,
                                                          std::vector<float> bias);
  virtual std::unique_ptr<DeviceNorm> upload_norm(std::vector<float> weight, std::vector<float> bias) = 0;
  virtual std::unique_ptr<KvCache> alloc_kv_cache(int n_layers, int n_slots, int max_context, int kv_dim,
                                                  KvDtype dtype = KvDtype::f32) = 0;
  virtual void download(const DeviceBuffer& src, size_t offset, size_t n, float* dst) = 0;

  // Precomputes rotary inverse frequencies (head_dim/2 values, already scaled per config).
  virtual void set_rope(std::vector<float> inv_freq) = 0;
  // Tokens, positions and slots of the next ops: the model uploads each forward's batch once.
  virtual void set_batch(const TokenBatch& batch) = 0;

  // --- ops on the current batch (n = batch size) -------------------------------------------
  // out[t, :] = table row tokens[t] (dequantized).
  virtual void embed(const DeviceLinear& table, DeviceBuffer& out) = 0;
  // out[t, :] = norm(x[t, :]); rows of `dim` values.
  virtual void norm(const DeviceBuffer& x, const DeviceNorm& w, NormKind kind, float eps, int dim, DeviceBuffer& out) = 0;
  // residual += delta, then out = norm(residual): the pre-norm transformer's residual step.
  virtual void add_norm(DeviceBuffer& residual, const DeviceBuffer& delta, const DeviceNorm& w, NormKind kind,
                        float eps, int dim, DeviceBuffer& out) = 0;
  // dst[i, :] = src[rows[i], :] for rows of `dim` values.
  virtual void gather_rows(const DeviceBuffer& src, const std::vector<int>& rows, int dim, DeviceBuffer& dst) = 0;
  // x += y over n*dim values.
  virtual void add(DeviceBuffer& x, const DeviceBuffer& y, int dim) = 0;
  // y[t, :] = W x[t, :] + bias, with the weight's format arithmetic (bias where the format's
  // reference adds it: formats/format.h's matmul), every part of W into its output rows.
  virtual void matmul(const DeviceLinear& w, const DeviceBuffer& x, DeviceBuffer& y) = 0;
  // What a matmul's input and output pass through on the way, each optional (Backend::linear).
  struct LinearSteps {
    // In: y = W norm(x) (x the residual stream, rows of w.cols() values). A backend that
    // computes the norm apart writes it to `normed` (n * cols floats).
    const DeviceNorm* norm = nullptr;
    NormKind norm_kind = NormKind::RMSNorm;
    float norm_eps = 0.0f;
    DeviceBuffer* normed = nullptr;
    // Out: out = act(W x) (SwiGLU: W's rows are [gate | up], `hidden` each; GELU: `hidden` =
    // w.rows()), or out += W x (the residual add). A backend that computes these apart writes
    // W x to `pre` (n * rows floats).
    bool activate = false;
    Activation act = Activation::SwiGLU;
    int hidden = 0;
    bool accumulate = false;
    DeviceBuffer* pre = nullptr;
  };
  // matmul with the steps above, exactly norm() / matmul() / activation() / add() in that order
  // (the default); a backend may fuse them into one kernel (CUDA decode steps do).
  virtual void linear(const DeviceLinear& w, const DeviceBuffer& x, DeviceBuffer& out, const LinearSteps& steps);
  // Rotates the q and k parts of each qkv row [q heads | k heads | v heads] by the token's
  // position (half rotation: pairs (i, i + head_dim/2)).
  virtual void rope(DeviceBuffer& qkv, const AttentionShape& shape) = 0;
  // Stores each token's k, v in its slot at its position, then causal attention of each token's
  // q over positions 0..pos of its slot (GQA: q head h reads kv head h / (n_heads/n_kv_heads)).
  // out is [n, q_dim].
  virtual void attention(const DeviceBuffer& qkv, KvCache& cache, int layer, const AttentionShape& shape,
                         DeviceBuffer& out) = 0;
  // rope() then attention(), which a backend may fuse (CUDA decode steps rotate, store and attend
  // in one kernel; qkv is then left unrotated).
  virtual void rope_attention(DeviceBuffer& qkv, KvCache& cache, int layer, const AttentionShape& shape,
                              DeviceBuffer& out);
  // SwiGLU: out[t, i] = silu(gu[t, i]) * gu[t, hidden + i]; GELU: out[t, i] = gelu(gu[t, i]).
  virtual void activation(const DeviceBuffer& gu, Activation act, int hidden, DeviceBuffer& out) = 0;
  // The output head on the rows whose logits are wanted, given explicitly (rows.size() rows, not
  // the batch's n): gathered[i, :] = x[rows[i], :], normed = norm(gathered) with `w`, logits[i, :]
  // = head normed[i, :] (+ bias), as gather_rows, norm and matmul compute them. gathered and
  // normed are scratch of at least rows.size() * dim floats.
  virtual void head(const DeviceBuffer& x, const std::vector<int>& rows, const DeviceNorm& w, NormKind kind, float eps,
                    int dim, const DeviceLinear& head, DeviceBuffer& gathered, DeviceBuffer& normed,
                    DeviceBuffer& logits) = 0;
  // Makes sure every op issued so far has finished (no-op on the CPU).
  virtual void synchronize() = 0;

  // --- sampling ------------------------------------------------------------------------------
  // One token from row `row` of `logits` ([rows, vocab]) with sampler.h's semantics: draw number
  // `step`, `history` for the repetition penalty. On a GPU only the id leaves the device.
  virtual int32_t sample(const DeviceBuffer& logits, size_t row, int vocab, const SamplingParams& params,
                         std::span<const int32_t> history, uint64_t step) = 0;

  // --- recorded forward passes (optional: CUDA graphs) -------------------------------------
  // A backend that can record the ops of one forward pass and replay them says so here. The
  // model records a decode step once per (owner, batch size) after one eager run of that shape
  // and replays it for every later step; the recording reads tokens/positions/slots from where
  // set_batch() puts them, so set_batch(next) + replay() runs the next step. While recording,
  // ops are queued into the recording, not run. The owner drops its recordings when it dies.
  virtual bool can_record() const { return false; }
  virtual bool has_recording(const void* /*owner*/, int /*batch_size*/) const { return false; }
  virtual void begin_recording(const void* owner, int batch_size);
  virtual void end_recording() {}
  virtual void abort_recording() {}  // after an exception while recording: keeps nothing
  virtual void replay(const void* owner, int batch_size);
  virtual void drop_recordings(const void* /*owner*/) {}

  // Copy bandwidth of the memory the weights live in, in GB/s counting read + write bytes (as
  // STREAM's Copy): the roofline `lowbit bench` compares decode against. Allocates and times a
  // large copy; call it outside timed regions.
  virtual double copy_bandwidth_gbs() = 0;

  // The most bytes this backend has held at once: weights, KV cache, activations, workspaces
  // (what a model in a format needs on its device; the host process's RSS is another matter).
  virtual size_t peak_memory_bytes() const = 0;
};

// --device auto|cpu|cuda. auto picks CUDA when a device is present and the build has it.
// memory_cap_bytes > 0 makes allocations past that many bytes fail as if the device were full
// (--memory-cap): the out-of-memory path, testable on any machine.
// cpu_bf16_activations: CpuBackend's opt-in bf16-activation matmul (a usage error on CUDA).
// cuda_fast_prefill: CudaBackend's opt-in bf16 tensor-core GEMMs for prompts (a usage error on
// the CPU).
std::unique_ptr<Backend> make_backend(const std::string& device, int n_threads, size_t memory_cap_bytes = 0,
                                      bool cpu_bf16_activations = false, bool cuda_fast_prefill = false);
bool cuda_available();

}  // namespace lowbit
