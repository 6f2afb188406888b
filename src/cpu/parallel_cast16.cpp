// kernels::cast of bfloat16 and float16 tensors. Each thread widens a tile of the tensor into
// binary32 in a buffer of its own (in L1/L2), casts it there with the binary32 kernels and narrows it
// back, so the tensor crosses memory once each way; a whole-tensor binary32 copy (widen, cast,
// narrow) moved five times the bytes and ran 8-10x slower. Tiles lie within one group: value casts,
// one scale for the tensor (from a statistics pass over the 16-bit input), blocks along the last
// axis, and groups of contiguous runs (channels along the first or a middle axis), each group's
// statistics from a pass over its runs. Groups strided across rows (blocks along a non-last axis,
// channels along the last) go by column bands a row at a time (parallel_columns.cpp); element
// formats without a SIMD kernel take the whole-tensor path. Widening is exact and the cast of a
// tile is that of its elements in the tensor (the same scales, the same flat indices for the
// stochastic draws), so the results are those of the binary32 cast of the widened tensor, narrowed.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "canonical_layout.hpp"
#include "column_layout.hpp"
#include "parallel_ranges.hpp"
#include "qcast/kernels.hpp"
#include "span_kernel.hpp"

namespace qcast::kernels {
namespace {

// Elements per tile: 16 KiB of binary32, a multiple of every block size that divides 4096.
constexpr std::int64_t kTile = 4096;

// Runs cast_tile(tile, count, first) on tiles [first, first + count) of [begin, end), the tile's
// binary32 values in `tile` and its results written back from there.
template <class CastTile>
void tiles(DType t, const std::uint16_t* in, std::uint16_t* out, std::int64_t begin, std::int64_t end,
           std::int64_t tile_len, float* tile, CastTile&& cast_tile) {
  for (std::int64_t c = begin; c < end; c += tile_len) {
    const std::int64_t m = std::min(tile_len, end - c);
    widen_span(t, in + c, tile, std::size_t(m));
    cast_tile(tile, std::size_t(m), std::uint64_t(c));
    narrow_span(t, tile, out + c, std::size_t(m));
  }
}

// A tile of one group, cast with the group's scale as detail::cast_group does.
void cast_tile_of_group(float* x, std::size_t m, std::uint64_t first, const SpanParams& params, SpanScale mode,
                        const GroupScale& g, float s_t) {
  if (g.kind == GroupScale::Kind::finite) {
    quantize_span(params, mode, g.value, s_t, x, x, m, first);
  } else {
    for (std::size_t i = 0; i < m; ++i) x[i] = non_finite_group_value(g.kind, x[i]);
  }
}

// The tiled cast where the layout allows it; false where the caller must take the whole-tensor path.
bool cast_tiled(DType t, const std::uint16_t* in, std::uint16_t* out, const Shape& shape, const Format& f,
                const CastOptions& o, int threads) {
  if (!span_kernel_supports(f.element)) return false;
  const detail::GroupLayout layout(shape, f);
  const std::int64_t n = layout.elements();
  if (n == 0) return false;
  const SpanParams params = span_params(f.element, o);  // no streaming stores: tiles stay in cache
  if (!f.is_scaled()) {
    parallel_ranges(n, threads, 1, [&](std::int64_t b, std::int64_t e) {
      std::vector<float> tile(static_cast<std::size_t>(kTile));
      tiles(t, in, out, b, e, kTile, tile.data(), [&](float* x, std::size_t m, std::uint64_t first) {
        quantize_span(params, SpanScale::none, 1.0f, 1.0f, x, x, m, first);
      });
    });
    return true;
  }
  const std::int64_t groups = layout.groups();
  const detail::Group first_group = layout.group(0), last_group = layout.group(groups - 1);
  // Groups of contiguous runs: one run (blocks along the last axis, channels along the first) or one
  // per outer index (channels along a middle axis).
  const bool run_groups = first_group.stride == 1 && last_group.stride == 1;
  const int rank = int(shape.size());
  const bool lines_of_blocks = f.granularity == Granularity::block && rank > 0 &&
                               (f.axis < 0 ? f.axis + rank : f.axis) == rank - 1 && groups > 1;
  // Channels along the last axis are runs of one element: those go by column bands, as do blocks
  // along a non-last axis.
  const bool column_groups = !lines_of_blocks && ColumnLayout(shape, f).bands > 0;
  if (!run_groups && !lines_of_blocks && !column_groups) return false;
  const SpanScale mode = span_scale_mode(f);
  const detail::GroupStats stats = (f.tensor_scale && !o.tensor_amax) || groups == 1
                                       ? parallel_stats16(t, in, n, threads)
                                       : detail::GroupStats{};
  const float amax_t = detail::tensor_amax_of(f, o, [&] { return stats.amax; /* over finite elements */ });
  const float s_t = f.tensor_scale ? tensor_scale_of(f, amax_t) : 1.0f;
  if (groups == 1) {  // one scale from the statistics pass; element ranges in parallel
    const GroupScale g = group_scale(f, stats.amax, stats.nonfinite, amax_t, s_t);
    parallel_ranges(n, threads, 1, [&](std::int64_t b, std::int64_t e) {
      std::vector<float> tile(static_cast<std::size_t>(kTile));
      tiles(t, in, out, b, e, kTile, tile.data(), [&](float* x, std::size_t m, std::uint64_t first) {
        cast_tile_of_group(x, m, first, params, mode, g, s_t);
      });
    });
    return true;
  }
  if (column_groups) return cast_column_groups16(t, in, out, shape, f, params, amax_t, s_t, threads);
  if (lines_of_blocks) {  // tiles of whole blocks along each line (the last may end in a partial block)
    const std::int64_t len = shape.back();
    const std::int64_t tile_len = std::max<std::int64_t>(1, kTile / f.block_size) * f.block_size;
    const BlockParams bp = block_params(f, o, amax_t, s_t);
    parallel_ranges(n / len, threads, len, [&](std::int64_t b, std::int64_t e) {
      std::vector<float> tile(static_cast<std::size_t>(std::min(tile_len, len)));
      for (std::int64_t line = b; line < e; ++line)
        tiles(t, in, out, line * len, (line + 1) * len, tile_len, tile.data(),
              [&](float* x, std::size_t m, std::uint64_t first) { quantize_blocks(bp, x, x, m, first); });
    });
    return true;
  }
  // Groups of contiguous runs (per channel along the first or a middle axis, blocks of a 1-D tensor,
  // ...): each group's statistics by a pass over its runs, then their tiles cast with its scale.
  const std::int64_t per_group = n / groups;
  parallel_ranges(groups, threads, per_group, [&](std::int64_t b, std::int64_t e) {
    std::vector<float> tile(static_cast<std::size_t>(kTile));
    for (std::int64_t gi = b; gi < e; ++gi) {
      const detail::Group grp = layout.group(gi);
      const detail::GroupStats st = widened_group_stats(t, in, grp);
      const GroupScale g = group_scale(f, st.amax, st.nonfinite, amax_t, s_t);
      for (std::int64_t r = 0; r < grp.runs; ++r) {
        const std::int64_t run = grp.base + r * grp.run_stride;
        tiles(t, in, out, run, run + grp.count, kTile, tile.data(), [&](float* x, std::size_t m, std::uint64_t first) {
          cast_tile_of_group(x, m, first, params, mode, g, s_t);
        });
      }
    }
  });
  return true;
}

}  // namespace

detail::GroupStats widened_stats(DType t, const std::uint16_t* in, std::int64_t begin, std::int64_t end) {
  detail::GroupStats st;
  span_stats16(t, in + begin, std::size_t(end - begin), &st.amax, &st.nonfinite);
  return st;
}

detail::GroupStats widened_group_stats(DType t, const std::uint16_t* in, const detail::Group& grp) {
  detail::GroupStats st;
  for (std::int64_t r = 0; r < grp.runs; ++r) {
    const std::int64_t run = grp.base + r * grp.run_stride;
    const detail::GroupStats part = widened_stats(t, in, run, run + grp.count);
    st.amax = std::max(st.amax, part.amax);
    st.nonfinite = st.nonfinite || part.nonfinite;
  }
  return st;
}

detail::GroupStats parallel_stats16(DType t, const std::uint16_t* in, std::int64_t n, int threads) {
  std::vector<detail::GroupStats> partial(std::size_t(std::max(threads, 1)));
  std::atomic<int> slot{0};
  parallel_ranges(n, threads, 1, [&](std::int64_t b, std::int64_t e) {
    partial[std::size_t(slot++)] = widened_stats(t, in, b, e);
  });
  detail::GroupStats total;
  for (const auto& p : partial) {
    total.amax = std::max(total.amax, p.amax);
    total.nonfinite = total.nonfinite || p.nonfinite;
  }
  return total;
}

float finite_amax(const void* in, DType t, std::int64_t n, int threads) {
  if (t == DType::f32) return finite_amax(static_cast<const float*>(in), n, threads);
  if (n < 0) throw std::invalid_argument("finite_amax: n = " + std::to_string(n) + " is negative");
  return parallel_stats16(t, static_cast<const std::uint16_t*>(in), n, resolve_threads(threads)).amax;
}

void cast(const void* in, void* out, DType t, const Shape& shape, const Format& f, const CastOptions& o, int threads) {
  if (t == DType::f32) return cast(static_cast<const float*>(in), static_cast<float*>(out), shape, f, o, threads);
  detail::check_format(f, o);
  threads = resolve_threads(threads);
  const auto* src = static_cast<const std::uint16_t*>(in);
  auto* dst = static_cast<std::uint16_t*>(out);
  const CanonicalLayout canonical = canonical_layout(shape, f);  // the float32 cast below takes it itself
  if (cast_tiled(t, src, dst, canonical.shape, canonical.format, o, threads)) return;
  const std::int64_t n = detail::GroupLayout(shape, f).elements();
  std::vector<float> wide(static_cast<std::size_t>(n));
  parallel_ranges(n, threads, 1, [&](std::int64_t b, std::int64_t e) {
    widen_span(t, src + b, wide.data() + b, std::size_t(e - b));
  });
  cast(wide.data(), wide.data(), shape, f, o, threads);
  parallel_ranges(n, threads, 1, [&](std::int64_t b, std::int64_t e) {
    narrow_span(t, wide.data() + b, dst + b, std::size_t(e - b));
  });
}

}  // namespace qcast::kernels
