// The same fake-quantization math composed from ATen ops, the way the Python peers (TensorCast,
// microxcaling) compute it: a speed baseline for `qcast bench`, not a bit-exact reference.
#pragma once
#include <ATen/ATen.h>

#include "qcast/format.hpp"

namespace qcast_cli {

at::Tensor aten_fake_quantize(const at::Tensor& x, const qcast::Format& f);

}  // namespace qcast_cli
