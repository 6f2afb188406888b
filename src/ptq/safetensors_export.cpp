// A quantization run as a safetensors checkpoint (engine.hpp: export_safetensors): the quantized
// weights as codes + scales with PyTorch's low-precision dtypes (qcast/safetensors.hpp), every other
// parameter and buffer of the model as it is, and a JSON quantization config to write beside it.
#include <set>

#include <nlohmann/json.hpp>
#include <torch/version.h>

#include "qcast/ptq/engine.hpp"
#include "qcast/version.hpp"

namespace qcast::ptq {
namespace {

// The safetensors dtype of a float or integer tensor of the model.
std::string dtype_name(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return "F32";
    case at::kHalf: return "F16";
    case at::kBFloat16: return "BF16";
    case at::kDouble: return "F64";
    case at::kLong: return "I64";
    case at::kInt: return "I32";
    case at::kShort: return "I16";
    case at::kChar: return "I8";
    case at::kByte: return "U8";
    case at::kBool: return "BOOL";
    default: throw std::runtime_error(std::string("no safetensors dtype for ") + c10::toString(t));
  }
}

SafetensorsTensor tensor_of(const std::string& name, const at::Tensor& value) {
  const at::Tensor t = value.detach().to(at::kCPU).contiguous();
  SafetensorsTensor s;
  s.name = name;
  s.dtype = dtype_name(t.scalar_type());
  s.shape.assign(t.sizes().begin(), t.sizes().end());
  const auto* p = static_cast<const std::uint8_t*>(t.data_ptr());
  s.data.assign(p, p + t.nbytes());
  return s;
}

}  // namespace

SafetensorsFile export_safetensors(const Result& r) {
  SafetensorsFile file;
  std::set<std::string> quantized;
  for (const auto& w : r.packed) {
    add_quantized_weight(file, w);
    quantized.insert(w.name);
  }
  // Every other tensor of the model under its own name, so that the file is a whole checkpoint.
  for (const auto& p : r.model.named_parameters(/*recurse=*/true))
    if (!quantized.count(p.name)) file.tensors.push_back(tensor_of(p.name, p.value));
  for (const auto& b : r.model.named_buffers(/*recurse=*/true))
    if (!quantized.count(b.name) && b.value.defined()) file.tensors.push_back(tensor_of(b.name, b.value));
  // Smoothing: the factor each smoothed layer's input is multiplied by, per input channel.
  for (const auto& [name, scale] : r.input_scales) file.tensors.push_back(tensor_of(name + "_input_scale", scale));
  return file;
}

std::string quantization_config(const Result& r, const std::string& weights_file) {
  nlohmann::ordered_json c;
  c["quant_method"] = "qcast";
  c["producer"] = std::string("qcast ") + qcast::version_string;
  c["torch_version"] = TORCH_VERSION;
  c["weights_file"] = weights_file;
  c["method"] = r.report.method;
  c["format"] = r.report.format;
  // The tensors of each quantized weight W: W (codes), W_scale (scales), W_scale_2 (tensor scale).
  c["tensor_names"] = {{"codes", "{name}"}, {"scales", "{name}_scale"}, {"tensor_scale", "{name}_scale_2"},
                       {"input_scale", "{name}_input_scale"}};
  nlohmann::ordered_json layers = nlohmann::ordered_json::object(), ignored = nlohmann::ordered_json::array();
  for (const auto& l : r.report.layers) {
    if (l.status == "quantized") layers[l.name] = l.format;
    else ignored.push_back(l.name);
  }
  c["quantized"] = layers;
  c["ignore"] = ignored;
  // What runs on each layer's input before it, in this order (a deployment must do the same): the
  // smoothing factor per input channel (tensor {name}_input_scale; the stored weight includes s),
  // the Hadamard block (the stored weight is W·H), and the activation format with its static amax.
  nlohmann::ordered_json inputs = nlohmann::ordered_json::object();
  for (const auto& l : r.report.layers) {
    const bool smoothed = r.input_scales.count(l.name) > 0;
    if (l.act_format.empty() && l.hadamard_block == 0 && !smoothed) continue;
    nlohmann::ordered_json e;
    if (smoothed) e["input_scale"] = l.name + "_input_scale";
    if (l.hadamard_block > 0) e["hadamard_block"] = l.hadamard_block;
    if (!l.act_format.empty()) e["act_format"] = l.act_format;
    if (l.act_amax >= 0) e["act_amax"] = l.act_amax;
    inputs[l.name] = e;
  }
  if (!inputs.empty()) c["inputs"] = inputs;
  // The accumulator each layer's integer codes need (and the bound kept), for a deployment that
  // sizes its accumulators: per tile of `tile` columns, inputs in [input_min, input_max].
  nlohmann::ordered_json accumulators = nlohmann::ordered_json::object();
  for (const auto& l : r.report.layers) {
    if (!l.accumulator || l.status != "quantized") continue;
    const LayerReport::Accumulator& a = *l.accumulator;
    nlohmann::ordered_json e;
    if (a.bits > 0) e["bits"] = a.bits;
    e["tile"] = a.tile;
    e["input_min"] = a.input_min;
    e["input_max"] = a.input_max;
    e["worst"] = a.worst;
    e["bits_needed"] = a.bits_needed;
    accumulators[l.name] = e;
  }
  if (!accumulators.empty()) c["accumulators"] = accumulators;
  return c.dump(2) + "\n";
}

}  // namespace qcast::ptq
