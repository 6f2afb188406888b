// The block Walsh-Hadamard transform, scalar reference: each run of `block` consecutive values (a
// power of two) is multiplied by H_block / sqrt(block), the orthonormal Sylvester-Hadamard matrix,
// in log2(block) in-place butterfly steps. The compiled kernel (kernels::hadamard, SIMD) gives the
// same bits: every output is the same sequence of binary32 additions and subtractions, stage by
// stage (h = 1, 2, 4, ...: pairs (i, i + h) within runs of 2h become (a + b, a - b)), then one
// multiply by float(1 / sqrt(block)).
#pragma once
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>

namespace qcast {

// Throws std::invalid_argument for a block that is not a power of two or does not divide n.
inline void check_hadamard(std::int64_t n, std::int64_t block) {
  if (!(block >= 1 && (block & (block - 1)) == 0))
    throw std::invalid_argument("block must be a power of two, got " + std::to_string(block));
  if (n % block != 0)
    throw std::invalid_argument("block " + std::to_string(block) + " does not divide " + std::to_string(n));
}

// The factor every output is multiplied by: 1 / sqrt(block) rounded to binary32 once.
inline float hadamard_scale(std::int64_t block) { return float(1.0 / std::sqrt(double(block))); }

// In place over n values (n a multiple of block).
inline void hadamard(float* x, std::int64_t n, std::int64_t block) {
  check_hadamard(n, block);
  const float scale = hadamard_scale(block);
  for (std::int64_t b = 0; b < n; b += block) {
    float* v = x + b;
    for (std::int64_t h = 1; h < block; h *= 2)
      for (std::int64_t i = 0; i < block; i += 2 * h)
        for (std::int64_t j = i; j < i + h; ++j) {
          const float a = v[j], c = v[j + h];
          v[j] = a + c;
          v[j + h] = a - c;
        }
    for (std::int64_t i = 0; i < block; ++i) v[i] *= scale;
  }
}

}  // namespace qcast
