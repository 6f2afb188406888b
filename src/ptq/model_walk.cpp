// The model walk: forward is copied and inlined (submodule calls and methods become one graph), its
// nodes are visited in order, and every operation whose weight operand is a module parameter (a
// chain of prim::GetAttr from `self`) becomes a site of that parameter's layer. Capturing a layer's
// inputs returns the inputs of its nodes from a copy of the graph whose outputs are replaced, so
// dead-code elimination cuts everything after the layer away.
#include "model_walk.hpp"

#include <torch/csrc/jit/api/function_impl.h>
#include <torch/csrc/jit/passes/dead_code_elimination.h>
#include <torch/csrc/jit/passes/inliner.h>
#include <torch/csrc/jit/runtime/graph_executor.h>

#include <algorithm>
#include <deque>
#include <map>
#include <set>
#include <stdexcept>

namespace qcast::ptq::detail {
namespace {

using torch::jit::Node;
using torch::jit::Value;

std::shared_ptr<torch::jit::Graph> inlined_forward(const torch::jit::Module& model) {
  if (!model.find_method("forward")) throw std::invalid_argument("the model has no forward method");
  auto g = model.get_method("forward").graph()->copy();
  torch::jit::Inline(*g);
  return g;
}

// Every node in walk order (depth first through sub-blocks), and whether it is in the top block.
void collect_nodes(torch::jit::Block* b, bool top, std::vector<std::pair<Node*, bool>>& out) {
  for (Node* n : b->nodes()) {
    out.emplace_back(n, top);
    for (torch::jit::Block* sub : n->blocks()) collect_nodes(sub, false, out);
  }
}

// "a.b.weight" when v is self.a.b.weight, else "".
std::string attr_path(const Value* v, const Value* self) {
  std::deque<std::string> names;
  while (v->node()->kind() == c10::prim::GetAttr) {
    names.push_front(v->node()->s(c10::attr::name));
    v = v->node()->input(0);
  }
  if (v != self || names.empty()) return {};
  std::string p = names.front();
  for (std::size_t i = 1; i < names.size(); ++i) p += "." + names[i];
  return p;
}

// Operations that read only a tensor's metadata: they do not make a weight unsupported.
bool reads_metadata_only(const Node* n) {
  static const std::set<std::string> ops = {"aten::size", "aten::dim", "aten::numel", "prim::device", "prim::dtype",
                                            "prim::shape", "aten::__is__", "aten::__isnot__", "prim::isinstance"};
  return ops.count(n->kind().toQualString()) != 0;
}

bool is_transpose_2d(const Node* n) {
  if (n->kind() == c10::aten::t) return true;
  if (n->kind() != c10::aten::transpose) return false;
  const auto d0 = torch::jit::toIValue(n->input(1)), d1 = torch::jit::toIValue(n->input(2));
  if (!d0 || !d1 || !d0->isInt() || !d1->isInt()) return false;
  const auto a = d0->toInt(), b = d1->toInt();
  return (a == 0 && b == 1) || (a == 1 && b == 0) || (a == -1 && b == -2) || (a == -2 && b == -1);
}

// Outputs along the weight's first dimension (rows) or its last (transposed)?
WeightLayout layout_of(const Site& s) {
  const bool out_first = s.kind == SiteKind::linear || s.kind == SiteKind::conv || s.kind == SiteKind::left ||
                         s.kind == SiteKind::bmm_left;
  return out_first != s.transposed ? WeightLayout::rows : WeightLayout::transposed;
}

}  // namespace

ModelWalk walk_model(const torch::jit::Module& model) {
  auto g = inlined_forward(model);
  const Value* self = g->inputs().at(0);
  std::map<std::string, at::Tensor> params;
  for (const auto& p : model.named_parameters(/*recurse=*/true))
    if (p.value.dim() >= 2) params.emplace(p.name, p.value);

  std::vector<std::pair<Node*, bool>> nodes;
  collect_nodes(g->block(), true, nodes);

  ModelWalk walk;
  std::map<std::string, std::size_t> index;  // parameter -> position in walk.layers
  std::vector<std::size_t> first_use;  // per layer: walk position of its first use
  auto layer_of = [&](const std::string& name, std::size_t node) -> WalkLayer& {
    auto it = index.find(name);
    if (it != index.end()) {
      first_use[it->second] = std::min(first_use[it->second], node);
      return walk.layers[it->second];
    }
    first_use.push_back(node);
    WalkLayer l;
    l.info.name = name;
    const at::Tensor& w = params.at(name);
    l.info.shape.assign(w.sizes().begin(), w.sizes().end());
    index.emplace(name, walk.layers.size());
    walk.layers.push_back(std::move(l));
    return walk.layers.back();
  };
  // The parameter behind input i of n, directly or through a 2-D transpose.
  auto weight_at = [&](const Node* n, std::size_t i, const Node** transpose) -> std::string {
    if (i >= n->inputs().size()) return {};
    const Value* v = n->input(i);
    *transpose = nullptr;
    if (is_transpose_2d(v->node())) {
      *transpose = v->node();
      v = v->node()->input(0);
    }
    const std::string p = attr_path(v, self);
    return params.count(p) ? p : std::string();
  };

  std::set<const Node*> feeding_sites;  // transposes whose weight reached a site
  struct Use {
    std::string param, op;
    const Node* node;
    std::size_t index;
  };
  std::vector<Use> other_uses;
  for (std::size_t k = 0; k < nodes.size(); ++k) {
    Node* n = nodes[k].first;
    const std::string op = n->kind().toQualString();
    Site s{SiteKind::linear, op, 0, false, k};
    std::string w;
    const Node* transpose = nullptr;
    auto try_operand = [&](std::size_t wi, SiteKind kind, int data) {
      if (!w.empty()) return;
      w = weight_at(n, wi, &transpose);
      s.kind = kind;
      s.data_input = data;
      s.transposed = transpose != nullptr;
    };
    const bool& tr = s.transposed;
    std::string unsupported;
    if (op == "aten::linear") {
      try_operand(1, SiteKind::linear, 0);
      if (tr) unsupported = "aten::linear with a transposed weight";
    } else if (op == "aten::conv1d" || op == "aten::conv2d") {
      try_operand(1, SiteKind::conv, 0);
    } else if (op == "aten::_convolution") {
      try_operand(1, SiteKind::conv, 0);
      const auto t = torch::jit::toIValue(n->input(6));
      if (!t || !t->isBool() || t->toBool()) unsupported = "transposed convolution";  // 3-D: by weight rank below
    } else if (op == "aten::matmul" || op == "aten::mm") {
      try_operand(1, SiteKind::right, 0);
      try_operand(0, SiteKind::left, 1);
    } else if (op == "aten::addmm") {
      try_operand(2, SiteKind::right, 1);
      try_operand(1, SiteKind::left, 2);
    } else if (op == "aten::bmm") {
      try_operand(1, SiteKind::bmm_right, 0);
      try_operand(0, SiteKind::bmm_left, 1);
      if (tr) unsupported = "aten::bmm with a transposed weight";
    }
    if (!w.empty()) {
      const auto dim = params.at(w).dim();
      if (unsupported.empty() && (s.kind == SiteKind::right || s.kind == SiteKind::left) && dim != 2)
        unsupported = op + " with a " + std::to_string(dim) + "-D weight";
      if (unsupported.empty() && (s.kind == SiteKind::bmm_right || s.kind == SiteKind::bmm_left) && dim != 3)
        unsupported = op + " with a " + std::to_string(dim) + "-D weight";
      if (unsupported.empty() && s.kind == SiteKind::conv && dim > 4) unsupported = "3-D convolution";
      if (unsupported.empty() && !nodes[k].second) unsupported = "used inside control flow (prim::If / prim::Loop)";
      WalkLayer& l = layer_of(w, k);
      if (l.info.op.empty()) l.info.op = op;
      ++l.info.uses;
      if (!unsupported.empty()) {
        if (l.info.unsupported.empty()) l.info.unsupported = unsupported;
      } else {
        l.sites.push_back(s);
        if (transpose) feeding_sites.insert(transpose);
      }
      continue;
    }
    if (n->kind() == c10::prim::GetAttr || reads_metadata_only(n)) continue;
    for (const Value* in : n->inputs()) {
      const std::string p = attr_path(in, self);
      if (params.count(p)) other_uses.push_back({p, op, n, k});
    }
  }
  for (const auto& u : other_uses) {
    // A transpose that fed a site is part of that site; any other use keeps the weight in float.
    if (feeding_sites.count(u.node)) continue;
    WalkLayer& l = layer_of(u.param, u.index);
    if (l.info.op.empty()) l.info.op = u.op;
    ++l.info.uses;
    if (l.info.unsupported.empty()) l.info.unsupported = "used by " + u.op;
  }
  // Execution order: by first use.
  std::vector<std::size_t> order(walk.layers.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return first_use[a] < first_use[b]; });
  std::vector<WalkLayer> sorted;
  for (std::size_t i : order) sorted.push_back(std::move(walk.layers[i]));
  walk.layers = std::move(sorted);
  for (WalkLayer& l : walk.layers) {
    if (l.sites.empty() && l.info.unsupported.empty()) l.info.unsupported = "no supported use";
    if (!l.info.unsupported.empty()) continue;
    // Every use must map the weight onto the matrix the same way.
    const Site& s0 = l.sites.front();
    l.layout = layout_of(s0);
    for (const Site& s : l.sites) {
      if (layout_of(s) != l.layout || (s.kind == SiteKind::conv) != (s0.kind == SiteKind::conv))
        l.info.unsupported = "used by operations that read it differently (" + s0.op + ", " + s.op + ")";
    }
  }
  return walk;
}

Capture::Capture(const torch::jit::Module& model, const WalkLayer& layer) {
  graph_ = inlined_forward(model);
  std::vector<std::pair<Node*, bool>> nodes;
  collect_nodes(graph_->block(), true, nodes);
  std::vector<Value*> per_site;
  Node* last = nullptr;
  for (const Site& s : layer.sites) {
    Node* n = nodes.at(s.node_index).first;
    if (n->kind().toQualString() != s.op) throw std::logic_error("qcast: the inlined graph changed between walks");
    Node* t = graph_->createTuple(n->inputs());
    t->insertAfter(n);
    per_site.push_back(t->output());
    last = t;
  }
  Node* all = graph_->createTuple(per_site);
  all->insertAfter(last);
  // Cut everything after the capture: the values are what the nodes received (an in-place op later
  // cannot change them), and nothing after the layer runs. Nodes go in reverse order so that each
  // has no remaining uses when destroyed.
  while (!graph_->outputs().empty()) graph_->eraseOutput(0);
  std::vector<Node*> after;
  for (Node* n = all->next(); n != graph_->return_node(); n = n->next()) after.push_back(n);
  for (auto it = after.rbegin(); it != after.rend(); ++it) (*it)->destroy();
  graph_->registerOutput(all->output());
  torch::jit::EliminateDeadCode(graph_);
  fn_ = std::make_unique<torch::jit::GraphFunction>("qcast_capture", graph_, nullptr);
}

std::vector<std::vector<c10::IValue>> Capture::run(const torch::jit::Module& self, const Batch& inputs) {
  torch::jit::GraphOptimizerEnabledGuard no_jit_passes(false);  // run the graph as written
  torch::jit::Stack stack;
  stack.reserve(inputs.size() + 1);
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

}  // namespace qcast::ptq::detail
