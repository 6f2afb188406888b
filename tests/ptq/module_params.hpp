// A module's parameter by its path, and small models, for the PTQ tests (Catch must be included first).
#pragma once
#include <torch/csrc/jit/api/module.h>

#include <cstdint>
#include <string>

namespace qcast_test {

inline at::Tensor param(const torch::jit::Module& m, const std::string& name) {
  for (const auto& p : m.named_parameters(true))
    if (p.name == name) return p.value;
  FAIL("no parameter " << name);
  return {};
}

// Three linear layers width x width with tanh between them (weights randn / scale, seed first).
inline torch::jit::Module tanh_mlp(std::int64_t width, double scale, std::uint64_t seed) {
  at::manual_seed(seed);
  torch::jit::Module m("Mlp");
  for (int i = 0; i < 3; ++i) m.register_parameter("w" + std::to_string(i), at::randn({width, width}) / scale, false);
  m.define(R"(
def forward(self, x):
    x = torch.tanh(torch.linear(x, self.w0))
    x = torch.tanh(torch.linear(x, self.w1))
    return torch.linear(x, self.w2)
)");
  return m;
}

}  // namespace qcast_test
