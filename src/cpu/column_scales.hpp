// The scales of a chunk of column groups (column_layout.hpp), shared by their cast
// (parallel_columns.cpp) and their encode (parallel_codec.cpp): from each column's amax, read as
// magnitude bits by column_max_bits, the group scale and its code (group_scale, exactly), the
// divisor of scaled_input and, where every divisor is a power of two, its exact reciprocal.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

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

}  // namespace qcast::kernels
