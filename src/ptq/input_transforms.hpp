// What the engine inserts on a quantized layer's data input: SmoothQuant's per-channel division
// (an `aten::mul` by a constant 1/s, the weight's input channels multiplied by s to match), a
// Hadamard rotation (`qcast::hadamard` along the reduction axis, the weight rotated offline to
// match) and an activation quantizer
// (`qcast::cast`, docs/ops.md) with its block axis along the reduction and, for per-tensor and
// two-level formats, a static amax calibrated on the float stream. Both streams of the calibration
// run through smoothing and rotation (so the float model is the same function, in a new basis); the
// quantized stream and the saved model also through the cast, so the methods fit the weights to the
// inputs they will see. Internal to src/ptq.
#pragma once
#include <ATen/core/Tensor.h>
#include <torch/csrc/jit/api/module.h>
#include <torch/csrc/jit/ir/ir.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "op_table.hpp"
#include "qcast/format.hpp"

namespace qcast::ptq::detail {

struct InputTransform {
  std::size_t node_index = 0;  // walk position of the site's node in the inlined forward
  std::string op;              // that node's operation (checked when the transform is inserted)
  int data_input = 0;          // the node input that is transformed
  int axis = -1;               // the data input's reduction axis (activation_axis)
  // Defined: SmoothQuant's 1/s per input channel, shaped to broadcast along `axis` (x·(1/s) first).
  at::Tensor smooth_inv;
  std::int64_t hadamard_block = 0;  // > 0: then rotate by qcast::hadamard(x, block, axis)
  std::optional<Format> format;     // then cast (axis already set for block formats)
  std::optional<float> amax;        // static amax of the cast (per-tensor and two-level formats)
  bool searched = false;            // format and amax chosen by the activation format search
  // Equal transforms of one value share their nodes where nothing writes memory between them.
  bool same_transform(const InputTransform& o) const;
  // The smoothing and the rotation without the cast (what the float stream runs through).
  InputTransform float_stream() const;
};

// The axis of the site's data input that runs along the weight's reduction dimension (negative,
// counted from the end, so that it holds for batched and unbatched inputs).
int activation_axis(const Site& site, const at::Tensor& weight);
// The axis of the weight parameter that runs along the reduction (a convolution's input channels).
int weight_reduction_axis(const Site& site, WeightLayout layout);
// The extent along which data-input blocks and rotations run: a convolution's input channels per
// group (a block must not straddle two groups), else the weight's reduction size; and its name.
std::int64_t reduction_extent(const Site& site, WeightLayout layout, const at::Tensor& weight, const char** what = nullptr);

// Why `format` cannot quantize the data input of this site ("" when it can): channel scales, or a
// block that does not divide the reduction extent.
std::string activation_unfit_reason(const Format& format, const Site& site, WeightLayout layout, const at::Tensor& weight);
// Why a rotation of `block` cannot apply to this site ("" when it can).
std::string rotation_unfit_reason(std::int64_t block, const Site& site, WeightLayout layout, const at::Tensor& weight);
// The same over every site of a layer: the first reason, "" when each site takes it.
std::string activation_unfit_reason(const Format& format, const std::vector<Site>& sites, WeightLayout layout,
                                    const at::Tensor& weight);
std::string rotation_unfit_reason(std::int64_t block, const std::vector<Site>& sites, WeightLayout layout,
                                  const at::Tensor& weight);

// Inserts the transforms into `graph` (an inlined forward; node_index as walk_order numbers it
// before any insertion). Throws std::logic_error when a node is not the operation expected.
void insert_input_transforms(torch::jit::Graph& graph, const std::vector<InputTransform>& transforms);

// A copy of `model` (with its own class types) whose forward is the inlined forward with the
// transforms inserted: the model that is saved. Submodules, parameters and buffers stay as they are.
torch::jit::Module with_input_transforms(const torch::jit::Module& model, const std::vector<InputTransform>& transforms,
                                         c10::Device constants = at::kCPU);

}  // namespace qcast::ptq::detail
