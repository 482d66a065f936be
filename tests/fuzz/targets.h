// The fuzz targets' bodies, shared by the libFuzzer binaries (tests/fuzz/fuzz_*.cpp) and by the
// regression replay in tests/test_hardening.cpp, so a saved crash replays through the very same
// code. Each target feeds bytes from a stranger to one parser: a lowbit::Error is the expected
// way to reject them and is swallowed; any other exception escapes (libFuzzer reports it), and a
// broken invariant of an accepted input calls abort() with a line saying which.
#pragma once
#include <sys/mman.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "chat/chat_template.h"
#include "convert/gguf_convert.h"
#include "convert/llama2c.h"
#include "core/error.h"
#include "io/gguf.h"
#include "io/safetensors.h"
#include "model/config.h"
#include "tokenizer/tokenizer.h"

namespace lowbit::fuzz {

namespace fs = std::filesystem;

inline void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "fuzz invariant broken: %s\n", what);
    std::abort();
  }
}

// The bytes as an unnamed in-memory file, reachable by path (/proc/self/fd/N) for parsers that
// only open paths; nothing touches the disk.
class MemFile {
 public:
  MemFile(const uint8_t* data, size_t size) {
    fd_ = memfd_create("lowbit-fuzz", MFD_CLOEXEC);
    check(fd_ >= 0, "memfd_create failed");
    for (size_t done = 0; done < size;) {
      const ssize_t n = ::write(fd_, data + done, size - done);
      check(n > 0, "write to memfd failed");
      done += size_t(n);
    }
    path_ = "/proc/self/fd/" + std::to_string(fd_);
  }
  ~MemFile() { ::close(fd_); }
  MemFile(const MemFile&) = delete;
  MemFile& operator=(const MemFile&) = delete;
  const std::string& path() const { return path_; }

 private:
  int fd_ = -1;
  std::string path_;
};

// A scratch folder for targets whose parser reads a directory; one per process, removed at exit.
inline const fs::path& scratch_dir() {
  struct Dir {
    fs::path path;
    Dir() {
      path = fs::temp_directory_path() / ("lowbit_fuzz_" + std::to_string(::getpid()));
      fs::create_directories(path);
    }
    ~Dir() {
      std::error_code ec;
      fs::remove_all(path, ec);
    }
  };
  static Dir dir;
  return dir.path;
}

inline void write_file(const fs::path& path, const uint8_t* data, size_t size) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(data), std::streamsize(size));
  check(bool(out), "cannot write a scratch file");
}

inline std::string test_data_dir() {
  const char* d = std::getenv("LOWBIT_TEST_DATA");
  return d ? d : "tests/data";
}
inline std::string root_dir() {
  const char* d = std::getenv("LOWBIT_ROOT");
  return d ? d : ".";
}

// Strict UTF-8 (no overlongs, no surrogates, nothing above U+10FFFF): the tokenizer must reject
// exactly the texts this rejects.
inline bool valid_utf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = uint8_t(s[i]);
    size_t len;
    uint32_t cp;
    if (c < 0x80) { ++i; continue; }
    if (c >= 0xc2 && c <= 0xdf) { len = 2; cp = c & 0x1f; }
    else if (c >= 0xe0 && c <= 0xef) { len = 3; cp = c & 0x0f; }
    else if (c >= 0xf0 && c <= 0xf4) { len = 4; cp = c & 0x07; }
    else return false;
    if (i + len > s.size()) return false;
    for (size_t k = 1; k < len; ++k) {
      const auto b = uint8_t(s[i + k]);
      if ((b & 0xc0) != 0x80) return false;
      cp = (cp << 6) | (b & 0x3f);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
        (cp >= 0xd800 && cp <= 0xdfff))
      return false;
    i += len;
  }
  return true;
}

// What open() promises of a file it accepted: every tensor's bytes are the ones its
// data_offsets name inside the data section, and their count is numel * dtype size.
inline void check_accepted_safetensors(const SafetensorsFile& file, const uint8_t* data, size_t size) {
  uint64_t header_len = 0;
  check(size >= 8, "accepted a file shorter than 8 bytes");
  std::memcpy(&header_len, data, 8);
  check(header_len <= size - 8, "accepted a header longer than the file");
  const size_t data_start = 8 + size_t(header_len);
  const auto header = nlohmann::json::parse(data + 8, data + data_start);
  for (const TensorInfo& t : file.tensors()) {
    check(header.contains(t.name), "a tensor not in the header");
    const auto& offsets = header[t.name]["data_offsets"];
    const auto begin = offsets[0].get<uint64_t>(), end = offsets[1].get<uint64_t>();
    check(begin <= end && end <= size - data_start, "accepted offsets outside the data section");
    check(t.nbytes == end - begin, "nbytes differs from data_offsets");
    int64_t numel = 1;
    for (int64_t d : t.shape) {
      check(d >= 0, "accepted a negative dimension");
      numel *= d;
    }
    check(t.numel() == numel, "numel() differs from the shape's product");
    check(uint64_t(numel) * dtype_size(t.dtype) == t.nbytes, "accepted nbytes != numel * dtype size");
    check(t.nbytes == 0 || std::memcmp(t.data, data + data_start + begin, t.nbytes) == 0,
          "tensor bytes differ from the file's");
    if (numel <= (1 << 16)) {
      std::vector<float> f(size_t(numel) + 1);
      to_f32(t, f.data());
    }
  }
}

inline int safetensors(const uint8_t* data, size_t size) {
  try {
    MemFile f(data, size);
    const auto file = SafetensorsFile::open(f.path());
    check_accepted_safetensors(*file, data, size);
  } catch (const Error&) {
  }
  return 0;
}

// model.safetensors.index.json from the input, next to two valid shards (a, b in the first; c in
// the second) and a subfolder.
inline int safetensors_index(const uint8_t* data, size_t size) {
  const fs::path dir = scratch_dir() / "index";
  static const bool ready = [&] {
    fs::create_directories(dir / "sub");
    const float values[6] = {1, 2, 3, 4, 5, 6};
    write_safetensors((dir / "model-00001-of-00002.safetensors").string(),
                      {{"a", DType::F32, {2}, values}, {"b", DType::F32, {2, 2}, values}});
    write_safetensors((dir / "model-00002-of-00002.safetensors").string(), {{"c", DType::F32, {3}, values}});
    write_safetensors((dir / "sub" / "s.safetensors").string(), {{"d", DType::F32, {1}, values}});
    return true;
  }();
  (void)ready;
  try {
    write_file(dir / "model.safetensors.index.json", data, size);
    const WeightStore store = WeightStore::open_dir(dir.string());
    for (const std::string& name : store.names()) {
      check(store.has(name), "names() lists a tensor has() denies");
      const TensorInfo& t = store.get(name);
      check(t.nbytes == size_t(t.numel()) * dtype_size(t.dtype), "nbytes != numel * dtype size");
    }
  } catch (const Error&) {
  }
  return 0;
}

inline int config(const uint8_t* data, size_t size) {
  try {
    const ModelConfig c = parse_config(std::string(reinterpret_cast<const char*>(data), size), "config.json");
    // What the model code relies on once parse_config returned.
    check(c.hidden_size > 0 && c.intermediate_size > 0 && c.n_layers > 0 && c.vocab_size > 0,
          "accepted a non-positive size");
    check(c.n_heads > 0 && c.n_kv_heads > 0 && c.head_dim > 0, "accepted a non-positive head count");
    check(c.n_heads % c.n_kv_heads == 0, "accepted kv heads not dividing heads");
    check(c.head_dim % 2 == 0 || c.arch != Arch::Llama, "accepted an odd rotary head_dim");
    check(int64_t(c.n_heads) * c.head_dim <= std::numeric_limits<int>::max(), "q_dim() overflows int");
    check(c.max_position_embeddings > 0, "accepted a non-positive context");
    check(c.norm_eps > 0 && std::isfinite(c.norm_eps), "accepted a non-positive or non-finite norm eps");
    check(c.rope_theta > 0 && std::isfinite(c.rope_theta), "accepted a non-positive or non-finite rope_theta");
  } catch (const Error&) {
  }
  return 0;
}

// Encodes and decodes a few texts, checking the streaming decoder agrees with decode().
inline void exercise_tokenizer(const Tokenizer& tok, std::string_view text, bool add_special, bool skip_special) {
  std::vector<int32_t> ids;
  try {
    ids = tok.encode(text, add_special);
    check(valid_utf8(text), "encode accepted invalid UTF-8");
  } catch (const InputError&) {
    check(!valid_utf8(text), "encode rejected valid UTF-8");
    return;
  }
  for (int32_t id : ids) check(id >= 0 && id < tok.vocab_size(), "encode gave an id outside the vocabulary");
  const std::string text_back = tok.decode(ids, skip_special);
  StreamDecoder stream(tok, skip_special);
  std::string streamed;
  for (int32_t id : ids) streamed += stream.push(id);
  streamed += stream.flush();
  check(streamed == text_back, "StreamDecoder output differs from decode()");
}

inline int tokenizer_json(const uint8_t* data, size_t size) {
  try {
    MemFile f(data, size);
    const Tokenizer tok = Tokenizer::from_file(f.path());
    for (const char* text : {"Hello world", "  \xc3\xbcn\xc3\xaf" "code \xe6\x97\xa5\xe6\x9c\xac\n\t 123 <s></s>", ""})
      exercise_tokenizer(tok, text, true, true);
    std::vector<int32_t> ids;
    for (int32_t id = -1; id <= tok.vocab_size() && id < 300; ++id) {
      (void)tok.id_to_token(id);
      ids.push_back(id);
    }
    (void)tok.decode(ids, false);
  } catch (const Error&) {
  }
  return 0;
}

// First byte: bit 0 picks the tokenizer (stories260K or Llama-3), bit 1 add_special, bit 2
// skip_special, bit 3 treat the rest as little-endian 16-bit ids to decode instead of text.
inline int tokenizer_encode(const uint8_t* data, size_t size) {
  static const Tokenizer small = Tokenizer::from_file(test_data_dir() + "/tokenizers/stories260K/tokenizer.json");
  static const Tokenizer llama3 = Tokenizer::from_file(test_data_dir() + "/tokenizers/llama3/tokenizer.json");
  if (size == 0) return 0;
  const Tokenizer& tok = data[0] & 1 ? llama3 : small;
  const bool add_special = data[0] & 2, skip_special = data[0] & 4;
  const std::string_view rest(reinterpret_cast<const char*>(data + 1), size - 1);
  try {
    if (data[0] & 8) {
      std::vector<int32_t> ids;
      for (size_t i = 0; i + 1 < rest.size(); i += 2)
        ids.push_back(int32_t(uint8_t(rest[i]) | uint8_t(rest[i + 1]) << 8) % (tok.vocab_size() + 8) - 4);
      const std::string text = tok.decode(ids, skip_special);
      StreamDecoder stream(tok, skip_special);
      std::string streamed;
      for (int32_t id : ids) streamed += stream.push(id);
      streamed += stream.flush();
      check(streamed == text, "StreamDecoder output differs from decode() on arbitrary ids");
    } else {
      exercise_tokenizer(tok, rest, add_special, skip_special);
    }
  } catch (const Error&) {
  }
  return 0;
}

// Input: 4-byte little-endian length L, L bytes of checkpoint, the rest the tokenizer .bin.
// An accepted pair must give a folder lowbit itself loads.
inline int llama2c(const uint8_t* data, size_t size) {
  if (size < 4) return 0;
  uint32_t ckpt_len = 0;
  std::memcpy(&ckpt_len, data, 4);
  ckpt_len = uint32_t(std::min<size_t>(ckpt_len, size - 4));
  const fs::path out = scratch_dir() / "llama2c";
  std::error_code ec;
  fs::remove_all(out, ec);
  try {
    MemFile ckpt(data + 4, ckpt_len), tok(data + 4 + ckpt_len, size - 4 - ckpt_len);
    convert_llama2c(ckpt.path(), tok.path(), out.string());
  } catch (const Error&) {
    return 0;
  }
  try {
    (void)load_config(out.string());
    (void)WeightStore::open_dir(out.string());
    (void)Tokenizer::from_file((out / "tokenizer.json").string());
  } catch (const Error& e) {
    std::fprintf(stderr, "converted folder does not load: %s\n", e.what());
    check(false, "convert_llama2c wrote a folder lowbit rejects");
  }
  return 0;
}

// A GGUF file: what open() accepts keeps every tensor inside the file at an aligned offset and
// dequantizes; what the converter accepts (config, tokenizer.json, template) lowbit itself loads.
inline int gguf(const uint8_t* data, size_t size) {
  std::unique_ptr<GgufFile> f;
  try {
    f = GgufFile::parse(data, size, "fuzz.gguf");
  } catch (const Error&) {
    return 0;
  }
  for (const GgufTensor& t : f->tensors()) {
    check(!t.ne.empty() && t.ne.size() <= 4, "accepted n_dims outside 1..4");
    check(t.data >= data && t.nbytes <= size && size_t(t.data - data) <= size - t.nbytes,
          "accepted a tensor outside the file");
    check(size_t(t.data - data) % f->alignment() == 0, "accepted an unaligned tensor");
    if (gguf_type_supported(t.type) && t.numel() <= (1u << 16)) {
      std::vector<float> values(size_t(t.numel()) + 1);
      dequantize_gguf_tensor(t, f->path(), values.data());
    }
  }
  try {
    (void)gguf_config_json(*f);
  } catch (const Error&) {
  }
  std::string tokenizer_text;
  try {
    tokenizer_text = gguf_tokenizer_json(*f).dump();
  } catch (const Error&) {
  }
  if (!tokenizer_text.empty()) {
    MemFile m(reinterpret_cast<const uint8_t*>(tokenizer_text.data()), tokenizer_text.size());
    try {
      const Tokenizer tok = Tokenizer::from_file(m.path());
      exercise_tokenizer(tok, "Hello world 123 <|im_start|>", true, true);
    } catch (const Error& e) {
      std::fprintf(stderr, "converted tokenizer does not load: %s\n", e.what());
      check(false, "gguf_tokenizer_json wrote a tokenizer.json lowbit rejects");
    }
  }
  try {
    const auto config = gguf_tokenizer_config_json(*f);
    if (config.contains("chat_template")) {
      const ChatTemplate t = ChatTemplate::recognise(config["chat_template"].get<std::string>(), "fuzz.gguf");
      (void)t.render({{"system", "s"}, {"user", "u"}, {"assistant", "a"}, {"user", "v"}}, true);
    }
  } catch (const Error&) {
  }
  return 0;
}

}  // namespace lowbit::fuzz
