// The baselines of `qcast bench` that need LibTorch: the same fake-quantization math composed from
// ATen ops (the way the Python peers, TensorCast and microxcaling, compute it; a speed baseline, not
// a bit-exact reference) and at::fake_quantize_per_channel_affine. They run on the bench's own
// buffers, wrapped without a copy. This header has no LibTorch include, so the bench builds without it.
#pragma once
#include <cstdint>
#include <functional>

#include "qcast/format.hpp"

namespace qcast_cli {

// Times fn the way the bench times every figure (warm-up, median of repeats); returns seconds.
using Timer = std::function<double(const std::function<void()>&)>;

void aten_set_threads(int threads);

// Seconds for rows x cols floats at in -> out through the ATen-op composition of f; 0 where the
// composition does not cover f (e.g. a row length that is not a whole number of blocks). cuda: in
// and out are GPU memory of the current device, and the ops run there (on the default stream).
double aten_fake_quantize_seconds(const float* in, float* out, std::int64_t rows, std::int64_t cols,
                                  const qcast::Format& f, const Timer& time, bool cuda = false);

// Seconds for at::fake_quantize_per_channel_affine (int8, one symmetric scale per row).
double aten_fake_quantize_per_channel_seconds(const float* in, float* out, std::int64_t rows, std::int64_t cols,
                                              const Timer& time, bool cuda = false);

}  // namespace qcast_cli
