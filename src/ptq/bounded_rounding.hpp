// Rounding under an accumulator bound (AXE: Colbert et al., "Accumulator-Aware Post-Training
// Quantization", 2024): the methods that quantize a weight matrix element by element (rtn, gptq,
// gpfq, ed) round through BoundedRounding when the run keeps integer dot products within P bits
// (docs/ptq.md "Accumulator bounds"; the bound itself in qcast/ptq/accumulator.hpp). Internal to
// src/ptq.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "qcast/ptq/accumulator.hpp"
#include "qcast/ptq/engine.hpp"
#include "qcast/ptq/weight_grid.hpp"

namespace qcast::ptq::detail {

// One layer's bound: its tiles and the integer range of its inputs.
struct AccumulatorBound {
  int bits = 0;           // P; 0: nothing is bounded, the need is only measured and reported
  std::int64_t tile = 0;  // columns per tile (> 0)
  IntegerRange input;
  std::string input_from;  // what gave the input range, for the report: "act-format int8", "act-bits 8"
};

// The bound of a layer with weight format `weight` [rows, cols] and activation format `act_format`
// ("" when its inputs stay in float), or none when the run asks for none. columns_per_channel: the
// weight columns one input channel spans (a convolution's kernel size; 1 for a matmul), which turns
// an activation block into weight columns. Without a tile the whole row is one, or the largest that
// divides the formats' blocks. std::invalid_argument where the formats cannot carry a bound.
std::optional<AccumulatorBound> accumulator_bound(const AccumulatorOptions& o, const Format& weight,
                                                  const std::string& act_format, std::int64_t cols,
                                                  std::int64_t columns_per_channel);

// Rounds the elements of rows row0.. of a grid so that every tile's codes keep the bound, in the
// order the caller visits them. Per element: the target is soft-thresholded by the tile's θ (the
// shrinkage that projects the tile's centred float weights, in code units, onto the L1 ball of
// radius (2^P - 2) / (x_max - x_min): AXE's soft constraint, which spreads the tile's budget over
// its columns), clamped to the codes code_limits() allows (AXE's hard constraint) and rounded on the
// grid; a rounding past the limits takes the limit.
class BoundedRounding {
 public:
  // Every scale of those rows must be fixed. w: [rows, cols] row-major (the weights the thresholds
  // come from: the float weights, before the walk).
  BoundedRounding(const AccumulatorBound& bound, WeightGrid& grid, std::int64_t row0, const double* w, std::int64_t rows);
  // Element (row0 + r, col) rounded from `target` within the bound; returns its value on the grid.
  double quantize(std::int64_t r, std::int64_t col, double target);

 private:
  const AccumulatorBound& bound_;
  WeightGrid& grid_;
  std::int64_t row0_, tiles_, limit_, qmin_, qmax_;
  std::vector<TileSums> sums_;      // [rows, tiles]
  std::vector<double> threshold_;  // [rows, tiles], in code units
};

}  // namespace qcast::ptq::detail
