// The rounding and overflow options every kernel test sweeps: the default, the other three
// rounding modes (stochastic with a fixed seed), non-saturating, and truncation without saturation.
#pragma once
#include <vector>

#include "qcast/rounding.hpp"

namespace qcast_test {

inline std::vector<qcast::CastOptions> rounding_and_overflow_options() {
  std::vector<qcast::CastOptions> o(6);
  o[1].rounding = qcast::Rounding::nearest_away;
  o[2].rounding = qcast::Rounding::toward_zero;
  o[3].rounding = qcast::Rounding::stochastic;
  o[3].seed = 0x123456789ABCull;
  o[4].saturate = false;
  o[5].rounding = qcast::Rounding::toward_zero;
  o[5].saturate = false;
  return o;
}

}  // namespace qcast_test
