// 02: the LibTorch adapter. Fake-quantize the weight of a linear layer to several formats and
// compare the layer's output with the float one; then pack the weight to real MXFP4 bits.
#include <torch/torch.h>

#include <cstdio>

#include "qcast/format_names.hpp"
#include "qcast/torch.hpp"

int main() {
  torch::manual_seed(0);
  torch::nn::Linear layer(512, 256);
  const torch::Tensor x = torch::randn({64, 512});
  const torch::Tensor reference = layer(x).detach();
  const torch::Tensor weight = layer->weight.detach().clone();

  for (const char* name : {"fp8_e4m3", "mxfp8_e4m3", "mxfp6_e2m3", "mxfp4", "nvfp4", "int4@g128", "int8@channel"}) {
    // Blocks run along the last axis of the weight: its input (reduction) dimension.
    const torch::Tensor wq = qcast::cast(weight, name);
    const torch::Tensor y = torch::nn::functional::linear(x, wq, layer->bias.detach());
    const double rel = ((y - reference).norm() / reference.norm()).item<double>();
    std::printf("%-13s relative output error %.4f\n", name, rel);
  }

  // bfloat16 in, bfloat16 out: the result is rounded once to bfloat16.
  const torch::Tensor wbf = qcast::cast(weight.to(torch::kBFloat16), "nvfp4");
  std::printf("bfloat16 weight -> nvfp4 keeps dtype: %s\n", wbf.scalar_type() == torch::kBFloat16 ? "yes" : "no");

  const qcast::EncodedTensor packed = qcast::encode(weight, qcast::parse_format("mxfp4"));
  const torch::Tensor decoded = qcast::decode(packed);
  std::printf("mxfp4 packed: %ld code bytes + %ld scale bytes for %ld weights; decode == cast: %s\n",
              long(packed.codes.numel()), long(packed.scales.numel()), long(weight.numel()),
              torch::equal(decoded, qcast::cast(weight, "mxfp4")) ? "yes" : "no");
  return torch::equal(decoded, qcast::cast(weight, "mxfp4")) ? 0 : 1;
}
