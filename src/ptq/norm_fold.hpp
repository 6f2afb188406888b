// Where SmoothQuant's 1/s can be folded into a LayerNorm instead of inserted as an operation: the
// LayerNorm's output is read by quantized linear layers and by nothing else (a pre-LN transformer's
// norm before q, k and v, or before the MLP's first layer). Then γ/s and β/s give that output
// already divided by s, and the layers share one s (SmoothQuant, Xiao et al. 2023, section 4.3:
// the smoothing factor is fused into the previous LayerNorm's parameters offline). A post-LN
// model's LayerNorm output also feeds the residual stream, so it is not folded there. Internal to
// src/ptq.
#pragma once
#include <torch/csrc/jit/api/module.h>

#include <cstddef>
#include <string>
#include <vector>

#include "model_walk.hpp"

namespace qcast::ptq::detail {

struct NormFold {
  std::string weight;               // the LayerNorm's scale parameter γ
  std::string bias;                 // its shift β ("" when it has none)
  std::vector<std::size_t> layers;  // the layers reading its output: indices into the list given
};

// The LayerNorms (aten::layer_norm over one dimension, with γ a parameter that nothing else reads)
// whose output nothing reads but the data input of aten::linear sites of `layers`, every site of
// each such layer reading that output. `layers`: the layers to smooth, in the model's walk.
std::vector<NormFold> foldable_norms(const torch::jit::Module& model, const std::vector<const WalkLayer*>& layers);

}  // namespace qcast::ptq::detail
