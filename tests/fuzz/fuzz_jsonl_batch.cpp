// libFuzzer entry for the jsonl_batch target; its body lives in target_jsonl.h.
#include "target_jsonl.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return lowbit::fuzz::jsonl_batch(data, size);
}
