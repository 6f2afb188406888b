// The SIMD span kernel, written once and compiled for every instruction set Highway targets
// (foreach_target re-includes this file per target; HWY_DYNAMIC_DISPATCH picks one at run time).
// Every operation is exact or IEEE-rounded exactly as the scalar reference (element_codec.hpp)
// rounds: grid steps are powers of two, so |v| / ulp and n * ulp are exact, and the one rounding
// is Round / Floor / Trunc of r = |v| / ulp.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "src/cpu/span_kernel.cpp"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>
#include <hwy/cache_control.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "qcast/cast.hpp"
#include "qcast/element_codec.hpp"
#include "qcast/scaling.hpp"
#include "code_kernel.hpp"
#include "span_kernel.hpp"

// Per target (re-included by foreach_target): QuantizeVector, its lean variants, the lean block chunks.
#include "src/cpu/quantize_vector-inl.h"
#include "src/cpu/lean_blocks-inl.h"
#include "src/cpu/lean_codes-inl.h"

HWY_BEFORE_NAMESPACE();
namespace qcast::kernels::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// One scale for the whole run (ScaleInput: a multiply where the divisor is a power of two).
struct UniformScaler {
  SpanScale mode;
  float s, s_t;
  ScaleInput in;
  UniformScaler(SpanScale m, float s_, float st) : mode(m), s(s_), s_t(st), in(m, s_, st) {}
  template <class DF, class V>
  HWY_INLINE V In(DF df, V v, std::size_t) const {
    return in.Apply(df, v);
  }
  template <class DF, class V>
  HWY_INLINE V Out(DF df, V q, std::size_t) const {
    if (mode == SpanScale::single) return hn::Mul(q, hn::Set(df, s));
    if (mode == SpanScale::two_level) return hn::Mul(hn::Mul(q, hn::Set(df, s)), hn::Set(df, s_t));
    return q;
  }
  float In1(float x, std::size_t) const { return mode == SpanScale::none ? x : x / in.divisor; }
  float Out1(float q, std::size_t) const {
    if (mode == SpanScale::single) return q * s;
    if (mode == SpanScale::two_level) return (q * s) * s_t;
    return q;
  }
};

// A scale per element (column groups): element i is divided by divisor[i] (s·s_t for two-level
// formats; a multiply by inverse[i] where every divisor is a power of two with a normal inverse)
// and scaled back by scale[i] (then s_t), as detail::scaled_input / scaled_output do.
struct ColumnScaler {
  const float* scale;
  const float* divisor;
  const float* inverse;  // null: divide
  bool two_level;
  float s_t;
  template <class DF, class V>
  HWY_INLINE V In(DF df, V v, std::size_t i) const {
    return ColumnInput{divisor, inverse}.Apply(df, v, i);
  }
  template <class DF, class V>
  HWY_INLINE V Out(DF df, V q, std::size_t i) const {
    const V r = hn::Mul(q, hn::LoadU(df, scale + i));
    return two_level ? hn::Mul(r, hn::Set(df, s_t)) : r;
  }
  float In1(float x, std::size_t i) const { return x / divisor[i]; }
  float Out1(float q, std::size_t i) const { return two_level ? (q * scale[i]) * s_t : q * scale[i]; }
};

template <class Scaler>
HWY_INLINE void QuantizeRun(const SpanParams& params, const Scaler& scaler, const float* HWY_RESTRICT in,
                            float* HWY_RESTRICT out, std::size_t n, std::uint64_t first) {
  const SpanParams p = params;  // a local copy: stores to `out` cannot alias it, so it stays in registers
  const hn::ScalableTag<float> df;
  const std::size_t lanes = hn::Lanes(df);
  const bool stream = p.stream_stores && VectorAligned(df, out);
  std::size_t i = 0;
  if (LeanQuantizerApplies(p)) {
    const hn::RebindToSigned<decltype(df)> di;
    const auto max = hn::Set(df, p.max_value);
    const auto two_max = hn::Add(max, max);
    const auto min_e = hn::Set(di, p.min_exponent + 127);
    const auto mantissa_bits = hn::Set(di, p.mantissa_bits);
    for (; i + lanes <= n; i += lanes) {
      const auto v = scaler.In(df, hn::LoadU(df, in + i), i);
      StoreResult(stream, scaler.Out(df, QuantizeVectorLean(df, v, max, two_max, min_e, mantissa_bits), i), df,
                  out + i);
    }
  } else if (p.integer && p.rounding == Rounding::nearest_even) {  // integers saturate: the lean form applies
    const auto two_max = hn::Set(df, 2 * p.max_value);
    const auto up = hn::Set(df, p.int_up), down = hn::Set(df, p.int_down), int_max = hn::Set(df, p.int_max);
    for (; i + lanes <= n; i += lanes) {
      const auto v = scaler.In(df, hn::LoadU(df, in + i), i);
      StoreResult(stream, scaler.Out(df, QuantizeVectorLeanInt(df, v, two_max, up, down, int_max), i), df, out + i);
    }
  }
  for (; i + lanes <= n; i += lanes) {
    const std::uint64_t index = first + i;
    // A vector whose indices cross a multiple of 2^32 takes the one-lane path (hi word not uniform).
    if (p.rounding == Rounding::stochastic && (index >> 32) != ((index + lanes - 1) >> 32)) break;
    StoreResult(stream, scaler.Out(df, QuantizeVector(df, p, scaler.In(df, hn::LoadU(df, in + i), i), index), i), df,
                out + i);
  }
  // The tail (and any vector that crossed 2^32) one lane at a time, by the same formula.
  const hn::CappedTag<float, 1> d1;
  for (; i < n; ++i)
    out[i] = scaler.Out1(hn::GetLane(QuantizeVector(d1, p, hn::Set(d1, scaler.In1(in[i], i)), first + i)), i);
  if (stream) hwy::FlushStream();  // streaming stores are weakly ordered: visible before we return
}

void QuantizeSpan(const SpanParams& p, SpanScale mode, float s, float s_t, const float* HWY_RESTRICT in,
                  float* HWY_RESTRICT out, std::size_t n, std::uint64_t first) {
  QuantizeRun(p, UniformScaler(mode, s, s_t), in, out, n, first);
}

void QuantizeColumns(const SpanParams& p, const ColumnScales& c, const float* HWY_RESTRICT in,
                     float* HWY_RESTRICT out, std::size_t n, std::uint64_t first) {
  QuantizeRun(p, ColumnScaler{c.scale, c.divisor, c.inverse, c.two_level, c.s_t}, in, out, n, first);
}

// acc[k] = max(acc[k], magnitude bits of in[k]) for k < n: the running amax of column groups, read
// as MagnitudeMaxBits reads one (>= 0x7F800000: a NaN or Inf in the column).
void ColumnMaxBits(const float* HWY_RESTRICT in, std::int32_t* HWY_RESTRICT acc, std::size_t n) {
  const hn::ScalableTag<float> df;
  const hn::RebindToSigned<decltype(df)> di;
  const std::size_t lanes = hn::Lanes(df);
  const auto magnitude = hn::Set(di, 0x7FFFFFFF);
  std::size_t k = 0;
  for (; k + lanes <= n; k += lanes)
    hn::StoreU(hn::Max(hn::LoadU(di, acc + k), hn::And(hn::BitCast(di, hn::LoadU(df, in + k)), magnitude)), di,
               acc + k);
  for (; k < n; ++k) {
    std::int32_t bits;
    std::memcpy(&bits, in + k, 4);
    acc[k] = std::max(acc[k], bits & 0x7FFFFFFF);
  }
}

// Largest finite magnitude of in[0, n) and whether any element is NaN or Inf (group_stats).
void SpanStats(const float* HWY_RESTRICT in, std::size_t n, float* amax, bool* nonfinite) {
  RunStats(in, n, amax, nonfinite);
}

// The scale of one block (group_scale, exactly), from its amax.
HWY_INLINE GroupScale BlockScale(const BlockParams& p, float amax) {
  const Format& f = *p.format;
  GroupScale g;
  switch (p.scale_path) {
    case BlockParams::ScalePath::pow2_floor:
      if (floor_scale_from_bits(f, amax, g)) return g;
      break;
    case BlockParams::ScalePath::fp32:
    case BlockParams::ScalePath::minifloat: {
      if (f.tensor_scale ? p.amax_t == 0.0f : amax == 0.0f) break;  // passthrough
      const float max_elem = p.element.max_value;
      const float d = f.tensor_scale ? (amax / max_elem) / p.s_t : amax / max_elem;
      if (p.scale_path == BlockParams::ScalePath::fp32) {
        // encode_element(fp32, d), saturating: d itself, a d past FLT_MAX (s_t subnormal or 0) to FLT_MAX
        g.value = d > std::numeric_limits<float>::max() ? std::numeric_limits<float>::max() : d;
      } else {
        const hn::CappedTag<float, 1> d1;
        g.value = hn::GetLane(QuantizeVector(d1, p.scale, hn::Set(d1, d), 0));
      }
      if (g.value == 0.0f) g.kind = GroupScale::Kind::zero;
      if (std::isnan(g.value)) g.kind = GroupScale::Kind::nan;
      return g;
    }
    default: break;
  }
  return group_scale(f, amax, false, p.amax_t, p.s_t);
}

// One block by the general path: its statistics, group_scale and the span kernel (or the
// special kinds of scale).
HWY_NOINLINE void QuantizeBlockGeneral(const BlockParams& p, SpanScale mode, const float* HWY_RESTRICT in,
                                     float* HWY_RESTRICT out, std::size_t n, std::uint64_t first) {
  float amax = 0;
  if (BlockAmax(in, n, &amax)) {
    for (std::size_t i = 0; i < n; ++i) out[i] = detail::canonical_nan();
    return;
  }
  const GroupScale g = BlockScale(p, amax);
  if (g.kind == GroupScale::Kind::finite) {
    QuantizeRun(p.element, UniformScaler(mode, g.value, p.s_t), in, out, n, first);
  } else {
    for (std::size_t i = 0; i < n; ++i) out[i] = non_finite_group_value(g.kind, in[i]);
  }
}

// The whole blocks of a line from its start by the lean chunks (lean_blocks-inl.h); returns the
// offset of the first element left (a last partial block). kVectors: see WithLeanVariant.
template <bool kDivide, bool kInteger, std::size_t kVectors>
HWY_INLINE std::size_t QuantizeLeanLine(const BlockParams& p, const LeanBlocks& c, SpanScale mode,
                                        const float* HWY_RESTRICT in, float* HWY_RESTRICT out, std::size_t len,
                                        std::uint64_t first) {
  const hn::ScalableTag<float> df;
  const std::size_t block = std::size_t(p.format->block_size);
  const LeanElements<kDivide, kInteger> elements(c);
  const auto vs_t = hn::Set(df, c.s_t);
  const bool stream = p.element.stream_stores && VectorAligned(df, out);  // blocks are whole vectors
  LeanChunkScales chunk;
  std::size_t b = 0;
  while (len - b >= block) {
    const std::size_t nb = std::min(kLeanChunkBlocks, (len - b) / block);
    const bool all_lean = LeanBlockScales<kVectors>(c, in + b, block, nb, chunk);
    auto lean_block = [&](std::size_t j) {
      const std::size_t at = b + j * block;
      const auto s = hn::Set(df, chunk.out_scale[j]);
      float* HWY_RESTRICT y = out + at;
      elements.template Block<kVectors>(in + at, block, chunk.in_factor[j], [&](std::size_t i, auto q) {
        // detail::scaled_output: q * s, or (q * s_b) * s_t (s_t is 1 for one level: exact).
        q = hn::Mul(q, s);
        if (kDivide) q = hn::Mul(q, vs_t);
        StoreResult(stream, q, df, y + i);
      });
    };
    ForEachChunkBlock(all_lean, chunk, nb, lean_block, [&](std::size_t j) {
      const std::size_t at = b + j * block;
      QuantizeBlockGeneral(p, mode, in + at, out + at, block, first + at);
    });
    b += nb * block;
  }
  if (stream) hwy::FlushStream();
  return b;
}

void QuantizeBlocks(const BlockParams& p, const float* HWY_RESTRICT in, float* HWY_RESTRICT out, std::size_t len,
                    std::uint64_t first) {
  const std::size_t block = std::size_t(p.format->block_size);
  const SpanScale mode = span_scale_mode(*p.format);
  const LeanBlocks c = MakeLeanBlocks(p);
  std::size_t b = 0;
  if (c.scale != LeanBlocks::Scale::none) {
    WithLeanVariant(c, block, [&](auto divide, auto integer, auto vectors) {
      b = QuantizeLeanLine<decltype(divide)::value, decltype(integer)::value, decltype(vectors)::value>(
          p, c, mode, in, out, len, first);
    });
  }
  for (; b < len; b += block) {  // the general path, and a last partial block
    const std::size_t n = len - b < block ? len - b : block;
    QuantizeBlockGeneral(p, mode, in + b, out + b, n, first + b);
  }
}

// float16 / bfloat16 storage to binary32, exactly.
void WidenSpan(int bf16, const std::uint16_t* HWY_RESTRICT in, float* HWY_RESTRICT out, std::size_t n) {
  const hn::ScalableTag<float> df;
  const hn::RebindToUnsigned<decltype(df)> du;
  const hn::Rebind<std::uint16_t, decltype(df)> du16;
  const hn::RebindToSigned<decltype(df)> di;
  const std::size_t lanes = hn::Lanes(df);
  std::size_t i = 0;
  for (; i + lanes <= n; i += lanes) {
    const auto h = hn::PromoteTo(du, hn::LoadU(du16, in + i));
    if (bf16) {
      hn::StoreU(hn::BitCast(df, hn::ShiftLeft<16>(h)), df, out + i);
      continue;
    }
    // Bit arithmetic on every target: Highway's emulated f16 promotion (targets without F16C)
    // mishandles subnormals.
    const auto sign = hn::ShiftLeft<16>(hn::And(h, hn::Set(du, 0x8000u)));
    const auto exp = hn::And(hn::ShiftRight<10>(h), hn::Set(du, 0x1Fu));
    const auto mant = hn::And(h, hn::Set(du, 0x3FFu));
    const auto normal = hn::Or(hn::ShiftLeft<23>(hn::Add(exp, hn::Set(du, 112u))), hn::ShiftLeft<13>(mant));
    const auto special = hn::Or(hn::Set(du, 0x7F800000u), hn::ShiftLeft<13>(mant));
    const auto subnormal = hn::BitCast(du, hn::Mul(hn::ConvertTo(df, hn::BitCast(di, mant)), hn::Set(df, 5.9604644775390625e-08f)));
    auto bits = hn::IfThenElse(exp == hn::Zero(du), subnormal, normal);
    bits = hn::IfThenElse(exp == hn::Set(du, 0x1Fu), special, bits);
    hn::StoreU(hn::BitCast(df, hn::Or(bits, sign)), df, out + i);
  }
  for (; i < n; ++i) out[i] = widen(bf16 ? DType::bf16 : DType::f16, in[i]);
}

// span_stats of float16 / bfloat16 values, read off their bits: below the Inf pattern, the magnitude
// bits order as the values do (IEEE 754 §3.4), so the largest finite |x| is the largest finite
// magnitude pattern, widened once. 16 elements a vector on AVX2, no widening of the span.
void Stats16(int bf16, const std::uint16_t* HWY_RESTRICT in, std::size_t n, float* amax, bool* nonfinite) {
  const hn::ScalableTag<std::uint16_t> d;
  const std::size_t lanes = hn::Lanes(d);
  const std::uint16_t inf = bf16 ? 0x7F80 : 0x7C00;
  const auto magnitude_mask = hn::Set(d, std::uint16_t(0x7FFF));
  const auto inf_v = hn::Set(d, inf);
  auto max_all = hn::Zero(d), max_finite = hn::Zero(d);
  std::size_t i = 0;
  for (; i + lanes <= n; i += lanes) {
    const auto m = hn::And(hn::LoadU(d, in + i), magnitude_mask);
    max_all = hn::Max(max_all, m);
    max_finite = hn::Max(max_finite, hn::IfThenElseZero(hn::Lt(m, inf_v), m));
  }
  std::uint16_t largest = hn::GetLane(hn::MaxOfLanes(d, max_all));
  std::uint16_t largest_finite = hn::GetLane(hn::MaxOfLanes(d, max_finite));
  for (; i < n; ++i) {
    const std::uint16_t m = in[i] & 0x7FFF;
    largest = std::max(largest, m);
    if (m < inf) largest_finite = std::max(largest_finite, m);
  }
  *amax = widen(bf16 ? DType::bf16 : DType::f16, largest_finite);
  *nonfinite = largest >= inf;
}

// binary32 to float16 / bfloat16 with ties to even and overflow to Inf (qcast::narrow), exactly.
// (Highway's DemoteTo truncates on some targets, so neither conversion uses it.) float16 codes come
// from LeanCodes (lean_codes-inl.h) with the Inf code as the largest: IEEE rounding to nearest even
// overflows to Inf exactly where the rounded code reaches it.
void NarrowSpan(int bf16, const CodeParams& fp16, const float* HWY_RESTRICT in, std::uint16_t* HWY_RESTRICT out,
                std::size_t n) {
  const hn::ScalableTag<float> df;
  const hn::RebindToUnsigned<decltype(df)> du;
  const hn::RebindToSigned<decltype(df)> di;
  const hn::Rebind<std::uint16_t, decltype(df)> du16;
  const std::size_t lanes = hn::Lanes(df);
  const LeanCodes<false> fp16_codes(fp16);
  std::size_t i = 0;
  for (; i + lanes <= n; i += lanes) {
    const auto v = hn::LoadU(df, in + i);
    hn::Vec<decltype(du)> code;
    if (bf16) {  // round to nearest even on the 16 dropped bits; Inf stays Inf, overflow becomes Inf
      const auto bits = hn::BitCast(du, v);
      const auto odd = hn::And(hn::ShiftRight<16>(bits), hn::Set(du, 1u));
      code = hn::ShiftRight<16>(hn::Add(bits, hn::Add(hn::Set(du, 0x7FFFu), odd)));
      code = hn::IfThenElse(hn::RebindMask(du, hn::IsNaN(v)), hn::Set(du, 0x7FC0u), code);
    } else {
      code = hn::BitCast(du, fp16_codes.Of<false>(v));
    }
    hn::StoreU(hn::DemoteTo(du16, hn::BitCast(di, code)), du16, out + i);  // codes < 2^16: no saturation
  }
  for (; i < n; ++i) out[i] = narrow(bf16 ? DType::bf16 : DType::f16, in[i]);
}

}  // namespace qcast::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace qcast::kernels {
HWY_EXPORT(QuantizeSpan);
HWY_EXPORT(SpanStats);
HWY_EXPORT(QuantizeBlocks);
HWY_EXPORT(WidenSpan);
HWY_EXPORT(NarrowSpan);
HWY_EXPORT(Stats16);
HWY_EXPORT(QuantizeColumns);
HWY_EXPORT(ColumnMaxBits);

void quantize_columns(const SpanParams& p, const ColumnScales& c, const float* in, float* out, std::size_t n,
                      std::uint64_t first) {
  HWY_DYNAMIC_DISPATCH(QuantizeColumns)(p, c, in, out, n, first);
}

void column_max_bits(const float* in, std::int32_t* acc, std::size_t n) {
  HWY_DYNAMIC_DISPATCH(ColumnMaxBits)(in, acc, n);
}

void widen_span(DType t, const std::uint16_t* in, float* out, std::size_t n) {
  HWY_DYNAMIC_DISPATCH(WidenSpan)(t == DType::bf16, in, out, n);
}

void narrow_span(DType t, const float* in, std::uint16_t* out, std::size_t n) {
  static const CodeParams fp16 = [] {
    CodeParams p = code_params(elements::fp16, CastOptions{});
    p.max_code = detail::inf_code(elements::fp16);  // overflow to Inf (IEEE), not saturation
    return p;
  }();
  HWY_DYNAMIC_DISPATCH(NarrowSpan)(t == DType::bf16, fp16, in, out, n);
}

void quantize_blocks(const BlockParams& p, const float* in, float* out, std::size_t len, std::uint64_t first) {
  HWY_DYNAMIC_DISPATCH(QuantizeBlocks)(p, in, out, len, first);
}

void span_stats16(DType t, const std::uint16_t* in, std::size_t n, float* amax, bool* nonfinite) {
  HWY_DYNAMIC_DISPATCH(Stats16)(t == DType::bf16, in, n, amax, nonfinite);
}

void span_stats(const float* in, std::size_t n, float* amax, bool* nonfinite) {
  HWY_DYNAMIC_DISPATCH(SpanStats)(in, n, amax, nonfinite);
}

void quantize_span(const SpanParams& p, SpanScale mode, float s, float s_t, const float* in, float* out, std::size_t n,
                   std::uint64_t first) {
  HWY_DYNAMIC_DISPATCH(QuantizeSpan)(p, mode, s, s_t, in, out, n, first);
}
}  // namespace qcast::kernels
#endif
