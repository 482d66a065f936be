// The forward pass against transformers: fp32 logits of every fixture model within 1e-4 of
// transformers' (prefill and token-by-token decode), identical greedy continuations, and
// stories260K's greedy text from BOS equal to llama2.c's published output.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <set>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "backend/cpu_backend.h"
#include "core/error.h"
#include "generate/generate.h"
#include "io/safetensors.h"
#include "model/model.h"
#include "test_fixtures.h"
#include "test_util.h"
#include "tokenizer/tokenizer.h"

using namespace lowbit;
namespace fs = std::filesystem;
using test::fixture_models;
using test::Golden;
using test::read_golden;

namespace {




float max_abs_diff(const float* a, const float* b, size_t n) {
  float m = 0;
  for (size_t i = 0; i < n; ++i) m = std::max(m, std::fabs(a[i] - b[i]));
  return m;
}

}  // namespace

TEST_CASE("fixture set covers both architectures and every variant", "[model]") {
  auto dirs = fixture_models();
  std::set<std::string> names;
  for (auto& d : dirs) names.insert(fs::path(d).filename().string());
  for (const char* want : {"llama-gqa-tied", "llama3-rope", "llama-linear-rope-bf16", "falcon-7b-style",
                           "falcon-40b-style", "falcon-mha-bias"})
    CHECK(names.count(want) == 1);
}

TEST_CASE("CPU logits equal transformers' within 1e-4", "[model]") {
  CpuBackend backend(0);
  for (const auto& dir : fixture_models()) {
    DYNAMIC_SECTION(fs::path(dir).filename().string()) {
      Golden g = read_golden(dir);
      LoadOptions opts;  // f32: exact arithmetic on the stored weights
      opts.max_context = 128;
      auto model = Model::load(dir, backend, opts);
      const int vocab = model->config().vocab_size;
      for (size_t p = 0; p < g.prompts.size(); ++p) {
        const auto& prompt = g.prompts[p];
        REQUIRE(g.logits[p].size() == prompt.size() * size_t(vocab));
        // Prefill: every position's logits in one forward.
        std::vector<int> rows;
        TokenBatch b = test::prompt_batch(prompt, &rows);
        std::vector<float> logits(prompt.size() * size_t(vocab));
        model->forward(b, rows, logits.data());
        INFO("prompt " << p << " prefill");
        CHECK(max_abs_diff(logits.data(), g.logits[p].data(), logits.size()) < 1e-4f);
        // Decode: one token at a time through the KV cache.
        float worst = 0;
        for (size_t i = 0; i < prompt.size(); ++i) {
          auto step = decode_step(*model, prompt[i], int(i), 0);
          worst = std::max(worst, max_abs_diff(step.data(), g.logits[p].data() + i * size_t(vocab), size_t(vocab)));
        }
        INFO("prompt " << p << " decode");
        CHECK(worst < 1e-4f);
      }
    }
  }
}

TEST_CASE("greedy continuations equal transformers' generate()", "[model]") {
  CpuBackend backend(0);
  for (const auto& dir : fixture_models()) {
    DYNAMIC_SECTION(fs::path(dir).filename().string()) {
      Golden g = read_golden(dir);
      LoadOptions opts;
      opts.max_context = 128;
      auto model = Model::load(dir, backend, opts);
      for (size_t p = 0; p < g.prompts.size(); ++p) {
        GenerationRequest req;
        req.prompt = g.prompts[p];
        req.sampling.temperature = 0;
        req.max_new_tokens = int(g.greedy[p].size());
        auto r = generate(*model, req, [](int32_t) { return true; });
        INFO("prompt " << p);
        CHECK(r.tokens == g.greedy[p]);
      }
    }
  }
}

TEST_CASE("stories260K greedy text from BOS equals llama2.c's reference output", "[model]") {
  const std::string dir = test::root_dir() + "/models/stories260K";
  std::ifstream ref_in(dir + "/reference-output.md");
  REQUIRE(ref_in.good());
  std::stringstream ss;
  ss << ref_in.rdbuf();
  // The greedy sample is the first fenced block after the "-t 0.0" command line.
  std::string md = ss.str();
  size_t cmd = md.find("-t 0.0\n");
  REQUIRE(cmd != std::string::npos);
  size_t begin = cmd + 7, end = md.find("\n```", begin);
  std::string reference = md.substr(begin, end - begin);

  CpuBackend backend(0);
  auto model = Model::load(dir, backend, LoadOptions{});
  Tokenizer tok = Tokenizer::from_file(dir + "/tokenizer.json");
  GenerationRequest req;
  req.prompt = {tok.bos_id()};
  req.sampling.temperature = 0;
  req.max_new_tokens = 256;  // run.c: 256 steps from pos 0, each samples one token
  req.stop_ids = {tok.bos_id()};  // run.c stops when the model emits BOS
  auto r = generate(*model, req, [](int32_t) { return true; });
  std::string text = tok.decode(r.tokens, true);
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) text.pop_back();
  CHECK(text == reference);
}

// forward_sample is forward() + sample_token() done by the backend: the same ids for prefill
// rows, decode steps across two slots, and a batch longer than one chunk whose sampled rows lie
// in the last chunk or in an earlier one.
TEST_CASE("forward_sample draws what forward + sample_token draw", "[model][sampler]") {
  const std::string dir = test::root_dir() + "/models/stories260K";
  CpuBackend backend(0);
  LoadOptions opts;
  opts.n_slots = 2;
  opts.max_batch_tokens = 8;  // a 20-token prompt spans three chunks
  auto model = Model::load(dir, backend, opts);
  const size_t vocab = size_t(model->config().vocab_size);
  SamplingParams sp;
  sp.temperature = 1.3f;  // flat enough that a wrong row or step draws another id
  sp.top_k = 200;
  sp.seed = 7;
  std::vector<int32_t> prompt;
  for (int i = 0; i < 20; ++i) prompt.push_back(int32_t(1 + (i * 37) % 500));
  auto prompt_batch = [&](int slot) {
    TokenBatch b;
    for (size_t i = 0; i < prompt.size(); ++i) {
      b.tokens.push_back(prompt[i]);
      b.positions.push_back(int32_t(i));
      b.slots.push_back(slot);
    }
    return b;
  };
  auto reference = [&](const TokenBatch& b, const std::vector<int>& rows, std::span<const SampleSpec> specs) {
    std::vector<float> logits(rows.size() * vocab);
    model->forward(b, rows, logits.data());
    std::vector<int32_t> ids;
    for (size_t i = 0; i < rows.size(); ++i)
      ids.push_back(sample_token(std::span<const float>(logits.data() + i * vocab, vocab), specs[i].params,
                                 specs[i].history, specs[i].step));
    return ids;
  };
  size_t differing_draws = 0;
  for (const std::vector<int>& rows : {std::vector<int>{19}, std::vector<int>{17, 19}, std::vector<int>{3, 19}}) {
    INFO("rows " << rows.front() << ".." << rows.back());
    std::vector<SampleSpec> specs;
    for (size_t i = 0; i < rows.size(); ++i) specs.push_back({sp, prompt, uint64_t(5 + i)});
    const auto expected = reference(prompt_batch(0), rows, specs);
    CHECK(model->forward_sample(prompt_batch(0), rows, specs) == expected);
    differing_draws += expected.size() > 1 && expected[0] != expected[1];
  }
  CHECK(differing_draws > 0);  // different rows and steps did draw different ids

  // Decode steps over two slots, fed with the sampled ids.
  (void)model->forward_sample(prompt_batch(0), {19}, std::vector<SampleSpec>{{sp, prompt, 0}});
  (void)model->forward_sample(prompt_batch(1), {19}, std::vector<SampleSpec>{{sp, prompt, 0}});
  TokenBatch step{{5, 9}, {20, 20}, {0, 1}};
  std::vector<int32_t> sampled;
  for (int s = 0; s < 6; ++s) {
    const std::vector<SampleSpec> specs{{sp, prompt, uint64_t(s + 1)}, {sp, prompt, uint64_t(s + 101)}};
    // The reference runs the same step first; rerunning a position overwrites its KV entries.
    const auto expected = reference(step, {0, 1}, specs);
    const auto got = model->forward_sample(step, {0, 1}, specs);
    CHECK(got == expected);
    sampled.insert(sampled.end(), got.begin(), got.end());
    step.tokens = got;
    for (auto& p : step.positions) ++p;
  }
  CHECK(std::set<int32_t>(sampled.begin(), sampled.end()).size() > 3);
  CHECK_THROWS_AS(model->forward_sample(step, {0, 1}, std::vector<SampleSpec>{{sp, prompt, 0}}), InputError);
}
