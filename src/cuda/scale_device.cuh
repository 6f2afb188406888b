// A group's scale on the device (qcast::group_scale of scaling.hpp), an element's value in its
// group (detail::scaled_input, scaled_output), and which group an element belongs to
// (detail::GroupLayout). Compiles as host C++ too (device_or_host.hpp).
#pragma once
#include <cstdint>

#include "qcast/format.hpp"
#include "element_device.cuh"

namespace qcast::cuda_detail {

struct ScaleParams {
  ElementParams scale;  // the scale format, ties to even, saturating (detail::scale_cast_options)
  bool pow2 = false;    // exponent-only scale format (e8m0): k from the rule
  bool two_level = false;
  bool fp32 = false;    // binary32 scales: the code is d's own bits
  ScaleRule rule = ScaleRule::floor;
  float max_elem = 0;           // float(element.max_value())
  double elem_max_value = 0;    // element.max_value()
  int elem_max_exponent = 0, elem_precision_bits = 0;
  float tensor_divisor = 1;     // float(element.max_value() * scale.max_value()): s_t = amax_t / it
  bool amax_t_given = false;    // CastOptions::tensor_amax: no statistics pass, amax_t = given_amax_t
  float given_amax_t = 0;
};

// GroupScale::Kind, in the same order.
enum class GroupKind : std::uint8_t { finite, nan, passthrough, zero };

struct DeviceGroupScale {
  float value;
  std::uint32_t code;
  GroupKind kind;
};

QCAST_DEVICE inline int pow2_scale_exponent(const ScaleParams& p, float amax) {
  const double a = amax;
  switch (p.rule) {
    case ScaleRule::ceil: {
      const double m = p.elem_max_value;
      const int k = floor_log2(a) - floor_log2(m);
      return ldexp(m, k) >= a ? k : k + 1;
    }
    case ScaleRule::rceil: {
      const float y = amax / float(p.elem_max_value);
      if (y == 0.0f) return p.scale.min_exponent;
      const int k = floor_log2(y);
      return ldexp(1.0, k) == double(y) ? k : k + 1;
    }
    case ScaleRule::even: {
      const int k = floor_log2(a) - p.elem_precision_bits;
      const double r = round_to_integer(ldexp(a, -k), Rounding::nearest_even, 0.0);
      return floor_log2(ldexp(r, k)) - p.elem_max_exponent;
    }
    default: return floor_log2(a) - p.elem_max_exponent;
  }
}

// floor(log2(a)) of a finite a > 0 from its bits, subnormals included.
QCAST_DEVICE QCAST_FORCEINLINE int floor_log2_bits(float a) {
  const std::uint32_t b = bits_of(a);
  return b >= 0x00800000u ? int(b >> 23) - 127 : (31 - leading_zeros(b)) - 149;
}

// Whether group_scale<true> applies: the OCP floor rule, a binary32 scale, or a float scale on the
// float path (no double arithmetic, which keeps the kernels' register count, and so their
// occupancy, low).
inline bool simple_scale(const ScaleParams& p) {
  return p.pow2 ? p.rule == ScaleRule::floor : (p.fp32 || p.scale.fast);
}

// group_scale(f, amax, nonfinite, amax_t, s_t). A NaN that the scale format cannot hold sets
// *error (the reference throws there); the result is then a NaN group.
template <bool Simple = false>
QCAST_DEVICE inline DeviceGroupScale group_scale(const ScaleParams& p, float amax, bool nonfinite, float amax_t,
                                                 float s_t, int* error) {
  DeviceGroupScale g{1.0f, 0u, GroupKind::finite};
  if (nonfinite) {
    if (!p.scale.has_nan) raise_error(error);
    return {canonical_nan(), p.scale.nan_code, GroupKind::nan};
  }
  if (p.two_level && amax_t == 0.0f) return {0.0f, 0u, GroupKind::passthrough};
  if (p.pow2) {
    int k;
    if (amax == 0.0f) k = p.scale.min_exponent;
    else if (Simple || p.rule == ScaleRule::floor) k = floor_log2_bits(amax) - p.elem_max_exponent;
    else k = pow2_scale_exponent(p, amax);
    k = k < p.scale.min_exponent ? p.scale.min_exponent : k > p.scale.max_exponent ? p.scale.max_exponent : k;
    g.kind = amax == 0.0f ? GroupKind::passthrough : GroupKind::finite;
    // 2^k in binary32 (exponent-only formats keep k in [-149, 127]: exact, subnormal below -126).
    g.value = float_of(k >= -126 ? std::uint32_t(k + 127) << 23 : 0x00400000u >> (-127 - k));
    g.code = std::uint32_t(k + p.scale.bias);
    return g;
  }
  if (amax == 0.0f && !p.two_level) return {0.0f, 0u, GroupKind::passthrough};
  const float d = p.two_level ? (amax / p.max_elem) / s_t : amax / p.max_elem;
  if (isnan(d) && !p.scale.has_nan) {
    raise_error(error);
    return {canonical_nan(), 0u, GroupKind::nan};
  }
  if (p.fp32) {  // encode_element(fp32, d), saturating: d itself, +Inf to the largest finite value
    g.value = isnan(d) ? canonical_nan() : isinf(d) ? 3.40282347e38f : d;
    g.code = bits_of(g.value);
  } else if (Simple || p.scale.fast) {  // the signed twin of the scale format: the same codes for d >= 0
    g.value = quantize_fast(p.scale, d, 0);
    g.code = code_of_value(p.scale, g.value);
  } else {
    g.code = encode_general(p.scale, d, 0);
    g.value = decode_general(p.scale, g.code);
  }
  // group_scale: s_b * s_t == 0 sends the group to zero (no x / 0)
  if (g.value == 0.0f || (p.two_level && g.value * s_t == 0.0f)) g.kind = GroupKind::zero;
  if (isnan(g.value)) g.kind = GroupKind::nan;
  return g;
}

// amax_t and s_t of a two-level format (tensor_scale_of): the given amax_t, or the tensor statistics
// (stats is not read where amax_t is given).
struct TensorScale {
  float amax_t = 1.0f, s_t = 1.0f;
};
QCAST_DEVICE QCAST_FORCEINLINE TensorScale tensor_scale(const ScaleParams& s, const unsigned* stats) {
  TensorScale t;
  if (s.two_level) {
    t.amax_t = s.amax_t_given ? s.given_amax_t : float_of(stats[0]);
    t.s_t = t.amax_t / s.tensor_divisor;
    if (t.amax_t > 0.0f && t.s_t < 0x1p-128f) t.s_t = 0x1p-128f;  // tensor_scale_of: min_tensor_scale
  }
  return t;
}

// x -> the value on the element grid (detail::scaled_input): x / s or x / (s * s_t), correctly
// rounded, computed one of three ways by the divisor d (uniform over a group):
// - multiply: d = 2^m with a normal 2^-m (the MX scales): x * 2^-m is the same value.
// - corrected: d in [2^-60, 2^61) (the NVFP4 scales): q = x * y with y = RN(1/d) made once a group,
//   then one correction q + (x - d q) y by two fused multiply-adds. Markstein's theorem (y within
//   half an ulp of 1/d, q within one ulp of x/d, no underflow or overflow in between) makes that
//   RN(x/d) exactly; the range of d and the check of |q| below keep every step normal, and the rest
//   (zeros aside) takes the division. This replaces an IEEE division per element, a reciprocal
//   estimate and a branch to a slow path, in the fused block kernels.
//   docs/design/0004-cuda-kernels.md, "Division by a block scale".
// - divide: x / d.
struct ScaledInput {
  enum class Path : std::uint8_t { multiply, corrected, divide };
  float divisor, inverse;
  Path path;
  QCAST_DEVICE ScaledInput(float s, float s_t, bool two_level) {
    divisor = two_level ? s * s_t : s;
    // 2^m with a normal 2^-m: biased exponent field 1..253, mantissa zero; 2^-m read off the bits.
    const std::uint32_t d = bits_of(divisor), field = (d >> 23) & 0xFFu;
    if (!(d & 0x807FFFFFu) && field >= 1 && field <= 253) {
      path = Path::multiply;
      inverse = float_of((254u - field) << 23);
    } else if (!(d >> 31) && field >= 127 - 60 && field < 127 + 61) {
      path = Path::corrected;
      inverse = 1.0f / divisor;
    } else {
      path = Path::divide;
      inverse = 0.0f;
    }
  }
  // The corrected path's quotient of x; exact says whether it is x / d (|q| in [2^-40, 2^126), where
  // with d in [2^-60, 2^61) x - d q is exact and q + (x - d q) y normal; or x = +-0, whose q is the
  // signed zero x / d is). Elsewhere the caller divides.
  QCAST_DEVICE QCAST_FORCEINLINE float corrected(float x, bool& exact) const {
    const float q = x * inverse;
    const float a = fabsf(q);
    const bool in_range = a >= 0x1p-40f && a < 0x1p126f;
    exact = in_range || x == 0.0f;
    return in_range ? fmaf(fmaf(-q, divisor, x), inverse, q) : q;
  }
  QCAST_DEVICE QCAST_FORCEINLINE float operator()(float x) const {
    if (path == Path::multiply) return x * inverse;
    if (path == Path::corrected) {
      bool exact;
      const float q = corrected(x, exact);
      if (exact) return q;
    }
    return x / divisor;
  }
  // v[k] -> v[k] / d for the eight elements of a thread of the fused block kernels, the path chosen
  // once for all eight (per element, its branches cost the kernels as much as the quotients).
  QCAST_DEVICE QCAST_FORCEINLINE void octet(float v[8]) const {
    if (path == Path::multiply) {
      for (int k = 0; k < 8; ++k) v[k] *= inverse;
      return;
    }
    if (path == Path::corrected) {
      float q[8];
      bool all_exact = true;
      for (int k = 0; k < 8; ++k) {
        bool exact;
        q[k] = corrected(v[k], exact);
        all_exact = all_exact && exact;
      }
      if (all_exact) {
        for (int k = 0; k < 8; ++k) v[k] = q[k];
        return;
      }
    }
    for (int k = 0; k < 8; ++k) v[k] = (*this)(v[k]);
  }
};

// A NaN q gives the canonical NaN, as on the CPU: a GPU product of a NaN is 0x7FFFFFFF, whereas x86
// passes the NaN operand (0x7FC00000) through.
QCAST_DEVICE QCAST_FORCEINLINE float scaled_output(float q, float s, float s_t, bool two_level) {
  const float y = two_level ? (q * s) * s_t : q * s;
  return isnan(y) ? canonical_nan() : y;
}

// The value of an element whose code decodes to v, in a group whose scale code decodes to s
// (qcast::decode): a NaN scale makes every element of its group NaN.
QCAST_DEVICE QCAST_FORCEINLINE float decoded_in_group(float v, float s, float s_t, bool two_level) {
  return isnan(s) ? canonical_nan() : scaled_output(v, s, s_t, two_level);
}

// The output of one element of a group whose scale is g (detail::cast_group). Lean: the element
// parameters are lean (quantize_lean), which drops the other quantizers from the kernel.
template <bool Lean = false>
QCAST_DEVICE QCAST_FORCEINLINE float cast_in_group(const ElementParams& e, const ScaleParams& s,
                                                   const DeviceGroupScale& g, const ScaledInput& scaled, float s_t,
                                                   float x, std::int64_t i) {
  switch (g.kind) {
    case GroupKind::nan: return canonical_nan();
    case GroupKind::passthrough: return x;
    case GroupKind::zero: return copysignf(0.0f, x);
    default: {
      const float q = Lean ? quantize_lean(e, scaled(x)) : quantize(e, scaled(x), std::uint64_t(i));
      return scaled_output(q, g.value, s_t, s.two_level);
    }
  }
}

// cast_in_group over the eight elements [first, first + 8) that v holds, in place (the fused block
// kernels). Lean: the group's kind and the quotient's path are decided once for the eight. The
// other quantizers (stochastic rounding, the general path) keep one element at a time, as before:
// their per-element work dwarfs the branches, and eight quotients held at once add registers to
// kernels already at their bound (kBlockKernelMinBlocks).
template <bool Lean = false>
QCAST_DEVICE QCAST_FORCEINLINE void cast_octet_in_group(const ElementParams& e, const ScaleParams& s,
                                                        const DeviceGroupScale& g, const ScaledInput& scaled,
                                                        float s_t, float v[8], std::int64_t first) {
  if (!Lean || g.kind != GroupKind::finite) {
    for (int k = 0; k < 8; ++k) v[k] = cast_in_group<Lean>(e, s, g, scaled, s_t, v[k], first + k);
    return;
  }
  scaled.octet(v);
  for (int k = 0; k < 8; ++k) v[k] = scaled_output(quantize_lean(e, v[k]), g.value, s_t, s.two_level);
}

// The value an element code must hold in a group whose scale is g (qcast::encode).
QCAST_DEVICE QCAST_FORCEINLINE float code_input_in_group(const DeviceGroupScale& g, const ScaledInput& scaled,
                                                         float x) {
  switch (g.kind) {
    case GroupKind::nan: return 0.0f;  // the scale carries the NaN
    case GroupKind::finite: return scaled(x);
    default: return copysignf(0.0f, x);
  }
}

// The code of element x (flat index i) in a group whose scale is g (qcast::encode). Lean: lean
// element parameters. A finite group's x / s is NaN only where the divisor s · s_t rounded to 0 and
// x is 0 (tiny tensors under binary32 or bfloat16 block scales); an element format without a NaN
// code cannot take it, which sets *element_nan: the reference throws there.
template <bool Lean = false>
QCAST_DEVICE QCAST_FORCEINLINE std::uint32_t code_in_group(const ElementParams& e, const DeviceGroupScale& g,
                                                           const ScaledInput& scaled, float x, std::int64_t i,
                                                           int* element_nan) {
  const float v = code_input_in_group(g, scaled, x);
  if (isnan(v) && !e.has_nan) raise_error(element_nan);
  return Lean ? code_of_value(e, quantize_lean(e, v)) : encode(e, v, std::uint64_t(i));
}

// code_in_group over the eight elements [first, first + 8) that v holds (the fused block kernels);
// v is overwritten. As cast_octet_in_group: Lean decides the group's kind and the quotient's path
// once for the eight, the other quantizers take an element at a time.
template <bool Lean = false>
QCAST_DEVICE QCAST_FORCEINLINE void code_octet_in_group(const ElementParams& e, const DeviceGroupScale& g,
                                                        const ScaledInput& scaled, float v[8], std::int64_t first,
                                                        std::uint32_t c[8], int* element_nan) {
  if (!Lean || g.kind != GroupKind::finite) {
    for (int k = 0; k < 8; ++k) c[k] = code_in_group<Lean>(e, g, scaled, v[k], first + k, element_nan);
    return;
  }
  scaled.octet(v);
  for (int k = 0; k < 8; ++k) {
    if (isnan(v[k]) && !e.has_nan) raise_error(element_nan);
    c[k] = code_of_value(e, quantize_lean(e, v[k]));
  }
}

// The group of flat element i (GroupLayout's numbering).
struct LayoutParams {
  Granularity granularity = Granularity::element;
  std::int64_t elements = 0, groups = 0;
  std::int64_t len = 1, inner = 1, blocks_per_line = 1, block_size = 1;
};

QCAST_DEVICE QCAST_FORCEINLINE std::int64_t group_of(const LayoutParams& l, std::int64_t i) {
  switch (l.granularity) {
    case Granularity::tensor: return 0;
    case Granularity::channel: return (i / l.inner) % l.len;
    case Granularity::block: {
      if (l.inner == 1) {
        const std::int64_t o = i / l.len, r = i - o * l.len;
        return o * l.blocks_per_line + r / l.block_size;
      }
      const std::int64_t line = l.len * l.inner;
      const std::int64_t o = i / line, r = i - o * line;
      const std::int64_t pos = r / l.inner, in = r - pos * l.inner;
      return (o * l.blocks_per_line + pos / l.block_size) * l.inner + in;
    }
    default: return 0;
  }
}

// The elements of group g: base + r * run_stride + j * stride (detail::Group).
struct DeviceGroup {
  std::int64_t base = 0, runs = 1, run_stride = 0, count = 0, stride = 1;
};

QCAST_DEVICE inline DeviceGroup group_members(const LayoutParams& l, std::int64_t g) {
  DeviceGroup r;
  switch (l.granularity) {
    case Granularity::tensor: r.count = l.elements; break;
    case Granularity::channel:
      r.runs = l.elements / (l.len * l.inner);
      r.run_stride = l.len * l.inner;
      r.base = g * l.inner;
      r.count = l.inner;
      break;
    default: {
      const std::int64_t in = g % l.inner;
      const std::int64_t b = (g / l.inner) % l.blocks_per_line;
      const std::int64_t o = g / (l.inner * l.blocks_per_line);
      const std::int64_t start = b * l.block_size;
      r.base = o * l.len * l.inner + start * l.inner + in;
      r.count = l.len - start < l.block_size ? l.len - start : l.block_size;
      r.stride = l.inner;
    }
  }
  return r;
}

}  // namespace qcast::cuda_detail
