// Helpers shared by the test binaries: where the test data lives, running the lowbit binary.
#pragma once
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

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

}  // namespace lowbit::test
