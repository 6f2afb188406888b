// qcast::cuda::cast: fake quantization on the GPU. Three shapes of work:
// - direct formats: one thread per four elements;
// - blocks along the last axis that tile each line (MX, NVFP4, int4@g128 on rows of whole blocks):
//   one fused pass, k/8 threads per block of k, the block maximum by warp shuffles;
// - every other layout: the scales of all groups first (one warp per group), then one thread per
//   element reading its group's scale.
// Two-level formats (NVFP4) start with a pass over the tensor for amax_t, unless it is given
// (CastOptions::tensor_amax).
#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>

#include "launch.hpp"
#include "params.hpp"
#include "group_kernels.cuh"
#include "qcast/cuda.hpp"

namespace qcast::cuda_detail {
namespace {

template <DType T>
using Elem = typename Storage<T>::type;

template <DType T, bool Lean>
__global__ void direct_kernel(const Elem<T>* in, Elem<T>* out, ElementParams e, std::int64_t n, bool vectorized) {
  const std::int64_t stride = std::int64_t(gridDim.x) * blockDim.x;
  const std::int64_t quads = vectorized ? n / 4 : 0;
  for (std::int64_t q = std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x; q < quads; q += stride) {
    float v[4];
    load4<T>(in + 4 * q, v);
    for (int k = 0; k < 4; ++k) v[k] = Lean ? quantize_lean(e, v[k]) : quantize(e, v[k], std::uint64_t(4 * q + k));
    store4<T>(out + 4 * q, v);
  }
  for (std::int64_t i = 4 * quads + std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const float x = Storage<T>::widen(in[i]);
    out[i] = Storage<T>::narrow(Lean ? quantize_lean(e, x) : quantize(e, x, std::uint64_t(i)));
  }
}

// Blocks of k = 8 * TPG elements that tile each line: thread q holds elements [8q, 8q + 8) (two
// vector loads in flight), and the TPG threads of a block are neighbouring lanes of one warp.
// Lean: lean element parameters and a simple scale rule (the default MX and NVFP4 casts).
template <DType T, int TPG, bool Lean>
__global__ void __launch_bounds__(kThreads, kBlockKernelMinBlocks<Lean>)
block_kernel(const Elem<T>* in, Elem<T>* out, ElementParams e, ScaleParams s, std::int64_t octets,
             const unsigned* stats, int* error) {
  const TensorScale t = tensor_scale(s, stats);
  const auto octet = [&](std::int64_t o, float* v, const DeviceGroupScale& g) {
    const ScaledInput scaled(g.value, t.s_t, s.two_level);
    cast_octet_in_group<Lean>(e, s, g, scaled, t.s_t, v, 8 * o);
    store4<T>(out + 8 * o, v);
    store4<T>(out + 8 * o + 4, v + 4);
  };
  for_each_block_octet<T, TPG, Lean>(in, octets, s, t, error, after_statistics(s), octet);
}

template <DType T>
__global__ void apply_kernel(const Elem<T>* in, Elem<T>* out, ElementParams e, ScaleParams s, LayoutParams l,
                             const DeviceGroupScale* scales, const unsigned* stats) {
  const std::int64_t stride = std::int64_t(gridDim.x) * blockDim.x;
  const TensorScale t = tensor_scale(s, stats);
  for (std::int64_t i = std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < l.elements; i += stride) {
    const DeviceGroupScale g = scales[group_of(l, i)];
    const ScaledInput scaled(g.value, t.s_t, s.two_level);
    out[i] = Storage<T>::narrow(cast_in_group(e, s, g, scaled, t.s_t, Storage<T>::widen(in[i]), i));
  }
}

bool aligned(const void* p, std::size_t bytes) { return reinterpret_cast<std::uintptr_t>(p) % bytes == 0; }

template <DType T, int TPG>
void launch_blocks(const Elem<T>* in, Elem<T>* out, const ElementParams& e, const ScaleParams& s, std::int64_t octets,
                   const unsigned* stats, int* error, cudaStream_t stream) {
  if (e.lean && simple_scale(s))
    block_kernel<T, TPG, true><<<grid_for(octets), kThreads, 0, stream>>>(in, out, e, s, octets, stats, error);
  else
    block_kernel<T, TPG, false><<<grid_for(octets), kThreads, 0, stream>>>(in, out, e, s, octets, stats, error);
}

template <DType T>
void cast_typed(const void* in_v, void* out_v, const Shape& shape, const Format& f, const CastOptions& o,
                cudaStream_t stream) {
  const auto* in = static_cast<const Elem<T>*>(in_v);
  auto* out = static_cast<Elem<T>*>(out_v);
  const LayoutParams l = layout_params(shape, f);
  const std::int64_t n = l.elements;
  if (n == 0) return;
  const ElementParams e = element_params(f.element, o);
  const std::size_t vector_bytes = T == DType::f32 ? 16 : 8;
  const bool vectorized = aligned(in, vector_bytes) && aligned(out, vector_bytes);
  if (!f.is_scaled()) {
    if (e.lean)
      direct_kernel<T, true><<<grid_for((n + 3) / 4), kThreads, 0, stream>>>(in, out, e, n, vectorized);
    else
      direct_kernel<T, false><<<grid_for((n + 3) / 4), kThreads, 0, stream>>>(in, out, e, n, vectorized);
    check(cudaGetLastError(), "direct cast kernel");
    return;
  }
  const ScaleParams s = scale_params(f, o.tensor_amax);
  // stats[0..1]: tensor statistics; stats[2]: error flag (a NaN group under a scale without NaN).
  // The MX formats, and two-level ones with a given amax_t, need neither: they skip the allocation
  // and the memset, whose host-side cost is a few percent of a 64M-element cast, and the
  // statistics pass, which reads the whole tensor once more.
  const bool needs_stats = (s.two_level && !s.amax_t_given) || f.granularity == Granularity::tensor;
  const bool needs_scratch = needs_stats || !s.scale.has_nan;
  Scratch scratch(needs_scratch ? 4 * sizeof(unsigned) : 0, stream);
  unsigned* stats = scratch.as<unsigned>();
  int* error = needs_scratch ? reinterpret_cast<int*>(stats + 2) : nullptr;
  if (needs_scratch) check(cudaMemsetAsync(stats, 0, 4 * sizeof(unsigned), stream), "cudaMemsetAsync");
  if (needs_stats)
    tensor_stats_kernel<T><<<grid_for((n + 3) / 4), kThreads, 0, stream>>>(in, n, aligned(in, vector_bytes), stats);
  const int k = f.block_size;
  const bool tiles = f.granularity == Granularity::block && l.inner == 1 && l.len % k == 0 && k % 8 == 0 &&
                     k / 8 <= 32 && ((k / 8) & (k / 8 - 1)) == 0;
  if (tiles && vectorized) {
    const std::int64_t octets = n / 8;
    switch (k / 8) {
      case 1: launch_blocks<T, 1>(in, out, e, s, octets, stats, error, stream); break;
      case 2: launch_blocks<T, 2>(in, out, e, s, octets, stats, error, stream); break;
      case 4: launch_blocks<T, 4>(in, out, e, s, octets, stats, error, stream); break;
      case 8: launch_blocks<T, 8>(in, out, e, s, octets, stats, error, stream); break;
      case 16: launch_blocks<T, 16>(in, out, e, s, octets, stats, error, stream); break;
      default: launch_blocks<T, 32>(in, out, e, s, octets, stats, error, stream); break;
    }
    check(cudaGetLastError(), "block cast kernel");
  } else {
    Scratch groups(std::size_t(l.groups) * sizeof(DeviceGroupScale), stream);
    auto* scales = groups.as<DeviceGroupScale>();
    if (f.granularity == Granularity::tensor)
      tensor_group_scale_kernel<<<1, 1, 0, stream>>>(s, stats, scales, error);
    else
      group_scales_kernel<T><<<grid_for(l.groups * 32), kThreads, 0, stream>>>(in, s, l, stats, scales, error);
    apply_kernel<T><<<grid_for(n), kThreads, 0, stream>>>(in, out, e, s, l, scales, stats);
    check(cudaGetLastError(), "group cast kernels");
  }
  if (!s.scale.has_nan) {  // the reference throws where a group's NaN has no scale code: wait and see
    int flag = 0;
    check(cudaMemcpyAsync(&flag, error, sizeof flag, cudaMemcpyDeviceToHost, stream), "cudaMemcpyAsync");
    check(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
    if (flag)
      throw std::domain_error("a group holds NaN or Inf, which the scale format of " + format_name(f) +
                              " cannot encode");
  }
}

}  // namespace
}  // namespace qcast::cuda_detail

namespace qcast::cuda {

void cast(const void* in, void* out, DType t, const Shape& shape, const Format& format, const CastOptions& options,
          void* stream) {
  detail::check_format(format, options);
  auto* s = static_cast<cudaStream_t>(stream);
  switch (t) {
    case DType::f32: return cuda_detail::cast_typed<DType::f32>(in, out, shape, format, options, s);
    case DType::f16: return cuda_detail::cast_typed<DType::f16>(in, out, shape, format, options, s);
    case DType::bf16: return cuda_detail::cast_typed<DType::bf16>(in, out, shape, format, options, s);
  }
}

}  // namespace qcast::cuda
