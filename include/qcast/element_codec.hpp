// Scalar, bit-exact encode/decode of one element. This is the reference that every kernel is
// tested against. Arithmetic is done in double: a binary32 input and every grid step are exact
// there, so rounding happens exactly once, in round_to_integer.
#pragma once
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "qcast/detail/float_bits.hpp"
#include "qcast/element.hpp"
#include "qcast/rounding.hpp"

namespace qcast {

namespace detail {

// Round r >= 0 to an integer by the given mode; u is the stochastic draw in [0, 1).
inline double round_to_integer(double r, Rounding mode, double u) noexcept {
  const double lower = std::floor(r);
  const double frac = r - lower;  // exact
  switch (mode) {
    case Rounding::nearest_even:
      if (frac > 0.5) return lower + 1;
      if (frac < 0.5) return lower;
      return std::fmod(lower, 2.0) == 0.0 ? lower : lower + 1;
    case Rounding::nearest_away: return frac >= 0.5 ? lower + 1 : lower;
    case Rounding::toward_zero: return lower;
    case Rounding::stochastic: return u < frac ? lower + 1 : lower;
  }
  return lower;
}

inline std::uint32_t sign_mask(const ElementFormat& f) { return std::uint32_t{1} << (f.bits() - 1); }
inline std::uint32_t all_ones(int bits) { return bits >= 32 ? 0xFFFFFFFFu : (std::uint32_t{1} << bits) - 1; }

inline std::uint32_t nan_code(const ElementFormat& f) {
  switch (f.kind) {
    case ElementKind::exponent: return all_ones(f.exponent_bits);
    case ElementKind::minifloat:
      switch (f.specials) {
        case Specials::ieee:  // quiet NaN: all-ones exponent, mantissa MSB set
          return (all_ones(f.exponent_bits) << f.mantissa_bits) | (std::uint32_t{1} << (f.mantissa_bits - 1));
        case Specials::fn: return all_ones(f.bits() - (f.is_signed ? 1 : 0));
        case Specials::fnuz: return sign_mask(f);
        case Specials::none: break;
      }
      break;
    case ElementKind::integer: break;
  }
  throw std::domain_error("this element format has no NaN code");
}

inline std::uint32_t inf_code(const ElementFormat& f) { return all_ones(f.exponent_bits) << f.mantissa_bits; }

// Code of an exactly representable magnitude v >= 0 of a minifloat (no sign).
inline std::uint32_t minifloat_magnitude_code(const ElementFormat& f, double v) {
  if (v == 0.0) return 0;
  const int e = floor_log2(v);
  if (e < f.min_exponent()) {  // subnormal: exponent field 0
    return std::uint32_t(std::ldexp(v, f.mantissa_bits - f.min_exponent()));
  }
  const std::uint32_t mant = std::uint32_t(std::ldexp(v, f.mantissa_bits - e)) - (std::uint32_t{1} << f.mantissa_bits);
  return (std::uint32_t(e + f.bias) << f.mantissa_bits) | mant;
}

inline std::uint32_t max_magnitude_code(const ElementFormat& f) {
  return (std::uint32_t(f.max_exponent_field()) << f.mantissa_bits) | std::uint32_t(f.max_mantissa_at_top());
}

inline std::uint32_t encode_integer(const ElementFormat& f, float x, const CastOptions& o, double u) {
  const std::int64_t qmax = f.integer_max();
  const std::int64_t qmin = f.is_signed ? -qmax : 0;
  std::int64_t q;
  if (std::isnan(x)) throw std::domain_error("integer formats have no NaN code");
  if (std::isinf(x)) {
    q = x > 0 ? qmax : qmin;
  } else {
    const double r = std::ldexp(std::fabs(double(x)), f.fraction_bits);  // exact
    const double n = round_to_integer(r, o.rounding, u);
    const double limit = double(std::signbit(x) ? -qmin : qmax);
    q = std::int64_t(n > limit ? limit : n);  // integers always saturate
    if (std::signbit(x)) q = -q;
  }
  return std::uint32_t(q) & all_ones(f.integer_bits);
}

inline bool saturates(const ElementFormat& f, const CastOptions& o) {
  return o.saturate.value_or(f.saturates_by_default());
}

inline std::uint32_t encode_exponent(const ElementFormat& f, float x, const CastOptions& o, double u) {
  const bool saturate = saturates(f, o);
  if (std::isnan(x)) return nan_code(f);
  const int max_field = f.max_exponent_field();
  if (std::isinf(x)) return x > 0 && !saturate ? nan_code(f) : (x > 0 ? std::uint32_t(max_field) : 0u);
  if (!(x > 0)) return 0;  // no zero and no sign: the smallest power of two
  const double a = double(x);
  int e = floor_log2(a);
  const double frac = std::ldexp(a, -e);  // in [1, 2)
  // Between 2^e and 2^(e+1); ties (1.5 * 2^e) go to the even code.
  double n;
  if (frac == 1.5 && o.rounding == Rounding::nearest_even) n = ((e + f.bias) & 1) ? 2.0 : 1.0;
  else n = round_to_integer(frac, o.rounding, u);  // 1 or 2
  if (n == 2.0) ++e;
  if (e < f.min_exponent()) return 0;
  if (e > f.max_exponent()) return saturate ? std::uint32_t(max_field) : nan_code(f);
  return std::uint32_t(e + f.bias);
}

inline std::uint32_t encode_minifloat(const ElementFormat& f, float x, const CastOptions& o, double u) {
  const bool saturate = saturates(f, o);
  const bool negative = std::signbit(x) && !std::isnan(x);
  if (std::isnan(x)) return nan_code(f);
  if (negative && !f.is_signed) return 0;  // unsigned formats clamp at zero
  const std::uint32_t sign = negative ? sign_mask(f) : 0u;
  const std::uint32_t sign_of_zero = f.specials == Specials::fnuz ? 0u : sign;
  if (std::isinf(x)) {
    if (saturate || f.specials == Specials::none) return sign | max_magnitude_code(f);
    return f.specials == Specials::ieee ? sign | inf_code(f) : nan_code(f);
  }
  const double a = std::fabs(double(x));
  if (a == 0.0) return sign_of_zero;
  int e = floor_log2(a);
  if (e < f.min_exponent()) e = f.min_exponent();
  const double n = round_to_integer(std::ldexp(a, f.mantissa_bits - e), o.rounding, u);
  const double v = std::ldexp(n, e - f.mantissa_bits);  // exact: n < 2^25
  if (v > f.max_value()) {
    // IEEE 754 §7.4: truncation never overflows to Inf.
    if (saturate || f.specials == Specials::none || o.rounding == Rounding::toward_zero)
      return sign | max_magnitude_code(f);
    return f.specials == Specials::ieee ? sign | inf_code(f) : nan_code(f);
  }
  if (v == 0.0) return sign_of_zero;
  return sign | minifloat_magnitude_code(f, v);
}

}  // namespace detail

// The code of x in format f (low f.bits() bits). `index` selects the stochastic draw.
// Throws std::domain_error for NaN in a format without a NaN code (integers, FP6, FP4): scaled
// formats carry such NaNs in their scale instead.
inline std::uint32_t encode_element(const ElementFormat& f, float x, const CastOptions& o = {},
                                    std::uint64_t index = 0) {
  const double u = o.rounding == Rounding::stochastic ? detail::stochastic_uniform(o.seed, index) : 0.0;
  switch (f.kind) {
    case ElementKind::integer: return detail::encode_integer(f, x, o, u);
    case ElementKind::exponent: return detail::encode_exponent(f, x, o, u);
    default:
      if (std::isnan(x) && !f.has_nan()) throw std::domain_error("this element format has no NaN code");
      return detail::encode_minifloat(f, x, o, u);
  }
}

// The value of a code. NaN codes decode to the canonical NaN.
inline float decode_element(const ElementFormat& f, std::uint32_t code) {
  code &= detail::all_ones(f.bits());
  switch (f.kind) {
    case ElementKind::integer: {
      std::int64_t q = code;
      if (f.is_signed && (code >> (f.integer_bits - 1))) q -= std::int64_t{1} << f.integer_bits;
      return float(std::ldexp(double(q), -f.fraction_bits));
    }
    case ElementKind::exponent:
      if (code == detail::nan_code(f)) return detail::canonical_nan();
      return float(std::ldexp(1.0, int(code) - f.bias));
    default: break;
  }
  const int m = f.mantissa_bits;
  const bool negative = f.is_signed && (code & detail::sign_mask(f));
  const std::uint32_t magnitude = code & detail::all_ones(f.exponent_bits + m);
  const std::uint32_t exp_field = magnitude >> m;
  const std::uint32_t mant = magnitude & detail::all_ones(m);
  switch (f.specials) {
    case Specials::ieee:
      if (exp_field == detail::all_ones(f.exponent_bits)) {
        if (mant != 0) return detail::canonical_nan();
        return negative ? -INFINITY : INFINITY;
      }
      break;
    case Specials::fn:
      if (magnitude == detail::all_ones(f.exponent_bits + m)) return detail::canonical_nan();
      break;
    case Specials::fnuz:
      if (negative && magnitude == 0) return detail::canonical_nan();
      break;
    case Specials::none: break;
  }
  double v = exp_field == 0 ? std::ldexp(double(mant), f.min_exponent() - m)
                            : std::ldexp(double(mant | (std::uint32_t{1} << m)), int(exp_field) - f.bias - m);
  return float(negative ? -v : v);
}

// Fake quantization of one value: the nearest value of f under the options, as binary32.
// NaN gives NaN even where f has no NaN code. A zero result keeps the sign of x wherever the
// format's arithmetic would (integers round -0.3 to -0, FNUZ has no -0).
inline float quantize_element(const ElementFormat& f, float x, const CastOptions& o = {},
                              std::uint64_t index = 0) {
  if (std::isnan(x)) return detail::canonical_nan();
  const float v = decode_element(f, encode_element(f, x, o, index));
  if (v == 0.0f && f.kind == ElementKind::integer && f.is_signed) return std::copysign(0.0f, x);
  return v;
}

}  // namespace qcast
