// Kernels shared by cast and encode: tensor statistics, and the scale of every group for layouts
// that the fused block kernels do not cover (channels, blocks along another axis, partial blocks).
#pragma once
#include <cstdint>

#include "grid_stride_device.cuh"
#include "scale_device.cuh"
#include "storage_device.cuh"

namespace qcast::cuda_detail {

// stats[0]: the largest finite |x| as bits (finite_amax), stats[1]: the largest |x| of all as bits
// (>= 0x7F800000: some element is NaN or Inf). Non-negative floats order as their bits do.
// vectorized: in is aligned for load4 (four elements a thread and step).
template <DType T>
__global__ void tensor_stats_kernel(const typename Storage<T>::type* in, std::int64_t n, bool vectorized,
                                    unsigned* stats) {
  unsigned finite = 0, all = 0;
  const std::int64_t stride = std::int64_t(gridDim.x) * blockDim.x;
  const std::int64_t first = std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const std::int64_t quads = vectorized ? n / 4 : 0;
  for (std::int64_t q = first; q < quads; q += stride) {
    float v[4];
    load4<T>(in + 4 * q, v);
    for (int k = 0; k < 4; ++k) {
      const unsigned b = bits_of(v[k]) & 0x7FFFFFFFu;
      all = b > all ? b : all;
      if (b < 0x7F800000u && b > finite) finite = b;
    }
  }
  for (std::int64_t i = 4 * quads + first; i < n; i += stride) {
    const unsigned b = bits_of(Storage<T>::widen(in[i])) & 0x7FFFFFFFu;
    all = b > all ? b : all;
    if (b < 0x7F800000u && b > finite) finite = b;
  }
  for (int off = 16; off > 0; off >>= 1) {
    finite = max(finite, __shfl_xor_sync(0xFFFFFFFFu, finite, off));
    all = max(all, __shfl_xor_sync(0xFFFFFFFFu, all, off));
  }
  if ((threadIdx.x & 31) == 0) {
    atomicMax(stats, finite);
    atomicMax(stats + 1, all);
  }
}

// The one group of a per-tensor format.
static __global__ void tensor_group_scale_kernel(ScaleParams s, const unsigned* stats, DeviceGroupScale* scales,
                                                  int* error) {
  const bool nonfinite = stats[1] >= 0x7F800000u;
  scales[0] = group_scale(s, float_of(stats[0]), nonfinite, 1.0f, 1.0f, error);
}

// One warp per group: its statistics over any strided layout, then its scale.
template <DType T>
__global__ void group_scales_kernel(const typename Storage<T>::type* in, ScaleParams s, LayoutParams l,
                                    const unsigned* stats, DeviceGroupScale* scales, int* error) {
  const int lane = threadIdx.x & 31;
  const std::int64_t warps = std::int64_t(gridDim.x) * (blockDim.x / 32);
  const TensorScale t = tensor_scale(s, stats);
  for (std::int64_t g = (std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / 32; g < l.groups; g += warps) {
    const DeviceGroup m = group_members(l, g);
    unsigned finite = 0, all = 0;
    const std::int64_t total = m.runs * m.count;
    for (std::int64_t k = lane; k < total; k += 32) {
      const std::int64_t r = k / m.count, j = k - r * m.count;
      const unsigned b = bits_of(Storage<T>::widen(in[m.base + r * m.run_stride + j * m.stride])) & 0x7FFFFFFFu;
      all = b > all ? b : all;
      if (b < 0x7F800000u && b > finite) finite = b;
    }
    for (int off = 16; off > 0; off >>= 1) {
      finite = max(finite, __shfl_xor_sync(0xFFFFFFFFu, finite, off));
      all = max(all, __shfl_xor_sync(0xFFFFFFFFu, all, off));
    }
    if (lane == 0) scales[g] = group_scale(s, float_of(finite), all >= 0x7F800000u, t.amax_t, t.s_t, error);
  }
}

// The head of the fused block kernels: thread o loads elements [8o, 8o + 8) into v, the TPG lanes
// of its block (neighbours in one warp) take their largest |x| by shuffles, and each computes the
// block's scale g. Every lane of the warp must call it; false for a lane past the end.
template <DType T, int TPG, bool Simple>
__device__ __forceinline__ bool block_octet(const typename Storage<T>::type* in, std::int64_t o, std::int64_t octets,
                                            const ScaleParams& s, const TensorScale& t, int* error, float v[8],
                                            DeviceGroupScale& g) {
  const bool active = o < octets;
  for (int k = 0; k < 8; ++k) v[k] = 0.0f;
  if (active) {
    load4<T>(in + 8 * o, v);
    load4<T>(in + 8 * o + 4, v + 4);
  }
  unsigned m = 0;
  for (int k = 0; k < 8; ++k) m = max(m, bits_of(v[k]) & 0x7FFFFFFFu);
  for (int off = TPG / 2; off > 0; off >>= 1) m = max(m, __shfl_xor_sync(0xFFFFFFFFu, m, off));
  if (!active) return false;
  const bool nonfinite = m >= 0x7F800000u;
  g = group_scale<Simple>(s, nonfinite ? 0.0f : float_of(m), nonfinite, t.amax_t, t.s_t, error);
  return true;
}

// Whether a fused block pass follows the tensor statistics pass (a two-level format whose tensor
// amax is measured): it then runs its waves reversed (GridStride).
QCAST_DEVICE QCAST_FORCEINLINE bool after_statistics(const ScaleParams& s) { return s.two_level && !s.amax_t_given; }

// The loop of the fused block kernels: every octet of the grid-stride range through block_octet,
// then body(o, v, g) for the lanes inside the tensor. The loop bound is the same for the whole
// warp, so that every lane joins the shuffles. reversed: the waves run from the end of the tensor
// (GridStride), for a pass that follows the tensor statistics.
template <DType T, int TPG, bool Simple, class Body>
__device__ __forceinline__ void for_each_block_octet(const typename Storage<T>::type* in, std::int64_t octets,
                                                     const ScaleParams& s, const TensorScale& t, int* error,
                                                     bool reversed, Body&& body) {
  const GridStride order{std::int64_t(blockIdx.x) * blockDim.x + (threadIdx.x & ~31),
                         std::int64_t(gridDim.x) * blockDim.x, octets, reversed};
  const std::int64_t step = order.step();
  for (std::int64_t o0 = order.begin(); order.inside(o0); o0 += step) {
    const std::int64_t o = o0 + (threadIdx.x & 31);
    float v[8];
    DeviceGroupScale g;
    if (block_octet<T, TPG, Simple>(in, o, octets, s, t, error, v, g)) body(o, v, g);
  }
}

}  // namespace qcast::cuda_detail
