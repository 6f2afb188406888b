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
//     u8 layout               how the matrix [rows, cols] maps onto the parameter (WeightLayout)
//     i64 rows, i64 cols      the matrix: rows = outputs, cols = the reduction dimension
//     f32 tensor_scale        s_t of a two-level format (1 otherwise)
//     u64 n, n bytes          element codes of the matrix, row-major, packed LSB first (packing.hpp)
//     u64 n, n bytes          scale codes in group order (detail::GroupLayout of [rows, cols])
#pragma once
#include <cstdint>
#include <cstring>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "qcast/cast.hpp"
#include "qcast/detail/atomic_file.hpp"
#include "qcast/format_names.hpp"

namespace qcast {

enum class WeightLayout : std::uint8_t {
  rows = 0,        // matrix = parameter.reshape(shape[0], -1): linear [out, in], conv OIHW, W of W·x
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

inline void qpack_put(std::ofstream& f, const void* p, std::size_t n) { f.write(static_cast<const char*>(p), std::streamsize(n)); }
template <class T>
void qpack_put(std::ofstream& f, T v) {  // little-endian byte order, whatever the host
  unsigned char b[sizeof(T)];
  std::uint64_t u = 0;
  std::memcpy(&u, &v, sizeof(T));
  for (std::size_t i = 0; i < sizeof(T); ++i) b[i] = static_cast<unsigned char>(u >> (8 * i));
  qpack_put(f, b, sizeof(T));
}
inline void qpack_put_bytes32(std::ofstream& f, const std::string& s) {
  qpack_put(f, std::uint32_t(s.size()));
  qpack_put(f, s.data(), s.size());
}
inline void qpack_put_bytes64(std::ofstream& f, const std::vector<std::uint8_t>& v) {
  qpack_put(f, std::uint64_t(v.size()));
  qpack_put(f, v.data(), v.size());
}

class QpackReader {
 public:
  explicit QpackReader(const std::string& path) : path_(path), f_(path, std::ios::binary) {
    if (!f_) fail("cannot open the file");
  }
  [[noreturn]] void fail(const std::string& why) const { throw QpackError(path_ + ": " + why); }
  void bytes(void* p, std::size_t n, const char* what) {
    if (n && !f_.read(static_cast<char*>(p), std::streamsize(n))) fail(std::string("truncated file (reading ") + what + ")");
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
    std::vector<std::uint8_t> v(n);
    bytes(v.data(), n, what);
    return v;
  }

 private:
  std::string path_;
  std::ifstream f_;
};

}  // namespace detail

inline constexpr char qpack_magic[8] = {'Q', 'C', 'A', 'S', 'T', 'P', 'K', '1'};

// Writes the entries atomically (a temporary file renamed into place).
inline void write_qpack(const std::string& path, const std::vector<PackedWeight>& weights) {
  detail::write_file_atomically(path, path, [&](std::ofstream& f) {
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
  });
}

// Reads every entry; a file that is not a .qpack, is truncated or inconsistent throws QpackError
// naming the path.
inline std::vector<PackedWeight> read_qpack(const std::string& path) {
  detail::QpackReader r(path);
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
      r.fail("entry " + w.name + ": " + e.what());
    }
    const auto rank = r.get<std::uint32_t>("a rank");
    if (rank > 8) r.fail("entry " + w.name + ": implausible rank " + std::to_string(rank));
    std::int64_t elements = 1;
    for (std::uint32_t i = 0; i < rank; ++i) {
      w.shape.push_back(r.get<std::int64_t>("a dimension"));
      if (w.shape.back() < 0) r.fail("entry " + w.name + ": negative dimension");
      elements *= w.shape.back();
    }
    const auto layout = r.get<std::uint8_t>("a layout");
    if (layout > 1) r.fail("entry " + w.name + ": unknown layout " + std::to_string(layout));
    w.layout = WeightLayout(layout);
    const auto rows = r.get<std::int64_t>("rows"), cols = r.get<std::int64_t>("cols");
    if (rows < 0 || cols < 0 || rows * cols != elements)
      r.fail("entry " + w.name + ": matrix " + std::to_string(rows) + "x" + std::to_string(cols) +
             " does not hold the parameter's " + std::to_string(elements) + " elements");
    w.matrix.shape = {rows, cols};
    w.matrix.tensor_scale = r.get<float>("a tensor scale");
    const Format& f = w.matrix.format;
    w.matrix.codes = r.blob("codes", packed_size(std::size_t(elements), f.element.bits()));
    const std::size_t groups = f.is_scaled() ? std::size_t(detail::GroupLayout(w.matrix.shape, f).groups()) : 0;
    w.matrix.scales = r.blob("scales", f.is_scaled() ? packed_size(groups, f.scale_storage_bits()) : 0);
    out.push_back(std::move(w));
  }
  return out;
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
