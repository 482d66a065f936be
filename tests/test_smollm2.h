// Where test_smollm2 finds the real model's GGUF.
#pragma once
#include <string>

#include "test_util.h"

namespace lowbit::test {

inline std::string smollm2_gguf() {
  return env_or("LOWBIT_SMOLLM2_GGUF",
                (root_dir() + "/../shared/models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf").c_str());
}

}  // namespace lowbit::test
