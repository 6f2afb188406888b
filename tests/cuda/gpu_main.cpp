// Entry point of the GPU test programs: without a usable CUDA device (any CUDA error at start-up)
// they print why and exit with 77, which ctest reports as skipped (SKIP_RETURN_CODE).
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <cstdio>

#include "qcast/cuda.hpp"

int main(int argc, char** argv) {
  if (!qcast::cuda::device_available()) {
    std::printf("skipped: no usable CUDA device (%s)\n", qcast::cuda::device_description().c_str());
    return 77;
  }
  std::printf("device: %s\n", qcast::cuda::device_description().c_str());
  return Catch::Session().run(argc, argv);
}
