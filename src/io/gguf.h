// GGUF reader (llama.cpp's model file; versions 2 and 3, little-endian), mmapped and validated
// before use, and the dequantizers of the tensor types people download, exactly as ggml defines
// them (ggml-quants.c dequantize_row_*).
//
// Layout: "GGUF", u32 version, u64 tensor_count, u64 kv_count; kv_count metadata entries
// (string key, u32 value type, value); tensor_count tensor infos (string name, u32 n_dims,
// n_dims x u64 ne (ne[0] varies fastest: a row), u32 ggml type, u64 offset); padding to
// general.alignment (default 32); the data section, where each tensor sits at its offset.
// A string is u64 length + bytes (no terminator); an array is u32 element type, u64 count,
// elements.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace lowbit {

enum class GgufValueType : uint32_t {
  u8 = 0, i8 = 1, u16 = 2, i16 = 3, u32 = 4, i32 = 5, f32 = 6, boolean = 7, string = 8, array = 9,
  u64 = 10, i64 = 11, f64 = 12,
};
const char* gguf_value_type_name(GgufValueType t);

// One metadata value. Scalars are held decoded; an array keeps its element type, count and a
// pointer to its packed elements inside the mapping (strings as views into the mapping), so a
// 49k-token vocabulary costs one view per token.
struct GgufValue {
  GgufValueType type = GgufValueType::u8;
  uint64_t u = 0;      // unsigned integers and bool
  int64_t i = 0;       // signed integers
  double f = 0;        // floats
  std::string_view s;  // string
  // Arrays (type == array): element type and count; numeric elements packed at `elements`.
  GgufValueType element_type = GgufValueType::u8;
  uint64_t count = 0;
  const uint8_t* elements = nullptr;
  std::vector<std::string_view> strings;  // element_type == string

  bool is_integer() const;
  bool is_float() const { return type == GgufValueType::f32 || type == GgufValueType::f64; }
  // Element `k` of a numeric array as a double / an integer (no range check on k beyond count).
  double number_at(uint64_t k) const;
  int64_t integer_at(uint64_t k) const;
};

// ggml's tensor types (ggml.h enum ggml_type); the ones lowbit dequantizes are listed in
// gguf_type_supported().
enum class GgmlType : uint32_t {
  F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q8_1 = 9, Q2_K = 10,
  Q3_K = 11, Q4_K = 12, Q5_K = 13, Q6_K = 14, Q8_K = 15, BF16 = 30,
};
// "Q4_K", or "type 23" for an id without a name here.
std::string ggml_type_name(uint32_t type);
bool gguf_type_supported(uint32_t type);

struct GgufTensor {
  std::string name;
  uint32_t type = 0;            // a ggml type id; known (its block size is known) once open() accepted it
  std::vector<uint64_t> ne;     // ne[0] = elements per row (fastest)
  uint64_t offset = 0;          // from the start of the data section
  uint64_t nbytes = 0;
  const uint8_t* data = nullptr;  // inside the mapping

  uint64_t numel() const;
  uint64_t row_size() const { return ne.empty() ? 1 : ne[0]; }
  uint64_t rows() const { return numel() / (row_size() ? row_size() : 1); }
  std::string shape_str() const;  // "[576, 49152]" in ne order
};

// One mmapped GGUF file. open() checks everything before returning: magic, version (2 or 3;
// 1 and big-endian files are named as such), counts against the bytes left, every string length
// and array count, value types, duplicate keys and tensor names, n_dims (1..4), dimensions and
// their product, the type id, ne[0] a multiple of the type's block, the alignment (a power of
// two), every offset aligned and inside the data section, sizes, and no two tensors overlapping.
// A violation throws InputError naming the file, and the key or tensor.
class GgufFile {
 public:
  static std::unique_ptr<GgufFile> open(const std::string& path);
  // Parses bytes already in memory (the fuzz target); `name` is used in messages. The bytes must
  // outlive the returned object.
  static std::unique_ptr<GgufFile> parse(const uint8_t* bytes, size_t size, const std::string& name);
  ~GgufFile();
  GgufFile(const GgufFile&) = delete;
  GgufFile& operator=(const GgufFile&) = delete;

  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  const std::string& path() const { return path_; }
  const std::vector<GgufTensor>& tensors() const { return tensors_; }
  const std::map<std::string, GgufValue>& metadata() const { return metadata_; }

  // nullptr when absent.
  const GgufValue* find(const std::string& key) const;
  const GgufTensor* find_tensor(const std::string& name) const;
  // Typed getters: InputError "<file>: metadata 'key' is missing" / "... is a T, expected ...".
  std::string get_string(const std::string& key) const;
  uint64_t get_uint(const std::string& key) const;   // any non-negative integer type
  double get_float(const std::string& key) const;    // f32/f64, or an integer
  bool get_bool(const std::string& key) const;
  const GgufValue& get_array(const std::string& key, GgufValueType element_type) const;

 private:
  GgufFile() = default;
  void parse_all(const uint8_t* bytes, size_t size);
  std::string path_;
  void* map_ = nullptr;
  size_t map_size_ = 0;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  std::vector<GgufTensor> tensors_;
  std::map<std::string, size_t> tensor_index_;
  std::map<std::string, GgufValue> metadata_;
};

// Dequantizes the whole tensor to fp32 (numel floats), as ggml's dequantize_row_<type>; the
// arithmetic is ggml's, step for step in fp32 (e.g. Q4_K: (d * sc) * q - dmin * m), so results
// equal ggml and the gguf Python package bit for bit. InputError naming the tensor and type
// for a type lowbit does not dequantize.
void dequantize_gguf_tensor(const GgufTensor& t, const std::string& file, float* out);
std::vector<float> dequantize_gguf_tensor(const GgufTensor& t, const std::string& file);

}  // namespace lowbit
