// A module's parameter by its path, and small models, for the PTQ tests (Catch must be included first).
#pragma once
#include <ATen/ATen.h>
#include <torch/csrc/jit/api/module.h>

#include <cstdint>
#include <string>
#include <vector>

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

// Convolutions (a stem on 3 channels, a grouped one with 2 channels per group), in-place
// operations, control flow, two model inputs, a linear weight used twice with another layer between
// its uses, and attention whose q, k and v read one value through matmul.
inline torch::jit::Module pipeline_model() {
  at::manual_seed(5);
  torch::jit::Module m("PipelineNet");
  m.register_parameter("stem", at::randn({8, 3, 3, 3}) * 0.3, false);
  m.register_parameter("grouped", at::randn({8, 2, 3, 3}) * 0.3, false);
  m.register_parameter("a", at::randn({24, 24}) * 0.25, false);
  m.register_parameter("b", at::randn({24, 24}) * 0.25, false);
  m.register_parameter("wq", at::randn({6, 6}) * 0.4, false);
  m.register_parameter("wk", at::randn({6, 6}) * 0.4, false);
  m.register_parameter("wv", at::randn({6, 6}) * 0.4, false);
  m.register_parameter("out", at::randn({5, 24}) * 0.3, false);
  m.define(R"(
def forward(self, x, extra):
    y = torch.conv2d(x, self.stem, None, [1, 1], [1, 1], [1, 1], 1)
    y = torch.relu_(y)
    y = y + torch.conv2d(y, self.grouped, None, [1, 1], [1, 1], [1, 1], 4)
    z = torch.cat([y.mean([2, 3]), extra], 1)
    if bool(z.sum() > 0.0):
        z = z * 0.5
    else:
        z = z * 2.0
    h = torch.linear(z, self.a)
    g = torch.linear(h, self.b)
    g.tanh_()
    h = torch.linear(g, self.a)
    t = h.reshape(-1, 4, 6)
    q = torch.matmul(t, self.wq)
    k = torch.matmul(t, self.wk)
    v = torch.matmul(t, self.wv)
    att = torch.softmax(torch.matmul(q, k.transpose(1, 2)), -1)
    o = torch.matmul(att, v)
    o.add_(t)
    return torch.linear(o.reshape(-1, 24), self.out)
)");
  return m;
}

// Convolutions only, with biases: 3x3 from 3 channels to 32, 1x1 to 64 and 3x3 back to 16, ReLU
// between them. ATen runs the 1x1 one by oneDNN from 16 samples and by im2col below, unless told
// otherwise, and the two add the bias in another order.
inline torch::jit::Module conv_stack(std::uint64_t seed) {
  at::manual_seed(seed);
  torch::jit::Module m("ConvStack");
  m.register_parameter("c0", at::randn({32, 3, 3, 3}) * 0.3, false);
  m.register_parameter("c1", at::randn({64, 32, 1, 1}) * 0.2, false);
  m.register_parameter("c2", at::randn({16, 64, 3, 3}) * 0.05, false);
  m.register_parameter("b0", at::randn({32}) * 0.1, false);
  m.register_parameter("b1", at::randn({64}) * 0.1, false);
  m.register_parameter("b2", at::randn({16}) * 0.1, false);
  m.define(R"(
def forward(self, x):
    y = torch.relu(torch.conv2d(x, self.c0, self.b0, [1, 1], [1, 1], [1, 1], 1))
    y = torch.relu(torch.conv2d(y, self.c1, self.b1, [1, 1], [0, 0], [1, 1], 1))
    return torch.conv2d(y, self.c2, self.b2, [1, 1], [1, 1], [1, 1], 1)
)");
  return m;
}

inline std::vector<std::vector<c10::IValue>> pipeline_calibration(int batches, std::int64_t rows) {
  at::manual_seed(6);
  std::vector<std::vector<c10::IValue>> c;
  for (int i = 0; i < batches; ++i) c.push_back({at::rand({rows, 3, 6, 6}), at::randn({rows, 16})});
  return c;
}

}  // namespace qcast_test
