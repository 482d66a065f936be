#pragma once
namespace lowbit::cuda {
// Number of usable CUDA devices; 0 when there is no GPU or no driver.
int device_count();
}  // namespace lowbit::cuda
