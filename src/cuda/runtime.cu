// Device discovery and launch sizes of the CUDA kernels.
#include <cuda_runtime.h>

#include <string>

#include "launch.hpp"
#include "qcast/cuda.hpp"

namespace qcast::cuda_detail {

int grid_for(std::int64_t work) {
  static const int cap = [] {
    int device = 0, sms = 0;
    if (cudaGetDevice(&device) != cudaSuccess ||
        cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess || sms <= 0)
      sms = 132;
    return sms * 8;  // 8 blocks of 256 threads fill an SM's 2048 thread slots
  }();
  const std::int64_t blocks = (work + kThreads - 1) / kThreads;
  return int(blocks < 1 ? 1 : blocks < cap ? blocks : cap);
}

}  // namespace qcast::cuda_detail

namespace qcast::cuda {

bool device_available() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
    cudaGetLastError();  // clear the sticky error of a failed probe
    return false;
  }
  return cudaFree(nullptr) == cudaSuccess;  // creates the context: fails on a driver too old
}

std::string device_description() {
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) return std::string("no CUDA device: ") + cudaGetErrorString(e);
  if (count == 0) return "no CUDA device";
  int device = 0;
  cudaDeviceProp p{};
  if (cudaGetDevice(&device) != cudaSuccess || cudaGetDeviceProperties(&p, device) != cudaSuccess)
    return "no CUDA device: cannot read its properties";
  return std::string(p.name) + " (sm_" + std::to_string(p.major) + std::to_string(p.minor) + ", " +
         std::to_string(p.multiProcessorCount) + " SMs)";
}

}  // namespace qcast::cuda
