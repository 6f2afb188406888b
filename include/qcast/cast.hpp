// Array entry points of the core: fake quantization (cast), encoding to packed codes + scales,
// and decoding. Tensors are dense and row-major; `shape` gives their dimensions.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <vector>

#include "qcast/detail/float_bits.hpp"
#include "qcast/detail/groups.hpp"
#include "qcast/element_codec.hpp"
#include "qcast/format.hpp"
#include "qcast/format_names.hpp"
#include "qcast/packing.hpp"
#include "qcast/rounding.hpp"
#include "qcast/scaling.hpp"

namespace qcast {

using Shape = std::vector<std::int64_t>;

enum class DType : std::uint8_t { f32, f16, bf16 };

inline const char* dtype_name(DType t) {
  return t == DType::f32 ? "float32" : t == DType::f16 ? "float16" : "bfloat16";
}

// Packed codes and scales of one tensor (see packing.hpp for the bit order).
struct Encoded {
  Format format;
  Shape shape;
  std::vector<std::uint8_t> codes;   // element codes in row-major element order
  std::vector<std::uint8_t> scales;  // scale codes in group order (detail::GroupLayout)
  float tensor_scale = 1.0f;         // s_t of a two-level format
};

namespace detail {

struct GroupStats {
  float amax = 0.0f;
  bool nonfinite = false;
};

inline GroupStats group_stats(const float* x, const Group& g) {
  GroupStats s;
  g.for_each([&](std::int64_t i) {
    const float a = std::fabs(x[i]);
    if (!std::isfinite(a)) s.nonfinite = true;
    else if (a > s.amax) s.amax = a;
  });
  return s;
}

// amax over the finite elements of the tensor (NVFP4 recipe, tensor level).
inline float finite_amax(const float* x, std::int64_t n) {
  float m = 0.0f;
  for (std::int64_t i = 0; i < n; ++i) {
    const float a = std::fabs(x[i]);
    if (std::isfinite(a) && a > m) m = a;
  }
  return m;
}

// The value an element of a finite group is quantized to, before scaling back (x / s or x / (s_b*s_t)).
inline float scaled_input(const Format& f, float x, const GroupScale& g, float s_t) {
  return f.tensor_scale ? x / (g.value * s_t) : x / g.value;
}

// q * s, or (q * s_b) * s_t. A non-NaN q gives a NaN here only as Inf * 0: s_t is 0 (a tensor of
// tiny values under binary32 or bfloat16 block scales), x / (s_b * 0) is ±Inf, and an element
// format that keeps Inf makes q = ±Inf. That NaN is the canonical one, as every other NaN output
// is, whatever the platform's default NaN (x86: 0xFFC00000).
inline float scaled_output(const Format& f, float q, const GroupScale& g, float s_t) {
  const float y = f.tensor_scale ? (q * g.value) * s_t : q * g.value;
  return std::isnan(y) ? canonical_nan() : y;
}

inline void check_format(const Format& f) {
  const std::string why = f.invalid_reason();
  if (!why.empty()) throw std::invalid_argument("invalid format " + format_name(f) + ": " + why);
}

// A binary32 value for an error message, to 9 significant digits (enough to tell any two apart).
inline std::string float_text(float x) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.9g", double(x));
  return buf;
}

// The format and the options of a cast or encode together.
inline void check_format(const Format& f, const CastOptions& o) {
  check_format(f);
  if (!o.tensor_amax) return;
  if (!f.tensor_scale)
    throw std::invalid_argument("a tensor_amax is given, but " + format_name(f) +
                                " has no tensor scale (two-level formats: nvfp4, ...@gK+tensor)");
  const float a = *o.tensor_amax;
  if (!(std::isfinite(a) && a > 0.0f))
    throw std::invalid_argument("tensor_amax must be finite and > 0, got " + float_text(a));
}

// amax_t of a two-level format: CastOptions::tensor_amax where given, else the largest finite |x|
// of the n values (measure()); 1 for other formats.
template <class Measure>
float tensor_amax_of(const Format& f, const CastOptions& o, Measure&& measure) {
  if (!f.tensor_scale) return 1.0f;
  return o.tensor_amax ? *o.tensor_amax : float(measure());
}

// Calls fn(group index, group, its scale, s_t) for every group of a scaled format: the tensor scale
// of a two-level format first, then each group's statistics and scale (the walk cast and encode
// share). Returns s_t (1 for single-level formats).
template <class Fn>
float for_each_group_scale(const float* in, const GroupLayout& layout, const Format& f, const CastOptions& o, Fn&& fn) {
  const float amax_t = tensor_amax_of(f, o, [&] { return finite_amax(in, layout.elements()); });
  const float s_t = f.tensor_scale ? tensor_scale_of(f, amax_t) : 1.0f;
  for (std::int64_t gi = 0, groups = layout.groups(); gi < groups; ++gi) {
    const Group grp = layout.group(gi);
    const GroupStats st = group_stats(in, grp);
    fn(gi, grp, group_scale(f, st.amax, st.nonfinite, amax_t, s_t), s_t);
  }
  return s_t;
}

// Writes the outputs of one group whose scale is g (the reference for every kernel).
inline void cast_group(const float* in, float* out, const Group& grp, const Format& f, const GroupScale& g,
                       const CastOptions& o, float s_t) {
  grp.for_each([&](std::int64_t i) {
    const float x = in[i];
    switch (g.kind) {
      case GroupScale::Kind::nan: out[i] = canonical_nan(); break;
      case GroupScale::Kind::passthrough: out[i] = x; break;
      case GroupScale::Kind::zero: out[i] = std::copysign(0.0f, x); break;
      default: {
        const float q = quantize_element(f.element, scaled_input(f, x, g, s_t), o, std::uint64_t(i));
        out[i] = scaled_output(f, q, g, s_t);
      }
    }
  });
}

}  // namespace detail

// Fake quantization of n = prod(shape) binary32 values: out[i] is in[i] rounded to the format and
// scaled back. in and out may be the same array. This is the scalar reference; the compiled
// kernels (qcast/kernels.hpp) give the same bits faster.
inline void cast(const float* in, float* out, const Shape& shape, const Format& f, const CastOptions& o = {}) {
  detail::check_format(f, o);
  const detail::GroupLayout layout(shape, f);
  const std::int64_t n = layout.elements();
  if (!f.is_scaled()) {
    for (std::int64_t i = 0; i < n; ++i) out[i] = quantize_element(f.element, in[i], o, std::uint64_t(i));
    return;
  }
  detail::for_each_group_scale(in, layout, f, o, [&](std::int64_t, const detail::Group& grp, const GroupScale& g, float s_t) {
    detail::cast_group(in, out, grp, f, g, o, s_t);
  });
}

// Encodes to packed codes and scales. decode(encode(x)) == cast(x) bit for bit, except that
// integer codes have no -0 (a -0 of cast decodes as +0), and that a direct cast to a format
// without NaN (fp6, fp4, integers) cannot hold a NaN input: that throws std::domain_error.
inline Encoded encode(const float* in, const Shape& shape, const Format& f, const CastOptions& o = {}) {
  detail::check_format(f, o);
  const detail::GroupLayout layout(shape, f);
  const std::int64_t n = layout.elements();
  const int bits = f.element.bits();
  Encoded e;
  e.format = f;
  e.shape = shape;
  e.codes.assign(packed_size(std::size_t(n), bits), 0);
  if (!f.is_scaled()) {
    for (std::int64_t i = 0; i < n; ++i) {
      if (std::isnan(in[i]) && !f.element.has_nan())
        throw std::domain_error("element " + std::to_string(i) + " is NaN, which " + format_name(f) +
                                " cannot encode");
      pack_code(e.codes.data(), std::size_t(i), bits, encode_element(f.element, in[i], o, std::uint64_t(i)));
    }
    return e;
  }
  e.scales.assign(packed_size(std::size_t(layout.groups()), f.scale_storage_bits()), 0);
  e.tensor_scale = detail::for_each_group_scale(
      in, layout, f, o, [&](std::int64_t gi, const detail::Group& grp, const GroupScale& g, float s_t) {
        pack_code(e.scales.data(), std::size_t(gi), f.scale_storage_bits(), g.code);
        grp.for_each([&](std::int64_t i) {
          const float x = in[i];
          float v;  // what the element code must hold
          switch (g.kind) {
            case GroupScale::Kind::nan: v = 0.0f; break;  // the scale carries the NaN
            case GroupScale::Kind::finite: v = detail::scaled_input(f, x, g, s_t); break;
            default: v = std::copysign(0.0f, x);
          }
          // A finite group's x / (s * s_t) is NaN only as 0 / 0, where the two-level divisor
          // rounded to 0 (s_t from a tiny measured or given amax_t).
          if (std::isnan(v) && !f.element.has_nan())
            throw std::domain_error("element " + std::to_string(i) + " of " + format_name(f) + " is 0 / 0: s * s_t (s_t = " +
                                    detail::float_text(s_t) + ") rounded to 0, and the element format has no NaN code; "
                                    "a larger (given) tensor amax avoids it");
          pack_code(e.codes.data(), std::size_t(i), bits, encode_element(f.element, v, o, std::uint64_t(i)));
        });
      });
  return e;
}

// Decodes into out (prod(e.shape) binary32 values).
inline void decode(const Encoded& e, float* out) {
  const Format& f = e.format;
  detail::check_format(f);
  const detail::GroupLayout layout(e.shape, f);
  const std::int64_t n = layout.elements();
  const int bits = f.element.bits();
  if (e.codes.size() < packed_size(std::size_t(n), bits))
    throw std::invalid_argument("encoded codes hold " + std::to_string(e.codes.size()) + " bytes; shape needs " +
                                std::to_string(packed_size(std::size_t(n), bits)));
  if (!f.is_scaled()) {
    for (std::int64_t i = 0; i < n; ++i) out[i] = decode_element(f.element, unpack_code(e.codes.data(), std::size_t(i), bits));
    return;
  }
  const std::int64_t groups = layout.groups();
  if (e.scales.size() < packed_size(std::size_t(groups), f.scale_storage_bits()))
    throw std::invalid_argument("encoded scales hold " + std::to_string(e.scales.size()) + " bytes; " +
                                std::to_string(groups) + " groups need " +
                                std::to_string(packed_size(std::size_t(groups), f.scale_storage_bits())));
  for (std::int64_t gi = 0; gi < groups; ++gi) {
    const GroupScale g = group_scale_from_code(f, unpack_code(e.scales.data(), std::size_t(gi), f.scale_storage_bits()));
    layout.group(gi).for_each([&](std::int64_t i) {
      if (g.kind == GroupScale::Kind::nan) {
        out[i] = detail::canonical_nan();
        return;
      }
      const float q = decode_element(f.element, unpack_code(e.codes.data(), std::size_t(i), bits));
      out[i] = detail::scaled_output(f, q, g, e.tensor_scale);
    });
  }
}

// 16-bit storage types: values are widened exactly to binary32, cast, and the result is rounded to
// the storage type (ties to even, overflow to Inf), as storing a binary32 result would.
inline float widen(DType t, std::uint16_t h) {
  if (t == DType::bf16) return detail::float_of(std::uint32_t(h) << 16);
  return decode_element(elements::fp16, h);
}

inline std::uint16_t narrow(DType t, float x) {
  static const CastOptions ieee_store = [] {
    CastOptions o;
    o.saturate = false;
    return o;
  }();
  return std::uint16_t(encode_element(t == DType::bf16 ? elements::bf16 : elements::fp16, x, ieee_store));
}

// Type-erased cast of float32, float16 or bfloat16 arrays (in and out have type t).
inline void cast(const void* in, void* out, DType t, const Shape& shape, const Format& f, const CastOptions& o = {}) {
  if (t == DType::f32) return cast(static_cast<const float*>(in), static_cast<float*>(out), shape, f, o);
  const std::int64_t n = checked_elements(shape, "");
  std::vector<float> tmp(static_cast<std::size_t>(n));
  const auto* src = static_cast<const std::uint16_t*>(in);
  for (std::int64_t i = 0; i < n; ++i) tmp[std::size_t(i)] = widen(t, src[i]);
  cast(tmp.data(), tmp.data(), shape, f, o);
  auto* dst = static_cast<std::uint16_t*>(out);
  for (std::int64_t i = 0; i < n; ++i) dst[i] = narrow(t, tmp[std::size_t(i)]);
}

}  // namespace qcast
