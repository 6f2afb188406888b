// The threaded driver of the compiled kernels: splits a tensor into independent groups (or, for a
// single group, into element ranges after a parallel reduction), runs the SIMD span kernel on
// contiguous groups and the scalar reference (detail::cast_group) on everything else.
#include <hwy/highway.h>
#include <hwy/targets.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>

#include "qcast/kernels.hpp"
#include "canonical_layout.hpp"
#include "parallel_ranges.hpp"
#include "span_kernel.hpp"

namespace qcast::kernels {
namespace {

// One group's outputs: SIMD when the group is contiguous and the element format is supported.
void cast_group(const float* in, float* out, const detail::Group& grp, const Format& f, const GroupScale& g,
                const CastOptions& o, float s_t, const SpanParams* simd) {
  if (simd && grp.stride == 1 && g.kind == GroupScale::Kind::finite) {  // contiguous runs: one span each
    for (std::int64_t r = 0; r < grp.runs; ++r) {
      const std::int64_t b = grp.base + r * grp.run_stride;
      quantize_span(*simd, span_scale_mode(f), g.value, s_t, in + b, out + b, std::size_t(grp.count),
                    std::uint64_t(b));
    }
    return;
  }
  detail::cast_group(in, out, grp, f, g, o, s_t);
}

}  // namespace

GroupScale contiguous_group_scale(const float* in, const detail::Group& grp, const Format& f, float amax_t, float s_t) {
  float amax = 0;
  bool nonfinite = false;
  for (std::int64_t r = 0; r < grp.runs; ++r) {
    float run_amax;
    bool run_nonfinite;
    span_stats(in + grp.base + r * grp.run_stride, std::size_t(grp.count), &run_amax, &run_nonfinite);
    amax = std::max(amax, run_amax);
    nonfinite = nonfinite || run_nonfinite;
  }
  GroupScale g;
  if (!nonfinite && floor_scale_from_bits(f, amax, g)) return g;
  return group_scale(f, amax, nonfinite, amax_t, s_t);
}

detail::GroupStats parallel_stats(const float* in, std::int64_t n, int threads) {
  std::vector<detail::GroupStats> partial(std::size_t(std::max(threads, 1)));
  std::atomic<int> slot{0};
  parallel_ranges(n, threads, 1, [&](std::int64_t b, std::int64_t e) {
    detail::GroupStats& st = partial[std::size_t(slot++)];
    span_stats(in + b, std::size_t(e - b), &st.amax, &st.nonfinite);
  });
  detail::GroupStats total;
  for (const auto& p : partial) {
    total.amax = std::max(total.amax, p.amax);
    total.nonfinite = total.nonfinite || p.nonfinite;
  }
  return total;
}

namespace {
std::size_t last_level_cache_bytes() {
  long size = 0;
#ifdef _SC_LEVEL3_CACHE_SIZE
  size = sysconf(_SC_LEVEL3_CACHE_SIZE);
#endif
  return size > 0 ? std::size_t(size) : std::size_t{32} << 20;  // unknown: a server's L3
}
std::atomic<std::size_t> streaming_min_bytes{last_level_cache_bytes()};
}  // namespace

void set_streaming_threshold(std::size_t bytes) { streaming_min_bytes = bytes; }
std::size_t streaming_threshold() { return streaming_min_bytes; }
bool stream_stores_pay(std::size_t bytes) { return bytes >= streaming_min_bytes.load(std::memory_order_relaxed); }

bool span_kernel_supports(const ElementFormat& e) {
  if (!e.is_signed) return false;
  if (e.kind == ElementKind::integer) return e.integer_bits <= 16 && e.fraction_bits <= 24;
  if (e.kind != ElementKind::minifloat) return false;
  // Grid steps must be normal binary32 values, r = |v| / ulp < 2^22 (r and its fraction exact), and
  // 2 * max must be finite.
  return e.mantissa_bits <= 20 && e.min_exponent() - e.mantissa_bits >= -126 && e.max_exponent() <= 125;
}

SpanParams span_params(const ElementFormat& e, const CastOptions& o) {
  SpanParams p;
  p.integer = e.kind == ElementKind::integer;
  p.mantissa_bits = e.mantissa_bits;
  p.min_exponent = e.min_exponent();
  p.max_value = float(e.max_value());
  p.rounding = o.rounding;
  p.seed = o.seed;
  p.fnuz = e.kind == ElementKind::minifloat && e.specials == Specials::fnuz;
  const bool saturate = o.saturate.value_or(e.saturates_by_default());
  if (p.integer) {
    p.int_up = std::ldexp(1.0f, e.fraction_bits);
    p.int_down = std::ldexp(1.0f, -e.fraction_bits);
    p.int_max = float(e.integer_max());
  }
  const float special = e.specials == Specials::ieee ? INFINITY : NAN;
  const bool clamps = saturate || e.specials == Specials::none;
  p.inf_value = clamps ? p.max_value : special;
  p.overflow_value = clamps || o.rounding == Rounding::toward_zero ? p.max_value : special;
  return p;
}

BlockParams block_params(const Format& f, const CastOptions& o, float amax_t, float s_t) {
  BlockParams p;
  p.format = &f;
  p.element = span_params(f.element, o);
  p.amax_t = amax_t;
  p.s_t = s_t;
  if (f.scale.kind == ElementKind::exponent) {
    if (f.rule == ScaleRule::floor) p.scale_path = BlockParams::ScalePath::pow2_floor;
  } else if (f.scale == elements::fp32) {
    p.scale_path = BlockParams::ScalePath::fp32;
  } else if (f.scale.kind == ElementKind::minifloat) {
    // The scale grid as a signed format: for the non-negative d of a scale the values agree.
    ElementFormat signed_scale = f.scale;
    signed_scale.is_signed = true;
    if (span_kernel_supports(signed_scale)) {
      p.scale_path = BlockParams::ScalePath::minifloat;
      p.scale = span_params(signed_scale, detail::scale_cast_options());
    }
  }
  return p;
}

void cast(const float* in, float* out, const Shape& given_shape, const Format& given_format, const CastOptions& o,
          int threads) {
  detail::check_format(given_format, o);
  const CanonicalLayout canonical = canonical_layout(given_shape, given_format);
  const Shape& shape = canonical.shape;
  const Format& f = canonical.format;
  threads = resolve_threads(threads);
  const detail::GroupLayout layout(shape, f);
  const std::int64_t n = layout.elements();
  const bool simd_ok = span_kernel_supports(f.element);
  SpanParams params = span_params(f.element, o);
  params.stream_stores = stream_stores_pay(std::size_t(n) * sizeof(float));
  const SpanParams* simd = simd_ok ? &params : nullptr;

  if (!f.is_scaled()) {
    parallel_ranges(n, threads, 1, [&](std::int64_t b, std::int64_t e) {
      if (simd) {
        quantize_span(params, SpanScale::none, 1.0f, 1.0f, in + b, out + b, std::size_t(e - b), std::uint64_t(b));
      } else {
        for (std::int64_t i = b; i < e; ++i) out[i] = quantize_element(f.element, in[i], o, std::uint64_t(i));
      }
    });
    return;
  }
  const float amax_t = detail::tensor_amax_of(f, o, [&] { return parallel_stats(in, n, threads).amax; });
  const float s_t = f.tensor_scale ? tensor_scale_of(f, amax_t) : 1.0f;
  if (divisor_may_vanish(f, amax_t, s_t)) return qcast::cast(in, out, given_shape, given_format, o);
  const std::int64_t groups = layout.groups();
  if (groups == 1) {  // one scale: reduce in parallel, then quantize element ranges in parallel
    const detail::Group whole = layout.group(0);
    const detail::GroupStats st = parallel_stats(in, n, threads);
    const GroupScale g = group_scale(f, st.amax, st.nonfinite, amax_t, s_t);
    parallel_ranges(n, threads, 1, [&](std::int64_t b, std::int64_t e) {
      detail::Group part = whole;
      if (whole.runs == 1 && whole.stride == 1) {
        part.base = b;
        part.count = e - b;
      } else if (b != 0) {
        return;  // a strided single group (a channel of a 1-channel tensor) runs on one thread
      }
      cast_group(in, out, part, f, g, o, s_t, simd);
    });
    return;
  }
  if (simd && f.granularity == Granularity::block && !shape.empty()) {
    const int rank = int(shape.size());
    const int axis = f.axis < 0 ? f.axis + rank : f.axis;
    if (axis == rank - 1 && n > 0) {  // blocks run along contiguous lines
      const std::int64_t len = shape.back();
      const std::int64_t lines = n / len;
      BlockParams bp = block_params(f, o, amax_t, s_t);
      bp.element.stream_stores = params.stream_stores;
      parallel_ranges(lines, threads, len, [&](std::int64_t b, std::int64_t e) {
        for (std::int64_t line = b; line < e; ++line)
          quantize_blocks(bp, in + line * len, out + line * len, std::size_t(len), std::uint64_t(line * len));
      });
      return;
    }
  }
  if (simd && cast_column_groups(in, out, shape, f, params, amax_t, s_t, threads)) return;
  const std::int64_t per_group = std::max<std::int64_t>(1, n / std::max<std::int64_t>(groups, 1));
  parallel_ranges(groups, threads, per_group, [&](std::int64_t b, std::int64_t e) {
    for (std::int64_t gi = b; gi < e; ++gi) {
      const detail::Group grp = layout.group(gi);
      if (grp.stride == 1) {  // contiguous runs
        cast_group(in, out, grp, f, contiguous_group_scale(in, grp, f, amax_t, s_t), o, s_t, simd);
        continue;
      }
      const detail::GroupStats st = detail::group_stats(in, grp);
      cast_group(in, out, grp, f, group_scale(f, st.amax, st.nonfinite, amax_t, s_t), o, s_t, simd);
    }
  });
}

float finite_amax(const float* in, std::int64_t n, int threads) {
  if (n < 0) throw std::invalid_argument("finite_amax: n = " + std::to_string(n) + " is negative");
  return parallel_stats(in, n, resolve_threads(threads)).amax;
}

namespace {
std::int64_t forced_target = 0;  // 0: the best target of this CPU
}

std::vector<std::string> available_targets() {
  hwy::SetSupportedTargetsForTest(0);  // list every target, not the one forced now
  std::vector<std::string> names;
  for (std::int64_t t : hwy::SupportedAndGeneratedTargets()) names.push_back(hwy::TargetName(t));
  hwy::SetSupportedTargetsForTest(forced_target);
  return names;
}

void use_target(const std::string& name) {
  std::int64_t chosen = 0;
  std::string valid;
  hwy::SetSupportedTargetsForTest(0);
  for (std::int64_t t : hwy::SupportedAndGeneratedTargets()) {
    if (name == hwy::TargetName(t)) chosen = t;
    valid += std::string(valid.empty() ? "" : ", ") + hwy::TargetName(t);
  }
  if (!name.empty() && chosen == 0) {
    hwy::SetSupportedTargetsForTest(forced_target);
    throw std::invalid_argument("instruction set '" + name + "' is not available here (valid: " + valid + ")");
  }
  forced_target = chosen;
  hwy::SetSupportedTargetsForTest(forced_target);
}

std::string current_target() {
  const auto targets = hwy::SupportedAndGeneratedTargets();
  return targets.empty() ? "none" : hwy::TargetName(targets.front());
}

}  // namespace qcast::kernels
