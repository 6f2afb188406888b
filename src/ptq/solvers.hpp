// The three methods on one weight matrix, from the calibration Gram matrices. Internal to src/ptq.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>

#include "qcast/ptq/engine.hpp"
#include "qcast/ptq/weight_grid.hpp"

namespace qcast::ptq::detail {

// Sums over the calibration set, one [cols, cols] float64 matrix per group (stacked: [groups, cols, cols]).
// Rows of a group are the columns of X (float stream) and X̂ (quantized stream) as [cols, tokens].
struct Grams {
  at::Tensor xhat_xhat;  // X̂X̂ᵀ
  at::Tensor x_xhat;     // XX̂ᵀ
  double target_energy = 0;  // ||W·X||² (for the report's relative error)

  // Adds one chunk: x and xhat are [groups, cols, tokens] of any float dtype; w is the layer's
  // weight matrix [rows, cols] (rows split evenly into the groups). Products run in float32, sums
  // over chunks in float64.
  void add(const at::Tensor& x, const at::Tensor& xhat, const at::Tensor& w);
};

// Quantizes w ([rows, cols] float64; rows split evenly into the groups of `grams`) with the method and
// returns Ŵ (float64, same shape). Every value of Ŵ is on the grid, whose codes record it.
at::Tensor solve(Method method, const at::Tensor& w, const Grams& grams, WeightGrid& grid, const Options& options);

// ||Ŵ·X̂ − W·X|| / ||W·X|| over the calibration set, from the Gram matrices (bias excluded).
double relative_output_error(const at::Tensor& w, const at::Tensor& w_hat, const Grams& grams);

}  // namespace qcast::ptq::detail
