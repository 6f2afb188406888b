// Fuzz target: the .npy reader (parse_npy). Any bytes either parse or throw NpyError/SizeError; a
// parsed array's payload is exactly its shape's size, and writing it back and reading that gives
// the same shape and values.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

#include "qcast/npy.hpp"
#include "fuzz_check.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  qcast::NpyArray a;
  try {
    a = qcast::parse_npy(std::vector<std::uint8_t>(data, data + size), "fuzz.npy");
  } catch (const qcast::NpyError&) {
    return 0;
  } catch (const qcast::SizeError&) {
    return 0;
  }
  const std::int64_t n = a.elements();
  QCAST_FUZZ_CHECK(a.data.size() == std::size_t(n) * (a.dtype == qcast::DType::f32 ? 4 : 2));
  const std::vector<float> v = a.to_float();
  std::ostringstream out;
  qcast::write_npy(out, a.shape, v.data());
  const std::string bytes = out.str();
  const qcast::NpyArray b = qcast::parse_npy(std::vector<std::uint8_t>(bytes.begin(), bytes.end()), "rewritten.npy");
  QCAST_FUZZ_CHECK(b.shape == a.shape);
  const std::vector<float> w = b.to_float();
  QCAST_FUZZ_CHECK(w.size() == v.size() && (v.empty() || std::memcmp(w.data(), v.data(), v.size() * 4) == 0));
  return 0;
}
