// Loading a TorchScript model with errors that name the path, and saving one atomically
// (engine.hpp: load_model, save_model).
#include <filesystem>
#include <stdexcept>

#include "qcast/detail/atomic_file.hpp"
#include "qcast/ptq/engine.hpp"
#include <torch/csrc/jit/serialization/import.h>

namespace qcast::ptq {
namespace {

std::string first_line(const std::string& s) { return s.substr(0, s.find('\n')); }

}  // namespace

torch::jit::Module load_model(const std::string& path) {
  if (!std::filesystem::is_regular_file(path)) throw std::invalid_argument(path + ": no such file");
  try {
    return torch::jit::load(path);
  } catch (const std::exception& e) {
    throw std::invalid_argument(path + ": not a TorchScript model (" + first_line(e.what()) + ")");
  }
}

void save_model(const torch::jit::Module& model, const std::string& path, const std::string& protect) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!protect.empty() && fs::exists(path) && fs::equivalent(path, protect, ec))
    throw std::invalid_argument(path + ": refusing to write the output over the input model");
  try {
    qcast::detail::write_file_atomically(path, path, [&](std::ofstream& f) { model.save(f); });
  } catch (const std::exception& e) {
    throw std::runtime_error(path + ": cannot write the model (" + first_line(e.what()) + ")");
  }
}

}  // namespace qcast::ptq
