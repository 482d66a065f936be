// Every weight format end to end. On the fixtures with golden-quant.* (llama-untidy,
// falcon-untidy): the logits and greedy ids of each format's transformers + bitsandbytes
// reference model. On every fixture model and stories260K: the quantized model's next-token
// distributions stay within a KL divergence of the bf16 model's. The arithmetic is
// deterministic, so each (model, format) bound is 1.5x the value measured when the formats were
// verified bit-exact against bitsandbytes (values in docs/quality.md); each format states its
// bounds beside its definition (FormatInfo::kl_bounds in src/formats/format_*.cpp). The fp4 model must land
// outside the nf4 bound: the bounds are tight enough to tell a wrong code table. (Nibble order,
// block boundaries and scales are pinned byte for byte in test_formats.)
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <stdexcept>

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

// The upper bound on mean KL(bf16 || f) per token over probe_tokens() on `model`, from the
// format's definition (FormatInfo::kl_bounds); throws where the format gives none for it.
double max_kl(Format f, const std::string& model) {
  for (const KlBound& b : format_info(f).kl_bounds)
    if (b.model == model) return b.max_kl;
  throw std::runtime_error(std::string(format_name(f)) + " states no KL bound for " + model);
}

}  // namespace

TEST_CASE("every format equals its transformers + bitsandbytes reference within 1e-4", "[quant][bnb]") {
  CpuBackend backend(0);
  test::check_golden_quant(backend);
}

TEST_CASE("every format stays within its KL bound of bf16", "[quant]") {
  CpuBackend backend(0);
  const auto tokens = probe_tokens();
  const auto dirs = quant_models();
  // Every format but the bf16 reference states a bound for every model here, and only for them.
  for (Format f : all_formats()) {
    if (f == Format::BF16) continue;
    INFO(format_name(f));
    CHECK(format_info(f).kl_bounds.size() == dirs.size());
  }
  for (const auto& dir : dirs) {
    const std::string name = fs::path(dir).filename().string();
    LoadOptions base;
    base.format = Format::BF16;
    base.max_context = 64;
    auto ref = log_probs(*Model::load(dir, backend, base), tokens);
    for (Format f : all_formats()) {
      if (f == Format::BF16) continue;
      const double bound = max_kl(f, name);
      LoadOptions o = base;
      o.format = f;
      double kl = mean_kl(ref, log_probs(*Model::load(dir, backend, o), tokens));
      INFO(name << " " << format_name(f) << " KL " << kl << " bound " << bound);
      CHECK(kl < bound);
      if (f != Format::F32) CHECK(kl > 0);  // every quantized format changes the weights
      // llama-untidy's fp4 KL (1.01) lies within 1.5x of its nf4 KL (0.83); its code tables are
      // pinned by the bitsandbytes model goldens above instead.
      if (f == Format::FP4 && name != "llama-untidy") CHECK(kl > max_kl(Format::NF4, name));
    }
  }
}
