// Test inputs shared by the kernel tests: rows of normal samples, each row at its own power-of-two
// magnitude (2^-30 .. 2^30), so that blocks and channels see very different scales. Each test adds
// its own special values on top.
#pragma once
#include <cmath>
#include <cstddef>
#include <limits>
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

// Special rows over a tensor of at least 8 rows of `cols`: a NaN (where with_nan) and ±Inf in rows
// 1-3, alternating ±0 (row 4), subnormals of both signs (5), negative grid ties (6)
// and values beyond every element format's range (7).
inline void add_special_rows(std::vector<float>& x, int cols, bool with_nan) {
  if (with_nan) x[std::size_t(cols) + 3] = std::numeric_limits<float>::quiet_NaN();
  x[std::size_t(cols) * 2 + 9] = INFINITY;
  x[std::size_t(cols) * 3 + 4] = -INFINITY;
  for (int c = 0; c < cols; ++c) x[std::size_t(4) * cols + c] = (c % 2) ? -0.0f : 0.0f;
  for (int c = 0; c < cols; ++c) x[std::size_t(5) * cols + c] = std::ldexp(float(c) - cols / 2, -138);
  for (int c = 0; c < cols; ++c) x[std::size_t(6) * cols + c] = -(1.0f + float(c) / 32.0f);  // grid ties
  for (int c = 0; c < cols; ++c) x[std::size_t(7) * cols + c] = float(c) * -3e3f;            // overflow
}

}  // namespace qcast_test
