// The column-band view of a layout whose groups are strided across rows: blocks along a non-last
// axis (a band is the rows of one block of one outer index) and channels along the last axis of a
// tensor of rank >= 2 (one band: every row). Column k of a band is one group.
#pragma once
#include <algorithm>
#include <cstdint>

#include "qcast/cast.hpp"
#include "qcast/format.hpp"

namespace qcast::kernels {

// Elements of a band: `rows` rows of `width` contiguous elements, one after the other from `base`;
// column k is group group0 + k (detail::GroupLayout's numbering).
struct Band {
  std::int64_t base = 0, rows = 0, group0 = 0;
};

// The band geometry of a layout whose groups are strided across rows, or bands == 0.
struct ColumnLayout {
  std::int64_t bands = 0, width = 0, max_rows = 0;
  std::int64_t outer = 1, len = 1, block = 0, blocks_per_line = 1;
  bool per_channel = false;

  ColumnLayout(const Shape& shape, const Format& f) {
    const int rank = int(shape.size());
    if (rank < 2) return;
    const int axis = f.axis < 0 ? f.axis + rank : f.axis;
    if (axis < 0 || axis >= rank) return;
    std::int64_t inner = 1;
    for (int i = 0; i < axis; ++i) outer *= shape[std::size_t(i)];
    for (int i = axis + 1; i < rank; ++i) inner *= shape[std::size_t(i)];
    len = shape[std::size_t(axis)];
    if (outer * len * inner == 0) return;
    if (f.granularity == Granularity::block && axis < rank - 1) {
      block = f.block_size;
      blocks_per_line = (len + block - 1) / block;
      bands = outer * blocks_per_line;
      width = inner;
      max_rows = std::min(block, len);
    } else if (f.granularity == Granularity::channel && axis == rank - 1 && outer > 1) {
      per_channel = true;
      bands = 1;
      width = len;
      max_rows = outer;
    }
  }

  Band band(std::int64_t i) const {
    if (per_channel) return Band{0, outer, 0};
    const std::int64_t o = i / blocks_per_line, b = i % blocks_per_line;
    return Band{(o * len + b * block) * width, std::min(block, len - b * block), i * width};
  }

  // Columns per chunk of a band, a multiple of 16 (or the whole width): for blocks, few enough that
  // a chunk of the band's rows (up to `cache_elements`) stays in cache between passes; one band of
  // channels spans every row, so its columns are split among the threads instead.
  std::int64_t chunk_columns(int threads, std::int64_t cache_elements) const {
    std::int64_t w = width;
    if (per_channel) w = (width + threads - 1) / threads;
    else if (max_rows * width > cache_elements) w = cache_elements / max_rows;
    return std::min(width, std::max<std::int64_t>(16, (w + 15) / 16 * 16));
  }
};


}  // namespace qcast::kernels
