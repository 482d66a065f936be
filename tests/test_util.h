// Helpers shared by the test binaries: where the test data lives, running the lowbit binary.
#pragma once
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

// 1 when this test binary is built with AddressSanitizer (clang's __has_feature, gcc's
// __SANITIZE_ADDRESS__): freed memory stays resident in its quarantine, and every test runs
// several times slower, so a few tests size themselves by it.
#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define LOWBIT_TEST_SANITIZED 1
#endif
#endif
#if !defined(LOWBIT_TEST_SANITIZED) && defined(__SANITIZE_ADDRESS__)
#define LOWBIT_TEST_SANITIZED 1
#endif
#ifndef LOWBIT_TEST_SANITIZED
#define LOWBIT_TEST_SANITIZED 0
#endif

namespace lowbit::test {

inline std::string env_or(const char* name, const char* fallback) {
  const char* v = std::getenv(name);
  return v ? std::string(v) : std::string(fallback);
}
inline std::string data_dir() { return env_or("LOWBIT_TEST_DATA", "tests/data"); }
inline std::string root_dir() { return env_or("LOWBIT_ROOT", "."); }
// LOWBIT_BIN when set (meson test sets it); else the lowbit built next to this test binary
// (<build>/tests/test_X -> <build>/lowbit), so a run from any build folder tests its own binary;
// else build/lowbit.
inline std::string lowbit_bin() {
  if (const char* v = std::getenv("LOWBIT_BIN")) return v;
  std::error_code ec;
  const std::filesystem::path sibling =
      std::filesystem::canonical("/proc/self/exe", ec).parent_path().parent_path() / "lowbit";
  return !ec && std::filesystem::exists(sibling) ? sibling.string() : std::string("build/lowbit");
}

// A whole file's bytes ("" when it cannot be read).
inline std::string slurp(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// What a run of the lowbit binary left: exit code (-1 if it did not exit normally), stdout, stderr.
struct RunResult {
  int code = -1;
  std::string out, err;
  std::string log() const { return out + err; }  // everything it printed, stdout first
};

// One argument for /bin/sh, single-quoted (a quote inside becomes '\''; appends only: GCC 12
// warns, wrongly, on "literal" + std::string here).
inline std::string shell_quote(const std::string& s) {
  std::string q(1, '\'');
  for (char c : s) {
    if (c == '\'')
      q.append("'\\''");
    else
      q.push_back(c);
  }
  q.push_back('\'');
  return q;
}

// Runs the lowbit binary with `args`, stdin from `stdin_path` (default /dev/null) and `env`
// ("NAME=value" entries added to the environment of that run only); its exit code, stdout, stderr.
// No shell is involved (fork + execv): an argument may hold any bytes but NUL.
inline RunResult run_lowbit(const std::vector<std::string>& args, const std::vector<std::string>& env = {},
                            const std::string& stdin_path = "/dev/null") {
  static int counter = 0;
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / std::string("lowbit_run_").append(std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  const auto out = dir / std::string("out").append(std::to_string(counter));
  const auto err = dir / std::string("err").append(std::to_string(counter++));
  const std::string bin = lowbit_bin();
  std::vector<char*> argv{const_cast<char*>(bin.c_str())};
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  std::fflush(nullptr);  // nothing buffered in this process is written twice by the child
  const pid_t pid = fork();
  if (pid == 0) {
    for (const auto& e : env) {
      const size_t eq = e.find('=');
      if (eq != std::string::npos) setenv(e.substr(0, eq).c_str(), e.substr(eq + 1).c_str(), 1);
    }
    const int in = ::open(stdin_path.c_str(), O_RDONLY);
    const int o = ::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    const int e = ::open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (in < 0 || o < 0 || e < 0) _exit(126);
    dup2(in, 0);
    dup2(o, 1);
    dup2(e, 2);
    execv(bin.c_str(), argv.data());
    _exit(127);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  RunResult r{WIFEXITED(status) ? WEXITSTATUS(status) : -1, slurp(out), slurp(err)};
  std::error_code ec;
  std::filesystem::remove(out, ec);
  std::filesystem::remove(err, ec);
  return r;
}

// run_lowbit with a stdin file and no extra environment.
inline RunResult run_cli(const std::vector<std::string>& args, const std::string& stdin_path = "/dev/null") {
  return run_lowbit(args, {}, stdin_path);
}

}  // namespace lowbit::test
