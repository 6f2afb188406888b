#include "aten_reference.hpp"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <stdexcept>

namespace qcast_cli {
namespace {

// Round v (already scaled) to the element grid: exponent, step, round, clamp, as the peers do.
at::Tensor element_grid(const at::Tensor& v, const qcast::ElementFormat& e) {
  const double max = e.max_value();
  if (e.kind == qcast::ElementKind::integer) {
    const double up = std::ldexp(1.0, e.fraction_bits);
    return at::clamp(at::round(v * up), -double(e.integer_max()), double(e.integer_max())) / up;
  }
  const at::Tensor a = at::abs(v);
  const at::Tensor exponent = at::clamp_min(at::floor(at::log2(a)), double(e.min_exponent()));
  const at::Tensor step = at::exp2(exponent - double(e.mantissa_bits));
  const at::Tensor q = at::clamp_max(at::round(a / step) * step, max);
  return at::where(at::isnan(v), v, at::sign(v) * q);
}

at::Tensor aten_fake_quantize(const at::Tensor& x, const qcast::Format& f) {
  using qcast::Granularity;
  const qcast::ElementFormat& e = f.element;
  if (!f.is_scaled()) return element_grid(x, e);
  const double max_elem = e.max_value();
  at::Tensor g;  // one group per row
  if (f.granularity == Granularity::tensor) g = x.reshape({1, -1});
  else if (f.granularity == Granularity::channel) g = x.reshape({x.size(0), -1});
  else {
    if (x.size(-1) % f.block_size != 0) throw std::invalid_argument("the ATen baseline needs whole blocks");
    g = x.reshape({-1, f.block_size});
  }
  const at::Tensor amax = at::amax(at::abs(g), {1}, true);
  at::Tensor out;
  if (f.scale.kind == qcast::ElementKind::exponent) {
    const at::Tensor shared = at::clamp(at::floor(at::log2(amax)) - double(e.max_exponent()), -127.0, 127.0);
    const at::Tensor scale = at::exp2(shared);
    out = element_grid(g / scale, e) * scale;
  } else if (f.tensor_scale) {
    const at::Tensor s_t = at::amax(at::abs(x)) / (max_elem * f.scale.max_value());
    const at::Tensor s_b = element_grid(at::clamp_max(amax / max_elem / s_t, f.scale.max_value()), f.scale);
    out = element_grid(g / (s_b * s_t), e) * s_b * s_t;
  } else {
    const at::Tensor scale = amax / max_elem;
    out = element_grid(g / scale, e) * scale;
  }
  return at::where(amax == 0, g, out).reshape(x.sizes());
}

}  // namespace

void aten_set_threads(int threads) { at::set_num_threads(threads); }

namespace {
at::TensorOptions on(bool cuda) { return at::TensorOptions().device(cuda ? at::kCUDA : at::kCPU); }
}  // namespace

double aten_fake_quantize_seconds(const float* in, float* out, std::int64_t rows, std::int64_t cols,
                                  const qcast::Format& f, const Timer& time, bool cuda) {
  const at::Tensor x = at::from_blob(const_cast<float*>(in), {rows, cols}, on(cuda));
  at::Tensor y = at::from_blob(out, {rows, cols}, on(cuda));
  try {
    return time([&] { y.copy_(aten_fake_quantize(x, f)); });
  } catch (const std::exception&) {
    return 0;  // a format the composition does not cover: reported as null
  }
}

double aten_fake_quantize_per_channel_seconds(const float* in, float* out, std::int64_t rows, std::int64_t cols,
                                              const Timer& time, bool cuda) {
  const at::Tensor x = at::from_blob(const_cast<float*>(in), {rows, cols}, on(cuda));
  at::Tensor y = at::from_blob(out, {rows, cols}, on(cuda));
  const at::Tensor scale = at::amax(at::abs(x), {1}) / 127.0;
  const at::Tensor zero = at::zeros({rows}, on(cuda).dtype(at::kInt));
  return time([&] { y.copy_(at::fake_quantize_per_channel_affine(x, scale, zero, 0, -127, 127)); });
}

}  // namespace qcast_cli
