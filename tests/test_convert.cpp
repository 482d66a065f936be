#include <catch2/catch.hpp>

#include <stdlib.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "convert/llama2c.h"
#include "core/error.h"
#include "io/safetensors.h"
#include "model/config.h"
#include "test_fixtures.h"
#include "test_util.h"

using namespace lowbit;
namespace fs = std::filesystem;
using lowbit::test::TempDir;
using json = nlohmann::json;

namespace {


json read_json(const std::string& path) {
  std::ifstream in(path);
  REQUIRE(in);
  return json::parse(in);
}

std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

const std::string kSpaceMarker = "\xe2\x96\x81";  // ▁

// A llama2.c tokenizer file: <unk>, <s>, </s> (newline-wrapped as llama2.c writes them), the 256
// byte pieces, then `extra` (with ' ' standing for '▁', as llama2.c writes it).
void write_llama2c_tokenizer(const std::string& path,
                             const std::vector<std::pair<std::string, float>>& extra) {
  std::vector<std::pair<std::string, float>> pieces = {{"<unk>", 0}, {"\n<s>\n", 0}, {"\n</s>\n", 0}};
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof name, "<0x%02X>", b);
    pieces.emplace_back(name, 0.0f);
  }
  pieces.insert(pieces.end(), extra.begin(), extra.end());
  std::ofstream out(path, std::ios::binary);
  const int32_t max_len = 6;
  out.write(reinterpret_cast<const char*>(&max_len), 4);
  for (const auto& [text, score] : pieces) {
    const int32_t len = int32_t(text.size());
    out.write(reinterpret_cast<const char*>(&score), 4);
    out.write(reinterpret_cast<const char*>(&len), 4);
    out.write(text.data(), len);
  }
}

// Header of the synthetic checkpoint: dim 8, hidden 6, 1 layer, 2 heads, 1 KV head, vocab 265
// (negative: untied classifier), seq_len 4. Every float holds its own index in the file's float
// array, so each output tensor shows exactly which input floats it took.
constexpr int kDim = 8, kHidden = 6, kHeads = 2, kKvHeads = 1, kVocab = 265, kSeq = 4;
constexpr int kHeadDim = kDim / kHeads, kKvDim = kKvHeads * kHeadDim;

size_t write_synthetic_checkpoint(const std::string& path) {
  const int32_t header[7] = {kDim, kHidden, 1, kHeads, kKvHeads, -kVocab, kSeq};
  const size_t n_floats = size_t(kVocab * kDim + kDim + kDim * kDim + 2 * kKvDim * kDim + kDim * kDim +
                                 kDim + 3 * kHidden * kDim + kDim + 2 * kSeq * kHeadDim / 2 +
                                 kVocab * kDim);
  std::vector<float> floats(n_floats);
  for (size_t i = 0; i < n_floats; ++i) floats[i] = float(i);
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(header), sizeof header);
  out.write(reinterpret_cast<const char*>(floats.data()), std::streamsize(n_floats * 4));
  return 28 + n_floats * 4;
}

const std::vector<std::pair<std::string, float>> kExtraPieces = {
    {" a", -1}, {"ab", -2}, {" ab", -3}, {" ", -4}, {"a", -5}, {"b", -6}};

// Rows [first, first+count) of a (rows, cols) block whose floats are their own indices.
std::vector<float> index_rows(size_t base, const std::vector<int>& rows, int cols) {
  std::vector<float> out;
  for (int r : rows)
    for (int c = 0; c < cols; ++c) out.push_back(float(base + size_t(r * cols + c)));
  return out;
}

}  // namespace

TEST_CASE("converting the bundled stories260K reproduces models/stories260K", "[convert]") {
  const fs::path model = fs::path(test::root_dir()) / "models" / "stories260K";
  REQUIRE(fs::exists(model / "stories260K.bin"));
  TempDir out;
  convert_llama2c((model / "stories260K.bin").string(), (model / "tok512.bin").string(),
                  out.path.string());

  CHECK(read_json(out.file("config.json")) == read_json((model / "config.json").string()));
  CHECK(read_json(out.file("tokenizer.json")) == read_json((model / "tokenizer.json").string()));
  CHECK(read_json(out.file("tokenizer_config.json")) ==
        read_json((model / "tokenizer_config.json").string()));

  const WeightStore converted = WeightStore::open_dir(out.path.string());
  const WeightStore bundled = WeightStore::open_dir(model.string());
  REQUIRE(converted.names() == bundled.names());
  CHECK(converted.names().size() == 1 + 5 * 9 + 1);  // tied: no lm_head
  CHECK_FALSE(converted.has("lm_head.weight"));
  for (const std::string& name : converted.names()) {
    INFO(name);
    const TensorInfo& a = converted.get(name);
    const TensorInfo& b = bundled.get(name);
    CHECK(a.dtype == DType::F32);
    CHECK(a.shape == b.shape);
    REQUIRE(a.nbytes == b.nbytes);
    CHECK(std::memcmp(a.data, b.data, a.nbytes) == 0);
  }
  // Compared as a bool: Catch would print both megabyte-long vectors on a mismatch.
  const bool same_file_bytes =
      read_bytes(out.file("model.safetensors")) == read_bytes((model / "model.safetensors").string());
  CHECK(same_file_bytes);

  // The folder is a Llama lowbit reads.
  const ModelConfig config = load_config(out.path.string());
  CHECK(config.arch == Arch::Llama);
  CHECK(config.hidden_size == 64);
  CHECK(config.intermediate_size == 172);
  CHECK(config.n_layers == 5);
  CHECK(config.n_heads == 8);
  CHECK(config.n_kv_heads == 4);
  CHECK(config.vocab_size == 512);
  CHECK(config.max_position_embeddings == 512);
  CHECK(config.tie_word_embeddings);
  CHECK(config.norm_eps == 1e-5f);
  CHECK(config.bos_token_id == 1);
  CHECK(config.eos_token_ids == std::vector<int32_t>{2});
  CHECK(converted.get("model.layers.0.self_attn.k_proj.weight").shape == std::vector<int64_t>{32, 64});
}

TEST_CASE("synthetic checkpoint: tensor placement and the q/k permutation", "[convert]") {
  TempDir dir;
  write_synthetic_checkpoint(dir.file("tiny.bin"));
  write_llama2c_tokenizer(dir.file("tok.bin"), kExtraPieces);
  convert_llama2c(dir.file("tiny.bin"), dir.file("tok.bin"), dir.file("out"));
  const WeightStore w = WeightStore::open_dir(dir.file("out"));

  // File order: embedding, rms_att, wq, wk, wv, wo, rms_ffn, w1, w2, w3, rms_final, freq_cis x2, cls.
  const size_t embedding = 0, rms_att = embedding + kVocab * kDim, wq = rms_att + kDim,
               wk = wq + kDim * kDim, wv = wk + kKvDim * kDim, wo = wv + kKvDim * kDim,
               rms_ffn = wo + kDim * kDim, w1 = rms_ffn + kDim, w2 = w1 + kHidden * kDim,
               w3 = w2 + kDim * kHidden, rms_final = w3 + kHidden * kDim,
               classifier = rms_final + kDim + 2 * kSeq * kHeadDim / 2;
  auto range = [](size_t base, size_t n) {
    std::vector<float> v(n);
    for (size_t i = 0; i < n; ++i) v[i] = float(base + i);
    return v;
  };
  CHECK(to_f32(w.get("model.embed_tokens.weight", {kVocab, kDim})) == range(embedding, kVocab * kDim));
  CHECK(to_f32(w.get("lm_head.weight", {kVocab, kDim})) == range(classifier, kVocab * kDim));
  CHECK(to_f32(w.get("model.layers.0.input_layernorm.weight", {kDim})) == range(rms_att, kDim));
  CHECK(to_f32(w.get("model.layers.0.post_attention_layernorm.weight", {kDim})) == range(rms_ffn, kDim));
  CHECK(to_f32(w.get("model.norm.weight", {kDim})) == range(rms_final, kDim));
  CHECK(to_f32(w.get("model.layers.0.self_attn.v_proj.weight", {kKvDim, kDim})) == range(wv, kKvDim * kDim));
  CHECK(to_f32(w.get("model.layers.0.self_attn.o_proj.weight", {kDim, kDim})) == range(wo, kDim * kDim));
  CHECK(to_f32(w.get("model.layers.0.mlp.gate_proj.weight", {kHidden, kDim})) == range(w1, kHidden * kDim));
  CHECK(to_f32(w.get("model.layers.0.mlp.down_proj.weight", {kDim, kHidden})) == range(w2, kDim * kHidden));
  CHECK(to_f32(w.get("model.layers.0.mlp.up_proj.weight", {kHidden, kDim})) == range(w3, kHidden * kDim));

  // Per head of 4 rows, llama2.c's pairs (0,1), (2,3) become HF's halves (0,2), (1,3): rows
  // 0, 2, 1, 3 of each head, in order.
  CHECK(to_f32(w.get("model.layers.0.self_attn.q_proj.weight", {kDim, kDim})) ==
        index_rows(wq, {0, 2, 1, 3, 4, 6, 5, 7}, kDim));
  CHECK(to_f32(w.get("model.layers.0.self_attn.k_proj.weight", {kKvDim, kDim})) ==
        index_rows(wk, {0, 2, 1, 3}, kDim));

  const json config = read_json(dir.file("out/config.json"));
  CHECK(config["tie_word_embeddings"] == false);
  CHECK(config["vocab_size"] == kVocab);
  CHECK(config["num_key_value_heads"] == kKvHeads);
  CHECK(config["max_position_embeddings"] == kSeq);
}

TEST_CASE("permuted q rotated by halves equals llama2.c's pair rotation", "[convert]") {
  // One head of size 6, input width 3: q = W x rotated at position 5 both ways must agree after
  // the permutation (llama2.c: pairs (2i, 2i+1); HF: (i, i+3)).
  constexpr int head_dim = 6, cols = 3, pos = 5;
  std::vector<float> w(head_dim * cols);
  for (size_t i = 0; i < w.size(); ++i) w[i] = std::sin(float(i) * 1.7f + 0.3f);
  const float x[cols] = {0.5f, -1.25f, 2.0f};
  auto project = [&](const std::vector<float>& m) {
    std::vector<double> q(head_dim, 0.0);
    for (int r = 0; r < head_dim; ++r)
      for (int c = 0; c < cols; ++c) q[size_t(r)] += double(m[size_t(r * cols + c)]) * x[c];
    return q;
  };
  auto angle = [&](int i) { return pos * std::pow(10000.0, -2.0 * i / head_dim); };

  std::vector<double> pairs = project(w);
  for (int i = 0; i < head_dim / 2; ++i) {
    const double a = pairs[size_t(2 * i)], b = pairs[size_t(2 * i + 1)];
    pairs[size_t(2 * i)] = a * std::cos(angle(i)) - b * std::sin(angle(i));
    pairs[size_t(2 * i + 1)] = a * std::sin(angle(i)) + b * std::cos(angle(i));
  }
  const std::vector<float> permuted = permute_rows_for_hf_rope(w.data(), 1, head_dim, cols);
  std::vector<double> halves = project(permuted);
  const int half = head_dim / 2;
  for (int i = 0; i < half; ++i) {
    const double a = halves[size_t(i)], b = halves[size_t(i + half)];
    halves[size_t(i)] = a * std::cos(angle(i)) - b * std::sin(angle(i));
    halves[size_t(i + half)] = a * std::sin(angle(i)) + b * std::cos(angle(i));
  }
  // HF's output is llama2.c's with the same permutation applied to the dimensions.
  const int order[head_dim] = {0, 2, 4, 1, 3, 5};
  for (int r = 0; r < head_dim; ++r) CHECK(halves[size_t(r)] == Approx(pairs[size_t(order[r])]).epsilon(1e-12));
  REQUIRE(permuted.size() == w.size());
  for (int r = 0; r < head_dim; ++r)
    for (int c = 0; c < cols; ++c) CHECK(permuted[size_t(r * cols + c)] == w[size_t(order[r] * cols + c)]);
}

TEST_CASE("tokenizer.json: pieces, byte fallback and score-ordered merges", "[convert]") {
  TempDir dir;
  write_synthetic_checkpoint(dir.file("tiny.bin"));
  write_llama2c_tokenizer(dir.file("tok.bin"), kExtraPieces);
  convert_llama2c(dir.file("tiny.bin"), dir.file("tok.bin"), dir.file("out"));
  const json t = read_json(dir.file("out/tokenizer.json"));
  const json& model = t["model"];
  CHECK(model["type"] == "BPE");
  CHECK(model["byte_fallback"] == true);
  CHECK(model["unk_token"] == "<unk>");
  CHECK(model["vocab"].size() == size_t(kVocab));
  CHECK(model["vocab"]["<unk>"] == 0);
  CHECK(model["vocab"]["<s>"] == 1);
  CHECK(model["vocab"]["</s>"] == 2);
  CHECK(model["vocab"]["<0x00>"] == 3);
  CHECK(model["vocab"]["<0xFF>"] == 258);
  CHECK(model["vocab"][kSpaceMarker + "a"] == 259);
  CHECK(model["vocab"][kSpaceMarker] == 262);
  // transformers' generate_merges(vocab, vocab_scores) on this vocabulary gives exactly this:
  // by merged score, then longer left piece first.
  const json expected_merges = json::array({json::array({kSpaceMarker, "a"}), json::array({"a", "b"}),
                                            json::array({kSpaceMarker + "a", "b"}),
                                            json::array({kSpaceMarker, "ab"})});
  CHECK(model["merges"] == expected_merges);
  CHECK(t["normalizer"]["normalizers"][0]["prepend"] == kSpaceMarker);
  CHECK(t["post_processor"]["special_tokens"]["<s>"]["ids"] == json::array({1}));
  REQUIRE(t["added_tokens"].size() == 3);
  CHECK(t["added_tokens"][1]["content"] == "<s>");
  CHECK(t["added_tokens"][1]["special"] == true);
  const json tc = read_json(dir.file("out/tokenizer_config.json"));
  CHECK(tc["add_bos_token"] == true);
  CHECK(tc["bos_token"] == "<s>");
  CHECK(tc["eos_token"] == "</s>");
  CHECK(tc["unk_token"] == "<unk>");
}

TEST_CASE("sentencepiece_merges: equal scores keep vocabulary order, longer left first", "[convert]") {
  // "abc" splits into a+bc and ab+c; expected order from transformers'
  // generate_merges(vocab, vocab_scores) on the same pieces.
  const std::vector<std::pair<std::string, float>> pieces = {
      {"a", 0}, {"b", 0}, {"c", 0}, {"ab", -1}, {"bc", -1}, {"abc", -2}};
  const auto merges = sentencepiece_merges(pieces);
  const std::vector<std::pair<std::string, std::string>> expected = {
      {"a", "b"}, {"b", "c"}, {"ab", "c"}, {"a", "bc"}};
  CHECK(merges == expected);
}

TEST_CASE("bad checkpoints and tokenizers are InputErrors naming the file", "[convert]") {
  TempDir dir;
  const size_t size = write_synthetic_checkpoint(dir.file("tiny.bin"));
  write_llama2c_tokenizer(dir.file("tok.bin"), kExtraPieces);

  SECTION("truncated checkpoint") {
    fs::resize_file(dir.file("tiny.bin"), size - 4);
    REQUIRE_THROWS_MATCHES(convert_llama2c(dir.file("tiny.bin"), dir.file("tok.bin"), dir.file("out")),
                           InputError,
                           Catch::Matchers::Predicate<InputError>([&](const InputError& e) {
                             const std::string m = e.what();
                             return m.find(dir.file("tiny.bin")) != std::string::npos &&
                                    m.find("truncated") != std::string::npos;
                           }));
    CHECK_FALSE(fs::exists(dir.file("out")));
  }
  SECTION("shorter than the header") {
    fs::resize_file(dir.file("tiny.bin"), 20);
    REQUIRE_THROWS_WITH(convert_llama2c(dir.file("tiny.bin"), dir.file("tok.bin"), dir.file("out")),
                        Catch::Contains("tiny.bin") && Catch::Contains("28 bytes"));
  }
  SECTION("extra bytes") {
    std::ofstream(dir.file("tiny.bin"), std::ios::binary | std::ios::app) << "xxxx";
    REQUIRE_THROWS_WITH(convert_llama2c(dir.file("tiny.bin"), dir.file("tok.bin"), dir.file("out")),
                        Catch::Contains("tiny.bin") && Catch::Contains("not a llama2.c v0"));
  }
  SECTION("inconsistent header") {
    std::fstream f(dir.file("tiny.bin"), std::ios::binary | std::ios::in | std::ios::out);
    const int32_t kv_heads = 3;
    f.seekp(16);
    f.write(reinterpret_cast<const char*>(&kv_heads), 4);
    f.close();
    REQUIRE_THROWS_WITH(convert_llama2c(dir.file("tiny.bin"), dir.file("tok.bin"), dir.file("out")),
                        Catch::Contains("tiny.bin") && Catch::Contains("n_kv_heads"));
  }
  SECTION("tokenizer with the wrong number of pieces") {
    write_llama2c_tokenizer(dir.file("tok.bin"), {{" a", -1}});
    REQUIRE_THROWS_WITH(convert_llama2c(dir.file("tiny.bin"), dir.file("tok.bin"), dir.file("out")),
                        Catch::Contains("tok.bin") && Catch::Contains("265"));
  }
  SECTION("truncated tokenizer") {
    fs::resize_file(dir.file("tok.bin"), fs::file_size(dir.file("tok.bin")) - 1);
    REQUIRE_THROWS_WITH(convert_llama2c(dir.file("tiny.bin"), dir.file("tok.bin"), dir.file("out")),
                        Catch::Contains("tok.bin") && Catch::Contains("piece 264"));
  }
  SECTION("missing files") {
    REQUIRE_THROWS_WITH(convert_llama2c(dir.file("none.bin"), dir.file("tok.bin"), dir.file("out")),
                        Catch::Contains("none.bin"));
    REQUIRE_THROWS_WITH(convert_llama2c(dir.file("tiny.bin"), dir.file("none.tok"), dir.file("out")),
                        Catch::Contains("none.tok"));
  }
}
