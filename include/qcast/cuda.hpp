// CUDA kernels (library qcast::cuda, built when CMake finds a CUDA toolkit): cast, encode and
// decode of tensors in GPU memory, and the block Hadamard transform, with the same bits as the reference (qcast::cast, encode,
// decode) and the CPU kernels. This header needs no CUDA header: pointers are device pointers and
// `stream` is a cudaStream_t (nullptr: the legacy default stream).
//
// Work is queued on `stream` and the calls return before it finishes, except encode, which waits
// for it (it reports a NaN that the format cannot hold, and returns the tensor scale), and a cast
// whose scale format has no NaN code (none of the named formats), which waits to report a NaN
// group as the reference does. Errors of the CUDA runtime throw std::runtime_error naming the call.
#pragma once
#include <cstdint>
#include <string>

#include "qcast/cast.hpp"

namespace qcast::cuda {

// Whether a CUDA device can be used: false on any CUDA error (no driver, no device, a driver too
// old for the toolkit).
bool device_available();
// "NVIDIA H100 80GB HBM3 (sm_90, 132 SMs)" for the current device, or why there is none.
std::string device_description();

// Fake quantization of prod(shape) values of type t at in into out (device pointers; in == out
// allowed). 16-bit values are widened exactly, cast, and rounded once to the storage type.
void cast(const void* in, void* out, DType t, const Shape& shape, const Format& format,
          const CastOptions& options = {}, void* stream = nullptr);

// Packed codes (packed_size(n, element bits) bytes at codes) and scales (packed_size(groups,
// scale_storage_bits) bytes at scales; unused for direct casts) of prod(shape) values of type t,
// the same bytes as qcast::encode. Returns the tensor scale s_t (1 for single-level formats).
// Throws std::domain_error naming the element when a direct cast to a format without NaN meets a
// NaN, and the reference's error where a scaled format cannot encode a group (a NaN or Inf under a
// scale without NaN; a zero over a two-level divisor s * s_t that rounded to 0, which is 0 / 0), as
// qcast::encode does; codes are then unspecified.
float encode(const void* in, DType t, const Shape& shape, const Format& format, std::uint8_t* codes,
             std::uint8_t* scales, const CastOptions& options = {}, void* stream = nullptr);

// The values of packed codes and scales (qcast::decode), written as type t at out.
void decode(const std::uint8_t* codes, const std::uint8_t* scales, float tensor_scale, const Shape& shape,
            const Format& format, void* out, DType t, void* stream = nullptr);

// The block Walsh-Hadamard transform of n float32 values in place (device pointer; n a multiple of
// block, a power of two): the same bits as qcast::hadamard and kernels::hadamard. Throws
// std::invalid_argument as check_hadamard does.
void hadamard(float* x, std::int64_t n, std::int64_t block, void* stream = nullptr);

}  // namespace qcast::cuda
