// The operations whose weight operand the PTQ engine quantizes, in one table: which input is the
// weight, which the data, how the weight maps onto the matrix [rows = outputs, cols = reduction], and
// how the data input unfolds into columns of that reduction. The walk (model_walk.cpp) and the
// statistics (the engine's Gram matrices) both read it. Internal to src/ptq.
#pragma once
#include <ATen/core/Tensor.h>
#include <ATen/core/ivalue.h>
#include <torch/csrc/jit/ir/ir.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "qcast/qpack.hpp"

namespace qcast::ptq::detail {

// How an operation uses its weight operand W.
enum class SiteKind {
  linear,     // aten::linear(x, W): W [out, in]
  conv,       // aten::conv1d/conv2d/_convolution(x, W, ...): W [out, in/groups, k...]
  right,      // x·W (matmul, mm, addmm): W [in, out]; with a transpose before it W is [out, in]
  left,       // W·x: W [out, in]
  bmm_right,  // bmm(x, W): W [b, in, out]
  bmm_left,   // bmm(W, x): W [b, out, in]
};

// One way an operation can take a parameter as its weight.
struct OpOperand {
  int weight_input;  // the node input that holds W
  int data_input;    // the node input that holds the activation
  SiteKind kind;
};

struct OpRule {
  const char* op;                  // e.g. "aten::linear"
  std::vector<OpOperand> operands;  // tried in order; the first whose weight input is a parameter wins
  // Why this use cannot be quantized ("" when it can), from the node, the operand that matched,
  // whether W reached the node through a 2-D transpose, and W's rank.
  std::string (*unsupported)(const torch::jit::Node* node, const OpOperand& operand, bool transposed,
                             std::int64_t weight_dim);
};

// The rule for an operation, or nullptr when the engine does not quantize its operands.
const OpRule* find_op_rule(const std::string& op);

// A use of a weight by one node of the inlined forward graph.
struct Site {
  SiteKind kind;
  std::string op;
  int data_input = 0;       // which input of the node is the activation
  bool transposed = false;  // W reached the node through aten::t / aten::transpose(-2, -1)
  std::size_t node_index;   // position of the node in the walk order of the inlined graph
};

// Outputs along the weight's first dimension (rows) or along its last (transposed)?
WeightLayout layout_of(const Site& s);

// The size of the reduction dimension (the matrix's cols) for a weight of this layout and use.
std::int64_t reduction_size(const Site& s, WeightLayout layout, const at::Tensor& weight);

// The activations of one site on both streams (x: float model, xq: quantized model), from the inputs
// the node received, as pairs of chunks [groups, cols, tokens] with cols along the weight's
// reduction dimension, passed to sink(x, x̂, samples) one pair at a time so that an unfolded
// convolution input never exists whole. Tokens come in a fixed order (sample by sample, position by
// position); `samples` is how many items of equal length the chunk's tokens are: the leading
// dimension of a linear layer's input, one image of a convolution, one call of a bmm.
void for_each_input_chunk(const Site& site, const std::vector<c10::IValue>& in, const std::vector<c10::IValue>& in_q,
                          const at::Tensor& weight, std::int64_t cols,
                          const std::function<void(const at::Tensor&, const at::Tensor&, std::int64_t)>& sink);

}  // namespace qcast::ptq::detail
