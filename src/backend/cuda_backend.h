// The CUDA backend (implemented in cuda_backend.cpp over the kernels in kernels/).
#pragma once
#include <memory>

#include "backend/backend.h"

namespace lowbit {

std::unique_ptr<Backend> make_cuda_backend(int device_index);

}  // namespace lowbit
