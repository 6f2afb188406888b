// Quantized weights as safetensors (https://github.com/huggingface/safetensors: an 8-byte
// little-endian header length, a JSON header, then the tensors' bytes), readable by
// `safetensors.torch.load_file` with PyTorch's low-precision dtypes, and by this library without
// LibTorch. Compiled in qcast::safetensors (its JSON parser is private); docs/safetensors.md has
// the layout, the dtype of every format and how the files compare with torchao's tensors.
#pragma once
#include <cstdint>
#include <iosfwd>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "qcast/qpack.hpp"

namespace qcast {

struct SafetensorsError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct SafetensorsTensor {
  std::string name;
  std::string dtype;                // safetensors' name: "F32", "F8_E4M3", "F8_E8M0", "F4", "U8", ...
  std::vector<std::int64_t> shape;  // in elements of dtype (F4: 4-bit elements)
  std::vector<std::uint8_t> data;   // little-endian, row-major
};

struct SafetensorsFile {
  std::map<std::string, std::string> metadata;  // the header's "__metadata__"
  std::vector<SafetensorsTensor> tensors;       // in file order
  const SafetensorsTensor* find(const std::string& name) const;
};

// Bits per element of a safetensors dtype; 0 when the dtype is unknown.
int safetensors_dtype_bits(const std::string& dtype);

// Strict reading: a header longer than the file or than 100 MB, malformed JSON, an unknown dtype,
// a shape whose bytes differ from the tensor's byte range, ranges that overlap, leave holes or run
// past the file: a SafetensorsError naming `path`. Nothing larger than the file is allocated.
SafetensorsFile parse_safetensors(const std::uint8_t* bytes, std::size_t size, const std::string& path);
SafetensorsFile read_safetensors(const std::string& path);

// Tensors in the order given (names unique), the header padded with spaces to 8 bytes.
void write_safetensors(std::ostream& out, const SafetensorsFile& file);

// Adds one quantized weight: `<name>` its element codes, `<name>_scale` its scale codes (scaled
// formats) and `<name>_scale_2` the float32 tensor scale (two-level formats), each with the
// PyTorch dtype of its format where one exists (U8 bytes otherwise), and metadata "qcast:<name>"
// with the format, the parameter's shape and layout (JSON text).
void add_quantized_weight(SafetensorsFile& file, const PackedWeight& weight);

// Every weight that add_quantized_weight wrote, in file order, checked against its metadata
// (decode_weight gives the dequantized parameter).
std::vector<PackedWeight> quantized_weights(const SafetensorsFile& file, const std::string& path);

}  // namespace qcast
