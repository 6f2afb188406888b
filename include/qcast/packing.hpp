// Dense packing of codes narrower than a byte (or wider, up to 32 bits).
//
// Bit order: codes form one little-endian bit stream. Code i occupies stream bits
// [i*b, (i+1)*b), and stream bit j is bit (j % 8) of byte j / 8. So two fp4 codes share a byte with
// code 0 in the low nibble, and a 32-bit code is stored as 4 little-endian bytes.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace qcast {

inline std::size_t packed_size(std::size_t count, int bits) { return (count * std::size_t(bits) + 7) / 8; }

inline void pack_code(std::uint8_t* bytes, std::size_t index, int bits, std::uint32_t code) {
  std::size_t bit = index * std::size_t(bits);
  for (int done = 0; done < bits;) {
    const int offset = int(bit % 8);
    const int take = bits - done < 8 - offset ? bits - done : 8 - offset;
    const std::uint32_t chunk = (code >> done) & ((1u << take) - 1);
    std::uint8_t& b = bytes[bit / 8];
    b = std::uint8_t((b & ~(((1u << take) - 1) << offset)) | (chunk << offset));
    done += take;
    bit += std::size_t(take);
  }
}

inline std::uint32_t unpack_code(const std::uint8_t* bytes, std::size_t index, int bits) {
  std::size_t bit = index * std::size_t(bits);
  std::uint32_t code = 0;
  for (int done = 0; done < bits;) {
    const int offset = int(bit % 8);
    const int take = bits - done < 8 - offset ? bits - done : 8 - offset;
    code |= ((std::uint32_t(bytes[bit / 8]) >> offset) & ((1u << take) - 1)) << done;
    done += take;
    bit += std::size_t(take);
  }
  return code;
}

inline std::vector<std::uint8_t> pack_codes(const std::vector<std::uint32_t>& codes, int bits) {
  std::vector<std::uint8_t> out(packed_size(codes.size(), bits), 0);
  for (std::size_t i = 0; i < codes.size(); ++i) pack_code(out.data(), i, bits, codes[i]);
  return out;
}

inline std::vector<std::uint32_t> unpack_codes(const std::vector<std::uint8_t>& bytes, std::size_t count, int bits) {
  std::vector<std::uint32_t> out(count);
  for (std::size_t i = 0; i < count; ++i) out[i] = unpack_code(bytes.data(), i, bits);
  return out;
}

}  // namespace qcast
