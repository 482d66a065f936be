// GGUF: the reader's validation (every field of a hostile file), ggml's dequantizers pinned to
// the gguf Python package bit for bit, and convert-gguf end to end on small fixtures of
// tests/data/gguf (tools/make_gguf_fixtures.py): a tiny quantized Llama whose f32 logits equal
// transformers' own GGUF load within 1e-4, and vocabularies whose token ids equal HF tokenizers'.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <map>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "backend/cpu_backend.h"
#include "convert/gguf_convert.h"
#include "core/error.h"
#include "core/half.h"
#include "io/gguf.h"
#include "io/safetensors.h"
#include "model/model.h"
#include "test_fixtures.h"
#include "test_util.h"
#include "tokenizer/tokenizer.h"

using namespace lowbit;
namespace fs = std::filesystem;
using json = nlohmann::json;
using lowbit::test::TempDir;

namespace {

std::string gguf_dir() { return lowbit::test::data_dir() + "/gguf"; }

json read_json(const std::string& path) {
  std::ifstream in(path);
  REQUIRE(in);
  return json::parse(in);
}

// A GGUF file built field by field, so a test can damage exactly one of them.
struct GgufBuilder {
  std::string bytes;
  template <typename T>
  void put(T v) {
    bytes.append(reinterpret_cast<const char*>(&v), sizeof v);
  }
  void str(const std::string& s) {
    put<uint64_t>(s.size());
    bytes += s;
  }
  void header(uint32_t version, uint64_t tensors, uint64_t kvs) {
    bytes = "GGUF";
    put(version);
    put(tensors);
    put(kvs);
  }
  void kv_u32(const std::string& key, uint32_t v) {
    str(key);
    put<uint32_t>(4);
    put(v);
  }
  void kv_str(const std::string& key, const std::string& v) {
    str(key);
    put<uint32_t>(8);
    str(v);
  }
  void tensor(const std::string& name, std::vector<uint64_t> ne, uint32_t type, uint64_t offset) {
    str(name);
    put<uint32_t>(uint32_t(ne.size()));
    for (uint64_t d : ne) put(d);
    put(type);
    put(offset);
  }
  void align(size_t a = 32) { bytes.append((a - bytes.size() % a) % a, '\0'); }
};

// A valid file: one metadata string, two F32 tensors of 8 elements each (data 32-aligned).
std::string valid_file() {
  GgufBuilder b;
  b.header(3, 2, 1);
  b.kv_str("general.architecture", "llama");
  b.tensor("a", {8}, 0, 0);
  b.tensor("b", {4, 2}, 0, 32);
  b.align();
  for (int i = 0; i < 16; ++i) b.put<float>(float(i));
  return b.bytes;
}

std::string parse_error(const std::string& bytes) {
  try {
    GgufFile::parse(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), "t.gguf");
  } catch (const InputError& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("gguf: a valid file reads back its metadata and tensors", "[gguf]") {
  const std::string bytes = valid_file();
  auto f = GgufFile::parse(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), "t.gguf");
  CHECK(f->version() == 3);
  CHECK(f->get_string("general.architecture") == "llama");
  REQUIRE(f->tensors().size() == 2);
  const GgufTensor* b = f->find_tensor("b");
  REQUIRE(b);
  CHECK(b->ne == std::vector<uint64_t>{4, 2});
  CHECK(b->nbytes == 32);
  const std::vector<float> v = dequantize_gguf_tensor(*b, "t.gguf");
  CHECK(v == std::vector<float>{8, 9, 10, 11, 12, 13, 14, 15});
  // Version 2 has the same layout.
  std::string v2 = bytes;
  v2[4] = 2;
  CHECK(parse_error(v2).empty());
}

TEST_CASE("gguf: every damaged field is refused with a message naming it", "[gguf][hardening]") {
  const std::string good = valid_file();
  auto with = [&](size_t at, const std::string& patch) {
    std::string s = good;
    s.replace(at, patch.size(), patch);
    return s;
  };
  auto u64 = [](uint64_t v) { return std::string(reinterpret_cast<const char*>(&v), 8); };
  auto u32 = [](uint32_t v) { return std::string(reinterpret_cast<const char*>(&v), 4); };
  CHECK_THAT(parse_error("GGUX" + good.substr(4)), Catch::Contains("not a GGUF file"));
  CHECK_THAT(parse_error(with(4, u32(1))), Catch::Contains("version 1"));
  CHECK_THAT(parse_error(with(4, u32(7))), Catch::Contains("version 7"));
  CHECK_THAT(parse_error(with(4, u32(0x03000000))), Catch::Contains("big-endian"));
  CHECK_THAT(parse_error(with(8, u64(1ull << 40))), Catch::Contains("tensor count"));
  CHECK_THAT(parse_error(with(16, u64(1ull << 40))), Catch::Contains("metadata count"));
  // The first key's length (offset 24) far past the end.
  CHECK_THAT(parse_error(with(24, u64(1ull << 50))), Catch::Contains("truncated"));
  // Its value type (after the 20-byte key) unknown.
  CHECK_THAT(parse_error(with(24 + 8 + 20, u32(99))), Catch::Contains("unknown value type 99"));
  // Every prefix of the file is refused cleanly (truncation anywhere).
  for (size_t n = 0; n < good.size(); ++n) {
    INFO("prefix of " << n << " bytes");
    CHECK_FALSE(parse_error(good.substr(0, n)).empty());
  }

  GgufBuilder b;
  auto one_tensor = [&](std::vector<uint64_t> ne, uint32_t type, uint64_t offset, uint32_t alignment = 0) {
    b = GgufBuilder();
    b.header(3, 1, alignment ? 1 : 0);
    if (alignment) b.kv_u32("general.alignment", alignment);
    b.tensor("w", ne, type, offset);
    b.align(alignment ? alignment : 32);
    b.bytes.append(64, '\0');
    return parse_error(b.bytes);
  };
  CHECK(one_tensor({16}, 0, 0).empty());
  CHECK_THAT(one_tensor({}, 0, 0), Catch::Contains("0 dimensions"));
  CHECK_THAT(one_tensor({1, 1, 1, 1, 1}, 0, 0), Catch::Contains("5 dimensions"));
  CHECK_THAT(one_tensor({1ull << 62, 1ull << 62}, 0, 0), Catch::Contains("overflows"));
  CHECK_THAT(one_tensor({16}, 77, 0), Catch::Contains("unknown ggml type id 77"));
  CHECK_THAT(one_tensor({256}, 23, 0), Catch::Contains("IQ4_XS"));
  CHECK_THAT(one_tensor({48}, 8, 0), Catch::Contains("not a multiple of Q8_0's block of 32"));
  CHECK_THAT(one_tensor({16}, 0, 4), Catch::Contains("not a multiple of the alignment"));
  CHECK_THAT(one_tensor({16}, 0, 32), Catch::Contains("past the end of the data section"));
  CHECK_THAT(one_tensor({64}, 0, 0), Catch::Contains("past the end"));
  CHECK_THAT(one_tensor({16}, 0, 0, 24), Catch::Contains("power of two"));
  CHECK(one_tensor({16}, 0, 0, 64).empty());

  // Overlap, duplicate tensor, duplicate key, nested array, bad bool, huge array count.
  b = GgufBuilder();
  b.header(3, 2, 0);
  b.tensor("x", {16}, 0, 0);
  b.tensor("y", {16}, 0, 64);
  b.align();
  b.bytes.append(128, '\0');
  CHECK(parse_error(b.bytes).empty());
  b = GgufBuilder();
  b.header(3, 2, 0);
  b.tensor("x", {16}, 0, 0);
  b.tensor("y", {16}, 0, 0);
  b.align();
  b.bytes.append(96, '\0');
  CHECK_THAT(parse_error(b.bytes), Catch::Contains("overlaps"));
  b = GgufBuilder();
  b.header(3, 2, 0);
  b.tensor("x", {8}, 0, 0);
  b.tensor("x", {8}, 0, 32);
  b.align();
  b.bytes.append(96, '\0');
  CHECK_THAT(parse_error(b.bytes), Catch::Contains("'x' appears twice"));
  b = GgufBuilder();
  b.header(3, 0, 2);
  b.kv_u32("k", 1);
  b.kv_u32("k", 2);
  CHECK_THAT(parse_error(b.bytes), Catch::Contains("'k' appears twice"));
  b = GgufBuilder();
  b.header(3, 0, 1);
  b.str("nested");
  b.put<uint32_t>(9);
  b.put<uint32_t>(9);
  b.put<uint64_t>(1);
  CHECK_THAT(parse_error(b.bytes), Catch::Contains("array of arrays"));
  b = GgufBuilder();
  b.header(3, 0, 1);
  b.str("flag");
  b.put<uint32_t>(7);
  b.put<uint8_t>(2);
  CHECK_THAT(parse_error(b.bytes), Catch::Contains("bool"));
  b = GgufBuilder();
  b.header(3, 0, 1);
  b.str("many");
  b.put<uint32_t>(9);
  b.put<uint32_t>(8);
  b.put<uint64_t>(1ull << 60);
  CHECK_THAT(parse_error(b.bytes), Catch::Contains("more than the file can hold"));
  b = GgufBuilder();
  b.header(3, 1, 0);
  b.tensor(std::string(64, 'n'), {8}, 0, 0);
  b.align();
  b.bytes.append(32, '\0');
  CHECK_THAT(parse_error(b.bytes), Catch::Contains("name of 64 bytes"));
}

TEST_CASE("gguf: dequantization equals the gguf package bit for bit for every type", "[gguf]") {
  auto f = GgufFile::open(gguf_dir() + "/types.gguf");
  int checked = 0;
  for (const char* name : {"f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q4_k", "q5_k", "q6_k"}) {
    INFO(name);
    const GgufTensor* t = f->find_tensor(name);
    const GgufTensor* golden = f->find_tensor(std::string("golden.") + name);
    REQUIRE(t);
    REQUIRE(golden);
    REQUIRE(golden->type == 0);
    REQUIRE(golden->numel() == t->numel());
    const std::vector<float> got = dequantize_gguf_tensor(*t, f->path());
    const std::vector<float> want = dequantize_gguf_tensor(*golden, f->path());
    CHECK(std::memcmp(got.data(), want.data(), got.size() * 4) == 0);
    // Not a constant: the fixture spreads values over the type's range.
    CHECK(*std::max_element(want.begin(), want.end()) > *std::min_element(want.begin(), want.end()));
    ++checked;
  }
  CHECK(checked == 11);
  const GgufTensor* q2 = f->find_tensor("q2_k");
  REQUIRE(q2);
  try {
    (void)dequantize_gguf_tensor(*q2, f->path());
    FAIL("Q2_K was dequantized");
  } catch (const InputError& e) {
    CHECK_THAT(e.what(), Catch::Contains("'q2_k'") && Catch::Contains("Q2_K"));
  }
}

TEST_CASE("convert-gguf: a tiny quantized Llama gives transformers' logits within 1e-4", "[gguf][convert]") {
  TempDir out;
  const std::string dir = out.file("model");
  convert_gguf(gguf_dir() + "/tiny-smollm.gguf", dir, {});
  for (const char* name : {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                           "generation_config.json"})
    CHECK(fs::exists(fs::path(dir) / name));
  const json config = read_json(dir + "/config.json");
  CHECK(config["num_attention_heads"] == 4);
  CHECK(config["num_key_value_heads"] == 2);
  CHECK(config["head_dim"] == 16);
  CHECK(config["rope_theta"] == 100000.0);
  CHECK(config["rms_norm_eps"] == 1e-5);
  CHECK(config["tie_word_embeddings"] == false);
  const json tok_config = read_json(dir + "/tokenizer_config.json");
  CHECK_THAT(tok_config["chat_template"].get<std::string>(), Catch::Contains("<|im_start|>"));
  CHECK(tok_config["eos_token"] == "<|im_end|>");
  CHECK(read_json(dir + "/generation_config.json")["eos_token_id"] == 2);

  const json golden = read_json(gguf_dir() + "/tiny-smollm.golden.json");
  const Tokenizer tok = Tokenizer::from_file(dir + "/tokenizer.json");
  const std::vector<int32_t> ids = tok.encode(golden["text"].get<std::string>(), false);
  CHECK(ids == golden["ids"].get<std::vector<int32_t>>());

  CpuBackend backend(0);
  LoadOptions opts;
  opts.max_context = 64;
  auto model = Model::load(dir, backend, opts);
  const int vocab = model->config().vocab_size;
  std::vector<int> rows;
  TokenBatch b = test::prompt_batch(ids, &rows);
  std::vector<float> logits(ids.size() * size_t(vocab));
  model->forward(b, rows, logits.data());
  float worst = 0;
  for (size_t p = 0; p < ids.size(); ++p)
    for (int v = 0; v < vocab; ++v)
      worst = std::max(worst, std::fabs(logits[p * size_t(vocab) + size_t(v)] - golden["logits"][p][size_t(v)].get<float>()));
  INFO("max |logit - transformers| = " << worst);
  CHECK(worst < 1e-4f);
  CHECK(worst < 1.0f);  // (the logits are O(1): a permutation slip would be far off)

  // bf16 and f16 folders hold the f32 values rounded once.
  const std::string half_dir = out.file("bf16");
  GgufConvertOptions bf16;
  bf16.dtype = DType::BF16;
  convert_gguf(gguf_dir() + "/tiny-smollm.gguf", half_dir, bf16);
  auto f32_store = WeightStore::open_dir(dir), bf16_store = WeightStore::open_dir(half_dir);
  const TensorInfo& w32 = f32_store.get("model.layers.1.mlp.down_proj.weight");
  const TensorInfo& w16 = bf16_store.get("model.layers.1.mlp.down_proj.weight");
  REQUIRE(w16.dtype == DType::BF16);
  const std::vector<float> a = to_f32(w32), c = to_f32(w16);
  for (size_t i = 0; i < a.size(); ++i) REQUIRE(c[i] == round_bf16(a[i]));
}

TEST_CASE("convert-gguf: refuses to overwrite without --force, and refuses what it cannot convert", "[gguf][convert]") {
  TempDir out;
  const std::string dir = out.file("m");
  const std::string src = gguf_dir() + "/tiny-smollm.gguf";
  convert_gguf(src, dir, {});
  std::ofstream(fs::path(dir) / "config.json") << "{\"mine\": true}";
  CHECK_THROWS_AS(convert_gguf(src, dir, {}), UsageError);
  CHECK(read_json(dir + "/config.json")["mine"] == true);  // untouched
  GgufConvertOptions force;
  force.force = true;
  convert_gguf(src, dir, force);
  CHECK(read_json(dir + "/config.json")["model_type"] == "llama");
  for (const auto& e : fs::directory_iterator(dir)) CHECK(e.path().filename().string().rfind(".lowbit", 0) != 0);

  // A vocabulary-only file has no weights; types.gguf has no Llama tensors.
  try {
    convert_gguf(gguf_dir() + "/stories-spm.gguf", out.file("x"), {});
    FAIL("converted a file without weights");
  } catch (const InputError& e) {
    CHECK_THAT(e.what(), Catch::Contains("stories-spm.gguf"));
  }
  CHECK_FALSE(fs::exists(fs::path(out.file("x")) / "config.json"));
}

TEST_CASE("gguf tokenizers: token ids equal HF tokenizers for byte-level and SentencePiece vocabularies",
          "[gguf][tokenizer]") {
  const std::vector<std::string> corpus = read_json(lowbit::test::data_dir() + "/tokenizers/corpus.json");
  struct Case {
    std::string gguf, golden;
  };
  for (const Case& c : {Case{"tiny-smollm.gguf", gguf_dir() + "/tiny-bpe-golden.json"},
                        Case{"stories-spm.gguf", lowbit::test::data_dir() + "/tokenizers/stories260K/golden.json"}}) {
    DYNAMIC_SECTION(c.gguf) {
      auto f = GgufFile::open(gguf_dir() + "/" + c.gguf);
      TempDir tmp;
      std::ofstream(tmp.file("tokenizer.json")) << gguf_tokenizer_json(*f).dump();
      const Tokenizer tok = Tokenizer::from_file(tmp.file("tokenizer.json"));
      const json golden = read_json(c.golden);
      size_t passed = 0, total = 0;
      for (const json& g : golden["cases"]) {
        const std::string text = g["text"];
        INFO(json(text).dump());
        CHECK(tok.encode(text, true) == g["ids_special"].get<std::vector<int32_t>>());
        CHECK(tok.encode(text, false) == g["ids_plain"].get<std::vector<int32_t>>());
        passed += tok.encode(text, true) == g["ids_special"].get<std::vector<int32_t>>();
        ++total;
      }
      CHECK(total == corpus.size());
      CHECK(passed == total);
    }
  }
}

TEST_CASE("gguf tokenizers: unknown tokenizer models and pre-tokenizers are named", "[gguf][tokenizer]") {
  GgufBuilder b;
  auto with_tokenizer = [&](const std::string& model, const std::string& pre) {
    b = GgufBuilder();
    b.header(3, 0, 4);
    b.kv_str("tokenizer.ggml.model", model);
    b.kv_str("tokenizer.ggml.pre", pre);
    b.str("tokenizer.ggml.tokens");
    b.put<uint32_t>(9);
    b.put<uint32_t>(8);
    b.put<uint64_t>(2);
    b.str("a");
    b.str("b");
    b.str("tokenizer.ggml.merges");
    b.put<uint32_t>(9);
    b.put<uint32_t>(8);
    b.put<uint64_t>(0);
    auto f = GgufFile::parse(reinterpret_cast<const uint8_t*>(b.bytes.data()), b.bytes.size(), "v.gguf");
    try {
      (void)gguf_tokenizer_json(*f);
    } catch (const InputError& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  CHECK(with_tokenizer("gpt2", "smollm").empty());
  CHECK_THAT(with_tokenizer("bert", "default"), Catch::Contains("tokenizer model 'bert'"));
  CHECK_THAT(with_tokenizer("gpt2", "deepseek-coder"), Catch::Contains("pre-tokenizer 'deepseek-coder'"));
}

// --- the command line -------------------------------------------------------------------------

namespace {

// The error contract: the last stderr line is "error: ..." containing `needle`.
void check_error_line(const test::RunResult& r, int code, const std::string& needle) {
  INFO("stderr: " << r.err);
  CHECK(r.code == code);
  size_t start = r.err.rfind("\nerror: ");
  start = start == std::string::npos ? 0 : start + 1;
  const std::string last = r.err.substr(start);
  CHECK(last.rfind("error: ", 0) == 0);
  CHECK(std::count(last.begin(), last.end(), '\n') == 1);
  CHECK_THAT(last, Catch::Contains(needle));
}

}  // namespace

TEST_CASE("convert-gguf CLI: hostile files are one error line, flags are checked, nothing is overwritten",
          "[gguf][cli][hardening]") {
  TempDir tmp;
  const std::string good = valid_file();
  tmp.write("truncated.gguf", good.substr(0, 40));
  check_error_line(test::run_cli({"convert-gguf", tmp.file("truncated.gguf"), "--out", tmp.file("o")}), 1, "truncated.gguf");
  check_error_line(test::run_cli({"convert-gguf", tmp.file("missing.gguf"), "--out", tmp.file("o")}), 1, "missing.gguf");
  tmp.write("weights-only.gguf", good);
  check_error_line(test::run_cli({"convert-gguf", tmp.file("weights-only.gguf"), "--out", tmp.file("o")}), 1, "llama.block_count");
  const std::string src = gguf_dir() + "/tiny-smollm.gguf";
  check_error_line(test::run_cli({"convert-gguf", src, "--out", tmp.file("o"), "--dtype", "f8"}), 2, "--dtype");
  REQUIRE(test::run_cli({"convert-gguf", src, "--out", tmp.file("o"), "--dtype", "f16"}).code == 0);
  check_error_line(test::run_cli({"convert-gguf", src, "--out", tmp.file("o")}), 2, "--force");
  CHECK(test::run_cli({"convert-gguf", src, "--out", tmp.file("o"), "--force"}).code == 0);
}

TEST_CASE("run --chat: the prompt is a user turn of the model's template; --system; multi-turn", "[gguf][cli][chat]") {
  TempDir tmp;
  const std::string m = tmp.file("m");
  convert_gguf(gguf_dir() + "/tiny-smollm.gguf", m, {});
  auto r = test::run_cli({"run", "-m", m, "--chat", "-p", "Hi there", "-n", "4", "--json"});
  INFO(r.err);
  REQUIRE(r.code == 0);
  json j = json::parse(r.out);
  CHECK(j["prompt"] == "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
                       "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n");
  const Tokenizer tok = Tokenizer::from_file(m + "/tokenizer.json");
  CHECK(j["prompt_tokens"] == tok.encode(j["prompt"].get<std::string>(), false).size());
  r = test::run_cli({"run", "-m", m, "--chat", "--system", "Be brief.", "-p", "Hi", "-n", "2", "--json"});
  REQUIRE(r.code == 0);
  CHECK(json::parse(r.out)["prompt"] ==
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
  check_error_line(test::run_cli({"run", "-m", m, "--system", "x", "-p", "Hi"}), 2, "--system needs --chat");

  // Interactive mode from a pipe: each line is a turn, and each turn's prompt holds the turns before.
  tmp.write("turns.txt", "What is 12 + 30?\nAnd 2 + 2?\n");
  r = test::run_cli({"run", "-m", m, "--interactive", "-n", "6", "--seed", "1"}, tmp.file("turns.txt"));
  INFO(r.err);
  REQUIRE(r.code == 0);
  const size_t t1 = r.err.find("turn 1: prompt "), t2 = r.err.find("turn 2: prompt ");
  REQUIRE(t1 != std::string::npos);
  REQUIRE(t2 != std::string::npos);
  const int p1 = std::stoi(r.err.substr(t1 + 15)), p2 = std::stoi(r.err.substr(t2 + 15));
  const int g1 = std::stoi(r.err.substr(r.err.find("generated ", t1) + 10));
  CHECK(p2 > p1 + g1);  // the first question and its answer are in the second prompt
  CHECK(std::count(r.out.begin(), r.out.end(), '>') >= 3);  // a prompt marker per turn and at the end

  // A model without a template, or with one lowbit does not know: the error says how to go on.
  TempDir plain;
  for (const char* name : {"config.json", "model.safetensors", "tokenizer.json", "generation_config.json"})
    fs::copy_file(fs::path(m) / name, plain.path / name);
  plain.write("tokenizer_config.json", "{}");
  check_error_line(test::run_cli({"run", "-m", plain.path.string(), "--chat", "-p", "Hi"}), 1, "run without --chat");
  plain.write("tokenizer_config.json", R"({"chat_template": "{{ messages[0]['content'] }}"})");
  check_error_line(test::run_cli({"run", "-m", plain.path.string(), "--chat", "-p", "Hi"}), 1, "without --chat");
}

TEST_CASE("batch and sweep take chat records", "[gguf][cli][chat]") {
  TempDir tmp;
  const std::string m = tmp.file("m");
  convert_gguf(gguf_dir() + "/tiny-smollm.gguf", m, {});
  tmp.write("in.jsonl",
            "{\"id\": \"a\", \"messages\": [{\"role\": \"system\", \"content\": \"S\"}, {\"role\": \"user\", \"content\": \"U\"}]}\n"
            "{\"id\": \"b\", \"prompt\": \"plain text\"}\n");
  auto r = test::run_cli({"batch", "-m", m, "--input", tmp.file("in.jsonl"), "--output", tmp.file("out.jsonl"), "-n", "3"});
  INFO(r.err);
  REQUIRE(r.code == 0);
  std::map<std::string, json> by_id;
  std::ifstream in(tmp.file("out.jsonl"));
  for (std::string line; std::getline(in, line);) {
    json j = json::parse(line);
    by_id[j["id"]] = j;
  }
  REQUIRE(by_id.size() == 2);
  CHECK(by_id["a"]["prompt"] == "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n");
  CHECK(by_id["a"]["messages"][1]["content"] == "U");
  CHECK(by_id["b"]["prompt"] == "plain text");
  CHECK_FALSE(by_id["b"].contains("messages"));

  r = test::run_cli({"sweep", "-m", m, "--quant", "bf16", "--prompts", tmp.file("in.jsonl"), "-n", "2", "-o",
                     tmp.file("runs.jsonl")});
  INFO(r.err);
  REQUIRE(r.code == 0);
  std::ifstream runs(tmp.file("runs.jsonl"));
  std::string first;
  std::getline(runs, first);
  const json run = json::parse(first);
  CHECK(run["prompt_id"] == "a");
  CHECK(run["messages"][0]["role"] == "system");
  const Tokenizer tok = Tokenizer::from_file(m + "/tokenizer.json");
  CHECK(run["prompt_tokens"] == tok.encode(run["prompt"].get<std::string>(), false).size());

  tmp.write("bad.jsonl", "{\"id\": 1, \"messages\": []}\n");
  check_error_line(test::run_cli({"batch", "-m", m, "--input", tmp.file("bad.jsonl"), "--output", tmp.file("o2.jsonl")}),
                   1, "bad.jsonl:1");
}
