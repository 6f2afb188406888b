// qcast bench --device cuda (tools/qcast/bench_cuda.cpp, built with the CUDA kernels).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "qcast/format.hpp"

namespace qcast_cli {

// Standard normal samples (bench_command.cpp), filled by `threads` threads.
void fill_normal(float* x, std::int64_t n, int threads);

// Times each format on the current CUDA device: the kernel, a device-to-device copy of the same
// bytes (the limit) and, with LibTorch, the ATen-op composition on the GPU. Prints a table or JSON
// lines, as the CPU bench does; returns the exit code. static_tensor_amax: two-level formats take
// the input's amax as given (CastOptions::tensor_amax), with no statistics pass and no ATen figure.
int bench_cuda(const std::vector<std::string>& names, const std::vector<qcast::Format>& formats, std::int64_t elements,
               int repeats, const std::string& op, bool json, bool static_tensor_amax);

}  // namespace qcast_cli
