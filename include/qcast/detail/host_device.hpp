// QCAST_HOST_DEVICE marks the few core functions that CUDA device code calls as well (pure integer
// arithmetic); it is empty for every other compiler.
#pragma once

#if defined(__CUDACC__)
#define QCAST_HOST_DEVICE __host__ __device__
#else
#define QCAST_HOST_DEVICE
#endif
