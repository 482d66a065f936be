// Entry point of test_smollm2: the real model lives outside the repository
// (../shared/models/smollm2-135m-instruct/, or $LOWBIT_SMOLLM2_GGUF); where it is absent the binary
// says so and exits 77, which meson counts as SKIP.
#include "catch_session.h"

#include <cstdio>
#include <filesystem>

#include "test_smollm2.h"

int main(int argc, char** argv) {
  const std::string path = lowbit::test::smollm2_gguf();
  if (!std::filesystem::exists(path)) {
    std::printf("%s not found: skipping the SmolLM2-135M-Instruct tests\n", path.c_str());
    return 77;
  }
  return lowbit::test::run_catch_session(argc, argv);
}
