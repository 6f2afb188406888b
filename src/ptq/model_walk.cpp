// The model walk: forward is copied and inlined (submodule calls and methods become one graph), its
// nodes are visited in order, and every operation of the op table (op_table.cpp) whose weight operand
// is a module parameter (a chain of prim::GetAttr from `self`) becomes a site of that parameter's layer.
#include "model_walk.hpp"

#include <torch/csrc/jit/passes/inliner.h>

#include <algorithm>
#include <deque>
#include <map>
#include <set>
#include <stdexcept>

namespace qcast::ptq::detail {
namespace {

using torch::jit::Node;
using torch::jit::Value;

void collect_nodes(torch::jit::Block* b, bool top, std::vector<std::pair<Node*, bool>>& out) {
  for (Node* n : b->nodes()) {
    out.emplace_back(n, top);
    for (torch::jit::Block* sub : n->blocks()) collect_nodes(sub, false, out);
  }
}

}  // namespace

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

namespace {

// Operations that read only a tensor's metadata: they do not make a weight unsupported.
bool reads_metadata_only(const Node* n) {
  static const std::set<std::string> ops = {"aten::size", "aten::dim", "aten::numel", "prim::device", "prim::dtype",
                                            "prim::shape", "aten::__is__", "aten::__isnot__", "prim::isinstance"};
  return ops.count(n->kind().toQualString()) != 0;
}

// PyTorch's fused inference kernels of nn.TransformerEncoderLayer and nn.MultiheadAttention take the
// weights whole. torch.jit.trace records them when it traces with gradients off (torch.no_grad());
// with gradients on, the modules run their linear layers one by one and the trace has those.
std::string fused_fast_path_hint(const std::string& op) {
  if (op.rfind("aten::_transformer_", 0) == 0 || op.rfind("aten::_native_multi_head_attention", 0) == 0)
    return " (PyTorch's fused fast path: trace with gradients enabled, outside torch.no_grad(), to record its linear layers)";
  return "";
}

bool is_transpose_2d(const Node* n) {
  if (n->kind() == c10::aten::t) return true;
  if (n->kind() != c10::aten::transpose) return false;
  const auto d0 = torch::jit::toIValue(n->input(1)), d1 = torch::jit::toIValue(n->input(2));
  if (!d0 || !d1 || !d0->isInt() || !d1->isInt()) return false;
  const auto a = d0->toInt(), b = d1->toInt();
  return (a == 0 && b == 1) || (a == 1 && b == 0) || (a == -1 && b == -2) || (a == -2 && b == -1);
}

}  // namespace

std::shared_ptr<torch::jit::Graph> inlined_forward(const torch::jit::Module& model) {
  if (!model.find_method("forward")) throw std::invalid_argument("the model has no forward method");
  auto g = model.get_method("forward").graph()->copy();
  torch::jit::Inline(*g);
  return g;
}

bool writes_memory(const Node* n) {
  if (n->hasSideEffects()) return true;
  const std::string kind = n->kind().toQualString();
  if (!kind.empty() && kind.back() == '_') return true;  // aten in-place variants
  if (const auto* schema = n->maybeSchema()) return schema->is_mutable();
  for (const torch::jit::Block* b : n->blocks())
    for (const Node* m : b->nodes())
      if (writes_memory(m)) return true;
  return false;
}

std::vector<std::pair<Node*, bool>> walk_order(torch::jit::Block* block) {
  std::vector<std::pair<Node*, bool>> out;
  collect_nodes(block, true, out);
  return out;
}

ModelWalk walk_model(const torch::jit::Module& model) {
  auto g = inlined_forward(model);
  const Value* self = g->inputs().at(0);
  std::map<std::string, at::Tensor> params;  // candidate weights
  std::set<std::string> vectors;             // 1-D parameters: candidate biases
  for (const auto& p : model.named_parameters(/*recurse=*/true)) {
    if (p.value.dim() >= 2) params.emplace(p.name, p.value);
    else if (p.value.dim() == 1) vectors.insert(p.name);
  }

  const std::vector<std::pair<Node*, bool>> nodes = walk_order(g->block());

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
    std::string unsupported;
    if (const OpRule* rule = find_op_rule(op)) {
      for (const OpOperand& operand : rule->operands) {
        w = weight_at(n, std::size_t(operand.weight_input), &transpose);
        if (w.empty()) continue;
        s.kind = operand.kind;
        s.data_input = operand.data_input;
        s.transposed = transpose != nullptr;
        unsupported = rule->unsupported(n, operand, s.transposed, params.at(w).dim());
        break;
      }
    }
    if (!w.empty()) {
      if (unsupported.empty() && !nodes[k].second)
        unsupported = "used inside control flow (prim::If / prim::Loop; a model traced with torch.jit.trace has none)";
      WalkLayer& l = layer_of(w, k);
      if (l.info.op.empty()) l.info.op = op;
      ++l.info.uses;
      if (!unsupported.empty()) {
        if (l.info.unsupported.empty()) l.info.unsupported = unsupported;
      } else {
        // The bias operand of a linear layer or a convolution, if it is a parameter.
        std::string bias;
        if ((s.kind == SiteKind::linear || s.kind == SiteKind::conv) && n->inputs().size() > 2) {
          const std::string p = attr_path(n->input(2), self);
          if (vectors.count(p)) bias = p;
        }
        l.bias = l.sites.empty() || l.bias == bias ? bias : std::string();
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
    if (l.info.unsupported.empty()) l.info.unsupported = "used by " + u.op + fused_fast_path_hint(u.op);
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

}  // namespace qcast::ptq::detail
