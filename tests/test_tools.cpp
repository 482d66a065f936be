// The tool commands and the library code behind them: sliding-window perplexity (against a
// hand computation fed one token at a time), KL and top-1 agreement against a base model, the
// streaming safetensors writer and shard planner, `lowbit make-model` (tiny presets load, give
// finite logits, are deterministic), and `lowbit bench` / `lowbit ppl` end to end.
#include <catch2/catch.hpp>

#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "backend/cpu_backend.h"
#include "core/error.h"
#include "core/half.h"
#include "generate/generate.h"
#include "generate/perplexity.h"
#include "io/safetensors.h"
#include "io/safetensors_stream_writer.h"
#include "model/model.h"
#include "test_fixtures.h"
#include "test_util.h"
#include "tokenizer/tokenizer.h"

using namespace lowbit;
namespace fs = std::filesystem;

using lowbit::test::slurp;

namespace {

std::string fixture(const std::string& name) { return test::data_dir() + "/models/" + name; }

// A fresh, empty scratch folder per call.
fs::path scratch_dir(const std::string& name) {
  fs::path dir = fs::temp_directory_path() / ("lowbit-test-tools-" + std::to_string(::getpid())) / name;
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

using test::run_lowbit;
using test::RunResult;

std::vector<int32_t> random_tokens(size_t n, int vocab, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int32_t> d(0, vocab - 1);
  std::vector<int32_t> t(n);
  for (auto& x : t) x = d(rng);
  return t;
}

// Mean NLL computed the long way: HF's loop written out again, every window fed one token at a
// time through decode_logits (the KV-cache path, not the batched prefill), log-softmax in long double.
double hand_mean_nll(Model& model, const std::vector<int32_t>& tokens, int window, int stride) {
  const int64_t n = int64_t(tokens.size());
  long double total = 0;
  int64_t count = 0, prev_end = 0;
  for (int64_t begin = 0; begin < n; begin += stride) {
    const int64_t end = std::min(begin + window, n);
    const int64_t trg_len = end - prev_end;  // HF: the last trg_len tokens are labels
    for (int64_t i = begin; i + 1 < end; ++i) {
      std::vector<float> logits = test::decode_logits(model, tokens[size_t(i)], int(i - begin), 0);
      const int64_t target = i + 1;
      if (target < end - trg_len) continue;
      long double max = logits[0];
      for (float v : logits) max = std::max<long double>(max, v);
      long double sum = 0;
      for (float v : logits) sum += std::exp(static_cast<long double>(v) - max);
      total -= static_cast<long double>(logits[size_t(tokens[size_t(target)])]) - max - std::log(sum);
      ++count;
    }
    prev_end = end;
    if (end == n) break;
  }
  REQUIRE(count == n - 1);
  return double(total / count);
}

// Mean KL(base || model) over the same predictions, computed the long way like hand_mean_nll:
// both models fed every window token by token, each row's log-softmax and KL in long double.
double hand_mean_kl(Model& model, Model& base, const std::vector<int32_t>& tokens, int window, int stride) {
  const int64_t n = int64_t(tokens.size());
  auto log_softmax_long = [](const std::vector<float>& logits) {
    long double max = logits[0];
    for (float v : logits) max = std::max<long double>(max, v);
    long double sum = 0;
    for (float v : logits) sum += std::exp(static_cast<long double>(v) - max);
    std::vector<long double> out;
    for (float v : logits) out.push_back(static_cast<long double>(v) - max - std::log(sum));
    return out;
  };
  long double total = 0;
  int64_t count = 0, prev_end = 0;
  for (int64_t begin = 0; begin < n; begin += stride) {
    const int64_t end = std::min(begin + window, n);
    const int64_t trg_len = end - prev_end;
    for (int64_t i = begin; i + 1 < end; ++i) {
      const std::vector<long double> lp = log_softmax_long(test::decode_logits(model, tokens[size_t(i)], int(i - begin), 0));
      const std::vector<long double> base_lp =
          log_softmax_long(test::decode_logits(base, tokens[size_t(i)], int(i - begin), 0));
      if (i + 1 < end - trg_len) continue;
      long double kl = 0;
      for (size_t v = 0; v < lp.size(); ++v) kl += std::exp(base_lp[v]) * (base_lp[v] - lp[v]);
      total += kl;
      ++count;
    }
    prev_end = end;
    if (end == n) break;
  }
  REQUIRE(count == n - 1);
  return double(total / count);
}

}  // namespace

TEST_CASE("perplexity windows score every token after the first exactly once", "[tools]") {
  for (int64_t n : {2, 3, 17, 100, 513}) {
    for (int window : {2, 5, 16, 512}) {
      for (int stride : {1, 2, window / 2, window - 1}) {
        if (stride < 1 || stride >= window) continue;
        INFO("n " << n << " window " << window << " stride " << stride);
        const auto plan = plan_windows(n, window, stride);
        std::vector<int> scored(size_t(n), 0);
        for (const auto& w : plan) {
          CHECK(w.end - w.begin <= window);
          CHECK(w.first_target > w.begin);  // a window's first token has no logits before it
          for (int64_t t = w.first_target; t < w.end; ++t) ++scored[size_t(t)];
        }
        CHECK(scored[0] == 0);
        for (int64_t t = 1; t < n; ++t) CHECK(scored[size_t(t)] == 1);
        CHECK(plan.front().begin == 0);
        CHECK(plan.back().end == n);
      }
    }
  }
  CHECK_THROWS_AS(plan_windows(10, 1, 1), UsageError);
  CHECK_THROWS_AS(plan_windows(10, 8, 0), UsageError);
  CHECK_THROWS_AS(plan_windows(10, 8, 8), UsageError);  // no overlap: tokens would go unscored
  CHECK_THROWS_AS(plan_windows(10, 8, 9), UsageError);
}

TEST_CASE("HF perplexity example bookkeeping: window 8, stride 4, 20 tokens", "[tools]") {
  const auto plan = plan_windows(20, 8, 4);
  REQUIRE(plan.size() == 4);
  CHECK((plan[0].begin == 0 && plan[0].end == 8 && plan[0].first_target == 1));
  CHECK((plan[1].begin == 4 && plan[1].end == 12 && plan[1].first_target == 8));
  CHECK((plan[2].begin == 8 && plan[2].end == 16 && plan[2].first_target == 12));
  CHECK((plan[3].begin == 12 && plan[3].end == 20 && plan[3].first_target == 16));
}

TEST_CASE("log_softmax is stable for huge logits", "[tools]") {
  // exp(1000) overflows even a double; subtracting the maximum first does not.
  const float logits[3] = {1000.0f, 1000.0f, 0.0f};
  double out[3];
  log_softmax(logits, 3, out);
  CHECK(out[0] == Approx(-std::log(2.0)));
  CHECK(out[1] == out[0]);
  CHECK(out[2] == Approx(-1000.0 - std::log(2.0)));
}

TEST_CASE("perplexity equals a hand computation from token-by-token logits", "[tools]") {
  CpuBackend backend(0);
  for (const char* name : {"llama-gqa-tied", "falcon-40b-style"}) {
    DYNAMIC_SECTION(name) {
      LoadOptions opts;
      opts.max_context = 64;
      auto model = Model::load(fixture(name), backend, opts);
      const auto tokens = random_tokens(45, model->config().vocab_size, 11);
      for (auto [window, stride] : {std::pair{16, 8}, std::pair{16, 15}, std::pair{7, 3}, std::pair{64, 32}}) {
        INFO("window " << window << " stride " << stride);
        const PerplexityResult r = compute_perplexity(*model, tokens, window, stride);
        const double expected = hand_mean_nll(*model, tokens, window, stride);
        CHECK(r.tokens_scored == int64_t(tokens.size()) - 1);
        CHECK(std::fabs(r.mean_nll - expected) <= 1e-9 * std::fabs(expected));
        CHECK(r.perplexity == Approx(std::exp(expected)).epsilon(1e-9));
        CHECK(!r.has_base);
      }
    }
  }
}

TEST_CASE("KL of a model against itself is 0 and top-1 agreement 1", "[tools]") {
  CpuBackend backend(0);
  LoadOptions opts;
  opts.max_context = 32;
  auto model = Model::load(fixture("llama3-rope"), backend, opts);
  auto same = Model::load(fixture("llama3-rope"), backend, opts);
  const auto tokens = random_tokens(50, model->config().vocab_size, 3);
  const PerplexityResult r = compute_perplexity(*model, tokens, 32, 16, same.get());
  REQUIRE(r.has_base);
  CHECK(r.mean_kl == 0.0);
  CHECK(r.top1_agreement == 1.0);
  CHECK(r.base_perplexity == r.perplexity);

  // bf16 weights move the distribution a little: KL small but positive.
  LoadOptions bf16 = opts;
  bf16.format = Format::BF16;
  auto rounded = Model::load(fixture("llama3-rope"), backend, bf16);
  const PerplexityResult q = compute_perplexity(*rounded, tokens, 32, 16, model.get());
  CHECK(q.mean_kl > 0);
  CHECK(q.mean_kl < 0.05);
  CHECK(q.top1_agreement > 0.8);
  CHECK(q.base_perplexity == Approx(r.perplexity).epsilon(1e-12));
}

TEST_CASE("perplexity rejects bad inputs", "[tools]") {
  CpuBackend backend(0);
  LoadOptions opts;
  opts.max_context = 16;
  auto model = Model::load(fixture("llama-gqa-tied"), backend, opts);
  CHECK_THROWS_AS(compute_perplexity(*model, {1}, 8, 4), InputError);
  CHECK_THROWS_AS(compute_perplexity(*model, {1, 2, 3}, 32, 4), UsageError);  // window > context
  CHECK_THROWS_AS(compute_perplexity(*model, {1, 99999}, 8, 4), InputError);
}

TEST_CASE("streaming safetensors writer output reads back identically", "[tools]") {
  const fs::path dir = scratch_dir("stream");
  std::vector<float> a(6 * 7);
  for (size_t i = 0; i < a.size(); ++i) a[i] = float(i) * 0.25f - 3.0f;
  std::vector<uint16_t> b(5 * 3), c(11);
  for (size_t i = 0; i < b.size(); ++i) b[i] = f32_to_bf16(float(i) - 7.5f);
  for (size_t i = 0; i < c.size(); ++i) c[i] = f32_to_f16(float(i) / 3.0f);
  const std::vector<TensorSpec> specs = {
      {"layer.a", DType::F32, {6, 7}}, {"layer.b", DType::BF16, {5, 3}}, {"c", DType::F16, {11}}};
  const std::map<std::string, std::string> meta = {{"format", "pt"}};
  {
    SafetensorsStreamWriter w((dir / "stream.safetensors").string(), specs, meta);
    CHECK(w.data_bytes() == a.size() * 4 + b.size() * 2 + c.size() * 2);
    // Pieces that straddle tensor boundaries on purpose.
    std::vector<uint8_t> all;
    for (const void* p : {static_cast<const void*>(a.data()), static_cast<const void*>(b.data()),
                          static_cast<const void*>(c.data())}) {
      const size_t n = p == a.data() ? a.size() * 4 : p == b.data() ? b.size() * 2 : c.size() * 2;
      all.insert(all.end(), static_cast<const uint8_t*>(p), static_cast<const uint8_t*>(p) + n);
    }
    for (size_t at = 0; at < all.size(); at += 13) w.append(all.data() + at, std::min<size_t>(13, all.size() - at));
    w.finish();
  }
  write_safetensors((dir / "reference.safetensors").string(),
                    {{"layer.a", DType::F32, {6, 7}, a.data()}, {"layer.b", DType::BF16, {5, 3}, b.data()},
                     {"c", DType::F16, {11}, c.data()}},
                    meta);
  // Same header and data as the in-memory writer, byte for byte.
  CHECK(slurp(dir / "stream.safetensors") == slurp(dir / "reference.safetensors"));

  auto f = SafetensorsFile::open((dir / "stream.safetensors").string());
  REQUIRE(f->tensors().size() == 3);
  CHECK(f->metadata().at("format") == "pt");
  for (const TensorInfo& t : f->tensors()) {
    if (t.name == "layer.a") {
      CHECK(t.dtype == DType::F32);
      CHECK(t.shape == std::vector<int64_t>{6, 7});
      CHECK(std::memcmp(t.data, a.data(), t.nbytes) == 0);
    } else if (t.name == "layer.b") {
      CHECK(t.dtype == DType::BF16);
      CHECK(t.shape == std::vector<int64_t>{5, 3});
      CHECK(std::memcmp(t.data, b.data(), t.nbytes) == 0);
    } else {
      CHECK(t.name == "c");
      CHECK(t.dtype == DType::F16);
      CHECK(std::memcmp(t.data, c.data(), t.nbytes) == 0);
    }
  }
}

TEST_CASE("streaming writer refuses too many or too few bytes", "[tools]") {
  const fs::path dir = scratch_dir("stream-errors");
  const std::vector<TensorSpec> specs = {{"x", DType::F32, {4}}};
  const float v[5] = {1, 2, 3, 4, 5};
  {
    SafetensorsStreamWriter w((dir / "over.safetensors").string(), specs);
    CHECK_THROWS_AS(w.append(v, sizeof(v)), InputError);
  }
  {
    SafetensorsStreamWriter w((dir / "short.safetensors").string(), specs);
    w.append(v, 8);
    CHECK_THROWS_AS(w.finish(), InputError);
  }
  CHECK_THROWS_AS(SafetensorsStreamWriter((dir / "dup.safetensors").string(), {specs[0], specs[0]}), InputError);
  CHECK_THROWS_AS(SafetensorsStreamWriter((dir / "no-such-dir" / "x.safetensors").string(), specs), InputError);
}

TEST_CASE("shard plan and index are read back by WeightStore", "[tools]") {
  const fs::path dir = scratch_dir("shards");
  std::vector<TensorSpec> specs;
  for (int i = 0; i < 5; ++i) specs.push_back({fmt::format("t{}", i), DType::F32, {int64_t(10 + i)}});
  specs.push_back({"big", DType::F32, {100}});  // over the limit: a shard of its own
  const auto shards = plan_shards(specs, 100);
  REQUIRE(shards.size() >= 3);
  for (const auto& s : shards) {
    CHECK(s.file.find("-of-") != std::string::npos);
    CHECK((s.data_bytes <= 100 || s.tensors.size() == 1));
  }
  CHECK(plan_shards(specs, 1 << 20).size() == 1);
  CHECK(plan_shards(specs, 1 << 20)[0].file == "model.safetensors");
  for (const auto& s : shards) {
    SafetensorsStreamWriter w((dir / s.file).string(), s.tensors);
    for (const auto& t : s.tensors) {
      std::vector<float> values(size_t(t.numel()), float(t.numel()));
      w.append(values.data(), values.size() * 4);
    }
    w.finish();
  }
  write_shard_index(dir.string(), shards);
  WeightStore store = WeightStore::open_dir(dir.string());
  for (const auto& t : specs) {
    REQUIRE(store.has(t.name));
    const auto values = to_f32(store.get(t.name, t.shape));
    CHECK(values[0] == float(t.numel()));
  }
}

TEST_CASE("make-model tiny presets load, give finite logits and are deterministic", "[tools]") {
  CpuBackend backend(0);
  for (const char* arch_preset : {"llama tiny-llama", "falcon tiny-falcon"}) {
    DYNAMIC_SECTION(arch_preset) {
      const std::string arch = std::string(arch_preset).substr(0, std::string(arch_preset).find(' '));
      const std::string preset = std::string(arch_preset).substr(arch.size() + 1);
      const fs::path dir = scratch_dir(preset);
      auto make = [&](const fs::path& out, int seed) {
        return run_lowbit({"make-model", "--arch", arch, "--preset", preset, "--out", out.string(), "--seed",
                           std::to_string(seed), "--tokenizer-from", ""});
      };
      REQUIRE(make(dir / "a", 7).code == 0);
      REQUIRE(make(dir / "b", 7).code == 0);
      REQUIRE(make(dir / "c", 8).code == 0);
      CHECK(slurp(dir / "a/model.safetensors") == slurp(dir / "b/model.safetensors"));
      CHECK(slurp(dir / "a/model.safetensors") != slurp(dir / "c/model.safetensors"));
      CHECK(fs::file_size(dir / "a/model.safetensors") < 8u << 20);

      const ModelConfig cfg = load_config((dir / "a").string());
      CHECK(cfg.hidden_size == 128);
      CHECK(cfg.n_layers == 4);
      CHECK(cfg.vocab_size == 512);
      CHECK(cfg.torch_dtype == "bfloat16");
      WeightStore store = WeightStore::open_dir((dir / "a").string());
      if (arch == "llama") {
        CHECK(cfg.arch == Arch::Llama);
        CHECK(cfg.n_kv_heads == 2);
        CHECK(store.get("model.layers.0.self_attn.k_proj.weight").shape == std::vector<int64_t>{64, 128});
        CHECK(store.get("lm_head.weight").shape == std::vector<int64_t>{512, 128});
      } else {
        CHECK(cfg.arch == Arch::Falcon);
        CHECK(cfg.qkv_layout == QkvLayout::stacked);  // multi_query
        CHECK(cfg.parallel_attention);
        CHECK(cfg.tie_word_embeddings);
        CHECK(store.get("transformer.h.3.self_attention.query_key_value.weight").shape ==
              std::vector<int64_t>{(4 + 2) * 32, 128});
        CHECK(!store.has("lm_head.weight"));
      }
      // Linear weights have std about 1/sqrt(fan_in); norm weights sit near 1.
      const std::string down = arch == "llama" ? "model.layers.1.mlp.down_proj.weight" : "transformer.h.1.mlp.dense_4h_to_h.weight";
      const auto w = to_f32(store.get(down));
      double sq = 0;
      for (float v : w) sq += double(v) * v;
      CHECK(std::sqrt(sq / double(w.size())) == Approx(1.0 / std::sqrt(double(cfg.intermediate_size))).epsilon(0.03));

      LoadOptions opts;
      opts.max_context = 32;
      auto model = Model::load((dir / "a").string(), backend, opts);
      const auto tokens = random_tokens(12, cfg.vocab_size, 5);
      const auto logits = test::prefill_logits(*model, tokens, 0);
      for (float v : logits) REQUIRE(std::isfinite(v));
      const PerplexityResult r = compute_perplexity(*model, tokens, 12, 6);
      CHECK(std::isfinite(r.perplexity));

      // The generated byte-level tokenizer covers the vocabulary and round-trips text.
      const Tokenizer tok = Tokenizer::from_file((dir / "a/tokenizer.json").string());
      CHECK(tok.vocab_size() == 512);
      const std::string text = "Once upon a time, a tiny model said: héllo!";
      const auto ids = tok.encode(text, false);
      for (int32_t id : ids) CHECK((id >= 0 && id < 512));
      CHECK(tok.decode(ids, true) == text);
    }
  }
}

TEST_CASE("make-model rejects bad flags", "[tools]") {
  const std::string out = (scratch_dir("make-bad") / "x").string();
  auto make = [&](std::vector<std::string> flags) {
    flags.insert(flags.begin(), "make-model");
    flags.insert(flags.end(), {"--out", out});
    return run_lowbit(flags).code;
  };
  CHECK(make({"--arch", "llama", "--preset", "nope"}) == 2);
  CHECK(make({"--arch", "falcon", "--preset", "tiny-llama"}) == 2);
  CHECK(make({"--arch", "llama", "--preset", "tiny-llama", "--dtype", "f8"}) == 2);
  CHECK(make({"--arch", "llama", "--preset", "tiny-llama", "--layers", "0"}) == 2);
  REQUIRE(make({"--arch", "llama", "--preset", "tiny-llama", "--layers", "1"}) == 0);
  // Not empty any more: refuses without --force.
  CHECK(make({"--arch", "llama", "--preset", "tiny-llama", "--layers", "1"}) == 2);
  CHECK(make({"--arch", "llama", "--preset", "tiny-llama", "--layers", "1", "--force"}) == 0);
  CHECK(load_config(out).n_layers == 1);
}

TEST_CASE("ppl command prints perplexity, KL and agreement", "[tools]") {
  const fs::path dir = scratch_dir("ppl");
  REQUIRE(run_lowbit({"make-model", "--arch", "llama", "--preset", "tiny-llama", "--layers", "2", "--tokenizer-from", "",
                      "--out", (dir / "m").string()})
              .code == 0);
  {
    std::ofstream text(dir / "text.txt");
    for (int i = 0; i < 20; ++i) text << "Lily and Ben went to the park. They saw a big red ball. ";
  }
  auto ppl = [&](std::vector<std::string> flags) {
    flags.insert(flags.begin(), {"ppl", "-m", (dir / "m").string(), "--device", "cpu", "-f", (dir / "text.txt").string()});
    return run_lowbit(flags);
  };
  // nf4 against f32 (make-model writes bf16 weights, so bf16 against f32 would be exact: KL 0).
  const RunResult r = ppl({"--quant", "nf4", "--kl-base", "f32", "--ctx-window", "64", "--json"});
  INFO(r.err);
  REQUIRE(r.code == 0);
  const auto j = nlohmann::json::parse(r.out);
  CHECK(j.at("tokens_scored").get<int64_t>() == j.at("tokens").get<int64_t>() - 1);
  CHECK(j.at("stride").get<int>() == 32);
  CHECK(j.at("perplexity").get<double>() > 1);
  {
    // The perplexity and KL the command prints, computed again here the long way: both formats
    // loaded in this process as the command loads them (KV cache sized to the window).
    CpuBackend backend(0);
    LoadOptions f32;
    f32.max_context = 64;
    LoadOptions nf4 = f32;
    nf4.format = Format::NF4;
    auto quantized = Model::load((dir / "m").string(), backend, nf4);
    auto base_model = Model::load((dir / "m").string(), backend, f32);
    const Tokenizer tok = Tokenizer::from_file((dir / "m" / "tokenizer.json").string());
    const std::vector<int32_t> tokens = tok.encode(slurp(dir / "text.txt"), true);
    REQUIRE(j.at("tokens").get<size_t>() == tokens.size());
    const double kl = hand_mean_kl(*quantized, *base_model, tokens, 64, 32);
    CHECK(kl > 0);  // 4-bit weights move the distribution
    CHECK(j.at("mean_kl").get<double>() == Approx(kl).epsilon(1e-6));
    CHECK(j.at("perplexity").get<double>() == Approx(std::exp(hand_mean_nll(*quantized, tokens, 64, 32))).epsilon(1e-9));
  }
  CHECK(j.at("top1_agreement").get<double>() > 0.5);
  CHECK(j.at("quant") == "nf4");

  const RunResult text = ppl({"--quant", "f32"});
  REQUIRE(text.code == 0);
  CHECK(text.out.find("perplexity:") != std::string::npos);
  CHECK(ppl({"--stride", "0"}).code == 2);
  CHECK(ppl({"--ctx-window", "1"}).code == 2);
  CHECK(ppl({"--ctx-window", "64", "--stride", "64"}).code == 2);
  CHECK(ppl({"--kl-base", "q3"}).code == 2);
  CHECK(run_lowbit({"ppl", "-m", (dir / "m").string(), "-f", (dir / "missing.txt").string()}).code == 1);
  CHECK(run_lowbit({"ppl", "-m", (dir / "nothing").string(), "-f", (dir / "text.txt").string()}).code == 1);
}

TEST_CASE("bench runs end to end and reports every field", "[tools]") {
  const std::string model = fixture("llama-gqa-tied");
  const RunResult r = run_lowbit({"bench", "-m", model, "--device", "cpu", "--quant", "f32,bf16", "--batch", "1,2",
                                  "--prompt-len", "8", "--gen", "4", "--repeats", "1", "--json"});
  INFO(r.err);
  REQUIRE(r.code == 0);
  const auto j = nlohmann::json::parse(r.out);
  CHECK(j.at("device").get<std::string>().rfind("cpu", 0) == 0);
  CHECK(j.at("copy_bandwidth_gbs").get<double>() > 0);
  CHECK(j.at("speedup_baseline") == "bf16");
  REQUIRE(j.at("rows").size() == 4);
  for (const auto& row : j.at("rows")) {
    for (const char* field : {"decode_tokens_per_s", "decode_bw_share", "decode_speedup_vs_bf16",
                              "prefill_tokens_per_s", "ttft_s", "weight_bytes", "decode_gbs"})
      CHECK(row.at(field).get<double>() > 0);
    CHECK(row.at("prompt_tokens") == 8);
    CHECK((row.at("batch_size") == 1 || row.at("batch_size") == 2));
    if (row.at("quant") == "bf16") CHECK(row.at("decode_speedup_vs_bf16").get<double>() == 1.0);
  }
  CHECK(run_lowbit({"bench", "-m", model, "--quant", "f32,q9"}).code == 2);
  CHECK(run_lowbit({"bench", "-m", model, "--quant", "f32", "--batch", "0"}).code == 2);
  CHECK(run_lowbit({"bench", "-m", model, "--quant", "f32", "--prompt-len", "8,x"}).code == 2);
  CHECK(run_lowbit({"bench", "-m", model, "--quant", "f32", "--prompt-len", "250", "--gen", "10"}).code == 2);
  CHECK(run_lowbit({"bench", "-m", fixture("missing"), "--quant", "f32"}).code == 1);
}
