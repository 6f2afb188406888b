// The LibTorch adapter: validates tensors, hands their storage to the core's array entry points.
// Casts run on the compiled SIMD kernels (qcast/kernels.hpp).
// CUDA tensors are computed on the CPU copy and moved back until CUDA kernels land (src/cuda).
#include "qcast/torch.hpp"

#include <ATen/ATen.h>

#include <stdexcept>
#include <string>

#include "qcast/cast.hpp"
#include "qcast/format_names.hpp"
#include "qcast/kernels.hpp"

namespace qcast {
namespace {

DType dtype_of(const at::Tensor& x, const char* what) {
  switch (x.scalar_type()) {
    case at::kFloat: return DType::f32;
    case at::kHalf: return DType::f16;
    case at::kBFloat16: return DType::bf16;
    default:
      throw std::invalid_argument(std::string(what) + ": tensor dtype is " + std::string(c10::toString(x.scalar_type())) +
                                  "; valid dtypes are float32, float16 and bfloat16");
  }
}

Shape shape_of(const at::Tensor& x) { return Shape(x.sizes().begin(), x.sizes().end()); }

at::Tensor bytes_tensor(const std::vector<std::uint8_t>& v) {
  at::Tensor t = at::empty({std::int64_t(v.size())}, at::TensorOptions().dtype(at::kByte));
  if (!v.empty()) std::memcpy(t.data_ptr<std::uint8_t>(), v.data(), v.size());
  return t;
}

std::vector<std::uint8_t> bytes_of(const at::Tensor& t, const char* what) {
  if (!t.defined()) return {};
  if (t.scalar_type() != at::kByte)
    throw std::invalid_argument(std::string("qcast::decode: ") + what + " must be uint8, got " +
                                std::string(c10::toString(t.scalar_type())));
  const at::Tensor c = t.to(at::kCPU).contiguous();
  const auto* p = c.data_ptr<std::uint8_t>();
  return std::vector<std::uint8_t>(p, p + c.numel());
}

}  // namespace

at::Tensor cast(const at::Tensor& x, const Format& format, const CastOptions& options) {
  if (!x.defined()) throw std::invalid_argument("qcast::cast: the input tensor is undefined");
  const DType t = dtype_of(x, "qcast::cast");
  const at::Tensor in = x.to(at::kCPU).contiguous();
  at::Tensor out = at::empty_like(in, at::MemoryFormat::Contiguous);
  kernels::cast(in.data_ptr(), out.data_ptr(), t, shape_of(in), format, options);
  return x.is_cpu() ? out : out.to(x.device());
}

at::Tensor cast(const at::Tensor& x, const std::string& format, const CastOptions& options) {
  return cast(x, parse_format(format), options);
}

EncodedTensor encode(const at::Tensor& x, const Format& format, const CastOptions& options) {
  if (!x.defined()) throw std::invalid_argument("qcast::encode: the input tensor is undefined");
  dtype_of(x, "qcast::encode");
  const at::Tensor in = x.to(at::kCPU, at::kFloat).contiguous();
  const Encoded e = encode(in.data_ptr<float>(), shape_of(in), format, options);
  EncodedTensor r;
  r.format = e.format;
  r.shape = e.shape;
  r.codes = bytes_tensor(e.codes);
  r.scales = bytes_tensor(e.scales);
  r.tensor_scale = e.tensor_scale;
  return r;
}

at::Tensor decode(const EncodedTensor& encoded, at::ScalarType dtype) {
  Encoded e;
  e.format = encoded.format;
  e.shape = encoded.shape;
  e.codes = bytes_of(encoded.codes, "codes");
  e.scales = bytes_of(encoded.scales, "scales");
  e.tensor_scale = encoded.tensor_scale;
  at::Tensor out = at::empty(e.shape, at::TensorOptions().dtype(at::kFloat));
  decode(e, out.data_ptr<float>());
  if (dtype == at::kFloat) return out;
  if (dtype != at::kHalf && dtype != at::kBFloat16)
    throw std::invalid_argument("qcast::decode: dtype " + std::string(c10::toString(dtype)) +
                                " is not float32, float16 or bfloat16");
  return out.to(dtype);  // round to nearest even, as qcast::narrow does
}

}  // namespace qcast
