// The fuzz target for the JSONL reader of `lowbit batch` / `lowbit report` (src/study/jsonl.h),
// kept apart from targets.h so the other targets do not depend on the study module.
#pragma once
#include "study/jsonl.h"
#include "targets.h"

namespace lowbit::fuzz {

// First byte: bit 0 = allow_torn_tail; the rest is the file.
inline int jsonl_batch(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  try {
    MemFile f(data + 1, size - 1);
    const auto records = study::read_jsonl(f.path(), data[0] & 1);
    size_t last = 0;
    for (const auto& r : records) {
      check(r.line > last, "record line numbers do not increase");
      last = r.line;
    }
  } catch (const Error&) {
  }
  return 0;
}

}  // namespace lowbit::fuzz
