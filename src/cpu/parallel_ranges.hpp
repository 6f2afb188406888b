// Work splitting of the compiled kernels' drivers (parallel_cast.cpp, parallel_codec.cpp).
#pragma once
#include <algorithm>
#include <cstdint>
#include <thread>
#include <type_traits>

#include "worker_pool.hpp"

namespace qcast::kernels {

constexpr std::int64_t kMinElementsPerThread = 1 << 16;

// Runs body(begin, end) over [0, count) split into up to `threads` contiguous ranges (no more than
// one per kMinElementsPerThread of work), on the worker pool (worker_pool.hpp).
template <class Body>
inline void parallel_ranges(std::int64_t count, int threads, std::int64_t work_per_item, Body&& body) {
  const std::int64_t useful = std::max<std::int64_t>(1, count * work_per_item / kMinElementsPerThread);
  const int t = int(std::min<std::int64_t>({std::int64_t(threads), useful, std::max<std::int64_t>(count, 1)}));
  if (t <= 1) {
    body(std::int64_t{0}, count);
    return;
  }
  struct Ranges {
    std::remove_reference_t<Body>* body;
    std::int64_t count;
    int t;
  } ranges{&body, count, t};
  run_tasks(t, t, [](void* context, int k) {
    const Ranges& r = *static_cast<const Ranges*>(context);
    (*r.body)(r.count * k / r.t, r.count * (k + 1) / r.t);
  }, &ranges);
}

inline int resolve_threads(int threads) {
  if (threads > 0) return threads;
  const unsigned hc = std::thread::hardware_concurrency();
  return hc ? int(hc) : 1;
}

}  // namespace qcast::kernels
