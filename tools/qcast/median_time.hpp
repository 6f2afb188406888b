// The timing every qcast benchmark uses: one warm-up run (page faults, caches, thread start), then
// the median of `repeats` timed runs, in seconds.
#pragma once
#include <algorithm>
#include <chrono>
#include <functional>
#include <vector>

namespace qcast_cli {

inline double median_seconds(int repeats, const std::function<void()>& fn) {
  fn();
  std::vector<double> t;
  for (int r = 0; r < repeats; ++r) {
    const auto a = std::chrono::steady_clock::now();
    fn();
    t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - a).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

}  // namespace qcast_cli
