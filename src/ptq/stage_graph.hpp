// The model's forward cut into stages at the weight layers' sites, so that the calibration runs each
// part of the graph once per stream and batch (docs/design/0007-ptq-pipeline.md). Stage k runs the
// top-level nodes from cut k-1 (or the start) up to cut k, on the values live across cut k-1 (the
// boundary state), and returns the inputs that the node at cut k receives. Internal to src/ptq.
#pragma once
#include <ATen/core/ivalue.h>
#include <torch/csrc/jit/api/function_impl.h>
#include <torch/csrc/jit/api/module.h>
#include <torch/csrc/jit/ir/ir.h>

#include <cstddef>
#include <memory>
#include <unordered_map>
#include <vector>

#include "input_transforms.hpp"
#include "qcast/ptq/engine.hpp"

namespace qcast::ptq::detail {

// The values live at a cut, by Value::unique() of the inlined graph.
using Env = std::unordered_map<std::size_t, c10::IValue>;

class StagedForward {
 public:
  // cuts: walk positions (Site::node_index) of top-level nodes; duplicates are merged. casts:
  // activation quantizers inserted before the cut nodes (the quantized stream's graph); the cut
  // positions keep the numbering of the graph without them, and a cut's captured inputs are those
  // after the casts.
  StagedForward(const torch::jit::Module& model, const std::vector<std::size_t>& cuts,
                const std::vector<InputTransform>& casts = {});

  std::size_t stages() const { return stages_.size(); }
  std::size_t cut(std::size_t k) const { return stages_[k].cut_index; }  // walk position of cut k

  // The boundary state before stage 0: the model's inputs. Throws when their number does not fit.
  Env initial(const Batch& inputs) const;

  // Runs stage k with `self` as the module (the float or the quantized copy). env holds the values
  // live at cut k-1 and is left holding those live at cut k. Returns the inputs of the node at cut k.
  std::vector<c10::IValue> run(std::size_t k, const torch::jit::Module& self, Env& env) const;

  // Runs the nodes from the last cut to the graph's return on the values live at the last cut (env
  // is left as it was) and returns the model's outputs: where a span of layers that ends with the
  // model is reconstructed (FlexRound), its target and its output.
  std::vector<c10::IValue> run_tail(const torch::jit::Module& self, const Env& env) const;

  // The values that stages `from` to `to` define and that are still live at cut `to` (in the
  // boundary state after stage `to`), by id, in order of definition. Two StagedForward of one model
  // give the same ids to the values of its graph (the inserted transforms' values have ids of their
  // own and are left out).
  std::vector<std::size_t> live_defined(std::size_t from, std::size_t to) const;

  // Whether any node from cut k up to cut k+1 may write into a tensor (an in-place operation): if
  // none does, a value read at cut k holds the same data at cut k+1.
  bool mutates_between(std::size_t k) const { return stages_[k + 1].mutates; }
  // Whether stage k may write into a tensor it did not create.
  bool writes(std::size_t k) const { return stages_[k].mutates; }
  bool tail_writes() const { return tail_->mutates; }

  // The graph value of input i of the node at cut k (to tell whether two cuts read the same value).
  const torch::jit::Value* cut_input(std::size_t k, std::size_t i) const;

 private:
  struct Stage {
    std::size_t cut_index = 0;  // walk position of the node at the cut
    std::size_t end = 0;        // top-level position of the node at the cut
    std::unique_ptr<torch::jit::GraphFunction> fn;
    std::vector<std::size_t> inputs;   // live values read, in the function's input order (after self)
    std::vector<std::size_t> outputs;  // values defined here and read after the cut
    std::vector<std::size_t> dropped;  // values live before whose last reader is in this stage
    bool mutates = false;
  };
  std::shared_ptr<torch::jit::Graph> graph_;
  std::vector<torch::jit::Node*> top_;
  std::vector<std::size_t> model_inputs_;
  std::vector<Stage> stages_;
  std::unique_ptr<Stage> tail_;  // from the last cut to the return
  std::size_t first_inserted_id_ = 0;  // values with ids from here on were made by the inserted transforms
};

}  // namespace qcast::ptq::detail
