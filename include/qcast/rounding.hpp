// Rounding and overflow are explicit parameters of every cast.
#pragma once
#include <cstdint>
#include <optional>

namespace qcast {

enum class Rounding : std::uint8_t {
  nearest_even,  // IEEE roundTiesToEven: the default everywhere
  nearest_away,  // ties away from zero
  toward_zero,   // truncation
  stochastic,    // up with probability equal to the distance from the lower neighbour
};

struct CastOptions {
  Rounding rounding = Rounding::nearest_even;
  // Seed of the stochastic rounding stream. The random number of element i depends on (seed, i)
  // only, so results do not depend on thread count or on how work is split.
  std::uint64_t seed = 0;
  // true: finite values and Inf beyond the largest finite value become ±max (OCP "saturating").
  // false: overflow gives Inf where the format has it, NaN where it has NaN only, and ±max for
  // formats without special values (OCP MX §6.3 leaves FP6/FP4 overflow to the implementation).
  // Unset: the format's own convention (ElementFormat::saturates_by_default): saturating for every
  // format except the IEEE storage types fp16, bf16 and fp32, which convert as IEEE 754 does.
  std::optional<bool> saturate;
};

namespace detail {

inline std::uint64_t splitmix64(std::uint64_t z) noexcept {
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// Uniform in [0, 1) with 32 random bits, a pure function of (seed, element index).
inline double stochastic_uniform(std::uint64_t seed, std::uint64_t index) noexcept {
  const std::uint64_t r = splitmix64(seed ^ splitmix64(index));
  return double(r >> 32) * (1.0 / 4294967296.0);
}

}  // namespace detail
}  // namespace qcast
