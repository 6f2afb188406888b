// Cutting the inlined forward graph into stages (stage_graph.hpp).
//
// Each stage becomes a graph of its own: its inputs are `self` and the live values it reads; its
// output is one tuple of the values it defines that later stages read, followed by the tuple of the
// inputs of the node at its cut. Values that depend on nothing but constants and the module
// (prim::Constant, attribute reads such as self.conv.weight, a weight's transpose, a list of
// constant strides) are never carried across a cut: each stage that reads one recomputes it from its
// own `self`. So the boundary state holds activations only, and a weight read after the layer is
// quantized is always the quantized one, even where the state went through the disk.
#include "stage_graph.hpp"

#include <torch/csrc/jit/runtime/graph_executor.h>

#include <algorithm>
#include <functional>
#include <map>
#include <set>
#include <stdexcept>
#include <string>

#include "input_transforms.hpp"
#include "model_walk.hpp"

namespace qcast::ptq::detail {
namespace {

using torch::jit::Block;
using torch::jit::Graph;
using torch::jit::Node;
using torch::jit::Value;

// The top-level node that v's definition belongs to (its own node, or the If/Loop around it); the
// graph's parameter node for the model's inputs.
Node* top_of(Value* v, const Block* top) {
  Node* n = v->node();
  while (n->owningBlock() != top) n = n->owningBlock()->owningNode();
  return n;
}

// Every value read by n or by a node inside n's blocks that is defined outside n.
void free_inputs(Node* n, Node* outer, const Block* top, std::vector<Value*>& out) {
  for (Value* v : n->inputs())
    if (top_of(v, top) != outer) out.push_back(v);
  for (Block* b : n->blocks()) {
    for (Node* m : b->nodes()) free_inputs(m, outer, top, out);
    free_inputs(b->return_node(), outer, top, out);
  }
}

}  // namespace

StagedForward::StagedForward(const torch::jit::Module& model, const std::vector<std::size_t>& cuts,
                             const std::vector<InputTransform>& casts) {
  graph_ = inlined_forward(model);
  Block* top = graph_->block();
  // The nodes at the cuts, found by their walk positions before the casts shift them.
  std::vector<std::pair<Node*, std::size_t>> cut_nodes;
  {
    const auto order = walk_order(top);
    for (std::size_t c : cuts) {
      const auto& [n, in_top] = order.at(c);
      if (!in_top) throw std::logic_error("qcast: a cut inside control flow");
      cut_nodes.emplace_back(n, c);
    }
  }
  // Values made from here on belong to the inserted transforms (ids only grow).
  {
    std::size_t next = 0;
    for (const Node* n : graph_->nodes())
      for (const Value* v : n->outputs()) next = std::max(next, v->unique() + 1);
    for (const Value* v : graph_->inputs()) next = std::max(next, v->unique() + 1);
    first_inserted_id_ = next;
  }
  if (!casts.empty()) insert_input_transforms(*graph_, casts);
  for (Node* n : top->nodes()) top_.push_back(n);
  std::map<const Node*, std::size_t> pos;
  for (std::size_t i = 0; i < top_.size(); ++i) pos[top_[i]] = i;
  const std::size_t N = top_.size();
  auto pos_of = [&](Value* v) -> long {  // -1: a model input
    const Node* n = top_of(v, top);
    return n == graph_->param_node() ? -1 : long(pos.at(n));
  };

  // Cut positions in the top block, in order.
  std::map<std::size_t, std::size_t> cut_at;  // top position -> walk position
  for (const auto& [n, c] : cut_nodes) cut_at.emplace(pos.at(n), c);

  // Liveness: the last top-level node that reads each value (N: the graph's output).
  std::vector<std::vector<Value*>> reads(N);
  std::map<const Value*, std::size_t> last_read;
  for (std::size_t i = 0; i < N; ++i) {
    free_inputs(top_[i], top_[i], top, reads[i]);
    for (Value* v : reads[i]) last_read[v] = std::max(last_read[v], i);
  }
  for (Value* v : graph_->outputs()) last_read[v] = N;

  // Values recomputed in each stage rather than carried: they depend on constants and `self` alone.
  const Value* self = graph_->inputs().at(0);
  std::map<const Value*, bool> remat_memo;
  std::function<bool(const Value*)> remat = [&](const Value* v) -> bool {
    if (v == self) return true;
    auto it = remat_memo.find(v);
    if (it != remat_memo.end()) return it->second;
    const Node* n = v->node();
    bool r = false;
    if (n->owningBlock() == top && n != graph_->param_node()) {
      if (n->kind() == c10::prim::Constant) r = true;
      else if (n->blocks().empty() && !n->isNondeterministic() && !writes_memory(n) &&
               n->kind() != c10::prim::Uninitialized) {
        r = true;
        for (const Value* in : n->inputs()) r = r && remat(in);
      }
    }
    remat_memo[v] = r;
    return r;
  };

  for (std::size_t i = 1; i < graph_->inputs().size(); ++i) model_inputs_.push_back(graph_->inputs()[i]->unique());

  std::set<Value*> live;  // carried values live at the current cut
  for (std::size_t i = 1; i < graph_->inputs().size(); ++i) live.insert(graph_->inputs()[i]);
  std::size_t begin = 0;
  std::size_t k = 0;
  // Stage k ends at top-level position `end` (the node at the cut); the tail (end == N) ends at the
  // graph's return and captures the model's outputs.
  auto build = [&](std::size_t end, std::size_t walk_pos) {
    const bool tail = end == N;
    const std::vector<Value*> at_cut = tail ? std::vector<Value*>(graph_->outputs().begin(), graph_->outputs().end())
                                            : std::vector<Value*>(top_[end]->inputs().begin(), top_[end]->inputs().end());
    Stage st;
    st.cut_index = walk_pos;
    st.end = end;
    for (std::size_t i = begin; i < end; ++i) st.mutates = st.mutates || writes_memory(top_[i]);

    auto sg = std::make_shared<Graph>();
    std::map<const Value*, Value*> vmap;
    vmap[self] = sg->addInput("self")->setType(self->type());
    // Inputs: carried values read by this stage's nodes or by the node at the cut.
    std::vector<Value*> needed;
    for (std::size_t i = begin; i < end; ++i) needed.insert(needed.end(), reads[i].begin(), reads[i].end());
    for (Value* v : at_cut) needed.push_back(v);
    for (Value* v : needed) {
      if (vmap.count(v) || remat(v) || pos_of(v) >= long(begin)) continue;
      if (!live.count(v)) throw std::logic_error("qcast: a stage reads a value that is not live");
      vmap[v] = sg->addInput()->setType(v->type());
      st.inputs.push_back(v->unique());
    }
    std::function<Value*(Value*)> get = [&](Value* v) -> Value* {
      auto it = vmap.find(v);
      if (it != vmap.end()) return it->second;
      if (!remat(v)) throw std::logic_error("qcast: stage graph value %" + v->debugName() + " is not available");
      Node* c = sg->createClone(v->node(), get);
      sg->appendNode(c);
      for (std::size_t o = 0; o < c->outputs().size(); ++o) vmap[v->node()->output(o)] = c->output(o);
      return vmap.at(v);
    };
    for (std::size_t i = begin; i < end; ++i) {
      Node* c = sg->createClone(top_[i], get);
      sg->appendNode(c);
      for (std::size_t o = 0; o < c->outputs().size(); ++o) vmap[top_[i]->output(o)] = c->output(o);
    }
    std::vector<Value*> captured;
    for (Value* v : at_cut) captured.push_back(get(v));
    Node* capture = sg->createTuple(captured);
    sg->appendNode(capture);
    // Outputs: values defined in this stage and read at or after the cut.
    std::vector<Value*> outs;
    for (std::size_t i = begin; i < end; ++i)
      for (Value* v : top_[i]->outputs())
        if (!tail && !remat(v) && last_read.count(v) && last_read[v] >= end) {
          outs.push_back(vmap.at(v));
          st.outputs.push_back(v->unique());
          live.insert(v);
        }
    outs.push_back(capture->output());
    Node* all = sg->createTuple(outs);
    sg->appendNode(all);
    sg->registerOutput(all->output());
    for (auto it = live.begin(); it != live.end();) {
      if (pos_of(*it) < long(begin) && last_read[*it] < end) {
        st.dropped.push_back((*it)->unique());
        it = live.erase(it);
      } else {
        ++it;
      }
    }
    st.fn = std::make_unique<torch::jit::GraphFunction>(tail ? std::string("qcast_tail") : "qcast_stage_" + std::to_string(k), sg, nullptr);
    return st;
  };
  for (const auto& [end, walk_pos] : cut_at) {
    stages_.push_back(build(end, walk_pos));
    begin = end;
    ++k;
  }
  tail_ = std::make_unique<Stage>(build(N, 0));
}

Env StagedForward::initial(const Batch& inputs) const {
  if (inputs.size() != model_inputs_.size())
    throw std::invalid_argument("the model takes " + std::to_string(model_inputs_.size()) + " inputs; a batch has " +
                                std::to_string(inputs.size()));
  Env env;
  for (std::size_t i = 0; i < inputs.size(); ++i) env.emplace(model_inputs_[i], inputs[i]);
  return env;
}

std::vector<c10::IValue> StagedForward::run(std::size_t k, const torch::jit::Module& self, Env& env) const {
  const Stage& st = stages_.at(k);
  torch::jit::GraphOptimizerEnabledGuard no_jit_passes(false);  // run the graph as written
  torch::jit::Stack stack;
  stack.reserve(st.inputs.size() + 1);
  stack.emplace_back(self._ivalue());
  for (std::size_t id : st.inputs) stack.push_back(env.at(id));
  st.fn->run(stack);
  const auto& outs = stack.back().toTupleRef().elements();
  for (std::size_t id : st.dropped) env.erase(id);
  for (std::size_t i = 0; i < st.outputs.size(); ++i) env[st.outputs[i]] = outs[i];
  const auto& cap = outs.back().toTupleRef().elements();
  return std::vector<c10::IValue>(cap.begin(), cap.end());
}

std::vector<c10::IValue> StagedForward::run_tail(const torch::jit::Module& self, const Env& env) const {
  torch::jit::GraphOptimizerEnabledGuard no_jit_passes(false);
  torch::jit::Stack stack;
  stack.reserve(tail_->inputs.size() + 1);
  stack.emplace_back(self._ivalue());
  for (std::size_t id : tail_->inputs) stack.push_back(env.at(id));
  tail_->fn->run(stack);
  const auto& cap = stack.back().toTupleRef().elements().back().toTupleRef().elements();
  return std::vector<c10::IValue>(cap.begin(), cap.end());
}

std::vector<std::size_t> StagedForward::live_defined(std::size_t from, std::size_t to) const {
  std::vector<std::size_t> live;
  for (std::size_t j = from; j <= to; ++j) {
    const Stage& st = stages_.at(j);
    for (std::size_t id : st.dropped) live.erase(std::remove(live.begin(), live.end(), id), live.end());
    for (std::size_t id : st.outputs)
      if (id < first_inserted_id_) live.push_back(id);
  }
  return live;
}

const torch::jit::Value* StagedForward::cut_input(std::size_t k, std::size_t i) const {
  const Stage& st = stages_.at(k);
  return top_.at(st.end)->inputs().at(i);
}

}  // namespace qcast::ptq::detail
