// Reading and writing NumPy .npy files (format versions 1.0-3.0, C order, little-endian float32 /
// float16 payloads). Every error names the file. Writes go to a temporary file beside the target
// that is renamed over it, so a failed write never leaves a partial output.
#pragma once
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "qcast/cast.hpp"
#include "qcast/detail/atomic_file.hpp"

namespace qcast {

struct NpyError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct NpyArray {
  DType dtype = DType::f32;
  Shape shape;
  std::vector<std::uint8_t> data;  // little-endian payload, prod(shape) * element size bytes

  std::int64_t elements() const {
    std::int64_t n = 1;
    for (auto d : shape) n *= d;
    return n;
  }
  // The values widened to binary32.
  std::vector<float> to_float() const {
    std::vector<float> v(static_cast<std::size_t>(elements()));
    if (v.empty()) return v;
    if (dtype == DType::f32) {
      std::memcpy(v.data(), data.data(), v.size() * 4);
    } else {
      for (std::size_t i = 0; i < v.size(); ++i)
        v[i] = widen(dtype, std::uint16_t(data[2 * i] | (data[2 * i + 1] << 8)));
    }
    return v;
  }
};

namespace detail {

[[noreturn]] inline void npy_fail(const std::string& path, const std::string& why) {
  throw NpyError(path + ": " + why);
}

// Value of key in the header dict ('descr': '<f4', ...): the text after "'key':".
inline std::string npy_header_value(const std::string& header, const std::string& key, const std::string& path) {
  const auto k = header.find("'" + key + "'");
  if (k == std::string::npos) npy_fail(path, "not a valid .npy file (header has no '" + key + "')");
  auto p = header.find(':', k);
  if (p == std::string::npos) npy_fail(path, "not a valid .npy file (malformed header)");
  ++p;
  while (p < header.size() && header[p] == ' ') ++p;
  return header.substr(p);
}

}  // namespace detail

inline NpyArray read_npy(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) detail::npy_fail(path, "cannot open for reading");
  char magic[8];
  if (!f.read(magic, 8) || std::string(magic, 6) != "\x93NUMPY")
    detail::npy_fail(path, "not a .npy file (bad magic bytes)");
  const int major = static_cast<unsigned char>(magic[6]);
  std::uint32_t header_len = 0;
  unsigned char len_bytes[4] = {0, 0, 0, 0};
  if (major == 1) {
    if (!f.read(reinterpret_cast<char*>(len_bytes), 2)) detail::npy_fail(path, "truncated header");
    header_len = len_bytes[0] | (len_bytes[1] << 8);
  } else if (major == 2 || major == 3) {
    if (!f.read(reinterpret_cast<char*>(len_bytes), 4)) detail::npy_fail(path, "truncated header");
    header_len = len_bytes[0] | (len_bytes[1] << 8) | (len_bytes[2] << 16) | (std::uint32_t(len_bytes[3]) << 24);
  } else {
    detail::npy_fail(path, "unsupported .npy version " + std::to_string(major));
  }
  if (header_len > (1u << 24)) detail::npy_fail(path, "header length " + std::to_string(header_len) + " is implausible");
  std::string header(header_len, '\0');
  if (!f.read(header.data(), header_len)) detail::npy_fail(path, "truncated header");

  NpyArray a;
  const std::string descr = detail::npy_header_value(header, "descr", path);
  if (descr.rfind("'<f4'", 0) == 0) a.dtype = DType::f32;
  else if (descr.rfind("'<f2'", 0) == 0) a.dtype = DType::f16;
  else {
    const auto end = descr.find('\'', 1);
    detail::npy_fail(path, "dtype " + descr.substr(0, end == std::string::npos ? 8 : end + 1) +
                               " is not supported (valid: '<f4' float32, '<f2' float16)");
  }
  if (detail::npy_header_value(header, "fortran_order", path).rfind("False", 0) != 0)
    detail::npy_fail(path, "Fortran-ordered arrays are not supported (save with C order)");
  const std::string shape_text = detail::npy_header_value(header, "shape", path);
  if (shape_text.empty() || shape_text[0] != '(') detail::npy_fail(path, "malformed shape in header");
  const auto close = shape_text.find(')');
  if (close == std::string::npos) detail::npy_fail(path, "malformed shape in header");
  std::stringstream dims(shape_text.substr(1, close - 1));
  std::string item;
  while (std::getline(dims, item, ',')) {
    const auto b = item.find_first_not_of(' ');
    if (b == std::string::npos) continue;
    try {
      std::size_t used = 0;
      const long long d = std::stoll(item.substr(b), &used);
      if (d < 0) throw std::invalid_argument("negative");
      a.shape.push_back(d);
    } catch (const std::exception&) {
      detail::npy_fail(path, "malformed shape entry '" + item + "'");
    }
  }
  const std::size_t bytes = std::size_t(a.elements()) * (a.dtype == DType::f32 ? 4 : 2);
  a.data.resize(bytes);
  if (bytes && !f.read(reinterpret_cast<char*>(a.data.data()), std::streamsize(bytes)))
    detail::npy_fail(path, "truncated data: header promises " + std::to_string(bytes) + " bytes");
  return a;
}

// Writes float32 values atomically: a temporary file beside `path` is renamed over it.
inline void write_npy(const std::string& path, const Shape& shape, const float* values) {
  std::string dims = "(";
  for (std::size_t i = 0; i < shape.size(); ++i) dims += std::to_string(shape[i]) + (shape.size() == 1 ? "," : i + 1 < shape.size() ? ", " : "");
  dims += ")";
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': " + dims + ", }";
  const std::size_t unpadded = 10 + header.size() + 1;
  header.append((64 - unpadded % 64) % 64, ' ');
  header += '\n';
  std::int64_t n = 1;
  for (auto d : shape) n *= d;

  try {
    detail::write_file_atomically(path, path, [&](std::ofstream& f) {
      const unsigned char pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, static_cast<unsigned char>(header.size() & 0xFF),
                                     static_cast<unsigned char>(header.size() >> 8)};
      f.write(reinterpret_cast<const char*>(pre), 10);
      f.write(header.data(), std::streamsize(header.size()));
      if (n > 0) f.write(reinterpret_cast<const char*>(values), std::streamsize(n * 4));
    });
  } catch (const std::runtime_error& e) {
    throw NpyError(e.what());
  }
}

}  // namespace qcast
