// The PTQ engine on a CUDA device (--device cuda): both streams and the Gram sums run on the GPU, the
// solves on the CPU, the saved model is on the CPU. RTN gives the CPU's bits (it reads no statistics);
// GPTQ and ED give the same bits on every run and output errors within float64 rounding of the CPU's
// (the GPU sums in another order, docs/ptq.md).
#include <ATen/ATen.h>
#undef CHECK
#include <catch2/catch.hpp>

#include "qcast/format_names.hpp"
#include "qcast/ptq/engine.hpp"

namespace ptq = qcast::ptq;

namespace {

torch::jit::Module conv_mlp() {
  at::manual_seed(31);
  torch::jit::Module m("ConvMlp");
  m.register_parameter("conv", at::randn({16, 3, 3, 3}) * 0.3, false);
  m.register_parameter("fc1", at::randn({64, 16}) * 0.25, false);
  m.register_parameter("fc2", at::randn({8, 64}) * 0.2, false);
  m.define(R"(
def forward(self, x):
    y = torch.relu(torch.conv2d(x, self.conv, None, [1, 1], [1, 1], [1, 1], 1)).mean([2, 3])
    y = torch.tanh(torch.linear(y, self.fc1))
    return torch.linear(y, self.fc2)
)");
  return m;
}

}  // namespace

TEST_CASE("ptq on --device cuda: rtn equals the CPU, gptq and ed are repeatable and agree with the CPU") {
  const torch::jit::Module model = conv_mlp();
  at::manual_seed(32);
  std::vector<ptq::Batch> calib;
  for (int i = 0; i < 3; ++i) calib.push_back({at::rand({8, 3, 12, 12})});
  for (const std::string method : {"rtn", "gptq", "ed"}) {
    INFO(method);
    ptq::Options o;
    o.format = qcast::parse_format("mxfp4");
    o.method = method;
    const ptq::Result cpu = ptq::quantize(model, calib, o);
    o.device = "cuda";
    const ptq::Result gpu = ptq::quantize(model, calib, o);
    const ptq::Result again = ptq::quantize(model, calib, o);
    CHECK(gpu.report.device.rfind("cuda", 0) == 0);
    for (const auto& p : gpu.model.named_parameters(true)) {
      INFO(p.name);
      CHECK(p.value.device().is_cpu());
      at::Tensor c, a;
      for (const auto& q : cpu.model.named_parameters(true))
        if (q.name == p.name) c = q.value;
      for (const auto& q : again.model.named_parameters(true))
        if (q.name == p.name) a = q.value;
      CHECK(at::equal(p.value, a));
      if (method == "rtn") CHECK(at::equal(p.value, c));
    }
    for (const auto& pw : gpu.packed) {
      at::Tensor w;
      for (const auto& q : gpu.model.named_parameters(true))
        if (q.name == pw.name) w = q.value;
      const auto decoded = qcast::decode_weight(pw);
      const at::Tensor flat = w.contiguous().reshape({-1});
      CHECK(std::vector<float>(flat.data_ptr<float>(), flat.data_ptr<float>() + flat.numel()) == decoded);
    }
    for (std::size_t l = 0; l < cpu.report.layers.size(); ++l)
      CHECK(gpu.report.layers[l].relative_error == Approx(cpu.report.layers[l].relative_error).epsilon(1e-3));
  }
}
