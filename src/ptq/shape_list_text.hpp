// A shape as the engine's messages, the report's table and `quantize --list` write it: "[4, 5, 8, 8]"
// (PyTorch's spelling; qcast::shape_text of qcast/sizes.hpp writes NumPy's "(4, 5, 8, 8)").
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace qcast::ptq::detail {

inline std::string shape_list_text(const std::vector<std::int64_t>& shape) {
  std::string r = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) r += (i ? ", " : "") + std::to_string(shape[i]);
  return r + "]";
}

}  // namespace qcast::ptq::detail
