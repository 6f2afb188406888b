// The default block formats a chunk of blocks at a time: the OCP MX floor rule (power-of-two
// scales) and minifloat or binary32 scales (the NVFP4 recipe), with ties-to-even, saturating
// elements. Shared by the cast (QuantizeBlocks) and encode (EncodeBlocks) kernels.
//
// Why chunks: one block at a time, a block of 16 elements spent most of its ~150 instructions on
// its scale (a horizontal max, a scalar chain of divisions and a one-lane quantization, then
// broadcasts); the elements were the smaller part. Here the pass over a chunk first finds every
// block's amax, then computes the scales of a whole vector of blocks at once with the same IEEE
// operations as group_scale, then quantizes the elements of each block from L1 with a quantizer
// that may assume finite input (a block with NaN or Inf, a zero or unrepresentable scale takes the
// general path of the caller instead). docs/design/0005-lean-block-chunks.md records the choices.
//
// Included once per Highway target (toggling include guard, Highway's -inl.h convention).
#if defined(QCAST_CPU_LEAN_BLOCKS_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef QCAST_CPU_LEAN_BLOCKS_INL_H_
#undef QCAST_CPU_LEAN_BLOCKS_INL_H_
#else
#define QCAST_CPU_LEAN_BLOCKS_INL_H_
#endif

#include <hwy/highway.h>

#include <cstddef>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "src/cpu/quantize_vector-inl.h"
#include "src/cpu/span_kernel.hpp"

HWY_BEFORE_NAMESPACE();
namespace qcast::kernels::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// Blocks per chunk: a chunk of 64 blocks of 32 floats (8 KiB) stays in L1 between the amax pass and
// the element pass. A multiple of every target's lane count, so the scale pass runs whole vectors.
constexpr std::size_t kLeanChunkBlocks = 64;
static_assert(kLeanChunkBlocks % (HWY_MAX_BYTES / 4) == 0, "the scale pass runs whole vectors of blocks");

// Which lean path a line of blocks takes, and its constants (set once per line).
struct LeanBlocks {
  enum class Scale { none, pow2_floor, divide } scale = Scale::none;  // none: the general path only
  bool integer = false;  // element kind: signed integer, else minifloat
  // Element grid: largest value, biased minimum exponent and mantissa bits (minifloat), 2^f, 2^-f
  // and qmax (integer).
  float max = 0, int_up = 1, int_down = 1, int_max = 0;
  int min_e = 0, mantissa_bits = 0;
  // pow2_floor (OCP MX v1.0 section 6.3): k = floor(log2 amax) - emax_elem, clamped to the scale's
  // exponent range.
  int elem_emax = 0, scale_min_k = 0, scale_max_k = 0;
  // divide (the NVFP4 recipe, or a one-level minifloat / binary32 scale): d = (amax / max) / s_t,
  // s_b = the scale grid's value of d (binary32 scales: d itself), divisor s_b * s_t.
  bool scale_is_fp32 = false;
  float s_t = 1, scale_max = 0;
  int scale_min_e = 0, scale_mantissa_bits = 0;  // of the scale grid; scale_min_e biased
};

HWY_INLINE bool LeanElementApplies(const SpanParams& e) {
  return LeanQuantizerApplies(e) || (e.integer && e.rounding == Rounding::nearest_even);  // integers saturate
}

HWY_INLINE LeanBlocks MakeLeanBlocks(const BlockParams& p) {
  LeanBlocks c;
  const Format& f = *p.format;
  const hn::ScalableTag<float> df;
  if (!LeanElementApplies(p.element) || f.block_size % hn::Lanes(df) != 0) return c;
  c.integer = p.element.integer;
  c.max = p.element.max_value;
  c.int_up = p.element.int_up;
  c.int_down = p.element.int_down;
  c.int_max = p.element.int_max;
  c.min_e = p.element.min_exponent + 127;
  c.mantissa_bits = p.element.mantissa_bits;
  switch (p.scale_path) {
    case BlockParams::ScalePath::pow2_floor:
      c.scale = LeanBlocks::Scale::pow2_floor;
      c.elem_emax = f.element.max_exponent();
      c.scale_min_k = f.scale.min_exponent();
      c.scale_max_k = f.scale.max_exponent();
      break;
    case BlockParams::ScalePath::minifloat:
    case BlockParams::ScalePath::fp32:
      // A zero tensor amax makes every block pass through (group_scale); the general path does that.
      if (f.tensor_scale && p.amax_t == 0.0f) break;
      if (p.scale_path == BlockParams::ScalePath::minifloat && !LeanQuantizerApplies(p.scale)) break;
      c.scale = LeanBlocks::Scale::divide;
      c.scale_is_fp32 = p.scale_path == BlockParams::ScalePath::fp32;
      c.s_t = f.tensor_scale ? p.s_t : 1.0f;  // one level: x / (s * 1) and (q * s) * 1 are x / s and q * s
      c.scale_max = c.scale_is_fp32 ? std::numeric_limits<float>::max() : p.scale.max_value;
      c.scale_min_e = p.scale.min_exponent + 127;
      c.scale_mantissa_bits = p.scale.mantissa_bits;
      break;
    default: break;
  }
  return c;
}

// Round to nearest even of a signed r, with the sign of r kept on a zero result (-0.2 -> -0, as the
// reference's sign-magnitude rounding gives). x86 from SSE4 on rounds with roundps, which keeps it;
// Highway's emulations elsewhere lose it ((r + 2^23) - 2^23 on SSSE3, -0.5 -> +0 on SCALAR and
// EMU128), so there the sign is ORed back (every other result already has the sign of r).
template <class DF, class V>
HWY_INLINE V RoundSigned(DF df, V r) {
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_SSE4
  (void)df;
  return hn::Round(r);
#else
  const hn::RebindToUnsigned<DF> du;
  return hn::BitCast(df, hn::Or(hn::BitCast(du, hn::Round(r)), hn::And(hn::BitCast(du, r), hn::Set(du, 0x80000000u))));
#endif
}

// Q(v) of QuantizeVectorLean for finite v, leaner: the sign stays on v through the rounding (ties to
// even is symmetric) and one clamp to [-max, max] saturates. The exponent is read off min(|v|,
// 2 max), so that the reciprocal of the ulp stays a normal number for every finite v.
template <class DF, class V>
HWY_INLINE V QuantizeFiniteMinifloat(DF df, V v, V max, V neg_max, hn::Vec<hn::RebindToSigned<DF>> two_max_bits,
                                     hn::Vec<hn::RebindToSigned<DF>> min_e,
                                     hn::Vec<hn::RebindToSigned<DF>> mantissa_bits) {
  const hn::RebindToSigned<DF> di;
  const auto magnitude = hn::And(hn::BitCast(di, v), hn::Set(di, 0x7FFFFFFF));
  const auto e = hn::Max(hn::ShiftRight<23>(hn::Min(magnitude, two_max_bits)), min_e);  // biased exponent
  const auto ulp_bits = hn::ShiftLeft<23>(hn::Sub(e, mantissa_bits));                  // 2^(e - M)
  const V inv_ulp = hn::BitCast(df, hn::Sub(hn::Set(di, 0x7F000000), ulp_bits));     // 2^(M - e)
  const V q = hn::Mul(RoundSigned(df, hn::Mul(v, inv_ulp)), hn::BitCast(df, ulp_bits));
  return hn::Min(hn::Max(q, neg_max), max);
}

// The same for signed integer elements (QuantizeVectorLeanInt for finite v): v * 2^f rounds to
// even symmetrically; overflow to Inf is clamped like any large value.
template <class DF, class V>
HWY_INLINE V QuantizeFiniteInteger(DF df, V v, V up, V down, V int_max, V neg_int_max) {
  return hn::Mul(hn::Min(hn::Max(RoundSigned(df, hn::Mul(v, up)), neg_int_max), int_max), down);
}

// A chunk's scales: for block j, in_factor[j] (pow2_floor: the exact reciprocal 2^-k that
// multiplies x; divide: the divisor s_b * s_t) and out_scale[j] (2^k or s_b). in_factor[j] == 0
// marks a block for the general path: NaN or Inf in it, or a scale the lean path does not cover
// (floor_scale_from_bits fails, k outside [-126, 126], s_b * s_t zero).
struct LeanChunkScales {
  HWY_ALIGN float in_factor[kLeanChunkBlocks];
  HWY_ALIGN float out_scale[kLeanChunkBlocks];
};

// The largest magnitude bits of K consecutive blocks of kVectors vectors each (K a power of two up
// to the lane count L), as one vector: block i's partial maxima in lanes [i L/K, (i + 1) L/K). K = 1
// is the max of the block's vectors; two halves combine by the max of their even and odd lanes
// (ConcatEven / ConcatOdd keep the blocks in order), so K = L gives lane i = block i's maximum with
// L - 1 combining steps instead of a horizontal reduction per block.
template <std::size_t K, std::size_t kVectors>
HWY_INLINE hn::Vec<hn::ScalableTag<std::int32_t>> BlocksMaxBits(const float* HWY_RESTRICT in) {
  const hn::ScalableTag<float> df;
  const hn::RebindToSigned<decltype(df)> di;
  const std::size_t lanes = hn::Lanes(df);
  if constexpr (K == 1) {
    const auto magnitude = hn::Set(di, 0x7FFFFFFF);
    auto m = hn::And(hn::BitCast(di, hn::LoadU(df, in)), magnitude);
    for (std::size_t k = 1; k < kVectors; ++k) {
      m = hn::Max(m, hn::And(hn::BitCast(di, hn::LoadU(df, in + k * lanes)), magnitude));
    }
    return m;
  } else {
#if HWY_TARGET != HWY_SCALAR  // one lane: K is 1
    const auto lo = BlocksMaxBits<K / 2, kVectors>(in);
    const auto hi = BlocksMaxBits<K / 2, kVectors>(in + K / 2 * kVectors * lanes);
    return hn::Max(hn::ConcatEven(di, hi, lo), hn::ConcatOdd(di, hi, lo));
#endif
  }
}

// The largest magnitude bits of one block (MagnitudeMaxBits). kVectors > 0: the block is that many
// whole vectors (a loop the compiler unrolls); 0: any length.
template <std::size_t kVectors>
HWY_INLINE std::int32_t BlockMaxBits(const float* HWY_RESTRICT in, std::size_t block) {
  if constexpr (kVectors == 0) {
    return MagnitudeMaxBits(in, block);
  } else {
    const hn::ScalableTag<std::int32_t> di;
    return hn::GetLane(hn::MaxOfLanes(di, BlocksMaxBits<1, kVectors>(in)));
  }
}

// Blocks [0, nb) of `block` elements at in (nb <= kLeanChunkBlocks); kVectors as for
// BlockMaxBits. Returns whether every block takes the lean path (no in_factor[j] == 0).
template <std::size_t kVectors = 0>
HWY_INLINE bool LeanBlockScales(const LeanBlocks& c, const float* HWY_RESTRICT in, std::size_t block, std::size_t nb,
                                LeanChunkScales& out) {
  const hn::ScalableTag<float> df;
  const hn::RebindToSigned<decltype(df)> di;
  const std::size_t lanes = hn::Lanes(df);
  // Pass 1: each block's largest magnitude as bits (NaN and Inf compare above every finite value).
  // Lanes past nb read as 0, a block for the general path that nobody visits.
  HWY_ALIGN std::int32_t amax_bits[kLeanChunkBlocks];
  std::size_t first_single = 0;
#if !HWY_HAVE_SCALABLE
  if constexpr (kVectors > 0) {
    constexpr std::size_t kLanes = HWY_LANES(float);
    for (; first_single + kLanes <= nb; first_single += kLanes)
      hn::Store(BlocksMaxBits<kLanes, kVectors>(in + first_single * block), di, amax_bits + first_single);
  }
#endif
  for (std::size_t j = first_single; j < nb; ++j) amax_bits[j] = BlockMaxBits<kVectors>(in + j * block, block);
  const std::size_t padded = (nb + lanes - 1) / lanes * lanes;
  for (std::size_t j = nb; j < padded; ++j) amax_bits[j] = 0;
  // Pass 2: the scales of a vector of blocks at once.
  const auto inf_bits = hn::Set(di, 0x7F800000);
  auto general = hn::FirstN(df, 0);  // blocks for the general path
  for (std::size_t j = 0; j < padded; j += lanes) {
    const auto bits = hn::Load(di, amax_bits + j);
    const auto valid = hn::FirstN(df, nb - j);
    if (c.scale == LeanBlocks::Scale::pow2_floor) {
      // floor_scale_from_bits: amax normal and finite; k = exponent(amax) - emax_elem, clamped.
      auto k = hn::Sub(hn::ShiftRight<23>(bits), hn::Set(di, 127 + c.elem_emax));
      k = hn::Min(hn::Max(k, hn::Set(di, c.scale_min_k)), hn::Set(di, c.scale_max_k));
      const auto ok = hn::And(hn::And(bits > hn::Set(di, 0x007FFFFF), bits < inf_bits),
                              hn::And(k > hn::Set(di, -127), k < hn::Set(di, 127)));
      const auto inv = hn::BitCast(df, hn::ShiftLeft<23>(hn::Sub(hn::Set(di, 127), k)));
      general = hn::Or(general, hn::AndNot(hn::RebindMask(df, ok), valid));
      hn::Store(hn::IfThenElseZero(hn::RebindMask(df, ok), inv), df, out.in_factor + j);
      hn::Store(hn::BitCast(df, hn::ShiftLeft<23>(hn::Add(k, hn::Set(di, 127)))), df, out.out_scale + j);
    } else {
      // group_scale of the recipe: d = (amax / max_elem) / s_t, then the scale grid (saturating,
      // ties to even) of d.
      const auto amax = hn::BitCast(df, bits);
      const auto vs_t = hn::Set(df, c.s_t);
      const auto d = hn::Div(hn::Div(amax, hn::Set(df, c.max)), vs_t);
      const auto s_max = hn::Set(df, c.scale_max);
      // binary32 scales saturate too: a d past FLT_MAX (s_t subnormal or 0) is FLT_MAX; NaN stays.
      const auto s_b = c.scale_is_fp32 ? hn::IfThenElse(hn::Gt(d, s_max), s_max, d)
                                       : QuantizeVectorLean(df, d, s_max, hn::Add(s_max, s_max), hn::Set(di, c.scale_min_e),
                                                            hn::Set(di, c.scale_mantissa_bits));
      const auto divisor = hn::Mul(s_b, vs_t);
      const auto ok = hn::And(hn::RebindMask(df, bits < inf_bits), divisor > hn::Zero(df));
      general = hn::Or(general, hn::AndNot(ok, valid));
      hn::Store(hn::IfThenElseZero(ok, divisor), df, out.in_factor + j);
      hn::Store(s_b, df, out.out_scale + j);
    }
  }
  return hn::AllFalse(df, general);
}

// Visits blocks [0, nb) of a chunk whose scales LeanBlockScales set: lean(j) for the blocks of the
// lean path, general(j) for those it left to the general path (in_factor[j] == 0). all_lean (its
// result) skips the test of each block in the common chunk. Shared by the cast and encode lines.
template <class Lean, class General>
HWY_INLINE void ForEachChunkBlock(bool all_lean, const LeanChunkScales& chunk, std::size_t nb, Lean&& lean,
                                  General&& general) {
  if (all_lean) {
    for (std::size_t j = 0; j < nb; ++j) lean(j);
    return;
  }
  for (std::size_t j = 0; j < nb; ++j) {
    if (chunk.in_factor[j] == 0.0f) {
      general(j);
    } else {
      lean(j);
    }
  }
}

// The element quantizer of the lean blocks, its constants as vectors made once per line (held in
// registers: read from LeanBlocks in the loop, they would be reloaded after every store of a
// float, which the compiler must assume may alias them).
template <bool kDivide, bool kInteger>
struct LeanElements {
  using DF = hn::ScalableTag<float>;
  using DI = hn::RebindToSigned<DF>;
  hn::Vec<DF> max, neg_max, up, down;
  hn::Vec<DI> two_max_bits, min_e, mantissa_bits;

  explicit LeanElements(const LeanBlocks& c) {
    const DF df;
    const DI di;
    max = hn::Set(df, kInteger ? c.int_max : c.max);
    neg_max = hn::Neg(max);
    up = hn::Set(df, c.int_up);
    down = hn::Set(df, c.int_down);
    two_max_bits = hn::BitCast(di, hn::Add(max, max));
    min_e = hn::Set(di, c.min_e);
    mantissa_bits = hn::Set(di, c.mantissa_bits);
  }

  // Calls sink(offset, q) for each vector of one block's unscaled grid values q (offsets from the
  // block's first element), the block's x scaled by in_factor as LeanBlockScales set it.
  template <std::size_t kVectors = 0, class Sink>
  HWY_INLINE void Block(const float* HWY_RESTRICT x, std::size_t block, float in_factor, Sink&& sink) const {
    const DF df;
    const std::size_t lanes = hn::Lanes(df);
    const auto factor = hn::Set(df, in_factor);
    const std::size_t n = kVectors ? kVectors * lanes : block;
    for (std::size_t i = 0; i < n; i += lanes) {
      const auto x_i = hn::LoadU(df, x + i);
      // x / s: a division for minifloat scales; for 2^k the exact product with 2^-k (the same value).
      const auto v = kDivide ? hn::Div(x_i, factor) : hn::Mul(x_i, factor);
      if (kInteger) {
        sink(i, QuantizeFiniteInteger(df, v, up, down, max, neg_max));
      } else {
        sink(i, QuantizeFiniteMinifloat(df, v, max, neg_max, two_max_bits, min_e, mantissa_bits));
      }
    }
  }
};

// Calls body(kDivide, kInteger, kVectors) with the three as std::integral_constant, so that a
// caller picks the instantiation of its element loop once per line and not per vector. kVectors:
// the vectors of a block where that is 2 or 4 (NVFP4 blocks on SSE4 and AVX2, MX blocks on AVX2 and
// AVX-512), whose blocks then run as straight-line code; else 0 (a loop over the block).
template <class Body>
HWY_INLINE void WithLeanVariant(const LeanBlocks& c, std::size_t block, Body&& body) {
  const std::size_t vectors = block / hn::Lanes(hn::ScalableTag<float>());
  auto with_vectors = [&](auto divide, auto integer) {
    if (vectors == 2) body(divide, integer, std::integral_constant<std::size_t, 2>{});
    else if (vectors == 4) body(divide, integer, std::integral_constant<std::size_t, 4>{});
    else body(divide, integer, std::integral_constant<std::size_t, 0>{});
  };
  const bool divide = c.scale == LeanBlocks::Scale::divide;
  if (divide && c.integer) with_vectors(std::true_type{}, std::true_type{});
  else if (divide) with_vectors(std::true_type{}, std::false_type{});
  else if (c.integer) with_vectors(std::false_type{}, std::true_type{});
  else with_vectors(std::false_type{}, std::false_type{});
}

}  // namespace qcast::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // QCAST_CPU_LEAN_BLOCKS_INL_H_
