// 01: the format core alone (no LibTorch). Fake-quantize a small weight matrix to MXFP4 and NVFP4,
// encode it to packed bits, decode it back, and report the error.
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "qcast/qcast.hpp"

int main() {
  const qcast::Shape shape{64, 256};
  std::vector<float> w(64 * 256);
  std::mt19937 rng(0);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  for (auto& v : w) v = normal(rng);

  for (const char* name : {"fp8_e4m3", "mxfp8_e4m3", "mxfp4", "nvfp4", "int4@g128"}) {
    const qcast::Format format = qcast::parse_format(name);

    std::vector<float> fake(w.size());
    qcast::cast(w.data(), fake.data(), shape, format);  // rounding: nearest-even, saturating

    const qcast::Encoded packed = qcast::encode(w.data(), shape, format);
    std::vector<float> decoded(w.size());
    qcast::decode(packed, decoded.data());

    double err = 0, ref = 0;
    bool identical = true;
    for (std::size_t i = 0; i < w.size(); ++i) {
      err += (fake[i] - w[i]) * double(fake[i] - w[i]);
      ref += double(w[i]) * w[i];
      identical = identical && decoded[i] == fake[i];
    }
    std::printf("%-11s %5.2f bits/elem  %6zu code bytes + %4zu scale bytes  rel. error %.4f  decode==cast: %s\n",
                qcast::format_name(format).c_str(), format.bits_per_element(), packed.codes.size(),
                packed.scales.size(), std::sqrt(err / ref), identical ? "yes" : "NO");
    if (!identical) return 1;
  }
  return 0;
}
