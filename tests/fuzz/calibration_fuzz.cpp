// Fuzz target: the calibration loader (ptq::load_calibration), on both kinds of input: the bytes as
// a torch.save file, or as the one .npy file of a calibration folder (the first byte chooses; the
// second gives the batch size). Any bytes either load or throw an exception derived from
// std::exception with the path in its message; loaded batches are non-empty, finite and no larger
// than the batch size.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include <ATen/ATen.h>

#include "qcast/ptq/engine.hpp"
#include "fuzz_check.hpp"

namespace {

const std::string& work_folder() {
  static const std::string dir = [] {
    const std::string d = (std::filesystem::temp_directory_path() / ("qcast_calibration_fuzz." + std::to_string(getpid()))).string();
    std::filesystem::create_directories(d + "/folder");
    return d;
  }();
  return dir;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2) return 0;
  const bool folder = data[0] & 1;
  const std::int64_t batch_size = 1 + data[1] % 8;
  const std::string path = folder ? work_folder() + "/folder" : work_folder() + "/calib.pt";
  {
    std::ofstream f(folder ? path + "/a.npy" : path, std::ios::binary | std::ios::trunc);
    f.write(reinterpret_cast<const char*>(data + 2), std::streamsize(size - 2));
  }
  std::vector<qcast::ptq::Batch> batches;
  try {
    batches = qcast::ptq::load_calibration(path, batch_size, -1);
  } catch (const std::exception& e) {
    QCAST_FUZZ_CHECK(std::string(e.what()).find(path) != std::string::npos);
    return 0;
  }
  QCAST_FUZZ_CHECK(!batches.empty());
  for (const auto& b : batches)
    for (const c10::IValue& v : b) {
      QCAST_FUZZ_CHECK(v.isTensor());
      const at::Tensor t = v.toTensor();
      QCAST_FUZZ_CHECK(t.dim() >= 1 && t.size(0) >= 1 && t.size(0) <= batch_size);
      if (t.is_floating_point()) QCAST_FUZZ_CHECK(at::isfinite(t).all().item<bool>());
    }
  return 0;
}
