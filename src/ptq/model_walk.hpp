// Finding the weight layers of a TorchScript module, and running forward up to one of them to
// capture what its operations receive. Internal to src/ptq.
#pragma once
#include <torch/csrc/jit/api/module.h>
#include <torch/csrc/jit/ir/ir.h>

#include <memory>
#include <string>
#include <vector>

#include "qcast/ptq/engine.hpp"

namespace qcast::ptq::detail {

// How an operation uses its weight operand W, and so how W maps onto the matrix [rows, cols] whose
// cols run along the reduction dimension.
enum class SiteKind {
  linear,        // aten::linear(x, W): W [out, in]
  conv,          // aten::conv1d/conv2d/_convolution(x, W, ...): W [out, in/groups, k...]
  right,         // x·W (matmul, mm, addmm): W [in, out]; with a transpose before it W is [out, in]
  left,          // W·x: W [out, in]
  bmm_right,     // bmm(x, W): W [b, in, out]
  bmm_left,      // bmm(W, x): W [b, out, in]
};

struct Site {
  SiteKind kind;
  std::string op;
  int data_input = 0;       // which input of the node is the activation
  bool transposed = false;  // W reached the node through aten::t / aten::transpose(-2, -1)
  std::size_t node_index;   // position of the node in the walk order of the inlined graph
};

struct WalkLayer {
  LayerInfo info;
  std::vector<Site> sites;
  WeightLayout layout = WeightLayout::rows;
};

struct ModelWalk {
  std::vector<WalkLayer> layers;  // supported and unsupported, in order of first use
};

ModelWalk walk_model(const torch::jit::Module& model);

// Runs forward with `self` as the module up to the sites of one layer and returns, per site, the
// inputs the node received.
class Capture {
 public:
  Capture(const torch::jit::Module& model, const WalkLayer& layer);
  std::vector<std::vector<c10::IValue>> run(const torch::jit::Module& self, const Batch& inputs);

 private:
  std::shared_ptr<torch::jit::Graph> graph_;
  std::unique_ptr<torch::jit::Function> fn_;
};

}  // namespace qcast::ptq::detail
