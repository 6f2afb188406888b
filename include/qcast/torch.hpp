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

// Fake quantization with a static, calibrated amax (an activation quantizer whose scale was
// measured on calibration data, not on the tensor at hand). Two formats take one:
// - two-level formats (nvfp4, ...@gK+tensor): amax is CastOptions::tensor_amax, the same bits as
//   cast() with it (docs/formats.md);
// - per-tensor formats (intN, X@tensor): the scale is the one the format derives from amax
//   (scaling.hpp's group_scale), and each element is cast alone: y = Q(x / s) * s in binary32. With
//   amax equal to the tensor's own finite amax and no NaN or Inf in x, the same bits as cast();
//   unlike cast(), a NaN or Inf element does not make the whole tensor NaN (it is cast alone: Inf
//   saturates or overflows by `saturate`), and values above amax saturate.
// Other formats (direct, channel, block) have no tensor-wide scale: std::invalid_argument. amax must
// be finite and > 0. float16 and bfloat16 inputs are cast in binary32 and rounded back.
at::Tensor cast_calibrated(const at::Tensor& x, const Format& format, float amax, const CastOptions& options = {});

// Block-diagonal Walsh-Hadamard transform along `dim`: each run of `block` elements (a power of two
// that divides the dimension) is multiplied by H_block / sqrt(block), the orthonormal Sylvester
// Hadamard matrix, in log2(block) butterfly steps: the SIMD kernel (kernels::hadamard) for float32
// CPU tensors, the CUDA kernel (cuda::hadamard) for float32 CUDA tensors where this build has CUDA,
// ATen ops for other dtypes and devices (the same bits for float32). No autograd here
// (the operator library's qcast::hadamard has it: the transform is its own adjoint). It is
// symmetric and orthonormal, so it is its own inverse: (W·H)(H·x) = W·x, the rotation that
// `qcast quantize --rotate hadamard` applies (weights offline, activations in the graph).
// std::invalid_argument names a bad block or dim.
at::Tensor hadamard(const at::Tensor& x, std::int64_t block, std::int64_t dim = -1);

// Whether cast_calibrated() takes a static amax for this format (per-tensor or two-level).
bool takes_static_amax(const Format& format);

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
