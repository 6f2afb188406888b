// Two-level formats with a given tensor amax (CastOptions::tensor_amax, a static tensor scale): the
// compiled cast, encode and decode equal the reference on every target, for float32 and 16-bit
// tensors, for amax values far below, at and far above the tensor's own; bad values are errors.
// The reference itself is checked against the oracle's NVFP4 in tests/core/scaled_oracle_test.cpp.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "common/cast_options.hpp"
#include "common/tensor_values.hpp"
#include "qcast/kernels.hpp"

namespace {

std::size_t differing_bits(const std::vector<float>& a, const std::vector<float>& b) {
  std::size_t bad = 0;
  for (std::size_t i = 0; i < a.size(); ++i) bad += std::memcmp(&a[i], &b[i], 4) != 0;
  return bad;
}

float finite_amax(const std::vector<float>& x) {
  float m = 0.0f;
  for (float v : x)
    if (std::isfinite(v)) m = std::max(m, std::fabs(v));
  return m;
}

struct Layout {
  qcast::Shape shape;
  const char* format;
};

// Blocks along lines (the lean and general block paths), along a non-last axis (column groups),
// one block per tensor (the single-group path) and lines that end in a partial block.
const Layout kLayouts[] = {
    {{48, 256}, "nvfp4"},
    {{48, 256}, "int4@g32+tensor"},
    {{48, 256}, "fp8_e4m3@g32+tensor:scale=fp16"},
    {{48, 256}, "fp4_e2m1@g16+tensor:axis=0"},
    {{4, 48, 16}, "fp4_e2m1@g16+tensor:axis=1"},
    {{1, 12}, "nvfp4"},
    {{30, 70}, "nvfp4"},
};

}  // namespace

TEST_CASE("a given tensor amax gives the reference's bits on every target, op, dtype and option") {
  const auto options = qcast_test::rounding_and_overflow_options();
  for (const Layout& layout : kLayouts) {
    std::size_t n = 1;
    for (auto d : layout.shape) n *= std::size_t(d);
    std::vector<float> x = qcast_test::scaled_normal_rows(int(n / 12), 12, 91);
    x[3] = std::numeric_limits<float>::quiet_NaN();  // one NaN block
    x[n - 1] = -0.0f;
    const qcast::Format f = qcast::parse_format(layout.format);
    const float measured = finite_amax(x);
    // Far below (block scales and elements saturate), a little below, at, above, and far above
    // (block scales round to 0), and subnormal amax values: s_t = amax / 2688 is then a subnormal
    // or 0, where a zero element meets 0 / 0 and encode throws as the reference does.
    const float tiny = std::numeric_limits<float>::denorm_min();
    for (const float amax : {measured * 0x1p-20f, measured * 0.75f, measured, measured * 3.0f, measured * 0x1p40f,
                             tiny * 0x1p20f, tiny * 1000.0f}) {
      for (std::size_t k = 0; k < options.size(); ++k) {
        qcast::CastOptions o = options[k];
        o.tensor_amax = amax;
        std::vector<float> ref(n);
        qcast::cast(x.data(), ref.data(), layout.shape, f, o);
        qcast::Encoded ref_e;
        std::string ref_error;
        try {
          ref_e = qcast::encode(x.data(), layout.shape, f, o);
        } catch (const std::exception& e) {
          ref_error = e.what();
        }
        std::vector<std::uint16_t> x16(n), ref16(n), got16(n);
        for (std::size_t i = 0; i < n; ++i) x16[i] = qcast::narrow(qcast::DType::bf16, x[i]);
        qcast::cast(x16.data(), ref16.data(), qcast::DType::bf16, layout.shape, f, o);
        for (const auto& target : qcast::kernels::available_targets()) {
          qcast::kernels::use_target(target);
          for (int threads : {1, 3}) {
            INFO(target << " " << layout.format << " amax " << amax << " (measured " << measured << ") options#" << k
                        << " threads " << threads);
            std::vector<float> got(n);
            qcast::kernels::cast(x.data(), got.data(), layout.shape, f, o, threads);
            CHECK(differing_bits(got, ref) == 0);
            qcast::kernels::cast(x16.data(), got16.data(), qcast::DType::bf16, layout.shape, f, o, threads);
            CHECK(got16 == ref16);
            if (!ref_error.empty()) {
              CHECK_THROWS_WITH(qcast::kernels::encode(x.data(), layout.shape, f, o, threads), ref_error);
              continue;
            }
            const qcast::Encoded got_e = qcast::kernels::encode(x.data(), layout.shape, f, o, threads);
            CHECK(got_e.codes == ref_e.codes);
            CHECK(got_e.scales == ref_e.scales);
            CHECK(std::memcmp(&got_e.tensor_scale, &ref_e.tensor_scale, 4) == 0);
            std::vector<float> decoded(n);
            qcast::kernels::decode(got_e, decoded.data(), threads);
            std::vector<float> ref_decoded(n);
            qcast::decode(ref_e, ref_decoded.data());
            CHECK(differing_bits(decoded, ref_decoded) == 0);
          }
        }
        qcast::kernels::use_target("");
      }
    }
  }
}

TEST_CASE("kernels::finite_amax equals the reference's measure on every target, dtype and thread count") {
  std::vector<float> x = qcast_test::scaled_normal_rows(300, 1000, 17);  // rows from 2^-30 to 2^30
  x[12345] = std::numeric_limits<float>::quiet_NaN();
  x[200000] = -std::numeric_limits<float>::infinity();
  x[299999] = -std::numeric_limits<float>::max();  // the largest finite, negative, last
  const std::int64_t n = std::int64_t(x.size());
  std::vector<std::uint16_t> b16(x.size()), h16(x.size());
  std::vector<float> wb(x.size()), wh(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) {
    b16[i] = qcast::narrow(qcast::DType::bf16, x[i]);
    h16[i] = qcast::narrow(qcast::DType::f16, x[i]);  // past 65504: Inf, which the measure skips
    wb[i] = qcast::widen(qcast::DType::bf16, b16[i]);
    wh[i] = qcast::widen(qcast::DType::f16, h16[i]);
  }
  const float want = qcast::detail::finite_amax(x.data(), n);
  REQUIRE(want == std::numeric_limits<float>::max());
  for (const auto& target : qcast::kernels::available_targets()) {
    qcast::kernels::use_target(target);
    for (int threads : {1, 2, 3}) {
      INFO(target << " threads " << threads);
      CHECK(qcast::kernels::finite_amax(x.data(), n, threads) == want);
      CHECK(qcast::kernels::finite_amax(x.data(), n - 1, threads) == qcast::detail::finite_amax(x.data(), n - 1));
      CHECK(qcast::kernels::finite_amax(b16.data(), qcast::DType::bf16, n, threads) ==
            qcast::detail::finite_amax(wb.data(), n));
      CHECK(qcast::kernels::finite_amax(h16.data(), qcast::DType::f16, n, threads) ==
            qcast::detail::finite_amax(wh.data(), n));
      CHECK(qcast::kernels::finite_amax(x.data(), 0, threads) == 0.0f);
    }
  }
  qcast::kernels::use_target("");
  CHECK_THROWS_AS(qcast::kernels::finite_amax(x.data(), -1), std::invalid_argument);
}

TEST_CASE("a given tensor amax equal to the measured one changes nothing; another one changes s_t") {
  const qcast::Shape shape{64, 128};
  const std::vector<float> x = qcast_test::scaled_normal_rows(64, 128, 5);
  const qcast::Format f = qcast::parse_format("nvfp4");
  const qcast::Encoded measured = qcast::kernels::encode(x.data(), shape, f);
  qcast::CastOptions o;
  o.tensor_amax = qcast::kernels::finite_amax(x.data(), std::int64_t(x.size()));  // as a calibration would
  const qcast::Encoded given = qcast::kernels::encode(x.data(), shape, f, o);
  CHECK(given.codes == measured.codes);
  CHECK(given.scales == measured.scales);
  CHECK(given.tensor_scale == measured.tensor_scale);
  std::vector<float> a(x.size()), b(x.size());
  qcast::kernels::cast(x.data(), a.data(), shape, f);
  qcast::kernels::cast(x.data(), b.data(), shape, f, o);
  CHECK(differing_bits(a, b) == 0);
  o.tensor_amax = finite_amax(x) * 2.0f;
  const qcast::Encoded doubled = qcast::kernels::encode(x.data(), shape, f, o);
  CHECK(doubled.tensor_scale == qcast::tensor_scale_of(f, *o.tensor_amax));
  CHECK(doubled.scales != measured.scales);
}

TEST_CASE("a tensor amax that is not finite and positive, or given to a one-level format, is an error") {
  const std::vector<float> x(64, 1.0f);
  std::vector<float> out(64);
  for (const float bad : {0.0f, -1.0f, std::numeric_limits<float>::infinity(), std::numeric_limits<float>::quiet_NaN()}) {
    qcast::CastOptions o;
    o.tensor_amax = bad;
    INFO(bad);
    const auto nvfp4 = qcast::parse_format("nvfp4");
    CHECK_THROWS_WITH(qcast::cast(x.data(), out.data(), {64}, nvfp4, o), Catch::Matchers::Contains("finite and > 0"));
    CHECK_THROWS_WITH(qcast::kernels::cast(x.data(), out.data(), {64}, nvfp4, o),
                      Catch::Matchers::Contains("finite and > 0"));
    CHECK_THROWS_WITH(qcast::kernels::encode(x.data(), {64}, nvfp4, o), Catch::Matchers::Contains("finite and > 0"));
  }
  {  // so small a given amax that amax / 2688 is subnormal: s_t is floored at 2^-128, the values
     // saturate (they lie far above the given amax), a zero element stays 0 - no 0 / 0
    std::vector<float> y(64, 1e-3f);
    y[5] = 0.0f;
    qcast::CastOptions o;
    o.tensor_amax = 1e-42f;
    const auto nvfp4 = qcast::parse_format("nvfp4");
    const qcast::Encoded ref = qcast::encode(y.data(), {64}, nvfp4, o);
    CHECK(ref.tensor_scale == 0x1p-128f);
    const qcast::Encoded got = qcast::kernels::encode(y.data(), {64}, nvfp4, o);
    CHECK(got.codes == ref.codes);
    CHECK(got.scales == ref.scales);
    std::vector<float> z(64);
    qcast::kernels::cast(y.data(), z.data(), {64}, nvfp4, o);
    CHECK(z[5] == 0.0f);
    CHECK(z[0] == 6.0f * 448.0f * 0x1p-128f);  // saturated: max_elem * max_scale * s_t
  }
  qcast::CastOptions o;
  o.tensor_amax = 1.0f;
  for (const char* name : {"mxfp4", "fp8_e4m3", "int8@channel", "fp4_e2m1@g16:scale=ue4m3"}) {
    INFO(name);
    const auto f = qcast::parse_format(name);
    CHECK_THROWS_WITH(qcast::cast(x.data(), out.data(), {8, 8}, f, o), Catch::Matchers::Contains("no tensor scale"));
    CHECK_THROWS_WITH(qcast::kernels::cast(x.data(), out.data(), {8, 8}, f, o),
                      Catch::Matchers::Contains("no tensor scale"));
    CHECK_THROWS_WITH(qcast::kernels::encode(x.data(), {8, 8}, f, o), Catch::Matchers::Contains("no tensor scale"));
    std::vector<std::uint16_t> x16(64, 0x3F80), out16(64);
    CHECK_THROWS_WITH(qcast::kernels::cast(x16.data(), out16.data(), qcast::DType::bf16, {8, 8}, f, o),
                      Catch::Matchers::Contains("no tensor scale"));
  }
}
