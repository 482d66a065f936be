// The lowbit binary as a user runs it: exit codes, one-line errors, streamed vs JSON output.
#include <catch2/catch.hpp>

#include <dlfcn.h>
#include <sys/wait.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>

#include <nlohmann/json.hpp>

#include "backend/cpu_backend.h"
#include "cli/suggest.h"
#include "core/sha256.h"
#include "generate/generate.h"
#include "generate/stop_strings.h"
#include "model/model.h"
#include "test_util.h"
#include "tokenizer/tokenizer.h"

namespace fs = std::filesystem;
using lowbit::test::data_dir;
using lowbit::test::lowbit_bin;
using lowbit::test::root_dir;
using lowbit::test::run_cli;
using lowbit::test::run_lowbit;

using lowbit::test::slurp;

namespace {

using Result = lowbit::test::RunResult;

// The error contract: one line "error: ...", containing `needle`, last on stderr. Usage errors
// come before any work, so for them (code 2) it is the only line; runtime errors may follow logs.
void check_one_line_error(const Result& r, int code, const std::string& needle) {
  INFO("stderr: " << r.err);
  CHECK(r.code == code);
  size_t start = r.err.rfind("\nerror: ");
  start = start == std::string::npos ? 0 : start + 1;
  std::string last = r.err.substr(start);
  CHECK(last.rfind("error: ", 0) == 0);
  CHECK(std::count(last.begin(), last.end(), '\n') == 1);
  CHECK(last.find(needle) != std::string::npos);
  size_t error_lines = 0;
  for (size_t p = 0; (p = r.err.find("error: ", p)) != std::string::npos; ++p) ++error_lines;
  CHECK(error_lines == 1);
  if (code == 2) CHECK(start == 0);
}

const std::string stories() { return root_dir() + "/models/stories260K"; }

fs::path copy_fixture(const std::string& name) {
  fs::path dst = fs::temp_directory_path() / ("lowbit_fixture_" + std::to_string(getpid()) + "_" + name);
  fs::remove_all(dst);
  fs::copy(data_dir() + "/models/llama-gqa-tied", dst, fs::copy_options::recursive);
  return dst;
}

}  // namespace

TEST_CASE("--version and --help work", "[cli]") {
  auto v = run_lowbit({"--version"});
  CHECK(v.code == 0);
  CHECK(v.out.rfind("lowbit ", 0) == 0);
  auto h = run_lowbit({"run", "--help"});
  CHECK(h.code == 0);
  for (const char* flag : {"--max-new-tokens", "--temperature", "--top-k", "--top-p", "--min-p", "--repeat-penalty",
                           "--seed", "--device", "--quant", "--json"})
    CHECK(h.out.find(flag) != std::string::npos);
}

TEST_CASE("bad flag values are usage errors naming the flag (exit 2)", "[cli]") {
  const std::string m = stories();
  check_one_line_error(run_lowbit({"run", "-m", m, "-p", "x", "--temperature", "-1"}), 2, "--temperature");
  check_one_line_error(run_lowbit({"run", "-m", m, "-p", "x", "--temperature", "0.5", "--top-p", "0"}), 2, "--top-p");
  check_one_line_error(run_lowbit({"run", "-m", m, "-p", "x", "--temperature", "0.5", "--top-p", "1.5"}), 2, "--top-p");
  check_one_line_error(run_lowbit({"run", "-m", m, "-p", "x", "--top-k", "-1"}), 2, "--top-k");
  check_one_line_error(run_lowbit({"run", "-m", m, "-p", "x", "-n", "-1"}), 2, "--max-new-tokens");
  check_one_line_error(run_lowbit({"run", "-m", m, "-p", "x", "--quant", "int3"}), 2, "int3");
  check_one_line_error(run_lowbit({"run", "-m", m, "-p", "x", "--device", "tpu"}), 2, "--device");
  check_one_line_error(run_lowbit({"run", "--no-such-flag"}), 2, "no-such-flag");
}

TEST_CASE("tokenize prints the ids on one line", "[cli]") {
  auto r = run_lowbit({"tokenize", "-m", stories(), "-p", "Once upon a time"});
  REQUIRE(r.code == 0);
  CHECK(r.out.rfind("1 ", 0) == 0);  // BOS first
  CHECK(std::count(r.out.begin(), r.out.end(), '\n') == 1);
  auto n = run_lowbit({"tokenize", "-m", stories(), "--no-special", "-p", "Once upon a time"});
  REQUIRE(n.code == 0);
  CHECK(r.out == "1 " + n.out);
}

TEST_CASE("run streams text and --json gives the same text with counts", "[cli]") {
  auto s = run_lowbit({"run", "-m", stories(), "-p", "Once upon a time", "-n", "40", "--temperature", "0"});
  REQUIRE(s.code == 0);
  auto j = run_lowbit({"run", "-m", stories(), "-p", "Once upon a time", "-n", "40", "--temperature", "0", "--json"});
  REQUIRE(j.code == 0);
  auto rec = nlohmann::json::parse(j.out);
  CHECK(s.out == "Once upon a time" + rec["text"].get<std::string>() + "\n");
  CHECK(rec["generated_tokens"].get<int>() == int(rec["token_ids"].size()));
  CHECK(rec["generated_tokens"].get<int>() <= 40);
  CHECK(rec["prompt_tokens"].get<int>() > 1);
  CHECK(s.err.find("tokens/s") != std::string::npos);  // speed summary on stderr
}

TEST_CASE("the first generated word keeps its space after the prompt", "[cli]") {
  // Greedy after "Once" is " upon a time": decoded alone, "upon" would lose its leading space.
  auto s = run_lowbit({"run", "-m", stories(), "-p", "Once", "-n", "3", "--temperature", "0"});
  REQUIRE(s.code == 0);
  CHECK(s.out == "Once upon a time\n");
  auto j = run_lowbit({"run", "-m", stories(), "-p", "Once", "-n", "3", "--temperature", "0", "--json"});
  REQUIRE(j.code == 0);
  CHECK(nlohmann::json::parse(j.out)["text"] == " upon a time");
}

TEST_CASE("the same seed gives the same text; another seed another", "[cli]") {
  auto run = [](const std::string& seed) {
    // From BOS alone (an explicit empty prompt).
    auto r = run_lowbit({"run", "-m", stories(), "-p", "", "-n", "60", "--temperature", "1", "--seed", seed, "--json"});
    REQUIRE(r.code == 0);
    return nlohmann::json::parse(r.out)["token_ids"].get<std::vector<int>>();
  };
  CHECK(run("11") == run("11"));
  CHECK(run("11") != run("12"));
}

TEST_CASE("info reports parameters and bytes", "[cli]") {
  auto r = run_lowbit({"info", "-m", stories()});
  REQUIRE(r.code == 0);
  // dim 64, hidden 172, 5 layers, 8 heads / 4 kv (head dim 8), vocab 512, tied:
  // 5 * (64*64*2 + 32*64*2 + 172*64*3 + 2*64) + 512*64 + 64 = 260032
  CHECK(r.out.find("parameters    260032") != std::string::npos);
  CHECK(r.out.find("llama") != std::string::npos);
}

TEST_CASE("prompts longer than the context fail unless --truncate", "[cli]") {
  std::string longp;
  for (int i = 0; i < 40; ++i) longp += "Once upon a time ";
  check_one_line_error(run_lowbit({"run", "-m", stories(), "--ctx", "16", "-p", longp, "-n", "2"}), 1, "context");
  auto ok = run_lowbit({"run", "-m", stories(), "--ctx", "16", "-p", longp, "-n", "2", "--truncate", "--json"});
  CHECK(ok.code == 0);
}

TEST_CASE("invalid UTF-8 in a prompt is a one-line input error", "[cli]") {
  check_one_line_error(run_lowbit({"run", "-m", stories(), "-p", "abc\xff\xfe", "-n", "2"}), 1, "UTF-8");
}

TEST_CASE("malformed model folders give one line and exit 1", "[cli]") {
  SECTION("missing folder") { check_one_line_error(run_lowbit({"run", "-m", "/nonexistent/model", "-p", "x"}), 1, "/nonexistent/model"); }
  SECTION("truncated safetensors") {
    auto d = copy_fixture("trunc");
    fs::resize_file(d / "model.safetensors", fs::file_size(d / "model.safetensors") / 2);
    check_one_line_error(run_lowbit({"run", "-m", d.string(), "-p", "x", "-n", "1"}), 1, "model.safetensors");
  }
  SECTION("bad JSON in config.json") {
    auto d = copy_fixture("badjson");
    std::ofstream(d / "config.json") << "{\"hidden_size\": 64,";
    check_one_line_error(run_lowbit({"run", "-m", d.string(), "-p", "x", "-n", "1"}), 1, "config.json");
  }
  SECTION("missing tensor") {
    auto d = copy_fixture("missing");
    // Claim one layer more than the file holds: layer 2's tensors are missing.
    auto cfg = nlohmann::json::parse(slurp(d / "config.json"));
    cfg["num_hidden_layers"] = 3;
    std::ofstream(d / "config.json") << cfg.dump();
    check_one_line_error(run_lowbit({"run", "-m", d.string(), "-p", "x", "-n", "1"}), 1, "model.layers.2.");
  }
  SECTION("wrong shape") {
    auto d = copy_fixture("shape");
    auto cfg = nlohmann::json::parse(slurp(d / "config.json"));
    cfg["intermediate_size"] = 128;  // the file holds 160
    std::ofstream(d / "config.json") << cfg.dump();
    check_one_line_error(run_lowbit({"run", "-m", d.string(), "-p", "x", "-n", "1"}), 1, "shape");
  }
  SECTION("extra tensor") {
    auto d = copy_fixture("extra");
    auto cfg = nlohmann::json::parse(slurp(d / "config.json"));
    cfg["num_hidden_layers"] = 1;  // layer 1's tensors become unexpected
    std::ofstream(d / "config.json") << cfg.dump();
    check_one_line_error(run_lowbit({"run", "-m", d.string(), "-p", "x", "-n", "1"}), 1, "unexpected tensor");
  }
}

TEST_CASE("running out of device memory is one line naming the allocation (--memory-cap)", "[cli]") {
  // stories260K in f32 needs about 1.2 MB of weights: a 0.5 MiB cap fails while loading.
  auto r = run_lowbit({"run", "-m", stories(), "-p", "x", "-n", "2", "--memory-cap", "0.5"});
  check_one_line_error(r, 1, "out of memory allocating");
  CHECK(r.err.find("memory cap 0.50 MiB") != std::string::npos);
  CHECK(r.out.empty());  // nothing reported as generated
  auto ok = run_lowbit({"run", "-m", stories(), "-p", "x", "-n", "2", "--memory-cap", "64"});
  CHECK(ok.code == 0);
  check_one_line_error(run_lowbit({"run", "-m", stories(), "-p", "x", "--memory-cap", "-1"}), 2, "--memory-cap");
}

// ---------------------------------------------------------------------------------------------
// The habits of llama.cpp and transformers users: typos, seeds, prompts from pipes and files,
// defaults from generation_config.json, stop strings, log-probabilities, provenance.

namespace {

using lowbit::test::RunResult;
using lowbit::test::shell_quote;

fs::path scratch(const std::string& name) {
  fs::path d = fs::temp_directory_path() / ("lowbit_cli13_" + std::to_string(getpid())) / name;
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

void write_file(const fs::path& p, const std::string& bytes) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out << bytes;
}

nlohmann::json run_json(const std::vector<std::string>& args, const std::string& stdin_path = "/dev/null") {
  std::vector<std::string> a{"run", "--json", "-q"};
  a.insert(a.end(), args.begin(), args.end());
  const RunResult r = run_lowbit(a, {}, stdin_path);
  INFO(r.err);
  REQUIRE(r.code == 0);
  return nlohmann::json::parse(r.out);
}

}  // namespace

TEST_CASE("typos get a did-you-mean; errors name the flag before the value", "[cli][habits]") {
  check_one_line_error(run_lowbit({"rn", "-p", "x"}), 2, "unknown command 'rn' (did you mean run?)");
  check_one_line_error(run_lowbit({"run", "--temprature", "0.5", "-p", "x"}), 2, "did you mean --temperature?");
  check_one_line_error(run_lowbit({"sweep", "--quant", "nf4", "--top_k", "1"}), 2, "did you mean --top-k?");
  for (const auto& [args, flag] : std::vector<std::pair<std::vector<std::string>, std::string>>{
           {{"run", "--top-k", "abc", "-p", "x"}, "--top-k"},
           {{"run", "-n", "lots", "-p", "x"}, "--max-new-tokens"},
           {{"run", "--temperature", "warm", "-p", "x"}, "--temperature"}}) {
    const RunResult r = run_lowbit(args);
    INFO(r.err);
    CHECK(r.code == 2);
    CHECK(r.err.rfind("error: " + flag + ": '", 0) == 0);  // "error: --top-k: 'abc' ...", not "The value abc ..."
  }
  CHECK(lowbit::cli::edit_distance("temprature", "temperature") == 1);
  CHECK(lowbit::cli::edit_distance("rnu", "run") == 1);  // a swap costs one
  CHECK(lowbit::cli::closest_name("bacth", {"run", "batch", "bench"}) == std::optional<std::string>("batch"));
  CHECK(!lowbit::cli::closest_name("zzzzzz", {"run", "batch"}).has_value());
}

TEST_CASE("--seed -1 is a random seed; seeds past 2^64-1 are refused, not clamped", "[cli][habits]") {
  const std::vector<std::string> base{"-m", stories(), "-p", "Once", "-n", "12", "--temperature", "1"};
  auto with_seed = [&](const std::string& seed) {
    std::vector<std::string> a = base;
    a.insert(a.end(), {"--seed", seed});
    return a;
  };
  const auto a = run_json(with_seed("-1")), b = run_json(with_seed("-1"));
  CHECK(a["seed"] != b["seed"]);  // two random 64-bit seeds
  CHECK(run_json(with_seed("18446744073709551615"))["seed"].get<uint64_t>() == 18446744073709551615ull);
  for (const char* bad : {"18446744073709551616", "-2", "1.5", "0x10"}) {
    INFO(bad);
    std::vector<std::string> args = with_seed(bad);
    args.insert(args.begin(), "run");
    check_one_line_error(run_lowbit(args), 2, "--seed");
  }
  // The same explicit seed twice: the same tokens.
  CHECK(run_json(with_seed("7"))["token_ids"] == run_json(with_seed("7"))["token_ids"]);
}

TEST_CASE("--ctx beyond max_position_embeddings warns; -c and --ctx-size are its aliases", "[cli][habits]") {
  const RunResult r = run_lowbit({"run", "-m", stories(), "-p", "Once", "-n", "2", "--ctx", "1024"});
  CHECK(r.code == 0);
  CHECK(r.err.find("warning: --ctx 1024 is beyond the model's max_position_embeddings 512") != std::string::npos);
  const RunResult quiet = run_lowbit({"run", "-m", stories(), "-p", "Once", "-n", "2", "-c", "256"});
  CHECK(quiet.code == 0);
  CHECK(quiet.err.find("warning") == std::string::npos);
  check_one_line_error(run_lowbit({"run", "-m", stories(), "-p", "x", "--ctx-size", "-3"}), 2, "--ctx");
  // --temp is --temperature
  CHECK(run_json({"-m", stories(), "-p", "Once", "-n", "3", "--temp", "0.5", "--seed", "1"})["temperature"] == 0.5);
}

TEST_CASE("without -m the bundled model is found next to the binary, or the error says where it looked",
          "[cli][habits]") {
  // From a folder with no models/ in it: build/lowbit finds ../models/stories260K.
  const fs::path elsewhere = scratch("elsewhere");
  const std::string cmd = "cd " + shell_quote(elsewhere.string()) + " && " + shell_quote(fs::absolute(lowbit_bin()).string()) +
                          " run -p Once -n 3 --temperature 0 -q </dev/null";
  FILE* p = popen(cmd.c_str(), "r");
  REQUIRE(p);
  char buf[256] = {};
  const size_t n = fread(buf, 1, sizeof buf - 1, p);
  CHECK(pclose(p) == 0);
  CHECK(std::string(buf, n) == "Once upon a time\n");
  // A copy of the binary with no model near it: one error line listing each place looked in.
  const fs::path lonely = scratch("lonely") / "lowbit";
  fs::copy_file(lowbit_bin(), lonely);
  const std::string cmd2 = "cd " + shell_quote(elsewhere.string()) + " && " + shell_quote(lonely.string()) +
                           " run -p x 2>&1 </dev/null";
  p = popen(cmd2.c_str(), "r");
  REQUIRE(p);
  std::string err;
  while (size_t k = fread(buf, 1, sizeof buf, p)) err.append(buf, k);
  CHECK(WEXITSTATUS(pclose(p)) == 2);
  CHECK(err.rfind("error: -m/--model: not given", 0) == 0);
  CHECK(err.find((lonely.parent_path().parent_path() / "models" / "stories260K").lexically_normal().string()) !=
        std::string::npos);
  CHECK(std::count(err.begin(), err.end(), '\n') == 1);
}

TEST_CASE("prompts: piped stdin, -f -, one trailing newline stripped, empty files refused, -p \"\" is BOS",
          "[cli][habits]") {
  const fs::path d = scratch("prompts");
  const std::vector<std::string> m{"-m", stories(), "-n", "3", "--temperature", "0"};
  auto with = [&](std::vector<std::string> extra) {
    std::vector<std::string> a = m;
    a.insert(a.end(), extra.begin(), extra.end());
    return a;
  };
  write_file(d / "line.txt", "The cat sat\n");
  CHECK(run_json(m, (d / "line.txt").string())["prompt"] == "The cat sat");  // piped: stdin is the prompt
  CHECK(run_json(with({"-f", "-"}), (d / "line.txt").string())["prompt"] == "The cat sat");
  CHECK(run_json(with({"-f", (d / "line.txt").string()}))["prompt"] == "The cat sat");
  write_file(d / "two.txt", "The cat sat\r\n\n");
  CHECK(run_json(with({"-f", (d / "two.txt").string()}))["prompt"] == "The cat sat\r\n");  // only one newline goes
  write_file(d / "empty.txt", "");
  write_file(d / "newline.txt", "\n");
  for (const char* f : {"empty.txt", "newline.txt"})
    check_one_line_error(run_lowbit({"run", "-m", stories(), "-f", (d / f).string()}), 1, "the prompt is empty");
  check_one_line_error(run_lowbit({"run", "-m", stories(), "-n", "3"}), 1, "stdin: the prompt is empty");
  // Generating from BOS alone is asked for with an explicit empty -p.
  const auto bos = run_json(with({"-p", ""}));
  CHECK(bos["prompt_tokens"] == 1);
  CHECK(bos["generated_tokens"] == 3);
  check_one_line_error(run_lowbit({"run", "-m", stories(), "-p", "x", "-f", (d / "line.txt").string()}), 2, "not both");
}

TEST_CASE("max_new_tokens: flag, else generation_config.json, else 256", "[cli][habits]") {
  const fs::path d = scratch("genconfig") / "model";
  fs::copy(stories(), d, fs::copy_options::recursive);
  const std::vector<std::string> run{"-m", d.string(), "-p", "Once", "--temperature", "1", "--seed", "3"};
  CHECK(run_json(run)["max_new_tokens"] == 256);
  write_file(d / "generation_config.json", R"({"max_new_tokens": 5, "eos_token_id": 511})");
  const auto from_config = run_json(run);
  CHECK(from_config["max_new_tokens"] == 5);
  CHECK(from_config["generated_tokens"] == 5);
  std::vector<std::string> flag = run;
  flag.insert(flag.end(), {"-n", "7"});
  CHECK(run_json(flag)["generated_tokens"] == 7);
}

TEST_CASE("run --json: sampling settings, ttft_s, shortest floats, provenance", "[cli][habits]") {
  const RunResult r = run_lowbit({"run", "-m", stories(), "-p", "Once", "-n", "4", "--temperature", "0.7", "--top-p",
                                  "0.9", "--min-p", "0.05", "--repeat-penalty", "1.1", "--seed", "5", "--json", "-q"});
  REQUIRE(r.code == 0);
  // 0.7f written as its shortest decimal, as the user typed it.
  CHECK(r.out.find("\"temperature\":0.7,") != std::string::npos);
  CHECK(r.out.find("\"top_p\":0.9,") != std::string::npos);
  const auto j = nlohmann::json::parse(r.out);
  CHECK(j["top_k"] == 50);
  CHECK(j["min_p"] == 0.05);
  CHECK(j["repetition_penalty"] == 1.1);
  CHECK(j["seed"] == 5);
  CHECK(j["max_new_tokens"] == 4);
  CHECK(j.contains("ttft_s"));
  CHECK(!j.contains("time_to_first_token_s"));
  const auto& p = j["provenance"];
  CHECK(!p["lowbit_commit"].get<std::string>().empty());
  CHECK(p["lowbit_version"].get<std::string>().find('.') != std::string::npos);
  CHECK(p["command"].get<std::string>().find("run -m") != std::string::npos);
  CHECK(p["date"].get<std::string>().size() == 20);  // 2026-11-24T10:03:17Z
  CHECK(p["device_name"].get<std::string>().rfind("cpu: ", 0) == 0);
  CHECK(p["model_config_sha256"] == lowbit::sha256_hex(slurp(fs::path(stories()) / "config.json")));
  CHECK(lowbit::sha256_hex("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  CHECK(lowbit::sha256_hex(std::string(1000, 'a')) ==
        "41edece42d63e8d9bf515a9ba6932e1c20cbc9f5a5d134645adb5db1b9737ea3");
}

TEST_CASE("--logprobs: the raw-logit log-probability of each token, tokens unchanged", "[cli][habits]") {
  for (const char* temperature : {"0", "0.9"}) {
    INFO("temperature " << temperature);
    const std::vector<std::string> args{"-m", stories(), "-p", "Once upon a time", "-n", "20", "--temperature",
                                        temperature, "--seed", "11"};
    std::vector<std::string> with = args;
    with.push_back("--logprobs");
    const auto plain = run_json(args), lp = run_json(with);
    CHECK(plain["token_ids"] == lp["token_ids"]);  // sampling on the host draws what the backend draws
    CHECK(!plain.contains("logprobs"));
    const auto ids = lp["token_ids"].get<std::vector<int32_t>>();
    const auto logprobs = lp["logprobs"].get<std::vector<double>>();
    REQUIRE(logprobs.size() == ids.size());
    // Against a teacher-forced forward pass of the same model (f32 on the CPU).
    lowbit::CpuBackend backend(2);
    auto model = lowbit::Model::load(stories(), backend, lowbit::LoadOptions{});
    std::vector<int32_t> fed = lowbit::Tokenizer::from_file(stories() + "/tokenizer.json").encode("Once upon a time");
    const size_t prompt = fed.size();
    fed.insert(fed.end(), ids.begin(), ids.end() - 1);
    std::vector<int> rows;
    for (size_t i = 0; i < ids.size(); ++i) rows.push_back(int(prompt + i) - 1);
    std::vector<float> logits(rows.size() * 512);
    model->forward(lowbit::prefill_batch(fed, 0), rows, logits.data());
    for (size_t i = 0; i < ids.size(); ++i) {
      CHECK(logprobs[i] <= 0);
      CHECK(logprobs[i] == Approx(lowbit::log_softmax_at({logits.data() + i * 512, 512}, ids[i])).margin(1e-4));
    }
  }
}

TEST_CASE("stop strings: generation ends at one, the text stops before it, streams never show it", "[cli][habits]") {
  const std::vector<std::string> args{"-m", stories(), "-p", "Once", "-n", "30", "--temperature", "0", "--stop", "time"};
  const auto j = run_json(args);
  CHECK(j["text"] == " upon a ");
  CHECK(j["stop_reason"] == "stop");
  CHECK(j["stop_string"] == "time");
  CHECK(j["generated_tokens"] == 3);  // " upon", " a", " time": the token that completes the stop
  std::vector<std::string> streamed{"run", "-q"};
  streamed.insert(streamed.end(), args.begin(), args.end());
  CHECK(run_lowbit(streamed).out == "Once upon a \n");
  std::vector<std::string> never = args;
  never.back() = "zebra";
  never.insert(never.end(), {"--stop", "elephant"});
  CHECK(run_json(never)["stop_reason"] == "length");
  check_one_line_error(run_lowbit({"run", "-m", stories(), "-p", "x", "--stop", ""}), 2, "--stop");

  // The matcher: text that may begin a stop string is held back until it cannot.
  lowbit::StopStringMatcher m({"time", "bcd"});
  CHECK(m.push("once ti") == "once ");
  CHECK(m.push("n") == "tin");
  CHECK(m.push("abc") == "a");
  CHECK(m.push("dxy") == "");  // "bcd" completed across pushes
  CHECK(m.matched());
  CHECK(m.match() == "bcd");
  lowbit::StopStringMatcher none({"stop"});
  CHECK(none.push("st") == "");
  CHECK(none.flush() == "st");
  CHECK(lowbit::cut_at_stop("a. b. c", {".", "b"}) == "a");
}

TEST_CASE("tokenize: -p, -f, stdin and --pieces", "[cli][habits]") {
  const fs::path d = scratch("tokenize");
  write_file(d / "t.txt", "Once upon a time\n");
  const RunResult p = run_lowbit({"tokenize", "-m", stories(), "-p", "Once upon a time"});
  REQUIRE(p.code == 0);
  CHECK(run_lowbit({"tokenize", "-m", stories(), "-f", (d / "t.txt").string()}).out == p.out);
  CHECK(run_cli({"tokenize", "-m", stories()}, (d / "t.txt").string()).out == p.out);
  CHECK(run_cli({"tokenize", "-m", stories(), "-f", "-"}, (d / "t.txt").string()).out == p.out);
  const RunResult pieces = run_lowbit({"tokenize", "-m", stories(), "--pieces", "-p", "Once upon"});
  REQUIRE(pieces.code == 0);
  CHECK(pieces.out.rfind("1\t\"<s>\"\n", 0) == 0);
  CHECK(pieces.out.find("\t\"\xe2\x96\x81upon\"\n") != std::string::npos);  // the SentencePiece word marker
}

TEST_CASE("info: bytes from the headers equal the loaded model's, head labels, --json", "[cli][habits]") {
  // Every fixture, every format, head kept and quantized: Model::plan (headers only) against
  // Model::load (quantized).
  for (const std::string name : {"llama-gqa-tied", "llama-untidy", "falcon-untidy", "falcon-7b-style", "falcon-40b-style"}) {
    for (lowbit::Format f : lowbit::all_formats()) {
      for (bool keep_head : {true, false}) {
        INFO(name << " " << lowbit::format_name(f) << " keep_head " << keep_head);
        lowbit::LoadOptions o;
        o.format = f;
        o.keep_head = keep_head;
        lowbit::CpuBackend backend(1);
        const auto model = lowbit::Model::load(data_dir() + "/models/" + name, backend, o);
        const lowbit::WeightPlan plan = lowbit::Model::plan(data_dir() + "/models/" + name, o);
        CHECK(plan.weight_bytes == model->weight_bytes());
        CHECK(plan.linear_bytes == model->linear_bytes());
        CHECK(plan.n_params == model->n_params());
        CHECK(plan.linear_params == model->linear_params());
        CHECK(plan.head_shares_embedding == model->head_shares_embedding());
      }
    }
  }
  const RunResult f32 = run_lowbit({"info", "-m", stories(), "--quant", "f32"});
  CHECK(f32.out.find("head f32, one copy shared with the embedding") != std::string::npos);
  const RunResult q = run_lowbit({"info", "-m", stories(), "--quant", "nf4", "--keep-head", "false"});
  CHECK(q.out.find("head nf4, a second, quantized copy of the tied embedding") != std::string::npos);
  const RunResult j = run_lowbit({"info", "-m", stories(), "--quant", "bf16", "--json"});
  REQUIRE(j.code == 0);
  const auto info = nlohmann::json::parse(j.out);
  CHECK(info["n_params"] == 260032);
  CHECK(info["head_shares_embedding"] == true);
  // One bf16 copy of the 512 x 64 tied embedding, bf16 linears, fp32 norms.
  CHECK(info["weight_bytes"] == 512 * 64 * 2 + 226560 * 2 + 11 * 64 * 4);
  CHECK(info["embedding_bytes"] == 512 * 64 * 2);
  CHECK(info["head_bytes"] == 0);
  // info reads headers, not weights: a model whose weights hold NaN (refused by every load) still
  // reports its bytes.
  const fs::path nan_model = scratch("nan") / "m";
  fs::copy(data_dir() + "/models/llama-gqa-tied", nan_model, fs::copy_options::recursive);
  {
    std::string bytes = slurp(nan_model / "model.safetensors");
    const float nan = std::numeric_limits<float>::quiet_NaN();
    std::memcpy(bytes.data() + bytes.size() - 4, &nan, 4);  // the last value of the last tensor
    write_file(nan_model / "model.safetensors", bytes);
  }
  CHECK(run_lowbit({"run", "-m", nan_model.string(), "-p", "x", "-n", "1"}).code == 1);
  CHECK(run_lowbit({"info", "-m", nan_model.string()}).code == 0);
}

TEST_CASE("a tied embedding/head is one resident copy, counted once; ppl bits/param follow", "[cli][habits]") {
  lowbit::CpuBackend backend(1);
  lowbit::LoadOptions o;
  o.format = lowbit::Format::F32;
  const auto f32 = lowbit::Model::load(stories(), backend, o);
  CHECK(f32->head_shares_embedding());
  CHECK(f32->weight_bytes() == 4 * f32->n_params());  // every parameter once, in fp32
  o.format = lowbit::Format::NF4;
  o.keep_head = false;
  const auto nf4 = lowbit::Model::load(stories(), backend, o);
  CHECK(!nf4->head_shares_embedding());  // a quantized head next to the 16-bit lookup table
  const RunResult ppl = run_lowbit({"ppl", "-m", stories(), "--quant", "f32,nf4", "-f",
                                    root_dir() + "/models/stories260K/reference-output.md", "--ctx-window", "64", "--json", "-q"});
  INFO(ppl.err);
  REQUIRE(ppl.code == 0);
  std::istringstream lines(ppl.out);
  std::string line;
  std::vector<nlohmann::json> recs;
  while (std::getline(lines, line)) recs.push_back(nlohmann::json::parse(line));
  REQUIRE(recs.size() == 2);
  CHECK(recs[0]["quant"] == "f32");
  CHECK(recs[0]["bits_per_param"].get<double>() == Approx(32.0));
  CHECK(recs[1]["quant"] == "nf4");
  CHECK(recs[1]["bits_per_param"].get<double>() < 8);
  check_one_line_error(run_lowbit({"ppl", "-m", stories(), "--quant", "f32,q3", "-f", "x"}), 2, "q3");
}

TEST_CASE("one name per concept: -o/--output, --batch-size, bench -p/-n, make-model infers --arch", "[cli][habits]") {
  const fs::path d = scratch("names");
  const RunResult made = run_lowbit({"make-model", "--preset", "tiny-llama", "--layers", "1", "-o",
                                     (d / "m").string(), "--tokenizer-from", ""});
  INFO(made.err);
  REQUIRE(made.code == 0);
  CHECK(fs::exists(d / "m" / "config.json"));
  check_one_line_error(run_lowbit({"make-model", "--arch", "falcon", "--preset", "tiny-llama", "-o", (d / "x").string()}),
                       2, "preset tiny-llama is a llama model");
  const RunResult bench = run_lowbit({"bench", "-m", (d / "m").string(), "--quant", "bf16", "-p", "8", "-n", "3",
                                      "--batch-size", "1,2", "-r", "1", "--json", "-q"});
  INFO(bench.err);
  REQUIRE(bench.code == 0);
  const auto b = nlohmann::json::parse(bench.out);
  REQUIRE(b["rows"].size() == 2);
  for (const auto& row : b["rows"]) {
    CHECK(row["quant"] == "bf16");
    CHECK(row["prompt_tokens"] == 8);
    CHECK(row["ttft_s"].get<double>() > 0);
    CHECK(!row.contains("ttft_ms"));
  }
  CHECK(b["generated_tokens"] == 3);
  // convert-llama2c refuses a non-empty folder without --force, as make-model does.
  const std::string ckpt = root_dir() + "/models/stories260K/stories260K.bin", tok = root_dir() + "/models/stories260K/tok512.bin";
  REQUIRE(run_lowbit({"convert-llama2c", "--checkpoint", ckpt, "--tokenizer", tok, "-o", (d / "c").string()}).code == 0);
  const std::string before = slurp(d / "c" / "config.json");
  write_file(d / "c" / "config.json", "mine");
  check_one_line_error(run_lowbit({"convert-llama2c", "--checkpoint", ckpt, "--tokenizer", tok, "-o", (d / "c").string()}),
                       2, "--force");
  CHECK(slurp(d / "c" / "config.json") == "mine");
  CHECK(run_lowbit({"convert-llama2c", "--checkpoint", ckpt, "--tokenizer", tok, "-o", (d / "c").string(), "--force"})
            .code == 0);
  CHECK(slurp(d / "c" / "config.json") == before);
}

// LOWBIT_CPU_KERNELS caps the CPU kernel level: an unknown name is a usage error before any work,
// and every level generates the same greedy text (the kernels give the plain loops' values).
TEST_CASE("LOWBIT_CPU_KERNELS picks the kernel level", "[cli]") {
  const std::vector<std::string> args = {"run", "-m", stories(), "-n", "24", "--temperature", "0", "--quant", "nf4",
                                         "-p", "Once upon a time"};
  const Result default_level = run_lowbit(args);
  REQUIRE(default_level.code == 0);
  for (const char* level : {"plain", "avx2", "avx512", "avx512-vnni"}) {
    INFO("LOWBIT_CPU_KERNELS=" << level);
    setenv("LOWBIT_CPU_KERNELS", level, 1);
    const Result r = run_lowbit(args);
    unsetenv("LOWBIT_CPU_KERNELS");
    CHECK(r.code == 0);
    CHECK(r.out == default_level.out);
  }
  setenv("LOWBIT_CPU_KERNELS", "avx9", 1);
  const Result bad = run_lowbit(args);
  unsetenv("LOWBIT_CPU_KERNELS");
  check_one_line_error(bad, 2, "LOWBIT_CPU_KERNELS='avx9'");
}

// The two backends' opt-in approximations are each refused on the other backend, before any work.
TEST_CASE("--cuda-fast-prefill is refused on the CPU backend", "[cli]") {
  check_one_line_error(run_lowbit({"run", "-m", stories(), "-p", "x", "--device", "cpu", "--cuda-fast-prefill"}), 2,
                       "--cuda-fast-prefill applies to the CUDA backend only");
  check_one_line_error(run_lowbit({"bench", "-m", stories(), "--device", "cpu", "--cuda-fast-prefill"}), 2,
                       "--cuda-fast-prefill applies to the CUDA backend only");
}

// The binary does not link the CUDA libraries (its CUDA backend is the module liblowbit_cuda.so,
// loaded when a run may use CUDA and a driver exists): their names are not among its needed
// libraries, whose names the dynamic string table holds.
TEST_CASE("the lowbit binary links no CUDA library; without a driver --device cuda says why", "[cli]") {
  std::ifstream in(lowbit_bin(), std::ios::binary);
  REQUIRE(in.good());
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  REQUIRE(bytes.size() > 100000);
  REQUIRE(bytes.find("libstdc++.so") != std::string::npos);  // the needed libraries are readable here
  for (const char* lib : {"libcudart.so", "libcublas.so", "libcublasLt.so"}) {
    INFO(lib);
    CHECK(bytes.find(lib) == std::string::npos);
  }
#if LOWBIT_HAVE_CUDA
  if (dlopen("libcuda.so.1", RTLD_LAZY) == nullptr) {
    const lowbit::test::RunResult r = run_lowbit({"run", "-m", stories(), "-p", "x", "--device", "cuda"});
    CHECK(r.code != 0);
    CHECK(r.err.find("no CUDA device is available (no CUDA driver (libcuda.so.1 not found))") != std::string::npos);
  }
#endif
}

// --w4-group reaches QuantOptions::w4_group: `info` reports the bytes Model::plan computes with
// that group size, more bytes for smaller groups (one fp16 scale and zero point per group).
TEST_CASE("--w4-group sets the W4A16 group size", "[cli]") {
  check_one_line_error(run_lowbit({"run", "-m", stories(), "-p", "x", "--w4-group", "0"}), 2, "--w4-group");
  auto linear_bytes = [](const std::vector<std::string>& extra) {
    std::vector<std::string> args{"info", "-m", stories(), "--device", "cpu", "--quant", "W4A16", "--json"};
    args.insert(args.end(), extra.begin(), extra.end());
    const Result r = run_lowbit(args);
    INFO(r.err);
    REQUIRE(r.code == 0);
    return nlohmann::json::parse(r.out).at("linear_bytes").get<size_t>();
  };
  lowbit::LoadOptions opts;
  opts.format = lowbit::Format::W4A16;
  opts.quant.w4_group = 32;
  CHECK(linear_bytes({"--w4-group", "32"}) == lowbit::Model::plan(stories(), opts).linear_bytes);
  opts.quant.w4_group = 128;
  CHECK(linear_bytes({}) == lowbit::Model::plan(stories(), opts).linear_bytes);
  CHECK(linear_bytes({"--w4-group", "32"}) > linear_bytes({}));
}
