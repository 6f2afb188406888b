// Activation quantizers in the graph (activation_casts.hpp).
#include "activation_casts.hpp"

#include <torch/csrc/jit/api/function_impl.h>
#include <torch/csrc/jit/ir/named_value.h>

#include <algorithm>
#include <map>
#include <stdexcept>

#include "model_walk.hpp"
#include "qcast/format_names.hpp"

namespace qcast::ptq::detail {

bool ActivationCast::same_cast(const ActivationCast& o) const {
  return format_name(format) == format_name(o.format) && amax == o.amax;
}

int activation_axis(const Site& site, const at::Tensor& weight) {
  switch (site.kind) {
    case SiteKind::linear:
    case SiteKind::right:
    case SiteKind::bmm_right: return -1;  // x [..., cols]
    case SiteKind::left:
    case SiteKind::bmm_left: return -2;  // x [..., cols, N]
    case SiteKind::conv: return -int(weight.dim()) + 1;  // x [N, C, spatial...]: C is -(spatial dims + 1)
  }
  return -1;
}

std::string activation_unfit_reason(const Format& f, const Site& site, const at::Tensor& weight) {
  if (f.granularity == Granularity::channel)
    return "per-channel activation scales are not supported (a block, per-tensor, two-level or direct format is)";
  if (f.granularity != Granularity::block) return {};
  // The extent of the reduction along the data input's axis: a convolution's input channels per
  // group (blocks must not straddle two groups), else the weight's reduction size.
  std::int64_t extent = 0;
  const char* what = "the reduction size";
  if (site.kind == SiteKind::conv) {
    extent = weight.size(1);
    what = "the input channels per group";
  } else {
    extent = layout_of(site) == WeightLayout::rows ? weight.size(-1) : weight.size(-2);
  }
  if (extent % f.block_size != 0)
    return "a block of " + std::to_string(f.block_size) + " does not divide " + what + " (" + std::to_string(extent) + ")";
  return {};
}

void insert_activation_casts(torch::jit::Graph& graph, const std::vector<ActivationCast>& casts) {
  using torch::jit::Node;
  using torch::jit::Value;
  const auto order = walk_order(graph.block());
  std::vector<std::size_t> idx(casts.size());
  for (std::size_t i = 0; i < idx.size(); ++i) idx[i] = i;
  std::stable_sort(idx.begin(), idx.end(), [&](std::size_t a, std::size_t b) { return casts[a].node_index < casts[b].node_index; });
  std::vector<Node*> nodes;
  for (std::size_t i : idx) {
    const ActivationCast& c = casts[i];
    if (c.node_index >= order.size() || order[c.node_index].first->kind().toQualString() != c.op)
      throw std::logic_error("qcast: the graph has no " + c.op + " at position " + std::to_string(c.node_index));
    nodes.push_back(order[c.node_index].first);
  }
  // The last cast inserted for each value, and the node it was inserted before.
  struct Inserted {
    const ActivationCast* cast;
    Node* before;
    Value* output;
  };
  std::map<const Value*, Inserted> last;
  for (std::size_t j = 0; j < idx.size(); ++j) {
    const ActivationCast& c = casts[idx[j]];
    Node* site = nodes[j];
    Value* x = site->input(std::size_t(c.data_input));
    auto it = last.find(x);
    bool reuse = it != last.end() && it->second.cast->same_cast(c) && it->second.before->owningBlock() == site->owningBlock();
    if (reuse)
      for (Node* n = it->second.before; n != site && reuse; n = n->next()) reuse = !writes_memory(n);
    if (!reuse) {
      torch::jit::WithInsertPoint guard(site);
      std::vector<torch::jit::NamedValue> kwargs = {{"format", format_name(c.format)}};
      if (c.amax) kwargs.emplace_back("tensor_amax", double(*c.amax));
      Value* y = graph.insert(c10::Symbol::fromQualString("qcast::cast"), {torch::jit::NamedValue(x)}, kwargs);
      y->setType(x->type());
      last[x] = {&c, site, y};
      it = last.find(x);
    }
    site->replaceInput(std::size_t(c.data_input), it->second.output);
  }
}

torch::jit::Module with_activation_casts(const torch::jit::Module& model, const std::vector<ActivationCast>& casts) {
  torch::jit::Module out = model.clone();  // new class types: the original's forward is not touched
  auto graph = inlined_forward(out);
  insert_activation_casts(*graph, casts);
  torch::jit::Function& old = out.get_method("forward").function();
  const c10::QualifiedName name = old.qualname();
  auto cu = out._ivalue()->compilation_unit();
  out.type()->unsafeRemoveMethod("forward");
  cu->unsafeRemoveMethod(name);
  torch::jit::Function* fn = cu->create_function(name, graph);
  out.type()->addMethod(fn);
  return out;
}

}  // namespace qcast::ptq::detail
