// Element formats as data. Everything a codec needs (range, grid, special codes) is derived from
// the few fields of ElementFormat, in the spirit of a format descriptor: a new eXmY is a new value,
// never new code.
#pragma once
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>

namespace qcast {

// Which codes of a minifloat are special (OCP FP8 spec §5.3 names "fn" and IEEE; "fnuz" is the
// AMD/Graphcore variant with a single NaN at the negative-zero code).
enum class Specials : std::uint8_t {
  ieee,  // all-ones exponent: mantissa 0 = Inf, otherwise NaN
  fn,    // finite: only the all-ones code (S.1..1.1..1) is NaN, no Inf
  fnuz,  // finite, unsigned zero: NaN is the code 1000...0 (the -0 slot); no Inf, no -0
  none,  // every code is a finite number (OCP MX FP6/FP4 elements)
};

enum class ElementKind : std::uint8_t {
  integer,    // value = code * 2^-fraction_bits (two's complement when signed)
  minifloat,  // sign, exponent_bits, mantissa_bits >= 1, bias, subnormals
  exponent,   // power of two only: value = 2^(code - bias), all-ones code = NaN (OCP E8M0)
};

struct ElementFormat {
  ElementKind kind = ElementKind::minifloat;
  bool is_signed = true;
  int exponent_bits = 0;  // minifloat / exponent
  int mantissa_bits = 0;  // minifloat
  int bias = 0;           // minifloat / exponent
  Specials specials = Specials::none;
  int integer_bits = 0;   // integer: total bits incl. sign
  int fraction_bits = 0;  // integer: fixed-point fraction (MXINT8 elements have 6)

  static constexpr int default_bias(int exponent_bits) { return (1 << (exponent_bits - 1)) - 1; }

  static constexpr ElementFormat minifloat(int e, int m, int bias, Specials sp, bool is_signed = true) {
    ElementFormat f;
    f.kind = ElementKind::minifloat;
    f.is_signed = is_signed;
    f.exponent_bits = e;
    f.mantissa_bits = m;
    f.bias = bias;
    f.specials = sp;
    return f;
  }
  static constexpr ElementFormat integer(int bits, bool is_signed = true, int fraction_bits = 0) {
    ElementFormat f;
    f.kind = ElementKind::integer;
    f.is_signed = is_signed;
    f.integer_bits = bits;
    f.fraction_bits = fraction_bits;
    return f;
  }
  static constexpr ElementFormat exponent(int e, int bias) {
    ElementFormat f;
    f.kind = ElementKind::exponent;
    f.is_signed = false;
    f.exponent_bits = e;
    f.bias = bias;
    f.specials = Specials::fn;
    return f;
  }

  constexpr int bits() const {
    switch (kind) {
      case ElementKind::integer: return integer_bits;
      case ElementKind::exponent: return exponent_bits;
      default: return (is_signed ? 1 : 0) + exponent_bits + mantissa_bits;
    }
  }
  constexpr bool has_nan() const {
    return kind != ElementKind::integer && specials != Specials::none;
  }
  constexpr bool has_inf() const { return kind == ElementKind::minifloat && specials == Specials::ieee; }
  // The overflow convention when CastOptions::saturate is unset: IEEE storage types of 16 bits or
  // more (fp16, bf16, fp32) overflow to Inf like a C++ or PyTorch conversion; everything else
  // saturates (the OCP FP8/MX conversions).
  constexpr bool saturates_by_default() const {
    return !(kind == ElementKind::minifloat && specials == Specials::ieee && bits() >= 16);
  }
  constexpr bool has_negative_zero() const {
    return kind == ElementKind::minifloat && is_signed && specials != Specials::fnuz;
  }

  // Integer range: signed formats are symmetric (narrow range, the most negative code unused).
  constexpr std::int64_t integer_max() const {
    return is_signed ? (std::int64_t{1} << (integer_bits - 1)) - 1 : (std::int64_t{1} << integer_bits) - 1;
  }
  // Largest exponent field that encodes a finite value, and the largest mantissa there.
  constexpr int max_exponent_field() const {
    const int all_ones = (1 << exponent_bits) - 1;
    if (kind == ElementKind::exponent) return all_ones - 1;
    if (specials == Specials::ieee) return all_ones - 1;
    return all_ones;
  }
  constexpr int max_mantissa_at_top() const {
    const int all_ones = (1 << mantissa_bits) - 1;
    return specials == Specials::fn ? all_ones - 1 : all_ones;
  }
  // Smallest unbiased exponent of a normal value (subnormals share its ulp).
  constexpr int min_exponent() const { return kind == ElementKind::exponent ? -bias : 1 - bias; }
  // floor(log2(max_value)): OCP MX v1.0 §6.3 calls it emax_elem.
  constexpr int max_exponent() const {
    if (kind == ElementKind::integer) {
      int e = -1;
      for (std::int64_t v = integer_max(); v > 0; v >>= 1) ++e;
      return e - fraction_bits;
    }
    return max_exponent_field() - bias;
  }

  double max_value() const {
    switch (kind) {
      case ElementKind::integer: return std::ldexp(double(integer_max()), -fraction_bits);
      case ElementKind::exponent: return std::ldexp(1.0, max_exponent());
      default:
        return std::ldexp(1.0 + std::ldexp(double(max_mantissa_at_top()), -mantissa_bits), max_exponent());
    }
  }
  double min_normal() const {
    if (kind == ElementKind::integer) return std::ldexp(1.0, -fraction_bits);
    return std::ldexp(1.0, min_exponent());
  }
  double min_subnormal() const {
    if (kind == ElementKind::minifloat) return std::ldexp(1.0, min_exponent() - mantissa_bits);
    return min_normal();
  }
  // Mantissa bits after the leading one; integers count their magnitude bits below the top one.
  int precision_bits() const {
    if (kind == ElementKind::integer) return max_exponent() + fraction_bits;
    return kind == ElementKind::minifloat ? mantissa_bits : 0;
  }

  // Empty when the descriptor is usable; otherwise why not. Codes are at most 32 bits and every
  // value must be an exact binary32 so that decoding never rounds.
  std::string invalid_reason() const {
    switch (kind) {
      case ElementKind::integer:
        if (integer_bits < 2 || integer_bits > 16) return "integer formats have 2..16 bits";
        if (fraction_bits < 0 || fraction_bits > 30) return "fraction bits must be 0..30";
        return {};
      case ElementKind::exponent:
        if (exponent_bits < 1 || exponent_bits > 8) return "exponent-only formats have 1..8 bits";
        if (max_exponent() > 127 || min_exponent() < -149) return "values must be exact in binary32";
        return {};
      default:
        if (exponent_bits < 1 || exponent_bits > 8) return "minifloats have 1..8 exponent bits";
        if (mantissa_bits < 1 || mantissa_bits > 23) return "minifloats have 1..23 mantissa bits";
        if (specials == Specials::fnuz && !is_signed) return "fnuz needs a sign bit (its NaN is the -0 code)";
        if (specials == Specials::ieee && exponent_bits < 2) return "ieee specials need 2+ exponent bits";
        if (max_exponent() > 127) return "the largest value exceeds binary32";
        if (min_exponent() - mantissa_bits < -149) return "the smallest subnormal is below binary32's";
        return {};
    }
  }
  void validate() const {
    const std::string why = invalid_reason();
    if (!why.empty()) throw std::invalid_argument("invalid element format: " + why);
  }

  friend constexpr bool operator==(const ElementFormat& a, const ElementFormat& b) {
    if (a.kind != b.kind) return false;
    switch (a.kind) {
      case ElementKind::integer:
        return a.is_signed == b.is_signed && a.integer_bits == b.integer_bits && a.fraction_bits == b.fraction_bits;
      case ElementKind::exponent: return a.exponent_bits == b.exponent_bits && a.bias == b.bias;
      default:
        return a.is_signed == b.is_signed && a.exponent_bits == b.exponent_bits &&
               a.mantissa_bits == b.mantissa_bits && a.bias == b.bias && a.specials == b.specials;
    }
  }
  friend constexpr bool operator!=(const ElementFormat& a, const ElementFormat& b) { return !(a == b); }
};

// The element formats with names of their own.
namespace elements {
inline constexpr ElementFormat fp8_e4m3 = ElementFormat::minifloat(4, 3, 7, Specials::fn);
inline constexpr ElementFormat fp8_e5m2 = ElementFormat::minifloat(5, 2, 15, Specials::ieee);
inline constexpr ElementFormat fp8_e4m3fnuz = ElementFormat::minifloat(4, 3, 8, Specials::fnuz);
inline constexpr ElementFormat fp8_e5m2fnuz = ElementFormat::minifloat(5, 2, 16, Specials::fnuz);
inline constexpr ElementFormat fp6_e2m3 = ElementFormat::minifloat(2, 3, 1, Specials::none);
inline constexpr ElementFormat fp6_e3m2 = ElementFormat::minifloat(3, 2, 3, Specials::none);
inline constexpr ElementFormat fp4_e2m1 = ElementFormat::minifloat(2, 1, 1, Specials::none);
inline constexpr ElementFormat fp16 = ElementFormat::minifloat(5, 10, 15, Specials::ieee);
inline constexpr ElementFormat bf16 = ElementFormat::minifloat(8, 7, 127, Specials::ieee);
inline constexpr ElementFormat fp32 = ElementFormat::minifloat(8, 23, 127, Specials::ieee);
inline constexpr ElementFormat e8m0 = ElementFormat::exponent(8, 127);
inline constexpr ElementFormat ue4m3 = ElementFormat::minifloat(4, 3, 7, Specials::fn, false);
// OCP MX v1.0 §5.3.4: MXINT8 elements are two's complement with an implicit scale of 2^-6.
inline constexpr ElementFormat mxint8_element = ElementFormat::integer(8, true, 6);
}  // namespace elements

}  // namespace qcast
