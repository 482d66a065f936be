#include "io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "core/error.h"
#include "core/half.h"

namespace lowbit {

static_assert(std::endian::native == std::endian::little,
              "safetensors data is little-endian and is read in place");

namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

// Real headers are kilobytes to a few megabytes; refusing anything bigger early keeps a corrupt
// length field from asking for gigabytes of JSON parsing.
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

std::string in_quotes(const std::string& name) { return "'" + name + "'"; }

[[noreturn]] void fail_tensor(const std::string& file, const std::string& tensor,
                              const std::string& what) {
  throw InputError(file + ": tensor " + in_quotes(tensor) + " " + what);
}

bool parse_dtype(const std::string& name, DType& out) {
  if (name == "F32") out = DType::F32;
  else if (name == "F16") out = DType::F16;
  else if (name == "BF16") out = DType::BF16;
  else return false;
  return true;
}

// nlohmann::json keeps only the last of duplicate keys; this parse tracks the keys of every open
// object so a duplicate tensor name (or duplicate field) is reported instead of silently lost.
json parse_json_rejecting_duplicates(const char* begin, const char* end, const std::string& file,
                                     const std::string& what) {
  // One entry per open object: the key it was stored under and the keys seen in it so far.
  std::vector<std::pair<std::string, std::set<std::string>>> open_objects;
  std::string last_key;
  std::string duplicate, duplicate_owner;
  auto callback = [&](int /*depth*/, json::parse_event_t event, json& parsed) {
    if (event == json::parse_event_t::object_start) {
      open_objects.emplace_back(open_objects.empty() ? std::string() : last_key,
                                std::set<std::string>());
    } else if (event == json::parse_event_t::object_end) {
      if (!open_objects.empty()) open_objects.pop_back();
    } else if (event == json::parse_event_t::key && !open_objects.empty()) {
      last_key = parsed.get<std::string>();
      if (!open_objects.back().second.insert(last_key).second && duplicate.empty()) {
        duplicate = last_key;
        if (open_objects.size() >= 2) duplicate_owner = open_objects[1].first;
      }
    }
    return true;
  };
  json parsed;
  try {
    parsed = json::parse(begin, end, callback);
  } catch (const json::exception& e) {
    throw InputError(file + ": " + what + " is not valid JSON (" + e.what() + ")");
  }
  if (!duplicate.empty()) {
    if (duplicate_owner.empty())
      throw InputError(file + ": " + what + " names " + in_quotes(duplicate) + " twice");
    throw InputError(file + ": " + what + " entry " + in_quotes(duplicate_owner) +
                     " has the key " + in_quotes(duplicate) + " twice");
  }
  return parsed;
}

uint64_t read_u64_le(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

// Reads one tensor entry of the header; offsets are relative to the data section.
struct HeaderEntry {
  TensorInfo info;
  uint64_t begin = 0;
  uint64_t end = 0;
};

HeaderEntry parse_entry(const std::string& file, const std::string& name, const json& entry,
                        uint64_t data_size) {
  if (!entry.is_object()) fail_tensor(file, name, "is not a JSON object");
  auto field = [&](const char* key) -> const json& {
    auto it = entry.find(key);
    if (it == entry.end()) fail_tensor(file, name, std::string("has no \"") + key + "\"");
    return *it;
  };
  HeaderEntry out;
  out.info.name = name;
  out.info.file = file;

  const json& dtype = field("dtype");
  if (!dtype.is_string()) fail_tensor(file, name, "has a dtype that is not a string");
  const std::string dtype_str = dtype.get<std::string>();
  if (!parse_dtype(dtype_str, out.info.dtype))
    fail_tensor(file, name, "has dtype " + dtype_str + "; lowbit reads F32, F16 and BF16");

  const json& shape = field("shape");
  if (!shape.is_array()) fail_tensor(file, name, "has a shape that is not an array");
  uint64_t numel = 1;
  bool numel_overflow = false;
  for (const json& d : shape) {
    if (!d.is_number_integer()) fail_tensor(file, name, "has a shape entry that is not an integer");
    if (d.is_number_integer() && !d.is_number_unsigned() && d.get<int64_t>() < 0)
      fail_tensor(file, name, "has a negative dimension in shape " + shape.dump());
    const uint64_t dim = d.get<uint64_t>();
    if (dim > uint64_t(INT64_MAX)) fail_tensor(file, name, "has a dimension too large");
    out.info.shape.push_back(int64_t(dim));
    if (__builtin_mul_overflow(numel, dim, &numel)) numel_overflow = true;
  }

  const json& offsets = field("data_offsets");
  if (!offsets.is_array() || offsets.size() != 2 || !offsets[0].is_number_integer() ||
      !offsets[1].is_number_integer())
    fail_tensor(file, name, "has data_offsets that are not two integers");
  if (!offsets[0].is_number_unsigned() || !offsets[1].is_number_unsigned())
    fail_tensor(file, name, "has negative data_offsets " + offsets.dump());
  out.begin = offsets[0].get<uint64_t>();
  out.end = offsets[1].get<uint64_t>();
  if (out.begin > out.end)
    fail_tensor(file, name, "has data_offsets " + offsets.dump() + " that end before they begin");
  if (out.end > data_size)
    fail_tensor(file, name, "has data_offsets " + offsets.dump() + " past the end of the data (" +
                                std::to_string(data_size) + " bytes); the file may be truncated");
  uint64_t expected = 0;
  if (numel_overflow || __builtin_mul_overflow(numel, dtype_size(out.info.dtype), &expected) ||
      expected != out.end - out.begin)
    fail_tensor(file, name, "has " + std::to_string(out.end - out.begin) + " bytes but shape " +
                                shape.dump() + " of " + dtype_str + " needs " +
                                (numel_overflow ? std::string("more") : std::to_string(expected)));
  out.info.nbytes = size_t(expected);
  return out;
}

std::string shape_to_string(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

// Reads a whole (small) text file; InputError naming the path when it cannot.
std::string read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InputError(path + ": cannot open (" + std::strerror(errno) + ")");
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string TensorInfo::shape_str() const { return shape_to_string(shape); }

SafetensorsFile::~SafetensorsFile() {
  if (map_) munmap(map_, map_size_);
}

std::unique_ptr<SafetensorsFile> SafetensorsFile::open(const std::string& path) {
  std::unique_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->path_ = path;

  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw InputError(path + ": cannot open (" + std::strerror(errno) + ")");
  struct stat st {};
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw InputError(path + ": not a regular file");
  }
  const uint64_t file_size = uint64_t(st.st_size);
  if (file_size < 8) {
    ::close(fd);
    throw InputError(path + ": " + std::to_string(file_size) +
                     " bytes is too short for a safetensors file (needs an 8-byte header length)");
  }
  void* map = mmap(nullptr, file_size, PROT_READ, MAP_PRIVATE, fd, 0);
  const int mmap_errno = errno;
  ::close(fd);  // the mapping keeps the file alive
  if (map == MAP_FAILED)
    throw InputError(path + ": cannot mmap (" + std::strerror(mmap_errno) + ")");
  file->map_ = map;
  file->map_size_ = file_size;
  const auto* bytes = static_cast<const uint8_t*>(map);

  const uint64_t header_size = read_u64_le(bytes);
  if (header_size > kMaxHeaderBytes)
    throw InputError(path + ": header length " + std::to_string(header_size) +
                     " bytes is over the 100 MB limit; not a safetensors file or corrupt");
  if (header_size > file_size - 8)
    throw InputError(path + ": header length " + std::to_string(header_size) +
                     " bytes runs past the end of the file (" + std::to_string(file_size) +
                     " bytes); the file is truncated or not safetensors");
  const char* header_begin = reinterpret_cast<const char*>(bytes + 8);
  const json header =
      parse_json_rejecting_duplicates(header_begin, header_begin + header_size, path, "header");
  if (!header.is_object()) throw InputError(path + ": header is not a JSON object");

  const uint8_t* data = bytes + 8 + header_size;
  const uint64_t data_size = file_size - 8 - header_size;
  std::vector<HeaderEntry> entries;
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") {
      if (!it->is_object()) throw InputError(path + ": __metadata__ is not a JSON object");
      for (auto m = it->begin(); m != it->end(); ++m) {
        if (!m->is_string())
          throw InputError(path + ": __metadata__ entry " + in_quotes(m.key()) + " is not a string");
        file->metadata_[m.key()] = m->get<std::string>();
      }
      continue;
    }
    entries.push_back(parse_entry(path, it.key(), *it, data_size));
  }

  // Overlap check on entries sorted by begin; an empty tensor occupies no bytes and overlaps none.
  std::vector<const HeaderEntry*> by_begin;
  for (const HeaderEntry& e : entries)
    if (e.end > e.begin) by_begin.push_back(&e);
  std::sort(by_begin.begin(), by_begin.end(), [](const HeaderEntry* a, const HeaderEntry* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->info.name < b->info.name;
  });
  for (size_t i = 1; i < by_begin.size(); ++i) {
    const HeaderEntry& prev = *by_begin[i - 1];
    const HeaderEntry& cur = *by_begin[i];
    if (cur.begin < prev.end)
      fail_tensor(path, cur.info.name,
                  "has data_offsets [" + std::to_string(cur.begin) + ", " +
                      std::to_string(cur.end) + "] overlapping tensor " + in_quotes(prev.info.name) +
                      " [" + std::to_string(prev.begin) + ", " + std::to_string(prev.end) + "]");
  }

  // Keep the header's own order (data order) so iteration is deterministic and file-like.
  std::sort(entries.begin(), entries.end(), [](const HeaderEntry& a, const HeaderEntry& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.info.name < b.info.name;
  });
  file->tensors_.reserve(entries.size());
  for (HeaderEntry& e : entries) {
    e.info.data = data + e.begin;
    file->tensors_.push_back(std::move(e.info));
  }
  return file;
}

WeightStore WeightStore::open_dir(const std::string& dir) {
  WeightStore store;
  store.dir_ = dir;
  const std::string index_path = (fs::path(dir) / "model.safetensors.index.json").string();
  const std::string single_path = (fs::path(dir) / "model.safetensors").string();

  auto add_file = [&](std::shared_ptr<SafetensorsFile> file) {
    for (const TensorInfo& t : file->tensors()) {
      auto [it, inserted] = store.by_name_.emplace(t.name, &t);
      if (!inserted)
        throw InputError(t.file + ": tensor " + in_quotes(t.name) + " is also in " + it->second->file);
    }
    store.files_.push_back(std::move(file));
  };

  if (fs::exists(index_path)) {
    const std::string text = read_text_file(index_path);
    const json index = parse_json_rejecting_duplicates(text.data(), text.data() + text.size(),
                                                       index_path, "index");
    if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object())
      throw InputError(index_path + ": has no \"weight_map\" object");
    const json& weight_map = index["weight_map"];
    // Shards in first-mention order, each opened (and validated) once.
    std::vector<std::string> shard_names;
    std::map<std::string, std::shared_ptr<SafetensorsFile>> shards;
    for (auto it = weight_map.begin(); it != weight_map.end(); ++it) {
      if (!it->is_string())
        throw InputError(index_path + ": tensor " + in_quotes(it.key()) +
                         " maps to a shard that is not a string");
      const std::string shard = it->get<std::string>();
      const fs::path shard_rel(shard);
      if (shard.empty() || shard_rel.is_absolute() ||
          std::find(shard_rel.begin(), shard_rel.end(), fs::path("..")) != shard_rel.end())
        throw InputError(index_path + ": tensor " + in_quotes(it.key()) + " names shard " +
                         in_quotes(shard) + " outside the model folder");
      if (shards.count(shard)) continue;
      const std::string shard_path = (fs::path(dir) / shard_rel).string();
      if (!fs::exists(shard_path))
        throw InputError(index_path + ": shard " + in_quotes(shard) + " (for tensor " +
                         in_quotes(it.key()) + ") does not exist");
      shards[shard] = SafetensorsFile::open(shard_path);
      shard_names.push_back(shard);
    }
    for (const std::string& shard : shard_names) add_file(shards[shard]);
    for (auto it = weight_map.begin(); it != weight_map.end(); ++it) {
      const std::string shard = it->get<std::string>();
      auto found = store.by_name_.find(it.key());
      if (found == store.by_name_.end() || found->second->file != shards[shard]->path())
        throw InputError(index_path + ": tensor " + in_quotes(it.key()) + " is not in shard " +
                         in_quotes(shard) + " where the index puts it");
    }
  } else if (fs::exists(single_path)) {
    add_file(SafetensorsFile::open(single_path));
  } else {
    throw InputError(dir + ": no model.safetensors or model.safetensors.index.json");
  }
  return store;
}

bool WeightStore::has(const std::string& name) const { return by_name_.count(name) != 0; }

const TensorInfo& WeightStore::get(const std::string& name) const {
  auto it = by_name_.find(name);
  if (it == by_name_.end()) throw InputError(dir_ + ": tensor " + in_quotes(name) + " is missing");
  return *it->second;
}

const TensorInfo& WeightStore::get(const std::string& name,
                                   const std::vector<int64_t>& expected_shape) const {
  const TensorInfo& t = get(name);
  if (t.shape != expected_shape)
    fail_tensor(t.file, name, "has shape " + t.shape_str() + ", expected " +
                                  shape_to_string(expected_shape));
  return t;
}

std::vector<std::string> WeightStore::names() const {
  std::vector<std::string> out;
  out.reserve(by_name_.size());
  for (const auto& [name, info] : by_name_) out.push_back(name);
  return out;
}

void to_f32(const TensorInfo& t, float* out) {
  const size_t n = size_t(t.numel());
  // The data section may start at any byte offset, so elements are copied, never dereferenced.
  switch (t.dtype) {
    case DType::F32:
      std::memcpy(out, t.data, n * 4);
      break;
    case DType::F16:
      for (size_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, t.data + 2 * i, 2);
        out[i] = f16_to_f32(h);
      }
      break;
    case DType::BF16:
      for (size_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, t.data + 2 * i, 2);
        out[i] = bf16_to_f32(h);
      }
      break;
  }
}

std::vector<float> to_f32(const TensorInfo& t) {
  std::vector<float> out(size_t(t.numel()));
  to_f32(t, out.data());
  return out;
}

void write_safetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  // ordered_json keeps the tensors in the caller's order, which is also their data order.
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    nlohmann::ordered_json meta = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata) meta[k] = v;
    header["__metadata__"] = meta;
  }
  std::set<std::string> seen;
  uint64_t offset = 0;
  std::vector<uint64_t> sizes;
  for (const TensorToWrite& t : tensors) {
    if (t.name.empty() || t.name == "__metadata__")
      throw InputError(path + ": cannot write a tensor named " + in_quotes(t.name));
    if (!seen.insert(t.name).second)
      throw InputError(path + ": tensor " + in_quotes(t.name) + " is given twice");
    uint64_t numel = 1;
    for (int64_t d : t.shape) {
      if (d < 0) fail_tensor(path, t.name, "has a negative dimension");
      numel *= uint64_t(d);
    }
    const uint64_t nbytes = numel * dtype_size(t.dtype);
    if (nbytes > 0 && t.data == nullptr) fail_tensor(path, t.name, "has no data to write");
    header[t.name] = {{"dtype", std::string(dtype_name(t.dtype))},
                      {"shape", t.shape},
                      {"data_offsets", {offset, offset + nbytes}}};
    offset += nbytes;
    sizes.push_back(nbytes);
  }
  std::string header_text = header.dump();
  // Pad with spaces so the data section starts 8-byte aligned, as the reference writer does.
  header_text.append((8 - header_text.size() % 8) % 8, ' ');

  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) throw InputError(path + ": cannot create (" + std::strerror(errno) + ")");
  const uint64_t header_size = header_text.size();
  uint8_t length_le[8];
  std::memcpy(length_le, &header_size, 8);
  out.write(reinterpret_cast<const char*>(length_le), 8);
  out.write(header_text.data(), std::streamsize(header_text.size()));
  for (size_t i = 0; i < tensors.size(); ++i)
    if (sizes[i]) out.write(static_cast<const char*>(tensors[i].data), std::streamsize(sizes[i]));
  out.close();
  if (!out) throw InputError(path + ": write failed (" + std::strerror(errno) + ")");
}

}  // namespace lowbit
