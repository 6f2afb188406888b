// Fuzz target: the .qpack reader (read_qpack) and decode_weight. Any bytes either read or throw
// QpackError; every entry that was read decodes to as many values as its shape holds.
#include <cstddef>
#include <cstdint>
#include <sstream>
#include <string>

#include "qcast/qpack.hpp"
#include "fuzz_check.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::istringstream in(std::string(reinterpret_cast<const char*>(data), size));
  std::vector<qcast::PackedWeight> weights;
  try {
    weights = qcast::read_qpack(in, size, "fuzz.qpack");
  } catch (const qcast::QpackError&) {
    return 0;
  }
  for (const qcast::PackedWeight& w : weights) {
    const std::vector<float> v = qcast::decode_weight(w);
    QCAST_FUZZ_CHECK(std::int64_t(v.size()) == qcast::checked_elements(w.shape, w.name));
  }
  return 0;
}
