#include "backend/cuda_backend.h"

#include "core/error.h"

namespace lowbit {

// Placeholder until the CUDA backend lands: selecting it reports that plainly.
std::unique_ptr<Backend> make_cuda_backend(int) {
  throw DeviceError("the CUDA backend is not implemented yet; use --device cpu");
}

}  // namespace lowbit
