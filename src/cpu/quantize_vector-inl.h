// Q(v) on one SIMD vector: the element quantizer shared by the span kernel (cast) and the code
// kernel (encode/decode). Included once per Highway target by those files' foreach_target passes,
// hence the toggling include guard (Highway's -inl.h convention) instead of #pragma once.
#if defined(QCAST_CPU_QUANTIZE_VECTOR_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef QCAST_CPU_QUANTIZE_VECTOR_INL_H_
#undef QCAST_CPU_QUANTIZE_VECTOR_INL_H_
#else
#define QCAST_CPU_QUANTIZE_VECTOR_INL_H_
#endif

#include <hwy/highway.h>

#include <cstdint>
#include <cmath>
#include <cstring>

#include "src/cpu/span_kernel.hpp"

HWY_BEFORE_NAMESPACE();
namespace qcast::kernels::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

template <class D, class VU>
HWY_INLINE VU Fmix32(D du, VU h) {
  h = hn::Xor(h, hn::ShiftRight<16>(h));
  h = h * hn::Set(du, 0x85EBCA6Bu);
  h = hn::Xor(h, hn::ShiftRight<13>(h));
  h = h * hn::Set(du, 0xC2B2AE35u);
  return hn::Xor(h, hn::ShiftRight<16>(h));
}

// Rounds r >= 0 to an integer-valued float per the mode (detail::round_to_integer).
template <class DF, class V>
HWY_INLINE V RoundMode(DF df, const SpanParams& p, V r, std::uint64_t index) {
  switch (p.rounding) {
    case Rounding::nearest_even: return hn::Round(r);
    case Rounding::nearest_away: {
      // Trunc(r) + (r - Trunc(r) >= 1/2), the fraction exact. (Floor(r + 0.5) is not: for
      // r = 0.5 - 2^-25 the sum rounds to 1 in binary32.)
      const V whole = hn::Trunc(r);
      return hn::Add(whole, hn::IfThenElseZero(hn::Sub(r, whole) >= hn::Set(df, 0.5f), hn::Set(df, 1.0f)));
    }
    case Rounding::toward_zero: return hn::Trunc(r);
    default: {
      const hn::RebindToUnsigned<DF> du;
      const hn::RebindToSigned<DF> di;
      const std::uint32_t hi_mix = std::uint32_t(index >> 32) * 0x85EBCA77u ^ std::uint32_t(p.seed >> 32);
      auto h = hn::Iota(du, std::uint32_t(index)) * hn::Set(du, 0x9E3779B1u);
      h = Fmix32(du, hn::Xor(h, hn::Set(du, std::uint32_t(p.seed))));
      h = Fmix32(du, hn::Xor(h, hn::Set(du, hi_mix)));
      const V u24 = hn::ConvertTo(df, hn::BitCast(di, hn::ShiftRight<8>(h)));
      const V lower = hn::Floor(r);
      const V frac24 = hn::Mul(hn::Sub(r, lower), hn::Set(df, 16777216.0f));  // exact
      return hn::Add(lower, hn::IfThenElseZero(u24 < frac24, hn::Set(df, 1.0f)));
    }
  }
}

// Q(v) for one vector (quantize_element of the reference).
template <class DF, class V>
HWY_INLINE V QuantizeVector(DF df, const SpanParams& p, V v, std::uint64_t index) {
  const hn::RebindToUnsigned<DF> du;
  const hn::RebindToSigned<DF> di;
  const auto sign = hn::And(hn::BitCast(du, v), hn::Set(du, 0x80000000u));
  const auto is_nan = hn::IsNaN(v);
  const auto is_inf = hn::IsInf(v);
  const V max = hn::Set(df, p.max_value);
  V a = hn::Min(hn::Abs(v), hn::Add(max, max));  // Inf and huge values land beyond max
  V q;
  if (p.integer) {
    const V r = hn::Mul(a, hn::Set(df, p.int_up));
    const V n = hn::Min(RoundMode(df, p, r, index), hn::Set(df, p.int_max));
    q = hn::Mul(n, hn::Set(df, p.int_down));
  } else {
    auto e = hn::Sub(hn::BitCast(di, hn::ShiftRight<23>(hn::BitCast(du, a))), hn::Set(di, 127));
    e = hn::Max(e, hn::Set(di, p.min_exponent));
    const auto m = hn::Set(di, p.mantissa_bits);
    const V inv_ulp = hn::BitCast(df, hn::ShiftLeft<23>(hn::Add(hn::Sub(m, e), hn::Set(di, 127))));
    const V ulp = hn::BitCast(df, hn::ShiftLeft<23>(hn::Add(hn::Sub(e, m), hn::Set(di, 127))));
    q = hn::Mul(RoundMode(df, p, hn::Mul(a, inv_ulp), index), ulp);
    q = hn::IfThenElse(q > max, hn::Set(df, p.overflow_value), q);
    q = hn::IfThenElse(is_inf, hn::Set(df, p.inf_value), q);
  }
  const auto signed_q = p.fnuz ? hn::IfThenZeroElse(hn::RebindMask(du, q == hn::Zero(df)), sign) : sign;
  q = hn::BitCast(df, hn::Or(hn::BitCast(du, q), signed_q));
  q = hn::IfThenElse(hn::IsNaN(q), hn::BitCast(df, hn::Set(du, 0x7FC00000u)), q);  // canonical NaN
  return hn::IfThenElse(is_nan, hn::BitCast(df, hn::Set(du, 0x7FC00000u)), q);
}

// The default case, leaner: ties to even, saturating (Inf and overflow both become ±max, so one
// Min replaces the overflow and Inf blends), signed minifloat with -0. Same results as
// QuantizeVector for such parameters (lean_quantizer_applies).
template <class DF, class V>
HWY_INLINE V QuantizeVectorLean(DF df, V v, V max, V two_max, hn::Vec<hn::RebindToSigned<DF>> min_e,
                                hn::Vec<hn::RebindToSigned<DF>> mantissa_bits) {
  const hn::RebindToUnsigned<DF> du;
  const hn::RebindToSigned<DF> di;
  const auto sign_bit = hn::Set(du, 0x80000000u);
  const auto sign = hn::And(hn::BitCast(du, v), sign_bit);
  const V a = hn::Min(hn::Abs(v), two_max);  // Inf (and NaN, fixed below) land beyond max
  auto e = hn::Max(hn::BitCast(di, hn::ShiftRight<23>(hn::BitCast(du, a))), min_e);  // biased exponent
  const auto ulp_bits = hn::ShiftLeft<23>(hn::Sub(e, mantissa_bits));                  // 2^(e - M)
  const V ulp = hn::BitCast(df, ulp_bits);
  const V inv_ulp = hn::BitCast(df, hn::Sub(hn::Set(di, 0x7F000000), ulp_bits));     // 2^(M - e)
  const V q = hn::Min(hn::Mul(hn::Round(hn::Mul(a, inv_ulp)), ulp), max);
  const V signed_q = hn::BitCast(df, hn::Or(hn::BitCast(du, q), sign));
  return hn::IfThenElse(hn::IsNaN(v), hn::BitCast(df, hn::Set(du, 0x7FC00000u)), signed_q);
}

// The same for signed integer elements (integers always saturate): QuantizeVector's integer branch
// with ties to even, without the rounding-mode switch.
template <class DF, class V>
HWY_INLINE V QuantizeVectorLeanInt(DF df, V v, V two_max, V up, V down, V int_max) {
  const hn::RebindToUnsigned<DF> du;
  const auto sign = hn::And(hn::BitCast(du, v), hn::Set(du, 0x80000000u));
  const V a = hn::Min(hn::Abs(v), two_max);
  const V q = hn::Mul(hn::Min(hn::Round(hn::Mul(a, up)), int_max), down);
  const V signed_q = hn::BitCast(df, hn::Or(hn::BitCast(du, q), sign));
  return hn::IfThenElse(hn::IsNaN(v), hn::BitCast(df, hn::Set(du, 0x7FC00000u)), signed_q);
}

// Stores a vector of float results: streaming where the caller found it pays and out is aligned
// to the vector (see stream_stores_pay), an ordinary store otherwise.
template <class DF, class V>
HWY_INLINE void StoreResult(bool stream, V v, DF df, float* HWY_RESTRICT out) {
  if (stream) {
    hn::Stream(v, df, out);
  } else {
    hn::StoreU(v, df, out);
  }
}

template <class DF>
HWY_INLINE bool VectorAligned(DF df, const void* p) {
  return reinterpret_cast<std::uintptr_t>(p) % (hn::Lanes(df) * sizeof(float)) == 0;
}

// The largest of the magnitude bits |x| of in[0, n) as an integer. Non-negative floats order as
// their bit patterns do, and every NaN and Inf lies above the largest finite value, so one integer
// max answers both "largest |x|" and "any NaN or Inf?" (a result >= 0x7F800000).
HWY_INLINE std::int32_t MagnitudeMaxBits(const float* HWY_RESTRICT in, std::size_t n) {
  const hn::ScalableTag<float> df;
  const hn::RebindToSigned<decltype(df)> di;
  const std::size_t lanes = hn::Lanes(df);
  const auto magnitude = hn::Set(di, 0x7FFFFFFF);
  auto m0 = hn::Zero(di), m1 = hn::Zero(di);  // two chains: a max waits on the one before it
  std::size_t i = 0;
  for (; i + 2 * lanes <= n; i += 2 * lanes) {
    m0 = hn::Max(m0, hn::And(hn::BitCast(di, hn::LoadU(df, in + i)), magnitude));
    m1 = hn::Max(m1, hn::And(hn::BitCast(di, hn::LoadU(df, in + i + lanes)), magnitude));
  }
  if (i + lanes <= n) {
    m0 = hn::Max(m0, hn::And(hn::BitCast(di, hn::LoadU(df, in + i)), magnitude));
    i += lanes;
  }
  std::int32_t m = hn::GetLane(hn::MaxOfLanes(di, hn::Max(m0, m1)));
  for (; i < n; ++i) {
    std::int32_t bits;
    std::memcpy(&bits, in + i, 4);
    bits &= 0x7FFFFFFF;
    m = bits > m ? bits : m;
  }
  return m;
}

// A block's statistics for its scale: the largest |x| (returned in amax) and whether any element is
// NaN or Inf (returned; amax is then unspecified, as group_scale ignores it).
HWY_INLINE bool BlockAmax(const float* HWY_RESTRICT in, std::size_t n, float* amax) {
  const std::int32_t m = MagnitudeMaxBits(in, n);
  if (m >= 0x7F800000) return true;
  std::memcpy(amax, &m, 4);
  return false;
}

// Largest finite magnitude of in[0, n) and whether any element is NaN or Inf (group_stats). First
// BlockAmax's one integer max; only where that meets a NaN or Inf does a second pass find the
// largest finite magnitude (the tensor scale of a two-level format needs it).
HWY_INLINE void RunStats(const float* HWY_RESTRICT in, std::size_t n, float* amax, bool* nonfinite) {
  if (!BlockAmax(in, n, amax)) {
    *nonfinite = false;
    return;
  }
  const hn::ScalableTag<float> df;
  const std::size_t lanes = hn::Lanes(df);
  auto vmax = hn::Zero(df);
  auto bad = hn::FirstN(df, 0);
  std::size_t i = 0;
  for (; i + lanes <= n; i += lanes) {
    const auto a = hn::Abs(hn::LoadU(df, in + i));
    const auto finite = hn::IsFinite(a);
    bad = hn::Or(bad, hn::Not(finite));
    vmax = hn::Max(vmax, hn::IfThenElseZero(finite, a));
  }
  float m = hn::GetLane(hn::MaxOfLanes(df, vmax));
  bool any_bad = !hn::AllFalse(df, bad);
  for (; i < n; ++i) {
    const float a = std::fabs(in[i]);
    if (!std::isfinite(a)) any_bad = true;
    else if (a > m) m = a;
  }
  *amax = m;
  *nonfinite = any_bad;
}

// x -> the value on the element grid (detail::scaled_input): x / s, or x / (s * s_t). x / 2^k and
// x * 2^-k are the same correctly rounded value, so a power-of-two divisor (the MX scales) becomes a
// multiplication by its exact reciprocal.
struct ScaleInput {
  SpanScale mode;
  float divisor, inverse;
  bool power_of_two;
  ScaleInput(SpanScale m, float s, float s_t)
      : mode(m),
        divisor(m == SpanScale::two_level ? s * s_t : s),
        inverse(1.0f / divisor),
        power_of_two(reciprocal_is_exact(divisor)) {}
  template <class DF, class V>
  HWY_INLINE V Apply(DF df, V v) const {
    if (mode == SpanScale::none) return v;
    return power_of_two ? hn::Mul(v, hn::Set(df, inverse)) : hn::Div(v, hn::Set(df, divisor));
  }
  // The vector of elements [i, i + lanes) of a run: the same scale for all.
  template <class DF, class V>
  HWY_INLINE V Apply(DF df, V v, std::size_t) const {
    return Apply(df, v);
  }
};

// A divisor per element (column groups, ColumnScales): element i becomes x / divisor[i], or
// x * inverse[i] where inverse is set (every reciprocal exact, reciprocal_is_exact).
struct ColumnInput {
  const float* divisor;
  const float* inverse;  // null: divide
  template <class DF, class V>
  HWY_INLINE V Apply(DF df, V v, std::size_t i) const {
    return inverse ? hn::Mul(v, hn::LoadU(df, inverse + i)) : hn::Div(v, hn::LoadU(df, divisor + i));
  }
};

HWY_INLINE bool LeanQuantizerApplies(const SpanParams& p) {
  return p.rounding == Rounding::nearest_even && !p.integer && !p.fnuz && p.overflow_value == p.max_value &&
         p.inf_value == p.max_value;
}

}  // namespace qcast::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // QCAST_CPU_QUANTIZE_VECTOR_INL_H_
