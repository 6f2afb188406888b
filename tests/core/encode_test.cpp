// decode(encode(x)) == cast(x) for every format, and the sizes of what encode stores.
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <random>

#include "bits.hpp"
#include "oracle.hpp"
#include "qcast/cast.hpp"

using qcast_test::same;

namespace {
std::vector<float> values(std::size_t n, std::uint32_t seed, bool with_nan) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  std::vector<float> x(n);
  for (std::size_t i = 0; i < n; ++i) x[i] = normal(rng) * std::ldexp(1.0f, int(i / 32 % 40) - 20);
  for (std::size_t i = 64; i < 96 && i < n; ++i) x[i] = (i % 2) ? -0.0f : 0.0f;  // a zero block
  if (with_nan && n > 200) x[200] = std::numeric_limits<float>::quiet_NaN();
  if (with_nan && n > 300) x[300] = -INFINITY;
  return x;
}
}  // namespace

TEST_CASE("decode(encode(x)) equals cast(x) bit for bit") {
  for (const auto& named : qcast::named_formats()) {
    const qcast::Format& f = named.format;
    const bool nan_ok = f.is_scaled() || f.element.has_nan();
    for (bool stochastic : {false, true}) {
      qcast::CastOptions o;
      if (stochastic) o.rounding = qcast::Rounding::stochastic, o.seed = 9;
      const auto x = values(24 * 37, 4, nan_ok);
      const qcast::Shape shape{24, 37};
      std::vector<float> c(x.size()), d(x.size());
      qcast::cast(x.data(), c.data(), shape, f, o);
      const qcast::Encoded e = qcast::encode(x.data(), shape, f, o);
      qcast::decode(e, d.data());
      std::size_t bad = 0;
      for (std::size_t i = 0; i < x.size(); ++i) {
        // Documented exception: integer codes have no -0.
        const bool int_zero = f.element.kind == qcast::ElementKind::integer && c[i] == 0.0f && d[i] == 0.0f;
        bad += !(same(c[i], d[i]) || int_zero);
      }
      INFO(named.name << (stochastic ? " stochastic" : ""));
      CHECK(bad == 0);
      CHECK(e.codes.size() == (x.size() * f.element.bits() + 7) / 8);
    }
  }
}

TEST_CASE("encoded sizes: mxfp4 stores 4-bit codes and one e8m0 byte per 32 elements") {
  std::vector<float> x(64 * 70, 1.0f);
  const auto e = qcast::encode(x.data(), {64, 70}, qcast::parse_format("mxfp4"));
  CHECK(e.codes.size() == 64 * 70 / 2);
  CHECK(e.scales.size() == 64 * 3);  // 70 = 32 + 32 + 6
  const auto n = qcast::encode(x.data(), {64, 70}, qcast::parse_format("nvfp4"));
  CHECK(n.scales.size() == 64 * 5);
  CHECK(n.tensor_scale == 1.0f / 2688.0f);
}

TEST_CASE("mxfp4 codes and scales of a known block") {
  // amax 6 -> shared exponent floor(log2 6) - 2 = 0: codes are the fp4 values themselves.
  std::vector<float> x = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f, -0.5f, -6.0f};
  const auto e = qcast::encode(x.data(), {10}, qcast::parse_format("mxfp4"));
  CHECK(e.scales == std::vector<std::uint8_t>{127});
  CHECK(qcast::unpack_codes(e.codes, 10, 4) == std::vector<std::uint32_t>{0, 1, 2, 3, 4, 5, 6, 7, 9, 15});
}

TEST_CASE("a direct cast to a format without NaN cannot encode NaN") {
  float x[2] = {1.0f, std::numeric_limits<float>::quiet_NaN()};
  CHECK_THROWS_WITH(qcast::encode(x, {2}, qcast::parse_format("fp4_e2m1")),
                    Catch::Contains("element 1 is NaN, which fp4_e2m1 cannot encode"));
}

TEST_CASE("decode rejects truncated buffers") {
  std::vector<float> x(64, 1.0f), y(64);
  auto e = qcast::encode(x.data(), {64}, qcast::parse_format("mxfp4"));
  e.scales.pop_back();
  CHECK_THROWS_WITH(qcast::decode(e, y.data()), Catch::Contains("2 groups need 2"));
}
