// Writing a file so that readers never see half of it and a failure loses nothing: the bytes go to a
// temporary file beside the target, which is renamed over it once complete.
#pragma once
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <stdexcept>
#include <string>

namespace qcast::detail {

// Calls write(stream) on a temporary file beside `path`, then renames it to `path`. Throws
// std::runtime_error (message prefixed by `what`) when the file cannot be written or moved.
template <class Write>
void write_file_atomically(const std::string& path, const std::string& what, Write&& write) {
  std::random_device rd;
  const std::string tmp = path + ".tmp" + std::to_string(rd());
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (!f) throw std::runtime_error(what + ": cannot open " + tmp + " for writing");
    try {
      write(f);
    } catch (...) {
      f.close();
      std::remove(tmp.c_str());
      throw;
    }
    f.flush();
    if (!f) {
      f.close();
      std::remove(tmp.c_str());
      throw std::runtime_error(what + ": write failed (disk full?)");
    }
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    std::remove(tmp.c_str());
    throw std::runtime_error(what + ": cannot move the finished file into place: " + ec.message());
  }
}

}  // namespace qcast::detail
