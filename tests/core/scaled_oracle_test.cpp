// Scaled formats (MX, NVFP4, INT) against the oracle on matrices with partial, zero, NaN, Inf,
// subnormal and huge blocks, and the axis handling of channel/block formats.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "bits.hpp"
#include "oracle.hpp"
#include "qcast/cast.hpp"

using qcast_test::same;

namespace {

// Row-major rows x cols values whose magnitude changes from block to block (blocks of 8, so that
// 16- and 32-element blocks see mixed magnitudes), with special blocks planted.
std::vector<float> test_matrix(int rows, int cols, std::uint32_t seed, bool specials) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_int_distribution<int> exponent(-140, 126);
  std::uniform_int_distribution<int> kind(0, 19);
  std::vector<float> x(std::size_t(rows) * cols);
  for (int r = 0; r < rows; ++r)
    for (int b = 0; b < cols; b += 8) {
      const int k = specials ? kind(rng) : 10;
      const float mag = std::ldexp(1.0f, exponent(rng) / (k == 9 ? 1 : 4));
      for (int c = b; c < std::min(cols, b + 8); ++c) {
        float v = normal(rng) * mag;
        if (k == 0) v = (c % 3 == 0) ? -0.0f : 0.0f;                                           // zero block
        if (k == 1 && c == b) v = std::numeric_limits<float>::quiet_NaN();                      // NaN block
        if (k == 2 && c == b + 1) v = (rng() & 1) ? INFINITY : -INFINITY;                       // Inf block
        if (k == 3) v = std::ldexp(normal(rng), -135);                                          // subnormals
        if (k == 4) v = normal(rng) * 1e38f;                                                    // near FLT_MAX
        if (k == 5 && c == b) v = std::numeric_limits<float>::max();
        x[std::size_t(r) * cols + c] = v;
      }
    }
  return x;
}

void compare(const std::string& name, int rows, int cols, const std::vector<float>& x, const std::vector<float>& want,
             const qcast::CastOptions& options = {}) {
  std::vector<float> got(x.size());
  qcast::cast(x.data(), got.data(), {rows, cols}, qcast::parse_format(name), options);
  std::size_t bad = 0;
  std::string first;
  for (std::size_t i = 0; i < x.size(); ++i)
    if (!same(got[i], want[i]) && !bad++) first = "index " + std::to_string(i) + ": " + qcast_test::describe(x[i], got[i], want[i]);
  INFO(name << " " << rows << "x" << cols << ": " << bad << " mismatches; first: " << first);
  CHECK(bad == 0);
}

using OracleFn = std::function<std::vector<float>(const std::vector<float>&, int, int)>;

void sweep(const std::string& name, const OracleFn& oracle_fn) {
  std::uint32_t seed = 1;
  for (int cols : {1, 5, 16, 17, 31, 32, 33, 48, 70, 100, 256}) {
    for (bool specials : {false, true}) {
      const int rows = 37;
      const auto x = test_matrix(rows, cols, seed++, specials);
      compare(name, rows, cols, x, oracle_fn(x, rows, cols));
    }
  }
}

}  // namespace

TEST_CASE("MX formats match the oracle") {
  sweep("mxfp8_e4m3", [](auto& x, int r, int c) { return oracle::mx(x, r, c, oracle::e4m3()); });
  sweep("mxfp8_e5m2", [](auto& x, int r, int c) { return oracle::mx(x, r, c, oracle::e5m2()); });
  sweep("mxfp6_e2m3", [](auto& x, int r, int c) { return oracle::mx(x, r, c, oracle::e2m3()); });
  sweep("mxfp6_e3m2", [](auto& x, int r, int c) { return oracle::mx(x, r, c, oracle::e3m2()); });
  sweep("mxfp4", [](auto& x, int r, int c) { return oracle::mx(x, r, c, oracle::e2m1()); });
  sweep("mxint8", [](auto& x, int r, int c) { return oracle::mxint8(x, r, c); });
}

TEST_CASE("NVFP4 matches the oracle") {
  sweep("nvfp4", [](auto& x, int r, int c) { return oracle::nvfp4(x, r, c); });
  // A tensor of zeros (amax_t == 0) passes through, NaN blocks still become NaN.
  std::vector<float> z = {0.0f, -0.0f, 0.0f, -0.0f};
  compare("nvfp4", 1, 4, z, oracle::nvfp4(z, 1, 4));
  std::vector<float> zn(32, -0.0f);
  zn[20] = std::numeric_limits<float>::quiet_NaN();
  compare("nvfp4", 1, 32, zn, oracle::nvfp4(zn, 1, 32));
  // A block far below the tensor amax: its e4m3 scale rounds to zero and it outputs signed zeros.
  std::vector<float> tiny(32, 1e-12f);
  tiny[0] = 1e6f;
  tiny[20] = -1e-12f;
  compare("nvfp4", 1, 32, tiny, oracle::nvfp4(tiny, 1, 32));
}

TEST_CASE("NVFP4 of a vanishing tensor is finite and matches the oracle (s_t >= 2^-128)") {
  // amax_t down to the smallest subnormal: amax_t / 2688 is subnormal or 0 in binary32; the recipe
  // clamps the encode scale to FLT_MAX, so s_t is at least 2^-128, and no output is NaN.
  const float tiny = std::numeric_limits<float>::denorm_min();
  for (const float amax : {tiny, tiny * 3.0f, 4.2e-45f, tiny * 1000.0f, 1e-40f, 1e-38f, 3e-35f, 1e-34f}) {
    std::vector<float> x(64);
    for (std::size_t i = 0; i < x.size(); ++i) x[i] = amax * float(int(i % 7) - 3) / 3.0f;  // 0, ±amax/3, ±amax
    x[5] = -0.0f;
    INFO("amax " << amax);
    const auto expected = oracle::nvfp4(x, 2, 32);
    for (float v : expected) CHECK(!std::isnan(v));
    compare("nvfp4", 2, 32, x, expected);
    qcast::CastOptions o;  // the same amax given as a calibrated tensor amax
    o.tensor_amax = amax;
    compare("nvfp4", 2, 32, x, oracle::nvfp4(x, 2, 32, amax), o);
  }
}

TEST_CASE("NVFP4 with a given (static) tensor amax matches the oracle") {
  // amax_t from calibration rather than from the tensor: below the tensor's own, block scales
  // saturate at 448 and elements at 6; above it, small blocks' scales round to 0.
  std::uint32_t seed = 100;
  for (int cols : {16, 17, 48, 100}) {
    for (bool specials : {false, true}) {
      const int rows = 29;
      const auto x = test_matrix(rows, cols, seed++, specials);
      float measured = 0.0f;
      for (float v : x)
        if (std::isfinite(v)) measured = std::max(measured, std::fabs(v));
      for (const float amax : {measured, measured * 0x1p-30f, measured * 0.3f, measured * 7.0f, 1.0f, 1e-30f,
                               std::numeric_limits<float>::max(), std::numeric_limits<float>::denorm_min() * 77.0f}) {
        if (!std::isfinite(amax)) continue;  // measured * 7 past FLT_MAX
        INFO("given amax_t " << amax << ", measured " << measured);
        qcast::CastOptions o;
        o.tensor_amax = amax;
        compare("nvfp4", rows, cols, x, oracle::nvfp4(x, rows, cols, amax), o);
      }
    }
  }
}

TEST_CASE("NVINT4 matches the oracle, with a measured and a given tensor amax") {
  sweep("nvint4", [](auto& x, int r, int c) { return oracle::nvint4(x, r, c); });
  std::uint32_t seed = 200;
  for (int cols : {16, 33, 100}) {
    for (bool specials : {false, true}) {
      const int rows = 23;
      const auto x = test_matrix(rows, cols, seed++, specials);
      float measured = 0.0f;
      for (float v : x)
        if (std::isfinite(v)) measured = std::max(measured, std::fabs(v));
      for (const float amax : {measured, measured * 0.3f, measured * 5.0f, 1e-30f}) {
        if (!std::isfinite(amax)) continue;
        INFO("given amax_t " << amax);
        qcast::CastOptions o;
        o.tensor_amax = amax;
        compare("nvint4", rows, cols, x, oracle::nvint4(x, rows, cols, amax), o);
      }
    }
  }
  // A zero tensor passes through; a block far below the tensor amax gives signed zeros.
  std::vector<float> tiny(32, 1e-12f);
  tiny[0] = 1e6f;
  tiny[20] = -1e-12f;
  compare("nvint4", 1, 32, tiny, oracle::nvint4(tiny, 1, 32));
}

TEST_CASE("scaled integers match the oracle") {
  for (int bits = 2; bits <= 8; ++bits) {
    const std::string n = "int" + std::to_string(bits);
    sweep(n, [bits](auto& x, int r, int c) { return oracle::intq(x, r, c, bits, 0); });
    sweep(n + "@channel", [bits](auto& x, int r, int c) { return oracle::intq(x, r, c, bits, -1); });
    for (int g : {16, 32, 128})
      sweep(n + "@g" + std::to_string(g), [bits, g](auto& x, int r, int c) { return oracle::intq(x, r, c, bits, g); });
  }
}

TEST_CASE("a block along another axis equals the same block along the last axis of the transpose") {
  const int rows = 70, cols = 9;
  const auto x = test_matrix(rows, cols, 99, true);
  std::vector<float> xt(x.size());
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < cols; ++c) xt[std::size_t(c) * rows + r] = x[std::size_t(r) * cols + c];
  for (const char* name : {"mxfp4", "nvfp4", "int4@g32", "mxint8"}) {
    qcast::Format along_rows = qcast::parse_format(name);
    along_rows.axis = 0;
    std::vector<float> got(x.size()), want_t(x.size());
    qcast::cast(x.data(), got.data(), {rows, cols}, along_rows);
    qcast::cast(xt.data(), want_t.data(), {cols, rows}, qcast::parse_format(name));
    std::size_t bad = 0;
    for (int r = 0; r < rows; ++r)
      for (int c = 0; c < cols; ++c) bad += !same(got[std::size_t(r) * cols + c], want_t[std::size_t(c) * rows + r]);
    INFO(name);
    CHECK(bad == 0);
  }
}

TEST_CASE("channel scaling uses axis 0 over all other axes of a rank-4 weight") {
  const int o = 6, i = 3, kh = 3, kw = 3;
  const auto x = test_matrix(o, i * kh * kw, 5, false);
  std::vector<float> a(x.size()), b(x.size());
  qcast::cast(x.data(), a.data(), {o, i, kh, kw}, qcast::parse_format("int4@channel"));
  const auto want = oracle::intq(x, o, i * kh * kw, 4, -1);
  std::size_t bad = 0;
  for (std::size_t k = 0; k < x.size(); ++k) bad += !same(a[k], want[k]);
  CHECK(bad == 0);
}

TEST_CASE("axis errors name the axis and the valid range") {
  std::vector<float> x(6), y(6);
  qcast::Format f = qcast::parse_format("mxfp4");
  f.axis = 2;
  try {
    qcast::cast(x.data(), y.data(), {2, 3}, f);
    FAIL("no exception");
  } catch (const std::invalid_argument& e) {
    CHECK(std::string(e.what()).find("axis 2 is out of range for a tensor of rank 2 (valid: -2..1)") != std::string::npos);
  }
}

TEST_CASE("empty tensors and scalars") {
  std::vector<float> none;
  qcast::cast(none.data(), none.data(), {0, 32}, qcast::parse_format("mxfp4"));
  float s = 3.3f, out = 0;
  qcast::cast(&s, &out, {}, qcast::parse_format("mxfp4"));
  CHECK(out == 3.0f);
  qcast::cast(&s, &out, {}, qcast::parse_format("int8"));
  CHECK(same(out, oracle::intq({s}, 1, 1, 8, 0)[0]));
}
