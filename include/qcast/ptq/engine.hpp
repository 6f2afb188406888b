// The PTQ engine: walks a TorchScript module, captures each weight layer's inputs on the float model
// and on the partly quantized model, and quantizes the layers one at a time with RTN, GPTQ or Error
// Diffusion (docs/ptq.md). Needs LibTorch (target qcast::ptq); the core headers never include it.
#pragma once
#include <torch/csrc/jit/api/module.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "qcast/format.hpp"
#include "qcast/qpack.hpp"

namespace qcast::ptq {

enum class Method : std::uint8_t {
  rtn,   // round to nearest on each group's grid
  gptq,  // GPTQ (Frantar et al. 2023): OBS updates from X̂X̂ᵀ, damping, lazy batches, optional act-order
  ed,    // Error Diffusion: Ŵ·X̂ ≈ W·X column by column, from X̂X̂ᵀ and XX̂ᵀ (docs/ptq.md)
};
const char* method_name(Method m);
Method parse_method(const std::string& name);  // throws std::invalid_argument listing rtn, gptq, ed

// One batch of model inputs (a single tensor for most models; several for multi-input models).
using Batch = std::vector<c10::IValue>;

struct LayerFormat {
  std::string pattern;  // glob over layer names (* and ?), e.g. "classifier.*"
  Format format;
};

struct Progress {
  int layer = 0, layers = 0;  // 1-based index of the layer being quantized, of `layers`
  std::string name;
  double elapsed_s = 0, eta_s = -1;  // eta_s < 0: not known yet
};

struct Options {
  Format format;
  Method method = Method::ed;
  std::vector<std::string> exclude;          // globs of layer names left in float
  std::vector<LayerFormat> layer_formats;    // first match wins over `format`
  double damping = 0.01;                     // GPTQ and ED: fraction of the mean diagonal of X̂X̂ᵀ
  int gptq_block = 128;                      // GPTQ lazy batch width (columns)
  bool act_order = false;                    // GPTQ: columns by decreasing diagonal of X̂X̂ᵀ
  std::function<void(const Progress&)> progress;  // called before each layer
};

// A weight layer of the walk: a parameter used as the weight operand of supported operations.
struct LayerInfo {
  std::string name;        // parameter path, e.g. "features.0.weight"
  std::string op;          // aten::linear, aten::conv2d, ... (first use)
  int uses = 0;            // how many calls use it (a module called twice: 2)
  std::vector<std::int64_t> shape;
  std::string unsupported;  // non-empty: why it stays in float
};

struct LayerReport {
  std::string name, op, status;  // status: "quantized", "excluded", or "float: <why>"
  std::vector<std::int64_t> shape;
  std::string format, method;
  double relative_error = -1;  // ||Ŵ·X̂ − W·X|| / ||W·X|| over the calibration set (bias excluded)
  double rtn_relative_error = -1;  // the same for round-to-nearest weights on the same inputs
  double seconds = 0;
};

struct Report {
  std::string method, format;
  std::int64_t samples = 0;
  double seconds = 0;
  std::vector<LayerReport> layers;
  std::string json() const;
  std::string table() const;
};

struct Result {
  torch::jit::Module model;  // weights replaced by their dequantized values
  std::vector<PackedWeight> packed;
  Report report;
};

// The weight layers of `model` in execution order (of forward, with submodules inlined).
std::vector<LayerInfo> list_layers(const torch::jit::Module& model);

// Quantizes a copy of `model`; `model` itself is not changed.
Result quantize(const torch::jit::Module& model, const std::vector<Batch>& calibration, const Options& options);

// Calibration data from a file: a tensor or a tuple/list of tensors saved by torch.save (first
// dimension = samples; a tuple holds one tensor per model input), or a folder of .npy files (each
// one model input with first dimension = samples, taken in name order). Split into batches of at
// most `batch_size` samples, `samples` in all (< 0: every sample). Errors name the path.
std::vector<Batch> load_calibration(const std::string& path, std::int64_t batch_size, std::int64_t samples = -1);

// Loads a TorchScript model (clear error naming the path when it is not one) and saves one
// atomically (a temporary file renamed into place; refuses to overwrite `protect`).
torch::jit::Module load_model(const std::string& path);
void save_model(const torch::jit::Module& model, const std::string& path, const std::string& protect = {});

}  // namespace qcast::ptq
