// Helpers shared by the test binaries: where the test data lives, running the lowbit binary.
#pragma once
#include <sys/wait.h>
#include <unistd.h>

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
inline std::string lowbit_bin() { return env_or("LOWBIT_BIN", "build/lowbit"); }

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
inline RunResult run_lowbit(const std::vector<std::string>& args, const std::vector<std::string>& env = {},
                            const std::string& stdin_path = "/dev/null") {
  static int counter = 0;
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / std::string("lowbit_run_").append(std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  const auto out = dir / std::string("out").append(std::to_string(counter));
  const auto err = dir / std::string("err").append(std::to_string(counter++));
  std::string cmd;
  for (const auto& e : env) cmd.append(e).push_back(' ');
  cmd.append(shell_quote(lowbit_bin()));
  for (const auto& a : args) cmd.append(" ").append(shell_quote(a));
  cmd.append(" >").append(shell_quote(out.string())).append(" 2>").append(shell_quote(err.string()));
  cmd.append(" <").append(shell_quote(stdin_path));
  const int status = std::system(cmd.c_str());
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
