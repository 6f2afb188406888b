// Checks of a PyTorch zip archive (torch.save or torch.jit.save) before LibTorch reads it: LibTorch
// allocates what the archive claims before it reads, so no record may claim more bytes than the
// file holds (PyTorch stores records uncompressed) and every pickle in it must be well framed
// (scan_pickle). Found necessary by fuzzing the calibration loader (docs/reliability.md).
#pragma once
#include <caffe2/serialize/inline_container.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "pickle_scan.hpp"

namespace qcast::ptq::detail {

inline void check_torch_archive(caffe2::serialize::PyTorchStreamReader& reader, std::uint64_t file_bytes) {
  for (const std::string& r : reader.getAllRecords()) {
    const std::uint64_t size = reader.getRecordSize(r);
    if (size > file_bytes)
      throw std::invalid_argument("record " + r + " claims " + std::to_string(size) + " bytes, more than the file's " +
                                  std::to_string(file_bytes));
    const bool pickle = r.size() > 4 && r.compare(r.size() - 4, 4, ".pkl") == 0;
    if (!pickle) continue;
    const auto [data, bytes] = reader.getRecord(r);
    try {
      scan_pickle(static_cast<const unsigned char*>(data.get()), bytes);
    } catch (const std::invalid_argument& e) {
      throw std::invalid_argument(r + ": " + e.what());
    }
  }
}

}  // namespace qcast::ptq::detail
