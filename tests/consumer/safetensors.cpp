// The safetensors component from an installed qcast: a quantized weight written and read back.
#include <qcast/qcast.hpp>
#include <qcast/safetensors.hpp>

#include <sstream>
#include <string>
#include <vector>

int main() {
  std::vector<float> w(64);
  for (std::size_t i = 0; i < w.size(); ++i) w[i] = float(i) * 0.25f - 8.0f;
  qcast::PackedWeight p;
  p.name = "layer.weight";
  p.shape = {2, 32};
  qcast::Format f = qcast::parse_format("mxfp4");
  f.axis = -1;
  p.matrix = qcast::encode(w.data(), {2, 32}, f);
  qcast::SafetensorsFile file;
  qcast::add_quantized_weight(file, p);
  std::ostringstream out;
  qcast::write_safetensors(out, file);
  const std::string b = out.str();
  const auto back = qcast::quantized_weights(
      qcast::parse_safetensors(reinterpret_cast<const std::uint8_t*>(b.data()), b.size(), "mem"), "mem");
  return back.size() == 1 && qcast::decode_weight(back[0]) == qcast::decode_weight(p) ? 0 : 1;
}
