// One element on the device: Q(x), its code, and a code's value, as qcast::quantize_element,
// encode_element and decode_element compute them. Two paths give the same bits:
// - the float path (ElementParams::fast), the arithmetic of the CPU SIMD kernels
//   (src/cpu/quantize_vector-inl.h) on one lane: signed minifloats whose grid steps are normal
//   binary32 numbers, and signed integers;
// - the general path, the reference's double arithmetic, for every other format (exponent-only
//   elements, unsigned, wide or subnormal-step minifloats).
// Device code is compiled with -fmad=false so that no multiply-add is fused: every product and
// sum rounds as it does on the CPU. Compiles as host C++ too (device_or_host.hpp), for
// tests/cuda/device_math_test.cpp.
#pragma once
#include <cstdint>

#include "device_or_host.hpp"
#include "qcast/rounding.hpp"

namespace qcast::cuda_detail {

enum class Kind : std::uint8_t { integer, minifloat, exponent };
enum class Special : std::uint8_t { ieee, fn, fnuz, none };

// Everything the device needs of an ElementFormat + CastOptions, computed on the host
// (element_params in launch.hpp). Trivially copyable: passed by value to kernels.
struct ElementParams {
  Kind kind = Kind::minifloat;
  Special specials = Special::none;
  bool is_signed = true;
  bool saturate = true;
  bool has_nan = false;
  int bits = 0, exponent_bits = 0, mantissa_bits = 0, bias = 0, fraction_bits = 0;
  int min_exponent = 0, max_exponent = 0, max_exponent_field = 0;
  std::int64_t integer_max = 0;
  double max_value = 0;
  std::uint32_t sign_mask = 0, nan_code = 0, inf_code = 0, max_magnitude_code = 0;
  Rounding rounding = Rounding::nearest_even;
  std::uint64_t seed = 0;
  // The float path; lean: its default case (ties to even, saturating; a signed minifloat with -0
  // or a signed integer).
  bool fast = false, lean = false;
  float f_max = 0, f_overflow = 0, f_inf = 0;
  float int_up = 1, int_down = 1, int_max = 0;
};

QCAST_DEVICE QCAST_FORCEINLINE float canonical_nan() { return float_of(0x7FC00000u); }

// The stochastic draw of element `index`: the core's own function (qcast/rounding.hpp), compiled
// for the device too.
using detail::stochastic_bits;

// ---------------------------------------------------------------------------------------------
// The general path: the reference (qcast/element_codec.hpp) in double.

QCAST_DEVICE QCAST_FORCEINLINE int floor_log2(double a) {
  int e;
  frexp(a, &e);
  return e - 1;
}

QCAST_DEVICE inline double round_to_integer(double r, Rounding mode, double u) {
  const double lower = floor(r);
  const double frac = r - lower;
  switch (mode) {
    case Rounding::nearest_even:
      if (frac > 0.5) return lower + 1;
      if (frac < 0.5) return lower;
      return fmod(lower, 2.0) == 0.0 ? lower : lower + 1;
    case Rounding::nearest_away: return frac >= 0.5 ? lower + 1 : lower;
    case Rounding::toward_zero: return lower;
    case Rounding::stochastic: return u < frac ? lower + 1 : lower;
  }
  return lower;
}

QCAST_DEVICE inline double draw(const ElementParams& f, std::uint64_t index) {
  return f.rounding == Rounding::stochastic ? detail::stochastic_uniform(f.seed, index) : 0.0;
}

QCAST_DEVICE inline std::uint32_t encode_integer(const ElementParams& f, float x, double u) {
  const std::int64_t qmax = f.integer_max;
  const std::int64_t qmin = f.is_signed ? -qmax : 0;
  std::int64_t q;
  if (isinf(x)) {
    q = x > 0 ? qmax : qmin;
  } else {
    const double r = ldexp(fabs(double(x)), f.fraction_bits);
    const double n = round_to_integer(r, f.rounding, u);
    const double limit = double(signbit(x) ? -qmin : qmax);
    q = std::int64_t(n > limit ? limit : n);
    if (signbit(x)) q = -q;
  }
  const std::uint32_t mask = f.bits >= 32 ? 0xFFFFFFFFu : (1u << f.bits) - 1;
  return std::uint32_t(q) & mask;
}

QCAST_DEVICE inline std::uint32_t encode_exponent(const ElementParams& f, float x, double u) {
  if (isnan(x)) return f.nan_code;
  if (isinf(x)) return x > 0 && !f.saturate ? f.nan_code : (x > 0 ? std::uint32_t(f.max_exponent_field) : 0u);
  if (!(x > 0)) return 0;
  const double a = double(x);
  int e = floor_log2(a);
  const double frac = ldexp(a, -e);
  double n;
  if (frac == 1.5 && f.rounding == Rounding::nearest_even) n = ((e + f.bias) & 1) ? 2.0 : 1.0;
  else n = round_to_integer(frac, f.rounding, u);
  if (n == 2.0) ++e;
  if (e < f.min_exponent) return 0;
  if (e > f.max_exponent) return f.saturate ? std::uint32_t(f.max_exponent_field) : f.nan_code;
  return std::uint32_t(e + f.bias);
}

QCAST_DEVICE inline std::uint32_t minifloat_magnitude_code(const ElementParams& f, double v) {
  if (v == 0.0) return 0;
  const int e = floor_log2(v);
  if (e < f.min_exponent) return std::uint32_t(ldexp(v, f.mantissa_bits - f.min_exponent));
  const std::uint32_t mant = std::uint32_t(ldexp(v, f.mantissa_bits - e)) - (1u << f.mantissa_bits);
  return (std::uint32_t(e + f.bias) << f.mantissa_bits) | mant;
}

QCAST_DEVICE inline std::uint32_t encode_minifloat(const ElementParams& f, float x, double u) {
  if (isnan(x)) return f.nan_code;
  const bool negative = signbit(x);
  if (negative && !f.is_signed) return 0;
  const std::uint32_t sign = negative ? f.sign_mask : 0u;
  const std::uint32_t sign_of_zero = f.specials == Special::fnuz ? 0u : sign;
  if (isinf(x)) {
    if (f.saturate || f.specials == Special::none) return sign | f.max_magnitude_code;
    return f.specials == Special::ieee ? sign | f.inf_code : f.nan_code;
  }
  const double a = fabs(double(x));
  if (a == 0.0) return sign_of_zero;
  int e = floor_log2(a);
  if (e < f.min_exponent) e = f.min_exponent;
  const double n = round_to_integer(ldexp(a, f.mantissa_bits - e), f.rounding, u);
  const double v = ldexp(n, e - f.mantissa_bits);
  if (v > f.max_value) {
    if (f.saturate || f.specials == Special::none || f.rounding == Rounding::toward_zero)
      return sign | f.max_magnitude_code;
    return f.specials == Special::ieee ? sign | f.inf_code : f.nan_code;
  }
  if (v == 0.0) return sign_of_zero;
  return sign | minifloat_magnitude_code(f, v);
}

// encode_element for a non-NaN x, or a NaN where the format has a NaN code (callers check).
QCAST_DEVICE inline std::uint32_t encode_general(const ElementParams& f, float x, std::uint64_t index) {
  const double u = draw(f, index);
  switch (f.kind) {
    case Kind::integer: return encode_integer(f, x, u);
    case Kind::exponent: return encode_exponent(f, x, u);
    default: return encode_minifloat(f, x, u);
  }
}

QCAST_DEVICE inline float decode_general(const ElementParams& f, std::uint32_t code) {
  const std::uint32_t all = f.bits >= 32 ? 0xFFFFFFFFu : (1u << f.bits) - 1;
  code &= all;
  switch (f.kind) {
    case Kind::integer: {
      std::int64_t q = code;
      if (f.is_signed && (code >> (f.bits - 1))) q -= std::int64_t{1} << f.bits;
      return float(ldexp(double(q), -f.fraction_bits));
    }
    case Kind::exponent:
      if (code == f.nan_code) return canonical_nan();
      return float(ldexp(1.0, int(code) - f.bias));
    default: break;
  }
  const int m = f.mantissa_bits;
  const bool negative = f.is_signed && (code & f.sign_mask);
  const std::uint32_t magnitude_mask = (1u << (f.exponent_bits + m)) - 1;
  const std::uint32_t magnitude = code & magnitude_mask;
  const std::uint32_t exp_field = magnitude >> m;
  const std::uint32_t mant = magnitude & ((1u << m) - 1);
  switch (f.specials) {
    case Special::ieee:
      if (exp_field == (1u << f.exponent_bits) - 1) {
        if (mant != 0) return canonical_nan();
        return negative ? -INFINITY : INFINITY;
      }
      break;
    case Special::fn:
      if (magnitude == magnitude_mask) return canonical_nan();
      break;
    case Special::fnuz:
      if (negative && magnitude == 0) return canonical_nan();
      break;
    case Special::none: break;
  }
  const double v = exp_field == 0 ? ldexp(double(mant), f.min_exponent - m)
                                  : ldexp(double(mant | (1u << m)), int(exp_field) - f.bias - m);
  return float(negative ? -v : v);
}

// ---------------------------------------------------------------------------------------------
// The float path (QuantizeVector of the CPU kernels, one lane).

QCAST_DEVICE QCAST_FORCEINLINE float round_float(const ElementParams& p, float r, std::uint64_t index) {
  switch (p.rounding) {
    case Rounding::nearest_even: return rintf(r);
    case Rounding::nearest_away: {  // the fraction r - trunc(r) is exact; r + 0.5 is not (r = 0.5 - 2^-25)
      const float whole = truncf(r);
      return r - whole >= 0.5f ? whole + 1.0f : whole;
    }
    case Rounding::toward_zero: return truncf(r);
    default: {
      const float u24 = float(stochastic_bits(p.seed, index) >> 8);
      const float lower = floorf(r);
      const float frac24 = (r - lower) * 16777216.0f;  // exact
      return u24 < frac24 ? lower + 1.0f : lower;
    }
  }
}

QCAST_DEVICE QCAST_FORCEINLINE float quantize_fast(const ElementParams& p, float v, std::uint64_t index) {
  const std::uint32_t sign = bits_of(v) & 0x80000000u;
  const float a = fminf(fabsf(v), p.f_max + p.f_max);  // Inf lands beyond max
  float q;
  if (p.kind == Kind::integer) {
    q = fminf(round_float(p, a * p.int_up, index), p.int_max) * p.int_down;
  } else {
    int e = int(bits_of(a) >> 23) - 127;
    e = e > p.min_exponent ? e : p.min_exponent;
    const float inv_ulp = float_of(std::uint32_t(p.mantissa_bits - e + 127) << 23);
    const float ulp = float_of(std::uint32_t(e - p.mantissa_bits + 127) << 23);
    q = round_float(p, a * inv_ulp, index) * ulp;
    if (q > p.f_max) q = p.f_overflow;
    if (isinf(v)) q = p.f_inf;
  }
  const bool drop_sign = p.specials == Special::fnuz && q == 0.0f;
  q = float_of(bits_of(q) | (drop_sign ? 0u : sign));
  return isnan(q) || isnan(v) ? canonical_nan() : q;
}

// quantize_fast for lean parameters (QuantizeVectorLean / LeanInt of the CPU kernels): Inf and
// overflow both become max, so one fminf replaces their selects.
QCAST_DEVICE QCAST_FORCEINLINE float quantize_lean(const ElementParams& p, float v) {
  const float a = fminf(fabsf(v), p.f_max + p.f_max);
  if (p.kind == Kind::integer) {  // QuantizeVectorLeanInt: integers always saturate
    const float q = fminf(rintf(a * p.int_up), p.int_max) * p.int_down;
    return isnan(v) ? canonical_nan() : float_of(bits_of(q) | (bits_of(v) & 0x80000000u));
  }
  const int biased = int(bits_of(a) >> 23);
  const int e = biased > p.min_exponent + 127 ? biased : p.min_exponent + 127;
  const std::uint32_t ulp_bits = std::uint32_t(e - p.mantissa_bits) << 23;
  const float q = fminf(rintf(a * float_of(0x7F000000u - ulp_bits)) * float_of(ulp_bits), p.f_max);
  return isnan(v) ? canonical_nan() : float_of(bits_of(q) | (bits_of(v) & 0x80000000u));
}

// quantize_element: Q(x) as binary32.
QCAST_DEVICE QCAST_FORCEINLINE float quantize(const ElementParams& p, float x, std::uint64_t index) {
  if (p.lean) return quantize_lean(p, x);
  if (p.fast) return quantize_fast(p, x, index);
  if (isnan(x)) return canonical_nan();
  const float v = decode_general(p, encode_general(p, x, index));
  if (v == 0.0f && p.kind == Kind::integer && p.is_signed) return copysignf(0.0f, x);
  return v;
}

// The code of a value q already on the grid of a fast-path format (Q's output): reads the
// exponent and mantissa fields off its binary32 bits instead of rounding again.
QCAST_DEVICE QCAST_FORCEINLINE std::uint32_t code_of_value(const ElementParams& p, float q) {
  if (isnan(q)) return p.nan_code;
  const std::uint32_t b = bits_of(q);
  const bool negative = b >> 31;
  const std::uint32_t magnitude_bits = b & 0x7FFFFFFFu;
  if (p.kind == Kind::integer) {
    const std::int32_t n = std::int32_t(float_of(magnitude_bits) * p.int_up);
    const std::uint32_t mask = (1u << p.bits) - 1;
    return std::uint32_t(negative ? -n : n) & mask;
  }
  const std::uint32_t sign = negative ? p.sign_mask : 0u;
  if (magnitude_bits == 0x7F800000u) return sign | p.inf_code;
  if (magnitude_bits == 0) return sign;  // fnuz zeros carry no sign (Q dropped it)
  const int e = int(magnitude_bits >> 23) - 127;
  if (e < p.min_exponent) {  // subnormal code: |q| / 2^(min_exponent - mantissa_bits), exact
    const float steps = float_of(magnitude_bits) * float_of(std::uint32_t(p.mantissa_bits - p.min_exponent + 127) << 23);
    return sign | std::uint32_t(steps);
  }
  const std::uint32_t mant = (magnitude_bits >> (23 - p.mantissa_bits)) & ((1u << p.mantissa_bits) - 1);
  return sign | (std::uint32_t(e + p.bias) << p.mantissa_bits) | mant;
}

// encode_element (NaN where the format has no NaN code is the caller's to report).
QCAST_DEVICE QCAST_FORCEINLINE std::uint32_t encode(const ElementParams& p, float x, std::uint64_t index) {
  if (p.lean) return code_of_value(p, quantize_lean(p, x));
  if (p.fast) return code_of_value(p, quantize_fast(p, x, index));
  return encode_general(p, x, index);
}

}  // namespace qcast::cuda_detail
