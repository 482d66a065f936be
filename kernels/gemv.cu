// The f32 and bf16 decode GEMVs: the template (kernels/gemv_template.cuh) with its plain formats.
// x stays fp32, so the bf16 GEMV is the CPU's arithmetic (bf16 weights widened, fp32 products and
// sums) up to summation order.
#include "kernels/gemv_template.cuh"

namespace lowbit::kernels {

cudaError_t launch_gemv_f32(const QuantizedWeightView& w, const float* bias, const float* x, int n_tokens, float* y,
                            void*, cudaStream_t stream) {
  return gemv::launch_gemv<gemv::F32Format>(w, bias, x, n_tokens, y, stream);
}

cudaError_t launch_gemv_bf16(const QuantizedWeightView& w, const float* bias, const float* x, int n_tokens, float* y,
                             void*, cudaStream_t stream) {
  return gemv::launch_gemv<gemv::Bf16Format>(w, bias, x, n_tokens, y, stream);
}

cudaError_t launch_fused_gemv_f32(const GemvParts& parts, const float* bias, const float* x, int n_tokens, float* y,
                                  const GemvSteps& steps, cudaStream_t stream) {
  return gemv::launch_fused_gemv<gemv::F32Format>(parts, bias, x, n_tokens, y, steps, stream);
}

cudaError_t launch_fused_gemv_bf16(const GemvParts& parts, const float* bias, const float* x, int n_tokens, float* y,
                                   const GemvSteps& steps, cudaStream_t stream) {
  return gemv::launch_fused_gemv<gemv::Bf16Format>(parts, bias, x, n_tokens, y, steps, stream);
}

extern const QuantizedKernels f32_kernels{
    launch_gemv_f32, no_gemv_workspace, false, nullptr, launch_fused_gemv_f32, nullptr, nullptr, PrefillGemm::fp32,
    false};
extern const QuantizedKernels bf16_kernels{
    launch_gemv_bf16, no_gemv_workspace, false, nullptr, launch_fused_gemv_bf16, nullptr, nullptr, PrefillGemm::none,
    true};

}  // namespace lowbit::kernels
