// 04: a quantized checkpoint in inference code, without LibTorch. Reads the safetensors file that
// `qcast quantize --export OUT.safetensors` wrote, decodes one linear layer's weight from its codes
// and scales, takes its bias as stored, and runs y = W·x + b on an input read from stdin (one
// number per input feature); prints y, one number per line.
//   04_safetensors_layer OUT.safetensors LAYER < x.txt     (LAYER: e.g. "0" for 0.weight, 0.bias)
#include <cstdio>
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

#include "qcast/safetensors.hpp"

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s OUT.safetensors LAYER < x.txt\n", argv[0]);
    return 2;
  }
  const std::string path = argv[1], layer = argv[2];
  try {
    const qcast::SafetensorsFile file = qcast::read_safetensors(path);
    const qcast::PackedWeight* weight = nullptr;
    const std::vector<qcast::PackedWeight> weights = qcast::quantized_weights(file, path);
    for (const auto& w : weights)
      if (w.name == layer + ".weight") weight = &w;
    if (!weight) {
      std::fprintf(stderr, "%s: no quantized weight %s.weight\n", path.c_str(), layer.c_str());
      return 1;
    }
    if (weight->shape.size() != 2) {
      std::fprintf(stderr, "%s.weight is not a linear layer's [out, in] weight\n", layer.c_str());
      return 1;
    }
    const std::int64_t out = weight->shape[0], in = weight->shape[1];
    const std::vector<float> w = qcast::decode_weight(*weight);  // codes x block scales (x tensor scale)
    std::vector<float> b(std::size_t(out), 0.0f);
    if (const qcast::SafetensorsTensor* bias = file.find(layer + ".bias")) {
      if (bias->dtype != "F32" || bias->data.size() != b.size() * 4) {
        std::fprintf(stderr, "%s.bias is not %lld float32 values\n", layer.c_str(), static_cast<long long>(out));
        return 1;
      }
      std::memcpy(b.data(), bias->data.data(), bias->data.size());  // little-endian, as the host
    }
    std::vector<float> x;
    for (float v; std::cin >> v;) x.push_back(v);
    if (std::int64_t(x.size()) != in) {
      std::fprintf(stderr, "expected %lld input values, got %zu\n", static_cast<long long>(in), x.size());
      return 1;
    }
    std::fprintf(stderr, "%s: %s.weight [%lld, %lld] in %s\n", path.c_str(), layer.c_str(), static_cast<long long>(out),
                 static_cast<long long>(in), qcast::format_name(weight->matrix.format).c_str());
    for (std::int64_t o = 0; o < out; ++o) {
      double y = b[std::size_t(o)];
      for (std::int64_t i = 0; i < in; ++i) y += double(w[std::size_t(o * in + i)]) * x[std::size_t(i)];
      std::printf("%.9g\n", y);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
  return 0;
}
