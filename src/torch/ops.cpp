// The qcast operator library for TorchScript and PyTorch (libqcast_ops.so): `torch.ops.qcast.cast`
// and `torch.ops.qcast.hadamard`, registered with TORCH_LIBRARY, so that a saved TorchScript model
// can call qcast and Python can load it with torch.ops.load_library(path). The cast goes through the
// LibTorch adapter (qcast/torch.hpp: the CPU kernels, or the CUDA kernels for CUDA tensors), so its
// bits are those of the CLI and the adapter. Gradients pass straight through the rounding. The PTQ
// engine inserts `qcast::cast` on the inputs of layers whose activations it quantizes and links this
// library (torch_ops_library() keeps the link).
#include <ATen/ATen.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <cmath>
#include <optional>
#include <string>

#include "qcast/format_names.hpp"
#include "qcast/torch.hpp"
#include "qcast/torch_ops.hpp"

namespace {

qcast::Rounding rounding_of(const std::string& r) {
  if (r == "even") return qcast::Rounding::nearest_even;
  if (r == "away") return qcast::Rounding::nearest_away;
  if (r == "zero") return qcast::Rounding::toward_zero;
  if (r == "stochastic") return qcast::Rounding::stochastic;
  TORCH_CHECK(false, "qcast::cast: rounding must be even, away, zero or stochastic, got '", r, "'");
}

// The straight-through estimator: forward is the cast, backward the identity (the gradient of the
// rounding is taken to be 1 everywhere, as the quantization-aware-training literature does).
struct CastStraightThrough : torch::autograd::Function<CastStraightThrough> {
  static at::Tensor forward(torch::autograd::AutogradContext*, const at::Tensor& x, const std::string& format,
                            const std::string& rounding, int64_t seed, std::optional<bool> saturate,
                            std::optional<double> tensor_amax, std::optional<int64_t> axis) {
    qcast::Format f;
    try {
      f = qcast::parse_format(format);
    } catch (const std::exception& e) {
      TORCH_CHECK(false, "qcast::cast: ", e.what());
    }
    if (axis) {
      TORCH_CHECK(f.has_axis(), "qcast::cast: axis applies to channel and block formats; '", format, "' has none");
      f.axis = int(*axis);
    }
    qcast::CastOptions o;
    o.rounding = rounding_of(rounding);
    TORCH_CHECK(seed >= 0, "qcast::cast: seed must be non-negative, got ", seed);
    o.seed = std::uint64_t(seed);
    o.saturate = saturate;
    try {
      // A static amax: the tensor scale of a two-level format, or the scale of a per-tensor one.
      if (tensor_amax) return qcast::cast_calibrated(x, f, float(*tensor_amax), o);
      return qcast::cast(x, f, o);
    } catch (const c10::Error&) {
      throw;
    } catch (const std::exception& e) {
      TORCH_CHECK(false, "qcast::cast: ", e.what());
    }
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext*,
                                                 torch::autograd::variable_list grad) {
    return {grad[0], at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

at::Tensor cast(const at::Tensor& x, const std::string& format, const std::string& rounding, int64_t seed,
                std::optional<bool> saturate, std::optional<double> tensor_amax, std::optional<int64_t> axis) {
  return CastStraightThrough::apply(x, format, rounding, seed, saturate, tensor_amax, axis);
}

at::Tensor hadamard_of(const at::Tensor& x, int64_t block, int64_t dim) {
  try {
    return qcast::hadamard(x, block, dim);
  } catch (const c10::Error&) {
    throw;
  } catch (const std::exception& e) {
    TORCH_CHECK(false, "qcast::hadamard: ", e.what());
  }
}

// The transform is the adapter's (the SIMD kernel on float32 CPU tensors). H / sqrt(B) is symmetric
// and orthonormal, so its gradient is the same transform of the output gradient.
struct HadamardSelfAdjoint : torch::autograd::Function<HadamardSelfAdjoint> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, int64_t block, int64_t dim) {
    ctx->saved_data["block"] = block;
    ctx->saved_data["dim"] = dim;
    return hadamard_of(x, block, dim);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad) {
    return {hadamard_of(grad[0], ctx->saved_data["block"].toInt(), ctx->saved_data["dim"].toInt()), at::Tensor(),
            at::Tensor()};
  }
};

at::Tensor hadamard(const at::Tensor& x, int64_t block, int64_t dim) { return HadamardSelfAdjoint::apply(x, block, dim); }

}  // namespace

namespace qcast {
// Declared in qcast/torch_ops.hpp.
bool torch_ops_library() { return true; }
}  // namespace qcast

TORCH_LIBRARY(qcast, m) {
  m.def("cast(Tensor x, str format, str rounding='even', int seed=0, bool? saturate=None, float? tensor_amax=None, "
        "int? axis=None) -> Tensor");
  m.def("hadamard(Tensor x, int block, int dim=-1) -> Tensor");
}

// CompositeImplicitAutograd: one kernel for every device; the autograd Functions give the cast its
// straight-through gradient and the transform its exact one.
TORCH_LIBRARY_IMPL(qcast, CompositeImplicitAutograd, m) {
  m.impl("cast", &cast);
  m.impl("hadamard", &hadamard);
}
