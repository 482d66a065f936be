// Safetensors reader (mmap, validated before use) and writer.
// Format: 8-byte little-endian header length N, N bytes of JSON {name: {dtype, shape,
// data_offsets: [begin, end]}, "__metadata__": {str: str}}, then the data section.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/dtype.h"

namespace lowbit {

struct TensorInfo {
  std::string name;
  std::string file;               // the file it came from (for error messages)
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;  // inside the mmap; valid while the owning file is open
  size_t nbytes = 0;

  int64_t numel() const;
  std::string shape_str() const;  // "[4096, 11008]"
};

// One mmapped .safetensors file. Every check (header length inside the file, valid JSON, known
// dtype, offsets inside the data section, size == numel * dtype size, no overlaps, no duplicate
// names) runs in open(); a violation throws InputError naming the file and tensor.
class SafetensorsFile {
 public:
  static std::unique_ptr<SafetensorsFile> open(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;  // owns the mapping
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::string& path() const { return path_; }

 private:
  SafetensorsFile() = default;
  std::string path_;
  void* map_ = nullptr;
  size_t map_size_ = 0;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, std::string> metadata_;
};

// All tensors of a model folder: model.safetensors, or the shards named by
// model.safetensors.index.json (every shard validated; a tensor the index names must be in the
// shard it names). Throws InputError naming the folder when neither exists.
class WeightStore {
 public:
  static WeightStore open_dir(const std::string& dir);
  bool has(const std::string& name) const;
  // Throws InputError "<dir>: tensor '<name>' is missing".
  const TensorInfo& get(const std::string& name) const;
  // get() plus a shape check; throws InputError "<file>: tensor '<name>' has shape [..], expected [..]".
  const TensorInfo& get(const std::string& name, const std::vector<int64_t>& expected_shape) const;
  std::vector<std::string> names() const;
  const std::string& dir() const { return dir_; }

 private:
  std::string dir_;
  std::vector<std::shared_ptr<SafetensorsFile>> files_;
  std::map<std::string, const TensorInfo*> by_name_;
};

// Converts any supported dtype to fp32.
void to_f32(const TensorInfo& t, float* out);
std::vector<float> to_f32(const TensorInfo& t);

struct TensorToWrite {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  const void* data = nullptr;  // numel * dtype_size bytes, little-endian
};

// Writes a safetensors file (tensors in the given order, 8-byte aligned data section).
// Throws InputError naming the path when it cannot be written.
void write_safetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace lowbit
