// kernels::cast of groups strided across rows: blocks along a non-last axis (e.g. int4@g128:axis=0 of
// a [K, N] weight) and channels along the last axis. Element by element, one group after the other,
// these ran at 0.1-0.3 GB/s against 10+ for blocks along rows. Here the tensor is seen as bands of
// rows: a band is the rows of one block (or, for channels, all rows), and column k of a band is one
// group. Each band is processed a chunk of columns at a time: a pass over its rows takes every
// column's amax at once (an elementwise integer max, as BlockAmax reads one amax), the scales follow
// per column, and a second pass quantizes each row with a scale per element (quantize_columns).
// Rows are contiguous runs of flat indices, so stochastic rounding draws the reference's numbers;
// the chunk stays in cache between the two passes for blocks.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "column_layout.hpp"
#include "parallel_ranges.hpp"
#include "span_kernel.hpp"

namespace qcast::kernels {
namespace {

// Whether x * (1 / d) equals x / d for every x: d and 1 / d both normal powers of two (ScaleInput's
// test).
bool inverse_is_exact(float d) {
  const float inv = 1.0f / d;
  std::uint32_t db, ib;
  std::memcpy(&db, &d, 4);
  std::memcpy(&ib, &inv, 4);
  return (db & 0x7F800000u) && (db & 0x7FFFFFu) == 0 && (ib & 0x7F800000u) && (ib & 0x7FFFFFu) == 0 &&
         (ib & 0x7F800000u) != 0x7F800000u;
}

}  // namespace

bool cast_column_groups(const float* in, float* out, const Shape& shape, const Format& f, const SpanParams& params,
                        float amax_t, float s_t, int threads) {
  const ColumnLayout layout(shape, f);
  if (layout.bands == 0) return false;
  // Columns per chunk: for blocks, a chunk of the band's rows (up to 128 KiB) stays in L2 between
  // the statistics pass and the quantizing pass; one band of channels spans every row, so its
  // columns are split among the threads instead.
  const std::int64_t w = layout.chunk_columns(threads, 32768);
  const std::int64_t chunks = (layout.width + w - 1) / w;
  const bool two_level = f.tensor_scale;
  parallel_ranges(layout.bands * chunks, threads, layout.max_rows * w, [&](std::int64_t tb, std::int64_t te) {
    std::vector<std::int32_t> amax_bits(static_cast<std::size_t>(w));
    std::vector<float> scale(static_cast<std::size_t>(w)), divisor(scale.size()), inverse(scale.size());
    std::vector<std::int64_t> special;  // columns whose scale is not finite: NaN, zero, passthrough
    std::vector<GroupScale> special_scale;
    std::vector<float> saved;           // their inputs, kept before the rows are overwritten (in == out)
    for (std::int64_t t = tb; t < te; ++t) {
      const Band band = layout.band(t / chunks);
      const std::int64_t k0 = (t % chunks) * w, m = std::min(w, layout.width - k0);
      auto row = [&](std::int64_t r) { return band.base + r * layout.width + k0; };
      std::fill(amax_bits.begin(), amax_bits.begin() + m, 0);
      for (std::int64_t r = 0; r < band.rows; ++r) column_max_bits(in + row(r), amax_bits.data(), std::size_t(m));
      bool exact_inverse = true;
      special.clear();
      special_scale.clear();
      for (std::int64_t k = 0; k < m; ++k) {
        const bool nonfinite = amax_bits[std::size_t(k)] >= 0x7F800000;
        float amax;
        std::memcpy(&amax, &amax_bits[std::size_t(k)], 4);
        GroupScale g;
        if (nonfinite || !floor_scale_from_bits(f, amax, g)) g = group_scale(f, amax, nonfinite, amax_t, s_t);
        float s = 1.0f;
        if (g.kind == GroupScale::Kind::finite) {
          s = g.value;
        } else {
          special.push_back(k);
          special_scale.push_back(g);
        }
        scale[std::size_t(k)] = s;
        divisor[std::size_t(k)] = two_level ? s * s_t : s;
        inverse[std::size_t(k)] = 1.0f / divisor[std::size_t(k)];
        exact_inverse = exact_inverse && inverse_is_exact(divisor[std::size_t(k)]);
      }
      const std::size_t ns = special.size();
      saved.resize(ns * std::size_t(band.rows));
      for (std::int64_t r = 0; r < band.rows; ++r)
        for (std::size_t j = 0; j < ns; ++j) saved[std::size_t(r) * ns + j] = in[row(r) + special[j]];
      const ColumnScales cs{scale.data(), divisor.data(), exact_inverse ? inverse.data() : nullptr, two_level, s_t};
      for (std::int64_t r = 0; r < band.rows; ++r)
        quantize_columns(params, cs, in + row(r), out + row(r), std::size_t(m), std::uint64_t(row(r)));
      for (std::int64_t r = 0; r < band.rows; ++r)  // detail::cast_group for the non-finite kinds
        for (std::size_t j = 0; j < ns; ++j) {
          const float x = saved[std::size_t(r) * ns + j];
          float& y = out[row(r) + special[j]];
          switch (special_scale[j].kind) {
            case GroupScale::Kind::nan: y = detail::canonical_nan(); break;
            case GroupScale::Kind::zero: y = std::copysign(0.0f, x); break;
            default: y = x;  // passthrough
          }
        }
    }
  });
  return true;
}

}  // namespace qcast::kernels
