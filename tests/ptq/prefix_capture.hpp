// The reference for the pipeline's captures: run the whole model from its input up to one layer's
// sites and return what they received (the engine's method before stages). forward is inlined, the
// inputs of each site are packed into a tuple right after it, everything after the last site is cut
// away and dead code eliminated.
#pragma once
#include <torch/csrc/jit/api/function_impl.h>
#include <torch/csrc/jit/passes/dead_code_elimination.h>
#include <torch/csrc/jit/runtime/graph_executor.h>

#include <memory>
#include <vector>

#include "convolution_kernels.hpp"
#include "model_walk.hpp"

namespace qcast_test {

class PrefixCapture {
 public:
  PrefixCapture(const torch::jit::Module& model, const qcast::ptq::detail::WalkLayer& layer) {
    using torch::jit::Node;
    graph_ = qcast::ptq::detail::inlined_forward(model);
    const auto nodes = qcast::ptq::detail::walk_order(graph_->block());
    std::vector<torch::jit::Value*> per_site;
    Node* last = nullptr;
    for (const auto& s : layer.sites) {
      Node* n = nodes.at(s.node_index).first;
      Node* t = graph_->createTuple(n->inputs());
      t->insertAfter(n);
      per_site.push_back(t->output());
      last = t;
    }
    Node* all = graph_->createTuple(per_site);
    all->insertAfter(last);
    while (!graph_->outputs().empty()) graph_->eraseOutput(0);
    std::vector<Node*> after;
    for (Node* n = all->next(); n != graph_->return_node(); n = n->next()) after.push_back(n);
    for (auto it = after.rbegin(); it != after.rend(); ++it) (*it)->destroy();
    graph_->registerOutput(all->output());
    torch::jit::EliminateDeadCode(graph_);
    fn_ = std::make_unique<torch::jit::GraphFunction>("prefix_capture", graph_, nullptr);
  }

  std::vector<std::vector<c10::IValue>> run(const torch::jit::Module& self, const std::vector<c10::IValue>& inputs) {
    torch::jit::GraphOptimizerEnabledGuard no_jit_passes(false);
    const qcast::ptq::detail::PerSampleConvolutions convolutions;  // the engine's kernels
    torch::jit::Stack stack;
    stack.emplace_back(self._ivalue());
    for (const auto& v : inputs) stack.push_back(v);
    fn_->run(stack);
    std::vector<std::vector<c10::IValue>> out;
    for (const auto& site : stack.back().toTupleRef().elements()) {
      const auto& e = site.toTupleRef().elements();
      out.emplace_back(e.begin(), e.end());
    }
    return out;
  }

 private:
  std::shared_ptr<torch::jit::Graph> graph_;
  std::unique_ptr<torch::jit::Function> fn_;
};

}  // namespace qcast_test
