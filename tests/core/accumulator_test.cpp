// Accumulator bounds (qcast/ptq/accumulator.hpp) against brute force: the worst case of a tile is
// the largest |Σ q·x| over every corner of the input box (enumerated), the limits code_limits()
// gives are exactly the codes that keep a tile within the bound, and WeightGrid's integer codes
// read back what it recorded.
#include "qcast/ptq/accumulator.hpp"

#include <catch2/catch.hpp>

#include <cstdint>
#include <cstdlib>
#include <random>
#include <vector>

#include "qcast/format_names.hpp"
#include "qcast/ptq/weight_grid.hpp"

namespace {

using qcast::ptq::IntegerRange;
using qcast::ptq::TileSums;

// max over x in {min, max}^n of |Σ q_i x_i|, by enumeration (a linear function of x is extreme at a
// corner of the box).
std::int64_t corner_worst(const std::vector<std::int64_t>& q, const IntegerRange& x) {
  std::int64_t worst = 0;
  for (std::uint32_t mask = 0; mask < (1u << q.size()); ++mask) {
    std::int64_t s = 0;
    for (std::size_t i = 0; i < q.size(); ++i) s += q[i] * ((mask >> i) & 1u ? x.max : x.min);
    worst = std::max<std::int64_t>(worst, s < 0 ? -s : s);
  }
  return worst;
}

std::vector<IntegerRange> ranges() {
  return {{-128, 127}, {-127, 127}, {0, 255}, {0, 15}, {-8, 7}, {-1, 1}, {0, 1}, {-3, 5}};
}

}  // namespace

TEST_CASE("accumulator: a tile's worst case is the worst corner of the input box") {
  std::mt19937 rng(7);
  for (const IntegerRange& x : ranges())
    for (int trial = 0; trial < 300; ++trial) {
      const int n = 1 + int(rng() % 10);
      std::vector<std::int64_t> q;
      TileSums s;
      for (int i = 0; i < n; ++i) {
        q.push_back(std::int64_t(rng() % 31) - 15);
        s.add(q.back());
      }
      INFO("range [" << x.min << ", " << x.max << "], trial " << trial);
      CHECK(qcast::ptq::worst_case(s, x) == corner_worst(q, x));
    }
}

TEST_CASE("accumulator: code_limits allows exactly the codes that keep the bound") {
  std::mt19937 rng(11);
  for (const IntegerRange& x : ranges())
    for (const int bits : {4, 6, 9, 12}) {
      const std::int64_t limit = qcast::ptq::accumulator_limit(bits);
      for (int trial = 0; trial < 200; ++trial) {
        // A tile filled greedily with random codes kept within the bound by brute force.
        TileSums s;
        const int n = int(rng() % 8);
        for (int i = 0; i < n; ++i) {
          TileSums t = s;
          t.add(std::int64_t(rng() % 41) - 20);
          if (qcast::ptq::worst_case(t, x) <= limit) s = t;
        }
        const auto [lo, hi] = qcast::ptq::code_limits(s, x, limit);
        INFO("range [" << x.min << ", " << x.max << "], " << bits << " bits, S+ " << s.positive << ", S- " << s.negative);
        CHECK(lo <= 0);
        CHECK(hi >= 0);
        for (std::int64_t q = -600; q <= 600; ++q) {
          TileSums t = s;
          t.add(q);
          const bool fits = qcast::ptq::worst_case(t, x) <= limit;
          if (fits != (q >= lo && q <= hi)) FAIL_CHECK("code " << q << " fits " << fits << " but the limits are [" << lo << ", " << hi << "]");
        }
      }
    }
}

TEST_CASE("accumulator: widths and input ranges") {
  CHECK(qcast::ptq::accumulator_limit(16) == 32767);
  CHECK(qcast::ptq::accumulator_bits(32767) == 16);
  CHECK(qcast::ptq::accumulator_bits(32768) == 17);
  CHECK(qcast::ptq::accumulator_bits(0) == 2);
  CHECK(qcast::ptq::integer_range(8, true).min == -128);
  CHECK(qcast::ptq::integer_range(8, false).max == 255);
  // qcast's own integer formats never write -2^(N-1).
  const IntegerRange int8 = qcast::ptq::integer_range(qcast::parse_format("int8").element);
  CHECK((int8.min == -127 && int8.max == 127));
  const IntegerRange mxint8 = qcast::ptq::integer_range(qcast::parse_format("mxint8").element);
  CHECK((mxint8.min == -127 && mxint8.max == 127));
  CHECK_THROWS(qcast::ptq::integer_range(qcast::parse_format("mxfp4").element));
  CHECK_THROWS(qcast::ptq::accumulator_limit(1));
}

TEST_CASE("accumulator: the need of an encoded matrix, per row and tile, by enumeration") {
  std::mt19937 rng(3);
  for (const std::string name : {"int4@channel", "int4@g8", "int3", "mxint8", "uint4@channel"}) {
    const qcast::Format f = qcast::parse_format(name);
    const std::int64_t rows = 5, cols = 16;
    std::vector<double> w(std::size_t(rows * cols));
    std::normal_distribution<double> normal;
    for (double& v : w) v = normal(rng);
    if (!f.element.is_signed)
      for (double& v : w) v = std::fabs(v);
    qcast::ptq::WeightGrid grid(f, rows, cols, w.data());
    std::vector<std::int64_t> codes(w.size());
    for (std::int64_t r = 0; r < rows; ++r)
      for (std::int64_t c = 0; c < cols; ++c) {
        if (grid.opens_block(c)) grid.fix_block(r, c, w.data() + r * cols + c, std::min<std::int64_t>(grid.block_size(), cols - c));
        const double v = grid.quantize(r, c, w[std::size_t(r * cols + c)]);
        codes[std::size_t(r * cols + c)] = grid.integer_code(r, c);
        // The integer read back, times the element's step, is the value quantize returned.
        CHECK(double(codes[std::size_t(r * cols + c)]) * grid.integer_step(r, c) == Approx(v).margin(1e-12));
      }
    for (const std::int64_t tile : {8, 4, 1}) {
      for (const IntegerRange& x : {IntegerRange{-128, 127}, IntegerRange{0, 255}}) {
        std::int64_t expected = 0;
        for (std::int64_t r = 0; r < rows; ++r)
          for (std::int64_t c0 = 0; c0 < cols; c0 += tile) {
            std::vector<std::int64_t> q(codes.begin() + r * cols + c0, codes.begin() + r * cols + c0 + tile);
            expected = std::max(expected, corner_worst(q, x));
          }
        const qcast::ptq::AccumulatorNeed need = qcast::ptq::accumulator_need(grid.encoded(), x, tile);
        INFO(name << ", tile " << tile << ", inputs [" << x.min << ", " << x.max << "]");
        CHECK(need.worst == expected);
        CHECK(need.bits == qcast::ptq::accumulator_bits(expected));
        CHECK(need.worst > 0);
      }
    }
    if (f.granularity == qcast::Granularity::block && f.block_size < 16)  // a tile across two blocks
      CHECK_THROWS(qcast::ptq::accumulator_need(grid.encoded(), {-1, 1}, 16));
  }
}

TEST_CASE("accumulator: set_integer records a code that decodes to the value it returns") {
  std::vector<double> w = {0.5, -1.25, 2.0, 0.1, -0.7, 1.9, -2.0, 0.0};
  qcast::ptq::WeightGrid grid(qcast::parse_format("int4@g4"), 2, 4, w.data());
  for (std::int64_t r = 0; r < 2; ++r) grid.fix_block(r, 0, w.data() + r * 4, 4);
  for (std::int64_t q = -7; q <= 7; ++q) {
    const double v = grid.set_integer(1, 2, q);
    CHECK(grid.integer_code(1, 2) == q);
    CHECK(v == Approx(double(q) * grid.integer_step(1, 2)).margin(1e-12));
  }
  CHECK_THROWS(grid.set_integer(1, 2, 8));
  CHECK_THROWS(grid.set_integer(1, 2, -8));
}
