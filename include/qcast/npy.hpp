// Reading and writing NumPy .npy files (format versions 1.0-3.0, C order, little-endian float32 /
// float16 payloads). Every error names the file. Writes go to a temporary file beside the target
// that is renamed over it, so a failed write never leaves a partial output.
#pragma once
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <new>
#include <ostream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "qcast/cast.hpp"
#include "qcast/detail/atomic_file.hpp"
#include "qcast/sizes.hpp"

namespace qcast {

struct NpyError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct NpyArray {
  DType dtype = DType::f32;
  Shape shape;
  std::vector<std::uint8_t> data;  // little-endian payload, prod(shape) * element size bytes

  std::int64_t elements() const { return checked_elements(shape, "npy array"); }
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

// The header dict of NEP 1 / numpy.lib.format: a Python literal {'descr': STR, 'fortran_order':
// BOOL, 'shape': TUPLE} (keys in any order, each exactly once, an optional trailing comma), then
// only whitespace to the header's end. The shape is a tuple of non-negative decimal integers:
// "()", "(4,)", "(4, 64)" - as ast.literal_eval reads it, so "(4 64)", "(4, 64abc)" or "(4)" (an
// int, not a tuple) are errors rather than something else.
class NpyHeaderParser {
 public:
  NpyHeaderParser(std::string_view text, const std::string& path) : s_(text), path_(path) {}

  void parse(std::string& descr, bool& fortran_order, Shape& shape) {
    bool have_descr = false, have_order = false, have_shape = false;
    expect('{');
    while (true) {
      space();
      if (peek() == '}') break;
      const std::string key = string_literal("a key");
      space();
      expect(':');
      space();
      if (key == "descr") {
        if (have_descr) fail("'descr' appears twice");
        descr = string_literal("the value of 'descr'");
        have_descr = true;
      } else if (key == "fortran_order") {
        if (have_order) fail("'fortran_order' appears twice");
        fortran_order = boolean();
        have_order = true;
      } else if (key == "shape") {
        if (have_shape) fail("'shape' appears twice");
        shape = tuple();
        have_shape = true;
      } else {
        fail("unknown key " + quoted_text(key) + " (a .npy header has 'descr', 'fortran_order' and 'shape')");
      }
      space();
      if (peek() == ',') {
        ++i_;
        continue;
      }
      if (peek() != '}') fail("expected ',' or '}' at " + rest());
    }
    ++i_;
    space();
    if (i_ != s_.size()) fail("unexpected text after the header dict: " + rest());
    if (!have_descr || !have_order || !have_shape)
      fail(std::string("the header has no '") + (!have_descr ? "descr" : !have_order ? "fortran_order" : "shape") + "'");
  }

 private:
  [[noreturn]] void fail(const std::string& why) const { npy_fail(path_, "malformed .npy header: " + why); }
  char peek() const { return i_ < s_.size() ? s_[i_] : '\0'; }
  std::string rest() const { return i_ < s_.size() ? quoted_text(s_.substr(i_)) : "the end of the header"; }
  void space() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\n' || s_[i_] == '\r')) ++i_;
  }
  void expect(char c) {
    if (peek() != c) fail(std::string("expected '") + c + "' at " + rest());
    ++i_;
  }
  std::string string_literal(const char* what) {
    const char q = peek();
    if (q != '\'' && q != '"') fail(std::string("expected ") + what + " (a quoted string) at " + rest());
    const auto close = s_.find(q, i_ + 1);
    if (close == std::string_view::npos) fail(std::string("unterminated string in ") + what);
    const std::string v(s_.substr(i_ + 1, close - i_ - 1));
    if (v.find('\\') != std::string::npos) fail(std::string("escapes are not supported in ") + what);
    i_ = close + 1;
    return v;
  }
  bool boolean() {
    if (s_.substr(i_, 4) == "True") return i_ += 4, true;
    if (s_.substr(i_, 5) == "False") return i_ += 5, false;
    fail("'fortran_order' must be True or False, got " + rest());
  }
  std::int64_t dimension() {
    const std::size_t b = i_;
    while (i_ < s_.size() && s_[i_] >= '0' && s_[i_] <= '9') ++i_;
    const std::string_view digits = s_.substr(b, i_ - b);
    if (digits.empty()) fail("a shape entry must be a non-negative integer, got " + rest());
    if (digits.size() > 1 && digits[0] == '0') fail("a shape entry has a leading zero: " + quoted_text(digits));
    if (digits.size() > 18) fail("shape entry " + quoted_text(digits) + " is too large");
    std::int64_t d = 0;
    for (char c : digits) d = d * 10 + (c - '0');
    return d;
  }
  Shape tuple() {
    expect('(');
    Shape shape;
    bool trailing_comma = false;
    while (true) {
      space();
      if (peek() == ')') break;
      shape.push_back(dimension());
      space();
      trailing_comma = peek() == ',';
      if (trailing_comma) {
        ++i_;
        continue;
      }
      if (peek() != ')') fail("expected ',' or ')' in the shape at " + rest());
    }
    ++i_;
    if (shape.size() == 1 && !trailing_comma) fail("the shape (" + std::to_string(shape[0]) + ") is an integer, not a tuple; a one-dimensional shape is written (N,)");
    if (shape.size() > 32) fail("the shape has " + std::to_string(shape.size()) + " dimensions (NumPy allows 32)");
    return shape;
  }

  std::string_view s_;
  std::size_t i_ = 0;
  const std::string& path_;
};

}  // namespace detail

// Parses a whole .npy file held in `file` (moved from: the payload keeps its buffer). `path` names
// it in errors. The header must follow its grammar exactly and the payload must be exactly as long
// as the shape says: a shorter one is truncated, a longer one means a wrong shape.
inline NpyArray parse_npy(std::vector<std::uint8_t>&& file, const std::string& path) {
  if (file.size() < 8 || std::memcmp(file.data(), "\x93NUMPY", 6) != 0)
    detail::npy_fail(path, "not a .npy file (bad magic bytes)");
  const int major = file[6];
  if (file[7] != 0)  // NumPy writes and reads x.0 only
    detail::npy_fail(path, "unsupported .npy version " + std::to_string(major) + "." + std::to_string(file[7]) +
                               " (valid: 1.0, 2.0, 3.0)");
  std::size_t at = 8;
  std::uint32_t header_len = 0;
  if (major == 1) {
    if (file.size() < at + 2) detail::npy_fail(path, "truncated header");
    header_len = file[at] | (file[at + 1] << 8);
    at += 2;
  } else if (major == 2 || major == 3) {
    if (file.size() < at + 4) detail::npy_fail(path, "truncated header");
    header_len = file[at] | (file[at + 1] << 8) | (file[at + 2] << 16) | (std::uint32_t(file[at + 3]) << 24);
    at += 4;
  } else {
    detail::npy_fail(path, "unsupported .npy version " + std::to_string(major) + ".0 (valid: 1.0, 2.0, 3.0)");
  }
  if (header_len > file.size() - at)
    detail::npy_fail(path, "truncated header: it claims " + std::to_string(header_len) + " bytes, the file holds " +
                               std::to_string(file.size() - at) + " after the preamble");
  const std::string_view header(reinterpret_cast<const char*>(file.data() + at), header_len);
  at += header_len;

  NpyArray a;
  std::string descr;
  bool fortran_order = false;
  detail::NpyHeaderParser(header, path).parse(descr, fortran_order, a.shape);
  if (descr == "<f4") a.dtype = DType::f32;
  else if (descr == "<f2") a.dtype = DType::f16;
  else
    detail::npy_fail(path, "dtype " + detail::quoted_text(descr) + " is not supported (valid: '<f4' float32, '<f2' float16)");
  if (fortran_order) detail::npy_fail(path, "Fortran-ordered arrays are not supported (save with C order)");
  const std::uint64_t bytes = checked_bytes(checked_elements(a.shape, path), a.dtype == DType::f32 ? 4 : 2, path);
  const std::uint64_t held = file.size() - at;
  if (held < bytes)
    detail::npy_fail(path, "truncated data: the shape " + shape_text(a.shape) + " needs " + std::to_string(bytes) +
                               " bytes, the file holds " + std::to_string(held));
  if (held > bytes)
    detail::npy_fail(path, std::to_string(held - bytes) + " bytes follow the data of shape " + shape_text(a.shape) +
                               " (is the shape in the header wrong?)");
  file.erase(file.begin(), file.begin() + std::ptrdiff_t(at));
  a.data = std::move(file);
  return a;
}

// Reads a .npy file (format versions 1.0-3.0, C order, '<f4' or '<f2'); every error names the path.
// Nothing larger than the file itself is allocated, whatever its header claims.
inline NpyArray read_npy(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) detail::npy_fail(path, "is a folder, not a .npy file");
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  if (!f) detail::npy_fail(path, "cannot open for reading");
  const std::streamoff size = f.tellg();
  if (size < 0) detail::npy_fail(path, "cannot tell the file's size");
  f.seekg(0);
  std::vector<std::uint8_t> file;
  try {
    file.resize(std::size_t(size));
  } catch (const std::bad_alloc&) {
    detail::npy_fail(path, "out of memory reading " + std::to_string(size) + " bytes");
  }
  if (size && !f.read(reinterpret_cast<char*>(file.data()), size)) detail::npy_fail(path, "read error");
  return parse_npy(std::move(file), path);
}

// Writes a float32 array as a version 1.0 .npy to a stream (the caller checks the stream's state).
inline void write_npy(std::ostream& f, const Shape& shape, const float* values) {
  const std::int64_t n = checked_elements(shape, "write_npy");
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': " + shape_text(shape) + ", }";
  const std::size_t unpadded = 10 + header.size() + 1;
  header.append((64 - unpadded % 64) % 64, ' ');
  header += '\n';
  if (header.size() > 65535) throw NpyError("write_npy: the shape " + shape_text(shape) + " does not fit a version 1.0 header");
  const unsigned char pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, static_cast<unsigned char>(header.size() & 0xFF),
                                 static_cast<unsigned char>(header.size() >> 8)};
  f.write(reinterpret_cast<const char*>(pre), 10);
  f.write(header.data(), std::streamsize(header.size()));
  if (n > 0) f.write(reinterpret_cast<const char*>(values), std::streamsize(n * 4));
}

// Writes float32 values atomically: a temporary file beside `path` is renamed over it.
inline void write_npy(const std::string& path, const Shape& shape, const float* values) {
  try {
    detail::write_file_atomically(path, path, [&](std::ostream& f) { write_npy(f, shape, values); });
  } catch (const std::runtime_error& e) {
    throw NpyError(e.what());
  }
}

}  // namespace qcast
