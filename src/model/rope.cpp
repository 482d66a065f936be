#include <cmath>

#include "model/model.h"

namespace lowbit {

// transformers' rope init functions, in fp32 like torch: inv_freq[i] = 1 / theta^(2i/d), then
// scaled: linear divides by factor; llama3 divides low frequencies by factor and blends the
// band between the two wavelength cut-offs.
std::vector<float> rope_inv_freq(const ModelConfig& cfg) {
  const int d = cfg.head_dim;
  std::vector<float> inv(size_t(d / 2));
  for (int i = 0; i < d / 2; ++i) {
    float exponent = float(2 * i) / float(d);
    inv[size_t(i)] = 1.0f / std::pow(cfg.rope_theta, exponent);
  }
  const RopeScaling& rs = cfg.rope_scaling;
  if (rs.type == RopeScaling::Type::Linear) {
    for (auto& f : inv) f /= rs.factor;
  } else if (rs.type == RopeScaling::Type::Llama3) {
    const float old_len = float(rs.original_max_position_embeddings);
    const float low_wavelen = old_len / rs.low_freq_factor;
    const float high_wavelen = old_len / rs.high_freq_factor;
    for (auto& f : inv) {
      float wavelen = float(2.0 * M_PI) / f;
      float scaled = wavelen > low_wavelen ? f / rs.factor : f;
      bool medium = !(wavelen < high_wavelen) && !(wavelen > low_wavelen);
      if (medium) {
        float smooth = (old_len / wavelen - rs.low_freq_factor) / (rs.high_freq_factor - rs.low_freq_factor);
        scaled = (1 - smooth) * scaled / rs.factor + smooth * scaled;
      }
      f = scaled;
    }
  }
  return inv;
}

}  // namespace lowbit
