// Lets the CUDA kernels' arithmetic (element_device.cuh, scale_device.cuh) compile as host C++ as
// well. Under nvcc its functions are __device__ functions built on CUDA's intrinsics, exactly as
// before; any other compiler sees ordinary inline functions built on portable equivalents. The host
// build exists for tests/cuda/device_math_test.cpp, which checks that arithmetic against the
// reference in every CI run, GPU or not (docs/design/0004-cuda-kernels.md, "Host build").
#pragma once
#include <cstdint>

#if defined(__CUDACC__)
#define QCAST_DEVICE __device__
#define QCAST_FORCEINLINE __forceinline__
#else
#include <math.h>  // rintf, frexp, isnan, ... in the global namespace, where CUDA declares them

#include <cstring>
#define QCAST_DEVICE
#define QCAST_FORCEINLINE inline
#endif

namespace qcast::cuda_detail {

QCAST_DEVICE QCAST_FORCEINLINE std::uint32_t bits_of(float x) {
#if defined(__CUDACC__)
  return __float_as_uint(x);
#else
  std::uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  return u;
#endif
}

QCAST_DEVICE QCAST_FORCEINLINE float float_of(std::uint32_t u) {
#if defined(__CUDACC__)
  return __uint_as_float(u);
#else
  float x;
  std::memcpy(&x, &u, sizeof x);
  return x;
#endif
}

// The number of leading zero bits of w != 0.
QCAST_DEVICE QCAST_FORCEINLINE int leading_zeros(std::uint32_t w) {
#if defined(__CUDACC__)
  return __clz(int(w));
#else
  return __builtin_clz(w);
#endif
}

// Sets a call's error flag (a group holds a NaN that its scale format cannot encode); threads of
// every block may set it at once.
QCAST_DEVICE QCAST_FORCEINLINE void raise_error(int* flag) {
#if defined(__CUDACC__)
  atomicExch(flag, 1);
#else
  *flag = 1;
#endif
}

}  // namespace qcast::cuda_detail
