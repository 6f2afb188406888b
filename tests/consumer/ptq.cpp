// The PTQ engine from an installed qcast: round-to-nearest of a one-layer TorchScript module.
#include <qcast/format_names.hpp>
#include <qcast/ptq/engine.hpp>

#include <torch/script.h>

int main() {
  torch::jit::Module m("Net");
  m.register_parameter("weight", at::randn({8, 64}), false);
  m.define("def forward(self, x):\n  return torch.linear(x, self.weight)\n");
  qcast::ptq::Options o;
  o.format = qcast::parse_format("int4@g32");
  o.method = "rtn";
  const qcast::ptq::Result r = qcast::ptq::quantize(m, {}, o);
  return r.report.layers.size() == 1 && r.report.layers[0].status == "quantized" &&
                 r.report.quantized_bytes() < r.report.float_bytes()
             ? 0
             : 1;
}
