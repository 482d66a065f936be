// Streaming safetensors writer: for outputs too large to hold in memory (a 7B model is 13.5 GB
// in bf16). The header is written first from the tensors' names, dtypes and shapes (offsets are
// known in advance), then each tensor's bytes are appended in the declared order, in as many
// pieces as the caller likes. Also plans Hugging Face shards (model-0000i-of-0000n.safetensors
// with model.safetensors.index.json) so no file exceeds a size limit.
#pragma once
#include <cstdint>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "core/dtype.h"

namespace lowbit {

struct TensorSpec {
  std::string name;
  DType dtype = DType::BF16;
  std::vector<int64_t> shape;

  int64_t numel() const;
  size_t nbytes() const { return size_t(numel()) * dtype_size(dtype); }
};

class SafetensorsStreamWriter {
 public:
  // Creates `path` and writes the header for `tensors` (data laid out in the given order, no
  // gaps, data section 8-byte aligned). Throws InputError naming the path or tensor.
  SafetensorsStreamWriter(std::string path, std::vector<TensorSpec> tensors,
                          const std::map<std::string, std::string>& metadata = {});
  ~SafetensorsStreamWriter();
  SafetensorsStreamWriter(const SafetensorsStreamWriter&) = delete;
  SafetensorsStreamWriter& operator=(const SafetensorsStreamWriter&) = delete;

  // Appends the next `nbytes` of the data section; tensor boundaries are implied by the header.
  // Throws InputError when more bytes arrive than the header declares, or the write fails.
  void append(const void* data, size_t nbytes);
  // Checks that every declared byte was written, then flushes and closes the file.
  void finish();

  size_t data_bytes() const { return total_; }
  size_t written_bytes() const { return written_; }

 private:
  std::string path_;
  std::FILE* file_ = nullptr;
  size_t total_ = 0, written_ = 0;
};

struct ShardPlan {
  std::string file;                 // file name inside the model folder
  std::vector<TensorSpec> tensors;  // in write order
  size_t data_bytes = 0;
};

// Splits `tensors`, keeping their order, into shards of at most `max_shard_bytes` of tensor data
// (a tensor larger than the limit gets a shard of its own). One shard is named
// model.safetensors; several are model-00001-of-0000n.safetensors, ... as transformers names them.
std::vector<ShardPlan> plan_shards(const std::vector<TensorSpec>& tensors, size_t max_shard_bytes);

// Writes <dir>/model.safetensors.index.json ({"metadata": {"total_size"}, "weight_map"}) for a
// plan of several shards, as transformers' save_pretrained does.
void write_shard_index(const std::string& dir, const std::vector<ShardPlan>& shards);

}  // namespace lowbit
