// Quantize a TorchScript model's weights with Error Diffusion, from C++.
//   03_quantize_torchscript MODEL.pt CALIB.pt OUT.pt [FORMAT] [METHOD]
// CALIB.pt: a tensor saved with torch.save whose first dimension counts samples.
#include <cstdio>
#include <exception>
#include <string>

#include "qcast/format_names.hpp"
#include "qcast/ptq/engine.hpp"

int main(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(stderr, "usage: %s MODEL.pt CALIB.pt OUT.pt [FORMAT=mxfp4] [METHOD=ed]\n", argv[0]);
    return 2;
  }
  try {
    namespace ptq = qcast::ptq;
    const torch::jit::Module model = ptq::load_model(argv[1]);
    const auto calibration = ptq::load_calibration(argv[2], /*batch_size=*/32);

    ptq::Options options;
    options.format = qcast::parse_format(argc > 4 ? argv[4] : "mxfp4");
    options.method = ptq::find_method(argc > 5 ? argv[5] : "ed").name;  // rtn, gptq, ed, ...
    options.progress = [](const ptq::Progress& p) {
      if (p.phase == ptq::Progress::Phase::solve) std::fprintf(stderr, "[%d/%d] %s\n", p.layer, p.layers, p.name.c_str());
      return true;  // false would stop the run
    };

    const ptq::Result result = ptq::quantize(model, calibration, options);
    ptq::save_model(result.model, argv[3], argv[1]);               // dequantized weights, loads anywhere
    qcast::write_qpack(std::string(argv[3]) + ".qpack", result.packed);  // codes + scales for inference code
    std::fputs(result.report.table().c_str(), stdout);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
