// How the code kernels write and read element codes (CodeLayout): one byte per code (8-bit formats
// straight in the packed stream, narrower ones in a buffer the driver packs or unpacks), or two
// 4-bit codes per byte, the first in the low nibble as packing.hpp lays them out. Offsets count
// codes; in a vector, a nibble stream's offsets are even. Codes travel in 32-bit lanes.
//
// Included once per Highway target (toggling include guard, Highway's -inl.h convention).
#if defined(QCAST_CPU_CODE_STREAMS_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef QCAST_CPU_CODE_STREAMS_INL_H_
#undef QCAST_CPU_CODE_STREAMS_INL_H_
#else
#define QCAST_CPU_CODE_STREAMS_INL_H_
#endif

#include <hwy/highway.h>

#include <cstddef>
#include <cstdint>

#include "src/cpu/code_kernel.hpp"

// The packed stream's bytes are read and written as machine words here.
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "qcast's code kernels assume a little-endian host"
#endif

HWY_BEFORE_NAMESPACE();
namespace qcast::kernels::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

#if HWY_TARGET == HWY_SCALAR
constexpr bool kNibblePairsInVectors = false;  // one lane: no pair of codes in a vector
#else
constexpr bool kNibblePairsInVectors = true;
#endif

template <bool kNibbles>
struct CodeWriter {
  std::uint8_t* HWY_RESTRICT out;

  template <class DI>
  HWY_INLINE void Store(DI di, hn::Vec<DI> codes, std::size_t i) const {
    const hn::RebindToUnsigned<DI> du;
    if constexpr (kNibbles && kNibblePairsInVectors) {
      // A pair of codes as one 64-bit lane c0 | c1 << 32: c0 | c1 << 4 in its low byte. The mask
      // keeps a code wider than 4 bits (the don't-care code of a NaN lane that the caller patches
      // afterwards, e.g. a column group with a NaN) out of its neighbour's nibble.
      const hn::Repartition<std::uint64_t, DI> d64;
      const auto pair = hn::BitCast(d64, hn::And(codes, hn::Set(di, 0xF)));
      const hn::Rebind<std::uint8_t, decltype(d64)> d8;
      hn::StoreU(hn::TruncateTo(d8, hn::Or(pair, hn::ShiftRight<28>(pair))), d8, out + i / 2);
    } else if constexpr (kNibbles) {
      HWY_ALIGN std::uint32_t lane_codes[HWY_MAX_BYTES / 4];
      hn::Store(hn::BitCast(du, codes), du, lane_codes);
      for (std::size_t k = 0; k < hn::Lanes(di); ++k) Scalar(i + k, lane_codes[k]);
    } else {
      const hn::Rebind<std::uint8_t, DI> d8;
      hn::StoreU(hn::TruncateTo(d8, hn::BitCast(du, codes)), d8, out + i);
    }
  }

  // One code (the scalar ends of a run). Codes come in increasing order from an even offset, so an
  // even code writes its whole byte (the high nibble 0, as packing.hpp leaves the half byte after
  // the last code) and the odd code after it fills the high nibble.
  HWY_INLINE void Scalar(std::size_t i, std::uint32_t code) const {
    if (!kNibbles) {
      out[i] = std::uint8_t(code);
      return;
    }
    std::uint8_t& byte = out[i / 2];
    byte = i % 2 ? std::uint8_t((byte & 0x0F) | (code & 0xF) << 4) : std::uint8_t(code & 0xF);
  }
};

template <bool kNibbles>
struct CodeReader {
  const std::uint8_t* HWY_RESTRICT in;

  template <class DI>
  HWY_INLINE hn::Vec<DI> Load(DI di, std::size_t i) const {
    if constexpr (kNibbles && kNibblePairsInVectors) {
      // Each byte into a 64-bit lane, its nibbles spread to the lane's two halves.
      const hn::Repartition<std::uint64_t, DI> d64;
      const hn::Rebind<std::uint32_t, decltype(d64)> d32;
      const hn::Rebind<std::uint8_t, decltype(d64)> d8;
      const auto x = hn::PromoteTo(d64, hn::PromoteTo(d32, hn::LoadU(d8, in + i / 2)));
      return hn::BitCast(di, hn::Or(hn::And(x, hn::Set(d64, 0xF)), hn::ShiftLeft<28>(hn::And(x, hn::Set(d64, 0xF0)))));
    } else if constexpr (kNibbles) {
      HWY_ALIGN std::int32_t lane_codes[HWY_MAX_BYTES / 4];
      for (std::size_t k = 0; k < hn::Lanes(di); ++k) lane_codes[k] = std::int32_t(Scalar(i + k));
      return hn::Load(di, lane_codes);
    } else {
      const hn::Rebind<std::uint8_t, DI> d8;
      return hn::PromoteTo(di, hn::LoadU(d8, in + i));
    }
  }

  HWY_INLINE std::uint32_t Scalar(std::size_t i) const {
    if (!kNibbles) return in[i];
    return (in[i / 2] >> (i % 2 ? 4 : 0)) & 0xF;
  }
};

// Calls body(stream) with the CodeWriter or CodeReader (Stream) of layout over p.
template <template <bool> class Stream, class Pointer, class Body>
HWY_INLINE void WithCodeStream(CodeLayout layout, Pointer p, Body&& body) {
  if (layout == CodeLayout::nibbles) body(Stream<true>{p});
  else body(Stream<false>{p});
}

}  // namespace qcast::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // QCAST_CPU_CODE_STREAMS_INL_H_
