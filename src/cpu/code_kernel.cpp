// The SIMD code kernels: element codes from values (encode) and values from codes (decode), written
// once and compiled per Highway target like the span kernel. Encode of the lean grids (ties to even,
// saturating) computes each code straight from the scaled value (lean_codes-inl.h); the other
// options quantize with the span kernel's QuantizeVector and then read the code off the bits of the
// exact grid value: every non-NaN grid value has exactly one code, so code(Q(v)) is the reference's
// encode_element(v). 8-bit codes go straight into the packed stream, 4-bit codes in pairs per byte.
// Decode computes each value from the code's fields and looks up only the codes without a finite
// value (NaN, Inf) in a table built by the reference decode_element.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "src/cpu/code_kernel.cpp"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>
#include <hwy/cache_control.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "code_kernel.hpp"
#include "qcast/cast.hpp"
#include "qcast/element_codec.hpp"

// Per target (re-included by foreach_target): QuantizeVector, its lean variants, the lean block chunks.
#include "src/cpu/quantize_vector-inl.h"
#include "src/cpu/lean_blocks-inl.h"
#include "src/cpu/code_streams-inl.h"
#include "src/cpu/lean_codes-inl.h"

HWY_BEFORE_NAMESPACE();
namespace qcast::kernels::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// The code of an exact grid value q (a QuantizeVector output).
// kFinite: q is known finite (the lean block path), so the Inf and NaN codes need no blend.
template <bool kFinite = false, class DF, class V>
HWY_INLINE hn::Vec<hn::RebindToUnsigned<DF>> CodeOfValue(DF df, const CodeParams& p, V q) {
  const hn::RebindToUnsigned<DF> du;
  const hn::RebindToSigned<DF> di;
  const auto negative = hn::RebindMask(du, hn::BitCast(di, q) < hn::Zero(di));
  const V a = hn::Abs(q);
  if (p.element.integer) {  // n = |q| * 2^fraction_bits, exact; negative values in two's complement
    const auto n = hn::BitCast(du, hn::ConvertTo(di, hn::Mul(a, hn::Set(df, p.element.int_up))));
    const auto mask = hn::Set(du, (1u << p.bits) - 1);
    return hn::And(hn::IfThenElse(negative, hn::Sub(hn::Zero(du), n), n), mask);
  }
  // Normal: the top M mantissa bits and the exponent rebiased, read off binary32's bits. Subnormal
  // (|q| < 2^min_exponent): the mantissa field is |q| / 2^(min_exponent - M), an integer.
  const int m = p.element.mantissa_bits;
  const auto normal = hn::Sub(hn::ShiftRightSame(hn::BitCast(du, a), 23 - m),
                              hn::Set(du, std::uint32_t(127 - p.bias) << m));
  const auto subnormal = hn::BitCast(du, hn::ConvertTo(di, hn::Mul(a, hn::Set(df, p.subnormal_code_scale))));
  const auto is_normal = hn::RebindMask(du, a >= hn::Set(df, p.min_normal));
  auto code = hn::IfThenElse(is_normal, normal, subnormal);
  if (!kFinite) code = hn::IfThenElse(hn::RebindMask(du, hn::IsInf(q)), hn::Set(du, p.inf_code), code);
  code = hn::Or(code, hn::IfThenElseZero(negative, hn::Set(du, p.sign_mask)));
  if (!kFinite && p.has_nan) code = hn::IfThenElse(hn::RebindMask(du, hn::IsNaN(q)), hn::Set(du, p.nan_code), code);
  return code;
}

// The vectors of a run by LeanCodes (lean_codes-inl.h): codes straight from the scaled values.
// Returns the offset after the last whole vector, or, with kReportNan, of the first NaN (*nan set).
template <bool kReportNan, bool kInteger, class Scale, class Writer>
HWY_INLINE std::size_t EncodeLeanVectors(const CodeParams& p, const Scale& scale, const float* HWY_RESTRICT in,
                                         const Writer& out, std::size_t at, std::size_t n, bool* nan) {
  const hn::ScalableTag<float> df;
  const hn::RebindToSigned<decltype(df)> di;
  const std::size_t lanes = hn::Lanes(df);
  const LeanCodes<kInteger> codes(p);
  std::size_t i = 0;
  for (; i + lanes <= n; i += lanes) {
    const auto v = scale.Apply(df, hn::LoadU(df, in + i), i);
    if (kReportNan) {
      const auto is_nan = hn::IsNaN(v);
      if (!hn::AllFalse(df, is_nan)) {
        *nan = true;
        return i + std::size_t(hn::FindFirstTrue(df, is_nan));
      }
    }
    // Without kReportNan a NaN lane either cannot occur (a finite group) or gets its NaN code.
    out.Store(di, codes.template Of<false>(v), at + i);
  }
  return i;
}

// kCheckNan: whether a NaN can reach a format without NaN codes here (direct casts); a finite
// group's elements are all finite, so the block path skips the test. Codes go to out at offsets
// at + i. scale: ScaleInput (one scale) or ColumnInput (one per element), applied to element i.
template <bool kCheckNan, class Scale, class Writer>
HWY_INLINE std::size_t EncodeRun(const CodeParams& p, const Scale& scale, const float* HWY_RESTRICT in,
                                 const Writer& out, std::size_t at, std::size_t n, std::uint64_t first) {
  const hn::ScalableTag<float> df;
  const hn::RebindToSigned<decltype(df)> di;
  const std::size_t lanes = hn::Lanes(df);
  const bool report_nan = kCheckNan && !p.has_nan;
  std::size_t i = 0;
  if (LeanCodesApply(p)) {
    bool nan = false;
    WithLeanCodeKind(p, [&](auto integer) {
      constexpr bool kInteger = decltype(integer)::value;
      i = report_nan ? EncodeLeanVectors<true, kInteger>(p, scale, in, out, at, n, &nan)
                     : EncodeLeanVectors<false, kInteger>(p, scale, in, out, at, n, &nan);
    });
    if (nan) return i;
  } else {
    const bool lean = LeanQuantizerApplies(p.element);
    const auto max = hn::Set(df, p.element.max_value);
    const auto two_max = hn::Add(max, max);
    const auto min_e = hn::Set(di, p.element.min_exponent + 127);
    const auto mantissa_bits = hn::Set(di, p.element.mantissa_bits);
    for (; i + lanes <= n; i += lanes) {
      const std::uint64_t index = first + i;
      if (p.element.rounding == Rounding::stochastic && (index >> 32) != ((index + lanes - 1) >> 32)) break;
      const auto v = scale.Apply(df, hn::LoadU(df, in + i), i);
      const auto q = lean ? QuantizeVectorLean(df, v, max, two_max, min_e, mantissa_bits)
                          : QuantizeVector(df, p.element, v, index);
      if (report_nan) {
        const auto nan = hn::IsNaN(q);
        if (!hn::AllFalse(df, nan)) return i + std::size_t(hn::FindFirstTrue(df, nan));
      }
      out.Store(di, hn::BitCast(di, CodeOfValue(df, p, q)), at + i);  // codes < 256
    }
  }
  const hn::CappedTag<float, 1> d1;
  for (; i < n; ++i) {
    const auto q = QuantizeVector(d1, p.element, scale.Apply(d1, hn::Set(d1, in[i]), i), first + i);
    if (report_nan && std::isnan(hn::GetLane(q))) return i;
    out.Scalar(at + i, hn::GetLane(CodeOfValue(d1, p, q)));
  }
  return n;
}

std::size_t EncodeSpan(const CodeParams& params, SpanScale mode, float s, float s_t, const float* HWY_RESTRICT in,
                       std::uint8_t* HWY_RESTRICT out, CodeLayout layout, std::size_t n, std::uint64_t first) {
  const CodeParams p = params;  // a local copy: stores to `out` cannot alias it
  std::size_t done = 0;
  WithCodeStream<CodeWriter>(layout, out, [&](const auto& writer) {
    done = EncodeRun<true>(p, ScaleInput(mode, s, s_t), in, writer, 0, n, first);
  });
  return done;
}

// A row of column groups: element i scaled by its own divisor. Every scale is finite, so the
// elements are too (no NaN to report); the caller writes the codes of columns with other scales.
void EncodeColumns(const CodeParams& params, const ColumnScales& c, const float* HWY_RESTRICT in,
                   std::uint8_t* HWY_RESTRICT out, CodeLayout layout, std::size_t n, std::uint64_t first) {
  const CodeParams p = params;  // a local copy: stores to `out` cannot alias it
  WithCodeStream<CodeWriter>(layout, out, [&](const auto& writer) {
    EncodeRun<false>(p, ColumnInput{c.divisor, c.inverse}, in, writer, 0, n, first);
  });
}

// The scale of one block and its code (group_scale, exactly): the OCP floor rule from the bits of
// amax, and minifloat scales (NVFP4's E4M3) through the vector quantizer and CodeOfValue; other
// rules and the special cases through the reference.
HWY_INLINE GroupScale BlockScaleAndCode(const BlockParams& bp, const CodeParams& scale_code, float amax, bool nonfinite) {
  const Format& f = *bp.format;
  GroupScale g;
  if (nonfinite) return group_scale(f, amax, true, bp.amax_t, bp.s_t);
  if (floor_scale_from_bits(f, amax, g)) return g;
  if (bp.scale_path == BlockParams::ScalePath::minifloat && (f.tensor_scale ? bp.amax_t != 0.0f : amax != 0.0f)) {
    const hn::CappedTag<float, 1> d1;
    const hn::RebindToSigned<decltype(d1)> di1;
    const float max_elem = bp.element.max_value;
    const float d = f.tensor_scale ? (amax / max_elem) / bp.s_t : amax / max_elem;
    const auto s = LeanQuantizerApplies(bp.scale) ? QuantizeVectorLean(d1, hn::Set(d1, d), hn::Set(d1, bp.scale.max_value),
                                                                       hn::Set(d1, 2 * bp.scale.max_value),
                                                                       hn::Set(di1, bp.scale.min_exponent + 127),
                                                                       hn::Set(di1, bp.scale.mantissa_bits))
                                                  : QuantizeVector(d1, bp.scale, hn::Set(d1, d), 0);
    g.value = hn::GetLane(s);
    // The signed twin's code of a value >= 0 is the unsigned scale's code (no sign bit set).
    g.code = hn::GetLane(CodeOfValue(d1, scale_code, s)) & ((1u << f.scale.bits()) - 1);
    if (g.value == 0.0f) g.kind = GroupScale::Kind::zero;
    if (std::isnan(g.value)) g.kind = GroupScale::Kind::nan;
    return g;
  }
  return group_scale(f, amax, false, bp.amax_t, bp.s_t);
}

// One block by the general path: statistics, scale and code (into *scale_code_out), element codes
// (to out at offsets at + i).
template <class Writer>
HWY_NOINLINE void EncodeBlockGeneral(const BlockParams& bp, const CodeParams& p, const CodeParams& scale_code,
                                   SpanScale mode, const float* HWY_RESTRICT in, const Writer& out, std::size_t at,
                                   std::uint32_t* scale_code_out, std::size_t n, std::uint64_t first,
                                   const CastOptions& o) {
  float amax = 0;
  const bool nonfinite = BlockAmax(in, n, &amax);
  const GroupScale g = BlockScaleAndCode(bp, scale_code, amax, nonfinite);
  *scale_code_out = g.code;
  if (g.kind == GroupScale::Kind::finite) {
    EncodeRun<false>(p, ScaleInput(mode, g.value, bp.s_t), in, out, at, n, first);  // a finite block: no NaN
    return;
  }
  for (std::size_t i = 0; i < n; ++i) {  // qcast::encode's element loop for the other kinds
    const float v = g.kind == GroupScale::Kind::nan ? 0.0f : std::copysign(0.0f, in[i]);
    out.Scalar(at + i, encode_element(bp.format->element, v, o, first + i));
  }
}

// The scale codes of a chunk's lean blocks (lean_blocks-inl.h), from the scales themselves: the
// E8M0 code k + bias of 2^k; the code of the minifloat s_b; a binary32 scale's own bits.
HWY_INLINE void LeanScaleCodes(const LeanBlocks& c, const Format& f, const CodeParams& scale_code,
                               const LeanChunkScales& chunk, std::size_t nb, std::uint32_t* HWY_RESTRICT out) {
  const hn::ScalableTag<float> df;
  const hn::RebindToUnsigned<decltype(df)> du;
  const std::size_t lanes = hn::Lanes(df);
  for (std::size_t j = 0; j < nb; j += lanes) {
    const auto s = hn::Load(df, chunk.out_scale + j);
    hn::Vec<decltype(du)> code;
    if (c.scale == LeanBlocks::Scale::pow2_floor) {
      code = hn::Add(hn::ShiftRight<23>(hn::BitCast(du, s)), hn::Set(du, std::uint32_t(f.scale.bias - 127)));
    } else if (c.scale_is_fp32) {
      code = hn::BitCast(du, s);
    } else {  // the signed twin's code of a value >= 0 is the unsigned scale's code (no sign bit set)
      code = hn::And(CodeOfValue<true>(df, scale_code, s), hn::Set(du, (1u << f.scale.bits()) - 1));
    }
    HWY_ALIGN std::uint32_t lane_codes[HWY_MAX_BYTES / 4];
    hn::Store(code, du, lane_codes);
    for (std::size_t k = 0; k < lanes && j + k < nb; ++k) out[j + k] = lane_codes[k];
  }
}

// The whole blocks of a line from its start by the lean chunks (lean_blocks-inl.h), their codes
// by LeanCodes; returns the offset of the first element left (a last partial block). kVectors:
// see WithLeanVariant.
template <bool kDivide, bool kInteger, std::size_t kVectors, class Writer>
HWY_INLINE std::size_t EncodeLeanLine(const BlockParams& bp, const LeanBlocks& c, const CodeParams& p,
                                      const CodeParams& scale_code, SpanScale mode, const float* HWY_RESTRICT in,
                                      const Writer& out, std::uint32_t* HWY_RESTRICT scale_codes, std::size_t len,
                                      std::uint64_t first, const CastOptions& o) {
  const hn::ScalableTag<float> df;
  const hn::RebindToSigned<decltype(df)> di;
  const std::size_t lanes = hn::Lanes(df);
  const std::size_t block = std::size_t(bp.format->block_size);
  const LeanCodes<kInteger> codes(p);
  LeanChunkScales chunk;
  std::size_t b = 0, k = 0;
  while (len - b >= block) {
    const std::size_t nb = std::min(kLeanChunkBlocks, (len - b) / block);
    const bool all_lean = LeanBlockScales<kVectors>(c, in + b, block, nb, chunk);
    LeanScaleCodes(c, *bp.format, scale_code, chunk, nb, scale_codes + k);
    auto lean_block = [&](std::size_t j) {
      const std::size_t at = b + j * block;
      // x / s: a division for minifloat scales; for 2^k the exact product with 2^-k (the same value).
      const auto factor = hn::Set(df, chunk.in_factor[j]);
      const std::size_t n = kVectors ? kVectors * lanes : block;
      for (std::size_t i = 0; i < n; i += lanes) {
        const auto x = hn::LoadU(df, in + at + i);
        out.Store(di, codes.template Of<true>(kDivide ? hn::Div(x, factor) : hn::Mul(x, factor)), at + i);
      }
    };
    ForEachChunkBlock(all_lean, chunk, nb, lean_block, [&](std::size_t j) {
      const std::size_t at = b + j * block;
      EncodeBlockGeneral(bp, p, scale_code, mode, in + at, out, at, scale_codes + k + j, block, first + at, o);
    });
    b += nb * block;
    k += nb;
  }
  return b;
}

// One line of contiguous blocks: each block's statistics, scale (code into scale_codes[block]) and
// element codes, in one call (per-block calls through the dispatch table cost more than 32 codes).
void EncodeBlocks(const BlockParams& bp, const CodeParams& params, const CodeParams& scale_code,
                  const float* HWY_RESTRICT in, std::uint8_t* HWY_RESTRICT out, CodeLayout layout,
                  std::uint32_t* HWY_RESTRICT scale_codes, std::size_t len, std::uint64_t first, const CastOptions& o) {
  const CodeParams p = params;  // a local copy: stores to `out` cannot alias it
  const std::size_t block = std::size_t(bp.format->block_size);
  const SpanScale mode = span_scale_mode(*bp.format);
  // The default formats by chunks of blocks as QuantizeBlocks runs them, so that a block costs its
  // vectors and not the set-up of a general run.
  const LeanBlocks c = MakeLeanBlocks(bp);
  WithCodeStream<CodeWriter>(layout, out, [&](const auto& writer) {
    std::size_t b = 0;
    if (c.scale != LeanBlocks::Scale::none && LeanCodesApply(p)) {
      WithLeanVariant(c, block, [&](auto divide, auto integer, auto vectors) {
        b = EncodeLeanLine<decltype(divide)::value, decltype(integer)::value, decltype(vectors)::value>(
            bp, c, p, scale_code, mode, in, writer, scale_codes, len, first, o);
      });
    }
    for (std::size_t k = b / block; b < len; b += block, ++k) {  // the general path, and a last partial block
      const std::size_t n = len - b < block ? len - b : block;
      EncodeBlockGeneral(bp, p, scale_code, mode, in + b, writer, b, scale_codes + k, n, first + b, o);
    }
  });
}

// The values of a vector of codes (decode_element), the inverse of LeanCodes: a minifloat's fields
// rebiased into binary32's (normal codes), its mantissa times the subnormal step (subnormal codes:
// bits(C) | m is C + m * step exactly, C = 2^(min_exponent - M + 23), and subtracting C is exact),
// the code's sign moved to bit 31; an integer's code sign-extended and times 2^-fraction_bits.
// Codes whose value is not finite (p.special_from, p.special_code) are looked up in the table.
template <bool kInteger>
struct CodeValues {
  using DF = hn::ScalableTag<float>;
  using DI = hn::RebindToSigned<DF>;
  hn::Vec<DI> magnitude_mask, min_normal_code, rebias, subnormal_base_bits, special_from, special_code;
  hn::Vec<DF> subnormal_base, int_down;
  int mantissa_shift = 0, sign_shift = 0;  // 23 - M; 32 - bits
  bool specials = false;                   // whether any code has no finite value
  const float* HWY_RESTRICT table;

  CodeValues(const CodeParams& p, const float* HWY_RESTRICT t) : table(t) {
    const DF df;
    const DI di;
    const SpanParams& e = p.element;
    magnitude_mask = hn::Set(di, std::int32_t(p.sign_mask - 1));
    min_normal_code = hn::Set(di, 1 << e.mantissa_bits);
    mantissa_shift = 23 - e.mantissa_bits;
    sign_shift = 32 - p.bits;
    rebias = hn::Set(di, (127 - p.bias) << 23);
    subnormal_base = hn::Set(df, std::ldexp(1.0f, e.min_exponent - e.mantissa_bits + 23));
    subnormal_base_bits = hn::BitCast(di, subnormal_base);
    special_from = hn::Set(di, std::int32_t(p.special_from));
    special_code = hn::Set(di, std::int32_t(p.special_code));
    specials = p.special_from < p.sign_mask || p.special_code != ~0u;
    int_down = hn::Set(df, e.int_down);
  }

  HWY_INLINE hn::Vec<DF> Of(hn::Vec<DI> code) const {
    const DF df;
    const DI di;
    if (kInteger) {
      const auto n = hn::ShiftRightSame(hn::ShiftLeftSame(code, sign_shift), sign_shift);  // sign-extended
      return hn::Mul(hn::ConvertTo(df, n), int_down);
    }
    const auto m = hn::And(code, magnitude_mask);
    const auto normal = hn::BitCast(df, hn::Add(hn::ShiftLeftSame(m, mantissa_shift), rebias));
    const auto subnormal = hn::Sub(hn::BitCast(df, hn::Or(m, subnormal_base_bits)), subnormal_base);
    auto v = hn::IfThenElse(hn::RebindMask(df, m < min_normal_code), subnormal, normal);
    v = hn::BitCast(df, hn::Or(hn::BitCast(di, v), hn::ShiftLeftSame(hn::Xor(code, m), sign_shift)));
    if (!specials) return v;
    const auto special = hn::Or(hn::Not(m < special_from), code == special_code);
    if (!hn::AllFalse(di, special))
      v = hn::IfThenElse(hn::RebindMask(df, special), hn::GatherIndex(df, table, code), v);
    return v;
  }
};

// out[i] = scaled_output(value of code i) for i < n, the codes read from `codes` at offsets at + i
// (detail::scaled_output: q * s, or (q * s) * s_t).
template <bool kInteger, class Reader>
HWY_INLINE void DecodeRun(const CodeValues<kInteger>& values, SpanScale mode, float s, float s_t, const Reader& codes,
                          std::size_t at, float* HWY_RESTRICT out, std::size_t n, bool stream) {
  const hn::ScalableTag<float> df;
  const hn::RebindToSigned<decltype(df)> di;
  const std::size_t lanes = hn::Lanes(df);
  const auto vs = hn::Set(df, s);
  const auto vst = hn::Set(df, s_t);
  stream = stream && VectorAligned(df, out);
  std::size_t i = 0;
  for (; i + lanes <= n; i += lanes) {
    auto q = values.Of(codes.Load(di, at + i));
    if (mode != SpanScale::none) q = hn::Mul(q, vs);
    if (mode == SpanScale::two_level) q = hn::Mul(q, vst);
    StoreResult(stream, q, df, out + i);
  }
  for (; i < n; ++i) {
    float q = values.table[codes.Scalar(at + i)];
    if (mode != SpanScale::none) q = q * s;
    if (mode == SpanScale::two_level) q = q * s_t;
    out[i] = q;
  }
}

// Calls body(values, reader) with the CodeValues of p's element kind and the CodeReader of layout.
template <class Body>
HWY_INLINE void WithDecoder(const CodeParams& p, const float* HWY_RESTRICT table, CodeLayout layout,
                            const std::uint8_t* HWY_RESTRICT codes, Body&& body) {
  WithCodeStream<CodeReader>(layout, codes, [&](const auto& reader) {
    if (p.element.integer) body(CodeValues<true>(p, table), reader);
    else body(CodeValues<false>(p, table), reader);
  });
}

void DecodeSpan(const CodeParams& params, const float* HWY_RESTRICT table, SpanScale mode, float s, float s_t,
                const std::uint8_t* HWY_RESTRICT codes, CodeLayout layout, float* HWY_RESTRICT out, std::size_t n,
                bool stream) {
  WithDecoder(params, table, layout, codes, [&](const auto& values, const auto& reader) {
    DecodeRun(values, mode, s, s_t, reader, 0, out, n, stream);
  });
  if (stream) hwy::FlushStream();  // streaming stores are weakly ordered: visible before we return
}

// One line of contiguous blocks: scale_values[block] is the decoded scale of each block.
void DecodeBlocks(const CodeParams& params, const float* HWY_RESTRICT table, SpanScale mode, std::size_t block,
                  const float* scale_values, float s_t, const std::uint8_t* HWY_RESTRICT codes, CodeLayout layout,
                  float* HWY_RESTRICT out, std::size_t len, bool stream) {
  const hn::ScalableTag<float> df;
  const hn::RebindToSigned<decltype(df)> di;
  const std::size_t lanes = hn::Lanes(df);
  // A block whose scale code is NaN decodes to NaN.
  auto nan_block = [&](std::size_t b, std::size_t n) { std::fill(out + b, out + b + n, detail::canonical_nan()); };
  WithDecoder(params, table, layout, codes, [&](const auto& values, const auto& reader) {
    std::size_t b = 0, k = 0;
    if (block % lanes == 0 && mode != SpanScale::none) {
      // Whole blocks of whole vectors, without a run's set-up per block (a block is 2-4 vectors).
      const bool stream_blocks = stream && VectorAligned(df, out);  // then every block is aligned
      const auto vst = hn::Set(df, s_t);
      for (; len - b >= block; b += block, ++k) {
        if (std::isnan(scale_values[k])) {
          nan_block(b, block);
          continue;
        }
        const auto vs = hn::Set(df, scale_values[k]);
        for (std::size_t i = b; i < b + block; i += lanes) {
          auto q = hn::Mul(values.Of(reader.Load(di, i)), vs);
          if (mode == SpanScale::two_level) q = hn::Mul(q, vst);
          StoreResult(stream_blocks, q, df, out + i);
        }
      }
    }
    for (; b < len; b += block, ++k) {  // other block sizes, and a last partial block
      const std::size_t n = len - b < block ? len - b : block;
      if (std::isnan(scale_values[k])) {
        nan_block(b, n);
        continue;
      }
      DecodeRun(values, mode, scale_values[k], s_t, reader, b, out + b, n, stream);
    }
  });
  if (stream) hwy::FlushStream();
}

// A row of column groups: element i decodes with its own scale, (q * scale_values[i]) then * s_t
// (detail::scaled_output).
void DecodeColumns(const CodeParams& params, const float* HWY_RESTRICT table, const float* HWY_RESTRICT scale_values,
                   bool two_level, float s_t, const std::uint8_t* HWY_RESTRICT codes, CodeLayout layout,
                   float* HWY_RESTRICT out, std::size_t n) {
  const hn::ScalableTag<float> df;
  const hn::RebindToSigned<decltype(df)> di;
  const std::size_t lanes = hn::Lanes(df);
  WithDecoder(params, table, layout, codes, [&](const auto& values, const auto& reader) {
    const auto vst = hn::Set(df, s_t);
    std::size_t i = 0;
    for (; i + lanes <= n; i += lanes) {
      auto q = hn::Mul(values.Of(reader.Load(di, i)), hn::LoadU(df, scale_values + i));
      if (two_level) q = hn::Mul(q, vst);
      hn::StoreU(q, df, out + i);
    }
    for (; i < n; ++i) {
      const float q = table[reader.Scalar(i)] * scale_values[i];
      out[i] = two_level ? q * s_t : q;
    }
  });
}

}  // namespace qcast::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace qcast::kernels {
HWY_EXPORT(EncodeSpan);
HWY_EXPORT(EncodeColumns);
HWY_EXPORT(DecodeSpan);
HWY_EXPORT(EncodeBlocks);
HWY_EXPORT(DecodeBlocks);
HWY_EXPORT(DecodeColumns);

bool code_kernel_supports(const ElementFormat& e) { return e.bits() <= 8 && span_kernel_supports(e); }

CodeParams code_params(const ElementFormat& e, const CastOptions& o) {
  CodeParams p;
  p.element = span_params(e, o);
  p.bits = e.bits();
  p.bias = e.bias;
  p.sign_mask = detail::sign_mask(e);
  p.has_nan = e.has_nan();
  if (e.kind == ElementKind::minifloat) {
    p.inf_code = detail::inf_code(e);
    if (p.has_nan) p.nan_code = detail::nan_code(e);
    p.min_normal = std::ldexp(1.0f, e.min_exponent());
    p.subnormal_code_scale = std::ldexp(1.0f, e.mantissa_bits - e.min_exponent());
    p.max_code = detail::max_magnitude_code(e);
  }
  // The codes whose value is not finite, for decode's table lookups: every magnitude from
  // special_from on (OCP E5M2's Inf and NaNs, E4M3's NaN magnitude), and at most one more code
  // (FNUZ's NaN in the place of -0). A format with more falls back to the table for every code.
  p.special_from = p.sign_mask;
  p.special_code = ~0u;
  if (e.kind == ElementKind::minifloat) {
    auto finite = [&](std::uint32_t c) { return std::isfinite(decode_element(e, c)); };
    while (p.special_from > 0 && !finite(p.special_from - 1)) --p.special_from;
    int odd = 0;
    for (std::uint32_t c = 0; c < (1u << p.bits); ++c) {
      if ((c & (p.sign_mask - 1)) >= p.special_from || finite(c)) continue;
      p.special_code = c;
      ++odd;
    }
    if (odd > 1) p.special_from = 0;
  }
  return p;
}

std::size_t encode_span(const CodeParams& p, SpanScale mode, float s, float s_t, const float* in, std::uint8_t* out,
                        CodeLayout layout, std::size_t n, std::uint64_t first) {
  return HWY_DYNAMIC_DISPATCH(EncodeSpan)(p, mode, s, s_t, in, out, layout, n, first);
}

void encode_columns(const CodeParams& p, const ColumnScales& c, const float* in, std::uint8_t* out, CodeLayout layout,
                    std::size_t n, std::uint64_t first) {
  HWY_DYNAMIC_DISPATCH(EncodeColumns)(p, c, in, out, layout, n, first);
}

void decode_span(const CodeParams& p, const float* table, SpanScale mode, float s, float s_t, const std::uint8_t* codes,
                 CodeLayout layout, float* out, std::size_t n, bool stream) {
  HWY_DYNAMIC_DISPATCH(DecodeSpan)(p, table, mode, s, s_t, codes, layout, out, n, stream);
}

void encode_blocks(const BlockParams& bp, const CodeParams& p, const CodeParams& scale_code, const float* in,
                   std::uint8_t* out, CodeLayout layout, std::uint32_t* scale_codes, std::size_t len,
                   std::uint64_t first, const CastOptions& o) {
  HWY_DYNAMIC_DISPATCH(EncodeBlocks)(bp, p, scale_code, in, out, layout, scale_codes, len, first, o);
}

void decode_blocks(const CodeParams& p, const float* table, SpanScale mode, std::size_t block,
                   const float* scale_values, float s_t, const std::uint8_t* codes, CodeLayout layout, float* out,
                   std::size_t len, bool stream) {
  HWY_DYNAMIC_DISPATCH(DecodeBlocks)(p, table, mode, block, scale_values, s_t, codes, layout, out, len, stream);
}

void decode_columns(const CodeParams& p, const float* table, const float* scale_values, bool two_level, float s_t,
                    const std::uint8_t* codes, CodeLayout layout, float* out, std::size_t n) {
  HWY_DYNAMIC_DISPATCH(DecodeColumns)(p, table, scale_values, two_level, s_t, codes, layout, out, n);
}

}  // namespace qcast::kernels
#endif  // HWY_ONCE
