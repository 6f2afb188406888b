// Activation quantizers in the graph: a `qcast::cast` (the operator library, docs/ops.md) inserted
// on the data input of a quantized layer's site, with the block axis along the weight's reduction
// and, for per-tensor and two-level formats, a static amax calibrated on the float stream. The
// engine runs its quantized stream through a graph with these casts, so that the methods fit the
// weights to the inputs they will see, and saves the model with the same graph. Internal to src/ptq.
#pragma once
#include <ATen/core/Tensor.h>
#include <torch/csrc/jit/api/module.h>
#include <torch/csrc/jit/ir/ir.h>

#include <cstddef>
#include <optional>
#include <string>
#include <vector>

#include "op_table.hpp"
#include "qcast/format.hpp"

namespace qcast::ptq::detail {

struct ActivationCast {
  std::size_t node_index = 0;  // walk position of the site's node in the inlined forward
  std::string op;              // that node's operation (checked when the cast is inserted)
  int data_input = 0;          // the node input that is cast
  Format format;               // axis already set to the reduction axis (block formats)
  std::optional<float> amax;   // static amax (per-tensor and two-level formats)
  // Equal casts of one value share one node where nothing writes memory between them.
  bool same_cast(const ActivationCast& o) const;
};

// The axis of the site's data input that runs along the weight's reduction dimension (negative,
// counted from the end, so that it holds for batched and unbatched inputs).
int activation_axis(const Site& site, const at::Tensor& weight);

// Why `format` cannot quantize the data input of this site ("" when it can): channel scales, or a
// block that does not divide the reduction extent along the axis (a convolution's input channels
// per group). `format` is the one the user gave.
std::string activation_unfit_reason(const Format& format, const Site& site, const at::Tensor& weight);

// Inserts the casts into `graph` (an inlined forward; node_index as walk_order numbers it before
// any insertion). Throws std::logic_error when a node is not the operation the cast expects.
void insert_activation_casts(torch::jit::Graph& graph, const std::vector<ActivationCast>& casts);

// A copy of `model` (with its own class types) whose forward is the inlined forward with the casts
// inserted: the model that is saved. Submodules, parameters and buffers stay as they are.
torch::jit::Module with_activation_casts(const torch::jit::Module& model, const std::vector<ActivationCast>& casts);

}  // namespace qcast::ptq::detail
