// Test inputs shared by the kernel tests: rows of normal samples, each row at its own power-of-two
// magnitude (2^-30 .. 2^30), so that blocks and channels see very different scales. Each test adds
// its own special values on top.
#pragma once
#include <cmath>
#include <cstddef>
#include <random>
#include <vector>

namespace qcast_test {

inline std::vector<float> scaled_normal_rows(int rows, int cols, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  std::uniform_int_distribution<int> expo(-30, 30);
  std::vector<float> x(std::size_t(rows) * std::size_t(cols));
  for (int r = 0; r < rows; ++r) {
    const float mag = std::ldexp(1.0f, expo(rng));
    for (int c = 0; c < cols; ++c) x[std::size_t(r) * cols + c] = normal(rng) * mag;
  }
  return x;
}

}  // namespace qcast_test
