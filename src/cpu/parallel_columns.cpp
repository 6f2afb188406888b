// kernels::cast of groups strided across rows: blocks along a non-last axis (e.g. int4@g128:axis=0 of
// a [K, N] weight) and channels along the last axis. Element by element, one group after the other,
// these ran at 0.1-0.3 GB/s against 10+ for blocks along rows. Here the tensor is seen as bands of
// rows: a band is the rows of one block (or, for channels, all rows), and column k of a band is one
// group. Each band is processed a chunk of columns at a time: a pass over its rows takes every
// column's amax at once (an elementwise integer max, as BlockAmax reads one amax), the scales follow
// per column, and a second pass quantizes each row with a scale per element (quantize_columns).
// Rows are contiguous runs of flat indices, so stochastic rounding draws the reference's numbers;
// the chunk stays in cache between the two passes for blocks. bfloat16 / float16 tensors run the
// same loop on rows widened into a per-thread tile and narrowed back.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "column_layout.hpp"
#include "column_scales.hpp"
#include "parallel_ranges.hpp"
#include "span_kernel.hpp"

namespace qcast::kernels {

ColumnChunkScales::ColumnChunkScales(std::int64_t columns)
    : scale(std::size_t(columns)), divisor(scale.size()), inverse(scale.size()), code(scale.size()) {}

void ColumnChunkScales::set(const Format& f, const std::int32_t* amax_bits, std::int64_t m, float amax_t,
                            float s_t) {
  exact_inverse = true;
  special.clear();
  special_kind.clear();
  // A binary32 scale (int8@channel) is d = amax / max itself and its code d's bits, wherever d is
  // finite and positive: group_scale's encode and decode of d are the identity there.
  const bool fp32_scale = f.scale == elements::fp32;
  const float max_elem = float(f.element.max_value());
  for (std::int64_t k = 0; k < m; ++k) {
    const std::size_t j = std::size_t(k);
    const bool nonfinite = amax_bits[j] >= 0x7F800000;
    float amax;
    std::memcpy(&amax, &amax_bits[j], 4);
    GroupScale g;
    float d = 0.0f;
    if (fp32_scale && !nonfinite && amax > 0.0f && (!f.tensor_scale || amax_t != 0.0f))
      d = f.tensor_scale ? (amax / max_elem) / s_t : amax / max_elem;
    if (d > 0.0f && d <= 3.4028235e38f) {
      g.value = d;
      std::memcpy(&g.code, &d, 4);
    } else if (nonfinite || !floor_scale_from_bits(f, amax, g)) {
      g = group_scale(f, amax, nonfinite, amax_t, s_t);
    }
    code[j] = g.code;
    float s = 1.0f;
    if (g.kind == GroupScale::Kind::finite) {
      s = g.value;
    } else {
      special.push_back(k);
      special_kind.push_back(g.kind);
    }
    scale[j] = s;
    divisor[j] = f.tensor_scale ? s * s_t : s;
    inverse[j] = 1.0f / divisor[j];
    exact_inverse = exact_inverse && reciprocal_is_exact(divisor[j]);
  }
}

namespace {

// Where the band loop reads a row chunk as binary32 and writes its cast: read(at, m) points to
// elements [at, at + m), target(at) to where their results go, commit(at, m) stores them.
// FloatRows: the float32 tensors themselves (in may equal out). Rows16: a bfloat16 / float16 tensor,
// the row widened (exactly) into a per-thread tile, cast there in place and narrowed back.
struct FloatRows {
  const float* in;
  float* out;
  std::vector<float> saved;  // a row's inputs in the special columns, kept before it is cast (in == out)
  const float* read(std::int64_t at, std::int64_t) { return in + at; }
  float* target(std::int64_t at) { return out + at; }
  void commit(std::int64_t, std::int64_t) {}
};

struct Rows16 {
  DType t;
  const std::uint16_t* in;
  std::uint16_t* out;
  std::vector<float> tile;
  std::vector<float> saved;
  const float* read(std::int64_t at, std::int64_t m) {
    widen_span(t, in + at, tile.data(), std::size_t(m));
    return tile.data();
  }
  float* target(std::int64_t) { return tile.data(); }  // the row just read, cast in place
  void commit(std::int64_t at, std::int64_t m) { narrow_span(t, tile.data(), out + at, std::size_t(m)); }
};

// The band loop with a thread's Rows from make_rows(w): each row of a chunk cast with a scale per
// column, then the special columns patched as detail::cast_group writes them.
template <class MakeRows>
void cast_bands(const ColumnLayout& layout, const Format& f, const SpanParams& params, float amax_t, float s_t,
                int threads, MakeRows&& make_rows) {
  for_each_column_chunk(layout, f, amax_t, s_t, threads, make_rows,
                        [&](auto& rows, const Band& band, std::int64_t k0, std::int64_t m,
                            const ColumnChunkScales& scales) {
    const std::vector<std::int64_t>& special = scales.special;
    rows.saved.resize(special.size());
    const ColumnScales cs = scales.view(f.tensor_scale, s_t);
    for (std::int64_t r = 0; r < band.rows; ++r) {
      const std::int64_t at = band.base + r * layout.width + k0;
      const float* const x = rows.read(at, m);
      for (std::size_t j = 0; j < special.size(); ++j) rows.saved[j] = x[special[j]];
      float* const y = rows.target(at);
      quantize_columns(params, cs, x, y, std::size_t(m), std::uint64_t(at));
      for (std::size_t j = 0; j < special.size(); ++j)
        y[special[j]] = non_finite_group_value(scales.special_kind[j], rows.saved[j]);
      rows.commit(at, m);
    }
  });
}

}  // namespace

bool cast_column_groups(const float* in, float* out, const Shape& shape, const Format& f, const SpanParams& params,
                        float amax_t, float s_t, int threads) {
  const ColumnLayout layout(shape, f);
  if (layout.bands == 0) return false;
  cast_bands(layout, f, params, amax_t, s_t, threads, [&](std::int64_t) { return FloatRows{in, out, {}}; });
  return true;
}

bool cast_column_groups16(DType t, const std::uint16_t* in, std::uint16_t* out, const Shape& shape, const Format& f,
                          const SpanParams& params, float amax_t, float s_t, int threads) {
  const ColumnLayout layout(shape, f);
  if (layout.bands == 0) return false;
  cast_bands(layout, f, params, amax_t, s_t, threads, [&](std::int64_t w) {
    return Rows16{t, in, out, std::vector<float>(static_cast<std::size_t>(w)), {}};
  });
  return true;
}

}  // namespace qcast::kernels
