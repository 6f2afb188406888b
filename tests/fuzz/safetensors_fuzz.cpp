// Fuzz target: the safetensors reader (parse_safetensors), the quantized weights it describes
// (quantized_weights) and decode_weight. Any bytes either read or throw SafetensorsError; a file
// that was read writes back to a file that reads the same; every weight decodes to as many values
// as its shape holds.
#include <cstddef>
#include <cstdint>
#include <sstream>
#include <string>

#include "qcast/safetensors.hpp"
#include "fuzz_check.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  qcast::SafetensorsFile file;
  std::vector<qcast::PackedWeight> weights;
  try {
    file = qcast::parse_safetensors(data, size, "fuzz.safetensors");
    weights = qcast::quantized_weights(file, "fuzz.safetensors");
  } catch (const qcast::SafetensorsError&) {
    return 0;
  }
  std::ostringstream out;
  qcast::write_safetensors(out, file);
  const std::string again = out.str();
  const qcast::SafetensorsFile back =
      qcast::parse_safetensors(reinterpret_cast<const std::uint8_t*>(again.data()), again.size(), "again");
  QCAST_FUZZ_CHECK(back.tensors.size() == file.tensors.size() && back.metadata == file.metadata);
  for (std::size_t i = 0; i < back.tensors.size(); ++i)
    QCAST_FUZZ_CHECK(back.tensors[i].name == file.tensors[i].name && back.tensors[i].data == file.tensors[i].data);
  for (const qcast::PackedWeight& w : weights) {
    const std::vector<float> v = qcast::decode_weight(w);
    QCAST_FUZZ_CHECK(std::int64_t(v.size()) == qcast::checked_elements(w.shape, w.name));
  }
  return 0;
}
