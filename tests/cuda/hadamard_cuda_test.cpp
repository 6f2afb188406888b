// qcast::cuda::hadamard gives the scalar reference's bits (qcast/hadamard.hpp) for every block size:
// those its shared-memory stages finish (up to 4096), those that need global stages after them,
// partial last tiles, and tensors large enough that the kernels loop over their grids. NaN outputs
// must be NaN on both sides; their payloads may differ (the GPU's arithmetic returns its canonical
// NaN, x86 propagates an operand's).
#include <catch2/catch.hpp>

#include <cstdint>
#include <vector>

#include "common/differing.hpp"
#include "common/tensor_values.hpp"
#include "device_buffer.hpp"
#include "qcast/cuda.hpp"
#include "qcast/hadamard.hpp"

using qcast_test::DeviceBuffer;
using qcast_test::differing_but_nan_payloads;
using qcast_test::hadamard_values;

TEST_CASE("cuda::hadamard equals the reference for every block size, tile edge and grid loop") {
  for (std::int64_t block = 1; block <= (1 << 15); block *= 2) {
    // Whole tiles, a partial last tile, and (for small blocks) more tiles than one grid holds.
    for (const std::int64_t n : {block * 3, block * ((4096 * 5) / block + 7), std::int64_t(1) << 23}) {
      INFO("block " << block << ", n " << n);
      const auto x = hadamard_values(n, unsigned(block + n));
      std::vector<float> want = x;
      qcast::hadamard(want.data(), n, block);
      DeviceBuffer<float> d(x);
      qcast::cuda::hadamard(d.get(), n, block);
      CHECK(differing_but_nan_payloads(d.to_host(), want) == 0);
    }
  }
}

TEST_CASE("cuda::hadamard on a stream, and its errors") {
  const std::int64_t n = 4096 * 3, block = 64;
  const auto x = hadamard_values(n, 5);
  std::vector<float> want = x;
  qcast::hadamard(want.data(), n, block);
  cudaStream_t s = nullptr;
  qcast_test::cuda_check(cudaStreamCreate(&s), "cudaStreamCreate");
  DeviceBuffer<float> d(x);
  qcast::cuda::hadamard(d.get(), n, block, s);
  qcast_test::cuda_check(cudaStreamSynchronize(s), "cudaStreamSynchronize");
  cudaStreamDestroy(s);
  CHECK(differing_but_nan_payloads(d.to_host(), want) == 0);
  CHECK_THROWS_WITH(qcast::cuda::hadamard(d.get(), n, 48), Catch::Matchers::Contains("power of two"));
  CHECK_THROWS_WITH(qcast::cuda::hadamard(d.get(), 100, 64), Catch::Matchers::Contains("does not divide"));
}
