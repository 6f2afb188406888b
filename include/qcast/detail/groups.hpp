// Which elements of a row-major tensor share a scale. A group is a strided set of flat indices:
// base + r * run_stride + j * stride for r < runs, j < count.
#pragma once
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "qcast/format.hpp"
#include "qcast/sizes.hpp"

namespace qcast::detail {

struct Group {
  std::int64_t base = 0, runs = 1, run_stride = 0, count = 0, stride = 1;

  template <class Fn>
  void for_each(Fn&& fn) const {
    for (std::int64_t r = 0; r < runs; ++r) {
      std::int64_t i = base + r * run_stride;
      for (std::int64_t j = 0; j < count; ++j, i += stride) fn(i);
    }
  }
};

class GroupLayout {
 public:
  GroupLayout(const std::vector<std::int64_t>& shape, const Format& f) : f_(f) {
    total_ = checked_elements(shape, "");  // bounds every partial product below too
    if (!f.has_axis()) return;
    const int rank = int(shape.size());
    int axis = f.axis < 0 ? f.axis + rank : f.axis;
    if (rank == 0) axis = 0;  // a scalar is one channel / one block
    else if (axis < 0 || axis >= rank)
      throw std::invalid_argument("axis " + std::to_string(f.axis) + " is out of range for a tensor of rank " +
                                  std::to_string(rank) + " (valid: " + std::to_string(-rank) + ".." +
                                  std::to_string(rank - 1) + ")");
    outer_ = 1;
    for (int i = 0; i < axis; ++i) outer_ *= shape[i];
    len_ = rank == 0 ? 1 : shape[axis];
    inner_ = 1;
    for (int i = axis + 1; i < rank; ++i) inner_ *= shape[i];
    if (f.granularity == Granularity::block) blocks_per_line_ = (len_ + f.block_size - 1) / f.block_size;
  }

  std::int64_t elements() const { return total_; }
  std::int64_t groups() const {
    switch (f_.granularity) {
      case Granularity::tensor: return 1;
      case Granularity::channel: return len_;
      case Granularity::block: return outer_ * blocks_per_line_ * inner_;
      default: return 0;
    }
  }
  // Groups are numbered in row-major order of (outer, block, inner) or by channel index.
  Group group(std::int64_t g) const {
    Group r;
    switch (f_.granularity) {
      case Granularity::tensor: r.count = total_; break;
      case Granularity::channel:
        r.runs = outer_;
        r.run_stride = len_ * inner_;
        r.base = g * inner_;
        r.count = inner_;
        break;
      default: {
        const std::int64_t i = g % inner_;
        const std::int64_t b = (g / inner_) % blocks_per_line_;
        const std::int64_t o = g / (inner_ * blocks_per_line_);
        const std::int64_t start = b * f_.block_size;
        r.base = o * len_ * inner_ + start * inner_ + i;
        r.count = len_ - start < f_.block_size ? len_ - start : f_.block_size;
        r.stride = inner_;
      }
    }
    return r;
  }

 private:
  Format f_;
  std::int64_t total_ = 1, outer_ = 1, len_ = 1, inner_ = 1, blocks_per_line_ = 1;
};

}  // namespace qcast::detail
