// Mixed-precision allocation: one choice per layer (a format, or float) that minimizes the summed
// cost (the layers' measured sensitivities) with the summed size within a budget. This is the
// multiple-choice knapsack problem; allocate() solves it exactly with a dynamic program over the
// Pareto front of partial assignments, pruned by the linear-programming bound of the layers still to
// assign (docs/design/0014-mixed-precision.md has the algorithm and the alternatives rejected).
// No LibTorch: the CLI's `qcast allocate` and the engine share it.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <numeric>
#include <stdexcept>
#include <string>
#include <vector>

namespace qcast::ptq {

// One candidate of a layer: its size as stored (bytes, codes + scales) and its cost (>= 0, finite).
struct AllocationChoice {
  std::int64_t bytes = 0;
  double cost = 0;
};

struct Allocation {
  bool feasible = false;            // false: even the smallest choice of every layer exceeds the capacity
  std::vector<std::size_t> choice;  // per layer, the index into its choices (empty when infeasible)
  double cost = 0;                  // the summed cost of the choices
  std::int64_t bytes = 0;           // the summed size, <= capacity
  std::int64_t least_bytes = 0;     // the smallest assignment's size (every layer at its smallest choice)
  std::size_t states = 0;           // partial assignments the search kept (a measure of its work)
};

namespace detail {

// A layer's choices that no other choice beats on both size and cost (equal ones: the first kept),
// in increasing size and so strictly decreasing cost.
inline std::vector<std::size_t> undominated_choices(const std::vector<AllocationChoice>& choices) {
  std::vector<std::size_t> order(choices.size());
  std::iota(order.begin(), order.end(), std::size_t(0));
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
    return choices[a].bytes != choices[b].bytes ? choices[a].bytes < choices[b].bytes : choices[a].cost < choices[b].cost;
  });
  std::vector<std::size_t> kept;
  for (const std::size_t i : order)
    if (kept.empty() || choices[i].cost < choices[kept.back()].cost) kept.push_back(i);
  return kept;
}

// The lower convex hull of a layer's undominated choices (in size order): the points the linear
// relaxation can mix.
inline std::vector<std::size_t> convex_hull(const std::vector<AllocationChoice>& choices, const std::vector<std::size_t>& kept) {
  std::vector<std::size_t> hull;
  for (const std::size_t i : kept) {
    while (hull.size() >= 2) {
      const AllocationChoice& a = choices[hull[hull.size() - 2]];
      const AllocationChoice& b = choices[hull.back()];
      const AllocationChoice& c = choices[i];
      // b is above (or on) the segment a-c: drop it.
      const double cross = double(b.bytes - a.bytes) * (c.cost - a.cost) - (b.cost - a.cost) * double(c.bytes - a.bytes);
      if (cross <= 0) hull.pop_back();
      else break;
    }
    hull.push_back(i);
  }
  return hull;
}

}  // namespace detail

// Minimizes the summed cost over one choice per layer with the summed bytes <= capacity. Exact: the
// result's cost is the least of every feasible assignment, up to the rounding of summing doubles.
// Among equal costs, the smaller size wins, then the earlier choices. Throws std::invalid_argument on
// a layer without choices, a negative size or a cost that is negative or not finite.
inline Allocation allocate(const std::vector<std::vector<AllocationChoice>>& layers, std::int64_t capacity) {
  const std::size_t n = layers.size();
  for (std::size_t l = 0; l < n; ++l) {
    if (layers[l].empty()) throw std::invalid_argument("allocation: layer " + std::to_string(l) + " has no choices");
    for (const AllocationChoice& c : layers[l])
      if (c.bytes < 0 || !(c.cost >= 0) || !std::isfinite(c.cost))
        throw std::invalid_argument("allocation: layer " + std::to_string(l) + " has a choice with a negative size or a cost "
                                    "that is negative or not finite");
  }
  std::vector<std::vector<std::size_t>> kept(n);
  for (std::size_t l = 0; l < n; ++l) kept[l] = detail::undominated_choices(layers[l]);

  // The bound: for layers l.., the least cost of the linear relaxation with `room` bytes, which starts
  // every layer at its smallest choice and buys the hull's steps in order of cost saved per byte.
  struct Step {
    std::size_t layer;
    std::int64_t bytes;
    double saving;  // > 0
  };
  std::vector<Step> steps;
  std::vector<std::int64_t> min_bytes_from(n + 1, 0);
  std::vector<double> min_cost_from(n + 1, 0);  // the cost of the smallest choices
  for (std::size_t l = n; l-- > 0;) {
    const std::vector<std::size_t> hull = detail::convex_hull(layers[l], kept[l]);
    for (std::size_t h = 1; h < hull.size(); ++h)
      steps.push_back({l, layers[l][hull[h]].bytes - layers[l][hull[h - 1]].bytes,
                       layers[l][hull[h - 1]].cost - layers[l][hull[h]].cost});
    min_bytes_from[l] = min_bytes_from[l + 1] + layers[l][kept[l].front()].bytes;
    min_cost_from[l] = min_cost_from[l + 1] + layers[l][kept[l].front()].cost;
  }
  std::stable_sort(steps.begin(), steps.end(), [](const Step& a, const Step& b) {
    return a.saving * double(b.bytes) > b.saving * double(a.bytes);
  });
  // The relaxation of layers from.. as a function of the room: the steps of those layers in order,
  // as running sums (a convex piecewise-linear function, read by binary search).
  std::vector<std::int64_t> step_bytes;
  std::vector<double> step_saving;
  auto relaxation_of = [&](std::size_t from) {
    step_bytes.assign(1, 0);
    step_saving.assign(1, 0.0);
    for (const Step& s : steps)
      if (s.layer >= from) {
        step_bytes.push_back(step_bytes.back() + s.bytes);
        step_saving.push_back(step_saving.back() + s.saving);
      }
  };
  auto bound = [&](std::size_t from, std::int64_t room) {
    room -= min_bytes_from[from];
    const std::size_t k = std::size_t(std::upper_bound(step_bytes.begin(), step_bytes.end(), room) - step_bytes.begin());
    double saving = step_saving[k - 1];
    if (k < step_bytes.size())
      saving += (step_saving[k] - step_saving[k - 1]) * double(room - step_bytes[k - 1]) / double(step_bytes[k] - step_bytes[k - 1]);
    return std::max(min_cost_from[from] - saving, 0.0);
  };

  Allocation result;
  result.least_bytes = min_bytes_from[0];
  if (min_bytes_from[0] > capacity) return result;

  // An incumbent to prune against: the relaxation's integral part, then any step that still fits.
  double best = 0;
  {
    std::vector<std::size_t> at(n, 0);  // position on each layer's hull
    std::vector<std::vector<std::size_t>> hulls(n);
    for (std::size_t l = 0; l < n; ++l) hulls[l] = detail::convex_hull(layers[l], kept[l]);
    std::int64_t room = capacity - min_bytes_from[0];
    for (const Step& s : steps) {
      const std::size_t l = s.layer;
      if (at[l] + 1 < hulls[l].size() && layers[l][hulls[l][at[l] + 1]].bytes - layers[l][hulls[l][at[l]]].bytes == s.bytes &&
          s.bytes <= room) {
        room -= s.bytes;
        ++at[l];
      }
    }
    for (std::size_t l = 0; l < n; ++l) best += layers[l][hulls[l][at[l]]].cost;
  }
  const double slack = 1e-12;  // relative: a bound within this of the incumbent cannot beat it by more

  // The Pareto front of partial assignments of layers 0..l-1: states with distinct sizes in
  // increasing order and strictly decreasing cost. Each remembers its parent in the previous front.
  struct State {
    std::int64_t bytes;
    double cost;
    std::uint32_t parent;
    std::uint32_t choice;
  };
  std::vector<std::vector<State>> fronts(n + 1);
  fronts[0].push_back({0, 0.0, 0, 0});
  std::vector<State> merged;
  for (std::size_t l = 0; l < n; ++l) {
    merged.clear();
    relaxation_of(l + 1);
    const std::vector<State>& front = fronts[l];
    for (std::size_t s = 0; s < front.size(); ++s)
      for (const std::size_t c : kept[l]) {
        const std::int64_t bytes = front[s].bytes + layers[l][c].bytes;
        if (bytes + min_bytes_from[l + 1] > capacity) continue;
        const double cost = front[s].cost + layers[l][c].cost;
        if (cost + bound(l + 1, capacity - bytes) > best * (1 + slack) + slack) continue;
        merged.push_back({bytes, cost, std::uint32_t(s), std::uint32_t(c)});
      }
    std::stable_sort(merged.begin(), merged.end(), [](const State& a, const State& b) {
      return a.bytes != b.bytes ? a.bytes < b.bytes : a.cost < b.cost;
    });
    std::vector<State>& next = fronts[l + 1];
    for (const State& s : merged)
      if (next.empty() || s.cost < next.back().cost) next.push_back(s);
    result.states += next.size();
    if (next.empty()) throw std::logic_error("allocation: the search lost every assignment (bound above the incumbent)");
    // A complete-enough state improves the incumbent: its cost plus the smallest choices after it.
    for (const State& s : next)
      if (s.bytes + min_bytes_from[l + 1] <= capacity) best = std::min(best, s.cost + min_cost_from[l + 1]);
  }
  // The last front's least cost is its last state (costs fall as sizes grow); the smaller of equal ones.
  std::size_t at = fronts[n].size() - 1;
  result.feasible = true;
  result.cost = fronts[n][at].cost;
  result.bytes = fronts[n][at].bytes;
  result.choice.assign(n, 0);
  for (std::size_t l = n; l-- > 0;) {
    result.choice[l] = fronts[l + 1][at].choice;
    at = fronts[l + 1][at].parent;
  }
  return result;
}

}  // namespace qcast::ptq
