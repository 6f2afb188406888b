// The order in which a grid-stride loop visits its waves, reversible. Compiles as host C++ too
// (device_or_host.hpp), for tests/cuda/device_math_test.cpp.
#pragma once
#include <cstdint>

#include "device_or_host.hpp"

namespace qcast::cuda_detail {

// A loop over items [0, count) in which a unit (thread or warp) that starts at `first` takes
// first, first + stride, ... while inside [0, count): for (o = begin(); inside(o); o += step()).
// Reversed, it takes the same items from the last back to first. A pass that follows a full read
// of the same tensor (the fused block kernels after the tensor statistics of a two-level format)
// runs reversed: the end of the tensor, read last by the statistics, is then still in the L2 cache
// when it is read again. docs/design/0004-cuda-kernels.md, "Two passes for two-level formats".
struct GridStride {
  std::int64_t first, stride, count;
  bool reversed;
  QCAST_DEVICE QCAST_FORCEINLINE std::int64_t begin() const {
    return reversed && first < count ? first + (count - 1 - first) / stride * stride : first;
  }
  QCAST_DEVICE QCAST_FORCEINLINE std::int64_t step() const { return reversed ? -stride : stride; }
  QCAST_DEVICE QCAST_FORCEINLINE bool inside(std::int64_t o) const { return o >= first && o < count; }
};

}  // namespace qcast::cuda_detail
