// Fuzz target: format names (parse_format). Any text either parses or throws FormatError with a
// bounded message; a parsed format prints a name that parses back to the same format, and the
// reference cast of a small tensor in it runs.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "qcast/cast.hpp"
#include "qcast/format_names.hpp"
#include "fuzz_check.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  qcast::Format f;
  try {
    f = qcast::parse_format(text);
  } catch (const qcast::FormatError& e) {
    // The message quotes at most 64 characters of the name, whatever its length.
    QCAST_FUZZ_CHECK(std::string_view(e.what()).size() < 2048);
    return 0;
  }
  const std::string name = qcast::format_name(f);
  QCAST_FUZZ_CHECK(qcast::parse_format(name) == f);
  if (f.granularity == qcast::Granularity::block && f.block_size > 4096) return 0;  // keep runs short
  std::vector<float> x(2 * 48), y(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = float(int(i) - 40) * 0.37f;
  try {
    qcast::cast(x.data(), y.data(), {2, 48}, f);
  } catch (const std::invalid_argument&) {  // e.g. an axis beyond rank 2: a clear error
  }
  return 0;
}
