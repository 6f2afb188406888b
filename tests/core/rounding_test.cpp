// Stochastic rounding: always one of the two neighbours, unbiased on average, a pure function of
// (seed, element index).
#include <catch2/catch.hpp>

#include <cmath>
#include <random>
#include <vector>

#include "bits.hpp"
#include "oracle.hpp"
#include "qcast/cast.hpp"

namespace {
qcast::CastOptions stochastic(std::uint64_t seed) {
  qcast::CastOptions o;
  o.rounding = qcast::Rounding::stochastic;
  o.seed = seed;
  return o;
}
}  // namespace

TEST_CASE("stochastic rounding picks a neighbour on the oracle's grid") {
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> u(-500.0f, 500.0f);
  std::vector<float> x(20000);
  for (auto& v : x) v = u(rng);
  for (auto [name, spec] : {std::pair{"fp8_e4m3", oracle::e4m3()}, std::pair{"fp8_e5m2", oracle::e5m2()},
                            std::pair{"fp4_e2m1", oracle::e2m1()}}) {
    std::vector<float> y(x.size());
    qcast::cast(x.data(), y.data(), {std::int64_t(x.size())}, qcast::parse_format(name), stochastic(42));
    std::size_t bad = 0;
    for (std::size_t i = 0; i < x.size(); ++i) {
      double lo, hi;
      oracle::neighbours(spec, x[i], lo, hi);
      bad += !(y[i] == float(lo) || y[i] == float(hi));
    }
    INFO(name);
    CHECK(bad == 0);
  }
}

TEST_CASE("stochastic rounding is unbiased") {
  // 1.3 lies between fp4 grid points 1.0 and 1.5: P(up) = 0.6, so the mean is 1.3.
  const std::size_t n = 200000;
  std::vector<float> x(n, 1.3f), y(n);
  qcast::cast(x.data(), y.data(), {std::int64_t(n)}, qcast::parse_format("fp4_e2m1"), stochastic(7));
  double sum = 0;
  for (float v : y) {
    REQUIRE((v == 1.0f || v == 1.5f));
    sum += v;
  }
  // Standard error of the mean: 0.5 * sqrt(0.24 / n) ~ 5.5e-4; allow 5 sigma.
  CHECK(std::fabs(sum / n - 1.3) < 2.8e-3);
}

TEST_CASE("stochastic rounding depends on the seed and the element index only") {
  std::vector<float> x(4096);
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = 0.1f * float(i % 97) - 3.0f;
  std::vector<float> a(x.size()), b(x.size()), c(x.size());
  const auto f = qcast::parse_format("mxfp4");
  qcast::cast(x.data(), a.data(), {64, 64}, f, stochastic(5));
  qcast::cast(x.data(), b.data(), {64, 64}, f, stochastic(5));
  qcast::cast(x.data(), c.data(), {64, 64}, f, stochastic(6));
  CHECK(a == b);
  CHECK(a != c);
  // The second half alone, cast as its own tensor, differs only through the index offset; cast
  // with the same indices (the whole tensor) it is identical: no hidden state between calls.
  std::vector<float> again(x.size());
  qcast::cast(x.data(), again.data(), {64, 64}, f, stochastic(5));
  CHECK(again == a);
}

TEST_CASE("no-saturate overflow follows each format's specials") {
  qcast::CastOptions o;
  o.saturate = false;
  auto one = [&](const char* name, float x) {
    float y;
    qcast::cast(&x, &y, {1}, qcast::parse_format(name), o);
    return y;
  };
  CHECK(std::isinf(one("fp8_e5m2", 1e6f)));
  CHECK(std::isinf(one("fp8_e5m2", INFINITY)));
  CHECK(one("fp8_e5m2", 57344.0f + 4095.0f) == 57344.0f);  // below the midpoint to 2^16
  CHECK(std::isinf(one("fp8_e5m2", 57344.0f + 4096.0f)));  // the tie goes to the even code: Inf
  CHECK(std::isnan(one("fp8_e4m3", 470.0f)));              // rounds to 480, which is the NaN code
  CHECK(one("fp8_e4m3", 463.0f) == 448.0f);
  CHECK(std::isnan(one("fp8_e4m3", INFINITY)));
  CHECK(one("fp4_e2m1", 100.0f) == 6.0f);                  // no specials: clamps regardless
  o.rounding = qcast::Rounding::toward_zero;
  CHECK(one("fp8_e5m2", 1e9f) == 57344.0f);                // IEEE: truncation never overflows
}
