// The compiled kernels against the reference on randomly drawn cases: a format from the generic
// grammar (element, granularity, scale, rule, axis), a shape of rank 1-4 with many dimensions of
// size 1, values over a random binade with NaN, Inf, zeros and subnormals, a rounding mode and
// overflow policy, a thread count. Each case compares cast (float32 and bfloat16), encode (codes,
// scales, tensor scale, shape, format, or the same exception message) and decode. The draws are
// fixed by the seed, so a failure names a reproducible case. A longer run of the same comparison
// (about 10^4 cases, dimensions up to 70) found three mismatches that the targeted tests had
// missed: nearest_away one binary32 step below the first tie, a 4-bit code spilling into its
// neighbour from a NaN column, a two-level divisor rounding to zero; a later run (int formats to
// 16 bits, blocks of 1 to 128, 16-bit casts) a fourth: binary32 block scales past FLT_MAX left
// unsaturated in the cast. Each now has a targeted test (codec_kernels_test.cpp); these 2000
// cases catch the third at once, the others are too rare for them.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "qcast/cast.hpp"
#include "qcast/format_names.hpp"
#include "qcast/kernels.hpp"

namespace {

bool same(float a, float b) {
  std::uint32_t x, y;
  std::memcpy(&x, &a, 4);
  std::memcpy(&y, &b, 4);
  return x == y || (std::isnan(a) && std::isnan(b));
}

struct RandomCase {
  std::string format;
  qcast::Shape shape;
  std::vector<float> values;
  qcast::CastOptions options;
  int threads = 1;
};

// Draws cases until one names a valid format (about one in three does).
RandomCase draw_case(std::mt19937& rng) {
  static const char* const elements[] = {"e2m1",  "e3m2", "e2m3", "e4m3",   "e5m2",     "e4m3fn", "e4m3fnuz",
                                         "int4",  "int8", "int3", "int6",   "int8f6",   "e3m4",   "e2m1nosp",
                                         "uint4", "bf16", "fp16", "e5m2b11", "e5m2fnuz", "int4f3", "e4m3fnb16"};
  static const char* const granularities[] = {"",     "@tensor", "@channel",    "@g16",        "@g32",
                                              "@g8",  "@g24",    "@g16+tensor", "@g32+tensor", "@none"};
  static const char* const scales[] = {"", ":scale=e8m0", ":scale=ue4m3", ":scale=fp32", ":scale=e5m2", ":scale=bf16"};
  static const char* const rules[] = {"", "", ":rule=floor", ":rule=ceil", ":rule=rceil", ":rule=even", ":rule=amax"};
  auto pick = [&](std::size_t n) { return std::size_t(rng() % n); };
  for (;;) {
    RandomCase c;
    c.format = std::string(elements[pick(std::size(elements))]) + granularities[pick(std::size(granularities))];
    const bool grouped = c.format.find('@') != std::string::npos && c.format.find("@none") == std::string::npos;
    if (grouped) c.format += std::string(scales[pick(std::size(scales))]) + rules[pick(std::size(rules))];
    const int rank = 1 + int(pick(4));
    std::int64_t n = 1;
    for (int i = 0; i < rank; ++i) {
      c.shape.push_back(pick(3) == 0 ? 1 : 1 + std::int64_t(pick(40)));
      n *= c.shape.back();
    }
    if (c.format.find("@channel") != std::string::npos || c.format.find("@g") != std::string::npos)
      c.format += ":axis=" + std::to_string(int(pick(std::size_t(2 * rank))) - rank);
    try {
      qcast::detail::check_format(qcast::parse_format(c.format));
    } catch (const std::exception&) {
      continue;
    }
    std::normal_distribution<float> normal;
    const float magnitude = std::ldexp(1.0f, int(pick(60)) - 30);
    const bool specials = pick(3) != 0;
    c.values.resize(std::size_t(n));
    for (auto& v : c.values) {
      switch (pick(200)) {
        case 0: v = specials ? NAN : 1.0f; break;
        case 1: v = specials ? INFINITY : -1.0f; break;
        case 2: v = specials ? -INFINITY : 2.0f; break;
        case 3: v = 0.0f; break;
        case 4: v = -0.0f; break;
        case 5: v = std::ldexp(1.0f, -140); break;
        default: v = normal(rng) * magnitude;
      }
    }
    const std::size_t mode = pick(5);
    c.options.rounding = mode == 0   ? qcast::Rounding::stochastic
                         : mode == 1 ? qcast::Rounding::toward_zero
                         : mode == 2 ? qcast::Rounding::nearest_away
                                     : qcast::Rounding::nearest_even;
    c.options.seed = rng();
    if (pick(3) == 0) c.options.saturate = pick(2) == 0;
    if (c.format.find("+tensor") != std::string::npos && pick(2) == 0) {  // a static tensor amax
      float amax = 0.0f;
      for (float v : c.values)
        if (std::isfinite(v)) amax = std::max(amax, std::fabs(v));
      c.options.tensor_amax = amax > 0.0f && pick(4) != 0 ? std::ldexp(amax, int(pick(41)) - 20) : magnitude;
    }
    c.threads = 1 + int(pick(3));
    return c;
  }
}

// The reference's exception message, or "" where it returns.
template <class Fn>
std::string error_of(Fn&& fn) {
  try {
    fn();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("kernels equal the reference on random formats, layouts, values and options") {
  std::mt19937 rng(20261123);
  const int cases = 2000;
  for (int k = 0; k < cases; ++k) {
    const RandomCase c = draw_case(rng);
    const qcast::Format f = qcast::parse_format(c.format);
    const std::size_t n = c.values.size();
    std::string shape;
    for (auto d : c.shape) shape += std::to_string(d) + " ";
    INFO("case " << k << ": " << c.format << ", shape " << shape << ", rounding " << int(c.options.rounding)
                 << ", saturate " << (c.options.saturate ? int(*c.options.saturate) : -1) << ", tensor_amax "
                 << c.options.tensor_amax.value_or(-1.0f) << ", threads "
                 << c.threads);
    // Cast, float32.
    std::vector<float> ref(n), got(n);
    const std::string ref_cast_error =
        error_of([&] { qcast::cast(c.values.data(), ref.data(), c.shape, f, c.options); });
    const std::string got_cast_error =
        error_of([&] { qcast::kernels::cast(c.values.data(), got.data(), c.shape, f, c.options, c.threads); });
    REQUIRE(got_cast_error == ref_cast_error);
    std::size_t bad = 0;
    if (ref_cast_error.empty())
      for (std::size_t i = 0; i < n; ++i) bad += !same(ref[i], got[i]);
    CHECK(bad == 0);
    // Cast, bfloat16.
    std::vector<std::uint16_t> x16(n), ref16(n), got16(n);
    for (std::size_t i = 0; i < n; ++i) x16[i] = qcast::narrow(qcast::DType::bf16, c.values[i]);
    const std::string ref16_error = error_of(
        [&] { qcast::cast(x16.data(), ref16.data(), qcast::DType::bf16, c.shape, f, c.options); });
    const std::string got16_error = error_of([&] {
      qcast::kernels::cast(x16.data(), got16.data(), qcast::DType::bf16, c.shape, f, c.options, c.threads);
    });
    REQUIRE(got16_error == ref16_error);
    CHECK(ref16 == got16);
    // Encode and decode.
    qcast::Encoded ref_e, got_e;
    const std::string ref_encode_error =
        error_of([&] { ref_e = qcast::encode(c.values.data(), c.shape, f, c.options); });
    const std::string got_encode_error =
        error_of([&] { got_e = qcast::kernels::encode(c.values.data(), c.shape, f, c.options, c.threads); });
    REQUIRE(got_encode_error == ref_encode_error);
    if (!ref_encode_error.empty()) continue;
    CHECK(got_e.codes == ref_e.codes);
    CHECK(got_e.scales == ref_e.scales);
    CHECK(same(got_e.tensor_scale, ref_e.tensor_scale));
    CHECK(got_e.shape == ref_e.shape);
    CHECK(got_e.format == ref_e.format);
    std::vector<float> ref_out(n), got_out(n);
    qcast::decode(ref_e, ref_out.data());
    qcast::kernels::decode(ref_e, got_out.data(), c.threads);
    bad = 0;
    for (std::size_t i = 0; i < n; ++i) bad += !same(ref_out[i], got_out[i]);
    CHECK(bad == 0);
  }
}
