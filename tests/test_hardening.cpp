// Hostile input: damaged model folders, bad prompts and flags, unwritable outputs and SIGINT, each
// run through the real binary and held to the error contract (exit 1 or 2, one "error: " line
// naming the problem, last on stderr); plus the fuzz corpora and saved fuzz crashes replayed
// through the fuzz targets' own entry points (tests/fuzz/targets.h).
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "fuzz/targets.h"
#include "test_util.h"

namespace fs = std::filesystem;
using json = nlohmann::json;
using lowbit::test::data_dir;
using lowbit::test::lowbit_bin;
using lowbit::test::root_dir;
using lowbit::test::run_lowbit;

using lowbit::test::slurp;

namespace {

using Result = lowbit::test::RunResult;

void spit(const fs::path& p, const std::string& bytes) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out << bytes;
}

// One scratch folder per test process (damaged model copies, outputs), removed at exit.
fs::path scratch() {
  struct Dir {
    fs::path path = fs::temp_directory_path() / ("lowbit_hardening_" + std::to_string(getpid()));
    ~Dir() {
      std::error_code ec;
      if (getpid() == owner) fs::remove_all(path, ec);
    }
    pid_t owner = getpid();
  };
  static Dir dir;
  fs::create_directories(dir.path);
  return dir.path;
}

// The error contract: exit `code`; the last stderr line starts "error: ", holds `needle`, and is
// the only "error: " line; for usage errors (2) it is the only line at all.
void check_error(const Result& r, int code, const std::string& needle) {
  INFO("exit " << r.code << ", stderr: " << r.err);
  CHECK(r.code == code);
  REQUIRE(!r.err.empty());
  CHECK(r.err.back() == '\n');
  const size_t nl = r.err.find_last_of('\n', r.err.size() - 2);
  const std::string last = r.err.substr(nl == std::string::npos ? 0 : nl + 1);
  CHECK(last.rfind("error: ", 0) == 0);
  CHECK(last.find(needle) != std::string::npos);
  size_t errors = 0;
  for (size_t p = 0; (p = r.err.find("error: ", p)) != std::string::npos; ++p) ++errors;
  CHECK(errors == 1);
  if (code == 2) CHECK(nl == std::string::npos);
}

fs::path copy_fixture(const std::string& tag) {
  const fs::path dst = scratch() / ("model_" + tag);
  fs::remove_all(dst);
  fs::copy(data_dir() + "/models/llama-gqa-tied", dst, fs::copy_options::recursive);
  for (const auto& e : fs::directory_iterator(dst)) fs::permissions(e.path(), fs::perms::owner_read | fs::perms::owner_write, fs::perm_options::add);
  return dst;
}

// A safetensors file as header JSON + data section, to damage and write back.
struct Safetensors {
  json header;
  std::string data;

  static Safetensors read(const fs::path& p) {
    const std::string bytes = slurp(p);
    uint64_t n = 0;
    std::memcpy(&n, bytes.data(), 8);
    return {json::parse(bytes.substr(8, n)), bytes.substr(8 + n)};
  }
  void write(const fs::path& p) const {
    const std::string h = header.dump();
    const uint64_t n = h.size();
    spit(p, std::string(reinterpret_cast<const char*>(&n), 8) + h + data);
  }
  // The tensor names in data order.
  std::vector<std::string> names_in_data_order() const {
    std::vector<std::string> names;
    for (auto it = header.begin(); it != header.end(); ++it)
      if (it.key() != "__metadata__") names.push_back(it.key());
    std::sort(names.begin(), names.end(), [&](const std::string& a, const std::string& b) {
      return header[a]["data_offsets"][0].get<uint64_t>() < header[b]["data_offsets"][0].get<uint64_t>();
    });
    return names;
  }
  // Lays the tensors out again in `order`, with `gap` bytes of junk before each.
  void relayout(const std::vector<std::string>& order, size_t gap) {
    std::string out;
    for (const auto& name : order) {
      auto& off = header[name]["data_offsets"];
      const uint64_t b = off[0], e = off[1];
      out.append(gap, '\x5a');
      off = {out.size(), out.size() + (e - b)};
      out.append(data, b, e - b);
    }
    data = out;
  }
};

const std::vector<std::string> kRun = {"run", "-p", "Once upon a time", "-n", "8", "--temperature", "0", "--no-echo", "-q"};

Result run_model(const fs::path& dir, std::vector<std::string> extra = {}) {
  std::vector<std::string> args = kRun;
  args.insert(args.begin() + 1, {"-m", dir.string()});
  args.insert(args.end(), extra.begin(), extra.end());
  return run_lowbit(args);
}

json read_json(const fs::path& p) { return json::parse(slurp(p)); }
void write_json(const fs::path& p, const json& j) { spit(p, j.dump(1)); }

const char* kQ = "model.layers.0.self_attn.q_proj.weight";
const char* kK = "model.layers.0.self_attn.k_proj.weight";

}  // namespace

// --- safetensors -----------------------------------------------------------------------------

TEST_CASE("hardening: safetensors cut inside the data", "[hardening]") {
  auto d = copy_fixture("cut_data");
  fs::resize_file(d / "model.safetensors", fs::file_size(d / "model.safetensors") - 1000);
  check_error(run_model(d), 1, "past the end of the data");
}

TEST_CASE("hardening: safetensors cut inside the header", "[hardening]") {
  auto d = copy_fixture("cut_header");
  fs::resize_file(d / "model.safetensors", 100);
  check_error(run_model(d), 1, "runs past the end of the file");
}

TEST_CASE("hardening: safetensors shorter than the length field", "[hardening]") {
  auto d = copy_fixture("cut_len");
  fs::resize_file(d / "model.safetensors", 5);
  check_error(run_model(d), 1, "too short for a safetensors file");
}

TEST_CASE("hardening: header length beyond the file", "[hardening]") {
  auto d = copy_fixture("hdr_beyond");
  std::string bytes = slurp(d / "model.safetensors");
  const uint64_t n = bytes.size();  // larger than what follows the length field
  std::memcpy(bytes.data(), &n, 8);
  spit(d / "model.safetensors", bytes);
  check_error(run_model(d), 1, "runs past the end of the file");
}

TEST_CASE("hardening: a header claiming more than 100 MB is refused before it is read", "[hardening]") {
  auto d = copy_fixture("hdr_huge");
  std::string bytes = slurp(d / "model.safetensors");
  const uint64_t n = (100ull << 20) + 1;
  std::memcpy(bytes.data(), &n, 8);
  spit(d / "model.safetensors", bytes);
  check_error(run_model(d), 1, "over the 100 MB limit");
}

TEST_CASE("hardening: a header that is not JSON", "[hardening]") {
  auto d = copy_fixture("hdr_junk");
  std::string bytes = slurp(d / "model.safetensors");
  bytes[20] = '\x01';
  spit(d / "model.safetensors", bytes);
  check_error(run_model(d), 1, "not valid JSON");
}

TEST_CASE("hardening: out-of-order data is legal and loads the same weights", "[hardening]") {
  auto ref = run_model(data_dir() + "/models/llama-gqa-tied");
  REQUIRE(ref.code == 0);
  auto d = copy_fixture("reordered");
  auto st = Safetensors::read(d / "model.safetensors");
  auto order = st.names_in_data_order();
  std::reverse(order.begin(), order.end());
  st.relayout(order, 0);
  st.write(d / "model.safetensors");
  auto r = run_model(d);
  INFO(r.err);
  CHECK(r.code == 0);
  CHECK(r.out == ref.out);
}

// The safetensors spec says the data section "cannot contain holes"; lowbit reads every tensor by
// its own offsets, so holes cannot change a weight, and it accepts them (see README Hardening).
TEST_CASE("hardening: gaps between tensors do not change the weights read", "[hardening]") {
  auto ref = run_model(data_dir() + "/models/llama-gqa-tied");
  REQUIRE(ref.code == 0);
  auto d = copy_fixture("gaps");
  auto st = Safetensors::read(d / "model.safetensors");
  st.relayout(st.names_in_data_order(), 24);
  st.write(d / "model.safetensors");
  auto r = run_model(d);
  INFO(r.err);
  CHECK(r.code == 0);
  CHECK(r.out == ref.out);
}

TEST_CASE("hardening: overlapping tensors", "[hardening]") {
  auto d = copy_fixture("overlap");
  auto st = Safetensors::read(d / "model.safetensors");
  const uint64_t b = st.header[kQ]["data_offsets"][0];
  st.header[kK]["data_offsets"] = {b + 4, b + 4 + 32 * 64 * 4};
  st.write(d / "model.safetensors");
  check_error(run_model(d), 1, "overlapping tensor");
}

TEST_CASE("hardening: offsets past the end of the data", "[hardening]") {
  auto d = copy_fixture("past_end");
  auto st = Safetensors::read(d / "model.safetensors");
  const uint64_t end = st.data.size();
  st.header[kK]["data_offsets"] = {end - 100, end - 100 + 32 * 64 * 4};
  st.write(d / "model.safetensors");
  check_error(run_model(d), 1, "past the end of the data");
}

TEST_CASE("hardening: offsets that end before they begin", "[hardening]") {
  auto d = copy_fixture("backwards");
  auto st = Safetensors::read(d / "model.safetensors");
  st.header[kK]["data_offsets"] = {1000, 8};
  st.write(d / "model.safetensors");
  check_error(run_model(d), 1, "end before they begin");
}

TEST_CASE("hardening: dtype and shape disagree with the byte count", "[hardening]") {
  SECTION("shape") {
    auto d = copy_fixture("size_shape");
    auto st = Safetensors::read(d / "model.safetensors");
    st.header[kK]["shape"] = {32, 63};
    st.write(d / "model.safetensors");
    check_error(run_model(d), 1, "needs 8064");
  }
  SECTION("dtype") {
    auto d = copy_fixture("size_dtype");
    auto st = Safetensors::read(d / "model.safetensors");
    st.header[kK]["dtype"] = "BF16";
    st.write(d / "model.safetensors");
    check_error(run_model(d), 1, "of BF16 needs 4096");
  }
  SECTION("unknown dtype") {
    auto d = copy_fixture("size_i64");
    auto st = Safetensors::read(d / "model.safetensors");
    st.header[kK]["dtype"] = "I64";
    st.write(d / "model.safetensors");
    check_error(run_model(d), 1, "has dtype I64");
  }
  SECTION("negative dimension") {
    auto d = copy_fixture("size_neg");
    auto st = Safetensors::read(d / "model.safetensors");
    st.header[kK]["shape"] = {-32, -64};
    st.write(d / "model.safetensors");
    check_error(run_model(d), 1, "negative dimension");
  }
}

TEST_CASE("hardening: a tensor missing from the file", "[hardening]") {
  auto d = copy_fixture("missing");
  auto st = Safetensors::read(d / "model.safetensors");
  st.header.erase(kK);
  st.write(d / "model.safetensors");
  check_error(run_model(d), 1, std::string("tensor '") + kK + "' is missing");
}

TEST_CASE("hardening: an extra tensor in the file", "[hardening]") {
  auto d = copy_fixture("extra");
  auto st = Safetensors::read(d / "model.safetensors");
  st.header["model.layers.0.self_attn.q_norm.weight"] = st.header["model.norm.weight"];
  // Its own 256 bytes at the end, so only "unexpected" can be the complaint.
  st.header["model.layers.0.self_attn.q_norm.weight"]["data_offsets"] = {st.data.size(), st.data.size() + 256};
  st.data.append(256, '\0');
  st.write(d / "model.safetensors");
  check_error(run_model(d), 1, "unexpected tensor 'model.layers.0.self_attn.q_norm.weight'");
}

TEST_CASE("hardening: a tensor misshapen against config.json", "[hardening]") {
  auto d = copy_fixture("misshapen");
  auto st = Safetensors::read(d / "model.safetensors");
  st.header[kK]["shape"] = {64, 32};  // transposed: same bytes, wrong shape
  st.write(d / "model.safetensors");
  check_error(run_model(d), 1, "has shape [64, 32], expected [32, 64]");
}

TEST_CASE("hardening: shards named by an index that are missing or escape the folder", "[hardening]") {
  SECTION("missing shard") {
    auto d = copy_fixture("index_missing");
    fs::rename(d / "model.safetensors", d / "model-00001-of-00001.safetensors");
    json wm;
    for (const auto& n : Safetensors::read(d / "model-00001-of-00001.safetensors").names_in_data_order())
      wm[n] = "model-00001-of-00001.safetensors";
    wm[kK] = "model-00002-of-00002.safetensors";
    write_json(d / "model.safetensors.index.json", {{"weight_map", wm}});
    check_error(run_model(d), 1, "does not exist");
  }
  SECTION("escaping shard") {
    auto d = copy_fixture("index_escape");
    write_json(d / "model.safetensors.index.json", {{"weight_map", {{kK, "../model_missing/model.safetensors"}}}});
    check_error(run_model(d), 1, "outside the model folder");
  }
}

// Non-finite weights are refused at load with a line naming the file and tensor (Model::load
// checks every value as it converts it), in every format: a quantizer would otherwise turn NaN
// into a finite code and the model would generate plausible garbage (README "Hardening").
void write_nonfinite(const fs::path& d, const char* tensor, float v, int stride) {
  auto st = Safetensors::read(d / "model.safetensors");
  const uint64_t b = st.header[tensor]["data_offsets"][0], e = st.header[tensor]["data_offsets"][1];
  for (uint64_t at = b; at < e; at += 4 * uint64_t(stride)) std::memcpy(&st.data[at], &v, 4);
  st.write(d / "model.safetensors");
}

void check_nonfinite_refused(const Result& r, const std::string& tensor) {
  check_error(r, 1, tensor);
  const bool named = r.err.find("NaN") != std::string::npos || r.err.find("Inf") != std::string::npos ||
                     r.err.find("non-finite") != std::string::npos;
  CHECK(named);
}

TEST_CASE("hardening: NaN and Inf weights are refused (f32)", "[hardening]") {
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  for (const auto& [tag, v] : std::vector<std::pair<std::string, float>>{{"nan", nan}, {"inf", inf}}) {
    auto d = copy_fixture("nonfinite_" + tag);
    write_nonfinite(d, "model.norm.weight", v, 1);
    INFO(tag);
    check_nonfinite_refused(run_model(d), "model.norm.weight");
  }
  auto d = copy_fixture("nonfinite_mlp");
  write_nonfinite(d, "model.layers.0.mlp.down_proj.weight", nan, 7);
  check_nonfinite_refused(run_model(d, {"--quant", "bf16"}), "model.layers.0.mlp.down_proj.weight");
}

// The quantizers map NaN to a finite code, so the check must come before them.
TEST_CASE("hardening: NaN weights are refused under quantized formats", "[hardening]") {
  auto d = copy_fixture("nonfinite_quant");
  write_nonfinite(d, "model.layers.0.mlp.down_proj.weight", std::numeric_limits<float>::quiet_NaN(), 7);
  for (const char* q : {"int8", "nf4", "fp4-dq", "W4A16", "W8A8"}) {
    INFO("--quant " << q);
    auto r = run_model(d, {"--quant", q});
    check_nonfinite_refused(r, "model.layers.0.mlp.down_proj.weight");
  }
}

// --- config.json -----------------------------------------------------------------------------

TEST_CASE("hardening: config.json with bad sizes or an unknown architecture", "[hardening]") {
  struct Case {
    const char* field;
    json value;
    const char* needle;
  };
  const std::vector<Case> cases = {
      {"hidden_size", 0, "\"hidden_size\""},
      {"num_hidden_layers", -2, "\"num_hidden_layers\""},
      {"intermediate_size", -160, "\"intermediate_size\""},
      {"vocab_size", 0, "\"vocab_size\""},
      {"num_key_value_heads", 3, "does not divide the number of heads"},
      {"architectures", json::array({"GPT2LMHeadModel"}), "GPT2LMHeadModel"},
      {"hidden_size", "64", "\"hidden_size\""},
  };
  for (const auto& c : cases) {
    auto d = copy_fixture(std::string("cfg_") + c.field);
    auto cfg = read_json(d / "config.json");
    cfg[c.field] = c.value;
    write_json(d / "config.json", cfg);
    INFO(c.field << " = " << c.value.dump());
    check_error(run_model(d), 1, c.needle);
  }
}

TEST_CASE("hardening: heads not dividing the hidden size", "[hardening]") {
  auto d = copy_fixture("cfg_heads");
  auto cfg = read_json(d / "config.json");
  cfg.erase("head_dim");
  cfg["num_attention_heads"] = 6;
  cfg["num_key_value_heads"] = 2;
  write_json(d / "config.json", cfg);
  check_error(run_model(d), 1, "does not divide hidden_size");
}

TEST_CASE("hardening: config.json missing", "[hardening]") {
  auto d = copy_fixture("cfg_missing");
  fs::remove(d / "config.json");
  check_error(run_model(d), 1, "config.json");
}

// --- tokenizer.json --------------------------------------------------------------------------

TEST_CASE("hardening: tokenizer.json missing or malformed", "[hardening]") {
  SECTION("missing") {
    auto d = copy_fixture("tok_missing");
    fs::remove(d / "tokenizer.json");
    check_error(run_model(d), 1, "tokenizer.json");
  }
  SECTION("not JSON") {
    auto d = copy_fixture("tok_junk");
    spit(d / "tokenizer.json", "{\"model\": {\"type\": \"BPE\",");
    check_error(run_model(d), 1, "tokenizer.json: not valid JSON");
  }
  SECTION("no model") {
    auto d = copy_fixture("tok_nomodel");
    spit(d / "tokenizer.json", "{\"version\": \"1.0\"}");
    check_error(run_model(d), 1, "no \"model\"");
  }
  SECTION("merges of the wrong type") {
    auto d = copy_fixture("tok_merges");
    auto tok = read_json(d / "tokenizer.json");
    tok["model"]["merges"] = json::array({3, json::array({"a"})});
    write_json(d / "tokenizer.json", tok);
    check_error(run_model(d), 1, "tokenizer.json");
  }
  SECTION("a vocabulary id far past the vocabulary (would ask for gigabytes)") {
    auto d = copy_fixture("tok_far_id");
    auto tok = read_json(d / "tokenizer.json");
    tok["model"]["vocab"]["zzz-far"] = 150000000;
    write_json(d / "tokenizer.json", tok);
    check_error(run_model(d), 1, "id 150000000 of token 'zzz-far' is far past");
  }
  SECTION("two tokens with one id") {
    auto d = copy_fixture("tok_dup_id");
    auto tok = read_json(d / "tokenizer.json");
    tok["model"]["vocab"]["zzz-dup"] = 5;
    write_json(d / "tokenizer.json", tok);
    check_error(run_model(d), 1, "id 5 is given to both");
  }
}

// --- prompts ---------------------------------------------------------------------------------

TEST_CASE("hardening: a prompt longer than the context, and --truncate", "[hardening]") {
  std::string longp;
  for (int i = 0; i < 40; ++i) longp += "Once upon a time ";
  const std::string m = data_dir() + "/models/llama-gqa-tied";
  check_error(run_lowbit({"run", "-m", m, "--ctx", "16", "-p", longp, "-n", "2"}), 1, "but the context holds 16");
  auto ok = run_lowbit({"run", "-m", m, "--ctx", "16", "-p", longp, "-n", "2", "--truncate", "--json"});
  INFO(ok.err);
  REQUIRE(ok.code == 0);
  CHECK(json::parse(ok.out)["prompt_tokens"].get<int>() == 15);
}

TEST_CASE("hardening: invalid UTF-8 in a prompt, by -p and by -f", "[hardening]") {
  const std::string m = data_dir() + "/models/llama-gqa-tied";
  check_error(run_lowbit({"run", "-m", m, "-p", "ok \xc3\x28 no", "-n", "2"}), 1, "UTF-8");
  const fs::path f = scratch() / "bad_prompt.txt";
  spit(f, "Once upon\xed\xa0\x80 a time");  // an encoded surrogate
  check_error(run_lowbit({"run", "-m", m, "-f", f.string(), "-n", "2"}), 1, "UTF-8");
  check_error(run_lowbit({"run", "-m", m, "-f", (scratch() / "no_such_prompt.txt").string(), "-n", "2"}), 1,
              "cannot open prompt file");
}

// --- flags -----------------------------------------------------------------------------------

TEST_CASE("hardening: flag values out of range are usage errors naming the flag", "[hardening]") {
  const std::string m = data_dir() + "/models/llama-gqa-tied";
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"--temperature", "-0.5"}, "--temperature"},
      {{"--temperature", "nan"}, "--temperature"},
      {{"--temperature", "1", "--top-p", "0"}, "--top-p"},
      {{"--temperature", "1", "--top-p", "1.0001"}, "--top-p"},
      {{"--top-k", "-3"}, "--top-k"},
      {{"-n", "-5"}, "--max-new-tokens"},
      {{"--ctx", "-1"}, "--ctx"},
      {{"--threads", "-2"}, "--threads"},
      {{"--block-size", "48"}, "--block-size"},
      {{"--temperature", "warm"}, "--temperature"},
  };
  for (const auto& [flags, needle] : cases) {
    std::vector<std::string> args = {"run", "-m", m, "-p", "x"};
    args.insert(args.end(), flags.begin(), flags.end());
    INFO(flags[0] << " " << flags[1]);
    check_error(run_lowbit(args), 2, needle);
  }
}

// --- outputs ---------------------------------------------------------------------------------

TEST_CASE("hardening: an unwritable output folder", "[hardening]") {
  const std::string ckpt = root_dir() + "/models/stories260K/stories260K.bin";
  const std::string tok = root_dir() + "/models/stories260K/tok512.bin";
  check_error(run_lowbit({"convert-llama2c", "--checkpoint", ckpt, "--tokenizer", tok, "--out", "/proc/lowbit-forbidden"}),
              1, "/proc/lowbit-forbidden");
  // A path through a regular file cannot be a folder, for root as for anyone.
  const fs::path file = scratch() / "a_file";
  spit(file, "x");
  check_error(run_lowbit({"convert-llama2c", "--checkpoint", ckpt, "--tokenizer", tok, "--out", (file / "out").string()}),
              1, "a_file");
}

// --- signals ---------------------------------------------------------------------------------

// SIGINT while generating: the text so far is printed, then exit 130. The model is stories260K
// with a context made long enough that greedy generation runs for seconds; the signal is sent
// once generated text has been read, so the test does not depend on the machine's speed.
TEST_CASE("hardening: SIGINT during run prints the text so far and exits 130", "[hardening]") {
  const fs::path d = scratch() / "model_sigint";
  fs::remove_all(d);
  fs::copy(root_dir() + "/models/stories260K", d, fs::copy_options::recursive);
  auto cfg = read_json(d / "config.json");
  cfg["max_position_embeddings"] = 1 << 20;
  cfg["eos_token_id"] = 511;  // a token greedy decoding does not reach in this run
  write_json(d / "config.json", cfg);
  const std::string prompt = "Once upon a time";
  const std::string bin = lowbit_bin();
  const std::vector<std::string> args = {bin, "run", "-m", d.string(), "-p", prompt, "-n", "1000000",
                                         "--temperature", "0", "-t", "1"};
  const fs::path err = scratch() / "sigint_err";
  int pipefd[2];
  REQUIRE(pipe(pipefd) == 0);
  const pid_t pid = fork();
  if (pid == 0) {
    std::vector<char*> argv;
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    dup2(pipefd[1], 1);
    const int e = ::open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(e, 2);
    close(pipefd[0]);
    execv(bin.c_str(), argv.data());
    _exit(127);
  }
  close(pipefd[1]);
  std::string out;
  bool sent = false;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  for (;;) {
    pollfd p{pipefd[0], POLLIN, 0};
    if (std::chrono::steady_clock::now() > deadline) {
      kill(pid, SIGKILL);
      FAIL("lowbit run did not finish within 120 s of starting (SIGINT sent: " << sent << ")");
    }
    if (poll(&p, 1, 1000) <= 0) continue;
    char buf[4096];
    const ssize_t n = read(pipefd[0], buf, sizeof buf);
    if (n <= 0) break;
    out.append(buf, size_t(n));
    if (!sent && out.size() > prompt.size() + 200) {
      kill(pid, SIGINT);
      sent = true;
    }
  }
  close(pipefd[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  const std::string errs = slurp(err);
  INFO("stderr: " << errs);
  REQUIRE(sent);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 130);
  CHECK(out.rfind(prompt, 0) == 0);
  CHECK(out.size() > prompt.size() + 200);
  CHECK(out.back() == '\n');  // the stream was finished, not cut
  CHECK(errs.find("stop: interrupted") != std::string::npos);
  CHECK(errs.find("error: ") == std::string::npos);
}

// --- GPU -------------------------------------------------------------------------------------

// There is no flag to cap GPU memory (cuda_context.h has a capped allocator, but no command line
// reaches it), so an allocation failure cannot be simulated here; on a machine without a GPU,
// --device cuda must still be one line and exit 1.
TEST_CASE("hardening: --device cuda without a usable GPU is one error line", "[hardening]") {
  auto r = run_model(data_dir() + "/models/llama-gqa-tied", {"--device", "cuda"});
  if (r.code == 0) {
    WARN("a CUDA device is present; the no-GPU error path is not exercised here");
    return;
  }
  check_error(r, 1, "CUDA");
}

// --- fuzz corpora and saved crashes -----------------------------------------------------------

namespace {

using FuzzTarget = int (*)(const uint8_t*, size_t);

const std::vector<std::pair<std::string, FuzzTarget>>& fuzz_targets() {
  static const std::vector<std::pair<std::string, FuzzTarget>> targets = {
      {"safetensors", lowbit::fuzz::safetensors},
      {"safetensors_index", lowbit::fuzz::safetensors_index},
      {"config", lowbit::fuzz::config},
      {"tokenizer_json", lowbit::fuzz::tokenizer_json},
      {"tokenizer_encode", lowbit::fuzz::tokenizer_encode},
      {"llama2c", lowbit::fuzz::llama2c},
      {"gguf", lowbit::fuzz::gguf},
  };
  return targets;
}

// Runs one input in a child process, so an abort() or a crash fails this input only; returns the
// child's exit status (0 = clean).
int replay_in_child(FuzzTarget target, const fs::path& input) {
  const std::string bytes = slurp(input);
  std::fflush(nullptr);
  const pid_t pid = fork();
  if (pid == 0) {
    for (int sig : {SIGABRT, SIGSEGV, SIGBUS, SIGFPE, SIGILL}) signal(sig, SIG_DFL);  // not Catch's
    try {
      target(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
    } catch (const std::exception& e) {
      std::fprintf(stderr, "%s: uncaught exception: %s\n", input.c_str(), e.what());
      _exit(3);
    }
    _exit(0);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// Replays the inputs of `kind` (corpus or regressions) whose name starts with "open-" (open: a
// saved failure whose fix belongs to another module) or not.
size_t replay(const char* kind, bool open) {
  size_t n = 0;
  for (const auto& [name, target] : fuzz_targets()) {
    const fs::path dir = fs::path(root_dir()) / "tests" / "fuzz" / kind / name;
    if (!fs::is_directory(dir)) continue;
    for (const auto& e : fs::directory_iterator(dir)) {
      if ((e.path().filename().string().rfind("open-", 0) == 0) != open) continue;
      INFO(e.path().string());
      CHECK(replay_in_child(target, e.path()) == 0);
      ++n;
    }
  }
  return n;
}

}  // namespace

TEST_CASE("hardening: fuzz seed corpora replay cleanly", "[hardening][fuzz]") { CHECK(replay("corpus", false) > 50); }

// A fixed fuzz failure stays fixed. Every saved file is replayed: the count replay() returns is
// held to the files in the folder, counted here on their own, so a folder renamed away from its
// target (or emptied) fails instead of replaying nothing.
TEST_CASE("hardening: fixed fuzz regressions stay fixed", "[hardening][fuzz]") {
  const fs::path dir = fs::path(root_dir()) / "tests" / "fuzz" / "regressions";
  size_t saved = 0;
  for (const auto& e : fs::recursive_directory_iterator(dir))
    if (e.is_regular_file() && e.path().filename().string().rfind("open-", 0) != 0) ++saved;
  const size_t replayed = replay("regressions", false);
  CHECK(replayed > 0);
  CHECK(replayed == saved);
}

// No saved failure is open now; a new one named "open-*" (a failure in another module) must
// be fixed and renamed, so any open file fails here.
TEST_CASE("hardening: no open fuzz regressions", "[hardening][fuzz]") { CHECK(replay("regressions", true) == 0); }
