// safetensors reading and writing (include/qcast/safetensors.hpp). The header is JSON, parsed and
// written with nlohmann::json; the format's rules follow the safetensors README: an 8-byte
// little-endian header size N, N bytes of JSON (an object of tensors {dtype, shape, data_offsets}
// and an optional "__metadata__" of strings), then the byte buffer, which the tensors' ranges cover
// exactly, without overlap.
#include "qcast/safetensors.hpp"

#include <algorithm>
#include <fstream>
#include <ostream>

#include <nlohmann/json.hpp>

#include "qcast/format_names.hpp"
#include "qcast/sizes.hpp"
#include "qcast/version.hpp"

namespace qcast {
namespace {

using Json = nlohmann::ordered_json;

constexpr std::uint64_t kMaxHeader = 100u << 20;  // as the safetensors reference reader limits it
constexpr const char* kMetadataPrefix = "qcast:";

[[noreturn]] void fail(const std::string& path, const std::string& why) { throw SafetensorsError(path + ": " + why); }

// The dtype of a weight's element codes, or "" where PyTorch has none (then U8 bytes).
std::string code_dtype(const ElementFormat& e, std::int64_t cols) {
  if (e == elements::fp8_e4m3) return "F8_E4M3";
  if (e == elements::fp8_e5m2) return "F8_E5M2";
  if (e == elements::fp8_e4m3fnuz) return "F8_E4M3FNUZ";
  if (e == elements::fp8_e5m2fnuz) return "F8_E5M2FNUZ";
  if (e == elements::fp4_e2m1 && cols % 2 == 0) return "F4";  // torch.float4_e2m1fn_x2: pairs in a row
  if (e == elements::bf16) return "BF16";
  if (e == elements::fp16) return "F16";
  if (e == elements::fp32) return "F32";
  if (e.kind == ElementKind::integer && e.is_signed && e.integer_bits == 8) return "I8";
  if (e.kind == ElementKind::integer && e.is_signed && e.integer_bits == 16) return "I16";
  return "";
}

// The dtype of scale codes (byte-aligned, one per group), or "" for U8 bytes.
std::string scale_dtype(const ElementFormat& s) {
  if (s == elements::e8m0) return "F8_E8M0";
  if (s == elements::ue4m3 || s == elements::fp8_e4m3) return "F8_E4M3";  // ue4m3: an e4m3 with sign 0
  if (s == elements::fp32) return "F32";
  if (s == elements::bf16) return "BF16";
  if (s == elements::fp16) return "F16";
  return "";
}

// The shape of a weight's scale tensor: blocks of a row -> [rows, blocks], a channel per row ->
// [rows], one for the tensor -> [].
std::vector<std::int64_t> scale_shape(const Format& f, std::int64_t rows, std::int64_t groups) {
  if (f.granularity == Granularity::tensor) return {};
  if (f.granularity == Granularity::channel) return {rows};
  return {rows, rows ? groups / rows : 0};
}

std::int64_t byte_size(const std::string& dtype, const std::vector<std::int64_t>& shape, const std::string& what) {
  const std::int64_t n = checked_elements(shape, what);
  const int bits = safetensors_dtype_bits(dtype);
  if ((n * bits) % 8 != 0) throw SafetensorsError(what + ": " + std::to_string(n) + " elements of " + dtype + " are not whole bytes");
  return n * bits / 8;
}

}  // namespace

int safetensors_dtype_bits(const std::string& d) {
  static const std::map<std::string, int> bits = {
      {"BOOL", 8},         {"U8", 8},           {"I8", 8},      {"F8_E5M2", 8},  {"F8_E4M3", 8},
      {"F8_E4M3FNUZ", 8},  {"F8_E5M2FNUZ", 8},  {"F8_E8M0", 8}, {"F4", 4},       {"F6_E2M3", 6},
      {"F6_E3M2", 6},      {"I16", 16},         {"U16", 16},    {"F16", 16},     {"BF16", 16},
      {"I32", 32},         {"U32", 32},         {"F32", 32},    {"I64", 64},     {"U64", 64},
      {"F64", 64},         {"C64", 64}};
  const auto it = bits.find(d);
  return it == bits.end() ? 0 : it->second;
}

const SafetensorsTensor* SafetensorsFile::find(const std::string& name) const {
  for (const auto& t : tensors)
    if (t.name == name) return &t;
  return nullptr;
}

SafetensorsFile parse_safetensors(const std::uint8_t* bytes, std::size_t size, const std::string& path) {
  if (size < 8) fail(path, "not a safetensors file (shorter than its 8-byte header size)");
  std::uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= std::uint64_t(bytes[i]) << (8 * i);
  if (n > kMaxHeader) fail(path, "header of " + std::to_string(n) + " bytes (more than the 100 MB safetensors allows)");
  if (n > size - 8) fail(path, "header of " + std::to_string(n) + " bytes, but the file has " + std::to_string(size - 8) + " after the size");
  Json header;
  try {
    header = Json::parse(bytes + 8, bytes + 8 + n);
  } catch (const Json::exception& e) {
    fail(path, std::string("the header is not valid JSON (") + e.what() + ")");
  }
  if (!header.is_object()) fail(path, "the header is not a JSON object");
  const std::uint64_t buffer = size - 8 - n;
  const std::uint8_t* data = bytes + 8 + n;
  SafetensorsFile file;
  struct Range {
    std::uint64_t begin, end;
    std::size_t index;
  };
  std::vector<Range> ranges;
  for (const auto& [name, v] : header.items()) {
    const std::string where = "tensor " + detail::quoted_text(name);
    if (name == "__metadata__") {
      if (!v.is_object()) fail(path, "__metadata__ is not an object");
      for (const auto& [k, s] : v.items()) {
        if (!s.is_string()) fail(path, "__metadata__ value of " + detail::quoted_text(k) + " is not a string");
        file.metadata[k] = s.get<std::string>();
      }
      continue;
    }
    if (!v.is_object() || !v.contains("dtype") || !v.contains("shape") || !v.contains("data_offsets") ||
        !v["dtype"].is_string() || !v["shape"].is_array() || !v["data_offsets"].is_array() || v["data_offsets"].size() != 2)
      fail(path, where + ": needs dtype (a string), shape (an array) and data_offsets ([begin, end])");
    SafetensorsTensor t;
    t.name = name;
    t.dtype = v["dtype"].get<std::string>();
    if (safetensors_dtype_bits(t.dtype) == 0) fail(path, where + ": unknown dtype " + detail::quoted_text(t.dtype));
    for (const auto& d : v["shape"]) {
      if (!d.is_number_unsigned()) fail(path, where + ": a dimension is not a non-negative integer");
      const std::uint64_t u = d.get<std::uint64_t>();
      if (u > (std::uint64_t(1) << 56)) fail(path, where + ": dimension " + std::to_string(u) + " is implausible");
      t.shape.push_back(std::int64_t(u));
    }
    const auto& o = v["data_offsets"];
    if (!o[0].is_number_unsigned() || !o[1].is_number_unsigned()) fail(path, where + ": data_offsets are not integers");
    const std::uint64_t begin = o[0].get<std::uint64_t>(), end = o[1].get<std::uint64_t>();
    if (begin > end || end > buffer)
      fail(path, where + ": bytes [" + std::to_string(begin) + ", " + std::to_string(end) + ") outside the " +
                     std::to_string(buffer) + " bytes of data");
    std::int64_t expected = 0;
    try {
      expected = byte_size(t.dtype, t.shape, where);
    } catch (const std::exception& e) {
      fail(path, e.what());
    }
    if (std::uint64_t(expected) != end - begin)
      fail(path, where + ": shape " + shape_text(t.shape) + " of " + t.dtype + " needs " + std::to_string(expected) +
                     " bytes, its range holds " + std::to_string(end - begin));
    ranges.push_back({begin, end, file.tensors.size()});
    file.tensors.push_back(std::move(t));
  }
  // The ranges tile the buffer: sorted, each starts where the previous ended, the last ends at the end.
  std::sort(ranges.begin(), ranges.end(), [](const Range& a, const Range& b) { return a.begin < b.begin; });
  std::uint64_t at = 0;
  for (const Range& r : ranges) {
    if (r.begin != at)
      fail(path, "tensor " + detail::quoted_text(file.tensors[r.index].name) + " starts at byte " + std::to_string(r.begin) +
                     " of the data, not at " + std::to_string(at) + " (ranges overlap or leave a hole)");
    at = r.end;
  }
  if (at != buffer) fail(path, std::to_string(buffer - at) + " bytes after the last tensor");
  std::vector<SafetensorsTensor> ordered;
  for (const Range& r : ranges) {
    SafetensorsTensor& t = file.tensors[r.index];
    t.data.assign(data + r.begin, data + r.end);
    ordered.push_back(std::move(t));
  }
  file.tensors = std::move(ordered);
  return file;
}

SafetensorsFile read_safetensors(const std::string& path) {
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  if (!f) throw SafetensorsError(path + ": cannot open the file");
  const std::streamoff size = f.tellg();
  if (size < 0) throw SafetensorsError(path + ": cannot read the file (a folder?)");
  std::vector<std::uint8_t> bytes(static_cast<std::size_t>(size));
  f.seekg(0);
  if (size > 0 && !f.read(reinterpret_cast<char*>(bytes.data()), size)) throw SafetensorsError(path + ": cannot read the file");
  return parse_safetensors(bytes.data(), bytes.size(), path);
}

void write_safetensors(std::ostream& out, const SafetensorsFile& file) {
  Json header = Json::object();
  if (!file.metadata.empty()) header["__metadata__"] = file.metadata;
  std::uint64_t at = 0;
  for (const auto& t : file.tensors) {
    if (header.contains(t.name)) throw SafetensorsError("two tensors named " + detail::quoted_text(t.name));
    if (std::uint64_t(byte_size(t.dtype, t.shape, "tensor " + detail::quoted_text(t.name))) != t.data.size())
      throw SafetensorsError("tensor " + detail::quoted_text(t.name) + ": " + std::to_string(t.data.size()) +
                             " bytes for shape " + shape_text(t.shape) + " of " + t.dtype);
    header[t.name] = {{"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {at, at + t.data.size()}}};
    at += t.data.size();
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // the data starts 8-byte aligned
  unsigned char size[8];
  for (int i = 0; i < 8; ++i) size[i] = static_cast<unsigned char>(std::uint64_t(text.size()) >> (8 * i));
  out.write(reinterpret_cast<const char*>(size), 8);
  out.write(text.data(), std::streamsize(text.size()));
  for (const auto& t : file.tensors) out.write(reinterpret_cast<const char*>(t.data.data()), std::streamsize(t.data.size()));
}

void add_quantized_weight(SafetensorsFile& file, const PackedWeight& w) {
  const Format& f = w.matrix.format;
  const std::int64_t rows = w.matrix.shape.at(0), cols = w.matrix.shape.at(1);
  SafetensorsTensor codes{w.name, code_dtype(f.element, cols), {rows, cols}, w.matrix.codes};
  if (codes.dtype.empty()) codes = {w.name, "U8", {std::int64_t(w.matrix.codes.size())}, w.matrix.codes};
  file.tensors.push_back(std::move(codes));
  if (f.is_scaled()) {
    const std::int64_t groups = detail::GroupLayout(w.matrix.shape, f).groups();
    SafetensorsTensor scales{w.name + "_scale", scale_dtype(f.scale), scale_shape(f, rows, groups), w.matrix.scales};
    if (scales.dtype.empty() || checked_elements(scales.shape, "scales") != groups)
      scales = {w.name + "_scale", "U8", {std::int64_t(w.matrix.scales.size())}, w.matrix.scales};
    file.tensors.push_back(std::move(scales));
  }
  if (f.tensor_scale) {
    std::vector<std::uint8_t> b(4);
    std::uint32_t u = 0;
    std::memcpy(&u, &w.matrix.tensor_scale, 4);
    for (int i = 0; i < 4; ++i) b[std::size_t(i)] = std::uint8_t(u >> (8 * i));
    file.tensors.push_back({w.name + "_scale_2", "F32", {}, b});
  }
  Json m;
  m["format"] = format_name(f);
  m["shape"] = w.shape;
  m["layout"] = w.layout == WeightLayout::rows ? "rows" : "transposed";
  m["matrix"] = w.matrix.shape;
  file.metadata[kMetadataPrefix + w.name] = m.dump();
  if (!file.metadata.count("format")) file.metadata["format"] = "pt";  // the convention of PyTorch checkpoints
  file.metadata["producer"] = std::string("qcast ") + version_string;
}

std::vector<PackedWeight> quantized_weights(const SafetensorsFile& file, const std::string& path) {
  std::vector<PackedWeight> out;
  for (const auto& t : file.tensors) {
    const auto meta = file.metadata.find(kMetadataPrefix + t.name);
    if (meta == file.metadata.end()) continue;
    const std::string where = "weight " + detail::quoted_text(t.name);
    PackedWeight w;
    w.name = t.name;
    try {
      const Json m = Json::parse(meta->second);
      w.matrix.format = parse_format(m.at("format").get<std::string>());
      w.shape = m.at("shape").get<std::vector<std::int64_t>>();
      const std::string layout = m.at("layout").get<std::string>();
      if (layout != "rows" && layout != "transposed") fail(path, where + ": unknown layout " + detail::quoted_text(layout));
      w.layout = layout == "rows" ? WeightLayout::rows : WeightLayout::transposed;
      w.matrix.shape = m.at("matrix").get<std::vector<std::int64_t>>();
    } catch (const SafetensorsError&) {
      throw;
    } catch (const std::exception& e) {
      fail(path, where + ": its metadata is not what qcast writes (" + e.what() + ")");
    }
    const Format& f = w.matrix.format;
    if (w.matrix.shape.size() != 2) fail(path, where + ": the matrix needs 2 dimensions");
    std::int64_t elements = 0, matrix_elements = 0, groups = 0;
    try {
      elements = checked_elements(w.shape, where);
      matrix_elements = checked_elements(w.matrix.shape, where);
      groups = f.is_scaled() ? detail::GroupLayout(w.matrix.shape, f).groups() : 0;
    } catch (const std::exception& e) {
      fail(path, e.what());
    }
    if (elements != matrix_elements ||
        (w.layout == WeightLayout::transposed && (w.shape.size() < 2 || w.matrix.shape[1] != w.shape[w.shape.size() - 2])))
      fail(path, where + ": matrix " + shape_text(w.matrix.shape) + " is not the parameter of shape " + shape_text(w.shape));
    auto bytes_of = [&](const std::string& name, std::size_t expected) {
      const SafetensorsTensor* s = file.find(name);
      if (!s) fail(path, where + ": tensor " + detail::quoted_text(name) + " is missing");
      if (s->data.size() != expected)
        fail(path, "tensor " + detail::quoted_text(name) + " holds " + std::to_string(s->data.size()) +
                       " bytes; the weight's shape and format need " + std::to_string(expected));
      return s->data;
    };
    w.matrix.codes = bytes_of(t.name, packed_size(std::size_t(elements), f.element.bits()));
    if (f.is_scaled()) w.matrix.scales = bytes_of(t.name + "_scale", packed_size(std::size_t(groups), f.scale_storage_bits()));
    if (f.tensor_scale) {
      const auto b = bytes_of(t.name + "_scale_2", 4);
      std::uint32_t u = 0;
      for (int i = 0; i < 4; ++i) u |= std::uint32_t(b[std::size_t(i)]) << (8 * i);
      std::memcpy(&w.matrix.tensor_scale, &u, 4);
    }
    out.push_back(std::move(w));
  }
  return out;
}

}  // namespace qcast
