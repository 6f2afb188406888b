// Loading a TorchScript model with errors that name the path, and saving one atomically
// (engine.hpp: load_model, save_model).
#include <filesystem>
#include <stdexcept>

#include "qcast/detail/atomic_file.hpp"
#include "qcast/ptq/engine.hpp"
#include "archive_check.hpp"
#include "error_text.hpp"
#include <caffe2/serialize/inline_container.h>
#include <torch/csrc/jit/serialization/import.h>

#include <sstream>

namespace qcast::ptq {
namespace {


// What a file that torch::jit::load rejects is, for the error message: TorchScript archives hold
// constants.pkl and code/; torch.save archives (a state_dict, a tensor, a pickled nn.Module) hold
// data.pkl alone.
std::string what_the_file_is(const std::string& path) {
  try {
    caffe2::serialize::PyTorchStreamReader reader(path);
    bool code = false, data = false;
    for (const std::string& r : reader.getAllRecords()) {
      code = code || r == "constants.pkl" || r.rfind("code/", 0) == 0;
      data = data || r == "data.pkl";
    }
    if (data && !code)
      return "a file saved by torch.save (a state_dict, a tensor or a pickled module), not a TorchScript model; "
             "save the model with torch.jit.save(torch.jit.script(model), path) or torch.jit.trace";
    return "a zip archive that is not a loadable TorchScript model";
  } catch (const std::exception&) {
    return "not a TorchScript model: not a readable zip archive (corrupt, truncated or another kind of file)";
  }
}

}  // namespace

torch::jit::Module load_model(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) throw std::invalid_argument(path + ": is a folder, not a model file");
  if (!std::filesystem::exists(path, ec)) throw std::invalid_argument(path + ": no such file");
  if (!std::filesystem::is_regular_file(path, ec)) throw std::invalid_argument(path + ": is not a regular file");
  try {
    {  // LibTorch trusts the archive's sizes and pickles: checked first (archive_check.hpp)
      caffe2::serialize::PyTorchStreamReader reader(path);
      detail::check_torch_archive(reader, std::filesystem::file_size(path));
    }
    // Without the debug files (source text and ranges for tracebacks): a compilation error's what()
    // reads them lazily, inside a noexcept function, and a damaged one ends the process there
    // (found with mutated models). The model runs the same; its saved copy carries no debug files.
    return torch::jit::load(path, std::nullopt, /*load_debug_files=*/false);
  } catch (const std::exception& e) {
    const std::string why = detail::error_summary(e);
    const std::string what = what_the_file_is(path);
    // LibTorch's reason is added where it helps; for a torch.save file it says "corrupted", which misleads.
    throw std::invalid_argument(path + ": " + what + (what.rfind("a file saved by", 0) == 0 ? "" : " (" + why + ")"));
  }
}

void save_model(const torch::jit::Module& model, std::ostream& out) {
  // Serialized in memory first: LibTorch's archive writer fails badly on a stream that stops
  // accepting bytes (disk full), and the caller's stream then gets the whole archive or nothing.
  std::ostringstream archive;
  model.save(archive);
  const std::string bytes = std::move(archive).str();
  out.write(bytes.data(), std::streamsize(bytes.size()));
}

void save_model(const torch::jit::Module& model, const std::string& path, const std::string& protect) {
  try {
    qcast::detail::OutputSet out({{"", path}}, {protect});
    out.write(0, [&](std::ostream& f) { save_model(model, f); });
    out.commit();
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument(std::string(e.what()) + " (refusing to write the output over the input model)");
  } catch (const c10::Error& e) {
    throw std::runtime_error(path + ": cannot write the model (" + detail::error_summary(e) + ")");
  }
}

}  // namespace qcast::ptq
