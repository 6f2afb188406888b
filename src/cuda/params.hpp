// Host side: the device parameter structs from a Format and CastOptions, computed with the core's
// own descriptor functions so that the device sees exactly the reference's constants.
#pragma once
#include <cmath>
#include <cstdint>
#include <optional>

#include "qcast/cast.hpp"
#include "element_device.cuh"
#include "scale_device.cuh"

namespace qcast::cuda_detail {

// The CPU kernels' criterion (span_kernel_supports): grid steps are normal binary32 numbers,
// |v| / ulp < 2^22, 2 * max is finite; integers of at most 16 bits.
inline bool float_path_applies(const ElementFormat& e) {
  if (!e.is_signed) return false;
  if (e.kind == ElementKind::integer) return e.integer_bits <= 16 && e.fraction_bits <= 24;
  if (e.kind != ElementKind::minifloat) return false;
  return e.mantissa_bits <= 20 && e.min_exponent() - e.mantissa_bits >= -126 && e.max_exponent() <= 125;
}

inline ElementParams element_params(const ElementFormat& e, const CastOptions& o) {
  ElementParams p;
  p.kind = e.kind == ElementKind::integer ? Kind::integer : e.kind == ElementKind::exponent ? Kind::exponent : Kind::minifloat;
  p.specials = Special(int(e.specials));
  p.is_signed = e.is_signed;
  p.saturate = o.saturate.value_or(e.saturates_by_default());
  p.has_nan = e.has_nan();
  p.bits = e.bits();
  p.exponent_bits = e.exponent_bits;
  p.mantissa_bits = e.mantissa_bits;
  p.bias = e.bias;
  p.fraction_bits = e.fraction_bits;
  p.min_exponent = e.min_exponent();
  p.max_exponent = e.max_exponent();
  p.max_exponent_field = e.max_exponent_field();
  p.integer_max = e.kind == ElementKind::integer ? e.integer_max() : 0;
  p.max_value = e.max_value();
  p.sign_mask = std::uint32_t{1} << (p.bits - 1);
  p.nan_code = e.has_nan() ? detail::nan_code(e) : 0u;
  if (e.kind == ElementKind::minifloat) {
    p.inf_code = detail::inf_code(e);
    p.max_magnitude_code = detail::max_magnitude_code(e);
  }
  p.rounding = o.rounding;
  p.seed = o.seed;
  p.fast = float_path_applies(e);
  if (p.fast) {
    p.f_max = float(e.max_value());
    if (p.kind == Kind::integer) {
      p.int_up = std::ldexp(1.0f, e.fraction_bits);
      p.int_down = std::ldexp(1.0f, -e.fraction_bits);
      p.int_max = float(e.integer_max());
    }
    const float special = e.specials == Specials::ieee ? INFINITY : NAN;
    const bool clamps = p.saturate || e.specials == Specials::none;
    p.f_inf = clamps ? p.f_max : special;
    p.f_overflow = clamps || o.rounding == Rounding::toward_zero ? p.f_max : special;
    p.lean = o.rounding == Rounding::nearest_even &&
             (p.kind == Kind::integer || (e.specials != Specials::fnuz && clamps));
  }
  return p;
}

// tensor_amax: CastOptions::tensor_amax of a cast or encode (decode has none).
inline ScaleParams scale_params(const Format& f, std::optional<float> tensor_amax = std::nullopt) {
  ScaleParams p;
  p.amax_t_given = f.tensor_scale && tensor_amax.has_value();
  p.given_amax_t = p.amax_t_given ? *tensor_amax : 0.0f;
  const CastOptions so = detail::scale_cast_options();
  p.pow2 = f.scale.kind == ElementKind::exponent;
  p.two_level = f.tensor_scale;
  p.rule = f.rule;
  p.max_elem = float(f.element.max_value());
  p.elem_max_value = f.element.max_value();
  p.elem_max_exponent = f.element.max_exponent();
  p.elem_precision_bits = f.element.precision_bits();
  p.tensor_divisor = float(f.element.max_value() * f.scale.max_value());
  p.scale = element_params(f.scale, so);
  p.fp32 = f.scale == elements::fp32;
  if (!p.pow2 && f.scale.kind == ElementKind::minifloat && !f.scale.is_signed) {
    // A non-negative d has the same code in the signed twin, which the float path covers.
    ElementFormat twin = f.scale;
    twin.is_signed = true;
    if (float_path_applies(twin)) {
      ElementParams t = element_params(twin, so);
      t.has_nan = p.scale.has_nan;
      p.scale = t;
    }
  }
  return p;
}

inline LayoutParams layout_params(const Shape& shape, const Format& f) {
  LayoutParams l;
  l.granularity = f.granularity;
  l.elements = checked_elements(shape, "");
  const detail::GroupLayout layout(shape, f);
  l.groups = layout.groups();
  if (f.has_axis()) {
    const int rank = int(shape.size());
    const int axis = rank == 0 ? 0 : (f.axis < 0 ? f.axis + rank : f.axis);
    l.len = rank == 0 ? 1 : shape[std::size_t(axis)];
    l.inner = 1;
    for (int i = axis + 1; i < rank; ++i) l.inner *= shape[std::size_t(i)];
    if (f.granularity == Granularity::block) {
      l.block_size = f.block_size;
      l.blocks_per_line = (l.len + f.block_size - 1) / f.block_size;
    }
  }
  return l;
}

}  // namespace qcast::cuda_detail
