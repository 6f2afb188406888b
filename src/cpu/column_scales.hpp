// The scales of a chunk of column groups (column_layout.hpp), shared by their cast
// (parallel_columns.cpp) and their encode (parallel_codec.cpp): from each column's amax, read as
// magnitude bits by column_max_bits, the group scale and its code (group_scale, exactly), the
// divisor of scaled_input and, where every divisor is a power of two, its exact reciprocal.
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "column_layout.hpp"
#include "parallel_ranges.hpp"
#include "qcast/format.hpp"
#include "qcast/scaling.hpp"
#include "span_kernel.hpp"

namespace qcast::kernels {

struct ColumnChunkScales {
  std::vector<float> scale, divisor, inverse;  // per column; 1 for the columns listed in `special`
  std::vector<std::uint32_t> code;             // the scale code of each column
  bool exact_inverse = true;                   // every divisor's reciprocal is exact: multiply
  // Columns whose scale is not finite (NaN, zero, passthrough): the kernels run them with scale 1
  // and the caller then writes what detail::cast_group (qcast::encode) makes of them.
  std::vector<std::int64_t> special;
  std::vector<GroupScale::Kind> special_kind;

  explicit ColumnChunkScales(std::int64_t columns);
  // Columns [0, m) from their amax bits (>= 0x7F800000: the column holds a NaN or Inf); amax_t and
  // s_t as for group_scale.
  void set(const Format& f, const std::int32_t* amax_bits, std::int64_t m, float amax_t, float s_t);
  // The kernels' view (quantize_columns, encode_columns).
  ColumnScales view(bool two_level, float s_t) const {
    return ColumnScales{scale.data(), divisor.data(), exact_inverse ? inverse.data() : nullptr, two_level, s_t};
  }
};

// The band loop of column groups, shared by cast and encode: each band a chunk of columns at a time,
// chunks split over threads. For blocks, a chunk of the band's rows (up to 128 KiB) stays in L2
// between the statistics pass and the caller's pass; one band of channels spans every row, so its
// columns are split among the threads instead. make_state(w) gives each thread its state, whose
// read(at, m) returns the elements [at, at + m) of a row as binary32 (valid until the next read);
// after one pass over the chunk's rows takes every column's amax, body(state, band, k0, m, scales)
// processes columns [k0, k0 + m) of the band with their scales.
template <class MakeState, class Body>
void for_each_column_chunk(const ColumnLayout& layout, const Format& f, float amax_t, float s_t, int threads,
                           MakeState&& make_state, Body&& body) {
  const std::int64_t w = layout.chunk_columns(threads, 32768);
  const std::int64_t chunks = (layout.width + w - 1) / w;
  parallel_ranges(layout.bands * chunks, threads, layout.max_rows * w, [&](std::int64_t tb, std::int64_t te) {
    auto state = make_state(w);
    std::vector<std::int32_t> amax_bits(static_cast<std::size_t>(w));
    ColumnChunkScales scales(w);
    for (std::int64_t t = tb; t < te; ++t) {
      const Band band = layout.band(t / chunks);
      const std::int64_t k0 = (t % chunks) * w, m = std::min(w, layout.width - k0);
      std::fill(amax_bits.begin(), amax_bits.begin() + m, 0);
      for (std::int64_t r = 0; r < band.rows; ++r)
        column_max_bits(state.read(band.base + r * layout.width + k0, m), amax_bits.data(), std::size_t(m));
      scales.set(f, amax_bits.data(), m, amax_t, s_t);
      body(state, band, k0, m, static_cast<const ColumnChunkScales&>(scales));
    }
  });
}

}  // namespace qcast::kernels
