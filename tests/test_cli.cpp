// The lowbit binary as a user runs it: exit codes, one-line errors, streamed vs JSON output.
#include <catch2/catch.hpp>

#include <sys/wait.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "test_util.h"

namespace fs = std::filesystem;
using lowbit::test::data_dir;
using lowbit::test::lowbit_bin;
using lowbit::test::root_dir;

using lowbit::test::slurp;

namespace {

using Result = lowbit::test::RunResult;

std::string quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) {
    if (c == '\'')
      q.append("'\\''");
    else
      q.push_back(c);
  }
  return q + "'";
}

Result run_lowbit(const std::vector<std::string>& args) {
  static int counter = 0;
  fs::path dir = fs::temp_directory_path() / ("lowbit_cli_" + std::to_string(getpid()));
  fs::create_directories(dir);
  fs::path out = dir / ("out" + std::to_string(counter)), err = dir / ("err" + std::to_string(counter++));
  std::string cmd = quote(lowbit_bin());
  for (const auto& a : args) {
    cmd.push_back(' ');
    cmd.append(quote(a));
  }
  cmd.append(" >").append(quote(out.string())).append(" 2>").append(quote(err.string())).append(" </dev/null");
  int status = std::system(cmd.c_str());
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, slurp(out), slurp(err)};
}

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
    auto r = run_lowbit({"run", "-m", stories(), "-n", "60", "--temperature", "1", "--seed", seed, "--json"});
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
