// The .qpack file: quantized weights as packed codes + scales + format, one entry per layer, readable
// by inference code with the core alone (no LibTorch). Layout (all integers little-endian), also in
// docs/qpack.md:
//
//   "QCASTPK1"                8 bytes
//   u32 version = 1, u32 entry count
//   per entry:
//     u32 n, n bytes          parameter name (module path, e.g. "features.0.weight")
//     u32 n, n bytes          format name (qcast grammar; parse_format reads it back)
//     u32 rank, i64 x rank    the parameter's shape in the model
//     u8 layout               how the matrix [rows, cols] maps onto the parameter (WeightLayout);
//                             rows * cols = the parameter's elements; transposed: cols = shape[rank-2]
//     i64 rows, i64 cols      the matrix: rows = outputs, cols = the reduction dimension
//     f32 tensor_scale        s_t of a two-level format (1 otherwise)
//     u64 n, n bytes          element codes of the matrix, row-major, packed LSB first (packing.hpp)
//     u64 n, n bytes          scale codes in group order (detail::GroupLayout of [rows, cols])
#pragma once
#include <cstdint>
#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <istream>
#include <ostream>
#include <stdexcept>
#include <string>
#include <vector>

#include "qcast/cast.hpp"
#include "qcast/detail/atomic_file.hpp"
#include "qcast/format_names.hpp"
#include "qcast/sizes.hpp"

namespace qcast {

enum class WeightLayout : std::uint8_t {
  rows = 0,        // matrix = parameter.reshape(-1, cols): linear [out, in], conv OIHW, W of W·x
  transposed = 1,  // matrix = the last two dims swapped: x·W with W [..., in, out] (rows = batch x out)
};

struct PackedWeight {
  std::string name;
  Shape shape;  // the parameter's shape
  WeightLayout layout = WeightLayout::rows;
  Encoded matrix;  // format, shape {rows, cols}, codes, scales, tensor scale
};

struct QpackError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

namespace detail {

inline void qpack_put(std::ostream& f, const void* p, std::size_t n) { f.write(static_cast<const char*>(p), std::streamsize(n)); }
template <class T>
void qpack_put(std::ostream& f, T v) {  // little-endian byte order, whatever the host
  unsigned char b[sizeof(T)];
  std::uint64_t u = 0;
  std::memcpy(&u, &v, sizeof(T));
  for (std::size_t i = 0; i < sizeof(T); ++i) b[i] = static_cast<unsigned char>(u >> (8 * i));
  qpack_put(f, b, sizeof(T));
}
inline void qpack_put_bytes32(std::ostream& f, const std::string& s) {
  qpack_put(f, std::uint32_t(s.size()));
  qpack_put(f, s.data(), s.size());
}
inline void qpack_put_bytes64(std::ostream& f, const std::vector<std::uint8_t>& v) {
  qpack_put(f, std::uint64_t(v.size()));
  qpack_put(f, v.data(), v.size());
}

// fn(), with its size or layout error rethrown as a QpackError naming the entry.
template <class Fn>
auto qpack_checked(const std::string& entry, Fn&& fn) {
  try {
    return fn();
  } catch (const std::logic_error& e) {  // SizeError, std::invalid_argument of GroupLayout
    throw QpackError(entry + ": " + e.what());
  }
}

class QpackReader {
 public:
  // Reads `size` bytes of `in`; `path` names them in errors.
  QpackReader(std::istream& in, std::uint64_t size, const std::string& path) : path_(path), f_(in), left_(size) {}
  const std::string& path() const { return path_; }
  [[noreturn]] void fail(const std::string& why) const { throw QpackError(path_ + ": " + why); }
  void bytes(void* p, std::size_t n, const char* what) {
    if (n > left_ || (n && !f_.read(static_cast<char*>(p), std::streamsize(n))))
      fail(std::string("truncated file (reading ") + what + ")");
    left_ -= n;
  }
  template <class T>
  T get(const char* what) {
    unsigned char b[sizeof(T)];
    bytes(b, sizeof(T), what);
    std::uint64_t u = 0;
    for (std::size_t i = 0; i < sizeof(T); ++i) u |= std::uint64_t(b[i]) << (8 * i);
    T v;
    std::memcpy(&v, &u, sizeof(T));
    return v;
  }
  std::string string(const char* what) {
    const auto n = get<std::uint32_t>(what);
    if (n > (1u << 20)) fail(std::string("implausible length of ") + what);
    std::string s(n, '\0');
    bytes(s.data(), n, what);
    return s;
  }
  std::vector<std::uint8_t> blob(const char* what, std::uint64_t expected) {
    const auto n = get<std::uint64_t>(what);
    if (n != expected)
      fail(std::string(what) + " hold " + std::to_string(n) + " bytes; the entry's shape and format need " +
           std::to_string(expected));
    if (n > left_)  // before allocating: a header can claim any size
      fail(std::string("truncated file: ") + what + " need " + std::to_string(n) + " bytes, " + std::to_string(left_) +
           " are left");
    std::vector<std::uint8_t> v(n);
    bytes(v.data(), n, what);
    return v;
  }
  std::uint64_t left() const { return left_; }

 private:
  std::string path_;
  std::istream& f_;
  std::uint64_t left_ = 0;  // bytes not yet read
};

}  // namespace detail

inline constexpr char qpack_magic[8] = {'Q', 'C', 'A', 'S', 'T', 'P', 'K', '1'};

// Writes the entries to a stream (the caller checks the stream's state).
inline void write_qpack(std::ostream& f, const std::vector<PackedWeight>& weights) {
  detail::qpack_put(f, qpack_magic, 8);
  detail::qpack_put(f, std::uint32_t(1));
  detail::qpack_put(f, std::uint32_t(weights.size()));
  for (const PackedWeight& w : weights) {
    if (w.matrix.shape.size() != 2) throw std::invalid_argument(w.name + ": the packed matrix must have rank 2");
    detail::qpack_put_bytes32(f, w.name);
    detail::qpack_put_bytes32(f, format_name(w.matrix.format));
    detail::qpack_put(f, std::uint32_t(w.shape.size()));
    for (auto d : w.shape) detail::qpack_put(f, std::int64_t(d));
    detail::qpack_put(f, std::uint8_t(w.layout));
    detail::qpack_put(f, std::int64_t(w.matrix.shape[0]));
    detail::qpack_put(f, std::int64_t(w.matrix.shape[1]));
    detail::qpack_put(f, w.matrix.tensor_scale);
    detail::qpack_put_bytes64(f, w.matrix.codes);
    detail::qpack_put_bytes64(f, w.matrix.scales);
  }
}

// Writes the entries atomically (a temporary file renamed into place).
inline void write_qpack(const std::string& path, const std::vector<PackedWeight>& weights) {
  detail::write_file_atomically(path, path, [&](std::ostream& f) { write_qpack(f, weights); });
}

// Reads every entry; a file that is not a .qpack, is truncated or inconsistent throws QpackError
// naming the path. Nothing larger than the file is allocated, whatever its header claims.
inline std::vector<PackedWeight> read_qpack(std::istream& in, std::uint64_t size, const std::string& path) {
  detail::QpackReader r(in, size, path);
  char magic[8];
  r.bytes(magic, 8, "the magic");
  if (std::memcmp(magic, qpack_magic, 8) != 0) r.fail("not a .qpack file (bad magic)");
  const auto version = r.get<std::uint32_t>("the version");
  if (version != 1) r.fail("unsupported .qpack version " + std::to_string(version) + " (this reader knows 1)");
  const auto count = r.get<std::uint32_t>("the entry count");
  std::vector<PackedWeight> out;
  for (std::uint32_t k = 0; k < count; ++k) {
    PackedWeight w;
    w.name = r.string("an entry name");
    const std::string fmt = r.string("a format name");
    try {
      w.matrix.format = parse_format(fmt);
    } catch (const std::exception& e) {
      r.fail("entry " + detail::quoted_text(w.name) + ": " + e.what());
    }
    const std::string entry = r.path() + ": entry " + detail::quoted_text(w.name);
    const auto rank = r.get<std::uint32_t>("a rank");
    if (rank > 8) r.fail("entry " + detail::quoted_text(w.name) + ": implausible rank " + std::to_string(rank));
    for (std::uint32_t i = 0; i < rank; ++i) w.shape.push_back(r.get<std::int64_t>("a dimension"));
    const std::int64_t elements = detail::qpack_checked(entry, [&] { return checked_elements(w.shape, ""); });
    const auto layout = r.get<std::uint8_t>("a layout");
    if (layout > 1) r.fail("entry " + detail::quoted_text(w.name) + ": unknown layout " + std::to_string(layout));
    w.layout = WeightLayout(layout);
    const auto rows = r.get<std::int64_t>("rows"), cols = r.get<std::int64_t>("cols");
    w.matrix.shape = {rows, cols};
    const std::int64_t matrix_elements = detail::qpack_checked(entry, [&] { return checked_elements(w.matrix.shape, ""); });
    // The matrix must be the parameter seen as WeightLayout says (decode_weight indexes by it).
    const bool fits = w.layout == WeightLayout::rows
                          ? matrix_elements == elements
                          : matrix_elements == elements && rank >= 2 && cols == w.shape[rank - 2];
    if (!fits)
      r.fail("entry " + detail::quoted_text(w.name) + ": matrix " + std::to_string(rows) + "x" + std::to_string(cols) +
             " is not the parameter of shape " + shape_text(w.shape) + " in layout " +
             (w.layout == WeightLayout::rows ? "rows" : "transposed"));
    w.matrix.tensor_scale = r.get<float>("a tensor scale");
    const Format& f = w.matrix.format;
    const std::int64_t groups = detail::qpack_checked(
        entry, [&] { return f.is_scaled() ? detail::GroupLayout(w.matrix.shape, f).groups() : std::int64_t(0); });
    w.matrix.codes = r.blob("codes", packed_size(std::size_t(elements), f.element.bits()));
    w.matrix.scales = r.blob("scales", f.is_scaled() ? packed_size(std::size_t(groups), f.scale_storage_bits()) : 0);
    out.push_back(std::move(w));
  }
  return out;
}

inline std::vector<PackedWeight> read_qpack(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) throw QpackError(path + ": is a folder, not a .qpack file");
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  if (!f) throw QpackError(path + ": cannot open the file");
  const std::streamoff size = f.tellg();
  f.seekg(0);
  return read_qpack(f, std::uint64_t(std::max<std::streamoff>(0, size)), path);
}

// The dequantized parameter, in the parameter's own layout (row-major, shape w.shape).
inline std::vector<float> decode_weight(const PackedWeight& w) {
  const std::int64_t rows = w.matrix.shape.at(0), cols = w.matrix.shape.at(1);
  std::vector<float> m(std::size_t(rows * cols));
  decode(w.matrix, m.data());
  if (w.layout == WeightLayout::rows) return m;
  // transposed: the parameter is [batch..., cols, out] and the matrix rows are (batch, out).
  const std::int64_t out_dim = w.shape.empty() ? 1 : w.shape.back();
  const std::int64_t batches = out_dim ? rows / out_dim : 0;
  std::vector<float> p(m.size());
  for (std::int64_t b = 0; b < batches; ++b)
    for (std::int64_t o = 0; o < out_dim; ++o)
      for (std::int64_t i = 0; i < cols; ++i) p[std::size_t((b * cols + i) * out_dim + o)] = m[std::size_t((b * out_dim + o) * cols + i)];
  return p;
}

}  // namespace qcast
