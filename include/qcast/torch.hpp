// LibTorch adapter: the core's operations on at::Tensor. Only this header and src/torch/ see
// LibTorch; the core headers never include it.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

#include "qcast/format.hpp"
#include "qcast/rounding.hpp"

namespace qcast {

// Fake quantization: a tensor of the same shape, dtype and device as x (float32, float16 or
// bfloat16, any rank, any strides) holding x rounded to the format and scaled back. Channel and
// block formats scale along format.axis. Throws std::invalid_argument naming the problem (dtype,
// axis) and FormatError for unknown format names.
at::Tensor cast(const at::Tensor& x, const Format& format, const CastOptions& options = {});
at::Tensor cast(const at::Tensor& x, const std::string& format, const CastOptions& options = {});

// Packed codes and scales of a tensor (bit order and scale layout: qcast/packing.hpp, docs/formats.md).
struct EncodedTensor {
  Format format;
  std::vector<std::int64_t> shape;
  at::Tensor codes;         // uint8, packed element codes in row-major element order
  at::Tensor scales;        // uint8, packed scale codes in group order (empty for direct casts)
  float tensor_scale = 1;   // s_t of two-level formats (nvfp4)
};

// codes and scales are on x's device (CUDA tensors are encoded on the GPU where this build has the
// CUDA kernels; there the call waits for the GPU, to report a NaN the format cannot hold).
EncodedTensor encode(const at::Tensor& x, const Format& format, const CastOptions& options = {});
// Decodes to a tensor of the given dtype (float32, float16 or bfloat16) on the device of
// encoded.codes (a GPU where this build has the CUDA kernels, else the CPU).
at::Tensor decode(const EncodedTensor& encoded, at::ScalarType dtype = at::kFloat);

}  // namespace qcast
