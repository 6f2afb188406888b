// The LibTorch adapter: validates tensors, hands their storage to the core's array entry points.
// CPU tensors run on the compiled SIMD kernels (qcast/kernels.hpp); CUDA tensors on the CUDA
// kernels (qcast/cuda.hpp) on the tensor's device and LibTorch's current stream, where both
// LibTorch and this build have CUDA (QCAST_TORCH_CUDA), and otherwise through a CPU copy.
#include "qcast/torch.hpp"

#include <ATen/ATen.h>
#ifdef QCAST_TORCH_CUDA
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "qcast/cuda.hpp"
#endif

#include <cmath>
#include <stdexcept>
#include <string>

#include "qcast/cast.hpp"
#include "qcast/format_names.hpp"
#include "qcast/hadamard.hpp"
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

#ifdef QCAST_TORCH_CUDA
void* current_stream(const at::Tensor& x) { return c10::cuda::getCurrentCUDAStream(x.device().index()).stream(); }

std::size_t groups_of(const Shape& shape, const Format& f) {
  return f.is_scaled() ? std::size_t(detail::GroupLayout(shape, f).groups()) : 0;
}

// A byte tensor on the GPU that must hold at least `need` bytes (decode's codes and scales).
const std::uint8_t* device_bytes(const at::Tensor& t, std::size_t need, const at::Device& device, const char* what) {
  if (need == 0) return nullptr;
  if (!t.defined() || t.scalar_type() != at::kByte)
    throw std::invalid_argument(std::string("qcast::decode: ") + what + " must be a uint8 tensor");
  if (t.device() != device)
    throw std::invalid_argument(std::string("qcast::decode: ") + what + " is on " + t.device().str() +
                                ", the codes on " + device.str());
  if (!t.is_contiguous() || std::size_t(t.numel()) < need)
    throw std::invalid_argument(std::string("qcast::decode: encoded ") + what + " hold " + std::to_string(t.numel()) +
                                " bytes (contiguous); the shape needs " + std::to_string(need));
  return t.data_ptr<std::uint8_t>();
}
#endif

}  // namespace

at::Tensor cast(const at::Tensor& x, const Format& format, const CastOptions& options) {
  if (!x.defined()) throw std::invalid_argument("qcast::cast: the input tensor is undefined");
  const DType t = dtype_of(x, "qcast::cast");
#ifdef QCAST_TORCH_CUDA
  if (x.is_cuda()) {
    const c10::cuda::CUDAGuard guard(x.device());
    const at::Tensor in = x.contiguous();
    at::Tensor out = at::empty_like(in, at::MemoryFormat::Contiguous);
    cuda::cast(in.data_ptr(), out.data_ptr(), t, shape_of(in), format, options, current_stream(x));
    return out;
  }
#endif
  const at::Tensor in = x.to(at::kCPU).contiguous();
  at::Tensor out = at::empty_like(in, at::MemoryFormat::Contiguous);
  kernels::cast(in.data_ptr(), out.data_ptr(), t, shape_of(in), format, options);
  return x.is_cpu() ? out : out.to(x.device());
}

at::Tensor cast(const at::Tensor& x, const std::string& format, const CastOptions& options) {
  return cast(x, parse_format(format), options);
}

at::Tensor hadamard(const at::Tensor& x, std::int64_t block, std::int64_t dim) {
  if (!x.defined() || x.dim() < 1) throw std::invalid_argument("needs a tensor with at least one dimension");
  if (!(block >= 1 && (block & (block - 1)) == 0))
    throw std::invalid_argument("block must be a power of two, got " + std::to_string(block));
  if (dim < -x.dim() || dim >= x.dim())
    throw std::invalid_argument("dim " + std::to_string(dim) + " is out of range for a tensor of rank " + std::to_string(x.dim()));
  if (!x.is_floating_point())
    throw std::invalid_argument("needs a floating-point tensor, got " + std::string(c10::toString(x.scalar_type())));
  const std::int64_t n = x.size(dim);
  if (n % block != 0)
    throw std::invalid_argument("block " + std::to_string(block) + " does not divide dimension " + std::to_string(dim) +
                                " of size " + std::to_string(n));
  if (x.is_cpu() && x.scalar_type() == at::kFloat) {  // the SIMD kernel, in place on a contiguous copy
    at::Tensor y = x.movedim(dim, -1).clone(at::MemoryFormat::Contiguous);
    kernels::hadamard(y.data_ptr<float>(), y.numel(), block);
    return y.movedim(-1, dim);
  }
#ifdef QCAST_TORCH_CUDA
  if (x.is_cuda() && x.scalar_type() == at::kFloat) {  // the CUDA kernel, likewise
    const c10::cuda::CUDAGuard guard(x.device());
    at::Tensor y = x.movedim(dim, -1).clone(at::MemoryFormat::Contiguous);
    cuda::hadamard(y.data_ptr<float>(), y.numel(), block, current_stream(y));
    return y.movedim(-1, dim);
  }
#endif
  // Other devices and dtypes: ATen's ops, the same butterflies in the same order (float16 and
  // bfloat16 round to their type after each step).
  const at::Tensor moved = x.movedim(dim, -1);
  const auto sizes = moved.sizes().vec();
  at::Tensor y = moved.reshape({-1, n / block, block});
  // log2(block) butterfly steps: pairs (i, i + h) within runs of 2h become (a + b, a - b).
  for (std::int64_t h = 1; h < block; h *= 2) {
    const at::Tensor v = y.reshape({y.size(0), n / block, block / (2 * h), 2, h});
    const at::Tensor a = v.select(3, 0), b = v.select(3, 1);
    y = at::stack({a + b, a - b}, 3).reshape({-1, n / block, block});
  }
  return (y * (1.0 / std::sqrt(double(block)))).reshape(sizes).movedim(-1, dim);
}

bool takes_static_amax(const Format& f) { return f.granularity == Granularity::tensor || f.tensor_scale; }

at::Tensor cast_calibrated(const at::Tensor& x, const Format& format, float amax, const CastOptions& options) {
  detail::check_format(format);
  if (!takes_static_amax(format))
    throw std::invalid_argument("qcast::cast_calibrated: " + format_name(format) +
                                " has no tensor-wide scale to calibrate (per-tensor and two-level formats have one)");
  if (!(std::isfinite(amax) && amax > 0.0f))
    throw std::invalid_argument("qcast::cast_calibrated: the amax (tensor_amax) must be finite and > 0, got " +
                                detail::float_text(amax));
  CastOptions o = options;
  if (format.tensor_scale) {
    o.tensor_amax = amax;
    return cast(x, format, o);
  }
  o.tensor_amax.reset();
  // The per-tensor scale the format derives from amax (the scale rule and scale element included),
  // then the element cast of x / s and the product, each in binary32 as the core's cast_group does
  // (x / g.value, q * g.value).
  const GroupScale g = group_scale(format, amax, /*nonfinite=*/false);
  if (g.kind != GroupScale::Kind::finite)
    throw std::invalid_argument("qcast::cast_calibrated: amax " + detail::float_text(amax) + " gives " +
                                format_name(format) + " a zero scale");
  const at::Tensor xf = x.to(at::kFloat);
  const at::Tensor q = cast(xf / g.value, Format::direct(format.element), o);
  return (q * g.value).to(x.scalar_type());
}

EncodedTensor encode(const at::Tensor& x, const Format& format, const CastOptions& options) {
  if (!x.defined()) throw std::invalid_argument("qcast::encode: the input tensor is undefined");
  const DType t = dtype_of(x, "qcast::encode");
#ifdef QCAST_TORCH_CUDA
  if (x.is_cuda()) {
    const c10::cuda::CUDAGuard guard(x.device());
    const at::Tensor in = x.contiguous();
    const Shape shape = shape_of(in);
    detail::check_format(format, options);
    const std::size_t n = std::size_t(in.numel());
    const auto bytes = at::TensorOptions().dtype(at::kByte).device(x.device());
    EncodedTensor r;
    r.format = format;
    r.shape = shape;
    r.codes = at::empty({std::int64_t(packed_size(n, format.element.bits()))}, bytes);
    r.scales = at::empty({std::int64_t(packed_size(groups_of(shape, format), format.scale_storage_bits()))}, bytes);
    r.tensor_scale = cuda::encode(in.data_ptr(), t, shape, format, r.codes.data_ptr<std::uint8_t>(),
                                  r.scales.data_ptr<std::uint8_t>(), options, current_stream(x));
    return r;
  }
#endif
  (void)t;
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
  if (dtype != at::kFloat && dtype != at::kHalf && dtype != at::kBFloat16)
    throw std::invalid_argument("qcast::decode: dtype " + std::string(c10::toString(dtype)) +
                                " is not float32, float16 or bfloat16");
#ifdef QCAST_TORCH_CUDA
  if (encoded.codes.defined() && encoded.codes.is_cuda()) {
    const at::Device device = encoded.codes.device();
    const c10::cuda::CUDAGuard guard(device);
    const Format& f = encoded.format;
    detail::check_format(f);
    const Shape& shape = encoded.shape;
    at::Tensor out = at::empty(shape, at::TensorOptions().dtype(dtype).device(device));
    const std::size_t n = std::size_t(out.numel());
    const std::uint8_t* codes = device_bytes(encoded.codes, packed_size(n, f.element.bits()), device, "codes");
    const std::uint8_t* scales =
        device_bytes(encoded.scales, packed_size(groups_of(shape, f), f.scale_storage_bits()), device, "scales");
    const DType t = dtype == at::kFloat ? DType::f32 : dtype == at::kHalf ? DType::f16 : DType::bf16;
    cuda::decode(codes, scales, encoded.tensor_scale, shape, f, out.data_ptr(), t, current_stream(encoded.codes));
    return out;
  }
#endif
  Encoded e;
  e.format = encoded.format;
  e.shape = encoded.shape;
  e.codes = bytes_of(encoded.codes, "codes");
  e.scales = bytes_of(encoded.scales, "scales");
  e.tensor_scale = encoded.tensor_scale;
  at::Tensor out = at::empty(e.shape, at::TensorOptions().dtype(dtype));
  // 16-bit outputs are rounded by qcast::narrow (ATen's float-to-bfloat16 conversion turns the
  // canonical NaN into a negative NaN).
  const DType t = dtype == at::kFloat ? DType::f32 : dtype == at::kHalf ? DType::f16 : DType::bf16;
  kernels::decode(e, out.data_ptr(), t);
  return out;
}

}  // namespace qcast
