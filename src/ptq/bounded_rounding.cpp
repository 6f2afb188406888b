// Rounding under an accumulator bound (bounded_rounding.hpp).
#include "bounded_rounding.hpp"

#include <algorithm>
#include <cmath>
#include <functional>
#include <numeric>
#include <stdexcept>

#include "qcast/format_names.hpp"

namespace qcast::ptq::detail {

namespace {

// The θ >= 0 whose soft threshold maps a >= 0 (elementwise) onto the L1 ball of `radius`:
// Σ max(a_i - θ, 0) = radius, or 0 when a is inside already (Duchi et al., "Efficient Projections
// onto the l1-Ball for Learning in High Dimensions", ICML 2008, figure 1).
double l1_ball_threshold(std::vector<double> a, double radius) {
  double total = 0;
  for (double v : a) total += v;
  if (total <= radius) return 0.0;
  std::sort(a.begin(), a.end(), std::greater<double>());
  double cumulative = 0, theta = 0;
  for (std::size_t j = 0; j < a.size(); ++j) {
    cumulative += a[j];
    const double t = (cumulative - radius) / double(j + 1);
    if (a[j] > t) theta = t;  // the last j where the j-th largest stays above its threshold
  }
  return std::max(0.0, theta);
}

}  // namespace

std::optional<AccumulatorBound> accumulator_bound(const AccumulatorOptions& o, const Format& weight,
                                                  const std::string& act_format, std::int64_t cols,
                                                  std::int64_t columns_per_channel) {
  const std::optional<Format> af = act_format.empty() ? std::nullopt : std::optional<Format>(parse_format(act_format));
  // Without accumulator options, a layer whose weights and inputs are both integer formats still
  // gets its need measured and reported (no bound).
  if (!o.any() && (weight.element.kind != ElementKind::integer || !af || af->element.kind != ElementKind::integer))
    return std::nullopt;
  if (o.bits != 0) (void)accumulator_limit(o.bits);  // its range check
  if (o.tile < 0) throw std::invalid_argument("an accumulator tile must be at least 1 column, got " + std::to_string(o.tile));
  if (weight.element.kind != ElementKind::integer)
    throw std::invalid_argument("an accumulator bound needs integer weights, and its format " +
                                format_name(weight) + " is not an integer format (intN, intN@gK, intN@channel, mxint8; "
                                "or --exclude the layer)");
  AccumulatorBound b;
  b.bits = o.bits;
  // The blocks a tile must stay inside, in weight columns: each block has its own scale, so only
  // the products within one can share an integer accumulator.
  std::vector<std::pair<std::int64_t, std::string>> blocks;
  // (A row no wider than a block is one block.)
  if (weight.granularity == Granularity::block && weight.block_size < cols) blocks.emplace_back(weight.block_size, "weight format " + format_name(weight));
  if (af) {
    if (af->element.kind != ElementKind::integer)
      throw std::invalid_argument("an accumulator bound needs integer inputs, and its activation format " +
                                  act_format + " is not an integer format");
    b.input = integer_range(af->element);
    b.input_from = "act-format " + act_format;
    if (af->granularity == Granularity::block && af->block_size * columns_per_channel < cols)
      blocks.emplace_back(af->block_size * columns_per_channel, "activation format " + act_format);
  } else if (o.input_bits > 0) {
    b.input = integer_range(o.input_bits, o.input_signed);
    b.input_from = "act-bits " + std::to_string(o.input_bits) + (o.input_signed ? "" : " unsigned");
  } else {
    throw std::invalid_argument("an accumulator bound needs the integer range of its inputs: give the "
                                "activations an integer format (--act-format int8, ...) or their width (--act-bits N, "
                                "with --act-unsigned for inputs >= 0)");
  }
  if (o.tile > 0) {
    for (const auto& [size, whose] : blocks)
      if (size % o.tile != 0)
        throw std::invalid_argument("an accumulator tile of " + std::to_string(o.tile) +
                                    " columns crosses the blocks of its " + whose + " (" + std::to_string(size) +
                                    " columns, each with its own scale); give a divisor of " + std::to_string(size));
    b.tile = o.tile;
  } else {
    std::int64_t t = 0;  // gcd(0, n) = n
    for (const auto& block : blocks) t = std::gcd(t, block.first);
    b.tile = t > 0 ? t : cols;
  }
  b.tile = std::min(b.tile, cols);
  return b;
}

BoundedRounding::BoundedRounding(const AccumulatorBound& bound, WeightGrid& grid, std::int64_t row0, const double* w,
                                 std::int64_t rows)
    : bound_(bound), grid_(grid), row0_(row0) {
  if (bound.bits == 0 || bound.tile < 1) throw std::logic_error("BoundedRounding without a bound");
  const std::int64_t cols = grid.cols();
  tiles_ = (cols + bound.tile - 1) / bound.tile;
  limit_ = accumulator_limit(bound.bits);
  const IntegerRange elements = integer_range(grid.format().element);
  qmin_ = elements.min;
  qmax_ = elements.max;
  sums_.assign(std::size_t(rows * tiles_), TileSums{});
  threshold_.assign(std::size_t(rows * tiles_), 0.0);
  const double radius = double((std::int64_t{1} << bound.bits) - 2) / double(bound.input.max - bound.input.min);
  std::vector<double> v;
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t k = 0; k < tiles_; ++k) {
      const std::int64_t c0 = k * bound.tile, c1 = std::min(cols, c0 + bound.tile);
      v.clear();
      for (std::int64_t c = c0; c < c1; ++c) {
        const double step = grid.integer_step(row0 + r, c);
        v.push_back(step > 0 ? w[r * cols + c] / step : 0.0);
      }
      const double mean = std::accumulate(v.begin(), v.end(), 0.0) / double(v.size());
      for (double& x : v) x = std::fabs(x - mean);
      threshold_[std::size_t(r * tiles_ + k)] = l1_ball_threshold(v, radius);
    }
}

double BoundedRounding::quantize(std::int64_t r, std::int64_t col, double target) {
  const std::int64_t row = row0_ + r;
  const std::size_t ti = std::size_t(r * tiles_ + col / bound_.tile);
  TileSums& sums = sums_[ti];
  auto [lo, hi] = code_limits(sums, bound_.input, limit_);
  lo = std::max(lo, qmin_);
  hi = std::min(hi, qmax_);
  const double step = grid_.integer_step(row, col);
  if (step == 0) return grid_.set_integer(row, col, 0);  // a group whose scale is zero holds zeros
  double t = target / step;
  t = std::copysign(std::max(std::fabs(t) - threshold_[ti], 0.0), t);
  t = std::clamp(t, double(lo), double(hi));
  double value = grid_.quantize(row, col, t * step);
  std::int64_t q = grid_.integer_code(row, col);
  if (q < lo || q > hi) {  // rounded past a limit by the grid's float arithmetic: take the limit
    q = std::clamp(q, lo, hi);
    value = grid_.set_integer(row, col, q);
  }
  sums.add(q);
  return value;
}

}  // namespace qcast::ptq::detail
