// libFuzzer entry for the gguf target; its body lives in targets.h (shared with the replay test).
#include "targets.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return lowbit::fuzz::gguf(data, size);
}
