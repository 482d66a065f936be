// Test helpers shared by several test binaries: temporary folders, the fixture models and their
// transformers goldens (layout: tests/data/models/README.md), and error measures.
#pragma once
#include <catch2/catch.hpp>

#include <stdlib.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "backend/backend.h"
#include "generate/generate.h"
#include "io/safetensors.h"
#include "lowbit_config.h"
#include "test_util.h"

namespace lowbit::test {

// A fresh folder under /tmp, removed with everything in it when the test ends.
struct TempDir {
  std::filesystem::path path;
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "lowbit_test_XXXXXX").string();
    REQUIRE(mkdtemp(tmpl.data()) != nullptr);
    path = tmpl;
  }
  ~TempDir() { std::filesystem::remove_all(path); }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string file(const std::string& name) const { return (path / name).string(); }
  void write(const std::string& name, const std::string& text) const {
    std::ofstream(path / name, std::ios::binary) << text;
  }
};

// The fixture model folders (those with a golden.json), sorted.
inline std::vector<std::string> fixture_models() {
  std::vector<std::string> dirs;
  for (const auto& e : std::filesystem::directory_iterator(data_dir() + "/models"))
    if (std::filesystem::exists(e.path() / "golden.json")) dirs.push_back(e.path().string());
  std::sort(dirs.begin(), dirs.end());
  return dirs;
}

struct Golden {
  std::vector<std::vector<int32_t>> prompts, greedy;
  std::vector<std::vector<float>> logits;  // per prompt: [len, vocab], every position
};

inline Golden read_golden(const std::string& dir) {
  Golden g;
  std::ifstream in(dir + "/golden.json");
  REQUIRE(in.good());
  auto j = nlohmann::json::parse(in);
  g.prompts = j.at("prompts").get<std::vector<std::vector<int32_t>>>();
  g.greedy = j.at("greedy").get<std::vector<std::vector<int32_t>>>();
  auto file = SafetensorsFile::open(dir + "/golden.safetensors");
  for (size_t i = 0; i < g.prompts.size(); ++i) {
    const TensorInfo* t = nullptr;
    for (const auto& ti : file->tensors())
      if (ti.name == "logits." + std::to_string(i)) t = &ti;
    REQUIRE(t != nullptr);
    g.logits.push_back(to_f32(*t));
  }
  return g;
}

// Logits of the last prompt token after prefilling `prompt` into `slot` from position 0 (the
// forward pass alone: generation's prefill() also draws the first token).
inline std::vector<float> prefill_logits(Model& model, const std::vector<int32_t>& prompt, int slot) {
  const TokenBatch b = prefill_batch(prompt, slot);
  std::vector<float> logits(size_t(model.config().vocab_size));
  model.forward(b, {b.size() - 1}, logits.data());
  return logits;
}

// Feeds one token at `position` of `slot` and returns the next logits (the KV-cache path).
inline std::vector<float> decode_logits(Model& model, int32_t token, int position, int slot) {
  const TokenBatch b{{token}, {position}, {slot}};
  std::vector<float> logits(size_t(model.config().vocab_size));
  model.forward(b, {0}, logits.data());
  return logits;
}

// One sequence in slot 0 from position 0, with every position's logits requested.
inline TokenBatch prompt_batch(const std::vector<int32_t>& tokens, std::vector<int>* rows) {
  if (rows)
    for (size_t i = 0; i < tokens.size(); ++i) rows->push_back(int(i));
  return prefill_batch(tokens, 0);
}

// One decode step: slots 0..n-1 each feed `token` at `position`, every row's logits requested.
inline TokenBatch decode_batch(int n, int32_t token, int32_t position, std::vector<int>* rows) {
  TokenBatch b;
  for (int s = 0; s < n; ++s) {
    b.tokens.push_back(token);
    b.positions.push_back(position);
    b.slots.push_back(s);
    if (rows) rows->push_back(s);
  }
  return b;
}

// Greedy continuation of a decode step: each slot's next token is the argmax of its logits row
// (row s of `logits`, `vocab` wide), one position further on.
inline void advance_greedy(TokenBatch& step, const std::vector<float>& logits, size_t vocab) {
  for (size_t s = 0; s < step.tokens.size(); ++s) {
    const float* row = logits.data() + s * vocab;
    step.tokens[s] = int32_t(std::max_element(row, row + vocab) - row);
    ++step.positions[s];
  }
}

// n values drawn from N(0, scale^2), reproducible from `seed`.
inline std::vector<float> random_values(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

// Normalized mean squared error sum((a-b)^2) / sum(b^2), as llama.cpp's test-backend-ops.
template <class A, class B>
double nmse(const std::vector<A>& a, const std::vector<B>& b) {
  REQUIRE(a.size() == b.size());
  double err = 0, ref = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double d = double(a[i]) - double(b[i]);
    err += d * d;
    ref += double(b[i]) * double(b[i]);
  }
  return ref > 0 ? err / ref : err;
}

// Test sizes: the full ones on a GPU, smaller under the emulated device (every emulated thread is
// a fiber on the CPU) and smaller again when that build also runs AddressSanitizer (.ci/run's
// kernel tests under ASan + UBSan). Same code paths, fewer repetitions.
constexpr int sized(int on_gpu, int emulated, int sanitized) {
  return LOWBIT_EMULATED_GPU ? (LOWBIT_TEST_SANITIZED ? sanitized : emulated) : on_gpu;
}

// Which positions of an n-token prompt a model-level CUDA test decodes one token at a time after
// the prefill (a skipped position keeps the KV entry the prefill wrote, on both backends). Every
// position on a GPU; under emulation, where each step costs a fraction of a second of emulated
// threads and .ci/run runs every test in three warp orders, the first four (attention over 1-4
// keys), every eighth after them (the decode kernels do not change with the length between) and
// the last.
inline bool decode_checked(size_t i, size_t n) {
#if LOWBIT_EMULATED_GPU
  return i < 4 || i % 8 == 0 || i + 1 == n;
#else
  (void)i;
  (void)n;
  return true;
#endif
}

}  // namespace lowbit::test
