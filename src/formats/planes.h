// The planes of a quantized weight, described once. Every format stores its values in some of
// these six planes (the layout of each is documented in the format's own file); a plane it does
// not use stays empty. `Planes<Hold>` is the one list of their names and element types: the host
// tensor (QuantizedTensor: std::vector), the device mirror (DeviceQuantizedPlanes: device memory)
// and the kernels' view (QuantizedWeightView: const pointers) are all instances of it, and byte
// counts, uploads, downloads, views and row stacking walk it with `each` / zip_planes.
// No library includes: nvcc compiles it into the kernels.
#pragma once
#include <cstddef>
#include <cstdint>

namespace lowbit {

enum class Plane : int { codes, scales, scale_codes, scales2, scales16, zeros };
constexpr int kPlaneCount = 6;

// What each plane holds, for messages ("the <description> of <weight>").
constexpr const char* kPlaneDescriptions[kPlaneCount] = {
    "codes",                // packed weight values (fp32 / bf16 bytes for F32 / BF16)
    "scales",               // fp32 first-level scales (absmax per block, per row, ...)
    "scale codes",          // double quantization: 8-bit codes of (absmax - offset)
    "second-level scales",  // double quantization: fp32 scale per 256 absmax values
    "fp16 scales",          // 16-bit scales (W4A16: fp16 scale per group)
    "zero points",          // W4A16 zero points (one 4-bit value per group, stored in a byte)
};

// f(Plane, element, sets.plane...) for every plane in Plane order, the same plane of each set side
// by side (sets: Planes instances, of any Hold); `element` is a null pointer of the plane's
// element type. The one place the planes are listed.
template <class F, class... Sets>
constexpr void zip_planes(F&& f, Sets&... sets) {
  f(Plane::codes, static_cast<uint8_t*>(nullptr), sets.codes...);
  f(Plane::scales, static_cast<float*>(nullptr), sets.scales...);
  f(Plane::scale_codes, static_cast<uint8_t*>(nullptr), sets.scale_codes...);
  f(Plane::scales2, static_cast<float*>(nullptr), sets.scales2...);
  f(Plane::scales16, static_cast<uint16_t*>(nullptr), sets.scales16...);
  f(Plane::zeros, static_cast<uint8_t*>(nullptr), sets.zeros...);
}

template <template <class> class Hold>
struct Planes {
  Hold<uint8_t> codes{};
  Hold<float> scales{};
  Hold<uint8_t> scale_codes{};
  Hold<float> scales2{};
  Hold<uint16_t> scales16{};
  Hold<uint8_t> zeros{};

  // f(Plane, plane, element) for every plane of this set (zip_planes for one set).
  template <class F>
  constexpr void each(F&& f) {
    zip_planes([&](Plane p, auto* element, auto& plane) { f(p, plane, element); }, *this);
  }
  template <class F>
  constexpr void each(F&& f) const {
    zip_planes([&](Plane p, auto* element, auto& plane) { f(p, plane, element); }, *this);
  }
};

// Elements in each plane (Plane order): what a format's quantize() allocates for a shape.
struct PlaneSizes {
  size_t elements[kPlaneCount] = {0, 0, 0, 0, 0, 0};
  size_t scalar_bytes = 0;  // per-tensor scalars outside the planes (the -dq offset: 4)
  size_t& operator[](Plane p) { return elements[int(p)]; }
};

}  // namespace lowbit
