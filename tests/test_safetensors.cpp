#include <catch2/catch.hpp>

#include <stdlib.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/half.h"
#include "io/safetensors.h"
#include "test_fixtures.h"

using namespace lowbit;
namespace fs = std::filesystem;
using lowbit::test::TempDir;

namespace {


// Writes header length + header text + data exactly as given, for malformed files.
void write_raw(const std::string& path, const std::string& header, const std::vector<uint8_t>& data,
               uint64_t header_len_override = 0) {
  std::ofstream out(path, std::ios::binary);
  const uint64_t len = header_len_override ? header_len_override : header.size();
  out.write(reinterpret_cast<const char*>(&len), 8);
  out << header;
  out.write(reinterpret_cast<const char*>(data.data()), std::streamsize(data.size()));
}

void write_text(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

// Runs fn, requires an InputError, and requires its message to contain every part (the file
// and the tensor at fault); any other exception type fails the test.
template <class Fn>
void require_input_error(Fn&& fn, std::initializer_list<std::string> parts) {
  try {
    fn();
  } catch (const InputError& e) {
    const std::string message = e.what();
    INFO("message: " << message);
    CHECK(message.find('\n') == std::string::npos);
    for (const std::string& part : parts) CHECK_THAT(message, Catch::Contains(part));
    return;
  }
  FAIL("expected InputError");
}

std::vector<uint8_t> zeros(size_t n) { return std::vector<uint8_t>(n, 0); }

}  // namespace

TEST_CASE("safetensors round trip of F32, F16 and BF16 with metadata", "[safetensors]") {
  TempDir dir;
  const std::vector<float> f32 = {1.5f, -2.0f, 3.25f, 0.0f, 1e-3f, -7.0f};
  std::vector<uint16_t> f16, bf16;
  const std::vector<float> halves = {0.5f, -1.0f, 65504.0f, 3.0f};
  for (float v : halves) {
    f16.push_back(f32_to_f16(v));
    bf16.push_back(f32_to_bf16(v * 3.0f));
  }
  const std::string path = dir.file("t.safetensors");
  write_safetensors(path,
                    {{"w.f32", DType::F32, {2, 3}, f32.data()},
                     {"w.f16", DType::F16, {4}, f16.data()},
                     {"w.bf16", DType::BF16, {2, 2}, bf16.data()},
                     {"empty", DType::F32, {0, 5}, nullptr}},
                    {{"format", "pt"}});

  // Header padded with spaces to a multiple of 8, as the reference writer does.
  std::ifstream raw(path, std::ios::binary);
  uint64_t header_len = 0;
  raw.read(reinterpret_cast<char*>(&header_len), 8);
  CHECK(header_len % 8 == 0);
  std::string header(header_len, '\0');
  raw.read(header.data(), std::streamsize(header_len));
  CHECK(header.front() == '{');
  CHECK(header.find_last_not_of(' ') == header.find_last_of('}'));
  // Tensors appear in the order given.
  CHECK(header.find("w.f32") < header.find("w.f16"));
  CHECK(header.find("w.f16") < header.find("w.bf16"));

  auto file = SafetensorsFile::open(path);
  REQUIRE(file->tensors().size() == 4);
  CHECK(file->metadata().at("format") == "pt");
  std::map<std::string, const TensorInfo*> by_name;
  for (const TensorInfo& t : file->tensors()) by_name[t.name] = &t;

  const TensorInfo& a = *by_name.at("w.f32");
  CHECK(a.dtype == DType::F32);
  CHECK(a.shape == std::vector<int64_t>{2, 3});
  CHECK(a.shape_str() == "[2, 3]");
  CHECK(a.numel() == 6);
  CHECK(a.nbytes == 24);
  CHECK(a.file == path);
  CHECK(to_f32(a) == f32);

  const TensorInfo& b = *by_name.at("w.f16");
  CHECK(b.dtype == DType::F16);
  CHECK(b.nbytes == 8);
  CHECK(to_f32(b) == halves);

  const TensorInfo& c = *by_name.at("w.bf16");
  CHECK(c.dtype == DType::BF16);
  std::vector<float> expected_bf16;
  for (float v : halves) expected_bf16.push_back(round_bf16(v * 3.0f));
  CHECK(to_f32(c) == expected_bf16);

  const TensorInfo& e = *by_name.at("empty");
  CHECK(e.numel() == 0);
  CHECK(e.nbytes == 0);
}

TEST_CASE("WeightStore reads a single-file folder and checks shapes", "[safetensors]") {
  TempDir dir;
  const std::vector<float> w = {1, 2, 3, 4};
  write_safetensors(dir.file("model.safetensors"), {{"a", DType::F32, {2, 2}, w.data()}});
  const WeightStore store = WeightStore::open_dir(dir.path.string());
  CHECK(store.has("a"));
  CHECK_FALSE(store.has("b"));
  CHECK(store.names() == std::vector<std::string>{"a"});
  CHECK(to_f32(store.get("a", {2, 2})) == w);
  require_input_error([&] { store.get("b"); }, {dir.path.string(), "'b'", "missing"});
  require_input_error([&] { store.get("a", {4}); },
                      {"model.safetensors", "'a'", "[2, 2]", "expected [4]"});

  TempDir empty;
  require_input_error([&] { WeightStore::open_dir(empty.path.string()); }, {empty.path.string()});
}

TEST_CASE("WeightStore reads a sharded folder through the index", "[safetensors]") {
  TempDir dir;
  const std::vector<float> a = {1, 2}, b = {3, 4, 5};
  write_safetensors(dir.file("model-00001-of-00002.safetensors"), {{"a", DType::F32, {2}, a.data()}});
  write_safetensors(dir.file("model-00002-of-00002.safetensors"), {{"b", DType::F32, {3}, b.data()}});
  write_text(dir.file("model.safetensors.index.json"),
             R"({"metadata": {"total_size": 20}, "weight_map": {
                   "a": "model-00001-of-00002.safetensors",
                   "b": "model-00002-of-00002.safetensors"}})");
  const WeightStore store = WeightStore::open_dir(dir.path.string());
  CHECK(store.names() == std::vector<std::string>{"a", "b"});
  CHECK(to_f32(store.get("a")) == a);
  CHECK(to_f32(store.get("b")) == b);
  CHECK(store.get("b").file == dir.file("model-00002-of-00002.safetensors"));
}

TEST_CASE("sharded folder: missing shard, tensor not in its shard, bad index", "[safetensors]") {
  TempDir dir;
  const std::vector<float> a = {1, 2};
  write_safetensors(dir.file("s1.safetensors"), {{"a", DType::F32, {2}, a.data()}});
  write_safetensors(dir.file("s2.safetensors"), {{"b", DType::F32, {2}, a.data()}});
  const std::string index = dir.file("model.safetensors.index.json");

  write_text(index, R"({"weight_map": {"a": "s1.safetensors", "c": "s3.safetensors"}})");
  require_input_error([&] { WeightStore::open_dir(dir.path.string()); },
                      {"model.safetensors.index.json", "s3.safetensors", "'c'", "does not exist"});

  write_text(index, R"({"weight_map": {"a": "s1.safetensors", "b": "s1.safetensors"}})");
  require_input_error([&] { WeightStore::open_dir(dir.path.string()); },
                      {"model.safetensors.index.json", "'b'", "s1.safetensors"});

  write_text(index, R"({"weight_map": {"a": "s1.safetensors", "a": "s2.safetensors"}})");
  require_input_error([&] { WeightStore::open_dir(dir.path.string()); },
                      {"model.safetensors.index.json", "'a'", "twice"});

  write_text(index, R"({"weight_map": {"a": "s1.safetensors",)");
  require_input_error([&] { WeightStore::open_dir(dir.path.string()); },
                      {"model.safetensors.index.json", "not valid JSON"});

  write_text(index, R"({"metadata": {}})");
  require_input_error([&] { WeightStore::open_dir(dir.path.string()); },
                      {"model.safetensors.index.json", "weight_map"});

  // A shard that exists but is itself malformed is reported by its own name.
  write_raw(dir.file("s3.safetensors"), R"({"c": {"dtype": "I8", "shape": [2], "data_offsets": [0, 2]}})",
            zeros(2));
  write_text(index, R"({"weight_map": {"a": "s1.safetensors", "c": "s3.safetensors"}})");
  require_input_error([&] { WeightStore::open_dir(dir.path.string()); },
                      {"s3.safetensors", "'c'", "I8"});
}

TEST_CASE("safetensors rejects truncated and oversized headers", "[safetensors]") {
  TempDir dir;
  const std::string path = dir.file("bad.safetensors");

  write_text(path, "abc");
  require_input_error([&] { SafetensorsFile::open(path); }, {path, "too short"});

  write_raw(path, R"({"x": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}})", zeros(4), 1000);
  require_input_error([&] { SafetensorsFile::open(path); }, {path, "1000", "past the end"});

  write_raw(path, "{}", {}, 200ull << 20);
  require_input_error([&] { SafetensorsFile::open(path); }, {path, "100 MB"});

  // A valid file cut short: the last tensor's bytes are gone.
  const std::vector<float> v(8, 1.0f);
  write_safetensors(path, {{"first", DType::F32, {4}, v.data()}, {"last", DType::F32, {4}, v.data()}});
  fs::resize_file(path, fs::file_size(path) - 4);
  require_input_error([&] { SafetensorsFile::open(path); }, {path, "'last'", "truncated"});

  require_input_error([&] { SafetensorsFile::open(dir.file("nope.safetensors")); },
                      {"nope.safetensors", "cannot open"});
}

TEST_CASE("safetensors rejects malformed headers, naming file and tensor", "[safetensors]") {
  TempDir dir;
  const std::string path = dir.file("bad.safetensors");
  auto expect = [&](const std::string& header, size_t data_bytes,
                    std::initializer_list<std::string> parts) {
    write_raw(path, header, zeros(data_bytes));
    std::vector<std::string> all = {path};
    all.insert(all.end(), parts.begin(), parts.end());
    try {
      SafetensorsFile::open(path);
    } catch (const InputError& e) {
      const std::string message = e.what();
      INFO("header: " << header << "\nmessage: " << message);
      for (const std::string& part : all) CHECK_THAT(message, Catch::Contains(part));
      return;
    }
    FAIL("expected InputError for header " << header);
  };

  SECTION("invalid JSON") { expect(R"({"x": {"dtype": "F32", )", 0, {"not valid JSON"}); }
  SECTION("header not an object") { expect("[1, 2]", 0, {"not a JSON object"}); }
  SECTION("dtype named in the message") {
    write_raw(path, R"({"x": {"dtype": "I8", "shape": [4], "data_offsets": [0, 4]}})", zeros(4));
    REQUIRE_THROWS_MATCHES(SafetensorsFile::open(path), InputError,
                           Catch::Message(path + ": tensor 'x' has dtype I8; lowbit reads F32, F16 and BF16"));
    expect(R"({"y": {"dtype": "F64", "shape": [1], "data_offsets": [0, 8]}})", 8, {"'y'", "F64"});
  }
  SECTION("dtype not a string") {
    expect(R"({"x": {"dtype": 4, "shape": [1], "data_offsets": [0, 4]}})", 4, {"'x'", "dtype"});
  }
  SECTION("missing fields") {
    expect(R"({"x": {"shape": [1], "data_offsets": [0, 4]}})", 4, {"'x'", "dtype"});
    expect(R"({"x": {"dtype": "F32", "data_offsets": [0, 4]}})", 4, {"'x'", "shape"});
    expect(R"({"x": {"dtype": "F32", "shape": [1]}})", 4, {"'x'", "data_offsets"});
    expect(R"({"x": [1, 2]})", 4, {"'x'", "not a JSON object"});
  }
  SECTION("wrong JSON types") {
    expect(R"({"x": {"dtype": "F32", "shape": "1", "data_offsets": [0, 4]}})", 4, {"'x'", "shape"});
    expect(R"({"x": {"dtype": "F32", "shape": [1.5], "data_offsets": [0, 4]}})", 4, {"'x'", "shape"});
    expect(R"({"x": {"dtype": "F32", "shape": [1], "data_offsets": [0]}})", 4, {"'x'", "data_offsets"});
    expect(R"({"x": {"dtype": "F32", "shape": [1], "data_offsets": ["0", "4"]}})", 4,
           {"'x'", "data_offsets"});
  }
  SECTION("negative dimension") {
    expect(R"({"x": {"dtype": "F32", "shape": [-1, 2], "data_offsets": [0, 4]}})", 4, {"'x'", "negative"});
  }
  SECTION("negative or reversed offsets") {
    expect(R"({"x": {"dtype": "F32", "shape": [1], "data_offsets": [-4, 0]}})", 4, {"'x'", "negative"});
    expect(R"({"x": {"dtype": "F32", "shape": [0], "data_offsets": [4, 0]}})", 4, {"'x'", "end before"});
  }
  SECTION("offsets past the end of the data") {
    expect(R"({"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}})", 4, {"'x'", "past the end"});
  }
  SECTION("size does not match shape") {
    expect(R"({"x": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}})", 8,
           {"'x'", "8 bytes", "needs 12"});
    expect(R"({"x": {"dtype": "BF16", "shape": [2, 2], "data_offsets": [0, 16]}})", 16,
           {"'x'", "needs 8"});
    // A shape whose byte count overflows 64 bits must not wrap around to a small number.
    expect(R"({"x": {"dtype": "F32", "shape": [4611686018427387904, 4], "data_offsets": [0, 0]}})", 0,
           {"'x'", "needs"});
  }
  SECTION("overlapping tensors") {
    expect(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
               "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})",
           12, {"'a'", "'b'", "overlapping"});
  }
  SECTION("duplicate tensor names") {
    expect(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
               "a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})",
           8, {"'a'", "twice"});
  }
  SECTION("duplicate field inside an entry") {
    expect(R"({"a": {"dtype": "F32", "dtype": "I8", "shape": [1], "data_offsets": [0, 4]}})", 4,
           {"'a'", "'dtype'"});
  }
  SECTION("metadata must map strings to strings") {
    expect(R"({"__metadata__": {"format": 1}})", 0, {"__metadata__", "'format'"});
    expect(R"({"__metadata__": ["pt"]})", 0, {"__metadata__"});
  }
}

TEST_CASE("safetensors: adjacent and empty tensors are not overlaps", "[safetensors]") {
  TempDir dir;
  const std::string path = dir.file("ok.safetensors");
  // Unaligned data section (header length 7 mod 8 after this text) must still read correctly.
  const std::string header = R"({"b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]},
    "a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
    "e": {"dtype": "F16", "shape": [0], "data_offsets": [4, 4]}})";
  std::vector<uint8_t> data(8);
  const float va = 2.5f, vb = -1.0f;
  std::memcpy(data.data(), &va, 4);
  std::memcpy(data.data() + 4, &vb, 4);
  write_raw(path, header, data);
  auto file = SafetensorsFile::open(path);
  REQUIRE(file->tensors().size() == 3);
  // Listed in data order.
  CHECK(file->tensors()[0].name == "a");
  CHECK(to_f32(file->tensors()[0]) == std::vector<float>{2.5f});
  const TensorInfo* b = nullptr;
  for (const TensorInfo& t : file->tensors())
    if (t.name == "b") b = &t;
  REQUIRE(b != nullptr);
  CHECK(to_f32(*b) == std::vector<float>{-1.0f});
}

TEST_CASE("write_safetensors rejects duplicate names and unwritable paths", "[safetensors]") {
  TempDir dir;
  const float v = 1.0f;
  require_input_error(
      [&] {
        write_safetensors(dir.file("d.safetensors"),
                          {{"a", DType::F32, {1}, &v}, {"a", DType::F32, {1}, &v}});
      },
      {"d.safetensors", "'a'"});
  require_input_error(
      [&] { write_safetensors(dir.file("no/such/dir.safetensors"), {{"a", DType::F32, {1}, &v}}); },
      {"no/such/dir.safetensors"});
}

TEST_CASE("safetensors: corrupted bytes give InputError or a consistent file, never a crash",
          "[safetensors]") {
  TempDir dir;
  const std::string good = dir.file("good.safetensors");
  const std::vector<float> a = {1, 2, 3, 4, 5, 6};
  const std::vector<uint16_t> b = {1, 2, 3};
  write_safetensors(good, {{"a", DType::F32, {2, 3}, a.data()}, {"b", DType::BF16, {3}, b.data()}},
                    {{"format", "pt"}});
  std::ifstream in(good, std::ios::binary);
  const std::vector<uint8_t> original((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const std::string path = dir.file("fuzz.safetensors");
  uint64_t state = 0x9e3779b97f4a7c15ull;  // fixed-seed xorshift: the same cases every run
  auto next = [&] {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return state;
  };
  int opened = 0, rejected = 0;
  for (int iteration = 0; iteration < 1500; ++iteration) {
    std::vector<uint8_t> bytes = original;
    const int edits = 1 + int(next() % 3);
    for (int e = 0; e < edits; ++e) {
      const size_t at = size_t(next() % bytes.size());
      switch (next() % 3) {
        case 0: bytes[at] = uint8_t(next()); break;                                   // overwrite
        case 1: bytes.resize(at); break;                                              // truncate
        default: bytes.insert(bytes.begin() + ptrdiff_t(at), uint8_t(next())); break;  // insert
      }
      if (bytes.empty()) break;
    }
    {
      std::ofstream out(path, std::ios::binary | std::ios::trunc);
      out.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
    }
    try {
      auto file = SafetensorsFile::open(path);
      ++opened;
      // Whatever was accepted has the size its shape says, fits in the file without overlap,
      // and can be read (under a sanitizer build an out-of-bounds read here would be caught).
      size_t total = 0;
      for (const TensorInfo& t : file->tensors()) {
        REQUIRE(t.nbytes == size_t(t.numel()) * dtype_size(t.dtype));
        total += t.nbytes;
        std::vector<float> values(size_t(t.numel()));
        to_f32(t, values.data());
      }
      REQUIRE(total + 8 <= bytes.size());
    } catch (const InputError& e) {
      ++rejected;
      REQUIRE_THAT(std::string(e.what()), Catch::Contains(path));
    }
  }
  CHECK(rejected > 0);
  CHECK(opened > 0);  // some edits (e.g. inside tensor data) leave a valid file
}
