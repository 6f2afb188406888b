// Element and byte counts of a shape, checked. Every reader (.npy, .qpack), the CLI and the
// kernels' entry points turn a shape into sizes here, so that a shape that is negative or whose
// product overflows is a clear error before any allocation or index arithmetic.
#pragma once
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace qcast {

struct SizeError : std::length_error {
  using std::length_error::length_error;
};

// The most elements a tensor may have: 2^56. Byte counts of up to 8 bytes an element and the
// kernels' flat index arithmetic (base + run * stride + ...) then stay far inside int64_t, and no
// machine holds 2^56 floats.
inline constexpr std::int64_t max_elements = std::int64_t(1) << 56;

// "(4, 64)" as NumPy prints a shape: "(4,)" for rank 1, "()" for a scalar.
inline std::string shape_text(const std::vector<std::int64_t>& shape) {
  std::string s = "(";
  for (std::size_t i = 0; i < shape.size(); ++i) s += std::to_string(shape[i]) + (shape.size() == 1 ? "," : i + 1 < shape.size() ? ", " : "");
  return s + ")";
}

namespace detail {
inline std::string size_error_prefix(const std::string& what) { return what.empty() ? std::string() : what + ": "; }
}  // namespace detail

// prod(shape). Throws SizeError, prefixed by `what` (a path, a tensor's name; none where empty), when a dimension is
// negative or when the product of the nonzero dimensions exceeds max_elements: a zero dimension
// makes the tensor empty, but every partial product of the others must still be a valid stride.
inline std::int64_t checked_elements(const std::vector<std::int64_t>& shape, const std::string& what) {
  std::int64_t nonzero = 1;
  bool empty = false;
  for (const std::int64_t d : shape) {
    if (d < 0) throw SizeError(detail::size_error_prefix(what) + "shape " + shape_text(shape) + " has a negative dimension");
    if (d == 0) {
      empty = true;
      continue;
    }
    if (d > max_elements / nonzero)
      throw SizeError(detail::size_error_prefix(what) + "shape " + shape_text(shape) + " has more than 2^56 elements (the most qcast handles)");
    nonzero *= d;
  }
  return empty ? 0 : nonzero;
}

// elements * element_bytes for elements <= max_elements and element_bytes <= 8 (no overflow then).
inline std::uint64_t checked_bytes(std::int64_t elements, std::size_t element_bytes, const std::string& what) {
  if (elements < 0 || elements > max_elements || element_bytes > 8)
    throw SizeError(detail::size_error_prefix(what) + std::to_string(elements) + " elements of " + std::to_string(element_bytes) +
                    " bytes are out of range");
  return std::uint64_t(elements) * element_bytes;
}

}  // namespace qcast
