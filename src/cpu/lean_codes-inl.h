// Element codes straight from scaled values, for the lean grids (ties to even, saturating): signed
// minifloats without FNUZ, and signed integers. The general encode quantizes first and then reads
// the code off the grid value (CodeOfValue); here one pass of integer arithmetic on the bits of v
// gives the code, the way binary32 -> binary16 conversions round (IEEE 754-2019 section 4.3.1,
// roundTiesToEven):
//   normal range (|v| >= 2^min_exponent): add half an element ulp minus one, plus the lowest kept
//     bit, to the bits of |v| and drop the 23 - M low bits; a carry out of the mantissa moves into
//     the exponent field, which is what rounding up to the next binade does. Rebias the exponent.
//   subnormal range: |v| + C with C = 2^(min_exponent - M + 23), whose binary32 ulp is the element's
//     subnormal step, is rounded by the FPU to the nearest multiple of that step (ties to even);
//     bits(|v| + C) - bits(C) is then the subnormal code, and 2^M (the smallest normal code) where
//     |v| rounds up into the normal range.
//   saturation: codes grow with the magnitude, so one integer min against the largest finite code
//     maps every larger value, Inf included, to it (OCP FP8 / MX v1.0 section 5.3 saturating mode).
//   integers: (y + 1.5 * 2^23) rounds y in [-2^22, 2^22] to an integer ties to even, and its bits
//     minus those of 1.5 * 2^23 are that integer in two's complement.
// code_kernel.cpp tests the results against the reference through kernels::encode on every target.
//
// Included once per Highway target (toggling include guard, Highway's -inl.h convention).
#if defined(QCAST_CPU_LEAN_CODES_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef QCAST_CPU_LEAN_CODES_INL_H_
#undef QCAST_CPU_LEAN_CODES_INL_H_
#else
#define QCAST_CPU_LEAN_CODES_INL_H_
#endif

#include <hwy/highway.h>

#include <cstddef>
#include <cstdint>
#include <cmath>
#include <cstring>
#include <type_traits>

#include "src/cpu/code_kernel.hpp"
#include "src/cpu/quantize_vector-inl.h"

HWY_BEFORE_NAMESPACE();
namespace qcast::kernels::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// Whether LeanCodes gives the reference's codes for p: ties to even; integers (which always
// saturate) of at most 8 bits; minifloats that saturate Inf and overflow, keep -0, and whose largest
// value is normal.
HWY_INLINE bool LeanCodesApply(const CodeParams& p) {
  const SpanParams& e = p.element;
  if (e.rounding != Rounding::nearest_even || p.bits > 8) return false;
  if (e.integer) return true;
  return LeanQuantizerApplies(e) && e.max_value >= p.min_normal && e.mantissa_bits <= 22;
}

// The codes of a vector of scaled values, with the constants as vectors made once (held in
// registers through the caller's loop).
template <bool kInteger>
struct LeanCodes {
  using DF = hn::ScalableTag<float>;
  using DI = hn::RebindToSigned<DF>;
  hn::Vec<DI> magnitude, round_bias, one, rebias, min_normal_bits, max_code, subnormal_base_bits, nan_code, code_mask;
  hn::Vec<DF> subnormal_base, up, int_max, neg_int_max, int_base;
  int drop_bits = 0, sign_shift = 0;  // 23 - M; 32 - bits moves binary32's sign to the code's
  bool nan_codes = false;

  explicit LeanCodes(const CodeParams& p) {
    const DF df;
    const DI di;
    const SpanParams& e = p.element;
    magnitude = hn::Set(di, 0x7FFFFFFF);
    one = hn::Set(di, 1);
    code_mask = hn::Set(di, std::int32_t((1u << p.bits) - 1));
    nan_codes = p.has_nan;
    nan_code = hn::Set(di, std::int32_t(p.nan_code));
    sign_shift = 32 - p.bits;
    up = hn::Set(df, e.int_up);
    int_max = hn::Set(df, e.int_max);
    neg_int_max = hn::Neg(int_max);
    int_base = hn::Set(df, 12582912.0f);  // 1.5 * 2^23
    drop_bits = 23 - e.mantissa_bits;
    round_bias = hn::Set(di, (std::int32_t{1} << (drop_bits - 1)) - 1);
    rebias = hn::Set(di, (127 - p.bias) << e.mantissa_bits);
    min_normal_bits = hn::BitCast(di, hn::Set(df, p.min_normal));
    max_code = hn::Set(di, std::int32_t(p.max_code));
    const float base = std::ldexp(1.0f, e.min_exponent - e.mantissa_bits + 23);
    subnormal_base = hn::Set(df, base);
    subnormal_base_bits = hn::BitCast(di, subnormal_base);
  }

  // kNoNan: v holds no NaN (a finite block), or NaN lanes' codes do not matter (the caller reports
  // them: formats without a NaN code).
  template <bool kNoNan>
  HWY_INLINE hn::Vec<DI> Of(hn::Vec<DF> v) const {
    const DF df;
    const DI di;
    const auto bits = hn::BitCast(di, v);
    if (kInteger) {  // v * 2^f clamped to [-qmax, qmax], rounded, in two's complement
      const auto y = hn::Min(hn::Max(hn::Mul(v, up), neg_int_max), int_max);
      return hn::And(hn::Sub(hn::BitCast(di, hn::Add(y, int_base)), hn::BitCast(di, int_base)), code_mask);
    }
    const auto a = hn::And(bits, magnitude);
    const auto subnormal = hn::Sub(hn::BitCast(di, hn::Add(hn::BitCast(df, a), subnormal_base)), subnormal_base_bits);
    const auto kept_lsb = hn::And(hn::ShiftRightSame(a, drop_bits), one);
    const auto normal = hn::Sub(hn::ShiftRightSame(hn::Add(a, hn::Add(round_bias, kept_lsb)), drop_bits), rebias);
    auto code = hn::Min(hn::IfThenElse(a < min_normal_bits, subnormal, normal), max_code);
    // The sign: bits ^ a is binary32's sign bit alone, moved to the code's top bit.
    code = hn::Or(code, hn::BitCast(di, hn::ShiftRightSame(hn::BitCast(hn::RebindToUnsigned<DF>(), hn::Xor(bits, a)),
                                                           sign_shift)));
    if (!kNoNan && nan_codes) code = hn::IfThenElse(hn::RebindMask(di, hn::IsNaN(v)), nan_code, code);
    return code;
  }
};

// Calls body(std::integral_constant<bool, kInteger>) for p's element kind.
template <class Body>
HWY_INLINE void WithLeanCodeKind(const CodeParams& p, Body&& body) {
  if (p.element.integer) body(std::true_type{});
  else body(std::false_type{});
}

}  // namespace qcast::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // QCAST_CPU_LEAN_CODES_INL_H_
