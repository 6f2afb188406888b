// Compiled CPU kernels (library qcast::kernels): the same results as the header-only reference
// (qcast::cast, encode, decode), bit for bit, computed with SIMD (one source compiled per
// instruction set, the best one chosen at run time) on several threads. Results never depend on the thread count or on the
// instruction set: groups are independent and stochastic draws depend on element indices only.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "qcast/cast.hpp"

namespace qcast::kernels {

// threads <= 0: std::thread::hardware_concurrency(). The calling thread works too; the others come
// from a pool of worker threads that the first parallel call starts and that lasts until the
// process ends (idle workers, up to one per hardware thread, poll for 100 us, then sleep).
// Tensors under 64K elements a thread use fewer threads. Safe to call from several threads at
// once and in a child process after fork().
void cast(const float* in, float* out, const Shape& shape, const Format& format, const CastOptions& options = {},
          int threads = 0);

// float32, float16 or bfloat16 arrays (in and out have type t); 16-bit values are widened exactly,
// cast, and rounded once to the storage type, as the reference's 16-bit cast does.
void cast(const void* in, void* out, DType t, const Shape& shape, const Format& format,
          const CastOptions& options = {}, int threads = 0);

// Packed codes and scales, the same bytes as qcast::encode; threads as for cast. Formats whose
// elements are 8 bits or narrower and signed (every named format) run SIMD; others run the reference.
// Throws as qcast::encode does (a NaN in a direct cast to a format without NaN names its index).
Encoded encode(const float* in, const Shape& shape, const Format& format, const CastOptions& options = {},
               int threads = 0);
// The same into `out`, reusing its buffers: in a loop over tensors of one size this skips what a
// fresh result costs on every call (allocation, zero fill, a page fault per 4 KiB: about a third of
// encode's time on 64M elements). If it throws, out holds unspecified codes.
void encode_into(Encoded& out, const float* in, const Shape& shape, const Format& format,
                 const CastOptions& options = {}, int threads = 0);
// float16 / bfloat16 input (type t): the codes of its values widened exactly to binary32. Each
// thread widens a chunk at a time in a buffer of its own; strided groups element by element.
Encoded encode(const void* in, DType t, const Shape& shape, const Format& format, const CastOptions& options = {},
               int threads = 0);
void encode_into(Encoded& out, const void* in, DType t, const Shape& shape, const Format& format,
                 const CastOptions& options = {}, int threads = 0);

// The values of encoded codes, the same bits as qcast::decode (prod(encoded.shape) outputs).
void decode(const Encoded& encoded, float* out, int threads = 0);
// float16 / bfloat16 output (type t): decoded to binary32, then rounded once as qcast::narrow does.
void decode(const Encoded& encoded, void* out, DType t, int threads = 0);

// The block Walsh-Hadamard transform of n values in place (qcast/hadamard.hpp: the same bits as the
// reference on every instruction set and thread count); threads as for cast.
void hadamard(float* x, std::int64_t n, std::int64_t block, int threads = 0);

// The largest finite |x| of n values (NaN and Inf skipped; 0 for none): the amax_t a two-level
// format measures, e.g. to calibrate CastOptions::tensor_amax as the maximum over calibration
// batches. threads as for cast.
float finite_amax(const float* in, std::int64_t n, int threads = 0);
// float16 / bfloat16 values (type t), read as their exact binary32 values.
float finite_amax(const void* in, DType t, std::int64_t n, int threads = 0);

// Instruction sets compiled into this build that this CPU supports, best first (e.g. AVX3, AVX2,
// SSE4, EMU128).
std::vector<std::string> available_targets();
// Restricts dispatch to one of available_targets() (for tests and benchmarks); "" restores the
// best. Throws std::invalid_argument listing the valid names.
void use_target(const std::string& name);
// The instruction set the next call will use.
std::string current_target();

// cast and decode write float outputs of at least this many bytes with streaming (non-temporal)
// stores where the output is vector-aligned, which skip reading each output cache line before
// writing it: about a third less memory traffic for tensors that cannot stay in cache anyway.
// Default: the last-level cache size (32 MiB where unknown); 0 streams always, SIZE_MAX never.
// Results are the same either way. A change applies to calls that start after it.
void set_streaming_threshold(std::size_t bytes);
std::size_t streaming_threshold();

}  // namespace qcast::kernels
