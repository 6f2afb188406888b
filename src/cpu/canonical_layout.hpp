// The shape and format that the compiled drivers dispatch on. A format with an axis (channels,
// blocks) groups a tensor by three numbers only: the elements before the axis (outer), along it
// (len) and after it (inner), as detail::GroupLayout computes them. Dimensions of size 1 change
// none of the three, nor the flat index of any element, nor the order of the groups, but they do
// change which driver path a shape takes: [N, C, 1, 1] with channels along axis 1 is the 2-D
// column-group case [N, C], yet as written its channels are N runs of one element each, which the
// run path takes one kernel call per element. So the drivers see [outer, len, inner] with the parts
// of size 1 dropped and the axis renumbered; results (and encoded shapes and formats) are those of
// the shape as given.
#pragma once
#include <cstdint>

#include "qcast/cast.hpp"
#include "qcast/format.hpp"
#include "qcast/sizes.hpp"

namespace qcast::kernels {

struct CanonicalLayout {
  Shape shape;
  Format format;
};

// Shapes the drivers take as they are: formats without an axis, scalars, empty tensors, and invalid
// input (a negative dimension or an axis out of range), which the drivers report in the shape's own
// terms.
inline CanonicalLayout canonical_layout(const Shape& shape, const Format& f) {
  checked_elements(shape, "");  // the kernels' entry point: no product below can overflow
  CanonicalLayout c{shape, f};
  const int rank = int(shape.size());
  if (!f.has_axis() || rank == 0) return c;
  const int axis = f.axis < 0 ? f.axis + rank : f.axis;
  if (axis < 0 || axis >= rank) return c;
  std::int64_t outer = 1, inner = 1;
  for (int i = 0; i < rank; ++i) {
    if (shape[std::size_t(i)] <= 0) return c;  // empty or invalid
    if (i < axis) outer *= shape[std::size_t(i)];
    if (i > axis) inner *= shape[std::size_t(i)];
  }
  c.shape.clear();
  if (outer > 1) c.shape.push_back(outer);
  c.format.axis = int(c.shape.size());
  c.shape.push_back(shape[std::size_t(axis)]);
  if (inner > 1) c.shape.push_back(inner);
  return c;
}

}  // namespace qcast::kernels
