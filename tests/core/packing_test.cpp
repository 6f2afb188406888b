#include <catch2/catch.hpp>

#include <random>

#include "qcast/packing.hpp"

TEST_CASE("packing round-trips every width") {
  std::mt19937 rng(1);
  for (int bits = 1; bits <= 32; ++bits) {
    std::vector<std::uint32_t> codes(257);
    for (auto& c : codes) c = bits == 32 ? rng() : rng() & ((1u << bits) - 1);
    const auto bytes = qcast::pack_codes(codes, bits);
    CHECK(bytes.size() == (codes.size() * bits + 7) / 8);
    CHECK(qcast::unpack_codes(bytes, codes.size(), bits) == codes);
  }
}

TEST_CASE("documented bit order: little-endian bit stream") {
  CHECK(qcast::pack_codes({0x1, 0x2, 0x3}, 4) == std::vector<std::uint8_t>{0x21, 0x03});
  // 6-bit codes: code 0 in bits 0..5 of byte 0, code 1 in bits 6..7 of byte 0 and 0..3 of byte 1.
  CHECK(qcast::pack_codes({0x3F, 0x01}, 6) == std::vector<std::uint8_t>{0x7F, 0x00});
  CHECK(qcast::pack_codes({0x00, 0x3C}, 6) == std::vector<std::uint8_t>{0x00, 0x0F});
  CHECK(qcast::pack_codes({0x3F800000u}, 32) == std::vector<std::uint8_t>{0x00, 0x00, 0x80, 0x3F});
}
