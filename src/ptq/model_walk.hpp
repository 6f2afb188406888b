// Finding the weight layers of a TorchScript module. Internal to src/ptq.
#pragma once
#include <torch/csrc/jit/api/module.h>
#include <torch/csrc/jit/ir/ir.h>

#include <memory>
#include <string>
#include <vector>

#include "op_table.hpp"
#include "qcast/ptq/engine.hpp"

namespace qcast::ptq::detail {

struct WalkLayer {
  LayerInfo info;
  std::vector<Site> sites;
  WeightLayout layout = WeightLayout::rows;
  // The parameter every site adds to this layer's outputs (input 2 of aten::linear and the
  // convolutions), "" when there is none or the sites differ: where bias correction goes.
  std::string bias;
};

struct ModelWalk {
  std::vector<WalkLayer> layers;  // supported and unsupported, in order of first use
};

ModelWalk walk_model(const torch::jit::Module& model);

// forward copied with every submodule call and method inlined; the same model always gives the same
// graph, so node positions (Site::node_index) found on one copy hold on another.
std::shared_ptr<torch::jit::Graph> inlined_forward(const torch::jit::Module& model);

// Every node in walk order (depth first through sub-blocks), and whether it is in the top block.
std::vector<std::pair<torch::jit::Node*, bool>> walk_order(torch::jit::Block* block);

// "a.b.weight" when v is self.a.b.weight (a chain of prim::GetAttr from self), else "".
std::string attr_path(const torch::jit::Value* v, const torch::jit::Value* self);

// Whether n (or a node inside its blocks) may write into a tensor or has other side effects.
bool writes_memory(const torch::jit::Node* n);

}  // namespace qcast::ptq::detail
