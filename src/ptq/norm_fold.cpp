// Finding the LayerNorms that SmoothQuant's division folds into (norm_fold.hpp).
#include "norm_fold.hpp"

#include <map>
#include <set>

namespace qcast::ptq::detail {

std::vector<NormFold> foldable_norms(const torch::jit::Module& model, const std::vector<const WalkLayer*>& layers) {
  using torch::jit::Node;
  using torch::jit::Value;
  const auto graph = inlined_forward(model);
  const Value* self = graph->inputs().at(0);
  const auto order = walk_order(graph->block());
  // Every (node, input) a parameter reaches, counted: γ must have one reader, its LayerNorm.
  std::map<std::string, int> readers;
  for (const auto& [n, top] : order)
    for (const Value* in : n->inputs()) {
      const std::string p = attr_path(in, self);
      if (!p.empty()) ++readers[p];
    }
  // The sites of the layers by (node, input): which layer reads a value there.
  std::map<std::pair<const Node*, std::size_t>, std::size_t> site_of;
  for (std::size_t i = 0; i < layers.size(); ++i)
    for (const Site& s : layers[i]->sites) site_of[{order.at(s.node_index).first, std::size_t(s.data_input)}] = i;

  std::vector<NormFold> folds;
  std::set<std::size_t> taken;
  for (const auto& [n, top] : order) {
    if (n->kind() != c10::aten::layer_norm || n->inputs().size() < 4) continue;
    // normalized_shape of one dimension: γ per channel of the last axis (a list built in the graph
    // or a constant one).
    const Node* shape = n->input(1)->node();
    std::size_t dims = 0;
    if (shape->kind() == c10::prim::ListConstruct) {
      dims = shape->inputs().size();
    } else if (const auto c = torch::jit::toIValue(n->input(1)); c && c->isIntList()) {
      dims = c->toIntList().size();
    }
    if (dims != 1) continue;
    NormFold f;
    f.weight = attr_path(n->input(2), self);
    if (f.weight.empty() || readers[f.weight] != 1) continue;
    if (!n->input(3)->type()->cast<c10::NoneType>()) {
      f.bias = attr_path(n->input(3), self);
      if (f.bias.empty() || readers[f.bias] != 1) continue;
    }
    bool only_sites = !n->output()->uses().empty();
    std::set<std::size_t> readers_of_output;
    for (const torch::jit::Use& u : n->output()->uses()) {
      const auto it = site_of.find({u.user, u.offset});
      if (it == site_of.end() || u.user->kind() != c10::aten::linear) {
        only_sites = false;
        break;
      }
      readers_of_output.insert(it->second);
    }
    if (!only_sites) continue;
    // Each layer's every site must read this output: its s applies wherever the weight is used.
    bool whole = true;
    for (std::size_t i : readers_of_output)
      for (const Site& s : layers[i]->sites)
        whole = whole && order.at(s.node_index).first->input(std::size_t(s.data_input)) == n->output() && !taken.count(i);
    if (!whole) continue;
    f.layers.assign(readers_of_output.begin(), readers_of_output.end());
    taken.insert(readers_of_output.begin(), readers_of_output.end());
    folds.push_back(std::move(f));
  }
  return folds;
}

}  // namespace qcast::ptq::detail
