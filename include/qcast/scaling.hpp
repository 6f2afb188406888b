// How one group's scale is chosen from its values (OCP MX v1.0 §6.3 for power-of-two scales,
// the NVFP4 two-level recipe for float block scales under a tensor scale).
#pragma once
#include <cmath>
#include <cstdint>

#include "qcast/detail/float_bits.hpp"
#include "qcast/element_codec.hpp"
#include "qcast/format.hpp"

namespace qcast {

struct GroupScale {
  enum class Kind : std::uint8_t {
    finite,       // out = Q(x / s) * s   (two-level: (Q(x / (s * s_t)) * s) * s_t)
    nan,          // the group held NaN or Inf: every output is NaN
    passthrough,  // amax == 0: outputs equal inputs (all ±0)
    zero,         // the scale rounded to zero: outputs are ±0 with the sign of the input
  };
  Kind kind = Kind::finite;
  float value = 1.0f;       // s, or the block scale s_b of a two-level format
  std::uint32_t code = 0;   // s in the scale format
};

namespace detail {

// Power-of-two scale exponent by rule; amax > 0 and finite.
inline int pow2_scale_exponent(const Format& f, float amax) {
  const ElementFormat& e = f.element;
  const double a = amax;
  switch (f.rule) {
    case ScaleRule::ceil: {
      const double m = e.max_value();
      int k = floor_log2(a) - floor_log2(m);
      return std::ldexp(m, k) >= a ? k : k + 1;
    }
    case ScaleRule::rceil: {
      const float y = amax / float(e.max_value());  // binary32, as the hardware conversion does
      if (y == 0.0f) return f.scale.min_exponent();
      const int k = floor_log2(y);
      return std::ldexp(1.0, k) == double(y) ? k : k + 1;
    }
    case ScaleRule::even: {
      const int k = floor_log2(a) - e.precision_bits();
      const double r = round_to_integer(std::ldexp(a, -k), Rounding::nearest_even, 0.0);
      return floor_log2(std::ldexp(r, k)) - e.max_exponent();
    }
    default: return floor_log2(a) - e.max_exponent();
  }
}

inline CastOptions scale_cast_options() {  // ties to even, saturating, whatever the scale format
  CastOptions o;
  o.saturate = true;
  return o;
}

}  // namespace detail

// The smallest s_t of a two-level format with amax_t > 0: 2^-128 = RN(1 / FLT_MAX). The NVFP4
// recipe's encode scale (max_elem * max_scale) / amax_t is clamped to FLT_MAX, so the decode scale
// never falls below this; a tensor of values under ~3e-35 would otherwise get a subnormal or zero
// s_t and, at zero, NaN outputs (docs/formats.md, "NVFP4").
inline constexpr float min_tensor_scale = 0x1p-128f;

// s_t of a two-level format: amax_t / (max_elem * max_scale), in binary32 (NVFP4: amax_t / 2688),
// and at least min_tensor_scale where amax_t > 0 (amax_t == 0 gives 0: the tensor passes through).
inline float tensor_scale_of(const Format& f, float amax_t) {
  const float s_t = amax_t / float(f.element.max_value() * f.scale.max_value());
  return amax_t > 0.0f && s_t < min_tensor_scale ? min_tensor_scale : s_t;
}

// The scale of one group. amax is the largest magnitude of its values; nonfinite says whether any
// was NaN or Inf; amax_t and s_t = tensor_scale_of(f, amax_t) belong to a two-level format only.
inline GroupScale group_scale(const Format& f, float amax, bool nonfinite, float amax_t = 1.0f, float s_t = 1.0f) {
  GroupScale g;
  if (nonfinite) {
    g.kind = GroupScale::Kind::nan;
    g.value = detail::canonical_nan();
    g.code = detail::nan_code(f.scale);
    return g;
  }
  if (f.tensor_scale && amax_t == 0.0f) {  // amax_t == 0: the whole tensor passes through
    g.kind = GroupScale::Kind::passthrough;
    g.value = 0.0f;
    return g;
  }
  if (f.scale.kind == ElementKind::exponent) {
    int k = amax == 0.0f ? f.scale.min_exponent() : detail::pow2_scale_exponent(f, amax);
    if (k < f.scale.min_exponent()) k = f.scale.min_exponent();
    if (k > f.scale.max_exponent()) k = f.scale.max_exponent();
    g.kind = amax == 0.0f ? GroupScale::Kind::passthrough : GroupScale::Kind::finite;
    g.value = float(std::ldexp(1.0, k));
    g.code = std::uint32_t(k + f.scale.bias);
    return g;
  }
  if (amax == 0.0f && !f.tensor_scale) {
    g.kind = GroupScale::Kind::passthrough;
    g.value = 0.0f;
    return g;
  }
  const float max_elem = float(f.element.max_value());
  const float d = f.tensor_scale ? (amax / max_elem) / s_t : amax / max_elem;
  g.code = encode_element(f.scale, d, detail::scale_cast_options());
  g.value = decode_element(f.scale, g.code);
  // s_b * s_t == 0 (a tiny s_t times a small subnormal scale, e.g. fp16 block scales): the group's
  // values are below what the format resolves, and x / (s_b * s_t) would be x / 0. They go to zero.
  if (g.value == 0.0f || (f.tensor_scale && g.value * s_t == 0.0f)) g.kind = GroupScale::Kind::zero;
  if (std::isnan(g.value)) g.kind = GroupScale::Kind::nan;  // 0/0 when s_t underflowed to zero
  return g;
}

// Reconstructs a group's scale from its stored code (decode path).
inline GroupScale group_scale_from_code(const Format& f, std::uint32_t code) {
  GroupScale g;
  g.code = code;
  g.value = decode_element(f.scale, code);
  if (std::isnan(g.value)) g.kind = GroupScale::Kind::nan;
  return g;
}

}  // namespace qcast
