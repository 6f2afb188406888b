// float32 / float16 / bfloat16 storage on the device: exact widening, and narrowing as
// qcast::narrow does (ties to even, overflow to Inf, NaN to the format's canonical quiet NaN).
#pragma once
#include <cuda_fp16.h>

#include <cstdint>

#include "qcast/cast.hpp"

namespace qcast::cuda_detail {

template <DType T>
struct Storage;

template <>
struct Storage<DType::f32> {
  using type = float;
  __device__ static float widen(float x) { return x; }
  __device__ static float narrow(float x) { return x; }
};

template <>
struct Storage<DType::f16> {
  using type = std::uint16_t;
  __device__ static float widen(std::uint16_t h) { return __half2float(__ushort_as_half(h)); }
  __device__ static std::uint16_t narrow(float x) {
    if (isnan(x)) return 0x7E00u;  // encode_element(fp16, NaN): quiet NaN, positive
    return __half_as_ushort(__float2half_rn(x));
  }
};

template <>
struct Storage<DType::bf16> {
  using type = std::uint16_t;
  __device__ static float widen(std::uint16_t h) { return __uint_as_float(std::uint32_t(h) << 16); }
  __device__ static std::uint16_t narrow(float x) {
    if (isnan(x)) return 0x7FC0u;
    const std::uint32_t u = __float_as_uint(x);
    return std::uint16_t((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);  // ties to even; Inf stays Inf
  }
};

// Four consecutive values, loaded and stored as one 16-byte (float32) or 8-byte (16-bit) access;
// the caller guarantees the alignment.
template <DType T>
__device__ __forceinline__ void load4(const typename Storage<T>::type* p, float v[4]) {
  if constexpr (T == DType::f32) {
    const float4 q = *reinterpret_cast<const float4*>(p);
    v[0] = q.x, v[1] = q.y, v[2] = q.z, v[3] = q.w;
  } else {
    const uint2 q = *reinterpret_cast<const uint2*>(p);
    v[0] = Storage<T>::widen(std::uint16_t(q.x)), v[1] = Storage<T>::widen(std::uint16_t(q.x >> 16));
    v[2] = Storage<T>::widen(std::uint16_t(q.y)), v[3] = Storage<T>::widen(std::uint16_t(q.y >> 16));
  }
}

template <DType T>
__device__ __forceinline__ void store4(typename Storage<T>::type* p, const float v[4]) {
  if constexpr (T == DType::f32) {
    *reinterpret_cast<float4*>(p) = make_float4(v[0], v[1], v[2], v[3]);
  } else {
    uint2 q;
    q.x = std::uint32_t(Storage<T>::narrow(v[0])) | (std::uint32_t(Storage<T>::narrow(v[1])) << 16);
    q.y = std::uint32_t(Storage<T>::narrow(v[2])) | (std::uint32_t(Storage<T>::narrow(v[3])) << 16);
    *reinterpret_cast<uint2*>(p) = q;
  }
}

}  // namespace qcast::cuda_detail
