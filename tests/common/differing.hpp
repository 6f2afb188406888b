// The number of elements of two vectors whose bytes differ (NaN payloads and signs of zero count);
// a size mismatch counts as every element.
#pragma once
#include <cstddef>
#include <cstring>
#include <vector>

namespace qcast_test {

template <class T>
std::size_t differing(const std::vector<T>& a, const std::vector<T>& b) {
  std::size_t bad = a.size() == b.size() ? 0 : a.size() + b.size();
  for (std::size_t i = 0; i < a.size() && i < b.size(); ++i) bad += std::memcmp(&a[i], &b[i], sizeof(T)) != 0;
  return bad;
}

// The same, except that a NaN in `a` matches any NaN in `b`: for results of arithmetic whose NaN
// payloads differ between devices (a GPU returns its canonical NaN, x86 propagates an operand's).
template <class T>
std::size_t differing_but_nan_payloads(const std::vector<T>& a, const std::vector<T>& b) {
  std::size_t bad = a.size() == b.size() ? 0 : a.size() + b.size();
  for (std::size_t i = 0; i < a.size() && i < b.size(); ++i)
    bad += a[i] != a[i] ? !(b[i] != b[i]) : std::memcmp(&a[i], &b[i], sizeof(T)) != 0;
  return bad;
}

}  // namespace qcast_test
