// Element codes and scale codes to and from their byte streams on the device, in the layout of
// qcast/packing.hpp: one thread owns eight consecutive elements, whose codes fill exactly `bits`
// whole bytes of the little-endian bit stream, so no two threads share a byte. Compiles as host C++
// too (device_or_host.hpp).
#pragma once
#include <cstdint>

#include "device_or_host.hpp"

namespace qcast::cuda_detail {

// Writes the codes of elements [8o, 8o + count) (count <= 8) at byte 8o * bits / 8 = o * bits.
QCAST_DEVICE QCAST_FORCEINLINE void store_codes(std::uint8_t* codes, std::int64_t o, int bits,
                                                const std::uint32_t c[8], int count) {
  std::uint8_t* dst = codes + o * bits;
  const int bytes = (count * bits + 7) / 8;
  if (bits <= 8) {
    unsigned long long acc = 0;
    for (int k = 0; k < count; ++k) acc |= (unsigned long long)c[k] << (k * bits);
    if (count == 8 && bits == 8 && (reinterpret_cast<std::uintptr_t>(dst) & 7) == 0) {
      *reinterpret_cast<unsigned long long*>(dst) = acc;
    } else if (count == 8 && bits == 4 && (reinterpret_cast<std::uintptr_t>(dst) & 3) == 0) {
      *reinterpret_cast<unsigned*>(dst) = unsigned(acc);
    } else {
      for (int b = 0; b < bytes; ++b) dst[b] = std::uint8_t(acc >> (8 * b));
    }
    return;
  }
  std::uint8_t buf[32] = {};
  for (int k = 0; k < count; ++k) {
    const int bit = k * bits;
    for (int done = 0; done < bits; ++done)
      buf[(bit + done) >> 3] |= std::uint8_t(((c[k] >> done) & 1u) << ((bit + done) & 7));
  }
  for (int b = 0; b < bytes; ++b) dst[b] = buf[b];
}

QCAST_DEVICE QCAST_FORCEINLINE void load_codes(const std::uint8_t* codes, std::int64_t o, int bits,
                                               std::uint32_t c[8], int count) {
  const std::uint8_t* src = codes + o * bits;
  const int bytes = (count * bits + 7) / 8;
  if (bits <= 8) {
    unsigned long long acc = 0;
    for (int b = 0; b < bytes; ++b) acc |= (unsigned long long)src[b] << (8 * b);
    const std::uint32_t mask = (1u << bits) - 1;
    for (int k = 0; k < 8; ++k) c[k] = std::uint32_t(acc >> (k * bits)) & mask;
    return;
  }
  for (int k = 0; k < 8; ++k) {
    std::uint32_t v = 0;
    const int bit = k * bits;
    if (k < count)
      for (int done = 0; done < bits; ++done)
        v |= std::uint32_t((src[(bit + done) >> 3] >> ((bit + done) & 7)) & 1u) << done;
    c[k] = v;
  }
}

QCAST_DEVICE QCAST_FORCEINLINE void store_scale(std::uint8_t* scales, std::int64_t g, int storage_bytes,
                                                std::uint32_t code) {
  for (int b = 0; b < storage_bytes; ++b) scales[g * storage_bytes + b] = std::uint8_t(code >> (8 * b));
}

QCAST_DEVICE QCAST_FORCEINLINE std::uint32_t load_scale(const std::uint8_t* scales, std::int64_t g,
                                                        int storage_bytes) {
  std::uint32_t code = 0;
  for (int b = 0; b < storage_bytes; ++b) code |= std::uint32_t(scales[g * storage_bytes + b]) << (8 * b);
  return code;
}

}  // namespace qcast::cuda_detail
