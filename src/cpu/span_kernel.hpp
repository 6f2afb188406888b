// Parameters of the SIMD span kernel (src/cpu/span_kernel.cpp): a contiguous run of elements that
// share one scale, quantized to one element format.
#pragma once
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "qcast/cast.hpp"
#include "qcast/format.hpp"
#include "qcast/rounding.hpp"
#include "qcast/scaling.hpp"

namespace qcast::kernels {

struct SpanParams {
  bool integer = false;        // signed integer element, else minifloat
  int mantissa_bits = 0;       // minifloat
  int min_exponent = 0;        // minifloat
  float max_value = 0;         // largest finite element value
  float overflow_value = 0;    // what a finite value beyond max becomes
  float inf_value = 0;         // what ±Inf becomes (before the sign)
  bool fnuz = false;           // no -0
  Rounding rounding = Rounding::nearest_even;
  std::uint64_t seed = 0;
  // Integer elements: 2^fraction_bits, its inverse, and qmax (hoisted out of the vector loop).
  float int_up = 1, int_down = 1, int_max = 0;
  // Write float results with streaming (non-temporal) stores where the output is vector-aligned:
  // the driver sets it for outputs of at least kernels::streaming_threshold() bytes.
  bool stream_stores = false;
};

// Whether an output of `bytes` is better written around the caches (kernels::streaming_threshold):
// it cannot stay in the last-level cache anyway, and a streaming store skips reading each output
// line before writing it (a third of the memory traffic of a cast). Measured on the 2-core EPYC VM:
// a 256 MiB scale-by-constant runs at 25 GB/s with stores and 36 GB/s with streaming stores.
bool stream_stores_pay(std::size_t bytes);

enum class SpanScale : int { none, single, two_level };

// How a format's groups scale their elements: not at all (value casts), by a group scale, or by a
// group scale times the tensor scale.
inline SpanScale span_scale_mode(const Format& f) {
  if (!f.is_scaled()) return SpanScale::none;
  return f.tensor_scale ? SpanScale::two_level : SpanScale::single;
}

// Whether a two-level tensor scale s_t is so small that a group's divisor s · s_t can round to 0
// (binary32 or bfloat16 block scales over elements of max <= 1 put s_t near
// amax_t / (max_elem · 2^128), which a tensor of small values takes to a subnormal or 0): x / 0 and
// (q · s) · 0 then give NaNs, which the reference makes canonical (detail::scaled_output) and
// rejects in an element format without a NaN code. The kernels take a finite group's values to be
// numbers, so such tensors go to the reference.
inline bool divisor_may_vanish(const Format& f, float amax_t, float s_t) {
  return f.tensor_scale && amax_t != 0.0f && float(f.scale.min_subnormal()) * s_t == 0.0f;
}

// Whether the SIMD kernel reproduces the reference for this element format (otherwise the driver
// runs the reference): signed minifloats whose grid steps are normal binary32 numbers and whose
// products stay exact, and signed integers.
bool span_kernel_supports(const ElementFormat& e);
SpanParams span_params(const ElementFormat& e, const CastOptions& o);

// out[i] = scaled_output(Q(scaled_input(in[i]))) for i < n; element i has flat index first + i.
// single: v = x / s, out = q * s; two_level: v = x / (s * s_t), out = (q * s) * s_t.
void quantize_span(const SpanParams& p, SpanScale mode, float s, float s_t, const float* in, float* out,
                   std::size_t n, std::uint64_t first);

// A line of contiguous blocks (block granularity along a last axis): statistics, scale and
// quantization of each block in one call. Scales are computed exactly as group_scale does.
struct BlockParams {
  const Format* format = nullptr;
  SpanParams element;
  enum class ScalePath { pow2_floor, fp32, minifloat, general } scale_path = ScalePath::general;
  SpanParams scale;   // ScalePath::minifloat: the scale format as a saturating, ties-to-even grid
  float amax_t = 1, s_t = 1;
};
BlockParams block_params(const Format& f, const CastOptions& o, float amax_t, float s_t);
// Elements [0, len) of one line, blocks of f.block_size; element 0 has flat index `first`.
void quantize_blocks(const BlockParams& p, const float* in, float* out, std::size_t len, std::uint64_t first);

// Column groups (groups strided across rows: blocks along a non-last axis, channels along the last
// axis): a row of n contiguous elements, element k with its group's scale[k]; divisor[k] = scale[k]
// (times s_t for two-level formats), inverse[k] = 1 / divisor[k] or inverse null (divide).
struct ColumnScales {
  const float* scale = nullptr;
  const float* divisor = nullptr;
  const float* inverse = nullptr;
  bool two_level = false;
  float s_t = 1;
};
// out[k] = scaled_output(Q(scaled_input(in[k]))) with element k's scale; element 0 has flat index
// `first` (stochastic rounding). Every scale finite and nonzero.
void quantize_columns(const SpanParams& p, const ColumnScales& c, const float* in, float* out, std::size_t n,
                      std::uint64_t first);
// acc[k] = max(acc[k], bits of |in[k]|) for k < n (the magnitude bits as an integer).
void column_max_bits(const float* in, std::int32_t* acc, std::size_t n);
// The cast of a tensor whose groups are strided across rows (src/cpu/parallel_columns.cpp): blocks
// along a non-last axis, channels along the last axis of a tensor of rank >= 2. False for other
// layouts. params: span_params of the element format; amax_t and s_t as for group_scale.
bool cast_column_groups(const float* in, float* out, const Shape& shape, const Format& f, const SpanParams& params,
                        float amax_t, float s_t, int threads);
// The same of a bfloat16 / float16 tensor (type t): the cast of its widened values, narrowed.
bool cast_column_groups16(DType t, const std::uint16_t* in, std::uint16_t* out, const Shape& shape, const Format& f,
                          const SpanParams& params, float amax_t, float s_t, int threads);

// float16 / bfloat16 storage: exact widening, and narrowing as qcast::narrow does.
void widen_span(DType t, const std::uint16_t* in, float* out, std::size_t n);
void narrow_span(DType t, const float* in, std::uint16_t* out, std::size_t n);

// The OCP floor rule read off the bits of amax (group_scale computes the same through
// frexp/ldexp). Returns false where the general path must run: other rules, amax zero, subnormal,
// or not finite.
inline bool floor_scale_from_bits(const Format& f, float amax, GroupScale& g) {
  if (f.rule != ScaleRule::floor || f.scale.kind != ElementKind::exponent || !(amax >= 1.1754944e-38f) ||
      !(amax <= 3.4028235e38f))
    return false;
  std::uint32_t bits;
  std::memcpy(&bits, &amax, 4);
  int k = int(bits >> 23) - 127 - f.element.max_exponent();
  k = k < f.scale.min_exponent() ? f.scale.min_exponent() : k > f.scale.max_exponent() ? f.scale.max_exponent() : k;
  g.kind = GroupScale::Kind::finite;
  g.code = std::uint32_t(k + f.scale.bias);
  const std::uint32_t s_bits = k >= -126 ? std::uint32_t(k + 127) << 23 : 0x00400000u >> (-127 - k);
  std::memcpy(&g.value, &s_bits, 4);
  return true;
}

// Whether x * (1 / d) equals x / d for every x: d and 1 / d both normal powers of two (x / 2^k and
// x * 2^-k are the same correctly rounded value). The kernels then multiply by the reciprocal.
inline bool reciprocal_is_exact(float d) {
  const float inv = 1.0f / d;
  std::uint32_t db, ib;
  std::memcpy(&db, &d, 4);
  std::memcpy(&ib, &inv, 4);
  const std::uint32_t exp_mask = 0x7F800000u, frac_mask = 0x7FFFFFu;
  return (db & exp_mask) != 0 && (db & frac_mask) == 0 && (ib & exp_mask) != 0 && (ib & exp_mask) != exp_mask &&
         (ib & frac_mask) == 0;
}

// What element x of a group becomes under a scale of a non-finite kind (detail::cast_group): NaN
// for a NaN scale, a signed zero for a zero scale, x itself for passthrough.
inline float non_finite_group_value(GroupScale::Kind kind, float x) {
  switch (kind) {
    case GroupScale::Kind::nan: return detail::canonical_nan();
    case GroupScale::Kind::zero: return std::copysign(0.0f, x);
    default: return x;  // passthrough
  }
}

// Largest finite |in[i]| over i < n, and whether any is NaN or Inf.
void span_stats(const float* in, std::size_t n, float* amax, bool* nonfinite);
// The same of float16 / bfloat16 values (type t), from their bits: those of their widened values.
void span_stats16(DType t, const std::uint16_t* in, std::size_t n, float* amax, bool* nonfinite);

// The scale of a group of contiguous runs (stride 1: one run for blocks along the last axis and
// channels along the first, one per outer index for channels along a middle axis), with its
// statistics from span_stats over each run (group_scale, exactly).
GroupScale contiguous_group_scale(const float* in, const detail::Group& grp, const Format& f, float amax_t,
                                  float s_t);
// Statistics of in[0, n) reduced over threads (detail::group_stats of one contiguous group).
detail::GroupStats parallel_stats(const float* in, std::int64_t n, int threads);
// The same of a bfloat16 / float16 tensor: elements [begin, end) (span_stats16), and the whole of
// in[0, n) reduced over threads.
detail::GroupStats widened_stats(DType t, const std::uint16_t* in, std::int64_t begin, std::int64_t end);
// The statistics of a group of contiguous runs of a bfloat16 / float16 tensor (span_stats16 of each).
detail::GroupStats widened_group_stats(DType t, const std::uint16_t* in, const detail::Group& grp);
detail::GroupStats parallel_stats16(DType t, const std::uint16_t* in, std::int64_t n, int threads);

}  // namespace qcast::kernels
