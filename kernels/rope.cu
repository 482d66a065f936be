#include "kernels/common.cuh"
#include "kernels/rope.cuh"

namespace lowbit::kernels {

namespace {

// One block per token, one thread per rotation pair index i: the angle is computed once and
// applied to every q and k head. cos/sin are taken in double of the fp32 angle and rounded to
// fp32, exactly as the CPU oracle (and transformers' fp32 cos of an fp32 angle, to rounding).
__global__ void rope_kernel(float* __restrict__ qkv, const int32_t* __restrict__ positions,
                            const float* __restrict__ inv_freq, int n_rotated_heads, int head_dim, int qkv_dim) {
  const int half = head_dim / 2;
  float* row = qkv + size_t(blockIdx.x) * size_t(qkv_dim);
  const float pos = float(positions[blockIdx.x]);
  for (int i = threadIdx.x; i < half; i += blockDim.x) {
    const float angle = pos * inv_freq[i];
    double s = 0.0, c = 0.0;
    sincos(double(angle), &s, &c);
    const float cf = float(c), sf = float(s);
    for (int h = 0; h < n_rotated_heads; ++h) {
      float* v = row + size_t(h) * size_t(head_dim);
      const float x0 = v[i], x1 = v[i + half];
      v[i] = x0 * cf - x1 * sf;
      v[i + half] = x1 * cf + x0 * sf;
    }
  }
}

}  // namespace

cudaError_t launch_rope(float* qkv, const int32_t* positions, const float* inv_freq, int n_tokens, int n_heads,
                        int n_kv_heads, int head_dim, int qkv_dim, cudaStream_t stream) {
  if (n_tokens <= 0) return cudaSuccess;
  const int half = head_dim / 2;
  const int threads = half <= 32 ? 32 : (half <= 64 ? 64 : 128);
  return launch<rope_kernel>({n_tokens, threads, 0, stream}, qkv, positions, inv_freq, n_heads + n_kv_heads, head_dim,
                             qkv_dim);
}

}  // namespace lowbit::kernels
