// The forward pass against transformers: fp32 logits of every fixture model within 1e-4 of
// transformers' (prefill and token-by-token decode), identical greedy continuations, and
// stories260K's greedy text from BOS equal to llama2.c's published output.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <set>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <span>
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
                           "falcon-40b-style", "falcon-mha-bias", "llama-untidy", "falcon-untidy"})
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
          auto step = test::decode_logits(*model, prompt[i], int(i), 0);
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
    const auto expected = reference(prefill_batch(prompt, 0), rows, specs);
    CHECK(model->forward_sample(prefill_batch(prompt, 0), rows, specs) == expected);
    differing_draws += expected.size() > 1 && expected[0] != expected[1];
  }
  CHECK(differing_draws > 0);  // different rows and steps did draw different ids

  // Decode steps over two slots, fed with the sampled ids.
  (void)model->forward_sample(prefill_batch(prompt, 0), {19}, std::vector<SampleSpec>{{sp, prompt, 0}});
  (void)model->forward_sample(prefill_batch(prompt, 1), {19}, std::vector<SampleSpec>{{sp, prompt, 0}});
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

namespace {

// A CPU backend that records like a CUDA graph: between begin_recording and end_recording each
// op is stored (its arguments as given) instead of run, set_batch only keeps the host copy, and
// replay runs the stored ops on whatever the last set_batch gave. It checks Model's record /
// replay logic on a machine without a GPU; `refuse` makes end_recording fail as a device may.
class RecordingCpuBackend final : public Backend {
 public:
  CpuBackend cpu{1};
  bool refuse = false;
  int recordings = 0, replays = 0, eager_ops = 0;

  std::string name() const override { return "recording-cpu"; }
  std::unique_ptr<DeviceBuffer> alloc(size_t n, const std::string& what) override {
    REQUIRE(recording_ == nullptr);  // nothing may allocate while recording
    return cpu.alloc(n, what);
  }
  std::unique_ptr<DeviceLinear> upload_linear(LinearWeight w, std::vector<float> bias) override {
    return cpu.upload_linear(std::move(w), std::move(bias));
  }
  std::unique_ptr<DeviceNorm> upload_norm(std::vector<float> w, std::vector<float> b) override {
    return cpu.upload_norm(std::move(w), std::move(b));
  }
  std::unique_ptr<KvCache> alloc_kv_cache(int layers, int slots, int ctx, int kv_dim, KvDtype dtype) override {
    return cpu.alloc_kv_cache(layers, slots, ctx, kv_dim, dtype);
  }
  void download(const DeviceBuffer& src, size_t offset, size_t n, float* dst) override {
    REQUIRE(recording_ == nullptr);
    cpu.download(src, offset, n, dst);
  }
  void set_rope(std::vector<float> f) override { cpu.set_rope(std::move(f)); }
  void set_batch(const TokenBatch& b) override {
    if (recording_ == nullptr) cpu.set_batch(b);
  }
  void embed(const DeviceLinear& t, DeviceBuffer& out) override {
    op([&t, &out, this] { cpu.embed(t, out); });
  }
  void norm(const DeviceBuffer& x, const DeviceNorm& w, NormKind k, float eps, int dim, DeviceBuffer& out) override {
    op([&x, &w, k, eps, dim, &out, this] { cpu.norm(x, w, k, eps, dim, out); });
  }
  void add_norm(DeviceBuffer& r, const DeviceBuffer& d, const DeviceNorm& w, NormKind k, float eps, int dim,
                DeviceBuffer& out) override {
    op([&r, &d, &w, k, eps, dim, &out, this] { cpu.add_norm(r, d, w, k, eps, dim, out); });
  }
  void gather_rows(const DeviceBuffer& src, const std::vector<int>& rows, int dim, DeviceBuffer& dst) override {
    op([&src, rows, dim, &dst, this] { cpu.gather_rows(src, rows, dim, dst); });
  }
  void add(DeviceBuffer& x, const DeviceBuffer& y, int dim) override {
    op([&x, &y, dim, this] { cpu.add(x, y, dim); });
  }
  void matmul(const DeviceLinear& w, const DeviceBuffer& x, DeviceBuffer& y) override {
    op([&w, &x, &y, this] { cpu.matmul(w, x, y); });
  }
  void rope(DeviceBuffer& qkv, const AttentionShape& s) override {
    op([&qkv, s, this] { cpu.rope(qkv, s); });
  }
  void attention(const DeviceBuffer& qkv, KvCache& c, int layer, const AttentionShape& s, DeviceBuffer& out) override {
    op([&qkv, &c, layer, s, &out, this] { cpu.attention(qkv, c, layer, s, out); });
  }
  void activation(const DeviceBuffer& gu, Activation a, int hidden, DeviceBuffer& out) override {
    op([&gu, a, hidden, &out, this] { cpu.activation(gu, a, hidden, out); });
  }
  void head(const DeviceBuffer& x, const std::vector<int>& rows, const DeviceNorm& w, NormKind k, float eps, int dim,
            const DeviceLinear& h, DeviceBuffer& gathered, DeviceBuffer& normed, DeviceBuffer& logits) override {
    op([&x, rows, &w, k, eps, dim, &h, &gathered, &normed, &logits, this] {
      cpu.head(x, rows, w, k, eps, dim, h, gathered, normed, logits);
    });
  }
  void synchronize() override {}
  int32_t sample(const DeviceBuffer& l, size_t row, int vocab, const SamplingParams& p, std::span<const int32_t> h,
                 uint64_t step) override {
    REQUIRE(recording_ == nullptr);
    return cpu.sample(l, row, vocab, p, h, step);
  }
  double copy_bandwidth_gbs() override { return 1.0; }
  size_t peak_memory_bytes() const override { return cpu.peak_memory_bytes(); }

  bool can_record() const override { return true; }
  bool has_recording(const void* owner, int n) const override { return graphs_.count({owner, n}) != 0; }
  void begin_recording(const void* owner, int n) override {
    REQUIRE(recording_ == nullptr);
    key_ = {owner, n};
    recording_ = std::make_unique<std::vector<std::function<void()>>>();
  }
  void end_recording() override {
    auto ops = std::move(recording_);
    if (refuse) throw DeviceError("recording refused (test)");
    graphs_[key_] = std::move(*ops);
    ++recordings;
  }
  void abort_recording() override { recording_.reset(); }
  void replay(const void* owner, int n) override {
    ++replays;
    for (auto& f : graphs_.at({owner, n})) f();
  }
  void drop_recordings(const void* owner) override {
    std::erase_if(graphs_, [owner](const auto& kv) { return kv.first.first == owner; });
  }

 private:
  void op(std::function<void()> f) {
    if (recording_ != nullptr) {
      recording_->push_back(std::move(f));
    } else {
      ++eager_ops;
      f();
    }
  }
  std::unique_ptr<std::vector<std::function<void()>>> recording_;
  std::pair<const void*, int> key_;
  std::map<std::pair<const void*, int>, std::vector<std::function<void()>>> graphs_;
};

}  // namespace

// Model::forward_chunk records a decode step on its second occurrence per batch size and replays
// it after set_batch: the logits equal a plain CPU run step for step (one slot and two slots,
// greedy feeding), prefill is never recorded, and a refused recording falls back to eager steps.
TEST_CASE("recorded decode steps replay to the same logits; a refused recording runs eagerly", "[model]") {
  const std::string dir = test::root_dir() + "/models/stories260K";
  LoadOptions opts;
  opts.n_slots = 2;
  for (bool refuse : {false, true}) {
    INFO((refuse ? "recording refused" : "recording accepted"));
    CpuBackend plain(1);
    RecordingCpuBackend rec;
    rec.refuse = refuse;
    auto reference = Model::load(dir, plain, opts);
    auto model = Model::load(dir, rec, opts);
    const size_t vocab = size_t(model->config().vocab_size);
    const std::vector<int32_t> prompt{1, 403, 407, 261, 378};
    for (int slot : {0, 1}) {
      TokenBatch b;
      for (size_t i = 0; i < prompt.size(); ++i) {
        b.tokens.push_back(prompt[i] + slot);
        b.positions.push_back(int32_t(i));
        b.slots.push_back(slot);
      }
      std::vector<float> want(vocab), got(vocab);
      reference->forward(b, {b.size() - 1}, want.data());
      model->forward(b, {b.size() - 1}, got.data());
      REQUIRE(got == want);
    }
    CHECK(rec.recordings == 0);  // prefill is not a decode step
    for (int n : {1, 2, 1}) {    // batch size 1 again: its recording is reused
      std::vector<int> rows;
      TokenBatch step = test::decode_batch(n, 5, int32_t(prompt.size()), &rows);
      std::vector<float> want(size_t(n) * vocab), got(size_t(n) * vocab);
      for (int i = 0; i < 6; ++i) {
        reference->forward(step, rows, want.data());
        model->forward(step, rows, got.data());
        INFO("batch " << n << " step " << i);
        REQUIRE(got == want);
        test::advance_greedy(step, want, vocab);
      }
    }
    if (refuse) {
      CHECK(rec.recordings == 0);
      CHECK(rec.replays == 0);
    } else {
      CHECK(rec.recordings == 2);       // sizes 1 and 2, each once
      CHECK(rec.replays == 5 + 5 + 6);  // every step after the first eager one of its size
      CHECK(rec.has_recording(model.get(), 1));
      const void* owner = model.get();
      model.reset();
      CHECK_FALSE(rec.has_recording(owner, 1));
    }
  }
}

// The stop rules of every generation loop (generate/generate.h take_token), in their order: a
// stop id, then the caller's interrupt, then a stop string, then max_new_tokens, then the context.
TEST_CASE("take_token applies the stop rules in order", "[model][generate]") {
  CpuBackend backend(1);
  LoadOptions opts;
  opts.max_context = 8;
  auto model = Model::load(test::data_dir() + "/models/llama-gqa-tied", backend, opts);
  GenerationRequest req;
  req.prompt = {1, 2, 3};
  req.max_new_tokens = 3;
  req.stop_ids = {7};
  bool stop_string = false;
  req.stop_after = [&stop_string](std::span<const int32_t>) { return stop_string; };
  auto taken = [&](int32_t tok, bool keep_going, bool matched, int position = 3) {
    Sequence s(req, 0);
    s.position = position;
    stop_string = matched;
    const bool done = take_token(*model, s, tok, keep_going);
    CHECK(s.result.tokens == std::vector<int32_t>{tok});
    CHECK(s.history.back() == tok);
    return done ? std::optional<StopReason>(s.result.stop) : std::nullopt;
  };
  CHECK(taken(7, false, true) == StopReason::eos);
  CHECK(taken(5, false, true) == StopReason::interrupted);
  CHECK(taken(5, true, true) == StopReason::stop_string);
  CHECK(taken(5, true, false) == std::nullopt);
  CHECK(taken(5, true, false, 8) == StopReason::context);  // the next token would go past the cache
  Sequence s(req, 0);
  for (int32_t tok : {4, 5}) CHECK_FALSE(take_token(*model, s, tok));
  CHECK(take_token(*model, s, 6));
  CHECK(s.result.stop == StopReason::length);
  CHECK(s.result.tokens == std::vector<int32_t>{4, 5, 6});

  // generate() is prefill, decode_step and take_token: the same tokens as the loop written out.
  req.stop_after = nullptr;
  req.stop_ids = {};
  req.max_new_tokens = 4;
  req.sampling.temperature = 0.9f;
  req.sampling.seed = 3;
  const GenerationResult g = generate(*model, req, [](int32_t) { return true; });
  Sequence by_hand(req, 0);
  Sequence* const one[] = {&by_hand};
  for (int32_t tok = prefill(*model, by_hand); !take_token(*model, by_hand, tok);) tok = decode_step(*model, one)[0];
  CHECK(g.tokens == by_hand.result.tokens);
  CHECK(g.tokens.size() == 4);
  CHECK(g.stop == StopReason::length);
}
