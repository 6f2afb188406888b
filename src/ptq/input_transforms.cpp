// Rotations and activation quantizers on the layers' data inputs (input_transforms.hpp).
#include "input_transforms.hpp"

#include <ATen/ATen.h>
#include <torch/csrc/jit/api/function_impl.h>
#include <torch/csrc/jit/ir/named_value.h>

#include <algorithm>
#include <map>
#include <stdexcept>

#include "model_walk.hpp"
#include "qcast/format_names.hpp"

namespace qcast::ptq::detail {

bool InputTransform::same_transform(const InputTransform& o) const {
  if (hadamard_block != o.hadamard_block || axis != o.axis || amax != o.amax || format.has_value() != o.format.has_value())
    return false;
  if (smooth_inv.defined() != o.smooth_inv.defined()) return false;
  if (smooth_inv.defined() && !(smooth_inv.sizes() == o.smooth_inv.sizes() && at::equal(smooth_inv, o.smooth_inv))) return false;
  return !format || format_name(*format) == format_name(*o.format);
}

InputTransform InputTransform::float_stream() const {
  InputTransform t = *this;
  t.format.reset();
  t.amax.reset();
  return t;
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

int weight_reduction_axis(const Site& site, WeightLayout layout) {
  if (site.kind == SiteKind::conv) return 1;  // [out, in/groups, k...]
  return layout == WeightLayout::rows ? -1 : -2;
}

std::int64_t reduction_extent(const Site& site, WeightLayout layout, const at::Tensor& weight, const char** what) {
  if (site.kind == SiteKind::conv) {
    if (what) *what = "the input channels per group";
    return weight.size(1);
  }
  if (what) *what = "the reduction size";
  return layout == WeightLayout::rows ? weight.size(-1) : weight.size(-2);
}

std::string activation_unfit_reason(const Format& f, const Site& site, WeightLayout layout, const at::Tensor& weight) {
  if (f.granularity == Granularity::channel)
    return "per-channel activation scales are not supported (a block, per-tensor, two-level or direct format is)";
  if (f.granularity != Granularity::block) return {};
  const char* what = nullptr;
  const std::int64_t extent = reduction_extent(site, layout, weight, &what);
  if (extent % f.block_size != 0)
    return "a block of " + std::to_string(f.block_size) + " does not divide " + what + " (" + std::to_string(extent) + ")";
  return {};
}

std::string rotation_unfit_reason(std::int64_t block, const Site& site, WeightLayout layout, const at::Tensor& weight) {
  const char* what = nullptr;
  const std::int64_t extent = reduction_extent(site, layout, weight, &what);
  if (extent % block != 0)
    return "a rotation of " + std::to_string(block) + " does not divide " + what + " (" + std::to_string(extent) + ")";
  return {};
}

std::string activation_unfit_reason(const Format& f, const std::vector<Site>& sites, WeightLayout layout,
                                    const at::Tensor& weight) {
  for (const Site& site : sites)
    if (std::string why = activation_unfit_reason(f, site, layout, weight); !why.empty()) return why;
  return {};
}

std::string rotation_unfit_reason(std::int64_t block, const std::vector<Site>& sites, WeightLayout layout,
                                  const at::Tensor& weight) {
  for (const Site& site : sites)
    if (std::string why = rotation_unfit_reason(block, site, layout, weight); !why.empty()) return why;
  return {};
}

void insert_input_transforms(torch::jit::Graph& graph, const std::vector<InputTransform>& transforms) {
  using torch::jit::Node;
  using torch::jit::Value;
  const auto order = walk_order(graph.block());
  std::vector<std::size_t> idx(transforms.size());
  for (std::size_t i = 0; i < idx.size(); ++i) idx[i] = i;
  std::stable_sort(idx.begin(), idx.end(),
                   [&](std::size_t a, std::size_t b) { return transforms[a].node_index < transforms[b].node_index; });
  std::vector<Node*> nodes;
  for (std::size_t i : idx) {
    const InputTransform& t = transforms[i];
    if (t.node_index >= order.size() || order[t.node_index].first->kind().toQualString() != t.op)
      throw std::logic_error("qcast: the graph has no " + t.op + " at position " + std::to_string(t.node_index));
    nodes.push_back(order[t.node_index].first);
  }
  // The last transform inserted for each value, the node it was inserted before, and its output.
  struct Inserted {
    const InputTransform* transform;
    Node* before;
    Value* output;
  };
  std::map<const Value*, Inserted> last;
  for (std::size_t j = 0; j < idx.size(); ++j) {
    const InputTransform& t = transforms[idx[j]];
    if (t.hadamard_block == 0 && !t.format && !t.smooth_inv.defined()) continue;
    Node* site = nodes[j];
    Value* x = site->input(std::size_t(t.data_input));
    auto it = last.find(x);
    bool reuse = it != last.end() && it->second.transform->same_transform(t) &&
                 it->second.before->owningBlock() == site->owningBlock();
    for (Node* n = reuse ? it->second.before : site; n != site; n = n->next()) reuse = reuse && !writes_memory(n);
    if (!reuse) {
      torch::jit::WithInsertPoint guard(site);
      Value* y = x;
      if (t.smooth_inv.defined()) {
        y = graph.insert(c10::aten::mul, {torch::jit::NamedValue(y), torch::jit::NamedValue(graph.insertConstant(t.smooth_inv))});
        y->setType(x->type());
      }
      if (t.hadamard_block > 0) {
        y = graph.insert(c10::Symbol::fromQualString("qcast::hadamard"), {torch::jit::NamedValue(y)},
                         {{"block", t.hadamard_block}, {"dim", std::int64_t(t.axis)}});
        y->setType(x->type());
      }
      if (t.format) {
        std::vector<torch::jit::NamedValue> kwargs = {{"format", format_name(*t.format)}};
        if (t.amax) kwargs.emplace_back("tensor_amax", double(*t.amax));
        y = graph.insert(c10::Symbol::fromQualString("qcast::cast"), {torch::jit::NamedValue(y)}, kwargs);
        y->setType(x->type());
      }
      last[x] = {&t, site, y};
      it = last.find(x);
    }
    site->replaceInput(std::size_t(t.data_input), it->second.output);
  }
}

torch::jit::Module with_input_transforms(const torch::jit::Module& model, const std::vector<InputTransform>& transforms,
                                         c10::Device constants) {
  torch::jit::Module out = model.clone();  // new class types: the original's forward is not touched
  auto graph = inlined_forward(out);
  std::vector<InputTransform> placed = transforms;  // a saved model's constants live on the CPU
  for (auto& t : placed)
    if (t.smooth_inv.defined()) t.smooth_inv = t.smooth_inv.to(constants);
  insert_input_transforms(*graph, placed);
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
