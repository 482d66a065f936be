#include "io/safetensors_stream_writer.h"

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/error.h"

namespace lowbit {

int64_t TensorSpec::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

SafetensorsStreamWriter::SafetensorsStreamWriter(std::string path, std::vector<TensorSpec> tensors,
                                                 const std::map<std::string, std::string>& metadata)
    : path_(std::move(path)) {
  // ordered_json keeps the tensors in write order, as write_safetensors does.
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::set<std::string> seen;
  uint64_t offset = 0;
  for (const TensorSpec& t : tensors) {
    if (t.name.empty() || t.name == "__metadata__")
      throw InputError(fmt::format("{}: cannot write a tensor named '{}'", path_, t.name));
    if (!seen.insert(t.name).second) throw InputError(fmt::format("{}: tensor '{}' is given twice", path_, t.name));
    for (int64_t d : t.shape)
      if (d < 0) throw InputError(fmt::format("{}: tensor '{}' has a negative dimension", path_, t.name));
    const uint64_t nbytes = t.nbytes();
    header[t.name] = {{"dtype", std::string(dtype_name(t.dtype))},
                      {"shape", t.shape},
                      {"data_offsets", {offset, offset + nbytes}}};
    offset += nbytes;
  }
  total_ = size_t(offset);
  std::string text = header.dump();
  // Spaces pad the header so the data section starts 8-byte aligned, as the reference writer does.
  text.append((8 - text.size() % 8) % 8, ' ');

  file_ = std::fopen(path_.c_str(), "wb");
  if (!file_) throw InputError(fmt::format("{}: cannot create ({})", path_, std::strerror(errno)));
  // Big stdio buffer: tensors arrive in multi-MB pieces, so this just avoids tiny syscalls.
  std::setvbuf(file_, nullptr, _IOFBF, size_t(1) << 22);
  const uint64_t header_size = text.size();
  uint8_t length_le[8];
  for (int i = 0; i < 8; ++i) length_le[i] = uint8_t(header_size >> (8 * i));
  if (std::fwrite(length_le, 1, 8, file_) != 8 || std::fwrite(text.data(), 1, text.size(), file_) != text.size())
    throw InputError(fmt::format("{}: write failed ({})", path_, std::strerror(errno)));
}

SafetensorsStreamWriter::~SafetensorsStreamWriter() {
  if (file_) std::fclose(file_);
}

void SafetensorsStreamWriter::append(const void* data, size_t nbytes) {
  if (!file_) throw InputError(fmt::format("{}: append after finish", path_));
  if (nbytes > total_ - written_)
    throw InputError(fmt::format("{}: {} more bytes than the header declares ({})", path_,
                                 written_ + nbytes - total_, total_));
  if (nbytes && std::fwrite(data, 1, nbytes, file_) != nbytes)
    throw InputError(fmt::format("{}: write failed ({})", path_, std::strerror(errno)));
  written_ += nbytes;
}

void SafetensorsStreamWriter::finish() {
  if (!file_) return;
  if (written_ != total_)
    throw InputError(fmt::format("{}: {} of {} data bytes written", path_, written_, total_));
  const bool ok = std::fflush(file_) == 0;
  const bool closed = std::fclose(file_) == 0;
  file_ = nullptr;
  if (!ok || !closed) throw InputError(fmt::format("{}: write failed ({})", path_, std::strerror(errno)));
}

std::vector<ShardPlan> plan_shards(const std::vector<TensorSpec>& tensors, size_t max_shard_bytes) {
  std::vector<ShardPlan> shards;
  for (const TensorSpec& t : tensors) {
    if (shards.empty() || (!shards.back().tensors.empty() && shards.back().data_bytes + t.nbytes() > max_shard_bytes))
      shards.emplace_back();
    shards.back().tensors.push_back(t);
    shards.back().data_bytes += t.nbytes();
  }
  if (shards.size() == 1) {
    shards[0].file = "model.safetensors";
  } else {
    for (size_t i = 0; i < shards.size(); ++i)
      shards[i].file = fmt::format("model-{:05d}-of-{:05d}.safetensors", i + 1, shards.size());
  }
  return shards;
}

void write_shard_index(const std::string& dir, const std::vector<ShardPlan>& shards) {
  nlohmann::json index;
  size_t total = 0;
  nlohmann::json weight_map = nlohmann::json::object();
  for (const ShardPlan& s : shards) {
    total += s.data_bytes;
    for (const TensorSpec& t : s.tensors) weight_map[t.name] = s.file;
  }
  index["metadata"] = {{"total_size", total}};
  index["weight_map"] = weight_map;
  const std::string path = (std::filesystem::path(dir) / "model.safetensors.index.json").string();
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << index.dump(2) << '\n';
  out.close();
  if (!out) throw InputError(fmt::format("{}: write failed ({})", path, std::strerror(errno)));
}

}  // namespace lowbit
