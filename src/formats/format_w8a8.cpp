// Placeholder until the format lands (next commit).
#include <string>

#include "core/error.h"
#include "formats/format_impl.h"

namespace lowbit::formats {
namespace {
[[noreturn]] void unavailable() { throw Error(ExitCode::input, "weight format not implemented yet: w8a8"); }
void stub_quantize(QuantizedTensor&, const float*, ThreadPool&) { unavailable(); }
void stub_row(const QuantizedTensor&, int64_t, float*) { unavailable(); }
void stub_matmul(const QuantizedTensor&, const float*, int64_t, float*, ThreadPool&) { unavailable(); }
constexpr FormatOps kOps{stub_quantize, stub_row, stub_matmul};
}  // namespace
const FormatOps& w8a8_ops() { return kOps; }
}  // namespace lowbit::formats
