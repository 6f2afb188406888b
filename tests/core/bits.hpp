// Comparison helpers for bit-exact tests.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
#include <sstream>
#include <string>

namespace qcast_test {

inline std::uint32_t bits(float x) {
  std::uint32_t u;
  std::memcpy(&u, &x, 4);
  return u;
}
inline float from_bits(std::uint32_t u) {
  float x;
  std::memcpy(&x, &u, 4);
  return x;
}
// Bit-identical, or both NaN (every NaN qcast produces is the canonical one; checked separately).
inline bool same(float a, float b) { return (std::isnan(a) && std::isnan(b)) || bits(a) == bits(b); }

inline std::string describe(float in, float got, float want) {
  std::ostringstream s;
  s.precision(9);
  s << "input " << in << " (0x" << std::hex << bits(in) << ") -> got " << std::dec << got << " (0x" << std::hex
    << bits(got) << "), want " << std::dec << want << " (0x" << std::hex << bits(want) << ")";
  return s.str();
}

}  // namespace qcast_test
