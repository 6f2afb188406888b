// Work splitting of the compiled kernels' drivers (parallel_cast.cpp, parallel_codec.cpp).
#pragma once
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <exception>
#include <thread>
#include <vector>

namespace qcast::kernels {

constexpr std::int64_t kMinElementsPerThread = 1 << 16;

// Runs body(begin, end) over [0, count) split into `threads` contiguous ranges.
template <class Body>
inline void parallel_ranges(std::int64_t count, int threads, std::int64_t work_per_item, Body&& body) {
  const std::int64_t useful = std::max<std::int64_t>(1, count * work_per_item / kMinElementsPerThread);
  const int t = int(std::min<std::int64_t>({std::int64_t(threads), useful, std::max<std::int64_t>(count, 1)}));
  if (t <= 1) {
    body(std::int64_t{0}, count);
    return;
  }
  std::vector<std::thread> pool;
  std::exception_ptr error;
  std::atomic<bool> failed{false};
  for (int k = 0; k < t; ++k) {
    const std::int64_t b = count * k / t, e = count * (k + 1) / t;
    pool.emplace_back([&, b, e] {
      try {
        body(b, e);
      } catch (...) {
        if (!failed.exchange(true)) error = std::current_exception();
      }
    });
  }
  for (auto& th : pool) th.join();
  if (error) std::rethrow_exception(error);
}

inline int resolve_threads(int threads) {
  if (threads > 0) return threads;
  const unsigned hc = std::thread::hardware_concurrency();
  return hc ? int(hc) : 1;
}

}  // namespace qcast::kernels
