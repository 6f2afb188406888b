// Building blocks the method plug-ins share: rounding to nearest on the grid, the sequential
// (GPTQ-style) column walk that diffuses each column's rounding error into the later columns, and the
// relative output error of a result. Internal to src/ptq.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>

#include "bounded_rounding.hpp"
#include "grams.hpp"
#include "qcast/ptq/weight_grid.hpp"

namespace qcast::ptq::detail {

// Each row of w [rows, cols] (float64, contiguous) rounded to nearest on its groups' grid, in place.
// With an accumulator bound: every block's scale fixed from w first, then each row's elements in
// column order through BoundedRounding.
void round_to_nearest(at::Tensor& w, std::int64_t row0, WeightGrid& grid, const AccumulatorBound* bound = nullptr);

// A BoundedRounding of `bound` for rows row0.. of the grid, thresholds from w [rows, cols]; none
// without a bound. Scales must be fixed: std::invalid_argument for block scales that a walk would
// fix later (--scales diffused).
std::optional<BoundedRounding> bounded_rounding(const AccumulatorBound* bound, WeightGrid& grid, std::int64_t row0,
                                                const at::Tensor& w, bool scales_fixed);

struct ColumnWalk {
  double damping = 0.01;       // fraction of the mean diagonal of H added to it
  std::int64_t lazy_batch = 128;  // columns per lazy batch (rounded up to whole blocks)
  bool act_order = false;      // columns by decreasing diagonal of H; needs static scales
  // Where block scales come from. Defined ([rows, cols] float64, e.g. the float weights): every block's
  // scale is fixed from these values before the first column ("static", the reference GPTQ's static
  // groups). Undefined: a block's scale is fixed from the weights as the walk has changed them when
  // it reaches the block ("diffused"); with act_order the weights before the walk are used.
  at::Tensor scales_from;
  // With scales_from: each block's scale is the one of its amax times the factor in 0.5, 0.525, ...,
  // 2 that gives the least squared rounding error of scales_from's block, each element's weighted
  // by its input's energy (H's diagonal): the diagonal part of the layer's output error. Ties keep
  // factor 1, the plain rule.
  bool scales_mse = false;
  // Where set (with scales_mse), receives the share of blocks whose searched scale is below the plain
  // rule's (their largest values clip) and above it (a coarser grid): the report's notes.
  std::pair<double, double>* searched_shares = nullptr;
  const AccumulatorBound* accumulator = nullptr;  // every column rounded within it (needs static scales)
  // Where set, receives the values the walk rounded [rows, cols], in the weights' column order: each
  // column as it stood when its turn came, the errors of the columns before diffused into it. Each
  // lies in the cell of its code, so learned rounding can start from the walk's result with every
  // element still free to move (FlexRound --start, docs/design/0017-flexround.md).
  at::Tensor* rounded = nullptr;
};

// Width of the lazy batches: the requested width rounded up to whole blocks, so that a block's
// columns are all in the batch where its scale is fixed.
std::int64_t batch_width(const WeightGrid& grid, std::int64_t requested);

// Fixes every block's scale of rows row0.. from the values `from` [rows, cols] (static scales).
void fix_all_blocks(WeightGrid& grid, std::int64_t row0, const at::Tensor& from);

// Fixes every block's scale of rows row0.. from `from` [rows, cols], each block's amax scaled by the
// factor of least squared rounding error weighted by `energy` [cols] (ColumnWalk::scales_mse).
// Returns the shares of blocks that took a factor below 1 and above 1.
std::pair<double, double> fix_all_blocks_mse(WeightGrid& grid, std::int64_t row0, const at::Tensor& from,
                                             const at::Tensor& energy);

// Reads a method's --scales option: "static" (from the float weights w), "mse" (from w, searched) or
// "diffused".
void choose_scales(ColumnWalk& walk, const std::string& scales, const at::Tensor& w);

// GPTQ's walk (Frantar et al. 2023, Algorithm 1) with H as the Hessian: columns in order, each rounded
// on its group's grid and its error spread over the later columns through the upper Cholesky factor
// of the damped inverse of H; block scales as walk.scales_from says. Returns Ŵ.
at::Tensor sequential_rounding(at::Tensor w, at::Tensor h, std::int64_t row0, WeightGrid& grid, const ColumnWalk& walk);

// sequential_rounding for a method's final walk: with searched scales (ColumnWalk::scales_mse) the
// shares of blocks whose scale the search moved below and above the plain rule's go to the layer's
// report notes as "scales_clipped" and "scales_coarser".
at::Tensor noted_sequential_rounding(const at::Tensor& w, const at::Tensor& h, std::int64_t row0, WeightGrid& grid,
                                     ColumnWalk o, std::map<std::string, double>& notes);

// λ of a damping fraction: fraction × mean of H's diagonal.
double damping_of(const at::Tensor& h, double fraction);

// ||Ŵ·X̂ − W·X|| / ||W·X|| over the calibration set, from the Gram matrices and ||W·X||² (bias excluded).
double relative_output_error(const at::Tensor& w, const at::Tensor& w_hat, const Grams& grams, double target_energy);

// Bias correction: mean(W·X) − mean(Ŵ·X̂) per output row [rows] over the calibration tokens (rows
// split evenly into the groups), from the input sums.
at::Tensor bias_shift(const at::Tensor& w, const at::Tensor& w_hat, const Grams& grams);

// The relative output error after adding `shift` to the bias: each row's squared error drops by
// tokens × shift², since the shift is minus the row's mean error.
double corrected_output_error(double relative_error, const at::Tensor& shift, const Grams& grams, double target_energy);

}  // namespace qcast::ptq::detail
