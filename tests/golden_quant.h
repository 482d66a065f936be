// The golden-quant comparison shared by the CPU test (test_quant_model.cpp) and the CUDA one
// (test_gpu_formats.cpp, under the emulated device in CI).
//
// tests/data/models/<name>/golden-quant.{json,safetensors} (tools/make_fixture_models.py with
// tools/format_reference.py): each format's reference model -- every checkpoint tensor quantized
// on its own by bitsandbytes 0.50.2 and dequantized by its pure-torch path, LLM.int8 through
// bnb.matmul as Linear8bitLt runs it, bf16 embeddings and head -- run in transformers. lowbit
// must give its logits within 1e-4 at every position (prefill and token-by-token decode) and
// its greedy continuations exactly. The shapes are untidy on purpose (head_dim 20, k/v and MLP
// tensors that are not whole 64-blocks, more than 256 blocks per tensor, Falcon's fused QKV rows
// straddling blocks), so quantizing a fused q|k|v or a reordered QKV shows up as logit errors
// of order 1 (measured 2.7-3.1 before lowbit quantized each tensor on its own).
//
// The formats that round their activations (int8 and W4A16 to fp16, W8A8 to int8 and W8A8-fp8 to
// e4m3 per token) turn
// an fp32 rounding difference upstream -- lowbit's and torch's sums run in other orders, 1.6e-5
// apart in f32 logits -- into a different 16- or 8-bit activation whenever a value sits near a
// rounding point. For them the bound is the reference's own spread: how far its logits move when
// every linear input moves by one fp32 ulp (golden-quant.json "nudge_sensitivity", measured by
// the tool), when that exceeds 1e-4. The weights themselves are pinned bit for bit in
// test_formats.
#pragma once
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "backend/backend.h"
#include "generate/generate.h"
#include "io/safetensors.h"
#include "model/model.h"
#include "test_fixtures.h"
#include "test_util.h"

namespace lowbit::test {

// Every format of every fixture with golden-quant.* on `backend`: logits within 1e-4 of the
// reference (or its 1-ulp spread for the activation-rounding formats) at every position, prefill
// and the decode steps decode_checked() picks, and the greedy continuations exactly.
// spread_factor scales the reference's 1-ulp spread: 1 on the CPU; on CUDA, whose fp32 sums run
// in yet another order, an activation the 1-ulp nudge flips can flip there too, so the same
// distance is allowed with room (1.5).
// greedy_tokens: how much of each greedy continuation is checked (all of it by default; the
// emulated CUDA run checks the first 8 tokens: its logits are already checked at every position).
inline void check_golden_quant(Backend& backend, double spread_factor = 1.0, size_t greedy_tokens = size_t(-1)) {
  namespace fs = std::filesystem;
  int models = 0;
  for (const auto& dir : fixture_models()) {
    if (!fs::exists(dir + "/golden-quant.json")) continue;
    ++models;
    const std::string name = fs::path(dir).filename().string();
    std::ifstream in(dir + "/golden-quant.json");
    REQUIRE(in.good());
    const auto golden = nlohmann::json::parse(in);
    const auto prompts = golden.at("prompts").get<std::vector<std::vector<int32_t>>>();
    auto file = SafetensorsFile::open(dir + "/golden-quant.safetensors");
    auto has = [&](const std::string& key) {
      for (const auto& t : file->tensors())
        if (t.name == key) return true;
      return false;
    };
    auto logits_of = [&](const std::string& key) {
      for (const auto& t : file->tensors())
        if (t.name == key) return to_f32(t);
      FAIL("golden-quant.safetensors has no " << key);
      return std::vector<float>{};
    };
    REQUIRE(golden.at("formats").size() == all_formats().size());
    for (const auto& [format_text, expected] : golden.at("formats").items()) {
      const Format f = parse_format(format_text);
      LoadOptions opts;
      opts.format = f;
      opts.max_context = 128;
      auto model = Model::load(dir, backend, opts);
      const size_t vocab = size_t(model->config().vocab_size);
      float worst_prefill = 0, worst_decode = 0;
      for (size_t j = 0; j < prompts.size(); ++j) {
        const auto want = logits_of(format_text + ".logits." + std::to_string(j));
        REQUIRE(want.size() == prompts[j].size() * vocab);
        std::vector<int> rows;
        TokenBatch b = prompt_batch(prompts[j], &rows);
        std::vector<float> got(want.size());
        model->forward(b, rows, got.data());
        for (size_t i = 0; i < got.size(); ++i) worst_prefill = std::max(worst_prefill, std::fabs(got[i] - want[i]));
        // LLM.int8's outlier columns depend on the tokens of the matmul: its token-by-token
        // reference is its own (transformers' KV cache, one token per forward).
        const std::string decode_key = format_text + ".decode_logits." + std::to_string(j);
        const auto want_decode = has(decode_key) ? logits_of(decode_key) : want;
        REQUIRE(want_decode.size() == want.size());
        for (size_t i = 0; i < prompts[j].size(); ++i) {
          // A skipped position keeps the prefill's KV entry: only where the reference's decode
          // equals its prefill (not LLM.int8, whose outliers differ token by token).
          if (!has(decode_key) && !decode_checked(i, prompts[j].size())) continue;
          const auto step = decode_logits(*model, prompts[j][i], int(i), 0);
          for (size_t v = 0; v < vocab; ++v)
            worst_decode = std::max(worst_decode, std::fabs(step[v] - want_decode[i * vocab + v]));
        }
        GenerationRequest req;
        req.prompt = prompts[j];
        req.sampling.temperature = 0;
        auto greedy = expected.at("greedy")[j].get<std::vector<int32_t>>();
        if (greedy.size() > greedy_tokens) greedy.resize(greedy_tokens);
        req.max_new_tokens = int(greedy.size());
        INFO(name << " " << format_text << " prompt " << j << " greedy");
        CHECK(generate(*model, req, [](int32_t) { return true; }).tokens == greedy);
      }
      const bool rounds_activations = format_info(f).activations != Activations::fp32;
      const double sensitivity = expected.at("nudge_sensitivity").get<double>();
      const double bound = rounds_activations ? std::max(1e-4, spread_factor * sensitivity) : 1e-4;
      // The distances, for the record (docs and README quote them).
      std::printf("%s %s %s: max |logit - reference| prefill %.3g, decode %.3g (reference's 1-ulp spread %.3g)\n",
                  backend.name().c_str(), name.c_str(), format_text.c_str(), double(worst_prefill), double(worst_decode), sensitivity);
      INFO(name << " " << format_text << " prefill " << worst_prefill << " decode " << worst_decode << " bound "
                << bound);
      CHECK(worst_prefill < bound);
      CHECK(worst_decode < bound);
    }
  }
  CHECK(models >= 2);
}

}  // namespace lowbit::test
