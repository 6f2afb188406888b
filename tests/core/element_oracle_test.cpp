// Direct element casts against the oracle: every fp16 and bf16 bit pattern, every tie and
// boundary of each format's grid, special values, and random binary32 across all exponents.
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "bits.hpp"
#include "oracle.hpp"
#include "qcast/cast.hpp"

using qcast_test::bits;
using qcast_test::from_bits;
using qcast_test::same;

namespace {

struct Case {
  const char* name;
  oracle::Minifloat spec;
};

const std::vector<Case>& cases() {
  static const std::vector<Case> c = {
      {"fp8_e4m3", oracle::e4m3()},         {"fp8_e5m2", oracle::e5m2()}, {"fp8_e4m3fnuz", oracle::e4m3fnuz()},
      {"fp8_e5m2fnuz", oracle::e5m2fnuz()}, {"fp6_e2m3", oracle::e2m3()}, {"fp6_e3m2", oracle::e3m2()},
      {"fp4_e2m1", oracle::e2m1()},
  };
  return c;
}

std::vector<float> all_fp16() {
  const oracle::Minifloat half{5, 10, 15, oracle::Policy::ieee};
  std::vector<float> v;
  for (std::uint32_t c = 0; c < 65536; ++c) v.push_back(float(oracle::decode(half, c)));
  return v;
}

std::vector<float> all_bf16() {
  std::vector<float> v;
  for (std::uint32_t c = 0; c < 65536; ++c) v.push_back(from_bits(c << 16));
  return v;
}

// Each grid point, each midpoint between neighbours and the floats either side of both, signed.
std::vector<float> ties_and_boundaries(const oracle::Minifloat& f) {
  std::vector<float> v;
  const auto t = oracle::value_table(f);
  auto add = [&](float x) {
    for (float y : {x, std::nextafter(x, INFINITY), std::nextafter(x, -INFINITY)}) {
      v.push_back(y);
      v.push_back(-y);
    }
  };
  for (std::size_t i = 0; i < t.size(); ++i) {
    add(float(t[i].value));
    if (i + 1 < t.size()) add(float((t[i].value + t[i + 1].value) / 2));
  }
  const double max = t.back().value;
  const double ulp_top = max - t[t.size() - 2].value;
  for (double x : {max + ulp_top / 2, max + ulp_top, 2 * max, 1e30, double(std::numeric_limits<float>::max())})
    add(float(x));
  for (float x : {INFINITY, -INFINITY, std::numeric_limits<float>::quiet_NaN(), 0.0f, -0.0f,
                  std::numeric_limits<float>::denorm_min(), std::numeric_limits<float>::min()})
    v.push_back(x);
  return v;
}

std::vector<float> random_floats(std::size_t n, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<float> v(n);
  for (auto& x : v) x = from_bits(rng());  // uniform over bit patterns: every exponent equally
  return v;
}

void check_against_oracle(const Case& c, const std::vector<float>& in, oracle::Mode mode = oracle::Mode::even) {
  qcast::CastOptions o;
  o.rounding = mode == oracle::Mode::even ? qcast::Rounding::nearest_even
               : mode == oracle::Mode::away ? qcast::Rounding::nearest_away
                                            : qcast::Rounding::toward_zero;
  std::vector<float> out(in.size());
  qcast::cast(in.data(), out.data(), {std::int64_t(in.size())}, qcast::parse_format(c.name), o);
  std::size_t bad = 0;
  std::string first;
  for (std::size_t i = 0; i < in.size(); ++i) {
    const float want = float(oracle::cast(c.spec, double(in[i]), mode));
    if (!same(out[i], want)) {
      if (!bad++) first = qcast_test::describe(in[i], out[i], want);
    }
  }
  INFO(c.name << ": " << bad << " mismatches of " << in.size() << "; first: " << first);
  CHECK(bad == 0);
}

}  // namespace

TEST_CASE("direct casts match the oracle on every fp16 bit pattern") {
  const auto in = all_fp16();
  for (const auto& c : cases()) check_against_oracle(c, in);
}

TEST_CASE("direct casts match the oracle on every bf16 bit pattern") {
  const auto in = all_bf16();
  for (const auto& c : cases()) check_against_oracle(c, in);
}

TEST_CASE("direct casts match the oracle at every tie, boundary and special value") {
  for (const auto& c : cases()) check_against_oracle(c, ties_and_boundaries(c.spec));
}

TEST_CASE("direct casts match the oracle on random binary32 of every magnitude") {
  for (const auto& c : cases()) check_against_oracle(c, random_floats(300000, 7));
}

TEST_CASE("ties-away and toward-zero rounding match the oracle") {
  for (const auto& c : cases()) {
    auto in = ties_and_boundaries(c.spec);
    const auto r = random_floats(50000, 11);
    in.insert(in.end(), r.begin(), r.end());
    check_against_oracle(c, in, oracle::Mode::away);
    check_against_oracle(c, in, oracle::Mode::zero);
  }
}

TEST_CASE("every code decodes to the oracle's value") {
  for (const auto& c : cases()) {
    const qcast::ElementFormat e = qcast::parse_format(c.name).element;
    for (std::uint32_t code = 0; code < (1u << e.bits()); ++code) {
      const float got = qcast::decode_element(e, code);
      const float want = float(oracle::decode(c.spec, code));
      INFO(c.name << " code 0x" << std::hex << code);
      CHECK(same(got, want));
    }
  }
}

TEST_CASE("NaN outputs are the canonical quiet NaN") {
  const float nan_in[] = {std::numeric_limits<float>::quiet_NaN(), -std::numeric_limits<float>::quiet_NaN(),
                          from_bits(0x7F800001u)};
  for (const char* name : {"fp8_e4m3", "fp4_e2m1", "mxfp4", "nvfp4", "int8"}) {
    float out[3];
    qcast::cast(nan_in, out, {3}, qcast::parse_format(name));
    for (float v : out) CHECK(bits(v) == 0x7FC00000u);
  }
}

TEST_CASE("documented extremes of the named element formats") {
  CHECK(qcast::elements::fp8_e4m3.max_value() == 448.0);
  CHECK(qcast::elements::fp8_e5m2.max_value() == 57344.0);
  CHECK(qcast::elements::fp8_e4m3fnuz.max_value() == 240.0);
  CHECK(qcast::elements::fp8_e5m2fnuz.max_value() == 57344.0);
  CHECK(qcast::elements::fp6_e2m3.max_value() == 7.5);
  CHECK(qcast::elements::fp6_e3m2.max_value() == 28.0);
  CHECK(qcast::elements::fp4_e2m1.max_value() == 6.0);
  CHECK(qcast::elements::fp8_e4m3.min_subnormal() == std::ldexp(1.0, -9));
  CHECK(qcast::elements::e8m0.max_value() == std::ldexp(1.0, 127));
  CHECK(qcast::elements::e8m0.min_normal() == std::ldexp(1.0, -127));
  CHECK(qcast::elements::mxint8_element.max_value() == 127.0 / 64);
  for (const auto& c : cases()) CHECK(qcast::parse_format(c.name).element.max_value() == oracle::max_value(c.spec));
}
