#include "io/gguf.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>

#include "core/error.h"
#include "core/half.h"

namespace lowbit {

static_assert(std::endian::native == std::endian::little, "GGUF data is little-endian and is read in place");

namespace {

constexpr uint32_t kMagic = 0x46554747u;  // "GGUF" read as a little-endian u32
constexpr uint64_t kMaxDims = 4;          // GGML_MAX_DIMS
constexpr size_t kMaxTensorName = 64;     // GGML_MAX_NAME, name length must stay below it

std::string in_quotes(std::string_view s) {
  std::string out(1, '\'');
  out.append(s);
  out += '\'';
  return out;
}

struct TypeTraits {
  const char* name;
  uint32_t block;  // elements per block; 0 = size not known here
  uint32_t bytes;  // bytes per block
};

// ggml.c type_traits for the ids lowbit knows the layout of; other named ids are reported by
// name only. Ids 4, 5 and 31-33 were removed from ggml.
TypeTraits traits_of(uint32_t type) {
  switch (type) {
    case 0: return {"F32", 1, 4};
    case 1: return {"F16", 1, 2};
    case 2: return {"Q4_0", 32, 18};
    case 3: return {"Q4_1", 32, 20};
    case 6: return {"Q5_0", 32, 22};
    case 7: return {"Q5_1", 32, 24};
    case 8: return {"Q8_0", 32, 34};
    case 9: return {"Q8_1", 32, 36};
    case 10: return {"Q2_K", 256, 84};
    case 11: return {"Q3_K", 256, 110};
    case 12: return {"Q4_K", 256, 144};
    case 13: return {"Q5_K", 256, 176};
    case 14: return {"Q6_K", 256, 210};
    case 15: return {"Q8_K", 256, 292};
    case 16: return {"IQ2_XXS", 0, 0};
    case 17: return {"IQ2_XS", 0, 0};
    case 18: return {"IQ3_XXS", 0, 0};
    case 19: return {"IQ1_S", 0, 0};
    case 20: return {"IQ4_NL", 0, 0};
    case 21: return {"IQ3_S", 0, 0};
    case 22: return {"IQ2_S", 0, 0};
    case 23: return {"IQ4_XS", 0, 0};
    case 24: return {"I8", 1, 1};
    case 25: return {"I16", 1, 2};
    case 26: return {"I32", 1, 4};
    case 27: return {"I64", 1, 8};
    case 28: return {"F64", 1, 8};
    case 29: return {"IQ1_M", 0, 0};
    case 30: return {"BF16", 1, 2};
    case 34: return {"TQ1_0", 0, 0};
    case 35: return {"TQ2_0", 0, 0};
    case 39: return {"MXFP4", 0, 0};
    default: return {nullptr, 0, 0};
  }
}

constexpr const char* kSupportedTypes = "F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K and Q6_K";

// Bytes of one element of a fixed-size value type; 0 for string and array.
uint64_t value_size(GgufValueType t) {
  switch (t) {
    case GgufValueType::u8: case GgufValueType::i8: case GgufValueType::boolean: return 1;
    case GgufValueType::u16: case GgufValueType::i16: return 2;
    case GgufValueType::u32: case GgufValueType::i32: case GgufValueType::f32: return 4;
    case GgufValueType::u64: case GgufValueType::i64: case GgufValueType::f64: return 8;
    case GgufValueType::string: case GgufValueType::array: return 0;
  }
  return 0;
}

bool known_value_type(uint32_t t) { return t <= 12; }

// Bounds-checked reading of the header: every read names what it was reading when the file
// ends early.
class Cursor {
 public:
  Cursor(const uint8_t* data, size_t size, const std::string& file) : data_(data), size_(size), file_(file) {}
  size_t pos() const { return pos_; }
  size_t left() const { return size_ - pos_; }
  const uint8_t* here() const { return data_ + pos_; }

  void need(uint64_t n, const std::string& what) const {
    if (n > left())
      throw InputError(file_ + ": truncated: " + what + " needs " + std::to_string(n) + " bytes at offset " +
                       std::to_string(pos_) + " but the file has " + std::to_string(left()) + " left");
  }
  template <typename T>
  T read(const std::string& what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, data_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  std::string_view read_string(const std::string& what) {
    const uint64_t len = read<uint64_t>(what + " length");
    need(len, what + " (" + std::to_string(len) + " bytes)");
    std::string_view s(reinterpret_cast<const char*>(data_ + pos_), size_t(len));
    pos_ += size_t(len);
    return s;
  }
  void skip(uint64_t n, const std::string& what) {
    need(n, what);
    pos_ += size_t(n);
  }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
  const std::string& file_;
};

GgufValue read_scalar(Cursor& c, GgufValueType t, const std::string& what) {
  GgufValue v;
  v.type = t;
  switch (t) {
    case GgufValueType::u8: v.u = c.read<uint8_t>(what); break;
    case GgufValueType::i8: v.i = c.read<int8_t>(what); break;
    case GgufValueType::u16: v.u = c.read<uint16_t>(what); break;
    case GgufValueType::i16: v.i = c.read<int16_t>(what); break;
    case GgufValueType::u32: v.u = c.read<uint32_t>(what); break;
    case GgufValueType::i32: v.i = c.read<int32_t>(what); break;
    case GgufValueType::u64: v.u = c.read<uint64_t>(what); break;
    case GgufValueType::i64: v.i = c.read<int64_t>(what); break;
    case GgufValueType::f32: v.f = c.read<float>(what); break;
    case GgufValueType::f64: v.f = c.read<double>(what); break;
    case GgufValueType::boolean: {
      const uint8_t b = c.read<uint8_t>(what);
      if (b > 1) throw InputError("a bool that is " + std::to_string(b));
      v.u = b;
      break;
    }
    case GgufValueType::string: v.s = c.read_string(what); break;
    case GgufValueType::array: break;  // handled by the caller
  }
  return v;
}

}  // namespace

const char* gguf_value_type_name(GgufValueType t) {
  switch (t) {
    case GgufValueType::u8: return "uint8";
    case GgufValueType::i8: return "int8";
    case GgufValueType::u16: return "uint16";
    case GgufValueType::i16: return "int16";
    case GgufValueType::u32: return "uint32";
    case GgufValueType::i32: return "int32";
    case GgufValueType::f32: return "float32";
    case GgufValueType::boolean: return "bool";
    case GgufValueType::string: return "string";
    case GgufValueType::array: return "array";
    case GgufValueType::u64: return "uint64";
    case GgufValueType::i64: return "int64";
    case GgufValueType::f64: return "float64";
  }
  return "?";
}

bool GgufValue::is_integer() const {
  switch (type) {
    case GgufValueType::u8: case GgufValueType::i8: case GgufValueType::u16: case GgufValueType::i16:
    case GgufValueType::u32: case GgufValueType::i32: case GgufValueType::u64: case GgufValueType::i64:
      return true;
    default: return false;
  }
}

double GgufValue::number_at(uint64_t k) const {
  const uint8_t* p = elements + k * value_size(element_type);
  auto load = [p](auto v) {
    std::memcpy(&v, p, sizeof v);
    return v;
  };
  switch (element_type) {
    case GgufValueType::u8: return load(uint8_t());
    case GgufValueType::i8: return load(int8_t());
    case GgufValueType::u16: return load(uint16_t());
    case GgufValueType::i16: return load(int16_t());
    case GgufValueType::u32: return load(uint32_t());
    case GgufValueType::i32: return load(int32_t());
    case GgufValueType::f32: return load(float());
    case GgufValueType::boolean: return load(uint8_t());
    case GgufValueType::u64: return double(load(uint64_t()));
    case GgufValueType::i64: return double(load(int64_t()));
    case GgufValueType::f64: return load(double());
    default: return 0;
  }
}

int64_t GgufValue::integer_at(uint64_t k) const {
  const uint8_t* p = elements + k * value_size(element_type);
  auto load = [p](auto v) {
    std::memcpy(&v, p, sizeof v);
    return v;
  };
  switch (element_type) {
    case GgufValueType::u8: return load(uint8_t());
    case GgufValueType::i8: return load(int8_t());
    case GgufValueType::u16: return load(uint16_t());
    case GgufValueType::i16: return load(int16_t());
    case GgufValueType::u32: return load(uint32_t());
    case GgufValueType::i32: return load(int32_t());
    case GgufValueType::boolean: return load(uint8_t());
    case GgufValueType::u64: return int64_t(std::min<uint64_t>(load(uint64_t()), uint64_t(INT64_MAX)));
    case GgufValueType::i64: return load(int64_t());
    default: return 0;
  }
}

std::string ggml_type_name(uint32_t type) {
  const TypeTraits t = traits_of(type);
  return t.name ? std::string(t.name) : "type " + std::to_string(type);
}

bool gguf_type_supported(uint32_t type) {
  switch (GgmlType(type)) {
    case GgmlType::F32: case GgmlType::F16: case GgmlType::BF16: case GgmlType::Q8_0: case GgmlType::Q4_0:
    case GgmlType::Q4_1: case GgmlType::Q5_0: case GgmlType::Q5_1: case GgmlType::Q4_K: case GgmlType::Q5_K:
    case GgmlType::Q6_K:
      return true;
    default: return false;
  }
}

uint64_t GgufTensor::numel() const {
  uint64_t n = 1;
  for (uint64_t d : ne) n *= d;  // open() checked the product does not overflow
  return n;
}

std::string GgufTensor::shape_str() const {
  std::string s = "[";
  for (size_t i = 0; i < ne.size(); ++i) s += (i ? ", " : "") + std::to_string(ne[i]);
  return s + "]";
}

GgufFile::~GgufFile() {
  if (map_) munmap(map_, map_size_);
}

std::unique_ptr<GgufFile> GgufFile::open(const std::string& path) {
  std::unique_ptr<GgufFile> file(new GgufFile());
  file->path_ = path;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw InputError(path + ": cannot open (" + std::strerror(errno) + ")");
  struct stat st {};
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw InputError(path + ": not a regular file");
  }
  const size_t size = size_t(st.st_size);
  if (size < 24) {
    ::close(fd);
    throw InputError(path + ": " + std::to_string(size) + " bytes is too short for a GGUF file (24-byte header)");
  }
  void* map = mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  const int mmap_errno = errno;
  ::close(fd);  // the mapping keeps the file alive
  if (map == MAP_FAILED) throw InputError(path + ": cannot mmap (" + std::strerror(mmap_errno) + ")");
  file->map_ = map;
  file->map_size_ = size;
  file->parse_all(static_cast<const uint8_t*>(map), size);
  return file;
}

std::unique_ptr<GgufFile> GgufFile::parse(const uint8_t* bytes, size_t size, const std::string& name) {
  std::unique_ptr<GgufFile> file(new GgufFile());
  file->path_ = name;
  file->parse_all(bytes, size);
  return file;
}

void GgufFile::parse_all(const uint8_t* bytes, size_t size) {
  const std::string& path = path_;
  Cursor c(bytes, size, path);
  if (size < 4 || c.read<uint32_t>("magic") != kMagic)
    throw InputError(path + ": not a GGUF file (no \"GGUF\" magic)");
  version_ = c.read<uint32_t>("version");
  if (version_ == 1)
    throw InputError(path + ": GGUF version 1 (32-bit counts) is not supported; re-convert the model with a current llama.cpp");
  if (version_ != 2 && version_ != 3) {
    if ((version_ & 0xffffu) == 0 && (version_ >> 16) != 0)
      throw InputError(path + ": a big-endian GGUF file; lowbit reads little-endian files");
    throw InputError(path + ": GGUF version " + std::to_string(version_) + " is not supported (lowbit reads 2 and 3)");
  }
  const uint64_t tensor_count = c.read<uint64_t>("tensor count");
  const uint64_t kv_count = c.read<uint64_t>("metadata count");
  // Each metadata entry takes at least 8 (key length) + 4 (type) + 1 bytes, each tensor info at
  // least 8 + 4 + 8 + 4 + 8: counts past what the file could hold are refused before any reserve.
  if (kv_count > c.left() / 13)
    throw InputError(path + ": metadata count " + std::to_string(kv_count) + " cannot fit in the file");
  if (tensor_count > c.left() / 32)
    throw InputError(path + ": tensor count " + std::to_string(tensor_count) + " cannot fit in the file");

  for (uint64_t k = 0; k < kv_count; ++k) {
    const std::string what = "metadata entry " + std::to_string(k);
    const std::string key(c.read_string(what + " key"));
    if (key.empty()) throw InputError(path + ": " + what + " has an empty key");
    const std::string where = path + ": metadata " + in_quotes(key);
    const uint32_t raw_type = c.read<uint32_t>(what + " type");
    if (!known_value_type(raw_type)) throw InputError(where + " has unknown value type " + std::to_string(raw_type));
    const auto type = GgufValueType(raw_type);
    GgufValue v;
    try {
      if (type != GgufValueType::array) {
        v = read_scalar(c, type, "metadata " + in_quotes(key));
      } else {
        v.type = type;
        const uint32_t raw_elem = c.read<uint32_t>("metadata " + in_quotes(key) + " element type");
        if (!known_value_type(raw_elem))
          throw InputError("an array of unknown element type " + std::to_string(raw_elem));
        v.element_type = GgufValueType(raw_elem);
        if (v.element_type == GgufValueType::array) throw InputError("an array of arrays, which lowbit does not read");
        v.count = c.read<uint64_t>("metadata " + in_quotes(key) + " element count");
        if (v.element_type == GgufValueType::string) {
          if (v.count > c.left() / 8)
            throw InputError("an array of " + std::to_string(v.count) + " strings, more than the file can hold");
          v.strings.reserve(size_t(v.count));
          for (uint64_t e = 0; e < v.count; ++e)
            v.strings.push_back(c.read_string("metadata " + in_quotes(key) + " element " + std::to_string(e)));
        } else {
          const uint64_t elem = value_size(v.element_type);
          if (v.count > c.left() / elem)
            throw InputError("an array of " + std::to_string(v.count) + " " + gguf_value_type_name(v.element_type) +
                             " values, more than the file can hold");
          v.elements = c.here();
          if (v.element_type == GgufValueType::boolean)
            for (uint64_t e = 0; e < v.count; ++e)
              if (v.elements[e] > 1) throw InputError("a bool element that is " + std::to_string(v.elements[e]));
          c.skip(v.count * elem, "metadata " + in_quotes(key));
        }
      }
    } catch (const InputError& e) {
      const std::string msg = e.what();
      // Truncation messages already name the file; the others describe the value.
      if (msg.rfind(path + ":", 0) == 0) throw;
      throw InputError(where + " is " + msg);
    }
    if (!metadata_.emplace(key, std::move(v)).second) throw InputError(where + " appears twice");
  }

  if (const GgufValue* a = find("general.alignment")) {
    if (a->type != GgufValueType::u32)
      throw InputError(path + ": metadata 'general.alignment' is a " + gguf_value_type_name(a->type) +
                       ", expected uint32");
    if (a->u == 0 || (a->u & (a->u - 1)) != 0)
      throw InputError(path + ": metadata 'general.alignment' is " + std::to_string(a->u) + "; must be a power of two");
    alignment_ = a->u;
  }

  tensors_.reserve(size_t(tensor_count));
  for (uint64_t k = 0; k < tensor_count; ++k) {
    const std::string what = "tensor info " + std::to_string(k);
    GgufTensor t;
    t.name = std::string(c.read_string(what + " name"));
    if (t.name.empty()) throw InputError(path + ": " + what + " has an empty name");
    const std::string where = path + ": tensor " + in_quotes(t.name);
    if (t.name.size() >= kMaxTensorName)
      throw InputError(where + " has a name of " + std::to_string(t.name.size()) + " bytes; GGUF allows " +
                       std::to_string(kMaxTensorName - 1));
    const uint32_t n_dims = c.read<uint32_t>(what + " n_dims");
    if (n_dims == 0 || n_dims > kMaxDims)
      throw InputError(where + " has " + std::to_string(n_dims) + " dimensions; GGUF allows 1 to 4");
    uint64_t numel = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      const uint64_t dim = c.read<uint64_t>(what + " dimension");
      if (dim > uint64_t(INT64_MAX)) throw InputError(where + " has a dimension too large (" + std::to_string(dim) + ")");
      t.ne.push_back(dim);
      if (__builtin_mul_overflow(numel, dim, &numel) || numel > uint64_t(INT64_MAX))
        throw InputError(where + " has dimensions whose product overflows");
    }
    t.type = c.read<uint32_t>(what + " type");
    const TypeTraits tr = traits_of(t.type);
    if (!tr.name) throw InputError(where + " has unknown ggml type id " + std::to_string(t.type));
    if (tr.block == 0)
      throw InputError(where + " has type " + tr.name + ", which lowbit cannot read (it reads " + kSupportedTypes + ")");
    if (t.ne[0] % tr.block != 0)
      throw InputError(where + " has " + std::to_string(t.ne[0]) + " elements per row, not a multiple of " + tr.name +
                       "'s block of " + std::to_string(tr.block));
    if (__builtin_mul_overflow(numel / tr.block, uint64_t(tr.bytes), &t.nbytes))
      throw InputError(where + " is too large");
    t.offset = c.read<uint64_t>(what + " offset");
    if (t.offset % alignment_ != 0)
      throw InputError(where + " has offset " + std::to_string(t.offset) + ", not a multiple of the alignment " +
                       std::to_string(alignment_));
    if (tensor_index_.count(t.name)) throw InputError(where + " appears twice");
    tensor_index_[t.name] = tensors_.size();
    tensors_.push_back(std::move(t));
  }

  // The data section starts at the next multiple of the alignment.
  const uint64_t header_end = c.pos();
  const uint64_t data_start = (header_end + alignment_ - 1) / alignment_ * alignment_;
  const uint64_t data_size = data_start <= size ? size - data_start : 0;
  if (data_start > size && !tensors_.empty())
    throw InputError(path + ": truncated: the data section would start at " + std::to_string(data_start) +
                     " but the file has " + std::to_string(size) + " bytes");
  for (GgufTensor& t : tensors_) {
    if (t.offset > data_size || t.nbytes > data_size - t.offset)
      throw InputError(path + ": tensor " + in_quotes(t.name) + " (" + std::to_string(t.nbytes) + " bytes at offset " +
                       std::to_string(t.offset) + ") runs past the end of the data section (" +
                       std::to_string(data_size) + " bytes); the file may be truncated");
    t.data = bytes + data_start + t.offset;
  }
  std::vector<const GgufTensor*> by_offset;
  for (const GgufTensor& t : tensors_)
    if (t.nbytes > 0) by_offset.push_back(&t);
  std::sort(by_offset.begin(), by_offset.end(),
            [](const GgufTensor* a, const GgufTensor* b) { return a->offset < b->offset; });
  for (size_t i = 1; i < by_offset.size(); ++i)
    if (by_offset[i]->offset < by_offset[i - 1]->offset + by_offset[i - 1]->nbytes)
      throw InputError(path + ": tensor " + in_quotes(by_offset[i]->name) + " overlaps tensor " +
                       in_quotes(by_offset[i - 1]->name));
}

const GgufValue* GgufFile::find(const std::string& key) const {
  auto it = metadata_.find(key);
  return it == metadata_.end() ? nullptr : &it->second;
}

const GgufTensor* GgufFile::find_tensor(const std::string& name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

namespace {
const GgufValue& require(const GgufFile& f, const std::string& key) {
  const GgufValue* v = f.find(key);
  if (!v) throw InputError(f.path() + ": metadata " + in_quotes(key) + " is missing");
  return *v;
}
[[noreturn]] void wrong_type(const GgufFile& f, const std::string& key, const GgufValue& v, const char* expected) {
  throw InputError(f.path() + ": metadata " + in_quotes(key) + " is a " + gguf_value_type_name(v.type) + ", expected " +
                   expected);
}
}  // namespace

std::string GgufFile::get_string(const std::string& key) const {
  const GgufValue& v = require(*this, key);
  if (v.type != GgufValueType::string) wrong_type(*this, key, v, "string");
  return std::string(v.s);
}

uint64_t GgufFile::get_uint(const std::string& key) const {
  const GgufValue& v = require(*this, key);
  if (!v.is_integer()) wrong_type(*this, key, v, "an integer");
  if (v.i < 0) throw InputError(path_ + ": metadata " + in_quotes(key) + " is negative (" + std::to_string(v.i) + ")");
  return v.u ? v.u : uint64_t(v.i);
}

double GgufFile::get_float(const std::string& key) const {
  const GgufValue& v = require(*this, key);
  if (v.is_float()) return v.f;
  if (v.is_integer()) return v.i ? double(v.i) : double(v.u);
  wrong_type(*this, key, v, "a number");
}

bool GgufFile::get_bool(const std::string& key) const {
  const GgufValue& v = require(*this, key);
  if (v.type != GgufValueType::boolean) wrong_type(*this, key, v, "bool");
  return v.u != 0;
}

const GgufValue& GgufFile::get_array(const std::string& key, GgufValueType element_type) const {
  const GgufValue& v = require(*this, key);
  if (v.type != GgufValueType::array)
    wrong_type(*this, key, v, (std::string("an array of ") + gguf_value_type_name(element_type)).c_str());
  if (v.element_type != element_type)
    throw InputError(path_ + ": metadata " + in_quotes(key) + " is an array of " +
                     gguf_value_type_name(v.element_type) + ", expected " + gguf_value_type_name(element_type));
  return v;
}

// ---- dequantization: ggml-quants.c dequantize_row_*, block by block ----
namespace {

float f16_at(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return f16_to_f32(h);
}

// Q8_0 block (34 bytes): f16 d, int8 qs[32]; x = qs * d.
void dequant_q8_0(const uint8_t* b, float* y) {
  const float d = f16_at(b);
  for (int j = 0; j < 32; ++j) y[j] = float(int8_t(b[2 + j])) * d;
}

// Q4_0 block (18 bytes): f16 d, qs[16]; element j (< 16) is the low nibble of qs[j], element
// j + 16 the high nibble; x = (q - 8) * d.
void dequant_q4_0(const uint8_t* b, float* y) {
  const float d = f16_at(b);
  const uint8_t* qs = b + 2;
  for (int j = 0; j < 16; ++j) {
    y[j] = float(int(qs[j] & 0x0f) - 8) * d;
    y[j + 16] = float(int(qs[j] >> 4) - 8) * d;
  }
}

// Q4_1 block (20 bytes): f16 d, f16 m, qs[16] as Q4_0; x = q * d + m.
void dequant_q4_1(const uint8_t* b, float* y) {
  const float d = f16_at(b), m = f16_at(b + 2);
  const uint8_t* qs = b + 4;
  for (int j = 0; j < 16; ++j) {
    y[j] = float(qs[j] & 0x0f) * d + m;
    y[j + 16] = float(qs[j] >> 4) * d + m;
  }
}

// Q5_0 block (22 bytes): f16 d, u32 qh (bit j = fifth bit of element j), qs[16] as Q4_0;
// x = (q - 16) * d.
void dequant_q5_0(const uint8_t* b, float* y) {
  const float d = f16_at(b);
  uint32_t qh;
  std::memcpy(&qh, b + 2, 4);
  const uint8_t* qs = b + 6;
  for (int j = 0; j < 16; ++j) {
    const int lo = int((qs[j] & 0x0f) | (((qh >> j) << 4) & 0x10)) - 16;
    const int hi = int((qs[j] >> 4) | ((qh >> (j + 12)) & 0x10)) - 16;
    y[j] = float(lo) * d;
    y[j + 16] = float(hi) * d;
  }
}

// Q5_1 block (24 bytes): f16 d, f16 m, u32 qh, qs[16]; x = q * d + m.
void dequant_q5_1(const uint8_t* b, float* y) {
  const float d = f16_at(b), m = f16_at(b + 2);
  uint32_t qh;
  std::memcpy(&qh, b + 4, 4);
  const uint8_t* qs = b + 8;
  for (int j = 0; j < 16; ++j) {
    const unsigned lo = (qs[j] & 0x0f) | (((qh >> j) << 4) & 0x10);
    const unsigned hi = (qs[j] >> 4) | ((qh >> (j + 12)) & 0x10);
    y[j] = float(lo) * d + m;
    y[j + 16] = float(hi) * d + m;
  }
}

// The 6-bit scale and min of sub-block j (0..7) packed in a K-quant's 12 scale bytes
// (ggml's get_scale_min_k4).
void scale_min_k4(int j, const uint8_t* q, uint8_t& sc, uint8_t& m) {
  if (j < 4) {
    sc = q[j] & 63;
    m = q[j + 4] & 63;
  } else {
    sc = uint8_t((q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4));
    m = uint8_t((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
  }
}

// Q4_K super-block (144 bytes, 256 elements): f16 d, f16 dmin, scales[12], qs[128]. Eight
// sub-blocks of 32; each 64 elements share 32 bytes of qs (low nibbles first, then high);
// x = (d * sc) * q - (dmin * m).
void dequant_q4_k(const uint8_t* b, float* y) {
  const float d = f16_at(b), dmin = f16_at(b + 2);
  const uint8_t* scales = b + 4;
  const uint8_t* q = b + 16;
  int is = 0;
  for (int j = 0; j < 256; j += 64) {
    uint8_t sc, m;
    scale_min_k4(is, scales, sc, m);
    const float d1 = d * float(sc), m1 = dmin * float(m);
    scale_min_k4(is + 1, scales, sc, m);
    const float d2 = d * float(sc), m2 = dmin * float(m);
    for (int l = 0; l < 32; ++l) *y++ = d1 * float(q[l] & 0x0f) - m1;
    for (int l = 0; l < 32; ++l) *y++ = d2 * float(q[l] >> 4) - m2;
    q += 32;
    is += 2;
  }
}

// Q5_K super-block (176 bytes): f16 d, f16 dmin, scales[12], qh[32], qs[128]; as Q4_K with the
// fifth bit of element l of sub-block s in bit s of qh[l].
void dequant_q5_k(const uint8_t* b, float* y) {
  const float d = f16_at(b), dmin = f16_at(b + 2);
  const uint8_t* scales = b + 4;
  const uint8_t* qh = b + 16;
  const uint8_t* ql = b + 48;
  int is = 0;
  uint8_t u1 = 1, u2 = 2;
  for (int j = 0; j < 256; j += 64) {
    uint8_t sc, m;
    scale_min_k4(is, scales, sc, m);
    const float d1 = d * float(sc), m1 = dmin * float(m);
    scale_min_k4(is + 1, scales, sc, m);
    const float d2 = d * float(sc), m2 = dmin * float(m);
    for (int l = 0; l < 32; ++l) *y++ = d1 * float((ql[l] & 0x0f) + (qh[l] & u1 ? 16 : 0)) - m1;
    for (int l = 0; l < 32; ++l) *y++ = d2 * float((ql[l] >> 4) + (qh[l] & u2 ? 16 : 0)) - m2;
    ql += 32;
    is += 2;
    u1 = uint8_t(u1 << 2);
    u2 = uint8_t(u2 << 2);
  }
}

// Q6_K super-block (210 bytes): ql[128] (low 4 bits), qh[64] (high 2 bits), int8 scales[16],
// f16 d; sixteen sub-blocks of 16; x = (d * scale) * (q - 32).
void dequant_q6_k(const uint8_t* b, float* y) {
  const uint8_t* ql = b;
  const uint8_t* qh = b + 128;
  const auto* sc = reinterpret_cast<const int8_t*>(b + 192);
  const float d = f16_at(b + 208);
  for (int n = 0; n < 256; n += 128) {
    for (int l = 0; l < 32; ++l) {
      const int is = l / 16;
      const int q1 = int((ql[l] & 0x0f) | (((qh[l] >> 0) & 3) << 4)) - 32;
      const int q2 = int((ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4)) - 32;
      const int q3 = int((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
      const int q4 = int((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
      y[l] = d * float(sc[is]) * float(q1);
      y[l + 32] = d * float(sc[is + 2]) * float(q2);
      y[l + 64] = d * float(sc[is + 4]) * float(q3);
      y[l + 96] = d * float(sc[is + 6]) * float(q4);
    }
    y += 128;
    ql += 64;
    qh += 32;
    sc += 8;
  }
}

}  // namespace

void dequantize_gguf_tensor(const GgufTensor& t, const std::string& file, float* out) {
  const uint64_t n = t.numel();
  const uint8_t* p = t.data;
  auto blocks = [&](uint64_t block, uint64_t bytes, void (*fn)(const uint8_t*, float*)) {
    for (uint64_t b = 0; b < n / block; ++b) fn(p + b * bytes, out + b * block);
  };
  switch (GgmlType(t.type)) {
    case GgmlType::F32: std::memcpy(out, p, n * 4); return;
    case GgmlType::F16:
      for (uint64_t i = 0; i < n; ++i) out[i] = f16_at(p + 2 * i);
      return;
    case GgmlType::BF16:
      for (uint64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, p + 2 * i, 2);
        out[i] = bf16_to_f32(h);
      }
      return;
    case GgmlType::Q8_0: blocks(32, 34, dequant_q8_0); return;
    case GgmlType::Q4_0: blocks(32, 18, dequant_q4_0); return;
    case GgmlType::Q4_1: blocks(32, 20, dequant_q4_1); return;
    case GgmlType::Q5_0: blocks(32, 22, dequant_q5_0); return;
    case GgmlType::Q5_1: blocks(32, 24, dequant_q5_1); return;
    case GgmlType::Q4_K: blocks(256, 144, dequant_q4_k); return;
    case GgmlType::Q5_K: blocks(256, 176, dequant_q5_k); return;
    case GgmlType::Q6_K: blocks(256, 210, dequant_q6_k); return;
    default: break;
  }
  throw InputError(file + ": tensor " + in_quotes(t.name) + " has type " + ggml_type_name(t.type) +
                   ", which lowbit does not dequantize (it reads " + kSupportedTypes + ")");
}

std::vector<float> dequantize_gguf_tensor(const GgufTensor& t, const std::string& file) {
  if (!gguf_type_supported(t.type)) {
    dequantize_gguf_tensor(t, file, nullptr);  // throws the unsupported-type error
  }
  std::vector<float> out(size_t(t.numel()));
  dequantize_gguf_tensor(t, file, out.data());
  return out;
}

}  // namespace lowbit
