// FlexRound (Lee et al., ICML 2023): learnable rounding by element-wise division, trained by
// reconstructing the output of a span of layers (docs/ptq.md "FlexRound", docs/design/0017-flexround.md).
//
//   Ŵ = s1 · round(W / (s1 · S2 · s3 · s4))
//
// s1 is the grid scale of each group (a block of a block-scaled format, a channel or the tensor),
// S2 one factor per element, s3 one per output channel (row), s4 one per input channel (linear and
// convolution layers). All are learned in the log domain (so they stay positive) from 1, with s1
// from the format's own scale rule on the float weights: the start is round-to-nearest with static
// scales. round() is the format's own grid: s1 is put on it as an amax multiplier through the
// format's scale rule (E8M0, E4M3 x tensor scale, float), the elements are rounded as WeightGrid
// rounds them, and the gradients pass straight through both roundings. Internal to src/ptq.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "qcast/format.hpp"
#include "qcast/ptq/weight_grid.hpp"

namespace qcast::ptq::detail {

class FlexRoundWeight {
 public:
  // w: the float weight matrix [rows, cols] (float64, CPU). cols_per_channel: the columns of one
  // input channel (a convolution's kernel size, 1 for a linear layer); 0: no s4 (a matmul operand).
  // start: the values rounded while every factor is 1 (undefined: w, so the start is
  // round-to-nearest); a column walk's rounded values make the start that walk's result. The scales
  // start from w either way, as the walk's static scales do.
  FlexRoundWeight(const at::Tensor& w, const Format& format, std::int64_t cols_per_channel,
                  const at::Tensor& start = at::Tensor());

  // The learnable tensors (float64, CPU, requiring gradients).
  std::vector<at::Tensor> parameters() const;

  // Ŵ [rows, cols] float64 for the current parameters: exactly the grid's values, with the
  // straight-through gradients of FlexRound (d Ŵ / d S = d (W / S)), and d Ŵ / d s1 = round(v) - v
  // as in learned step sizes).
  at::Tensor forward() const;

  // W / (S2 · s3 · s4) [rows, cols] float64, without gradients: what the grid rounds.
  at::Tensor divided() const;
  // Fixes every group's scale of `grid` (a grid of this weight's format and shape) from the learned s1.
  void fix_scales(WeightGrid& grid) const;
  // Back to the start (every factor 1, s1 from the float weights).
  void reset();
  // A copy of the learned values, and setting them back from one (early stopping).
  std::vector<at::Tensor> snapshot() const;
  void restore(const std::vector<at::Tensor>& values);

 private:
  at::Tensor group_amax() const;          // [rows, groups per row], learned, without gradients
  at::Tensor per_element(const at::Tensor& g) const;  // a [rows, groups per row] tensor spread over [rows, cols]
  at::Tensor grid_values(const at::Tensor& divided, const at::Tensor& amax) const;
  void fix_groups(WeightGrid& grid, const at::Tensor& amax) const;  // amax [rows | 1, groups per row]
  at::Tensor divided_with_gradients() const;                        // W / (S2 · s3 · s4)

  at::Tensor w_;        // what W / (S2 s3 s4) divides: the float weights, or the start given
  at::Tensor scale_w_;  // the float weights, which the grid's tensor and channel scales and amax0_ come from
  Format format_;
  std::int64_t rows_, cols_, cols_per_channel_;
  bool scaled_;
  int group_cols_ = 0;  // columns per group along a row: the block size, or cols (channel, tensor)
  double element_max_;
  at::Tensor amax0_;    // [rows | 1, groups per row] from the float weights
  at::Tensor log_s2_, log_s3_, log_s4_, log2_s1_;
};

// The key of the span a layer is trained in (consecutive layers with the same key form one span).
// rule "auto": the name up to its first number that stands between separators ('.' or '_') and is
// followed by more ("encoder.layer.3.attention.self.query" -> "encoder.layer.3", "block_3_expand"
// -> "block_3"; "conv2d_185.weight" -> "conv2d_185", its own span; a name without one is its own span); "layer": the name itself;
// otherwise an ECMAScript regular expression whose first match in the name is the key (a name it
// does not match is its own span). std::invalid_argument for a bad expression.
std::string span_key(const std::string& name, const std::string& rule);

struct SpanTraining {
  int iterations = 500;
  double learning_rate = 1e-3;
  std::uint64_t seed = 0;
  // Puts layer i's Ŵ (the weight matrix [rows, cols], with its autograd graph) into the quantized
  // copy of the model.
  std::function<void(std::size_t layer, const at::Tensor& w_hat)> install;
  // The span's outputs on calibration batch b of the quantized stream, with the weights installed.
  std::function<std::vector<at::Tensor>(std::size_t batch)> output;
  // The float stream's outputs of the span, per batch.
  std::vector<std::vector<at::Tensor>> targets;
  // The last `held_out` batches are not trained on (0: all are). The span's error on them is
  // measured at the start and every `check_every` iterations, and the iterate with the lowest one
  // is kept (early stopping; the start when no iterate beats it).
  std::size_t held_out = 0;
  int check_every = 50;
  // Called every few iterations with the iteration (1-based) and the running mean of the loss.
  std::function<void(int iteration, double loss)> progress;
};

struct SpanResult {
  double error_before = 0, error_after = 0;  // ||Y - T||² / ||T||² over every batch, at the start and the end
  bool kept_start = false;  // the learned rounding reconstructed worse than the start, which was kept
  // With held-out batches: their relative error at the start and at the iterate kept, and that
  // iterate (0: the start).
  double held_out_before = 0, held_out_after = 0;
  int kept_iteration = 0;
  double seconds = 0;
};

// Trains the weights of one span jointly with Adam (one calibration batch per iteration, in a
// seeded order), minimizing ||Y - T||² / ||T||² of the span's outputs. The result is left in the
// weights' parameters; nothing is installed afterwards. Without held-out batches the last iterate
// is kept unless it reconstructs the training batches worse than the start; with them, the
// iterate that reconstructs the held-out batches best.
SpanResult train_span(std::vector<FlexRoundWeight>& weights, const SpanTraining& t);

}  // namespace qcast::ptq::detail
