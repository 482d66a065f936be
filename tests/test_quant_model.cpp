// Every weight format end to end. On the fixtures with golden-quant.* (llama-untidy,
// falcon-untidy): the logits and greedy ids of each format's transformers + bitsandbytes
// reference model. On every fixture model and stories260K: the quantized model's next-token
// distributions stay within a KL divergence of the bf16 model's. The arithmetic is
// deterministic, so each (model, format) bound is 1.5x the value measured when the formats were
// verified bit-exact against bitsandbytes (values in docs/quality.md). The fp4 model must land
// outside the nf4 bound: the bounds are tight enough to tell a wrong code table. (Nibble order,
// block boundaries and scales are pinned byte for byte in test_formats.)
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>

#include <nlohmann/json.hpp>

#include "backend/cpu_backend.h"
#include "generate/generate.h"
#include "io/safetensors.h"
#include "model/model.h"
#include "golden_quant.h"
#include "test_fixtures.h"
#include "test_util.h"

using namespace lowbit;
namespace fs = std::filesystem;

namespace {


std::vector<std::string> quant_models() {
  auto dirs = test::fixture_models();
  dirs.push_back(test::root_dir() + "/models/stories260K");
  return dirs;
}

// Next-token log-probabilities at every position of a fixed token sequence.
std::vector<std::vector<double>> log_probs(Model& m, const std::vector<int32_t>& tokens) {
  std::vector<int> rows;
  TokenBatch b = test::prompt_batch(tokens, &rows);
  const size_t V = size_t(m.config().vocab_size);
  std::vector<float> logits(tokens.size() * V);
  m.forward(b, rows, logits.data());
  std::vector<std::vector<double>> out;
  for (size_t t = 0; t < tokens.size(); ++t) {
    const float* l = logits.data() + t * V;
    double mx = *std::max_element(l, l + V), sum = 0;
    for (size_t i = 0; i < V; ++i) sum += std::exp(double(l[i]) - mx);
    std::vector<double> lp(V);
    for (size_t i = 0; i < V; ++i) lp[i] = double(l[i]) - mx - std::log(sum);
    out.push_back(std::move(lp));
  }
  return out;
}

double mean_kl(const std::vector<std::vector<double>>& p, const std::vector<std::vector<double>>& q) {
  double total = 0;
  for (size_t t = 0; t < p.size(); ++t)
    for (size_t i = 0; i < p[t].size(); ++i) total += std::exp(p[t][i]) * (p[t][i] - q[t][i]);
  return total / double(p.size());
}

std::vector<int32_t> probe_tokens() {
  std::vector<int32_t> t{1};
  for (int i = 0; i < 47; ++i) t.push_back(int32_t(3 + (i * 97 + 13) % 500));
  return t;
}

// Upper bounds on mean KL(bf16 || format) per token over probe_tokens().
const std::map<std::string, std::map<Format, double>> kMaxKl = {
    {"falcon-40b-style", {{Format::F32, 9.3e-05}, {Format::INT8, 0.0021}, {Format::NF4, 0.19}, {Format::FP4, 0.33}, {Format::NF4_DQ, 0.19}, {Format::FP4_DQ, 0.33}, {Format::W4A16, 0.19}, {Format::W8A8, 0.0023}, {Format::W8A8_FP8, 0.024}}},
    {"falcon-7b-style", {{Format::F32, 0.00011}, {Format::INT8, 0.0021}, {Format::NF4, 0.19}, {Format::FP4, 0.32}, {Format::NF4_DQ, 0.19}, {Format::FP4_DQ, 0.32}, {Format::W4A16, 0.22}, {Format::W8A8, 0.0022}, {Format::W8A8_FP8, 0.03}}},
    {"falcon-mha-bias", {{Format::F32, 0.00023}, {Format::INT8, 0.0041}, {Format::NF4, 0.38}, {Format::FP4, 0.74}, {Format::NF4_DQ, 0.38}, {Format::FP4_DQ, 0.73}, {Format::W4A16, 0.37}, {Format::W8A8, 0.0041}, {Format::W8A8_FP8, 0.045}}},
    {"llama-gqa-tied", {{Format::F32, 0.00055}, {Format::INT8, 0.0079}, {Format::NF4, 0.86}, {Format::FP4, 1.4}, {Format::NF4_DQ, 0.86}, {Format::FP4_DQ, 1.4}, {Format::W4A16, 0.72}, {Format::W8A8, 0.0092}, {Format::W8A8_FP8, 0.11}}},
    {"falcon-untidy", {{Format::F32, 0.00027}, {Format::INT8, 0.005}, {Format::NF4, 0.39}, {Format::FP4, 0.86}, {Format::NF4_DQ, 0.39}, {Format::FP4_DQ, 0.86}, {Format::W4A16, 0.56}, {Format::W8A8, 0.0051}, {Format::W8A8_FP8, 0.063}}},
    {"llama-untidy", {{Format::F32, 0.0006}, {Format::INT8, 0.012}, {Format::NF4, 1.24}, {Format::FP4, 1.5}, {Format::NF4_DQ, 1.25}, {Format::FP4_DQ, 1.5}, {Format::W4A16, 1.3}, {Format::W8A8, 0.011}, {Format::W8A8_FP8, 0.18}}},
    {"llama-linear-rope-bf16", {{Format::F32, 1.1e-05}, {Format::INT8, 0.0077}, {Format::NF4, 0.74}, {Format::FP4, 1.3}, {Format::NF4_DQ, 0.74}, {Format::FP4_DQ, 1.3}, {Format::W4A16, 0.68}, {Format::W8A8, 0.0079}, {Format::W8A8_FP8, 0.12}}},
    {"llama3-rope", {{Format::F32, 0.00041}, {Format::INT8, 0.008}, {Format::NF4, 0.72}, {Format::FP4, 1.3}, {Format::NF4_DQ, 0.72}, {Format::FP4_DQ, 1.3}, {Format::W4A16, 0.77}, {Format::W8A8, 0.0092}, {Format::W8A8_FP8, 0.16}}},
    {"stories260K", {{Format::F32, 0.00014}, {Format::INT8, 0.0021}, {Format::NF4, 0.24}, {Format::FP4, 0.51}, {Format::NF4_DQ, 0.23}, {Format::FP4_DQ, 0.51}, {Format::W4A16, 0.22}, {Format::W8A8, 0.0028}, {Format::W8A8_FP8, 0.034}}},
};

}  // namespace

TEST_CASE("every format equals its transformers + bitsandbytes reference within 1e-4", "[quant][bnb]") {
  CpuBackend backend(0);
  test::check_golden_quant(backend);
}

TEST_CASE("every format stays within its KL bound of bf16", "[quant]") {
  CpuBackend backend(0);
  const auto tokens = probe_tokens();
  const auto dirs = quant_models();
  REQUIRE(dirs.size() == kMaxKl.size());
  for (const auto& dir : dirs) {
    const std::string name = fs::path(dir).filename().string();
    REQUIRE(kMaxKl.count(name) == 1);
    LoadOptions base;
    base.format = Format::BF16;
    base.max_context = 64;
    auto ref = log_probs(*Model::load(dir, backend, base), tokens);
    for (const auto& [f, bound] : kMaxKl.at(name)) {
      LoadOptions o = base;
      o.format = f;
      double kl = mean_kl(ref, log_probs(*Model::load(dir, backend, o), tokens));
      INFO(name << " " << format_name(f) << " KL " << kl << " bound " << bound);
      CHECK(kl < bound);
      if (f != Format::F32) CHECK(kl > 0);  // every quantized format changes the weights
      // llama-untidy's fp4 KL (1.01) lies within 1.5x of its nf4 KL (0.83); its code tables are
      // pinned by the bitsandbytes model goldens above instead.
      if (f == Format::FP4 && name != "llama-untidy") CHECK(kl > kMaxKl.at(name).at(Format::NF4));
    }
  }
}
