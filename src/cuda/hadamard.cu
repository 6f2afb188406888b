// The block Walsh-Hadamard transform on the GPU (qcast::cuda::hadamard): the same bits as the
// scalar reference (qcast/hadamard.hpp) and the SIMD kernel, because every output is the same
// sequence of binary32 operations. The reference runs the butterfly stages h = 1, 2, 4, ... in
// that order, each pair (i, i + h) within a run of 2h becoming (a + b, a - b), then multiplies by
// float(1 / sqrt(block)); floating-point addition is commutative, so only the order of the stages
// and the operand order of the subtraction matter, and both are kept. The library is compiled with
// -fmad=false, and __fadd_rn / __fsub_rn / __fmul_rn say the rounding explicitly besides.
//
// Two kernels, in stage order:
// - Stages with h < kTile run in shared memory: a CUDA block loads a tile of kTile values (whole
//   Hadamard blocks when block <= kTile, a tile-aligned slice of one when it is larger; a stage
//   with h < kTile pairs values within one tile-aligned run of 2h <= kTile either way), runs those
//   stages with a barrier between them, and writes the tile back, multiplied by the scale when
//   those were all the stages.
// - Stages with h >= kTile (blocks over kTile values) run one launch each over global memory, the
//   last one multiplying by the scale.
// So a transform of blocks up to kTile reads and writes each value once.
#include <cuda_runtime.h>

#include <cstdint>

#include "launch.hpp"
#include "qcast/cuda.hpp"
#include "qcast/hadamard.hpp"

namespace qcast::cuda_detail {
namespace {

constexpr int kTile = 4096;  // values a CUDA block holds in shared memory (16 KiB)

// Stages h = 1 .. min(block, kTile) / 2 of every tile; `scale_after` multiplies by the scale.
__global__ void __launch_bounds__(kThreads) hadamard_tile_stages(float* x, std::int64_t n, std::int64_t block,
                                                                  float scale, bool scale_after) {
  __shared__ float v[kTile];
  const std::int64_t tiles = (n + kTile - 1) / kTile;
  const int last_h = int(block < kTile ? block : kTile) / 2;
  for (std::int64_t tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
    const std::int64_t base = tile * kTile;
    // A partial last tile holds whole Hadamard blocks: n is a multiple of block, and a tile is a
    // multiple of a block that is smaller than it.
    const int count = int(n - base < kTile ? n - base : kTile);
    __syncthreads();  // the previous tile's stores from v are done
    for (int i = threadIdx.x; i < count; i += blockDim.x) v[i] = x[base + i];
    __syncthreads();
    for (int h = 1; h <= last_h; h *= 2) {
      for (int p = threadIdx.x; p < count / 2; p += blockDim.x) {
        const int i = (p / h) * 2 * h + p % h;  // the p-th pair's first value: runs of 2h, h pairs each
        const float a = v[i], c = v[i + h];
        v[i] = __fadd_rn(a, c);
        v[i + h] = __fsub_rn(a, c);
      }
      __syncthreads();
    }
    for (int i = threadIdx.x; i < count; i += blockDim.x) x[base + i] = scale_after ? __fmul_rn(v[i], scale) : v[i];
  }
}

// One stage h >= kTile over all n values: pairs (i, i + h) within runs of 2h.
__global__ void __launch_bounds__(kThreads) hadamard_global_stage(float* x, std::int64_t n, std::int64_t h,
                                                                   float scale, bool scale_after) {
  const std::int64_t pairs = n / 2;
  for (std::int64_t p = std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x; p < pairs;
       p += std::int64_t(gridDim.x) * blockDim.x) {
    const std::int64_t i = (p / h) * 2 * h + p % h;
    const float a = x[i], c = x[i + h];
    const float s = __fadd_rn(a, c), d = __fsub_rn(a, c);
    x[i] = scale_after ? __fmul_rn(s, scale) : s;
    x[i + h] = scale_after ? __fmul_rn(d, scale) : d;
  }
}

}  // namespace
}  // namespace qcast::cuda_detail

namespace qcast::cuda {

void hadamard(float* x, std::int64_t n, std::int64_t block, void* stream) {
  using namespace cuda_detail;
  check_hadamard(n, block);
  if (n == 0 || block == 1) return;  // H_1 = [1] and its scale is 1: nothing to do
  const auto s = static_cast<cudaStream_t>(stream);
  const float scale = hadamard_scale(block);
  const std::int64_t tiles = (n + kTile - 1) / kTile;
  // One CUDA block a tile, capped at what keeps every SM busy (grid_for counts threads).
  const int tile_blocks = grid_for(tiles * kThreads);
  hadamard_tile_stages<<<tile_blocks, kThreads, 0, s>>>(x, n, block, scale, block <= kTile);
  check(cudaGetLastError(), "hadamard (shared-memory stages)");
  for (std::int64_t h = kTile; h < block; h *= 2) {
    hadamard_global_stage<<<grid_for(n / 2), kThreads, 0, s>>>(x, n, h, scale, 2 * h == block);
    check(cudaGetLastError(), "hadamard (global stage)");
  }
}

}  // namespace qcast::cuda
