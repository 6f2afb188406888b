// qcast::cuda::encode and decode: packed codes and scales on the GPU, the bytes of qcast::encode.
// One thread owns eight consecutive elements: their codes fill exactly `bits` whole bytes of the
// little-endian bit stream (packing.hpp), so no two threads share a byte. Blocks along the last
// axis that tile each line take a fused pass (k/8 threads per block of k); other layouts compute
// every group's scale first, as cast does.
#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "launch.hpp"
#include "params.hpp"
#include "group_kernels.cuh"
#include "packed_codes_device.cuh"
#include "qcast/cuda.hpp"

namespace qcast::cuda_detail {
namespace {

template <DType T>
using Elem = typename Storage<T>::type;

// Decoded values of every code of a format of at most 8 bits, passed by value into shared memory.
struct CodeTable {
  float value[256];
};

CodeTable code_table(const ElementFormat& f) {
  CodeTable t{};
  if (f.bits() <= 8)
    for (std::uint32_t c = 0; c < (1u << f.bits()); ++c) t.value[c] = decode_element(f, c);
  return t;
}

// Direct formats and groups from a scale array: eight elements per thread.
template <DType T>
__global__ void encode_kernel(const Elem<T>* in, std::uint8_t* codes, ElementParams e, ScaleParams s, LayoutParams l,
                              const DeviceGroupScale* scales, const unsigned* stats,
                              unsigned long long* nan_index, int* element_nan) {
  const std::int64_t stride = std::int64_t(gridDim.x) * blockDim.x;
  const std::int64_t octets = (l.elements + 7) / 8;
  const TensorScale t = tensor_scale(s, stats);
  for (std::int64_t o = std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x; o < octets; o += stride) {
    const int count = l.elements - 8 * o < 8 ? int(l.elements - 8 * o) : 8;
    std::uint32_t c[8] = {};
    for (int k = 0; k < count; ++k) {
      const std::int64_t i = 8 * o + k;
      const float x = Storage<T>::widen(in[i]);
      if (l.granularity == Granularity::element) {
        if (isnan(x) && !e.has_nan) {
          atomicMin(nan_index, (unsigned long long)i);
          continue;
        }
        c[k] = encode(e, x, std::uint64_t(i));
      } else {
        const DeviceGroupScale g = scales[group_of(l, i)];
        c[k] = code_in_group(e, g, ScaledInput(g.value, t.s_t, s.two_level), x, i, element_nan);
      }
    }
    store_codes(codes, o, e.bits, c, count);
  }
}

__global__ void pack_scales_kernel(const DeviceGroupScale* scales, std::int64_t groups, int storage_bytes,
                                   std::uint8_t* out) {
  const std::int64_t stride = std::int64_t(gridDim.x) * blockDim.x;
  for (std::int64_t g = std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x; g < groups; g += stride)
    store_scale(out, g, storage_bytes, scales[g].code);
}

// Blocks of k = 8 * TPG elements tiling each line: the fused pass.
template <DType T, int TPG, bool Lean>
__global__ void __launch_bounds__(kThreads, kBlockKernelMinBlocks<Lean>)
encode_block_kernel(const Elem<T>* in, std::uint8_t* codes, std::uint8_t* scale_codes, ElementParams e,
                    ScaleParams s, int storage_bytes, std::int64_t octets, const unsigned* stats,
                    int* error, int* element_nan) {
  const TensorScale t = tensor_scale(s, stats);
  const auto octet = [&](std::int64_t o, float* v, const DeviceGroupScale& g) {
    if ((threadIdx.x & 31) % TPG == 0) store_scale(scale_codes, o / TPG, storage_bytes, g.code);
    const ScaledInput scaled(g.value, t.s_t, s.two_level);
    std::uint32_t c[8];
    code_octet_in_group<Lean>(e, g, scaled, v, 8 * o, c, element_nan);
    store_codes(codes, o, e.bits, c, 8);
  };
  for_each_block_octet<T, TPG, Lean>(in, octets, s, t, error, after_statistics(s), octet);
}

// error[0]: the scale error flag, error[1]: the element NaN flag (encode_typed's stats[2..3]).
template <DType T, int TPG>
void launch_encode_blocks(const Elem<T>* in, std::uint8_t* codes, std::uint8_t* scale_codes, const ElementParams& e,
                          const ScaleParams& s, int storage_bytes, std::int64_t octets, const unsigned* stats,
                          int* error, cudaStream_t stream) {
  if (e.lean && simple_scale(s))
    encode_block_kernel<T, TPG, true><<<grid_for(octets), kThreads, 0, stream>>>(
        in, codes, scale_codes, e, s, storage_bytes, octets, stats, error, error + 1);
  else
    encode_block_kernel<T, TPG, false><<<grid_for(octets), kThreads, 0, stream>>>(
        in, codes, scale_codes, e, s, storage_bytes, octets, stats, error, error + 1);
}

// Throws the reference's error for a call whose device pass met an element NaN that the element
// format cannot encode (code_in_group): the reference encodes a host copy of the input and throws
// the first error in its order of groups, which may also be a NaN group's.
template <DType T>
[[noreturn]] void throw_reference_error(const Elem<T>* in, const Shape& shape, const Format& f, const CastOptions& o,
                                        std::int64_t n, cudaStream_t stream) {
  std::vector<Elem<T>> host(static_cast<std::size_t>(n));
  check(cudaMemcpyAsync(host.data(), in, host.size() * sizeof(Elem<T>), cudaMemcpyDeviceToHost, stream),
        "cudaMemcpyAsync");
  check(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
  std::vector<float> x(host.size());
  for (std::size_t i = 0; i < host.size(); ++i) {
    if constexpr (T == DType::f32) x[i] = host[i];
    else x[i] = widen(T, host[i]);
  }
  qcast::encode(x.data(), shape, f, o);
  throw std::logic_error("qcast::cuda::encode: the device met a NaN element that the reference encodes");
}

template <DType T>
float encode_typed(const void* in_v, const Shape& shape, const Format& f, std::uint8_t* codes, std::uint8_t* scale_codes,
                   const CastOptions& o, cudaStream_t stream) {
  const auto* in = static_cast<const Elem<T>*>(in_v);
  const LayoutParams l = layout_params(shape, f);
  const std::int64_t n = l.elements;
  if (n == 0) return f.tensor_scale ? tensor_scale_of(f, o.tensor_amax.value_or(0.0f)) : 1.0f;
  const ElementParams e = element_params(f.element, o);
  const ScaleParams s = scale_params(f, o.tensor_amax);
  // stats[0..1] tensor statistics, [2] the scale error flag, [3] the element NaN flag of scaled
  // formats (code_in_group), [4..5] the first NaN index of direct formats (64 bits).
  Scratch scratch(8 * sizeof(unsigned), stream);
  unsigned* stats = scratch.as<unsigned>();
  int* error = reinterpret_cast<int*>(stats + 2);
  auto* nan_index = reinterpret_cast<unsigned long long*>(stats + 4);
  check(cudaMemsetAsync(stats, 0, 4 * sizeof(unsigned), stream), "cudaMemsetAsync");
  check(cudaMemsetAsync(nan_index, 0xFF, sizeof(unsigned long long), stream), "cudaMemsetAsync");
  if (f.is_scaled() && ((s.two_level && !s.amax_t_given) || f.granularity == Granularity::tensor))
    tensor_stats_kernel<T><<<grid_for((n + 3) / 4), kThreads, 0, stream>>>(
        in, n, reinterpret_cast<std::uintptr_t>(in) % (T == DType::f32 ? 16 : 8) == 0, stats);
  const int k = f.block_size;
  const std::size_t vector_bytes = T == DType::f32 ? 16 : 8;
  const bool tiles = f.granularity == Granularity::block && l.inner == 1 && l.len % k == 0 && k % 8 == 0 &&
                     k / 8 <= 32 && ((k / 8) & (k / 8 - 1)) == 0 &&
                     reinterpret_cast<std::uintptr_t>(in) % vector_bytes == 0;
  const int storage_bytes = f.scale_storage_bits() / 8;
  if (tiles) {
    const std::int64_t octets = n / 8;
    switch (k / 8) {
      case 1: launch_encode_blocks<T, 1>(in, codes, scale_codes, e, s, storage_bytes, octets, stats, error, stream); break;
      case 2: launch_encode_blocks<T, 2>(in, codes, scale_codes, e, s, storage_bytes, octets, stats, error, stream); break;
      case 4: launch_encode_blocks<T, 4>(in, codes, scale_codes, e, s, storage_bytes, octets, stats, error, stream); break;
      case 8: launch_encode_blocks<T, 8>(in, codes, scale_codes, e, s, storage_bytes, octets, stats, error, stream); break;
      case 16: launch_encode_blocks<T, 16>(in, codes, scale_codes, e, s, storage_bytes, octets, stats, error, stream); break;
      default: launch_encode_blocks<T, 32>(in, codes, scale_codes, e, s, storage_bytes, octets, stats, error, stream); break;
    }
    check(cudaGetLastError(), "block encode kernel");
  } else {
    Scratch groups(std::size_t(f.is_scaled() ? l.groups : 0) * sizeof(DeviceGroupScale), stream);
    auto* scales = groups.as<DeviceGroupScale>();
    if (f.granularity == Granularity::tensor) {
      tensor_group_scale_kernel<<<1, 1, 0, stream>>>(s, stats, scales, error);
    } else if (f.is_scaled()) {
      group_scales_kernel<T><<<grid_for(l.groups * 32), kThreads, 0, stream>>>(in, s, l, stats, scales, error);
    }
    if (f.is_scaled())
      pack_scales_kernel<<<grid_for(l.groups), kThreads, 0, stream>>>(scales, l.groups, storage_bytes, scale_codes);
    encode_kernel<T><<<grid_for((n + 7) / 8), kThreads, 0, stream>>>(in, codes, e, s, l, scales, stats, nan_index,
                                                                      error + 1);
    check(cudaGetLastError(), "encode kernels");
  }
  unsigned host[8];
  check(cudaMemcpyAsync(host, stats, sizeof host, cudaMemcpyDeviceToHost, stream), "cudaMemcpyAsync");
  check(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
  unsigned long long first_nan;
  std::memcpy(&first_nan, host + 4, sizeof first_nan);
  if (first_nan != ~0ull)
    throw std::domain_error("element " + std::to_string(first_nan) + " is NaN, which " + format_name(f) +
                            " cannot encode");
  if (host[3]) throw_reference_error<T>(in, shape, f, o, n, stream);
  if (host[2])
    throw std::domain_error("a group holds NaN or Inf, which the scale format of " + format_name(f) + " cannot encode");
  if (!f.tensor_scale) return 1.0f;
  float amax_t = s.given_amax_t;
  if (!s.amax_t_given) std::memcpy(&amax_t, host, sizeof amax_t);
  return tensor_scale_of(f, amax_t);
}

// block_shift >= 0: blocks of 2^block_shift tile every line, so element i is in group i >> shift.
template <DType T>
__global__ void decode_kernel(const std::uint8_t* codes, const std::uint8_t* scale_codes, float s_t, ElementParams e,
                              ElementParams scale, std::uint32_t scale_mask, bool two_level, int storage_bytes,
                              LayoutParams l, int block_shift, CodeTable table, CodeTable scale_table, Elem<T>* out) {
  __shared__ float shared_table[256], shared_scales[256];
  const bool use_table = e.bits <= 8, use_scale_table = storage_bytes == 1;
  if (use_table)
    for (int c = threadIdx.x; c < (1 << e.bits); c += blockDim.x) shared_table[c] = table.value[c];
  if (use_scale_table)
    for (int c = threadIdx.x; c < 256; c += blockDim.x) shared_scales[c] = scale_table.value[c];
  __syncthreads();
  const bool vector_out =
      reinterpret_cast<std::uintptr_t>(out) % (T == DType::f32 ? 16 : 8) == 0;
  const std::int64_t stride = std::int64_t(gridDim.x) * blockDim.x;
  const std::int64_t octets = (l.elements + 7) / 8;
  for (std::int64_t o = std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x; o < octets; o += stride) {
    const int count = l.elements - 8 * o < 8 ? int(l.elements - 8 * o) : 8;
    std::uint32_t c[8];
    load_codes(codes, o, e.bits, c, count);
    std::int64_t cached_group = -1;
    float s = 0.0f, y[8];
    for (int k = 0; k < count; ++k) {
      const std::int64_t i = 8 * o + k;
      y[k] = use_table ? shared_table[c[k]] : decode_general(e, c[k]);
      if (l.granularity != Granularity::element) {
        const std::int64_t g = block_shift >= 0 ? i >> block_shift : group_of(l, i);
        if (g != cached_group) {
          const std::uint32_t code = load_scale(scale_codes, g, storage_bytes) & scale_mask;
          s = use_scale_table ? shared_scales[code] : decode_general(scale, code);
          cached_group = g;
        }
        y[k] = decoded_in_group(y[k], s, s_t, two_level);
      }
    }
    if (count == 8 && vector_out) {
      store4<T>(out + 8 * o, y);
      store4<T>(out + 8 * o + 4, y + 4);
    } else {
      for (int k = 0; k < count; ++k) out[8 * o + k] = Storage<T>::narrow(y[k]);
    }
  }
}

template <DType T>
void decode_typed(const std::uint8_t* codes, const std::uint8_t* scale_codes, float s_t, const Shape& shape,
                  const Format& f, void* out, cudaStream_t stream) {
  const LayoutParams l = layout_params(shape, f);
  if (l.elements == 0) return;
  const ElementParams e = element_params(f.element, CastOptions{});
  const ScaleParams s = scale_params(f);
  const std::int64_t k = f.block_size;
  int block_shift = -1;
  if (f.granularity == Granularity::block && l.inner == 1 && l.len % k == 0 && (k & (k - 1)) == 0)
    for (block_shift = 0; (std::int64_t{1} << block_shift) < k;) ++block_shift;
  decode_kernel<T><<<grid_for((l.elements + 7) / 8), kThreads, 0, stream>>>(
      codes, scale_codes, s_t, e, s.scale, detail::all_ones(f.scale.bits()), f.tensor_scale, f.scale_storage_bits() / 8,
      l, block_shift, code_table(f.element), code_table(f.scale), static_cast<Elem<T>*>(out));
  check(cudaGetLastError(), "decode kernel");
}

}  // namespace
}  // namespace qcast::cuda_detail

namespace qcast::cuda {

float encode(const void* in, DType t, const Shape& shape, const Format& format, std::uint8_t* codes,
             std::uint8_t* scales, const CastOptions& options, void* stream) {
  detail::check_format(format, options);
  auto* s = static_cast<cudaStream_t>(stream);
  switch (t) {
    case DType::f32: return cuda_detail::encode_typed<DType::f32>(in, shape, format, codes, scales, options, s);
    case DType::f16: return cuda_detail::encode_typed<DType::f16>(in, shape, format, codes, scales, options, s);
    default: return cuda_detail::encode_typed<DType::bf16>(in, shape, format, codes, scales, options, s);
  }
}

void decode(const std::uint8_t* codes, const std::uint8_t* scales, float tensor_scale, const Shape& shape,
            const Format& format, void* out, DType t, void* stream) {
  detail::check_format(format);
  auto* s = static_cast<cudaStream_t>(stream);
  switch (t) {
    case DType::f32: return cuda_detail::decode_typed<DType::f32>(codes, scales, tensor_scale, shape, format, out, s);
    case DType::f16: return cuda_detail::decode_typed<DType::f16>(codes, scales, tensor_scale, shape, format, out, s);
    default: return cuda_detail::decode_typed<DType::bf16>(codes, scales, tensor_scale, shape, format, out, s);
  }
}

}  // namespace qcast::cuda
