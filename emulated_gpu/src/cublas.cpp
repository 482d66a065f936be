// The emulated cuBLAS: cublasGemmEx and cublasLtMatmul as a plain column-major reference GEMM,
// queued on the handle's stream (or captured into a graph) like a kernel. Sums are taken in double
// (exact for int8 inputs, and for e4m3 inputs while |sum| < 2^35; for fp32 outputs the GPU's
// tensor cores round differently, so tests compare with tolerances), then stored as the output
// type (int32 wraps as IMMA's accumulators do).
#include <algorithm>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "cublasLt.h"
#include "cublas_v2.h"
#include "cuda_fp8.h"
#include "runtime.h"

struct cublasContext {
  cudaStream_t stream = nullptr;
  cublasMath_t math = CUBLAS_DEFAULT_MATH;
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
};

struct cublasLtContext {};
struct cublasLtMatmulDescOpaque {
  cublasComputeType_t compute;
  cudaDataType_t scale;
  cublasOperation_t transa = CUBLAS_OP_N, transb = CUBLAS_OP_N;
};
struct cublasLtMatrixLayoutOpaque {
  cudaDataType type;
  uint64_t rows, cols;
  int64_t ld;
};
struct cublasLtMatmulPreferenceOpaque {
  size_t max_workspace = 0;
};

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
    case CUDA_R_8F_E4M3:
      return half_bits_to_float(e4m3_to_half_bits(static_cast<const unsigned char*>(base)[i]));
    default:
      return 0;
  }
}

// Elements an operand of `rows` x `cols` (as stored: column-major with leading dimension ld)
// spans, for the range check.
size_t span(int rows, int cols, int ld) { return rows == 0 || cols == 0 ? 0 : size_t(cols - 1) * size_t(ld) + size_t(rows); }

void check_operand(const char* which, const void* p, size_t bytes, const char* call = "cublasGemmEx") {
  bool overflows = false;
  const Allocation* a = find_allocation(p, bytes, &overflows);
  if (a == nullptr || a->kind != MemoryKind::device)
    fault(fmt::format("{}: operand {} ({}) is not device memory", call, which, p));
  if (overflows) fault(fmt::format("{}: operand {} ({} bytes from {}) runs past its allocation", call, which, bytes, p));
}

// The one cublasLtMatmul combination implemented (see cublasLt.h).
bool lt_supported(const cublasLtMatmulDescOpaque& op, const cublasLtMatrixLayoutOpaque& a,
                  const cublasLtMatrixLayoutOpaque& b, const cublasLtMatrixLayoutOpaque& c,
                  const cublasLtMatrixLayoutOpaque& d) {
  return op.compute == CUBLAS_COMPUTE_32F && op.scale == CUDA_R_32F && op.transa == CUBLAS_OP_T &&
         op.transb == CUBLAS_OP_N && a.type == CUDA_R_8F_E4M3 && b.type == CUDA_R_8F_E4M3 && c.type == CUDA_R_32F &&
         d.type == CUDA_R_32F && a.ld % 16 == 0 && b.ld % 16 == 0 && a.rows == b.rows && c.rows == a.cols &&
         c.cols == b.cols && d.rows == c.rows && d.cols == c.cols && d.ld == c.ld && a.ld >= int64_t(a.rows) &&
         b.ld >= int64_t(b.rows) && c.ld >= int64_t(c.rows);
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

cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t* desc, cublasComputeType_t compute, cudaDataType_t scale) {
  if (desc == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
  *desc = new cublasLtMatmulDescOpaque{compute, scale};
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t desc) {
  delete desc;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t desc, cublasLtMatmulDescAttributes_t attr,
                                              const void* buf, size_t bytes) {
  if (desc == nullptr || buf == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
  int32_t v = 0;
  if (bytes != sizeof(v)) return CUBLAS_STATUS_INVALID_VALUE;
  std::memcpy(&v, buf, sizeof(v));
  switch (attr) {
    case CUBLASLT_MATMUL_DESC_TRANSA: desc->transa = cublasOperation_t(v); return CUBLAS_STATUS_SUCCESS;
    case CUBLASLT_MATMUL_DESC_TRANSB: desc->transb = cublasOperation_t(v); return CUBLAS_STATUS_SUCCESS;
    case CUBLASLT_MATMUL_DESC_COMPUTE_TYPE: desc->compute = cublasComputeType_t(v); return CUBLAS_STATUS_SUCCESS;
    case CUBLASLT_MATMUL_DESC_SCALE_TYPE: desc->scale = cudaDataType_t(v); return CUBLAS_STATUS_SUCCESS;
  }
  return CUBLAS_STATUS_INVALID_VALUE;
}
cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t* layout, cudaDataType type, uint64_t rows,
                                          uint64_t cols, int64_t ld) {
  if (layout == nullptr || ld < 1) return CUBLAS_STATUS_INVALID_VALUE;
  *layout = new cublasLtMatrixLayoutOpaque{type, rows, cols, ld};
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t layout) {
  delete layout;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t* pref) {
  if (pref == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
  *pref = new cublasLtMatmulPreferenceOpaque{};
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t pref) {
  delete pref;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t pref,
                                                    cublasLtMatmulPreferenceAttributes_t attr, const void* buf,
                                                    size_t bytes) {
  if (pref == nullptr || buf == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
  if (attr == CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES) {
    uint64_t v = 0;
    if (bytes != sizeof(v)) return CUBLAS_STATUS_INVALID_VALUE;
    std::memcpy(&v, buf, sizeof(v));
    pref->max_workspace = size_t(v);
  }
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t handle, cublasLtMatmulDesc_t desc,
                                              cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t b,
                                              cublasLtMatrixLayout_t c, cublasLtMatrixLayout_t d,
                                              cublasLtMatmulPreference_t pref, int requested,
                                              cublasLtMatmulHeuristicResult_t results[], int* returned) {
  if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (desc == nullptr || a == nullptr || b == nullptr || c == nullptr || d == nullptr || pref == nullptr ||
      requested < 1 || results == nullptr || returned == nullptr)
    return CUBLAS_STATUS_INVALID_VALUE;
  *returned = 0;
  if (!lt_supported(*desc, *a, *b, *c, *d)) return CUBLAS_STATUS_NOT_SUPPORTED;
  results[0] = cublasLtMatmulHeuristicResult_t{};
  results[0].algo.data[0] = 1;  // the reference GEMM
  results[0].state = CUBLAS_STATUS_SUCCESS;
  results[0].wavesCount = 1.0f;
  *returned = 1;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmul(cublasLtHandle_t handle, cublasLtMatmulDesc_t desc, const void* alpha, const void* A,
                              cublasLtMatrixLayout_t a, const void* B, cublasLtMatrixLayout_t b, const void* beta,
                              const void* C, cublasLtMatrixLayout_t c, void* D, cublasLtMatrixLayout_t d,
                              const cublasLtMatmulAlgo_t*, void*, size_t, cudaStream_t stream) {
  if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (desc == nullptr || a == nullptr || b == nullptr || c == nullptr || d == nullptr || alpha == nullptr ||
      beta == nullptr)
    return CUBLAS_STATUS_INVALID_VALUE;
  if (!lt_supported(*desc, *a, *b, *c, *d)) return CUBLAS_STATUS_NOT_SUPPORTED;
  // op(A) = A^T: A is stored k x m (column-major, lda), op(B) = B: k x n (ldb); C, D: m x n.
  const int64_t m = int64_t(c->rows), n = int64_t(c->cols), k = int64_t(a->rows);
  const int64_t lda = a->ld, ldb = b->ld, ldc = c->ld;
  if (m == 0 || n == 0) return CUBLAS_STATUS_SUCCESS;
  Lock lock(api_mutex());
  check_operand("A", A, span(int(k), int(m), int(lda)), "cublasLtMatmul");
  check_operand("B", B, span(int(k), int(n), int(ldb)), "cublasLtMatmul");
  check_operand("D", D, span(int(m), int(n), int(ldc)) * 4, "cublasLtMatmul");
  float alpha_f, beta_f;
  std::memcpy(&alpha_f, alpha, 4);
  std::memcpy(&beta_f, beta, 4);
  if (beta_f != 0.0f) check_operand("C", C, span(int(m), int(n), int(ldc)) * 4, "cublasLtMatmul");
  // The layouts may be destroyed as soon as this returns (the library copies what it needs).
  const cudaDataType a_type = a->type, b_type = b->type;
  auto run = [=] {
    count_launch("cublasLtMatmul");
    for (int64_t j = 0; j < n; ++j)
      for (int64_t i = 0; i < m; ++i) {
        double acc = 0;  // exact for e4m3 products (see the top)
        for (int64_t p = 0; p < k; ++p)
          acc += load(A, a_type, size_t(i * lda + p)) * load(B, b_type, size_t(j * ldb + p));
        const size_t ci = size_t(j * ldc + i);
        const double prior = beta_f != 0.0f ? double(beta_f) * double(static_cast<const float*>(C)[ci]) : 0.0;
        static_cast<float*>(D)[ci] = float(double(alpha_f) * acc + prior);
      }
  };
  const cudaError_t e = enqueue(resolve(stream), Op{fmt::format("cublasLtMatmul {}x{}x{}", m, n, k), run});
  return e == cudaSuccess ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_EXECUTION_FAILED;
}
