// qcast bench --device cuda: throughput of the CUDA kernels against a device-to-device copy of the
// same bytes and against the same math composed from ATen ops on the GPU, in one run on the same
// device buffers. Each figure is the median of timed runs (CUDA events on the default stream)
// after one warm-up run.
#include "bench_cuda.hpp"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdio>
#include <functional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#ifdef QCAST_CLI_TORCH
#include "aten_reference.hpp"
#endif
#include "bench_row.hpp"
#include "qcast/cast.hpp"
#include "qcast/cuda.hpp"
#include "qcast/packing.hpp"

namespace qcast_cli {
namespace {

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string("bench --device cuda: ") + what + ": " + cudaGetErrorString(e));
}

struct DeviceMemory {
  void* p = nullptr;
  explicit DeviceMemory(std::size_t bytes) { check(cudaMalloc(&p, bytes ? bytes : 1), "cudaMalloc"); }
  ~DeviceMemory() { cudaFree(p); }
  DeviceMemory(const DeviceMemory&) = delete;
  DeviceMemory& operator=(const DeviceMemory&) = delete;
  template <class T>
  T* as() const {
    return static_cast<T*>(p);
  }
};

// Median seconds of `repeats` runs of fn, each timed by events around it on the default stream.
double median_gpu_seconds(int repeats, const std::function<void()>& fn) {
  cudaEvent_t start, stop;
  check(cudaEventCreate(&start), "cudaEventCreate");
  check(cudaEventCreate(&stop), "cudaEventCreate");
  fn();
  check(cudaDeviceSynchronize(), "warm-up run");
  std::vector<double> t;
  for (int r = 0; r < repeats; ++r) {
    check(cudaEventRecord(start, nullptr), "cudaEventRecord");
    fn();
    check(cudaEventRecord(stop, nullptr), "cudaEventRecord");
    check(cudaEventSynchronize(stop), "timed run");
    float ms = 0;
    check(cudaEventElapsedTime(&ms, start, stop), "cudaEventElapsedTime");
    t.push_back(double(ms) / 1e3);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}


}  // namespace

int bench_cuda(const std::vector<std::string>& names, const std::vector<qcast::Format>& formats, std::int64_t elements,
               int repeats, const std::string& op, bool json, bool static_tensor_amax) {
  if (!qcast::cuda::device_available())
    throw std::runtime_error("bench --device cuda: no usable CUDA device (" + qcast::cuda::device_description() + ")");
  const std::string gpu = qcast::cuda::device_description();
  const std::int64_t cols = 4096;
  const std::int64_t rows = std::max<std::int64_t>(1, elements / cols);
  elements = rows * cols;
  const qcast::Shape shape{rows, cols};
  const std::size_t n = std::size_t(elements);
  std::vector<float> host(n);
  fill_normal(host.data(), elements, int(std::max(1u, std::thread::hardware_concurrency())));
  DeviceMemory x(n * 4), y(n * 4), codes(n * 4), scales(n * 4);  // codes and scales: room for any format
  check(cudaMemcpy(x.p, host.data(), n * 4, cudaMemcpyHostToDevice), "cudaMemcpy");
  const float input_amax = qcast::detail::finite_amax(host.data(), elements);
  const float* in = x.as<float>();
  float* out = y.as<float>();
  const double cast_bytes = 2.0 * 4.0 * double(elements);
  const double copy_s =
      median_gpu_seconds(repeats, [&] { check(cudaMemcpyAsync(out, in, n * 4, cudaMemcpyDeviceToDevice, nullptr), "copy"); });
  const double copy_gbps = cast_bytes / copy_s / 1e9;
  const std::function<double(const std::function<void()>&)> timed = [&](const std::function<void()>& fn) {
    return median_gpu_seconds(repeats, fn);
  };
  if (!json) {
    fmt::print("{} on {}: {} elements (float32, rows of {}), median of {} runs\n", op, gpu, elements, cols, repeats);
    fmt::print("device-to-device copy: {:.1f} GB/s\n", copy_gbps);
#ifndef QCAST_CLI_TORCH
    fmt::print("ATen baselines: not measured (this qcast was built without LibTorch)\n");
#endif
    fmt::print("\n{:<14} {:>9} {:>9} {:>9} {:>10} {:>10}\n", "format", "qcast", "ATen ops", "fq_p.c.", "vs copy", "vs ATen");
  }
  for (std::size_t k = 0; k < formats.size(); ++k) {
    const qcast::Format& f = formats[k];
    qcast::CastOptions o;
    if (static_tensor_amax && f.tensor_scale) o.tensor_amax = input_amax;
    double q_s = 0, aten_s = 0, fq_s = 0, op_bytes = cast_bytes;
    if (op == "cast") {
      q_s = median_gpu_seconds(repeats, [&] { qcast::cuda::cast(in, out, qcast::DType::f32, shape, f, o); });
#ifdef QCAST_CLI_TORCH
      if (!o.tensor_amax) aten_s = aten_fake_quantize_seconds(in, out, rows, cols, f, timed, true);
      if (names[k] == "int8@channel") fq_s = aten_fake_quantize_per_channel_seconds(in, out, rows, cols, timed, true);
#endif
    } else {
      const std::size_t code_bytes = qcast::packed_size(n, f.element.bits());
      const std::size_t scale_bytes =
          f.is_scaled() ? qcast::packed_size(std::size_t(qcast::detail::GroupLayout(shape, f).groups()), f.scale_storage_bits()) : 0;
      op_bytes = 4.0 * double(elements) + double(code_bytes + scale_bytes);
      auto* c = codes.as<std::uint8_t>();
      auto* s = scales.as<std::uint8_t>();
      const float s_t = qcast::cuda::encode(in, qcast::DType::f32, shape, f, c, s, o);
      if (op == "encode")
        q_s = median_gpu_seconds(repeats, [&] { (void)qcast::cuda::encode(in, qcast::DType::f32, shape, f, c, s, o); });
      else
        q_s = median_gpu_seconds(repeats, [&] { qcast::cuda::decode(c, s, s_t, shape, f, out, qcast::DType::f32); });
    }
    const double gbps = op_bytes / q_s / 1e9;
    const double aten_gbps = aten_s > 0 ? cast_bytes / aten_s / 1e9 : 0;
    const double fq_gbps = fq_s > 0 ? cast_bytes / fq_s / 1e9 : 0;
    if (json) {
      nlohmann::ordered_json j;
      j["format"] = names[k];
      j["op"] = op;
      j["device"] = "cuda";
      j["gpu"] = gpu;
      j["elements"] = elements;
      j["threads"] = nullptr;
      add_figures(j, {gbps, copy_gbps, aten_gbps, 0, fq_gbps}, f.tensor_scale, o.tensor_amax.has_value());
      fmt::print("{}\n", j.dump());
    } else {
      fmt::print("{:<14} {:>9.1f} {:>9} {:>9} {:>10.2f} {:>10}\n", names[k], gbps, cell(aten_gbps, "{:.1f}"),
                 cell(fq_gbps, "{:.1f}"), gbps / copy_gbps, cell(aten_gbps > 0 ? gbps / aten_gbps : 0, "{:.1f}x"));
    }
    std::fflush(stdout);
  }
  if (!json)
    fmt::print("\nGB/s count bytes read + written (encode/decode: float32 on one side, packed codes + scales on "
               "the other); memcpy_gbps is the device-to-device copy.\n");
  return 0;
}

}  // namespace qcast_cli
