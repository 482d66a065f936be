// The emulated cuBLAS: cublasGemmEx as a plain column-major reference GEMM, queued on the
// handle's stream (or captured into a graph) like a kernel. Sums are taken in double (exact for
// int8 inputs; for fp32 outputs the GPU's tensor cores round differently, so tests compare with
// tolerances), then stored as the output type (int32 wraps as IMMA's accumulators do).
#include <algorithm>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "cublasLt.h"
#include "cublas_v2.h"
#include "runtime.h"

struct cublasContext {
  cudaStream_t stream = nullptr;
  cublasMath_t math = CUBLAS_DEFAULT_MATH;
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
};

struct cublasLtContext {};

namespace {

using namespace lowbit_emu;

size_t type_bytes(cudaDataType t) {
  switch (t) {
    case CUDA_R_32F:
    case CUDA_R_32I:
      return 4;
    case CUDA_R_64F:
      return 8;
    case CUDA_R_16F:
    case CUDA_R_16BF:
      return 2;
    case CUDA_R_8I:
    case CUDA_R_8F_E4M3:
    case CUDA_R_8F_E5M2:
      return 1;
  }
  return 0;
}

double load(const void* base, cudaDataType t, size_t i) {
  switch (t) {
    case CUDA_R_32F: {
      float v;
      std::memcpy(&v, static_cast<const unsigned char*>(base) + 4 * i, 4);
      return v;
    }
    case CUDA_R_16BF: {
      uint16_t b;
      std::memcpy(&b, static_cast<const unsigned char*>(base) + 2 * i, 2);
      const uint32_t u = uint32_t(b) << 16;
      float v;
      std::memcpy(&v, &u, 4);
      return v;
    }
    case CUDA_R_8I:
      return static_cast<const int8_t*>(base)[i];
    default:
      return 0;
  }
}

// Elements an operand of `rows` x `cols` (as stored: column-major with leading dimension ld)
// spans, for the range check.
size_t span(int rows, int cols, int ld) { return rows == 0 || cols == 0 ? 0 : size_t(cols - 1) * size_t(ld) + size_t(rows); }

void check_operand(const char* which, const void* p, size_t bytes) {
  bool overflows = false;
  const Allocation* a = find_allocation(p, bytes, &overflows);
  if (a == nullptr || a->kind != MemoryKind::device)
    fault(fmt::format("cublasGemmEx: operand {} ({}) is not device memory", which, p));
  if (overflows) fault(fmt::format("cublasGemmEx: operand {} ({} bytes from {}) runs past its allocation", which, bytes, p));
}

}  // namespace

cublasStatus_t cublasCreate(cublasHandle_t* handle) {
  if (handle == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
  *handle = new cublasContext();
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasDestroy(cublasHandle_t handle) {
  if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  delete handle;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetStream(cublasHandle_t handle, cudaStream_t stream) {
  if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  handle->stream = stream;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetMathMode(cublasHandle_t handle, cublasMath_t mode) {
  if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  handle->math = mode;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetWorkspace(cublasHandle_t handle, void* workspace, size_t bytes) {
  if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  Lock lock(api_mutex());
  if (bytes > 0) {
    bool overflows = false;
    const Allocation* a = find_allocation(workspace, bytes, &overflows);
    if (a == nullptr || a->kind != MemoryKind::device || overflows) return CUBLAS_STATUS_INVALID_VALUE;
  }
  handle->workspace = workspace;
  handle->workspace_bytes = bytes;
  return CUBLAS_STATUS_SUCCESS;
}

const char* cublasGetStatusName(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_SUCCESS:
      return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED:
      return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED:
      return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE:
      return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH:
      return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR:
      return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED:
      return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR:
      return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED:
      return "CUBLAS_STATUS_NOT_SUPPORTED";
  }
  return "CUBLAS_STATUS_UNKNOWN";
}
const char* cublasGetStatusString(cublasStatus_t s) { return cublasGetStatusName(s); }

cublasStatus_t cublasGemmEx(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m, int n,
                            int k, const void* alpha, const void* A, cudaDataType Atype, int lda, const void* B,
                            cudaDataType Btype, int ldb, const void* beta, void* C, cudaDataType Ctype, int ldc,
                            cublasComputeType_t compute, cublasGemmAlgo_t) {
  if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (m < 0 || n < 0 || k < 0 || alpha == nullptr || beta == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
  if (transa == CUBLAS_OP_C || transb == CUBLAS_OP_C) return CUBLAS_STATUS_NOT_SUPPORTED;
  const bool ta = transa == CUBLAS_OP_T, tb = transb == CUBLAS_OP_T;
  const int a_rows = ta ? k : m, a_cols = ta ? m : k, b_rows = tb ? n : k, b_cols = tb ? k : n;
  if (lda < std::max(1, a_rows) || ldb < std::max(1, b_rows) || ldc < std::max(1, m)) return CUBLAS_STATUS_INVALID_VALUE;
  const bool float_path = (Atype == CUDA_R_32F || Atype == CUDA_R_16BF) && Btype == Atype && Ctype == CUDA_R_32F &&
                          compute == CUBLAS_COMPUTE_32F;
  const bool int_path = Atype == CUDA_R_8I && Btype == CUDA_R_8I && Ctype == CUDA_R_32I && compute == CUBLAS_COMPUTE_32I;
  if (!float_path && !int_path) return CUBLAS_STATUS_NOT_SUPPORTED;
  // IMMA in the plain layouts wants leading dimensions that are multiples of 4.
  if (int_path && (lda % 4 != 0 || ldb % 4 != 0 || ldc % 4 != 0)) return CUBLAS_STATUS_NOT_SUPPORTED;
  if (m == 0 || n == 0) return CUBLAS_STATUS_SUCCESS;
  Lock lock(api_mutex());
  check_operand("A", A, span(a_rows, a_cols, lda) * type_bytes(Atype));
  check_operand("B", B, span(b_rows, b_cols, ldb) * type_bytes(Btype));
  check_operand("C", C, span(m, n, ldc) * type_bytes(Ctype));
  double alpha_v = 0, beta_v = 0;
  if (int_path) {
    int32_t a, b;
    std::memcpy(&a, alpha, 4);
    std::memcpy(&b, beta, 4);
    alpha_v = a;
    beta_v = b;
  } else {
    float a, b;
    std::memcpy(&a, alpha, 4);
    std::memcpy(&b, beta, 4);
    alpha_v = a;
    beta_v = b;
  }
  auto run = [=] {
    count_launch("cublasGemmEx");
    // op(A) as m rows of k and op(B) as n rows of k, contiguous, then one dot product per output.
    std::vector<double> a(size_t(m) * size_t(k)), b(size_t(n) * size_t(k));
    for (int i = 0; i < m; ++i)
      for (int p = 0; p < k; ++p)
        a[size_t(i) * size_t(k) + size_t(p)] =
            load(A, Atype, ta ? size_t(i) * size_t(lda) + size_t(p) : size_t(p) * size_t(lda) + size_t(i));
    for (int j = 0; j < n; ++j)
      for (int p = 0; p < k; ++p)
        b[size_t(j) * size_t(k) + size_t(p)] =
            load(B, Btype, tb ? size_t(p) * size_t(ldb) + size_t(j) : size_t(j) * size_t(ldb) + size_t(p));
    for (int j = 0; j < n; ++j) {
      const double* bj = b.data() + size_t(j) * size_t(k);
      for (int i = 0; i < m; ++i) {
        const double* ai = a.data() + size_t(i) * size_t(k);
        double acc = 0;  // exact for int8 products (|sum| < 2^53)
        for (int p = 0; p < k; ++p) acc += ai[p] * bj[p];
        const size_t ci = size_t(j) * size_t(ldc) + size_t(i);
        if (int_path) {
          int32_t* c = static_cast<int32_t*>(C) + ci;
          const int64_t v = int64_t(alpha_v) * int64_t(acc) + (beta_v != 0 ? int64_t(beta_v) * *c : 0);
          *c = int32_t(uint32_t(uint64_t(v)));  // wraps as the hardware's int32 accumulators do
        } else {
          float* c = static_cast<float*>(C) + ci;
          *c = float(alpha_v * acc + (beta_v != 0 ? beta_v * double(*c) : 0.0));
        }
      }
    }
  };
  const cudaError_t e = enqueue(resolve(handle->stream), Op{fmt::format("cublasGemmEx {}x{}x{}", m, n, k), run});
  return e == cudaSuccess ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_EXECUTION_FAILED;
}

cublasStatus_t cublasLtCreate(cublasLtHandle_t* handle) {
  if (handle == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
  *handle = new cublasLtContext();
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtDestroy(cublasLtHandle_t handle) {
  if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  delete handle;
  return CUBLAS_STATUS_SUCCESS;
}
