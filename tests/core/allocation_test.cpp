// The mixed-precision allocation (qcast/ptq/allocation.hpp) against brute force: every assignment
// of small instances enumerated, including ties, identical layers, dominated and zero-size choices.
#include "qcast/ptq/allocation.hpp"

#include <catch2/catch.hpp>
#include <cmath>

#include <cstdint>
#include <random>
#include <vector>

namespace {

using qcast::ptq::AllocationChoice;
using Layers = std::vector<std::vector<AllocationChoice>>;

struct Exhaustive {
  bool feasible = false;
  double cost = 0;
};

Exhaustive brute_force(const Layers& layers, std::int64_t capacity) {
  Exhaustive best;
  std::vector<std::size_t> at(layers.size(), 0);
  for (;;) {
    std::int64_t bytes = 0;
    double cost = 0;
    for (std::size_t l = 0; l < layers.size(); ++l) {
      bytes += layers[l][at[l]].bytes;
      cost += layers[l][at[l]].cost;
    }
    if (bytes <= capacity && (!best.feasible || cost < best.cost)) best = {true, cost};
    std::size_t l = 0;
    while (l < layers.size() && ++at[l] == layers[l].size()) at[l++] = 0;
    if (l == layers.size()) return best;
  }
}

void check(const Layers& layers, std::int64_t capacity) {
  const Exhaustive want = brute_force(layers, capacity);
  const qcast::ptq::Allocation got = qcast::ptq::allocate(layers, capacity);
  std::int64_t least = 0;
  for (const auto& l : layers) {
    std::int64_t lo = l.front().bytes;
    for (const auto& c : l) lo = std::min(lo, c.bytes);
    least += lo;
  }
  CHECK(got.least_bytes == least);
  REQUIRE(got.feasible == want.feasible);
  if (!want.feasible) return;
  REQUIRE(got.choice.size() == layers.size());
  std::int64_t bytes = 0;
  double cost = 0;
  for (std::size_t l = 0; l < layers.size(); ++l) {
    REQUIRE(got.choice[l] < layers[l].size());
    bytes += layers[l][got.choice[l]].bytes;
    cost += layers[l][got.choice[l]].cost;
  }
  CHECK(bytes == got.bytes);
  CHECK(bytes <= capacity);
  CHECK_THAT(got.cost, Catch::Matchers::WithinRel(cost, 1e-12) || Catch::Matchers::WithinAbs(cost, 1e-15));
  CHECK_THAT(got.cost, Catch::Matchers::WithinRel(want.cost, 1e-9) || Catch::Matchers::WithinAbs(want.cost, 1e-15));
}

}  // namespace

TEST_CASE("allocation equals brute force on random instances", "[allocation]") {
  std::mt19937_64 rng(20261204);
  for (int trial = 0; trial < 400; ++trial) {
    const std::size_t n = 1 + rng() % 7, m = 1 + rng() % 4;
    const bool coarse = trial % 3 == 0;  // few distinct sizes and costs: many ties
    Layers layers(n);
    std::int64_t low = 0, high = 0;
    for (auto& l : layers) {
      std::int64_t lo = INT64_MAX, hi = 0;
      for (std::size_t c = 0; c < m; ++c) {
        AllocationChoice ch;
        ch.bytes = coarse ? std::int64_t(rng() % 4) * 8 : std::int64_t(rng() % 1000);
        ch.cost = coarse ? double(rng() % 3) : std::uniform_real_distribution<double>(0, 1)(rng);
        lo = std::min(lo, ch.bytes);
        hi = std::max(hi, ch.bytes);
        l.push_back(ch);
      }
      low += lo;
      high += hi;
    }
    // Capacities below the least size, at it, between, and above the largest.
    for (const std::int64_t cap : {low - 1, low, (low + high) / 2, low + (high - low) / 5, high})
      check(layers, cap);
  }
}

TEST_CASE("allocation of identical layers (symmetric fronts) and realistic format ladders", "[allocation]") {
  // 10 identical layers of 4 formats whose sizes follow bits per weight: the front collapses the
  // symmetric assignments, so the search stays small.
  std::vector<AllocationChoice> ladder = {{4125, 0.30}, {4250, 0.22}, {4500, 0.12}, {6250, 0.02}, {32000, 0.0}};
  Layers layers(10, ladder);
  for (const std::int64_t cap : {41250, 42000, 45000, 45001, 50000, 62500, 100000, 320000}) check(layers, cap);
  const qcast::ptq::Allocation a = qcast::ptq::allocate(layers, 45000);
  CHECK(a.states < 200);
}

TEST_CASE("allocation errors and edge cases", "[allocation]") {
  CHECK_THROWS_AS(qcast::ptq::allocate({{}}, 10), std::invalid_argument);
  CHECK_THROWS_AS(qcast::ptq::allocate({{{-1, 0.0}}}, 10), std::invalid_argument);
  CHECK_THROWS_AS(qcast::ptq::allocate({{{1, -0.5}}}, 10), std::invalid_argument);
  CHECK_THROWS_AS(qcast::ptq::allocate({{{1, std::nan("")}}}, 10), std::invalid_argument);
  const qcast::ptq::Allocation none = qcast::ptq::allocate({}, 0);
  CHECK(none.feasible);
  CHECK(none.choice.empty());
  const qcast::ptq::Allocation tight = qcast::ptq::allocate({{{5, 1.0}, {3, 2.0}}}, 2);
  CHECK_FALSE(tight.feasible);
  // Equal costs: the smaller size.
  const qcast::ptq::Allocation tie = qcast::ptq::allocate({{{5, 1.0}, {3, 1.0}}}, 10);
  CHECK(tie.choice == std::vector<std::size_t>{1});
}
