// End to end on the GPU: every fixture model's logits from the CUDA backend against the CPU
// backend's (prefill of whole prompts and token-by-token decode), in F32 (same arithmetic, so
// only summation order differs) and BF16 (same bf16-rounded weights on both sides), CUDA F32
// against transformers' goldens, and greedy continuations equal to the CPU's.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "backend/cpu_backend.h"
#include "backend/cuda_backend.h"
#include "generate/generate.h"
#include "io/safetensors.h"
#include "model/model.h"
#include "study/batch_generate.h"
#include "test_fixtures.h"
#include "test_util.h"
#include "tokenizer/tokenizer.h"

using namespace lowbit;
namespace fs = std::filesystem;
using test::fixture_models;
using test::Golden;
using test::read_golden;
using test::nmse;
using test::advance_greedy;
using test::decode_batch;

namespace {





float max_abs_diff(const std::vector<float>& a, const float* b) {
  float m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::fabs(a[i] - b[i]));
  return m;
}

std::vector<float> prefill_all_rows(Model& model, const std::vector<int32_t>& prompt) {
  TokenBatch b;
  std::vector<int> rows;
  for (size_t i = 0; i < prompt.size(); ++i) {
    b.tokens.push_back(prompt[i]);
    b.positions.push_back(int(i));
    b.slots.push_back(0);
    rows.push_back(int(i));
  }
  std::vector<float> logits(prompt.size() * size_t(model.config().vocab_size));
  model.forward(b, rows, logits.data());
  return logits;
}

}  // namespace

TEST_CASE("CUDA logits equal the CPU's for every fixture model (f32 and bf16)", "[gpu]") {
  CpuBackend cpu(0);
  CudaBackend gpu{CudaContextOptions{}};
  for (const auto& dir : fixture_models()) {
    for (Format f : {Format::F32, Format::BF16}) {
      DYNAMIC_SECTION(fs::path(dir).filename().string() << " " << format_name(f)) {
        Golden g = read_golden(dir);
        LoadOptions opts;
        opts.format = f;
        opts.max_context = 128;
        opts.max_batch_tokens = 64;
        auto cpu_model = Model::load(dir, cpu, opts);
        auto gpu_model = Model::load(dir, gpu, opts);
        CHECK(gpu_model->weight_bytes() == cpu_model->weight_bytes());
        const double bound = f == Format::F32 ? 1e-6 : 1e-3;
        const size_t vocab = size_t(cpu_model->config().vocab_size);
        for (size_t p = 0; p < g.prompts.size(); ++p) {
          const auto& prompt = g.prompts[p];
          auto cpu_logits = prefill_all_rows(*cpu_model, prompt);
          auto gpu_logits = prefill_all_rows(*gpu_model, prompt);
          INFO("prompt " << p << " (" << prompt.size() << " tokens) prefill");
          CHECK(nmse(gpu_logits, cpu_logits) < bound);
          if (f == Format::F32) CHECK(max_abs_diff(gpu_logits, g.logits[p].data()) < 1e-4f);  // transformers
          double worst = 0;
          float worst_golden = 0;
          for (size_t i = 0; i < prompt.size(); ++i) {
            if (!test::decode_checked(i, prompt.size())) continue;  // its KV entry stays the prefill's
            auto c = test::decode_logits(*cpu_model, prompt[i], int(i), 0);
            auto d = test::decode_logits(*gpu_model, prompt[i], int(i), 0);
            worst = std::max(worst, nmse(d, c));
            worst_golden = std::max(worst_golden, max_abs_diff(d, g.logits[p].data() + i * vocab));
          }
          INFO("prompt " << p << " decode: worst nmse " << worst << ", worst |gpu - transformers| " << worst_golden);
          CHECK(worst < bound);
          if (f == Format::F32) CHECK(worst_golden < 1e-4f);
        }
      }
    }
  }
}

TEST_CASE("CUDA greedy continuations equal the CPU's and transformers'", "[gpu]") {
  CpuBackend cpu(0);
  CudaBackend gpu{CudaContextOptions{}};
  for (const auto& dir : fixture_models()) {
    DYNAMIC_SECTION(fs::path(dir).filename().string()) {
      Golden g = read_golden(dir);
      LoadOptions opts;
      opts.max_context = 128;
      auto cpu_model = Model::load(dir, cpu, opts);
      auto gpu_model = Model::load(dir, gpu, opts);
      for (size_t p = 0; p < g.prompts.size(); ++p) {
        GenerationRequest req;
        req.prompt = g.prompts[p];
        req.sampling.temperature = 0;
        req.max_new_tokens = int(g.greedy[p].size());
        auto on_gpu = generate(*gpu_model, req, [](int32_t) { return true; });
        auto on_cpu = generate(*cpu_model, req, [](int32_t) { return true; });
        INFO("prompt " << p);
        CHECK(on_gpu.tokens == on_cpu.tokens);
        CHECK(on_gpu.tokens == g.greedy[p]);
      }
    }
  }
}

TEST_CASE("GPU sampling of a model's logits equals the CPU sampler", "[gpu]") {
  const auto dirs = fixture_models();
  REQUIRE(!dirs.empty());
  CudaBackend gpu{CudaContextOptions{}};
  LoadOptions opts;
  opts.max_context = 64;
  auto model = Model::load(dirs.front(), gpu, opts);
  Golden g = read_golden(dirs.front());
  auto logits = test::prefill_logits(*model, g.prompts.front(), 0);
  auto buf = gpu.alloc(logits.size(), "logits");
  gpu.upload(*buf, 0, logits.size(), logits.data());
  SamplingParams sp;
  sp.temperature = 0.9f;
  sp.top_k = 20;
  sp.top_p = 0.9f;
  sp.seed = 7;
  int mismatches = 0;
  for (uint64_t step = 0; step < 50; ++step)
    mismatches += gpu.sample(*buf, 0, int(logits.size()), sp, g.prompts.front(), step) !=
                  sample_token(logits, sp, g.prompts.front(), step);
  CHECK(mismatches == 0);
}

// Decode steps are recorded as CUDA graphs and replayed (Model::forward_chunk): the replayed
// steps' logits equal a CPU run step for step (F32), for one slot and for a batch of slots, and a
// recording exists afterwards, so the replay path is what ran.
TEST_CASE("decode steps replayed from CUDA graphs give the CPU's logits", "[gpu]") {
  const std::string dir = test::root_dir() + "/models/stories260K";
  CpuBackend cpu(0);
  CudaBackend gpu{CudaContextOptions{}};
  REQUIRE(gpu.can_record());  // LOWBIT_CUDA_GRAPHS=0 would turn this test into a no-op
  LoadOptions opts;
  opts.n_slots = 3;
  auto cpu_model = Model::load(dir, cpu, opts);
  auto gpu_model = Model::load(dir, gpu, opts);
  const size_t vocab = size_t(cpu_model->config().vocab_size);
  for (int n : {1, 3}) {
    std::vector<int> rows;
    TokenBatch step = decode_batch(n, 1, 0, &rows);
    std::vector<float> on_cpu(size_t(n) * vocab), on_gpu(size_t(n) * vocab);
    for (int i = 0; i < 12; ++i) {
      cpu_model->forward(step, rows, on_cpu.data());
      gpu_model->forward(step, rows, on_gpu.data());
      INFO("batch " << n << " step " << i);
      REQUIRE(nmse(on_gpu, on_cpu) < 1e-10);
      advance_greedy(step, on_cpu, vocab);
    }
    CHECK(gpu.has_recording(gpu_model.get(), n));
  }
  const void* owner = gpu_model.get();
  gpu_model.reset();  // drops its recordings
  CHECK_FALSE(gpu.has_recording(owner, 1));
  CHECK_FALSE(gpu.has_recording(owner, 3));
}

// --- end to end on stories260K, every format ----------------------------------------------------

namespace {

std::string stories_dir() { return test::root_dir() + "/models/stories260K"; }

// Greedy continuation of `prompt` for `n` tokens (no stop ids).
std::vector<int32_t> greedy(Model& model, const std::vector<int32_t>& prompt, int n) {
  GenerationRequest req;
  req.prompt = prompt;
  req.sampling.temperature = 0;
  req.max_new_tokens = n;
  return generate(model, req, [](int32_t) { return true; }).tokens;
}

// The CPU's logits after prompt + generated[0..k).
std::vector<float> logits_after(Model& model, std::vector<int32_t> prompt, const std::vector<int32_t>& generated,
                                size_t k) {
  prompt.insert(prompt.end(), generated.begin(), generated.begin() + std::ptrdiff_t(k));
  return test::prefill_logits(model, prompt, 0);
}

}  // namespace

// The same greedy tokens on CUDA as on the CPU in every format. The two backends multiply the
// same weight values with the same per-format activation arithmetic and differ only in summation
// order (and, on a GPU, FMA contraction), so a continuation may part only at a near-tie: where it
// does, the CPU's logits of the two candidate tokens must lie within 1e-3 of each other.
// 64 tokens on a GPU; 32 under emulation (minutes of emulated threads otherwise, and the kernels
// past the 32nd token are the ones before it, with more keys).
constexpr int kGreedyTokens = LOWBIT_EMULATED_GPU ? 32 : 64;

TEST_CASE("stories260K greedy tokens on CUDA equal the CPU's in every format", "[gpu]") {
  Tokenizer tok = Tokenizer::from_file(stories_dir() + "/tokenizer.json");
  const std::vector<int32_t> prompt = tok.encode("Once upon a time, there was a little", true);
  CpuBackend cpu(0);
  CudaBackend gpu{CudaContextOptions{}};
  int identical = 0;
  for (Format f : all_formats()) {
    LoadOptions opts;
    opts.format = f;
    opts.max_context = 256;
    auto cpu_model = Model::load(stories_dir(), cpu, opts);
    auto gpu_model = Model::load(stories_dir(), gpu, opts);
    const auto on_cpu = greedy(*cpu_model, prompt, kGreedyTokens), on_gpu = greedy(*gpu_model, prompt, kGreedyTokens);
    INFO("format " << format_name(f));
    REQUIRE(on_cpu.size() == on_gpu.size());
    size_t k = 0;
    while (k < on_cpu.size() && on_cpu[k] == on_gpu[k]) ++k;
    if (k == on_cpu.size()) {
      ++identical;
      continue;
    }
    const auto logits = logits_after(*cpu_model, prompt, on_cpu, k);
    const float gap = logits[size_t(on_cpu[k])] - logits[size_t(on_gpu[k])];
    INFO("first difference at token " << k << ": cpu " << on_cpu[k] << ", cuda " << on_gpu[k] << ", cpu logit gap "
                                      << gap);
    CHECK(gap <= 1e-3f);
  }
  WARN(identical << " of " << all_formats().size() << " formats gave identical " << kGreedyTokens
                 << "-token continuations");
  CHECK(identical >= 1);
}

TEST_CASE("stories260K f32 logits on CUDA are within 1e-4 of the CPU's", "[gpu]") {
  Tokenizer tok = Tokenizer::from_file(stories_dir() + "/tokenizer.json");
  const std::vector<int32_t> prompt = tok.encode("Lily and Tom went to the park to play with a red ball.", true);
  CpuBackend cpu(0);
  CudaBackend gpu{CudaContextOptions{}};
  LoadOptions opts;
  opts.max_context = 128;
  auto cpu_model = Model::load(stories_dir(), cpu, opts);
  auto gpu_model = Model::load(stories_dir(), gpu, opts);
  const auto on_cpu = prefill_all_rows(*cpu_model, prompt), on_gpu = prefill_all_rows(*gpu_model, prompt);
  CHECK(max_abs_diff(on_cpu, on_gpu.data()) < 1e-4f);
  for (size_t i = 0; i < prompt.size(); ++i) {
    auto c = test::decode_logits(*cpu_model, prompt[i], int(i), 0);
    auto d = test::decode_logits(*gpu_model, prompt[i], int(i), 0);
    INFO("decode step " << i);
    CHECK(max_abs_diff(c, d.data()) < 1e-4f);
  }
}

TEST_CASE("batched decode on CUDA gives each sequence its tokens alone", "[gpu]") {
  Tokenizer tok = Tokenizer::from_file(stories_dir() + "/tokenizer.json");
  CudaBackend gpu{CudaContextOptions{}};
  for (Format f : {Format::F32, Format::NF4, Format::W8A8}) {
    LoadOptions opts;
    opts.format = f;
    opts.max_context = 128;
    opts.n_slots = 3;
    auto model = Model::load(stories_dir(), gpu, opts);
    std::vector<GenerationRequest> requests;
    for (const char* p : {"Once upon a time", "The dog", "Lily saw a big", "One day, Tom"}) {
      GenerationRequest r;
      r.prompt = tok.encode(p, true);
      r.sampling.temperature = requests.size() % 2 ? 0.8f : 0.0f;
      r.sampling.top_k = 40;
      r.sampling.seed = 11 + requests.size();
      // Sequences that end at different steps (the batch shrinks); shorter under emulation.
      r.max_new_tokens = LOWBIT_EMULATED_GPU ? 6 + 3 * int(requests.size()) : 10 + 5 * int(requests.size());
      requests.push_back(r);
    }
    std::vector<std::vector<int32_t>> batched(requests.size());
    REQUIRE(study::generate_batched(
        *model, requests, [&](size_t i, const GenerationResult& r) { batched[i] = r.tokens; }, [] { return true; }));
    for (size_t i = 0; i < requests.size(); ++i) {
      auto alone = generate(*model, requests[i], [](int32_t) { return true; });
      INFO("format " << format_name(f) << " request " << i);
      CHECK(batched[i] == alone.tokens);
    }
  }
}

// Device sampling against sampler.h on a Llama-3-sized vocabulary: every mix of filters, many
// seeds. Only the order of parallel sums differs, so a draw can land differently only when u or
// a top-p/min-p cut falls within rounding of a boundary; the count is reported and must be ~0.
TEST_CASE("device sampling equals sampler.h on a 128,256-token vocabulary", "[gpu]") {
  CudaBackend gpu{CudaContextOptions{}};
  const int vocab = 128256;
  std::vector<float> logits = test::random_values(size_t(vocab), 128, 3.0f);
  logits[77] = logits[90000];  // a tie
  auto buf = gpu.alloc(size_t(vocab), "logits");
  gpu.upload(*buf, 0, size_t(vocab), logits.data());
  const std::vector<int32_t> history = {5, 77, 77, 1000, 128255};
  struct Mix {
    float t;
    int k;
    float p, min_p, rep;
  };
  const std::vector<Mix> mixes = {{0.0f, 0, 1.0f, 0.0f, 1.0f}, {0.0f, 0, 1.0f, 0.0f, 1.3f}, {1.0f, 0, 1.0f, 0.0f, 1.0f},
                                  {0.7f, 50, 1.0f, 0.0f, 1.0f}, {1.0f, 0, 0.9f, 0.0f, 1.0f}, {0.8f, 40, 0.95f, 0.05f, 1.2f},
                                  {1.2f, 0, 1.0f, 0.1f, 1.0f},  {0.6f, 1000, 0.5f, 0.0f, 1.1f}};
  int draws = 0, mismatches = 0;
  for (const Mix& m : mixes)
    for (uint64_t seed = 0; seed < 12; ++seed) {
      SamplingParams sp;
      sp.temperature = m.t;
      sp.top_k = m.k;
      sp.top_p = m.p;
      sp.min_p = m.min_p;
      sp.repetition_penalty = m.rep;
      sp.seed = 1000 + seed;
      const uint64_t step = seed * 7;
      ++draws;
      mismatches += gpu.sample(*buf, 0, vocab, sp, history, step) != sample_token(logits, sp, history, step);
    }
  WARN(mismatches << " of " << draws << " device draws differ from sampler.h");
  CHECK(mismatches == 0);
}

// The commands on the CUDA backend, through the binary.
TEST_CASE("lowbit run on CUDA: the CPU's greedy text, and the same tokens with graphs off", "[gpu]") {
  const std::vector<std::string> args = {"run", "-m", stories_dir(), "-p", "Once upon a time", "-n", "48",
                                         "--temperature", "0", "--quant", "f32", "-q", "--no-echo"};
  auto with = [&](const char* device, std::vector<std::string> env = {}) {
    std::vector<std::string> a = args;
    a.insert(a.end(), {"--device", device});
    return test::run_lowbit(a, env);
  };
  const auto cpu = with("cpu"), cuda = with("cuda"), eager = with("cuda", {"LOWBIT_CUDA_GRAPHS=0"});
  INFO("cpu stderr: " << cpu.err << "\ncuda stderr: " << cuda.err << "\neager stderr: " << eager.err);
  REQUIRE(cpu.code == 0);
  REQUIRE(cuda.code == 0);
  REQUIRE(eager.code == 0);
  CHECK(cpu.out.size() > 40);
  CHECK(cuda.out == cpu.out);
  CHECK(eager.out == cuda.out);
  // Sampled, in a quantized format: graphs on and off draw the same tokens.
  std::vector<std::string> sampled = {"run", "-m", stories_dir(), "-p", "The cat", "-n", "40", "--temperature",
                                      "0.9", "--top-k", "20", "--seed", "5", "--quant", "nf4", "--device", "cuda",
                                      "-q", "--json"};
  const auto g = test::run_lowbit(sampled), e = test::run_lowbit(sampled, {"LOWBIT_CUDA_GRAPHS=0"});
  REQUIRE(g.code == 0);
  REQUIRE(e.code == 0);
  CHECK(nlohmann::json::parse(g.out)["token_ids"] == nlohmann::json::parse(e.out)["token_ids"]);
}

TEST_CASE("sweep, batch and bench complete on CUDA", "[gpu]") {
  const fs::path dir = fs::temp_directory_path() / ("lowbit_gpu_cli_" + std::to_string(getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  const auto sweep = test::run_lowbit({"sweep", "-m", stories_dir(), "--device", "cuda", "--quant", "bf16,nf4,W8A8",
                                       "-p", "Once upon a time", "--temperature", "0,0.8", "--top-k", "10", "-n", "12",
                                       "-o", (dir / "runs.jsonl").string(), "-q"});
  INFO("sweep stderr: " << sweep.err);
  REQUIRE(sweep.code == 0);
  int records = 0;
  std::ifstream runs(dir / "runs.jsonl");
  for (std::string line; std::getline(runs, line);) {
    if (line.empty()) continue;
    auto j = nlohmann::json::parse(line);
    CHECK(j["device"].get<std::string>().rfind("cuda", 0) == 0);
    CHECK(j["generated_tokens"].get<int>() > 0);
    ++records;
  }
  CHECK(records == 6);

  {
    std::ofstream in(dir / "prompts.jsonl");
    in << R"({"id": "a", "prompt": "Once upon a time"})" << "\n"
       << R"({"id": "b", "prompt": "The dog", "temperature": 0.7})" << "\n"
       << R"({"id": "c", "prompt": "Lily", "max_new_tokens": 5})" << "\n";
  }
  const auto batch = test::run_lowbit({"batch", "-m", stories_dir(), "--device", "cuda", "--quant", "fp4-dq", "--input",
                                       (dir / "prompts.jsonl").string(), "--output", (dir / "out.jsonl").string(),
                                       "--batch-size", "2", "-n", "10", "-q"});
  INFO("batch stderr: " << batch.err);
  REQUIRE(batch.code == 0);
  const std::string results = test::slurp(dir / "out.jsonl");
  CHECK(std::count(results.begin(), results.end(), '\n') == 3);

  const auto bench = test::run_lowbit({"bench", "-m", stories_dir(), "--device", "cuda", "--quant", "bf16,int8",
                                       "--prompt-len", "8", "--gen", "8", "--repeats", "1", "--json", "-q"},
                                      {"LOWBIT_EMU_DEVICE_MEMORY_MIB=2048"});  // emulated: a small bandwidth copy
  INFO("bench stderr: " << bench.err);
  REQUIRE(bench.code == 0);
  CHECK(bench.out.find("bf16") != std::string::npos);
  fs::remove_all(dir);
}
