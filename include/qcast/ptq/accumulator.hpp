// Accumulator bounds for integer dot products: how wide an accumulator a layer's integer weight codes
// need so that Σ q_i·x_i cannot overflow for any integer input x in its range, and which code a
// weight may still take while keeping a bound (the constraint of A2Q and AXE: Colbert et al., "A2Q:
// Accumulator-Aware Quantization with Guaranteed Overflow Avoidance", ICCV 2023; Colbert et al.,
// "Accumulator-Aware Post-Training Quantization", 2024).
//
// The worst case of a dot product over inputs in [x_min, x_max] (x_min <= 0 <= x_max) is reached by
// each input at one end of its range: with S+ the sum of the positive codes and S- the sum of the
// negative ones (<= 0),
//   max Σ q·x = x_max·S+ + x_min·S-,   min Σ q·x = x_min·S+ + x_max·S-.
// A P-bit accumulator is taken to hold [-(2^(P-1) - 1), 2^(P-1) - 1]: symmetric, so the bound holds
// for two's-complement and sign-magnitude accumulators alike (AXE's convention).
//
// Multi-stage accumulation (AXE, section 3.3): the reduction is cut into tiles of T consecutive
// products, each summed in P bits, the tile sums then added in a wider register. The bound is per
// tile. A block-scaled format's blocks have their own scales, so its integer products can only share
// an accumulator within a block: a tile lies inside one block.
//
// No LibTorch: an inference engine can check its own weights with the core alone.
#pragma once
#include <algorithm>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>
#include <utility>

#include "qcast/cast.hpp"
#include "qcast/element.hpp"
#include "qcast/element_codec.hpp"
#include "qcast/packing.hpp"

namespace qcast::ptq {

// The integers an input takes (its codes), x_min <= 0 <= x_max.
struct IntegerRange {
  std::int64_t min = 0, max = 0;
};

// The codes of qcast's integer element format e: symmetric [-qmax, qmax] when signed (qcast never
// writes -2^(N-1)), [0, qmax] when not. The fixed-point fraction (MXINT8's 2^-6) is part of the
// scale, not of the integer.
inline IntegerRange integer_range(const ElementFormat& e) {
  if (e.kind != ElementKind::integer) throw std::invalid_argument("not an integer element format");
  return {e.is_signed ? -e.integer_max() : 0, e.integer_max()};
}

// An N-bit integer input produced elsewhere: the whole two's-complement range [-2^(N-1), 2^(N-1) - 1]
// when signed, [0, 2^N - 1] when not.
inline IntegerRange integer_range(int bits, bool is_signed) {
  if (bits < 1 || bits > 24) throw std::invalid_argument("an input width must be 1..24 bits, got " + std::to_string(bits));
  if (is_signed) return {-(std::int64_t{1} << (bits - 1)), (std::int64_t{1} << (bits - 1)) - 1};
  return {0, (std::int64_t{1} << bits) - 1};
}

// The largest magnitude a P-bit accumulator holds: 2^(P-1) - 1.
inline std::int64_t accumulator_limit(int bits) {
  if (bits < 2 || bits > 62) throw std::invalid_argument("an accumulator has 2..62 bits, got " + std::to_string(bits));
  return (std::int64_t{1} << (bits - 1)) - 1;
}

// The least P whose accumulator holds `worst` (>= 0).
inline int accumulator_bits(std::int64_t worst) {
  int p = 2;
  while (p < 62 && accumulator_limit(p) < worst) ++p;
  return p;
}

// The running sums of one tile's codes: S+ (>= 0) and S- (<= 0).
struct TileSums {
  std::int64_t positive = 0, negative = 0;
  void add(std::int64_t q) { (q > 0 ? positive : negative) += q; }
};

// The largest |Σ q·x| of the tile over every input in range.
inline std::int64_t worst_case(const TileSums& s, const IntegerRange& x) {
  return std::max(x.max * s.positive + x.min * s.negative, -(x.min * s.positive + x.max * s.negative));
}

namespace detail {
// floor(a / b) and ceil(a / b) for b > 0.
inline std::int64_t floor_div(std::int64_t a, std::int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }
inline std::int64_t ceil_div(std::int64_t a, std::int64_t b) { return -floor_div(-a, b); }
}  // namespace detail

// The codes [lo, hi] (lo <= 0 <= hi) the tile's next weight may take so that its worst case stays
// within `limit` (accumulator_limit(P)), given the codes so far (whose worst case is within it).
// From the four conditions x_max·S+ + x_min·S- <= limit and x_min·S+ + x_max·S- >= -limit after the
// code is added to S+ (q > 0) or S- (q < 0).
inline std::pair<std::int64_t, std::int64_t> code_limits(const TileSums& s, const IntegerRange& x, std::int64_t limit) {
  if (x.min > 0 || x.max < 0 || x.max - x.min < 1) throw std::invalid_argument("an input range must contain 0 and one other integer");
  const std::int64_t up = limit - (x.max * s.positive + x.min * s.negative);    // headroom above
  const std::int64_t down = limit + (x.min * s.positive + x.max * s.negative);  // headroom below
  if (up < 0 || down < 0) throw std::logic_error("the tile's codes already exceed the accumulator bound");
  // q > 0 raises the maximum by x_max·q and lowers the minimum by |x_min|·q; q < 0 the reverse.
  std::int64_t hi = std::numeric_limits<std::int64_t>::max(), lo = std::numeric_limits<std::int64_t>::min();
  if (x.max > 0) {
    hi = detail::floor_div(up, x.max);
    lo = -detail::floor_div(down, x.max);
  }
  if (x.min < 0) {
    hi = std::min(hi, detail::floor_div(down, -x.min));
    lo = std::max(lo, -detail::floor_div(up, -x.min));
  }
  return {lo, hi};
}

// The signed integer of an integer element code.
inline std::int64_t integer_of_code(const ElementFormat& e, std::uint32_t code) {
  const std::int64_t c = std::int64_t(code & qcast::detail::all_ones(e.integer_bits));
  if (e.is_signed && (c >> (e.integer_bits - 1)) != 0) return c - (std::int64_t{1} << e.integer_bits);
  return c;
}

// The worst tile of an encoded weight matrix [rows, cols] with integer elements.
struct AccumulatorNeed {
  std::int64_t worst = 0;     // the largest |Σ q·x| of any row and tile over inputs in range
  int bits = 2;               // accumulator_bits(worst)
  std::int64_t row = 0, col = 0;  // where: the row and the tile's first column
};

// `tile` columns per tile (0: the whole row); a block format's tile must divide its block (unless
// the row is no wider than one block).
inline AccumulatorNeed accumulator_need(const Encoded& w, const IntegerRange& x, std::int64_t tile) {
  if (w.shape.size() != 2) throw std::invalid_argument("the accumulator need is measured on a weight matrix [rows, cols]");
  const ElementFormat& e = w.format.element;
  if (e.kind != ElementKind::integer) throw std::invalid_argument("the accumulator need is defined for integer elements only");
  const std::int64_t rows = w.shape[0], cols = w.shape[1];
  const std::int64_t t = tile > 0 ? tile : cols;
  // A row no wider than a block is one block: any tile stays inside it.
  if (w.format.granularity == Granularity::block && cols > w.format.block_size && w.format.block_size % t != 0)
    throw std::invalid_argument("a tile of " + std::to_string(t) + " columns crosses the format's blocks of " +
                                std::to_string(w.format.block_size));
  AccumulatorNeed need;
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t c0 = 0; c0 < cols; c0 += t) {
      TileSums s;
      for (std::int64_t c = c0; c < std::min(cols, c0 + t); ++c)
        s.add(integer_of_code(e, unpack_code(w.codes.data(), std::size_t(r * cols + c), e.bits())));
      const std::int64_t m = worst_case(s, x);
      if (m > need.worst) {
        need.worst = m;
        need.row = r;
        need.col = c0;
      }
    }
  need.bits = accumulator_bits(need.worst);
  return need;
}

}  // namespace qcast::ptq
