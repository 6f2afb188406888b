// Throughput of the block Walsh-Hadamard transform that `--rotate hadamard` inserts on each layer
// input: the SIMD kernel (qcast::kernels::hadamard, in place) on one thread and on all, against the
// limit (memcpy of the same bytes) and the baselines a PyTorch user has, measured in the same run:
// the product with the explicit matrix (x.view(-1, B) @ H / sqrt(B), ATen's sgemm) and the same
// butterflies composed from ATen ops (what qcast's operator ran before this kernel), plus the
// scalar reference. GB/s count 4 bytes read + 4 written per element.
// --device cuda (builds with CUDA) measures the CUDA kernel (qcast::cuda::hadamard, in place) against
// a device-to-device copy of the same bytes and the same two ATen baselines on the GPU.
//   qcast_hadamard_bench [--device cpu|cuda] [--elements N] [--blocks 16,32,128] [--repeats R]
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#ifdef QCAST_HADAMARD_BENCH_CUDA
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAStream.h>

#include "qcast/cuda.hpp"
#endif

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "qcast/hadamard.hpp"
#include "qcast/kernels.hpp"
#include "tools/qcast/median_time.hpp"

namespace {

using qcast_cli::median_seconds;

at::Tensor sylvester(std::int64_t b) {
  at::Tensor h = at::ones({1, 1});
  while (h.size(0) < b) h = at::cat({at::cat({h, h}, 1), at::cat({h, -h}, 1)}, 0);
  return h / std::sqrt(double(b));
}

at::Tensor butterflies(const at::Tensor& x, std::int64_t b) {
  const std::int64_t n = x.size(-1);
  at::Tensor y = x.reshape({-1, n / b, b});
  for (std::int64_t h = 1; h < b; h *= 2) {
    const at::Tensor v = y.reshape({y.size(0), n / b, b / (2 * h), 2, h});
    y = at::stack({v.select(3, 0) + v.select(3, 1), v.select(3, 0) - v.select(3, 1)}, 3).reshape({-1, n / b, b});
  }
  return (y * (1.0 / std::sqrt(double(b)))).reshape(x.sizes());
}

#ifdef QCAST_HADAMARD_BENCH_CUDA
// The GPU rows: each timed call is followed by a device synchronization.
int cuda_rows(std::int64_t n, const std::vector<std::int64_t>& blocks, int repeats) {
  if (!qcast::cuda::device_available()) {
    fmt::print(stderr, "no usable CUDA device: {}\n", qcast::cuda::device_description());
    return 1;
  }
  fmt::print("device: {}\n", qcast::cuda::device_description());
  const auto on_gpu = [](const std::function<void()>& f) {
    return [f] {
      f();
      c10::cuda::device_synchronize();
    };
  };
  const at::Tensor x = at::randn({n / 4096, 4096}, at::TensorOptions().device(at::kCUDA));
  at::Tensor work = x.clone(), out = at::empty_like(x);
  const double bytes = double(n) * 8;
  auto gbs = [&](double s) { return bytes / s / 1e9; };
  void* stream = c10::cuda::getCurrentCUDAStream().stream();
  const double copy = median_seconds(repeats, on_gpu([&] { out.copy_(x); }));
  fmt::print("{} elements on the GPU; device-to-device copy {:.1f} GB/s\n", n, gbs(copy));
  fmt::print("{:>6} {:>12} {:>12} {:>12} {:>10} {:>10}\n", "block", "kernel", "matmul", "aten bfly", "vs matmul",
             "vs copy");
  for (const std::int64_t b : blocks) {
    const double k = median_seconds(repeats, on_gpu([&] { qcast::cuda::hadamard(work.data_ptr<float>(), n, b, stream); }));
    const at::Tensor h = sylvester(b).to(at::kCUDA);
    at::Tensor out_rows = out.view({-1, b});
    const double mm = median_seconds(repeats, on_gpu([&] { at::mm_out(out_rows, x.view({-1, b}), h); }));
    const double bf = median_seconds(repeats, on_gpu([&] { out = butterflies(x, b); }));
    fmt::print("{:>6} {:>7.1f} GB/s {:>7.1f} GB/s {:>7.1f} GB/s {:>9.1f}x {:>9.2f}x\n", b, gbs(k), gbs(mm), gbs(bf),
               mm / k, gbs(k) / gbs(copy));
  }
  return 0;
}
#endif

}  // namespace

int main(int argc, char** argv) {
  std::int64_t n = 1 << 24;
  std::vector<std::int64_t> blocks = {16, 32, 128};
  int repeats = 5;
  std::string device = "cpu";
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i], v = argv[i + 1];
    if (a == "--elements") n = std::stoll(v);
    else if (a == "--device") device = v;
    else if (a == "--repeats") repeats = std::stoi(v);
    else if (a == "--blocks") {
      blocks.clear();
      std::size_t from = 0;
      while (from < v.size()) {
        const std::size_t c = std::min(v.find(',', from), v.size());
        blocks.push_back(std::stoll(v.substr(from, c - from)));
        from = c + 1;
      }
    } else {
      fmt::print(stderr, "usage: qcast_hadamard_bench [--device cpu|cuda] [--elements N] [--blocks 16,32,128] [--repeats R]\n");
      return 2;
    }
  }
  if (n <= 0 || n % 4096 != 0) {
    fmt::print(stderr, "--elements must be a positive multiple of 4096, got {}\n", n);
    return 2;
  }
  if (device == "cuda") {
#ifdef QCAST_HADAMARD_BENCH_CUDA
    return cuda_rows(n, blocks, repeats);
#else
    fmt::print(stderr, "this build has no CUDA (or its Torch has none): --device cuda is not available\n");
    return 2;
#endif
  }
  if (device != "cpu") {
    fmt::print(stderr, "--device must be cpu or cuda, got {}\n", device);
    return 2;
  }
  const int threads = int(std::max(1u, std::thread::hardware_concurrency()));
  at::set_num_threads(threads);
  const at::Tensor x = at::randn({n / 4096, 4096});
  at::Tensor work = x.clone(), out = at::empty_like(x);
  const double bytes = double(n) * 8;
  auto gbs = [&](double s) { return bytes / s / 1e9; };
  const double copy = median_seconds(repeats, [&] { std::memcpy(out.data_ptr<float>(), x.data_ptr<float>(), std::size_t(n) * 4); });
  fmt::print("{} elements, {} threads; memcpy {:.2f} GB/s (1 thread)\n", n, threads, gbs(copy));
  fmt::print("{:>6} {:>12} {:>12} {:>12} {:>12} {:>12} {:>10} {:>10}\n", "block", "kernel 1t", "kernel all", "matmul",
             "aten bfly", "scalar", "vs matmul", "vs memcpy");
  for (const std::int64_t b : blocks) {
    const double k1 = median_seconds(repeats, [&] { qcast::kernels::hadamard(work.data_ptr<float>(), n, b, 1); });
    const double kt = median_seconds(repeats, [&] { qcast::kernels::hadamard(work.data_ptr<float>(), n, b, threads); });
    const at::Tensor h = sylvester(b);
    at::Tensor out_rows = out.view({-1, b});
    const double mm = median_seconds(repeats, [&] { at::mm_out(out_rows, x.view({-1, b}), h); });
    const double bf = median_seconds(repeats, [&] { out = butterflies(x, b); });
    const std::int64_t ns = std::min<std::int64_t>(n, 1 << 22);  // the reference on at most 4M elements
    const double sc = median_seconds(std::min(repeats, 3), [&] { qcast::hadamard(work.data_ptr<float>(), ns, b); }) *
                      double(n) / double(ns);
    fmt::print("{:>6} {:>9.2f} GB/s {:>7.2f} GB/s {:>7.2f} GB/s {:>7.2f} GB/s {:>7.2f} GB/s {:>9.1f}x {:>9.2f}x\n", b,
               gbs(k1), gbs(kt), gbs(mm), gbs(bf), gbs(sc), mm / kt, gbs(kt) / gbs(copy));
  }
  return 0;
}
