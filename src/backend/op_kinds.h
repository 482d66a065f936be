// The kinds of norm and activation the backend ops compute. The backend layer owns them; the
// model's config (model/config.h) says which one a model uses.
#pragma once

namespace lowbit {

enum class NormKind { RMSNorm, LayerNorm };
enum class Activation { SwiGLU, GELU };  // SwiGLU: silu(gate) * up; GELU: exact erf gelu

}  // namespace lowbit
