// The real instruct model: SmolLM2-135M-Instruct as QuantFactory's Q4_1 GGUF (its weights are
// Q4_1/Q8_0-rounded, not the original bf16). Converted by lowbit, its f32 logits are within 1e-4
// of transformers' own load of the GGUF run in float64 (its f32 run is itself up to 9.3e-5 from
// that, and within 2e-4 of lowbit's), and its greedy answer is transformers'
// (tests/data/smollm2, tools/make_smollm2_golden.py); its vocabulary tokenizes the hard-strings
// corpus as HF tokenizers does; every format loads and answers; run --chat, ppl and bench work.
#include <catch2/catch.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "backend/cpu_backend.h"
#include "convert/gguf_convert.h"
#include "formats/format.h"
#include "generate/generate.h"
#include "model/model.h"
#include "test_fixtures.h"
#include "test_smollm2.h"
#include "tokenizer/tokenizer.h"

using namespace lowbit;
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

json read_json(const std::string& path) {
  std::ifstream in(path);
  REQUIRE(in);
  return json::parse(in);
}

// The folder convert-gguf writes (f32), made once per test binary and removed at exit.
const std::string& converted() {
  struct Folder {
    fs::path path;
    Folder() {
      path = fs::temp_directory_path() / ("lowbit_smollm2_" + std::to_string(getpid()));
      convert_gguf(test::smollm2_gguf(), path.string(), {});
    }
    ~Folder() {
      std::error_code ec;
      fs::remove_all(path, ec);
    }
  };
  static Folder folder;
  static const std::string s = folder.path.string();
  return s;
}

json golden() { return read_json(test::data_dir() + "/smollm2/golden.json"); }

}  // namespace

TEST_CASE("smollm2: f32 logits equal transformers' within 1e-4 and greedy decoding agrees", "[smollm2]") {
  const json g = golden();
  const std::vector<int32_t> ids = g["ids"];
  const Tokenizer tok = Tokenizer::from_file(converted() + "/tokenizer.json");
  CHECK(tok.encode(g["prompt_text"].get<std::string>(), false) == ids);

  CpuBackend backend(0);
  LoadOptions opts;
  opts.max_context = 256;
  auto model = Model::load(converted(), backend, opts);
  const int vocab = model->config().vocab_size;
  REQUIRE(vocab == 49152);
  std::vector<int> rows;
  TokenBatch b = test::prompt_batch(ids, &rows);
  std::vector<float> logits(ids.size() * size_t(vocab));
  model->forward(b, rows, logits.data());
  // Two references: transformers' forward in float64 (the exact computation up to fp64 rounding)
  // and in float32. Each f32 forward rounds on its own: transformers' f32 logits are up to 9.3e-5
  // from its f64 ones at position 0 (the <|im_start|> token's large activations), lowbit's are
  // within 4.1e-5 of them, so the two f32 forwards differ by up to 1.1e-4 there.
  const std::vector<int> positions = g["positions"];
  for (size_t k = 0; k < positions.size(); ++k) {
    const std::vector<double> exact = g["logits_f64"][k];
    const std::vector<float> f32 = g["logits"][k];
    double from_exact = 0, from_f32 = 0, torch_from_exact = 0;
    for (int v = 0; v < vocab; ++v) {
      const double mine = logits[size_t(positions[k]) * size_t(vocab) + size_t(v)];
      from_exact = std::max(from_exact, std::fabs(mine - exact[size_t(v)]));
      from_f32 = std::max(from_f32, std::fabs(mine - double(f32[size_t(v)])));
      torch_from_exact = std::max(torch_from_exact, std::fabs(double(f32[size_t(v)]) - exact[size_t(v)]));
    }
    INFO("position " << positions[k] << ": max |lowbit - transformers f64| = " << from_exact
                     << ", |lowbit - transformers f32| = " << from_f32
                     << ", |transformers f32 - f64| = " << torch_from_exact);
    CHECK(from_exact < 1e-4);
    CHECK(from_exact <= torch_from_exact + 1e-5);  // no farther from exact than transformers' own f32
    CHECK(from_f32 < 2e-4);
  }

  GenerationRequest req;
  req.prompt = ids;
  req.sampling.temperature = 0;  // greedy, as transformers' generate(do_sample=False)
  req.max_new_tokens = 24;
  req.stop_ids = {2};
  const GenerationResult r = generate(*model, req, [](int32_t) { return true; });
  CHECK(r.tokens == g["greedy"].get<std::vector<int32_t>>());
  CHECK(tok.decode(r.tokens) == g["greedy_text"].get<std::string>());
}

TEST_CASE("smollm2: its vocabulary tokenizes the hard strings as HF tokenizers does", "[smollm2][tokenizer]") {
  const Tokenizer tok = Tokenizer::from_file(converted() + "/tokenizer.json");
  const json g = read_json(test::data_dir() + "/smollm2/tokenizer-golden.json");
  size_t passed = 0;
  for (const json& c : g["cases"]) {
    INFO(json(c["text"]).dump());
    const bool ok = tok.encode(c["text"].get<std::string>(), true) == c["ids_special"].get<std::vector<int32_t>>() &&
                    tok.encode(c["text"].get<std::string>(), false) == c["ids_plain"].get<std::vector<int32_t>>();
    CHECK(ok);
    passed += ok;
  }
  CHECK(passed == g["cases"].size());
  CHECK(passed > 390);
}

TEST_CASE("smollm2: every format loads and answers a chat prompt", "[smollm2][formats]") {
  const json g = golden();
  const std::vector<int32_t> ids = g["ids"];
  const Tokenizer tok = Tokenizer::from_file(converted() + "/tokenizer.json");
  CpuBackend backend(0);
  for (Format f : all_formats()) {
    if (f == Format::F32) continue;  // the golden's own arithmetic, checked above
    DYNAMIC_SECTION(format_name(f)) {
      LoadOptions opts;
      opts.format = f;
      opts.max_context = 128;
      auto model = Model::load(converted(), backend, opts);
      GenerationRequest req;
      req.prompt = ids;
      req.sampling.temperature = 0;
      req.max_new_tokens = 12;
      req.stop_ids = {2};
      const GenerationResult r = generate(*model, req, [](int32_t) { return true; });
      const std::string text = tok.decode(r.tokens);
      INFO(format_name(f) << " answers: " << text);
      CHECK(!r.tokens.empty());
      for (int32_t id : r.tokens) CHECK((id >= 0 && id < 49152));
      // 8-bit formats and bf16 stay on the f32 answer for its first words.
      if (f == Format::BF16 || f == Format::INT8 || f == Format::W8A8 || f == Format::W8A8_FP8)
        CHECK_THAT(text, Catch::Contains("Paris"));
    }
  }
}

TEST_CASE("smollm2: run --chat answers, ppl and bench run", "[smollm2][cli]") {
  auto r = test::run_cli({"run", "-m", converted(), "--chat", "-p", "What is the capital of France?", "-n", "24"});
  INFO(r.err);
  CHECK(r.code == 0);
  CHECK_THAT(r.out, Catch::Contains("Paris"));
  CHECK(r.out.find("<|im_start|>") == std::string::npos);  // the template is not echoed

  // The first 800 bytes of the stories evaluation text: a few windows, enough to exercise ppl.
  const fs::path text = fs::temp_directory_path() / ("lowbit_smollm2_text_" + std::to_string(getpid()) + ".txt");
  std::ofstream(text) << test::slurp(test::root_dir() + "/docs/data/stories-eval.txt").substr(0, 800);
  auto p = test::run_cli({"ppl", "-m", converted(), "-f", text.string(), "--json", "--ctx-window", "64", "--quant",
                          "nf4", "--kl-base", "bf16"});
  fs::remove(text);
  INFO(p.err);
  REQUIRE(p.code == 0);
  const json pj = json::parse(p.out);
  INFO(pj.dump());
  CHECK(pj["perplexity"].get<double>() > 1.0);
  CHECK(std::isfinite(pj["perplexity"].get<double>()));

  auto bench = test::run_cli({"bench", "-m", converted(), "--quant", "f32,nf4", "--prompt-len", "16", "--gen", "8",
                              "--repeats", "1", "--json"});
  INFO(bench.err);
  CHECK(bench.code == 0);
  CHECK_THAT(bench.out, Catch::Contains("nf4"));
}
