// qcast bench: throughput of the kernels against the limit (memcpy) and the baselines (the same
// math composed from ATen ops, the scalar reference, at::fake_quantize_per_channel_affine),
// measured in one run on the same buffers. Built with or without LibTorch: without it the ATen
// baselines are reported as absent (null in JSON), and everything else is measured the same way.
#include <cstdio>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <functional>
#include <memory>
#include <new>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#ifdef QCAST_CLI_TORCH
#include "aten_reference.hpp"
#endif
#ifdef QCAST_CLI_CUDA
#include "bench_cuda.hpp"
#endif
#include "bench_row.hpp"
#include "command_line.hpp"
#include "median_time.hpp"
#include "qcast/cast.hpp"
#include "qcast/format_names.hpp"
#include "qcast/kernels.hpp"
#include "qcast/sizes.hpp"

namespace qcast_cli {
namespace {

constexpr int kMaxThreads = 1024;

const char* kHelp =
    "usage: qcast bench [--formats a,b,...] [--elements N | --shape D0,D1,...] [--threads T] [--repeats R]\n"
    "                   [--device cpu|cuda] [--op cast|encode|decode] [--dtype f32|bf16|f16] [--static-tensor-amax]\n"
    "                   [--json]\n"
    "\n"
    "Measures fake quantization of an N-element float32 tensor (rows of 4096, or --shape) for each format and\n"
    "prints GB/s (bytes read + written) of: the qcast kernels; memcpy over the same bytes (the limit:\n"
    "on one thread or split over T, whichever is faster, timed in alternation with each format); the\n"
    "same math composed from ATen ops (as the Python peers compute it); the scalar reference (on at\n"
    "most 4M elements, one thread); and, for int8@channel, at::fake_quantize_per_channel_affine.\n"
    "Each figure is the median of R timed runs after one warm-up run. A qcast built without LibTorch\n"
    "measures all but the two ATen baselines.\n"
    "\n"
    "  --formats LIST  comma-separated format names (default: the MX, NVFP4, FP8/6/4 and INT formats)\n"
    "  --elements N    tensor size (default 67108864 = 64M)\n"
    "  --shape LIST    the tensor's shape instead (CPU), e.g. 64,256,4096 for per-channel formats along a\n"
    "                  middle axis (int8@channel:axis=1); ATen baselines only for 2-D shapes, the scalar\n"
    "                  reference on the leading slices up to 4M elements\n"
    "  --threads T     threads for qcast and ATen (default: all cores; at most 1024)\n"
    "  --repeats R     timed runs per figure (default 5)\n"
    "  --device D      cpu (default) or cuda (the current GPU: GB/s against a device-to-device copy of\n"
    "                  the same bytes and the ATen ops on the GPU; no scalar figure)\n"
    "  --op OP         cast (fake quantization, default); encode (float32 -> packed codes + scales,\n"
    "                  timed as kernels::encode_into a reused result) or decode (packed -> float32),\n"
    "                  whose GB/s count the packed bytes; no ATen baseline\n"
    "  --dtype T       element type of the tensor (default f32): bf16 or f16\n"
    "                  cast (decode to) a 16-bit tensor (cast: the same samples rounded to it); GB/s and\n"
    "                  memcpy count its 2-byte elements; no ATen or scalar figure\n"
    "  --static-tensor-amax\n"
    "                  two-level formats (nvfp4, ...@gK+tensor) take the tensor's amax as given\n"
    "                  (CastOptions::tensor_amax, measured once before timing), as a calibrated static\n"
    "                  tensor scale would: no statistics pass; no ATen figure for those formats\n"
    "  --json          one JSON object per format instead of the table\n";

// Medians of fn and of its baseline, timed in alternation (baseline, fn, baseline, fn, ...) after
// one warm-up of each: a shared VM's bandwidth drifts over seconds, and the ratio of two figures
// taken side by side drifts less than that of figures taken a minute apart.
std::pair<double, double> paired_median_seconds(int repeats, const std::function<void()>& fn,
                                                const std::function<void()>& baseline) {
  baseline();
  fn();
  std::vector<double> t, tb;
  for (int r = 0; r < repeats; ++r) {
    auto a = std::chrono::steady_clock::now();
    baseline();
    auto b = std::chrono::steady_clock::now();
    tb.push_back(std::chrono::duration<double>(b - a).count());
    fn();
    t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - b).count());
  }
  std::sort(t.begin(), t.end());
  std::sort(tb.begin(), tb.end());
  return {t[t.size() / 2], tb[tb.size() / 2]};
}

// memcpy of n floats split over `threads` threads in contiguous ranges (one: std::memcpy itself).
void split_memcpy(float* out, const float* in, std::int64_t n, int threads) {
  if (threads <= 1) {
    std::memcpy(out, in, std::size_t(n) * 4);
    return;
  }
  std::vector<std::thread> pool;
  for (int t = 1; t < threads; ++t) {
    const std::int64_t b = n * t / threads, e = n * (t + 1) / threads;
    pool.emplace_back([=] { std::memcpy(out + b, in + b, std::size_t(e - b) * 4); });
  }
  std::memcpy(out, in, std::size_t(n / threads) * 4);
  for (auto& th : pool) th.join();
}

// A 64-byte aligned float buffer (the alignment ATen's allocator gives, so both sides see the same).
struct FloatBuffer {
  struct Free {
    void operator()(float* p) const { ::operator delete[](p, std::align_val_t{64}); }
  };
  std::unique_ptr<float[], Free> data;
  explicit FloatBuffer(std::size_t n)
      : data(static_cast<float*>(::operator new[](n * sizeof(float), std::align_val_t{64}))) {}
};

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream in(s);
  std::string item;
  while (std::getline(in, item, ','))
    if (!item.empty()) out.push_back(item);
  return out;
}

}  // namespace

// Standard normal samples, the input every format is measured on; filled by all threads.
void fill_normal(float* x, std::int64_t n, int threads) {
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t)
    pool.emplace_back([=] {
      std::mt19937 rng(1234u + unsigned(t));
      std::normal_distribution<float> normal;
      for (std::int64_t i = n * t / threads; i < n * (t + 1) / threads; ++i) x[i] = normal(rng);
    });
  for (auto& th : pool) th.join();
}

int bench_command(const std::vector<std::string>& args) {
  std::vector<std::string> names = {"mxfp8_e4m3", "mxfp8_e5m2", "mxfp6_e2m3", "mxfp6_e3m2", "mxfp4",   "mxint8",
                                    "nvfp4",      "fp8_e4m3",   "fp8_e5m2",   "fp6_e2m3",   "fp4_e2m1", "int8",
                                    "int4@g128",  "int8@channel"};
  std::int64_t elements = std::int64_t{1} << 26;
  qcast::Shape shape;  // --shape; empty: rows of 4096
  int threads = 0, repeats = 5;
  bool json = false, cuda = false;
  std::string op = "cast";
  qcast::DType dtype = qcast::DType::f32;
  bool static_tensor_amax = false;
  std::string formats_text, elements_text, shape_text_arg, threads_text, repeats_text, dtype_text, device_text = "cpu";
  CLI::App app{"", "qcast bench"};
  prepare_command_app(app);
  app.add_option("--formats", formats_text);
  app.add_option("--elements", elements_text);
  app.add_option("--shape", shape_text_arg);
  app.add_option("--threads", threads_text);
  app.add_option("--repeats", repeats_text);
  app.add_option("--device", device_text);
  app.add_option("--op", op);
  app.add_option("--dtype", dtype_text);
  app.add_flag("--static-tensor-amax", static_tensor_amax);
  app.add_flag("--json", json);
  if (!parse_command_line(app, args, kHelp)) return exit_ok;
  // Bounds: --threads at most kMaxThreads (a bench thread each), sizes at most 2^40 elements.
  if (!formats_text.empty()) names = split(formats_text);
  if (!elements_text.empty()) elements = parse_integer("--elements", elements_text, 1, std::int64_t(1) << 40);
  if (app.count("--shape")) {
    for (const auto& d : split(shape_text_arg)) shape.push_back(parse_integer("--shape", d, 1, std::int64_t(1) << 40));
    if (shape.empty()) throw UsageError{"--shape needs at least one dimension, e.g. 64,256,4096"};
  }
  if (!threads_text.empty()) threads = int(parse_integer("--threads", threads_text, 1, kMaxThreads));
  if (!repeats_text.empty()) repeats = int(parse_integer("--repeats", repeats_text, 1, 1000));
  if (dtype_text == "bf16") dtype = qcast::DType::bf16;
  else if (dtype_text == "f16") dtype = qcast::DType::f16;
  else if (!dtype_text.empty() && dtype_text != "f32")
    throw UsageError{"--dtype must be f32, bf16 or f16, got " + shown(dtype_text)};
  if (op != "cast" && op != "encode" && op != "decode")
    throw UsageError{"--op must be cast, encode or decode, got " + shown(op)};
  if (device_text != "cpu" && device_text != "cuda")
    throw UsageError{"--device must be cpu or cuda, got " + shown(device_text)};
#ifndef QCAST_CLI_CUDA
  if (device_text == "cuda")
    throw UsageError{"--device cuda: this qcast was built without the CUDA kernels (valid: cpu)"};
#endif
  cuda = device_text == "cuda";
  if (dtype != qcast::DType::f32 && cuda) throw UsageError{"--dtype bf16 and f16 are measured on the CPU only"};
  if (!shape.empty() && cuda) throw UsageError{"--shape is measured on the CPU only (--device cuda takes --elements)"};
  std::vector<qcast::Format> formats;
  for (const auto& n : names) formats.push_back(format_option(n));
#ifdef QCAST_CLI_CUDA
  if (cuda) return bench_cuda(names, formats, elements, repeats, op, json, static_tensor_amax);
#endif
  if (threads <= 0) threads = int(std::max(1u, std::thread::hardware_concurrency()));
#ifdef QCAST_CLI_TORCH
  aten_set_threads(threads);
#endif
  const std::function<double(const std::function<void()>&)> timed = [&](const std::function<void()>& fn) {
    return median_seconds(repeats, fn);
  };

  if (shape.empty()) shape = {std::max<std::int64_t>(1, elements / 4096), 4096};
  try {
    elements = qcast::checked_elements(shape, "--shape");
  } catch (const qcast::SizeError& e) {
    throw UsageError{e.what()};
  }
  if (elements > (std::int64_t(1) << 40)) throw UsageError{"--shape: at most 2^40 elements"};
  const std::int64_t cols = shape.back(), rows = elements / cols;
  // The ATen compositions see the tensor as rows x cols, as the format's axis does only in 2-D.
  [[maybe_unused]] const bool aten_shape = shape.size() == 2;
  FloatBuffer x{std::size_t(elements)}, y{std::size_t(elements)};
  fill_normal(x.data.get(), elements, threads);
  const float* in = x.data.get();
  float* out = y.data.get();
  // --static-tensor-amax: the options of a two-level format carry the input's amax (taken before a
  // 16-bit copy overwrites the samples).
  const float input_amax = qcast::detail::finite_amax(in, elements);
  const bool wide = dtype == qcast::DType::f32;
  const double element_bytes = wide ? 4.0 : 2.0;
  const double bytes = 2.0 * element_bytes * double(elements);
  // A 16-bit tensor: the samples rounded to it, in the first half of each float buffer.
  auto* in16 = reinterpret_cast<std::uint16_t*>(x.data.get());
  auto* out16 = reinterpret_cast<std::uint16_t*>(y.data.get());
  if (!wide) {
    std::vector<std::uint16_t> narrow(static_cast<std::size_t>(elements));
    for (std::int64_t i = 0; i < elements; ++i) narrow[std::size_t(i)] = qcast::narrow(dtype, in[i]);
    std::memcpy(in16, narrow.data(), narrow.size() * 2);
  }
  auto options_for = [&](const qcast::Format& f) {
    qcast::CastOptions o;
    if (static_tensor_amax && f.tensor_scale) o.tensor_amax = input_amax;
    return o;
  };
  auto copy_bytes = [&](int t) {
    if (wide) split_memcpy(out, in, elements, t);
    else split_memcpy(out, in, elements / 2, t);  // the same bytes as the 16-bit tensor
  };

  // The limit: memcpy on one thread or split over the kernel's threads, whichever is faster here
  // (one thread often saturates a small VM; a server needs many).
  const double memcpy_1_s = median_seconds(repeats, [&] { copy_bytes(1); });
  const double memcpy_t_s = threads > 1 ? median_seconds(repeats, [&] { copy_bytes(threads); }) : memcpy_1_s;
  const int memcpy_threads = memcpy_t_s < memcpy_1_s ? threads : 1;
  const std::function<void()> limit = [&] { copy_bytes(memcpy_threads); };
  // The scalar reference on the leading slices of the first axis, up to 4M elements.
  qcast::Shape scalar_shape = shape;
  const std::int64_t slice = elements / shape[0];
  scalar_shape[0] = std::min<std::int64_t>(shape[0], std::max<std::int64_t>(1, (std::int64_t{1} << 22) / slice));
  std::int64_t scalar_elements = 1;
  for (auto d : scalar_shape) scalar_elements *= d;
  std::string shape_text;
  for (auto d : shape) shape_text += (shape_text.empty() ? "" : "x") + std::to_string(d);

  if (!json) {
    fmt::print("{}: {} elements ({}, shape {}), {} threads, ISA {}, median of {} runs\n", op, elements,
               qcast::dtype_name(dtype), shape_text, threads, qcast::kernels::current_target(), repeats);
    fmt::print("memcpy: {:.2f} GB/s on 1 thread, {:.2f} GB/s on {}; the faster is the limit, timed again beside each "
               "format\n",
               bytes / memcpy_1_s / 1e9, bytes / memcpy_t_s / 1e9, threads);
#ifndef QCAST_CLI_TORCH
    fmt::print("ATen baselines: not measured (this qcast was built without LibTorch)\n");
#endif
    if (static_tensor_amax)
      fmt::print("two-level formats take the tensor's amax as given (--static-tensor-amax): no statistics pass\n");
    fmt::print("\n{:<14} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10} {:>10}\n", "format", "qcast", "memcpy", "ATen ops",
               "scalar", "fq_p.c.", "vs memcpy", "vs ATen");
  }
  for (std::size_t k = 0; k < formats.size(); ++k) {
    const qcast::Format& f = formats[k];
    const qcast::CastOptions o = options_for(f);
    double q_s = 0, aten_s = 0, scalar_s = 0, fq_s = 0, memcpy_s = 0;
    double op_bytes = bytes, scalar_bytes = 2.0 * 4.0 * double(scalar_elements);
    if (op == "cast" && !wide) {
      std::tie(q_s, memcpy_s) = paired_median_seconds(
          repeats, [&] { qcast::kernels::cast(in16, out16, dtype, shape, f, o, threads); }, limit);
    } else if (op == "cast") {
      std::tie(q_s, memcpy_s) =
          paired_median_seconds(repeats, [&] { qcast::kernels::cast(in, out, shape, f, o, threads); }, limit);
#ifdef QCAST_CLI_TORCH
      if (aten_shape && !o.tensor_amax) aten_s = aten_fake_quantize_seconds(in, out, rows, cols, f, timed);
      if (aten_shape && names[k] == "int8@channel")
        fq_s = aten_fake_quantize_per_channel_seconds(in, out, rows, cols, timed);
#endif
      scalar_s = median_seconds(std::min(repeats, 3), [&] { qcast::cast(in, out, scalar_shape, f, o); });
    } else {  // bytes: the tensor on one side, packed codes + scales on the other
      const qcast::Encoded enc = wide ? qcast::kernels::encode(in, shape, f, o, threads)
                                      : qcast::kernels::encode(in16, dtype, shape, f, o, threads);
      op_bytes = element_bytes * double(elements) + double(enc.codes.size() + enc.scales.size());
      qcast::Encoded small;  // the scalar reference's share (float32 only)
      if (wide) {
        small = qcast::encode(in, scalar_shape, f, o);
        scalar_bytes = 4.0 * double(scalar_elements) + double(small.codes.size() + small.scales.size());
      }
      qcast::Encoded reused;  // encode: the steady state of a loop over tensors of one size
      if (op == "encode" && !wide) {
        std::tie(q_s, memcpy_s) = paired_median_seconds(
            repeats, [&] { qcast::kernels::encode_into(reused, in16, dtype, shape, f, o, threads); }, limit);
      } else if (op == "encode") {
        std::tie(q_s, memcpy_s) = paired_median_seconds(
            repeats, [&] { qcast::kernels::encode_into(reused, in, shape, f, o, threads); }, limit);
        scalar_s = median_seconds(std::min(repeats, 3), [&] { (void)qcast::encode(in, scalar_shape, f, o); });
      } else if (!wide) {
        std::tie(q_s, memcpy_s) =
            paired_median_seconds(repeats, [&] { qcast::kernels::decode(enc, out16, dtype, threads); }, limit);
      } else {
        std::tie(q_s, memcpy_s) =
            paired_median_seconds(repeats, [&] { qcast::kernels::decode(enc, out, threads); }, limit);
        scalar_s = median_seconds(std::min(repeats, 3), [&] { qcast::decode(small, out); });
      }
    }
    const double gbps = op_bytes / q_s / 1e9;
    const double memcpy_gbps = bytes / memcpy_s / 1e9;
    const double aten_gbps = aten_s > 0 ? bytes / aten_s / 1e9 : 0;
    const double scalar_gbps = scalar_s > 0 ? scalar_bytes / scalar_s / 1e9 : 0;
    const double fq_gbps = fq_s > 0 ? bytes / fq_s / 1e9 : 0;
    if (json) {
      nlohmann::ordered_json j;
      j["format"] = names[k];
      j["op"] = op;
      j["dtype"] = qcast::dtype_name(dtype);
      j["device"] = "cpu";
      j["isa"] = qcast::kernels::current_target();
      j["elements"] = elements;
      j["shape"] = shape;
      j["threads"] = threads;
      add_figures(j, {gbps, memcpy_gbps, aten_gbps, scalar_gbps, fq_gbps}, f.tensor_scale, o.tensor_amax.has_value());
      fmt::print("{}\n", j.dump());
    } else {
      fmt::print("{:<14} {:>9.2f} {:>9.2f} {:>9} {:>9} {:>9} {:>10.2f} {:>10}\n", names[k], gbps, memcpy_gbps,
                 cell(aten_gbps, "{:.2f}"), cell(scalar_gbps, "{:.3f}"), cell(fq_gbps, "{:.2f}"), gbps / memcpy_gbps,
                 cell(aten_gbps > 0 ? gbps / aten_gbps : 0, "{:.1f}x"));
    }
    std::fflush(stdout);
  }
  if (!json)
    fmt::print("\nGB/s count bytes read + written; 'scalar' is the reference on {} elements, one thread.\n",
               scalar_elements);
  return exit_ok;
}

}  // namespace qcast_cli
