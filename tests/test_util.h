// Helpers shared by the test binaries: where the test data lives, running the lowbit binary.
#pragma once
#include <cstdlib>
#include <string>

namespace lowbit::test {

inline std::string env_or(const char* name, const char* fallback) {
  const char* v = std::getenv(name);
  return v ? std::string(v) : std::string(fallback);
}
inline std::string data_dir() { return env_or("LOWBIT_TEST_DATA", "tests/data"); }
inline std::string root_dir() { return env_or("LOWBIT_ROOT", "."); }
inline std::string lowbit_bin() { return env_or("LOWBIT_BIN", "build/lowbit"); }

}  // namespace lowbit::test
