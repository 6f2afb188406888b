// Bit-level access to IEEE binary32 values, shared by the codecs.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

namespace qcast::detail {

inline std::uint32_t bits_of(float x) noexcept {
  std::uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  return u;
}

inline float float_of(std::uint32_t u) noexcept {
  float x;
  std::memcpy(&x, &u, sizeof x);
  return x;
}

// The canonical NaN every qcast operation produces (positive quiet NaN, 0x7FC00000).
inline float canonical_nan() noexcept { return float_of(0x7FC00000u); }

// floor(log2(a)) for a finite a > 0, exact, subnormals included.
inline int floor_log2(double a) noexcept {
  int e;
  std::frexp(a, &e);  // a = f * 2^e with f in [0.5, 1)
  return e - 1;
}

}  // namespace qcast::detail
