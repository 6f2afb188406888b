// A module's parameter by its path, for the PTQ tests (Catch must be included first).
#pragma once
#include <torch/csrc/jit/api/module.h>

#include <string>

namespace qcast_test {

inline at::Tensor param(const torch::jit::Module& m, const std::string& name) {
  for (const auto& p : m.named_parameters(true))
    if (p.name == name) return p.value;
  FAIL("no parameter " << name);
  return {};
}

}  // namespace qcast_test
