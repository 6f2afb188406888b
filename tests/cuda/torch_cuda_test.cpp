// The LibTorch adapter on CUDA tensors: cast / encode / decode run on the GPU (results stay on the
// tensor's device) and give the CPU path's bits, for float32 / float16 / bfloat16, non-contiguous
// inputs and a non-default stream.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
// LibTorch's logging defines CHECK too: Catch's must win.
#undef CHECK
#include <catch2/catch.hpp>

#include <cstring>
#include <limits>

#include "qcast/format_names.hpp"
#include "qcast/torch.hpp"

namespace {

// "" when a and b hold the same bits; else what differs (for the failure message).
std::string difference(const at::Tensor& a, const at::Tensor& b) {
  const at::Tensor x = a.to(at::kCPU).contiguous(), y = b.to(at::kCPU).contiguous();
  if (x.sizes() != y.sizes() || x.scalar_type() != y.scalar_type())
    return "shape or dtype: " + std::string(c10::toString(x.scalar_type())) + " vs " + c10::toString(y.scalar_type());
  const std::size_t size = std::size_t(x.element_size());
  const auto* p = static_cast<const unsigned char*>(x.data_ptr());
  const auto* q = static_cast<const unsigned char*>(y.data_ptr());
  std::size_t count = 0, first = 0;
  for (std::size_t i = std::size_t(x.numel()); i-- > 0;)
    if (std::memcmp(p + i * size, q + i * size, size) != 0) ++count, first = i;
  if (count == 0) return "";
  const at::Tensor xf = x.reshape({-1}).to(at::kDouble), yf = y.reshape({-1}).to(at::kDouble);
  return std::to_string(count) + " elements differ, first at " + std::to_string(first) + ": " +
         std::to_string(xf[std::int64_t(first)].item<double>()) + " vs " + std::to_string(yf[std::int64_t(first)].item<double>());
}

bool same_bits(const at::Tensor& a, const at::Tensor& b) { return difference(a, b).empty(); }

at::Tensor test_input() {
  at::manual_seed(7);
  at::Tensor x = at::randn({96, 512}) * at::exp2(at::randint(-20, 20, {96, 1}).to(at::kFloat));
  x[3][5] = std::numeric_limits<float>::quiet_NaN();
  x[7][9] = std::numeric_limits<float>::infinity();
  x[11].zero_();
  return x;
}

}  // namespace

TEST_CASE("qcast::cast of CUDA tensors runs on the GPU and equals the CPU result") {
  const at::Tensor cpu = test_input();
  for (const at::ScalarType dtype : {at::kFloat, at::kHalf, at::kBFloat16}) {
    const at::Tensor x = cpu.to(dtype);
    const at::Tensor xg = x.to(at::kCUDA);
    for (const char* name : {"mxfp4", "nvfp4", "fp8_e4m3", "mxfp6_e2m3", "int4@g128", "int8@channel", "fp4_e2m1@g32:scale=e8m0:axis=0"}) {
      INFO(c10::toString(dtype) << " " << name);
      const at::Tensor got = qcast::cast(xg, name);
      CHECK(got.is_cuda());
      CHECK(got.scalar_type() == dtype);
      CHECK(same_bits(got, qcast::cast(x, name)));
      // A transposed view: the adapter makes it contiguous first, as on the CPU.
      CHECK(same_bits(qcast::cast(xg.t(), name), qcast::cast(x.t(), name)));
    }
  }
}

TEST_CASE("qcast::encode / decode of CUDA tensors keep codes on the GPU and equal the CPU bytes") {
  const at::Tensor x = test_input();
  const at::Tensor xg = x.to(at::kCUDA);
  for (const char* name : {"mxfp4", "nvfp4", "mxfp6_e3m2", "mxint8", "int4@g128", "fp8_e5m2"}) {
    INFO(name);
    const qcast::EncodedTensor ref = qcast::encode(x, qcast::parse_format(name));
    const qcast::EncodedTensor got = qcast::encode(xg, qcast::parse_format(name));
    CHECK(got.codes.is_cuda());
    CHECK(same_bits(got.codes, ref.codes));
    CHECK(same_bits(got.scales, ref.scales));
    CHECK(got.tensor_scale == ref.tensor_scale);
    for (const at::ScalarType dtype : {at::kFloat, at::kHalf, at::kBFloat16}) {
      INFO(c10::toString(dtype));
      const at::Tensor out = qcast::decode(got, dtype);
      CHECK(out.is_cuda());
      CHECK(difference(out, qcast::decode(ref, dtype)) == "");
    }
  }
}

TEST_CASE("CUDA tensors are cast on LibTorch's current stream") {
  const at::Tensor x = test_input().to(at::kCUDA);
  const at::Tensor ref = qcast::cast(x, "nvfp4");
  c10::cuda::CUDAStream side = c10::cuda::getStreamFromPool();
  at::Tensor got;
  {
    const c10::cuda::CUDAStreamGuard guard(side);
    got = qcast::cast(x, "nvfp4");
  }
  side.synchronize();
  CHECK(same_bits(got, ref));
}

TEST_CASE("decode rejects short or misplaced code tensors") {
  const at::Tensor xg = test_input().to(at::kCUDA);
  qcast::EncodedTensor e = qcast::encode(xg, qcast::parse_format("mxfp4"));
  qcast::EncodedTensor shorter = e;
  shorter.codes = e.codes.narrow(0, 0, e.codes.numel() - 1);
  CHECK_THROWS_AS(qcast::decode(shorter), std::invalid_argument);
  qcast::EncodedTensor split = e;
  split.scales = e.scales.to(at::kCPU);
  CHECK_THROWS_AS(qcast::decode(split), std::invalid_argument);
}

TEST_CASE("qcast::hadamard of float32 CUDA tensors runs the CUDA kernel and equals the CPU result") {
  // NaN outputs must be NaN on both devices; their payloads may differ (the GPU returns its
  // canonical NaN), so NaNs are compared by position and the rest by bits.
  const auto without_nan = [](const at::Tensor& t) { return at::where(at::isnan(t), at::zeros_like(t), t); };
  const at::Tensor x = test_input();
  const at::Tensor xg = x.to(at::kCUDA);
  for (const std::int64_t dim : {-1, 0})
    for (const std::int64_t block : {1, 16, 32, 512}) {
      if (x.size(dim) % block != 0) continue;
      INFO("dim " << dim << ", block " << block);
      const at::Tensor want = qcast::hadamard(x, block, dim);
      const at::Tensor got = qcast::hadamard(xg, block, dim);
      CHECK(got.is_cuda());
      CHECK(at::isnan(got).cpu().equal(at::isnan(want)));
      CHECK(difference(without_nan(got), without_nan(want)) == "");
    }
  CHECK_THROWS_WITH(qcast::hadamard(xg, 24), Catch::Matchers::Contains("power of two"));
}
