// What the reference says when it refuses an input, for tests that require the kernels to say the same.
#pragma once
#include <stdexcept>
#include <string>
#include <vector>

#include "qcast/cast.hpp"

namespace qcast_test {

// The message of the std::domain_error that qcast::encode throws for x, or "" if it throws none.
inline std::string reference_encode_error(const std::vector<float>& x, const qcast::Shape& shape,
                                          const qcast::Format& f) {
  try {
    qcast::encode(x.data(), shape, f);
  } catch (const std::domain_error& e) {
    return e.what();
  }
  return {};
}

}  // namespace qcast_test
