// Sweeps, batch generation and the study report: grid parsing, quality metrics, crash-safe JSONL,
// batched decode equal to one-at-a-time decode, `lowbit batch` killed and resumed, shards, and the
// HTML report rendered by a real browser.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "backend/cpu_backend.h"
#include "core/error.h"
#include "core/progress.h"
#include "core/sha256.h"
#include "generate/generate.h"
#include "io/safetensors.h"
#include "model/model.h"
#include "study/batch_generate.h"
#include "study/grid.h"
#include "study/host.h"
#include "study/jsonl.h"
#include "study/metrics.h"
#include "study/report.h"
#include "test_util.h"
#include "tokenizer/tokenizer.h"


extern char** environ;

namespace fs = std::filesystem;
using lowbit::test::data_dir;
using lowbit::test::lowbit_bin;
using lowbit::test::root_dir;
using lowbit::test::run_lowbit;
using lowbit::test::RunResult;
using nlohmann::json;
using namespace lowbit;
using namespace lowbit::study;

using lowbit::test::slurp;

namespace {

fs::path temp_dir(const std::string& name) {
  fs::path d = fs::temp_directory_path() / ("lowbit_study_" + std::to_string(getpid()) + "_" + name);
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

std::string stories() { return root_dir() + "/models/stories260K"; }

// Starts a program with stdout and stderr sent to `log`; returns its pid.
pid_t spawn(const std::vector<std::string>& args, const fs::path& log) {
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  pid_t pid = -1;
  int rc = posix_spawnp(&pid, argv[0], &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  REQUIRE(rc == 0);
  return pid;
}

// Exit code, or 128 + signal for a killed process.
int wait_for(pid_t pid) {
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

size_t count_lines(const fs::path& p) {
  std::string s = slurp(p);
  return size_t(std::count(s.begin(), s.end(), '\n'));
}

// id (as JSON text) -> text; fails on duplicates and on any line that is not whole JSON.
std::map<std::string, std::string> results_by_id(const fs::path& p) {
  std::string s = slurp(p);
  REQUIRE((s.empty() || s.back() == '\n'));
  std::map<std::string, std::string> out;
  std::istringstream in(s);
  std::string line;
  while (std::getline(in, line)) {
    json j = json::parse(line);
    INFO("duplicate id " << j["id"].dump());
    CHECK(out.emplace(j["id"].dump(), j["text"].get<std::string>()).second);
  }
  return out;
}

void write_prompts(const fs::path& p, int n, int max_new_tokens) {
  const char* starts[] = {"Once upon a time", "The little dog", "Lily and Tom", "One day", "The sun was"};
  std::ofstream out(p);
  for (int i = 0; i < n; ++i) {
    // Ids of both kinds; the string one is appended, not concatenated (a GCC 12 -Wrestrict false positive).
    std::string text_id = "r";
    text_id.append(std::to_string(i));
    json j{{"id", i % 3 == 0 ? json(text_id) : json(i)}, {"prompt", starts[i % 5]}, {"max_new_tokens", max_new_tokens}};
    if (i % 2 == 1) j["temperature"] = 0.8;  // the rest use the flag default (greedy)
    out << j.dump() << "\n";
  }
}

std::vector<json> records_of(const fs::path& p) {
  std::vector<json> out;
  for (auto& r : read_jsonl(p.string(), false)) out.push_back(r.value);
  return out;
}

void write_text(const fs::path& p, const std::string& text) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out << text;
}

// Every grid point of a runs file (greedy records expanded) -> what it produced and scored.
std::map<std::string, std::string> grid_points(const fs::path& p) {
  std::map<std::string, std::string> out;
  for (const json& r : records_of(p)) {
    std::vector<json> points;
    if (r.contains("stands_for")) {
      for (const json& s : r["stands_for"]) {
        json point = r;
        for (const auto& [k, v] : s.items()) point[k] = v;
        points.push_back(point);
      }
    } else {
      points.push_back(r);
    }
    for (const json& v : points) {
      const std::string key = json::array({v["prompt_id"], v["quant"], v["temperature"], v["top_k"], v["top_p"],
                                           v["min_p"], v["repetition_penalty"], v["max_new_tokens"], v["seed"]})
                                  .dump();
      const std::string result = json::array({v["token_ids"], v["text"], v["token_agreement"], v["rouge_l_f1"],
                                              v["ref_mean_logprob"], v["implicit_reference"]})
                                     .dump();
      INFO("duplicate grid point " << key);
      CHECK(out.emplace(key, result).second);
    }
  }
  return out;
}

// A small sweep (nf4 and bf16, 2 prompts, T 0 and 0.8 x top-k 1 and 40 x seeds 0 and 1); `extra`
// flags replace the defaults of the same name or are added.
std::vector<std::string> sweep_args(const fs::path& out, const std::vector<std::string>& extra) {
  std::vector<std::pair<std::string, std::string>> flags{{"-m", stories()},         {"-t", "1"},
                                                         {"--quant", "nf4"},        {"--temperature", "0,0.8"},
                                                         {"--top-k", "1,40"},       {"--seed", "0,1"},
                                                         {"-n", "16"},              {"-o", out.string()}};
  std::vector<std::string> switches;
  for (size_t i = 0; i < extra.size(); ++i) {
    const bool has_value = i + 1 < extra.size() && extra[i + 1].rfind("--", 0) != 0;
    if (!has_value) {
      switches.push_back(extra[i]);
      continue;
    }
    auto it = std::find_if(flags.begin(), flags.end(), [&](const auto& f) { return f.first == extra[i]; });
    if (it != flags.end())
      it->second = extra[i + 1];
    else
      flags.emplace_back(extra[i], extra[i + 1]);
    ++i;
  }
  std::vector<std::string> a{"sweep", "-p", "Once upon a time", "-p", "The little dog"};
  for (const auto& [k, v] : flags) a.insert(a.end(), {k, v});
  a.insert(a.end(), switches.begin(), switches.end());
  return a;
}

std::string sha256_of_config() { return sha256_hex(slurp(fs::path(stories()) / "config.json")); }

template <class F>
std::string usage_error_of(F&& f) {
  try {
    f();
  } catch (const UsageError& e) {
    return e.what();
  }
  return "(no UsageError)";
}

}  // namespace

// ---------------------------------------------------------------------------------------------
TEST_CASE("grid lists: values, ranges with float steps, integers", "[study][grid]") {
  auto t = parse_float_list("--temperature", "0:1:0.1");
  REQUIRE(t.size() == 11);
  CHECK(t[3] == 0.3);  // rounded onto the grid, not 0.30000000000000004
  CHECK(t.back() == 1.0);
  CHECK(parse_float_list("--top-p", "0.9:1:0.05") == std::vector<double>{0.9, 0.95, 1.0});
  CHECK(parse_float_list("--top-p", "0:1:0.3") == std::vector<double>{0, 0.3, 0.6, 0.9});  // 1 is off the grid
  CHECK(parse_float_list("--temperature", "0, 0.5:1:0.25") == std::vector<double>{0, 0.5, 0.75, 1});
  CHECK(parse_float_list("--temperature", "0.7") == std::vector<double>{0.7});
  CHECK(parse_int_list("--top-k", "1,10,50") == std::vector<int64_t>{1, 10, 50});
  CHECK(parse_int_list("--max-new-tokens", "16:64:16") == std::vector<int64_t>{16, 32, 48, 64});
  CHECK(parse_int_list("--seed", "1:10:3,20") == std::vector<int64_t>{1, 4, 7, 10, 20});
  CHECK(parse_name_list("--quant", "bf16, nf4,fp4-dq") == std::vector<std::string>{"bf16", "nf4", "fp4-dq"});
}

TEST_CASE("bad grid specs are usage errors naming the flag", "[study][grid]") {
  for (const char* bad : {"", "1,,2", "a", "1:2", "1:2:3:4", "0:1:0", "0:1:-0.1", "1:0:0.1", "0.5,0.5", "0:1e9:1e-9",
                          "0:1:x", "inf"}) {
    INFO(bad);
    CHECK(usage_error_of([&] { parse_float_list("--temperature", bad); }).find("--temperature") == 0);
  }
  for (const char* bad : {"0.5", "1:10:0.5", "1.5:3:1", ""}) {
    INFO(bad);
    CHECK(usage_error_of([&] { parse_int_list("--top-k", bad); }).find("--top-k") == 0);
  }
  CHECK(usage_error_of([] { parse_name_list("--quant", "nf4,nf4"); }).find("--quant") == 0);
  SweepAxes a{{0.5}, {1.5}, {0}, {16}, {0}, 1};
  CHECK(usage_error_of([&] { validate_axes(a); }).find("--top-p") == 0);
  a.top_p = {1};
  a.temperature = {-0.1};
  CHECK(usage_error_of([&] { validate_axes(a); }).find("--temperature") == 0);
  a.temperature = {0};
  a.max_new_tokens = {0};
  CHECK(usage_error_of([&] { validate_axes(a); }).find("--max-new-tokens") == 0);
  a.max_new_tokens = {8};
  a.repeats = 0;
  CHECK(usage_error_of([&] { validate_axes(a); }).find("--repeats") == 0);
}

TEST_CASE("grid expansion: cartesian product, repeats get seed + r", "[study][grid]") {
  SweepAxes a{{0, 0.5, 1}, {1}, {10, 50}, {16, 32}, {7, 100}, 3};
  validate_axes(a);
  auto g = expand_grid(a);
  REQUIRE(g.size() == 3 * 2 * 1 * 2 * 2 * 3);
  CHECK(g[0].temperature == 0);
  CHECK(g[0].seed == 7);
  CHECK(g[1].seed == 8);
  CHECK(g[1].repeat == 1);
  CHECK(g[2].seed == 9);
  CHECK(g[2].base_seed == 7);
  CHECK(g[3].seed == 100);
  CHECK(g.back().temperature == 1);
  CHECK(g.back().top_k == 50);
  CHECK(g.back().max_new_tokens == 32);
  CHECK(g.back().seed == 102);
  std::set<std::tuple<double, int, int, uint64_t>> unique;
  for (const auto& s : g) unique.insert({s.temperature, s.top_k, s.max_new_tokens, s.seed});
  CHECK(unique.size() == g.size());
}

// ---------------------------------------------------------------------------------------------
TEST_CASE("token agreement and first divergence", "[study][metrics]") {
  std::vector<int32_t> a{1, 2, 3, 4}, b{1, 2, 5, 4, 9}, c{1, 2}, empty;
  auto ab = token_agreement(a, b);
  CHECK(ab.fraction == 0.75);  // 3 of the first 4 positions
  CHECK(ab.first_divergence == 2);
  auto aa = token_agreement(a, a);
  CHECK(aa.fraction == 1);
  CHECK(aa.first_divergence == -1);
  auto ac = token_agreement(a, c);  // a prefix: agreement 1, diverges where c ends
  CHECK(ac.fraction == 1);
  CHECK(ac.first_divergence == 2);
  CHECK(token_agreement(empty, empty).fraction == 1);
  CHECK(token_agreement(empty, a).fraction == 0);
  CHECK(token_agreement(empty, a).first_divergence == 0);
}

TEST_CASE("ROUGE-L F1 on whitespace words", "[study][metrics]") {
  // LCS(the cat sat on the mat, the cat on a mat) = the cat on mat = 4; P = 4/5, R = 4/6.
  double p = 4.0 / 5, r = 4.0 / 6;
  CHECK(rouge_l_f1("the cat sat on the mat", "the cat on a mat") == Approx(2 * p * r / (p + r)).epsilon(1e-12));
  CHECK(rouge_l_f1("a b c", "  a\tb\nc ") == 1);
  CHECK(rouge_l_f1("a b c", "d e") == 0);
  CHECK(rouge_l_f1("", "") == 1);
  CHECK(rouge_l_f1("a", "") == 0);
  // LCS is order-sensitive: "b a" vs "a b" share one word in order. P = R = 1/2.
  CHECK(rouge_l_f1("a b", "b a") == Approx(0.5));
  std::vector<std::string_view> x{"a", "b", "c", "b", "d", "a", "b"}, y{"b", "d", "c", "a", "b", "a"};
  CHECK(lcs_length(x, y) == 4);  // the textbook (CLRS) example: b c b a
}

TEST_CASE("distinct-n and log-softmax", "[study][metrics]") {
  std::vector<int32_t> ids{1, 2, 1, 2, 3};
  CHECK(distinct_n(ids, 1) == Approx(3.0 / 5));
  CHECK(distinct_n(ids, 2) == Approx(3.0 / 4));  // (1,2) (2,1) (1,2) (2,3)
  CHECK(distinct_n(ids, 6) == 0);
  CHECK(distinct_n(std::vector<int32_t>{7, 7, 7}, 1) == Approx(1.0 / 3));
  std::vector<float> logits{0, 0};
  CHECK(log_softmax_at(logits, 0) == Approx(-std::log(2.0)));
  std::vector<float> big{1000, 0, -1000};  // stable for large logits
  CHECK(log_softmax_at(big, 0) == Approx(0).margin(1e-12));
  CHECK(log_softmax_at(big, 1) == Approx(-1000).epsilon(1e-9));
}

TEST_CASE("progress lines: bar, rate, ETA", "[study][progress]") {
  std::string line = format_progress("sweep", 5, 10, "runs", 1.0, 10);
  CHECK(line.find("[#####-----]") != std::string::npos);
  CHECK(line.find("5/10 runs") != std::string::npos);
  CHECK(line.find("5.00 runs/s") != std::string::npos);
  CHECK(line.find("ETA 1s") != std::string::npos);
  CHECK(format_progress("x", 0, 10, "runs", 0, 0).find('[') == std::string::npos);
  CHECK(format_duration(125) == "2m05s");
  CHECK(format_duration(3725) == "1h02m");
}

// ---------------------------------------------------------------------------------------------
TEST_CASE("JSONL: whole lines, torn tails cut, malformed lines named by line number", "[study][jsonl]") {
  fs::path dir = temp_dir("jsonl");
  fs::path p = dir / "out.jsonl";
  {
    JsonlAppender out(p.string(), true);
    out.append({{"id", 1}, {"text", "a\nb"}});
    out.append({{"id", "two"}, {"text", std::string("bad utf8 \xff")}});
  }
  CHECK(count_lines(p) == 2);
  CHECK(truncate_torn_tail(p.string()) == 0);
  { std::ofstream(p, std::ios::app) << "{\"id\": 3, \"te"; }
  CHECK(read_jsonl(p.string(), true).size() == 2);
  CHECK_THROWS_AS(read_jsonl(p.string(), false), InputError);
  CHECK(truncate_torn_tail(p.string()) == 13);
  CHECK(read_jsonl(p.string(), false).size() == 2);
  { std::ofstream(p, std::ios::app) << "not json\n{\"id\": 4}\n"; }
  try {
    read_jsonl(p.string(), false);
    FAIL("no error");
  } catch (const InputError& e) {
    CHECK(std::string(e.what()).find(p.string() + ":3:") != std::string::npos);
  }
}

// ---------------------------------------------------------------------------------------------
TEST_CASE("batched decode gives the same tokens as decoding each sequence alone", "[study][batch]") {
  const std::string dir = stories();
  Tokenizer tok = Tokenizer::from_file(dir + "/tokenizer.json");
  std::vector<GenerationRequest> requests;
  const char* prompts[] = {"Once upon a time", "The little dog", "Lily", "One day, a girl named Sue", "The sun"};
  for (int i = 0; i < 7; ++i) {
    GenerationRequest r;
    r.prompt = tok.encode(prompts[i % 5], true);
    r.sampling.temperature = i % 3 == 0 ? 0.0f : 0.9f;
    r.sampling.top_k = i % 2 ? 0 : 40;
    r.sampling.top_p = i == 4 ? 0.9f : 1.0f;
    r.sampling.seed = uint64_t(100 + i);
    r.max_new_tokens = 10 + 7 * i;  // different lengths, so slots are refilled mid-batch
    r.stop_ids = {2};
    requests.push_back(r);
  }
  // int8 is left out on purpose: its outlier columns depend on the whole batch (batch_generate.h).
  for (Format f : {Format::F32, Format::BF16, Format::NF4, Format::W8A8}) {
    CpuBackend backend(2);
    LoadOptions single_opts;
    single_opts.format = f;
    auto single = Model::load(dir, backend, single_opts);
    LoadOptions batched_opts = single_opts;
    batched_opts.n_slots = 3;
    auto batched = Model::load(dir, backend, batched_opts);
    std::vector<GenerationResult> got(requests.size());
    std::vector<size_t> order;
    bool complete = generate_batched(
        *batched, requests,
        [&](size_t i, const GenerationResult& r) {
          got[i] = r;
          order.push_back(i);
        },
        [] { return true; });
    REQUIRE(complete);
    REQUIRE(order.size() == requests.size());
    for (size_t i = 0; i < requests.size(); ++i) {
      INFO("format " << format_name(f) << ", request " << i);
      GenerationResult alone = generate(*single, requests[i], [](int32_t) { return true; });
      CHECK(got[i].tokens == alone.tokens);
      CHECK(got[i].stop == alone.stop);
    }
  }
}

// ---------------------------------------------------------------------------------------------
TEST_CASE("lowbit batch: killed with SIGKILL, resumed, equals an uninterrupted run", "[study][batch][cli]") {
  fs::path dir = temp_dir("resume");
  fs::path input = dir / "prompts.jsonl";
  write_prompts(input, 120, 100);
  const std::vector<std::string> common{"batch", "-m", stories(), "-t", "1", "--input", input.string()};

  auto args = [&](const fs::path& out, std::vector<std::string> extra) {
    std::vector<std::string> a = common;
    a.insert(a.begin(), lowbit_bin());
    a.push_back("--output");
    a.push_back(out.string());
    a.insert(a.end(), extra.begin(), extra.end());
    return a;
  };

  fs::path full = dir / "full.jsonl";
  REQUIRE(wait_for(spawn(args(full, {"--batch-size", "4"}), dir / "full.log")) == 0);
  auto expected = results_by_id(full);
  REQUIRE(expected.size() == 120);

  // Kill as soon as a few records are out, so the run dies in the middle of its work.
  fs::path out = dir / "resumed.jsonl";
  pid_t pid = spawn(args(out, {"--batch-size", "4"}), dir / "killed.log");
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while ((!fs::exists(out) || count_lines(out) < 2) && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  kill(pid, SIGKILL);
  CHECK(wait_for(pid) == 128 + SIGKILL);
  size_t before = count_lines(out);
  INFO("lines before resume: " << before);
  CHECK(before >= 2);
  CHECK(before < 120);
  // A torn last line, as a kill during write() would leave it: resume must cut it off.
  { std::ofstream(out, std::ios::app) << "{\"id\": \"r0\", \"text\": \"tor"; }

  RunResult resumed = run_lowbit({"batch", "-m", stories(), "-t", "1", "--input", input.string(), "--output", out.string(),
                            "--resume", "--batch-size", "3"});
  INFO(resumed.log());
  REQUIRE(resumed.code == 0);
  CHECK(resumed.log().find("torn") != std::string::npos);
  CHECK(results_by_id(out) == expected);

  // Resuming a complete file does nothing.
  RunResult again = run_lowbit({"batch", "-m", stories(), "--input", input.string(), "--output", out.string(), "--resume"});
  CHECK(again.code == 0);
  CHECK(count_lines(out) == 120);
}

TEST_CASE("lowbit batch: SIGTERM stops with exit 130 and a whole, resumable file", "[study][batch][cli]") {
  fs::path dir = temp_dir("sigterm");
  fs::path input = dir / "prompts.jsonl", out = dir / "out.jsonl";
  write_prompts(input, 120, 100);
  pid_t pid = spawn({lowbit_bin(), "batch", "-m", stories(), "-t", "1", "--input", input.string(), "--output",
                     out.string()},
                    dir / "term.log");
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while ((!fs::exists(out) || count_lines(out) < 2) && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  kill(pid, SIGTERM);
  int code = wait_for(pid);
  INFO(slurp(dir / "term.log"));
  CHECK(code == 130);
  size_t done = results_by_id(out).size();  // every line whole, no duplicates
  CHECK(done < 120);
  RunResult resumed = run_lowbit({"batch", "-m", stories(), "--input", input.string(), "--output", out.string(), "--resume"});
  CHECK(resumed.code == 0);
  CHECK(results_by_id(out).size() == 120);
}

// Run key -> what the run produced and how it scored against bf16; fails on duplicate runs and
// on any line that is not whole JSON.
std::map<std::string, std::string> sweep_runs(const fs::path& p) {
  std::map<std::string, std::string> out;
  for (auto& r : read_jsonl(p.string(), false)) {
    const json& v = r.value;
    // A greedy record stands for several grid points: it is keyed by its own settings here.
    std::string key = json::array({v["prompt_id"], v["quant"], v["temperature"], v["top_k"], v["seed"]}).dump();
    std::string result = json::array({v["token_ids"], v["text"], v["token_agreement"], v["rouge_l_f1"],
                                      v["ref_mean_logprob"], v["implicit_reference"]})
                             .dump();
    INFO("duplicate run " << key);
    CHECK(out.emplace(key, result).second);
  }
  return out;
}

TEST_CASE("lowbit sweep: SIGINT leaves whole lines, --resume completes it to the uninterrupted result",
          "[study][sweep][cli]") {
  fs::path dir = temp_dir("sweep-resume");
  const std::vector<std::string> grid{"sweep", "-m", stories(), "-t", "1", "--quant", "nf4,int8", "--temperature",
                                      "0,0.7,1", "--top-k", "1,40", "-n", "64", "-p", "Once upon a time", "-p",
                                      "The little dog"};
  auto args = [&](const fs::path& out, bool resume) {  // without the program, as run_lowbit wants them
    std::vector<std::string> a = grid;
    a.push_back("-o");
    a.push_back(out.string());
    if (resume) a.push_back("--resume");
    return a;
  };
  fs::path full = dir / "full.jsonl";
  auto with_program = [](std::vector<std::string> a) {
    a.insert(a.begin(), lowbit_bin());
    return a;
  };
  REQUIRE(run_lowbit(args(full, false)).code == 0);
  const auto expected = sweep_runs(full);
  // bf16 + nf4 + int8, 2 prompts, 3 T x 2 top-k: per format and prompt one greedy record standing for
  // 4 grid points (T 0 x 2 top-k, T 0.7 and 1 at top-k 1) and 2 sampled ones.
  REQUIRE(expected.size() == 3 * 2 * 3);
  REQUIRE(grid_points(full).size() == 3 * 2 * 3 * 2);

  // Interrupt once the bf16 runs are partly written, so the resumed run needs the bf16 references
  // from the file for the quantized runs' quality fields.
  fs::path out = dir / "interrupted.jsonl";
  pid_t pid = spawn(with_program(args(out, false)), dir / "int.log");
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while ((!fs::exists(out) || count_lines(out) < 3) && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  kill(pid, SIGINT);
  const int code = wait_for(pid);
  INFO(slurp(dir / "int.log"));
  CHECK(code == 130);
  const size_t before = sweep_runs(out).size();  // whole lines, no duplicates
  CHECK(before >= 3);
  CHECK(before < expected.size());
  { std::ofstream(out, std::ios::app) << "{\"model\": \"tor"; }  // a write cut by a kill

  RunResult resumed = run_lowbit(args(out, true));
  INFO(resumed.log());
  REQUIRE(resumed.code == 0);
  CHECK(resumed.log().find("torn") != std::string::npos);
  CHECK(sweep_runs(out) == expected);

  // A complete file: nothing to do, nothing loaded.
  RunResult noop = run_lowbit(args(out, true));
  CHECK(noop.code == 0);
  CHECK(noop.log().find("0 to go") != std::string::npos);
  CHECK(noop.log().find("loaded") == std::string::npos);
  CHECK(count_lines(out) == expected.size());

  // Another model's runs file is refused rather than mixed.
  std::vector<std::string> other = args(out, true);
  other[2] = (fs::path(stories()) / ".").string();
  RunResult mixed = run_lowbit(other);
  CHECK(mixed.code == 1);
  CHECK(mixed.log().find("resume with the same -m") != std::string::npos);
}

TEST_CASE("lowbit batch --shard I/N: shards are disjoint and cover the input", "[study][batch][cli]") {
  fs::path dir = temp_dir("shard");
  fs::path input = dir / "prompts.jsonl";
  write_prompts(input, 10, 8);
  std::map<std::string, std::string> all;
  size_t total = 0;
  for (int i = 0; i < 3; ++i) {
    fs::path out = dir / ("shard" + std::to_string(i) + ".jsonl");
    RunResult r = run_lowbit({"batch", "-m", stories(), "--input", input.string(), "--output", out.string(), "--shard",
                        std::to_string(i) + "/3"});
    REQUIRE(r.code == 0);
    auto part = results_by_id(out);
    CHECK(part.size() == (i == 0 ? 4u : 3u));  // indices 0,3,6,9 | 1,4,7 | 2,5,8
    total += part.size();
    all.insert(part.begin(), part.end());
  }
  CHECK(total == 10);
  CHECK(all.size() == 10);  // disjoint
  fs::path whole = dir / "whole.jsonl";
  REQUIRE(run_lowbit({"batch", "-m", stories(), "--input", input.string(), "--output", whole.string()}).code == 0);
  CHECK(results_by_id(whole) == all);
}

TEST_CASE("lowbit batch errors: malformed input line, bad flags, existing output", "[study][batch][cli]") {
  fs::path dir = temp_dir("errors");
  fs::path input = dir / "in.jsonl";
  { std::ofstream(input) << "{\"id\": 1, \"prompt\": \"a\"}\n\n{\"id\": 2, \"prompt\": \"b\"\n"; }
  fs::path out = dir / "out.jsonl";
  RunResult bad = run_lowbit({"batch", "-m", stories(), "--input", input.string(), "--output", out.string()});
  CHECK(bad.code == 1);
  CHECK(bad.log().find(input.string() + ":3:") != std::string::npos);
  { std::ofstream(input) << "{\"id\": 1, \"prompt\": \"a\", \"top_p\": 2}\n"; }
  RunResult range = run_lowbit({"batch", "-m", stories(), "--input", input.string(), "--output", out.string()});
  CHECK(range.code == 1);
  CHECK(range.log().find(input.string() + ":1:") != std::string::npos);
  for (const char* shard : {"3/3", "1", "a/2", "-1/2", "0/0"}) {
    RunResult r = run_lowbit({"batch", "-m", stories(), "--input", input.string(), "--output", out.string(), "--shard", shard});
    INFO(shard << ": " << r.log());
    CHECK(r.code == 2);
    CHECK(r.log().find("--shard") != std::string::npos);
  }
  { std::ofstream(out) << "{\"id\": 9}\n"; }
  RunResult exists = run_lowbit({"batch", "-m", stories(), "--input", input.string(), "--output", out.string()});
  CHECK(exists.code == 2);
  CHECK(exists.log().find("--resume") != std::string::npos);
}

// ---------------------------------------------------------------------------------------------
namespace {

// Checks every <svg> of the page draws something: it has <path>, <rect> or <circle> elements,
// and none of its shapes is degenerate (zero width/height/radius or an empty path).
void check_svgs(const std::string& html) {
  std::regex svg_re("<svg[^>]*>([\\s\\S]*?)</svg>");
  std::regex rect_re("<rect [^>]*width=\"([0-9.]+)\" height=\"([0-9.]+)\"");
  std::regex circle_re("<circle [^>]*r=\"([0-9.]+)\"");
  std::regex path_re("<path d=\"([^\"]*)\"");
  size_t n_svg = 0;
  for (auto it = std::sregex_iterator(html.begin(), html.end(), svg_re); it != std::sregex_iterator(); ++it) {
    ++n_svg;
    const std::string body = (*it)[1];
    size_t shapes = 0;
    for (auto r = std::sregex_iterator(body.begin(), body.end(), rect_re); r != std::sregex_iterator(); ++r, ++shapes) {
      CHECK(std::stod((*r)[1]) > 0);
      CHECK(std::stod((*r)[2]) > 0);
    }
    for (auto c = std::sregex_iterator(body.begin(), body.end(), circle_re); c != std::sregex_iterator(); ++c, ++shapes)
      CHECK(std::stod((*c)[1]) > 0);
    for (auto p = std::sregex_iterator(body.begin(), body.end(), path_re); p != std::sregex_iterator(); ++p, ++shapes)
      CHECK((*p)[1].length() > 3);
    // Beyond the white background rect: the chart draws data.
    CHECK(shapes > 2);
  }
  CHECK(n_svg >= 7);
}

std::string find_chromium() {
  for (const char* p : {"/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"})
    if (fs::exists(p)) return p;
  return "";
}

}  // namespace

TEST_CASE("plot helpers: ticks, labels, escaping", "[study][report]") {
  CHECK(nice_ticks(0, 1, 6) == std::vector<double>{0, 0.2, 0.4, 0.6, 0.8, 1.0});
  CHECK(nice_ticks(3, 97, 6) == std::vector<double>{0, 20, 40, 60, 80, 100});
  auto t = nice_ticks(-2.37, -1.12, 6);
  CHECK(t.front() <= -2.37);
  CHECK(t.back() >= -1.12);
  CHECK(nice_ticks(5, 5, 6).size() >= 2);
  CHECK(tick_label(0.30000000000000004) == "0.3");
  CHECK(tick_label(50) == "50");
  CHECK(html_escape("<a href=\"x\">&'") == "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
}

TEST_CASE("lowbit sweep + report: records, quality fields, an HTML page a browser renders", "[study][report][cli]") {
  fs::path dir = temp_dir("report");
  fs::path runs = dir / "runs.jsonl", html = dir / "report.html", png = dir / "report.png";
  RunResult sweep = run_lowbit({"sweep", "-m", stories(), "--quant", "nf4,W8A8", "--temperature", "0:1:0.5", "--top-k",
                          "1,40", "-n", "24", "-p", "Once upon a time", "-p", "The <b>dog</b> & \"cat\"", "-o",
                          runs.string()});
  INFO(sweep.log());
  REQUIRE(sweep.code == 0);
  std::vector<json> records;
  for (auto& r : read_jsonl(runs.string(), false)) records.push_back(r.value);
  // bf16 (implicit) + nf4 + W8A8, 2 prompts, 3 T x 2 top-k: per format and prompt one greedy record
  // (for 4 grid points) and 2 sampled.
  REQUIRE(records.size() == 3 * 2 * 3);
  CHECK(grid_points(runs).size() == 3 * 2 * 3 * 2);
  CHECK(records[0]["quant"] == "bf16");
  CHECK(records[0]["implicit_reference"] == true);
  for (const json& r : records) {
    for (const char* key : {"prompt_id", "prompt", "quant", "temperature", "top_k", "top_p", "max_new_tokens", "seed",
                            "repeat", "text", "token_ids", "prompt_tokens", "generated_tokens", "ttft_s",
                            "decode_tokens_per_s", "peak_memory_bytes", "peak_host_rss_bytes", "weight_bytes",
                            "stop_reason", "device",
                            "token_agreement", "first_divergence", "rouge_l_f1", "distinct_1", "distinct_2",
                            "ref_mean_logprob"})
      CHECK(r.contains(key));
    if (r["quant"] == "bf16") {
      CHECK(r["token_agreement"] == 1.0);
      CHECK(r["rouge_l_f1"] == 1.0);
      CHECK(r["first_divergence"].is_null());
    }
    CHECK(r["ref_mean_logprob"].get<double>() < 0);
    // The backend's peak holds the weights and more (KV cache, activations).
    CHECK(r["peak_memory_bytes"].get<double>() > r["weight_bytes"].get<double>());
  }
  auto peak_of = [&](const char* quant) {
    for (const json& r : records)
      if (r["quant"] == quant) return r["peak_memory_bytes"].get<double>();
    return 0.0;
  };
  // nf4's weights are 0.33 MB smaller than bf16's; the rest of the backend's memory is the same.
  CHECK(peak_of("bf16") - peak_of("nf4") > 0.25e6);

  RunResult report = run_lowbit({"report", runs.string(), "-o", html.string()});
  INFO(report.log());
  REQUIRE(report.code == 0);
  const std::string page = slurp(html);
  CHECK(page.find("&lt;b&gt;dog&lt;/b&gt; &amp; &quot;cat&quot;") != std::string::npos);  // escaped prompt
  CHECK(page.find("<b>dog") == std::string::npos);
  CHECK(page.find("<script") == std::string::npos);
  CHECK(page.find("http://") == page.find("http://www.w3.org/2000/svg"));  // only the SVG namespace
  CHECK(page.find("https://") == std::string::npos);
  check_svgs(page);

  // A real browser renders it. Chromium is installed by scripts/setup; its absence is a failure.
  const std::string chromium = find_chromium();
  INFO("chromium not found: run scripts/setup (apt-get install chromium)");
  REQUIRE(!chromium.empty());
  pid_t pid = spawn({chromium, "--headless", "--disable-gpu", "--no-sandbox", "--hide-scrollbars",
                     "--user-data-dir=" + (dir / "profile").string(), "--screenshot=" + png.string(),
                     "--window-size=1200,3000", "file://" + html.string()},
                    dir / "chromium.log");
  INFO(slurp(dir / "chromium.log"));
  REQUIRE(wait_for(pid) == 0);
  REQUIRE(fs::exists(png));
  const std::string bytes = slurp(png);
  REQUIRE(bytes.size() > 8);
  CHECK(bytes.compare(0, 8, "\x89PNG\r\n\x1a\n") == 0);
  // A blank 1200x3000 page compresses to a few KB of near-constant bytes; charts, tables and text
  // give tens of KB of high-entropy deflate data.
  CHECK(bytes.size() > 40000);
  std::set<unsigned char> distinct(bytes.begin(), bytes.end());
  CHECK(distinct.size() > 200);
  // Width and height from the IHDR chunk.
  auto be32 = [&](size_t at) {
    return uint32_t((unsigned char)bytes[at]) << 24 | uint32_t((unsigned char)bytes[at + 1]) << 16 |
           uint32_t((unsigned char)bytes[at + 2]) << 8 | uint32_t((unsigned char)bytes[at + 3]);
  };
  CHECK(be32(16) == 1200);
  CHECK(be32(20) == 3000);
}

// ---------------------------------------------------------------------------------------------
// The study as a researcher runs it: nothing overwritten, nothing silently mixed, every number
// traceable, no wasted runs.
TEST_CASE("plan_work: greedy grid points that cannot differ are one work item", "[study][grid]") {
  SweepAxes a{{0, 0.5, 1}, {0.9, 1}, {1, 40}, {16}, {0, 1}, 1};  // temperature, top-p, top-k, n, seed
  a.repetition_penalty = {1, 1.2};
  const auto grid = expand_grid(a);
  REQUIRE(grid.size() == 3 * 2 * 2 * 2 * 2);
  const auto items = plan_work(grid, {});
  size_t greedy_items = 0, points = 0;
  for (const WorkItem& w : items) {
    points += w.points.size();
    if (!w.greedy) {
      REQUIRE(w.points.size() == 1);
      CHECK(!is_greedy(grid[w.points[0]]));
      continue;
    }
    ++greedy_items;
    // One class per repetition penalty (it changes the argmax); its representative is at T = 0.
    CHECK(grid[w.points.front()].temperature == 0);
    for (size_t i : w.points) {
      CHECK(is_greedy(grid[i]));
      CHECK(grid[i].repetition_penalty == grid[w.points.front()].repetition_penalty);
    }
    // T = 0: 2 top-k x 2 top-p x 2 seeds; T = 0.5, 1 with top-k 1: 2 x 2 x 2 more.
    CHECK(w.points.size() == 8 + 8);
  }
  CHECK(greedy_items == 2);
  CHECK(points == grid.size());  // every grid point is in exactly one item
  std::vector<bool> take(grid.size(), false);
  take[0] = take[1] = true;
  CHECK(plan_work(grid, take).size() == 1);
}

TEST_CASE("lowbit sweep: greedy points run once and stand for every grid point; top-k 1 equals greedy",
          "[study][sweep][cli]") {
  fs::path dir = temp_dir("greedy");
  fs::path runs = dir / "runs.jsonl";
  RunResult sweep = run_lowbit(sweep_args(runs, {}));
  INFO(sweep.log());
  REQUIRE(sweep.code == 0);
  const auto records = records_of(runs);
  // Per format and prompt: 1 greedy record (T 0 x top-k 1,40 x 2 seeds + T 0.8 x top-k 1 x 2 seeds)
  // and 2 sampled (T 0.8, top-k 40, 2 seeds).
  REQUIRE(records.size() == 2 * 2 * 3);
  const auto points = grid_points(runs);
  CHECK(points.size() == 2 * 2 * 8);  // every grid point present
  for (const json& r : records) {
    CHECK(r["greedy"] == (r.contains("stands_for")));
    if (r["greedy"] == true) CHECK(r["stands_for"].size() == 6);
  }
  // The greedy record's tokens are what `run` gives at top-k 1 and temperature 0.8 for another seed.
  const json* nf4_greedy = nullptr;
  for (const json& r : records)
    if (r["quant"] == "nf4" && r["greedy"] == true && r["prompt_id"] == 0) nf4_greedy = &r;
  REQUIRE(nf4_greedy);
  const lowbit::test::RunResult top_k_one =
      lowbit::test::run_lowbit({"run", "-m", stories(), "--quant", "nf4", "-p", "Once upon a time", "-n", "16",
                                "--temperature", "0.8", "--top-k", "1", "--seed", "1", "--json", "-q"});
  REQUIRE(top_k_one.code == 0);
  CHECK(json::parse(top_k_one.out)["token_ids"] == (*nf4_greedy)["token_ids"]);
  // The report counts grid points (8 per format and prompt) and computed runs separately.
  RunResult report = run_lowbit({"report", runs.string(), "-o", (dir / "r.html").string()});
  REQUIRE(report.code == 0);
  const std::string page = slurp(dir / "r.html");
  CHECK(page.find("32 grid points (12 computed runs") != std::string::npos);
  CHECK(page.find("<td>16</td><td>6</td>") != std::string::npos);  // bf16: 16 grid points, 6 computed runs
}

TEST_CASE("lowbit sweep: a top-k 1 point whose logits tie for the top is run on its own", "[study][sweep][cli]") {
  // A model whose head rows are all equal: every logit ties at every step. Greedy picks the lowest
  // id; top-k 1 keeps every tied token and samples among them, so it differs from greedy.
  fs::path dir = temp_dir("tie");
  const fs::path model = dir / "m";
  RunResult made = run_lowbit({"make-model", "--preset", "tiny-llama", "--layers", "1", "--dtype", "f32", "-o",
                         (dir / "src").string(), "--tokenizer-from", stories() + "/tokenizer.json"});
  REQUIRE(made.code == 0);
  fs::create_directories(model);
  for (const char* f : {"config.json", "generation_config.json", "tokenizer.json"})
    fs::copy_file(dir / "src" / f, model / f);
  {
    WeightStore store = WeightStore::open_dir((dir / "src").string());
    std::vector<std::vector<float>> values;
    std::vector<TensorToWrite> tensors;
    for (const std::string& name : store.names()) values.push_back(to_f32(store.get(name)));
    size_t i = 0;
    for (const std::string& name : store.names()) {
      const TensorInfo& t = store.get(name);
      std::vector<float>& v = values[i++];
      if (name == "lm_head.weight")
        for (int64_t r = 1; r < t.shape[0]; ++r) std::copy(v.begin(), v.begin() + t.shape[1], v.begin() + r * t.shape[1]);
      tensors.push_back({name, DType::F32, t.shape, v.data()});
    }
    write_safetensors((model / "model.safetensors").string(), tensors);
  }
  fs::path runs = dir / "runs.jsonl";
  RunResult sweep = run_lowbit({"sweep", "-m", model.string(), "--quant", "bf16", "--temperature", "0,1", "--top-k", "1",
                          "--seed", "0,1", "-n", "8", "-p", "Once", "-o", runs.string()});
  INFO(sweep.log());
  REQUIRE(sweep.code == 0);
  CHECK(sweep.log().find("tie for the top") != std::string::npos);
  const auto records = records_of(runs);
  REQUIRE(records.size() == 3);  // T 0 (2 seeds) once; T 1 top-k 1: each seed alone
  CHECK(records[0]["greedy"] == true);
  CHECK(records[0]["stands_for"].size() == 2);
  for (int i : {1, 2}) {
    CHECK(records[i]["greedy"] == false);
    CHECK(records[i]["temperature"] == 1.0);
    CHECK(records[i]["token_ids"] != records[0]["token_ids"]);
  }
  CHECK(records[1]["token_ids"] != records[2]["token_ids"]);
  CHECK(grid_points(runs).size() == 4);
}

TEST_CASE("lowbit sweep: an existing runs file needs --resume or --force", "[study][sweep][cli]") {
  fs::path dir = temp_dir("overwrite");
  fs::path runs = dir / "runs.jsonl";
  REQUIRE(run_lowbit(sweep_args(runs, {})).code == 0);
  const std::string finished = slurp(runs);
  RunResult again = run_lowbit(sweep_args(runs, {"--quant", "int8"}));
  CHECK(again.code == 2);
  CHECK(again.log().find("--resume continues it, --force starts it over") != std::string::npos);
  CHECK(again.log().find("loaded") == std::string::npos);
  CHECK(slurp(runs) == finished);  // untouched
  CHECK(run_lowbit(sweep_args(runs, {"--resume", "--force"})).code == 2);
  RunResult force = run_lowbit(sweep_args(runs, {"--force", "--temperature", "0"}));
  REQUIRE(force.code == 0);
  CHECK(grid_points(runs).size() == 2 * 2 * 4);  // only the new grid: T 0 x 2 top-k x 2 seeds
}

TEST_CASE("lowbit sweep: one format resident at a time, scores equal a resident reference", "[study][sweep][cli]") {
  fs::path dir = temp_dir("passes");
  fs::path two_pass = dir / "two.jsonl", kept = dir / "kept.jsonl";
  RunResult a = run_lowbit(sweep_args(two_pass, {"--quant", "nf4,int8"}));
  INFO(a.log());
  REQUIRE(a.code == 0);
  // bf16 first, then each format with bf16 reloaded to score its runs.
  std::vector<std::string> loads;
  const std::string log = a.log();
  for (size_t p = 0; (p = log.find(" as ", p)) != std::string::npos; ++p)
    loads.push_back(log.substr(p + 4, log.find(' ', p + 4) - p - 4));
  CHECK(loads == std::vector<std::string>{"bf16", "nf4", "bf16", "int8", "bf16"});
  CHECK(!fs::exists(dir / "two.jsonl.unscored"));
  RunResult b = run_lowbit(sweep_args(kept, {"--quant", "nf4,int8", "--keep-reference"}));
  REQUIRE(b.code == 0);
  CHECK(grid_points(two_pass) == grid_points(kept));

  // Runs generated but not yet scored (a kill between the passes) are scored on --resume, not redone.
  fs::path resumed = dir / "resumed.jsonl";
  std::ofstream main_part(resumed), unscored(dir / "resumed.jsonl.unscored");
  for (const auto& rec : read_jsonl_ordered(two_pass.string())) {
    nlohmann::ordered_json r = rec.value;
    if (r["quant"] == "int8") {
      r["ref_mean_logprob"] = nullptr;
      unscored << r.dump() << "\n";
    } else {
      main_part << r.dump() << "\n";
    }
  }
  main_part.close();
  unscored.close();
  RunResult c = run_lowbit(sweep_args(resumed, {"--quant", "nf4,int8", "--resume"}));
  INFO(c.log());
  REQUIRE(c.code == 0);
  CHECK(c.log().find("0 runs to compute") != std::string::npos);
  CHECK(c.log().find("as int8") == std::string::npos);
  CHECK(grid_points(resumed) == grid_points(two_pass));
  CHECK(!fs::exists(dir / "resumed.jsonl.unscored"));
}

TEST_CASE("lowbit sweep --shard I/N: shards cover the grid once; report merges them", "[study][sweep][report][cli]") {
  fs::path dir = temp_dir("sweep-shard");
  fs::path whole = dir / "whole.jsonl";
  REQUIRE(run_lowbit(sweep_args(whole, {})).code == 0);
  std::map<std::string, std::string> merged;
  size_t total = 0;
  std::vector<std::string> files;
  for (int i = 0; i < 3; ++i) {
    fs::path out = dir / ("shard" + std::to_string(i) + ".jsonl");
    files.push_back(out.string());
    RunResult r = run_lowbit(sweep_args(out, {"--shard", std::to_string(i) + "/3"}));
    INFO(r.log());
    REQUIRE(r.code == 0);
    const auto part = grid_points(out);
    CHECK(!part.empty());
    total += part.size();
    merged.insert(part.begin(), part.end());
  }
  CHECK(total == merged.size());  // disjoint
  CHECK(merged == grid_points(whole));
  std::vector<std::string> report{"report"};
  report.insert(report.end(), files.begin(), files.end());
  report.insert(report.end(), {"-o", (dir / "merged.html").string()});
  RunResult r = run_lowbit(report);
  INFO(r.log());
  REQUIRE(r.code == 0);
  CHECK(slurp(dir / "merged.html").find("32 grid points") != std::string::npos);
  // The same shard twice is an overlap, not twice the data.
  RunResult twice = run_lowbit({"report", files[0], files[0], "-o", (dir / "bad.html").string()});
  CHECK(twice.code == 1);
  CHECK(twice.log().find("the files overlap") != std::string::npos);
  CHECK(run_lowbit(sweep_args(dir / "x.jsonl", {"--shard", "3/3"})).code == 2);
}

TEST_CASE("lowbit sweep: min-p and repetition-penalty axes, stop strings, log-probs, provenance",
          "[study][sweep][cli]") {
  fs::path dir = temp_dir("axes");
  fs::path runs = dir / "runs.jsonl";
  RunResult s = run_lowbit({"sweep", "-m", stories(), "--quant", "nf4", "--temperature", "0,0.9", "--top-k", "40",
                      "--min-p", "0,0.1", "--repeat-penalty", "1,1.5", "-n", "40", "-p", "Once upon a time",
                      "--stop", ".", "--logprobs", "-o", runs.string()});
  INFO(s.log());
  REQUIRE(s.code == 0);
  const auto records = records_of(runs);
  std::set<std::pair<double, double>> axes_seen;
  std::map<double, json> greedy_by_penalty;
  for (const json& r : records) {
    axes_seen.insert({r["min_p"].get<double>(), r["repetition_penalty"].get<double>()});
    if (r["greedy"] == true && r["quant"] == "bf16") greedy_by_penalty[r["repetition_penalty"].get<double>()] = r;
    CHECK(r["text"].get<std::string>().find('.') == std::string::npos);
    if (r["stop_reason"] == "stop") CHECK(r["stop"] == json::array({"."}));
    REQUIRE(r["logprobs"].size() == r["token_ids"].size());
    for (const char* key : {"ttft_s", "load_s", "decode_tokens_per_s", "provenance"}) CHECK(r.contains(key));
    CHECK(r["provenance"]["model_config_sha256"].get<std::string>().size() == 64);
    CHECK(!r["provenance"]["lowbit_commit"].get<std::string>().empty());
    if (r["quant"] == "bf16" && !r["token_ids"].empty()) {
      // bf16 scoring its own tokens: the mean of its log-probs is its teacher-forced log-prob.
      double sum = 0;
      for (const json& lp : r["logprobs"]) sum += lp.get<double>();
      CHECK(sum / double(r["logprobs"].size()) == Approx(r["ref_mean_logprob"].get<double>()).margin(1e-4));
    }
  }
  CHECK(axes_seen.size() == 4);
  REQUIRE(greedy_by_penalty.size() == 2);  // the repetition penalty can change the argmax: a class each
  // min-p does not change a greedy run: each class stands for both min-p values.
  CHECK(greedy_by_penalty[1.0]["stands_for"].size() == 2);
  bool any_stop = false;
  for (const json& r : records) any_stop = any_stop || r["stop_reason"] == "stop";
  CHECK(any_stop);
}

TEST_CASE("peak RSS resets at a format's load, so each format's memory stands alone", "[study][sweep]") {
  REQUIRE(reset_peak_rss());
  const size_t before = peak_rss_since_reset_bytes();
  size_t during = 0;
  {
    std::vector<char> big(64 << 20);
    std::fill(big.begin(), big.end(), 1);
    during = peak_rss_since_reset_bytes();
    CHECK(during >= before + (60 << 20));
  }
  REQUIRE(reset_peak_rss());
#if LOWBIT_TEST_SANITIZED
  // AddressSanitizer keeps freed memory (and writes its shadow) in its quarantine, still
  // resident, so RSS after the free can exceed the peak during use: the forgetting is checked in
  // the normal build only.
  (void)during;
#else
  CHECK(peak_rss_since_reset_bytes() < before + (8 << 20));  // the 64 MB peak is forgotten
#endif
}

TEST_CASE("report: several models side by side, prompt id collisions, batch output and torn lines",
          "[study][report][cli]") {
  fs::path dir = temp_dir("report-checks");
  fs::path a = dir / "a.jsonl", b = dir / "b.jsonl";
  const fs::path other = dir / "other-model";
  fs::copy(data_dir() + "/models/llama-gqa-tied", other, fs::copy_options::recursive);
  REQUIRE(run_lowbit(sweep_args(a, {})).code == 0);
  REQUIRE(run_lowbit({"sweep", "-m", other.string(), "--quant", "nf4", "--temperature", "0,0.8", "--top-k", "40", "-n",
                      "8", "-p", "Once upon a time", "-o", b.string()})
              .code == 0);
  RunResult two = run_lowbit({"report", a.string(), b.string(), "-o", (dir / "two.html").string()});
  INFO(two.log());
  REQUIRE(two.code == 0);
  const std::string page = slurp(dir / "two.html");
  CHECK(page.find("<h2>Model " + stories()) != std::string::npos);
  CHECK(page.find("<h2>Model " + other.string()) != std::string::npos);
  CHECK(page.find("2 model(s)") != std::string::npos);

  // Two sweeps of one model whose prompt 0 differ: an error, not a merge.
  fs::path c = dir / "c.jsonl";
  REQUIRE(run_lowbit({"sweep", "-m", stories(), "--quant", "nf4", "--temperature", "0", "--top-k", "40", "-n", "8",
                      "--seed", "7", "-p", "The sun was", "-o", c.string()})
              .code == 0);
  RunResult collide = run_lowbit({"report", a.string(), c.string(), "-o", (dir / "x.html").string()});
  CHECK(collide.code == 1);
  CHECK(collide.log().find("prompt id 0 is \"The sun was\" here but \"Once upon a time\"") != std::string::npos);

  // A batch output is not a sweep.
  fs::path input = dir / "in.jsonl", batch_out = dir / "batch.jsonl";
  write_text(input, "{\"id\": 1, \"prompt\": \"Once\", \"max_new_tokens\": 4}\n");
  REQUIRE(run_lowbit({"batch", "-m", stories(), "--input", input.string(), "-o", batch_out.string()}).code == 0);
  RunResult not_sweep = run_lowbit({"report", batch_out.string(), "-o", (dir / "y.html").string()});
  CHECK(not_sweep.code == 1);
  CHECK(not_sweep.log().find(batch_out.string() + ":1: not a `lowbit sweep` run") != std::string::npos);
  CHECK(not_sweep.log().find("`lowbit batch` output") != std::string::npos);

  // A torn last line: a warning naming file and line; the page still renders.
  fs::path torn = dir / "torn.jsonl";
  fs::copy_file(a, torn);
  const size_t lines = count_lines(torn);
  { std::ofstream(torn, std::ios::app) << "{\"model\": \"tor"; }
  RunResult t = run_lowbit({"report", torn.string(), "-o", (dir / "t.html").string()});
  CHECK(t.code == 0);
  CHECK(t.log().find("warning: " + torn.string() + ":" + std::to_string(lines + 1) + ": a torn last line") !=
        std::string::npos);
}

TEST_CASE("report: facets by top-k without top-k 1, spread everywhere, provenance, collapsed runs",
          "[study][report]") {
  fs::path dir = temp_dir("report-page");
  fs::path runs = dir / "runs.jsonl";
  REQUIRE(run_lowbit(sweep_args(runs, {"--top-k", "1,10,40"})).code == 0);
  const std::string page = render_report(read_report_runs({runs.string()}));
  CHECK(page.find("ROUGE-L F1 vs the bf16 text (top-k 10)") != std::string::npos);
  CHECK(page.find("ROUGE-L F1 vs the bf16 text (top-k 40)") != std::string::npos);
  CHECK(page.find("(top-k 1)") == std::string::npos);  // greedy at every temperature: no curve
  CHECK(page.find("<details><summary>Every computed run") != std::string::npos);
  CHECK(page.find("<span class=\"ci\">[") != std::string::npos);  // intervals in the table
  CHECK(page.find("M") != std::string::npos);
  std::regex whisker("<path d=\"M[0-9.]+,[0-9.]+ V[0-9.]+ M");
  CHECK(std::distance(std::sregex_iterator(page.begin(), page.end(), whisker), std::sregex_iterator()) > 10);
  CHECK(page.find("<h2>Provenance</h2>") != std::string::npos);
  CHECK(page.find(sha256_of_config()) != std::string::npos);
  CHECK(page.find("commit ") != std::string::npos);
  CHECK(page.find("--top-k 1,10,40") != std::string::npos);  // the command line
  CHECK(page.find("cpu: ") != std::string::npos);

  CHECK(significant3(3.846) == "3.85");
  CHECK(significant3(38.46) == "38.5");
  CHECK(significant3(8873) == "8870");
  CHECK(significant3(3.8) == "3.80");
  CHECK(significant3(9.996) == "10.0");
  CHECK(significant3(0.012345) == "0.0123");
  CHECK(bytes_label(587008) == "587 kB");
  CHECK(bytes_label(1.35e10) == "13.5 GB");
  CHECK(bytes_label(1.005e9) == "1.00 GB");
  const MeanInterval m = mean_ci95({1, 2, 3, 4});
  CHECK(m.mean == 2.5);
  // sd = sqrt(5/3), t(3) = 3.182: half-width 3.182 * 1.2910 / 2 = 2.054
  CHECK(m.hi - m.mean == Approx(2.054).epsilon(1e-3));
  CHECK(mean_ci95({5}).lo == 5);
  CHECK(t_quantile_975(1) == 12.706);
  CHECK(t_quantile_975(1000) == Approx(1.962).epsilon(1e-3));
}

TEST_CASE("lowbit batch: output checked before loading, long prompts get error records, unknown keys refused",
          "[study][batch][cli]") {
  fs::path dir = temp_dir("batch13");
  fs::path input = dir / "in.jsonl", out = dir / "out.jsonl";
  write_text(input, "{\"id\": 1, \"prompt\": \"Once\", \"max_new_tokens\": 4}\n");
  RunResult unwritable = run_lowbit({"batch", "-m", stories(), "--input", input.string(), "-o", "/nonexistent/dir/out.jsonl"});
  CHECK(unwritable.code == 1);
  CHECK(unwritable.log().find("/nonexistent/dir/out.jsonl: cannot open for writing") != std::string::npos);
  CHECK(unwritable.log().find("loaded") == std::string::npos);

  std::string longp;
  for (int i = 0; i < 200; ++i) longp += "Once upon a time ";
  write_text(input, "{\"id\": 1, \"prompt\": \"Once\", \"max_new_tokens\": 4, \"temperature\": 0.7}\n"
                    "{\"id\": 2, \"prompt\": \"" + longp + "\", \"max_new_tokens\": 4}\n"
                    "{\"id\": 3, \"prompt\": \"The dog\", \"max_new_tokens\": 40, \"stop\": [\".\", \"!\"]}\n");
  RunResult r = run_lowbit({"batch", "-m", stories(), "--input", input.string(), "-o", out.string(), "--logprobs"});
  INFO(r.log());
  REQUIRE(r.code == 0);
  CHECK(r.log().find(input.string() + ":2: the prompt has") != std::string::npos);
  std::map<int, json> by_id;
  for (const json& j : records_of(out)) by_id[j["id"].get<int>()] = j;
  REQUIRE(by_id.size() == 3);
  CHECK(by_id[2]["stop_reason"] == "error");
  CHECK(by_id[2]["error"].get<std::string>().find("but the context holds 512 (use --ctx, or --truncate)") !=
        std::string::npos);
  CHECK(by_id[1]["generated_tokens"] == 4);
  CHECK(by_id[1]["logprobs"].size() == 4);
  CHECK(slurp(out).find("\"temperature\":0.7,") != std::string::npos);  // shortest round-trip, not 0.699999988
  CHECK(by_id[3]["text"].get<std::string>().find_first_of(".!") == std::string::npos);
  CHECK(by_id[3]["stop"] == json::array({".", "!"}));
  CHECK(by_id[1]["provenance"]["lowbit_commit"].is_string());
  // --truncate keeps the prompt's end instead.
  fs::path truncated = dir / "truncated.jsonl";
  REQUIRE(run_lowbit({"batch", "-m", stories(), "--input", input.string(), "-o", truncated.string(), "--truncate"})
              .code == 0);
  for (const json& j : records_of(truncated))
    if (j["id"] == 2) {
      CHECK(j["stop_reason"] != "error");
      CHECK(j["prompt_tokens"] == 511);
      CHECK(j["truncated_from_tokens"].get<int>() > 511);
    }

  // An unknown key names the line and the key, with the nearest known one.
  write_text(input, "{\"id\": 1, \"prompt\": \"a\"}\n{\"id\": 2, \"prompt\": \"b\", \"temprature\": 0.5}\n");
  fs::path out2 = dir / "out2.jsonl";
  RunResult typo = run_lowbit({"batch", "-m", stories(), "--input", input.string(), "-o", out2.string()});
  CHECK(typo.code == 1);
  CHECK(typo.log().find(input.string() + ":2: unknown key \"temprature\" (did you mean temperature?)") !=
        std::string::npos);
  CHECK(typo.log().find("loaded") == std::string::npos);

  // An empty input: an empty output file and a warning, exit 0.
  write_text(input, "\n");
  fs::path out3 = dir / "out3.jsonl";
  RunResult empty = run_lowbit({"batch", "-m", stories(), "--input", input.string(), "-o", out3.string()});
  CHECK(empty.code == 0);
  CHECK(fs::exists(out3));
  CHECK(fs::file_size(out3) == 0);
  CHECK(empty.log().find("no records") != std::string::npos);
}
