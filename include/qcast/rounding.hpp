// Rounding and overflow are explicit parameters of every cast.
#pragma once
#include <cstdint>
#include <optional>

#include "qcast/detail/host_device.hpp"

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
  // Two-level formats (nvfp4, ...@gK+tensor) only: the amax_t from which the tensor scale
  // s_t = amax_t / (max_elem * max_scale) is derived, such as one measured in calibration (a static
  // tensor scale, as deployed NVFP4 activations use). Unset: the largest finite |x| of the tensor
  // itself, which costs a pass over it before any output. Must be finite and > 0. Values larger
  // than it saturate the block scale (and then the element, by `saturate`); every cast, encode
  // and kernel gives the same bits for the same tensor_amax as for a measured one of that value.
  std::optional<float> tensor_amax;
};

namespace detail {

// MurmurHash3's 32-bit finalizer: a bijection that mixes every input bit into every output bit.
QCAST_HOST_DEVICE inline std::uint32_t fmix32(std::uint32_t h) noexcept {
  h ^= h >> 16;
  h *= 0x85EBCA6Bu;
  h ^= h >> 13;
  h *= 0xC2B2AE35u;
  h ^= h >> 16;
  return h;
}

// The stochastic draw of element `index`: a pure function of (seed, index) built from 32-bit
// multiplies, shifts and xors only, so that SIMD lanes and CUDA threads compute the same bits as
// this reference.
QCAST_HOST_DEVICE inline std::uint32_t stochastic_bits(std::uint64_t seed, std::uint64_t index) noexcept {
  std::uint32_t h = fmix32(std::uint32_t(index) * 0x9E3779B1u ^ std::uint32_t(seed));
  return fmix32(h ^ (std::uint32_t(index >> 32) * 0x85EBCA77u) ^ std::uint32_t(seed >> 32));
}

// Uniform in [0, 1) on a grid of 2^-24: exact in binary32, so a float kernel compares exactly.
QCAST_HOST_DEVICE inline double stochastic_uniform(std::uint64_t seed, std::uint64_t index) noexcept {
  return double(stochastic_bits(seed, index) >> 8) * (1.0 / 16777216.0);
}

}  // namespace detail
}  // namespace qcast
