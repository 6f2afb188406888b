// Host helpers of the CUDA entry points: error checks, launch sizes, stream-ordered scratch memory.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>

namespace qcast::cuda_detail {

inline void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string("qcast::cuda: ") + what + ": " + cudaGetErrorString(e));
}

constexpr int kThreads = 256;

// Blocks of kThreads per SM that the fused block kernels are compiled for (__launch_bounds__), so
// at most 65536 / (256 * 6) = 42 (in practice 40) registers a thread. Lean kernels: 6, the
// occupancy they had at 38 registers, which eight quotients held at once would otherwise lower to
// 5; 8 (32 registers) spills. The others: 4 (64 registers), the cap that applies without a bound.
template <bool Lean>
constexpr int kBlockKernelMinBlocks = Lean ? 6 : 4;

// Enough blocks of kThreads to cover `work` threads, capped at what keeps every SM busy; the
// kernels loop over the rest (grid-stride).
int grid_for(std::int64_t work);

// Device memory for the duration of one call, allocated and freed in stream order.
class Scratch {
 public:
  Scratch(std::size_t bytes, cudaStream_t s) : stream_(s) {
    if (bytes) check(cudaMallocAsync(&p_, bytes, s), "cudaMallocAsync");
  }
  ~Scratch() {
    if (p_) cudaFreeAsync(p_, stream_);
  }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  template <class T>
  T* as() const {
    return static_cast<T*>(p_);
  }

 private:
  void* p_ = nullptr;
  cudaStream_t stream_;
};

}  // namespace qcast::cuda_detail
