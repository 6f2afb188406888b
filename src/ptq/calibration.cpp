// Calibration data from torch.save files and .npy folders (engine.hpp: load_calibration).
#include <ATen/ATen.h>
#include <torch/csrc/jit/serialization/import_read.h>

#include <algorithm>
#include <filesystem>
#include <stdexcept>

#include "qcast/npy.hpp"
#include "qcast/ptq/engine.hpp"
#include "error_text.hpp"
#include "archive_check.hpp"

namespace qcast::ptq {
namespace {


// Calibration inputs must be finite: a NaN or Inf would reach the statistics of every layer after
// it and fail there. Names the file, the input and the first sample that holds one.
void check_finite(const at::Tensor& t, const std::string& where) {
  if (!t.is_floating_point() || t.numel() == 0 || at::isfinite(t).all().item<bool>()) return;
  const at::Tensor bad = at::logical_not(at::isfinite(t.reshape({t.size(0), -1}))).any(1);
  const std::int64_t sample = bad.nonzero()[0][0].item<std::int64_t>();
  throw std::invalid_argument(where + ": sample " + std::to_string(sample) +
                              " holds NaN or Inf (calibration data must be finite)");
}

std::vector<Batch> load_sources(const std::string& path, std::int64_t batch_size, std::int64_t samples);

}  // namespace

std::vector<Batch> load_calibration(const std::string& path, std::int64_t batch_size, std::int64_t samples) {
  try {
    return load_sources(path, batch_size, samples);
  } catch (const std::bad_alloc&) {
    throw std::runtime_error(path + ": out of memory reading the calibration data");
  } catch (const c10::Error& e) {
    throw std::invalid_argument(path + ": " + detail::error_summary(e));
  }
}

namespace {

std::vector<Batch> load_sources(const std::string& path, std::int64_t batch_size, std::int64_t samples) {
  namespace fs = std::filesystem;
  if (batch_size < 1) throw std::invalid_argument("the batch size must be at least 1");
  // Sources: lists of tensors (one per model input) sharing their first dimension.
  std::vector<std::vector<at::Tensor>> sources;
  if (fs::is_directory(path)) {
    std::vector<std::string> files;
    for (const auto& e : fs::directory_iterator(path))
      if (e.is_regular_file() && e.path().extension() == ".npy") files.push_back(e.path().string());
    std::sort(files.begin(), files.end());
    if (files.empty()) throw std::invalid_argument(path + ": the folder holds no .npy files");
    for (const auto& f : files) {
      const NpyArray a = read_npy(f);  // NpyError names the file
      if (a.shape.empty()) throw std::invalid_argument(f + ": a calibration array needs a first (sample) dimension");
      const std::vector<float> v = a.to_float();
      sources.push_back({at::from_blob(const_cast<float*>(v.data()), a.shape, at::kFloat).clone()});
      check_finite(sources.back()[0], f);
    }
  } else if (fs::is_regular_file(path)) {
    c10::IValue v;
    try {
      // torch::jit::pickle_load(bytes) would do the same, but its in-memory reader copies what the
      // zip directory asks for without bounds checks (a corrupt file crashed it under fuzzing);
      // the file reader clamps every read to the file.
      caffe2::serialize::PyTorchStreamReader reader(path);
      // LibTorch allocates what the archive claims before it reads: no record may claim more than
      // the file holds (torch.save stores records uncompressed), and the pickle's own lengths must
      // fit in it (scan_pickle).
      if (!reader.hasRecord("data.pkl")) throw std::invalid_argument("the archive has no data.pkl");
      detail::check_torch_archive(reader, fs::file_size(path));
      v = torch::jit::readArchiveAndTensors("data", /*pickle_prefix=*/"", /*tensor_prefix=*/"", std::nullopt,
                                            std::nullopt, std::nullopt, reader);
    } catch (const std::exception& e) {
      throw std::invalid_argument(path + ": not a tensor saved by torch.save (" + detail::error_summary(e) + ")");
    }
    std::vector<at::Tensor> inputs;
    if (v.isTensor()) inputs.push_back(v.toTensor());
    else if (v.isTuple())
      for (const auto& e : v.toTupleRef().elements()) inputs.push_back(e.isTensor() ? e.toTensor() : at::Tensor());
    else if (v.isList())
      for (const auto& e : v.toListRef()) inputs.push_back(e.isTensor() ? e.toTensor() : at::Tensor());
    if (inputs.empty()) throw std::invalid_argument(path + ": holds a " + v.tagKind() + ", not a tensor or a tuple of tensors");
    for (std::size_t i = 0; i < inputs.size(); ++i) {
      if (!inputs[i].defined()) throw std::invalid_argument(path + ": element " + std::to_string(i) + " is not a tensor");
      if (inputs[i].dim() == 0 || inputs[i].size(0) != inputs[0].size(0))
        throw std::invalid_argument(path + ": every tensor needs the same first (sample) dimension");
    }
    for (std::size_t i = 0; i < inputs.size(); ++i)
      check_finite(inputs[i], inputs.size() == 1 ? path : path + ", tensor " + std::to_string(i));
    sources.push_back(inputs);
  } else {
    std::error_code ec;
    throw std::invalid_argument(path + (fs::exists(path, ec) ? ": is neither a regular file nor a folder" : ": no such file or folder"));
  }
  std::vector<Batch> batches;
  std::int64_t taken = 0;
  for (const auto& src : sources) {
    const std::int64_t n = src.front().size(0);
    for (std::int64_t i = 0; i < n && (samples < 0 || taken < samples); i += batch_size) {
      std::int64_t k = std::min(batch_size, n - i);
      if (samples >= 0) k = std::min(k, samples - taken);
      Batch b;
      for (const auto& t : src) b.emplace_back(t.narrow(0, i, k));
      batches.push_back(std::move(b));
      taken += k;
    }
  }
  if (batches.empty()) throw std::invalid_argument(path + ": no calibration samples");
  return batches;
}

}  // namespace

}  // namespace qcast::ptq
