// The LibTorch adapter against the oracle and the core: dtypes, ranks, axes, strides, errors.
#include <ATen/ATen.h>

#include <cmath>
#include <limits>
// LibTorch's logging defines CHECK too: Catch's must win.
#undef CHECK
#include <catch2/catch.hpp>

#include "../core/bits.hpp"
#include "oracle.hpp"
#include "qcast/cast.hpp"
#include "qcast/format_names.hpp"
#include "qcast/torch.hpp"

namespace {

std::vector<float> values_of(const at::Tensor& t) {
  const at::Tensor c = t.to(at::kFloat).contiguous();
  return std::vector<float>(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
}

std::size_t mismatches(const std::vector<float>& a, const std::vector<float>& b) {
  std::size_t bad = a.size() == b.size() ? 0 : 1;
  for (std::size_t i = 0; i < std::min(a.size(), b.size()); ++i) bad += !qcast_test::same(a[i], b[i]);
  return bad;
}

}  // namespace

TEST_CASE("cast of a float32 tensor matches the oracle") {
  at::manual_seed(1);
  const at::Tensor x = at::randn({4, 6, 70}) * at::exp(at::randn({4, 6, 1}) * 4);
  const auto v = values_of(x);
  CHECK(mismatches(values_of(qcast::cast(x, "mxfp4")), oracle::mx(v, 24, 70, oracle::e2m1())) == 0);
  CHECK(mismatches(values_of(qcast::cast(x, "mxfp8_e4m3")), oracle::mx(v, 24, 70, oracle::e4m3())) == 0);
  CHECK(mismatches(values_of(qcast::cast(x, "nvfp4")), oracle::nvfp4(v, 24, 70)) == 0);
  CHECK(mismatches(values_of(qcast::cast(x, "int4@g32")), oracle::intq(v, 24, 70, 4, 32)) == 0);
  std::vector<float> direct;
  for (float f : v) direct.push_back(float(oracle::cast(oracle::e5m2(), f)));
  CHECK(mismatches(values_of(qcast::cast(x, "fp8_e5m2")), direct) == 0);
}

TEST_CASE("nvfp4 with a given tensor amax matches the oracle; encode keeps its tensor scale") {
  at::manual_seed(5);
  const at::Tensor x = at::randn({24, 64}) * 3;
  const auto v = values_of(x);
  for (const float amax : {0.5f, 4.0f, 100.0f}) {
    INFO(amax);
    qcast::CastOptions o;
    o.tensor_amax = amax;
    CHECK(mismatches(values_of(qcast::cast(x, "nvfp4", o)), oracle::nvfp4(v, 24, 64, amax)) == 0);
    const auto e = qcast::encode(x, qcast::parse_format("nvfp4"), o);
    CHECK(e.tensor_scale == qcast::tensor_scale_of(qcast::parse_format("nvfp4"), amax));
    CHECK(at::equal(qcast::decode(e), qcast::cast(x, "nvfp4", o)));
  }
  qcast::CastOptions o;
  o.tensor_amax = 1.0f;
  CHECK_THROWS_WITH(qcast::cast(x, "mxfp4", o), Catch::Matchers::Contains("no tensor scale"));
}

TEST_CASE("a calibrated amax: per-tensor formats cast each element with the scale of the given amax") {
  at::manual_seed(7);
  const at::Tensor x = at::randn({12, 40}) * 2;
  const auto v = values_of(x);
  const float measured = x.abs().max().item<float>();
  // The same bits as the dynamic cast where the amax is the tensor's own.
  for (const char* name : {"int8", "int4", "fp8_e4m3@tensor", "int8@tensor:scale=e8m0", "nvfp4"}) {
    INFO(name);
    CHECK(mismatches(values_of(qcast::cast_calibrated(x, qcast::parse_format(name), measured)),
                     values_of(qcast::cast(x, name))) == 0);
  }
  // Written from docs/formats.md ("Scaled integers"): s = amax / 127, q = clamp(RNE(x / s)) * s, with
  // values beyond amax saturating; and s = amax / 448 for fp8_e4m3@tensor.
  for (const float amax : {0.75f, 3.0f, 20.0f}) {
    INFO(amax);
    std::vector<float> int8, fp8;
    const float s8 = amax / 127.0f, s448 = amax / 448.0f;
    for (float f : v) {
      const float q = std::nearbyint(f / s8);
      int8.push_back(std::min(127.0f, std::max(-127.0f, q)) * s8);
      fp8.push_back(float(oracle::cast(oracle::e4m3(), double(f / s448))) * s448);
    }
    CHECK(mismatches(values_of(qcast::cast_calibrated(x, qcast::parse_format("int8"), amax)), int8) == 0);
    CHECK(mismatches(values_of(qcast::cast_calibrated(x, qcast::parse_format("fp8_e4m3@tensor"), amax)), fp8) == 0);
    qcast::CastOptions o;
    o.tensor_amax = amax;
    CHECK(at::equal(qcast::cast_calibrated(x, qcast::parse_format("nvfp4"), amax), qcast::cast(x, "nvfp4", o)));
  }
  // An Inf element is cast alone (it saturates), not the whole tensor to NaN.
  at::Tensor y = x.clone();
  y[0][0] = std::numeric_limits<float>::infinity();
  const at::Tensor c = qcast::cast_calibrated(y, qcast::parse_format("int8"), 2.0f);
  CHECK(c[0][0].item<float>() == 2.0f);
  CHECK(at::isfinite(c).all().item<bool>());
  CHECK_THROWS_WITH(qcast::cast_calibrated(x, qcast::parse_format("mxfp4"), 1.0f),
                    Catch::Matchers::Contains("has no tensor-wide scale"));
  CHECK_THROWS_WITH(qcast::cast_calibrated(x, qcast::parse_format("int8"), 0.0f),
                    Catch::Matchers::Contains("the amax (tensor_amax) must be finite and > 0"));
}

TEST_CASE("shape, dtype and device are kept; 16-bit tensors equal the core's 16-bit path") {
  at::manual_seed(2);
  for (auto dt : {at::kFloat, at::kHalf, at::kBFloat16}) {
    const at::Tensor x = at::randn({3, 5, 64}).to(dt);
    const at::Tensor y = qcast::cast(x, "nvfp4");
    CHECK(y.sizes() == x.sizes());
    CHECK(y.scalar_type() == dt);
    if (dt == at::kFloat) continue;
    const at::Tensor xc = x.contiguous();
    std::vector<std::uint16_t> out(std::size_t(x.numel()));
    qcast::cast(xc.data_ptr(), out.data(), dt == at::kHalf ? qcast::DType::f16 : qcast::DType::bf16, {3, 5, 64},
                qcast::parse_format("nvfp4"));
    const at::Tensor yc = y.contiguous();
    CHECK(std::memcmp(yc.data_ptr(), out.data(), out.size() * 2) == 0);
  }
}

TEST_CASE("non-contiguous inputs and other axes") {
  at::manual_seed(3);
  const at::Tensor w = at::randn({64, 48});
  const at::Tensor wt = w.t();  // a strided view
  // Blocks along axis 0 of w are blocks along the last axis of w.t().
  qcast::Format f = qcast::parse_format("mxfp4");
  f.axis = 0;
  CHECK(at::equal(qcast::cast(w, f), qcast::cast(wt, "mxfp4").t()));
  CHECK(at::equal(qcast::cast(wt, "mxfp4"), qcast::cast(wt.contiguous(), "mxfp4")));
}

TEST_CASE("encode and decode tensors") {
  at::manual_seed(4);
  const at::Tensor x = at::randn({8, 100});
  for (const char* name : {"mxfp4", "nvfp4", "mxfp6_e3m2", "fp8_e4m3"}) {
    const auto e = qcast::encode(x, qcast::parse_format(name));
    CHECK(e.codes.scalar_type() == at::kByte);
    CHECK(at::equal(qcast::decode(e), qcast::cast(x, name)));
    CHECK(qcast::decode(e, at::kBFloat16).scalar_type() == at::kBFloat16);
  }
}

TEST_CASE("adapter errors name the problem and the valid choices") {
  const at::Tensor i = at::ones({4, 4}, at::kInt);
  CHECK_THROWS_WITH(qcast::cast(i, "mxfp4"), Catch::Contains("dtype is Int") && Catch::Contains("float32, float16 and bfloat16"));
  CHECK_THROWS_WITH(qcast::cast(at::ones({4}), "mxfp5"), Catch::Contains("unknown format 'mxfp5'") && Catch::Contains("nvfp4"));
  qcast::Format f = qcast::parse_format("int4@channel");
  f.axis = 3;
  CHECK_THROWS_WITH(qcast::cast(at::ones({4, 4}), f), Catch::Contains("axis 3 is out of range"));
  CHECK_THROWS_WITH(qcast::cast(at::Tensor(), "mxfp4"), Catch::Contains("undefined"));
}
