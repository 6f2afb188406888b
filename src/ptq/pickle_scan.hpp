// A check of a pickle stream's framing before LibTorch's unpickler reads it: every opcode is one
// that the pickle protocols 0-5 define, and every argument - fixed, newline-terminated or
// length-prefixed - lies inside the stream. LibTorch's unpickler reserves what a length-prefixed
// opcode claims before it reads (a damaged 2 KB torch.save file asked for 4 GiB under fuzzing);
// after this check no claim exceeds the bytes that are there. The opcodes and their argument
// encodings are those of CPython's Lib/pickletools.py (the protocol's reference documentation).
#pragma once
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

namespace qcast::ptq::detail {

// Throws std::invalid_argument("...") naming the offset of the first opcode whose argument does not
// fit, or that is not a pickle opcode; returns normally at STOP. Two claims that are not lengths
// are bounded as well: a memo index (LONG_BINPUT: LibTorch sizes its memo table by it; a pickler
// numbers them from 0, one a PUT of at least 2 bytes, so a valid stream has fewer than n) and a
// FRAME's length (a frame lies inside the stream).
inline void scan_pickle(const unsigned char* p, std::size_t n) {
  std::size_t i = 0;
  auto fail = [&](const std::string& why) {
    throw std::invalid_argument("damaged pickle data at byte " + std::to_string(i) + ": " + why);
  };
  auto need = [&](std::uint64_t k) {
    if (k > n - i) fail("an argument of " + std::to_string(k) + " bytes runs past the end (" + std::to_string(n - i) + " left)");
    i += std::size_t(k);
  };
  auto unsigned_le = [&](int bytes, const char* what) {  // a little-endian unsigned count of 1, 4 or 8 bytes
    if (std::size_t(bytes) > n - i) fail(std::string("a ") + what + " runs past the end");
    std::uint64_t k = 0;
    for (int b = 0; b < bytes; ++b) k |= std::uint64_t(p[i + std::size_t(b)]) << (8 * b);
    i += std::size_t(bytes);
    return k;
  };
  auto length = [&](int bytes) { need(unsigned_le(bytes, "length")); };  // a length, then its payload
  auto bounded_u64 = [&](int bytes, const char* what) {  // a count that must not exceed the stream
    const std::uint64_t k = unsigned_le(bytes, what);
    if (k > n) fail(std::string("a ") + what + " of " + std::to_string(k) + " in a stream of " + std::to_string(n) + " bytes");
  };
  auto line = [&] {  // an argument up to and including '\n'
    while (i < n && p[i] != '\n') ++i;
    if (i == n) fail("a newline-terminated argument has no newline");
    ++i;
  };
  while (i < n) {
    const unsigned char op = p[i++];
    switch (op) {
      case '.': return;  // STOP
      // no argument
      case '(': case ')': case '0': case '1': case '2': case 'N': case 'R': case 'a': case 'b': case 'd':
      case 'e': case 'l': case 's': case 't': case 'u': case '}': case ']': case 'o': case 0x81: case 0x85:
      case 0x86: case 0x87: case 0x88: case 0x89: case 0x8f: case 0x90: case 0x91: case 0x92: case 0x93:
      case 0x94: case 0x97: case 0x98: case 'Q':
        break;
      // fixed-size arguments
      case 0x80: case 'K': case 'h': case 'q': case 0x82: need(1); break;  // PROTO BININT1 BINGET BINPUT EXT1
      case 'M': case 0x83: need(2); break;                                 // BININT2 EXT2
      case 'J': case 'j': case 0x84: need(4); break;                       // BININT LONG_BINGET EXT4
      case 'r': bounded_u64(4, "memo index"); break;                       // LONG_BINPUT
      case 'G': need(8); break;                                            // BINFLOAT
      case 0x95: bounded_u64(8, "frame length"); break;                    // FRAME
      // newline-terminated arguments
      case 'I': case 'L': case 'F': case 'S': case 'V': case 'P': case 'g': case 'p': line(); break;
      case 'c': case 'i': line(); line(); break;  // GLOBAL, INST: module and name
      // length-prefixed arguments
      case 0x8a: case 'U': case 'C': case 0x8c: length(1); break;  // LONG1 SHORT_BINSTRING SHORT_BINBYTES SHORT_BINUNICODE
      case 0x8b: case 'T': case 'B': case 'X': length(4); break;   // LONG4 BINSTRING BINBYTES BINUNICODE
      case 0x8d: case 0x8e: case 0x96: length(8); break;           // BINUNICODE8 BINBYTES8 BYTEARRAY8
      default: {
        static const char hex[] = "0123456789abcdef";
        --i;
        fail(std::string("opcode 0x") + hex[op >> 4] + hex[op & 15] + " is not a pickle opcode");
      }
    }
  }
  fail("the stream ends without STOP");
}

}  // namespace qcast::ptq::detail
