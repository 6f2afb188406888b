// Test inputs shared by the kernel tests: rows of normal samples, each row at its own power-of-two
// magnitude (2^-30 .. 2^30), so that blocks and channels see very different scales. Each test adds
// its own special values on top.
#pragma once
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <random>
#include <utility>
#include <vector>

namespace qcast_test {

inline std::vector<float> scaled_normal_rows(int rows, int cols, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  std::uniform_int_distribution<int> expo(-30, 30);
  std::vector<float> x(std::size_t(rows) * std::size_t(cols));
  for (int r = 0; r < rows; ++r) {
    const float mag = std::ldexp(1.0f, expo(rng));
    for (int c = 0; c < cols; ++c) x[std::size_t(r) * cols + c] = normal(rng) * mag;
  }
  return x;
}

// Inputs of the Hadamard transform tests: normal samples at magnitudes 2^-10 .. 2^9, with (for n > 8)
// a NaN, an Inf, a value near FLT_MAX whose butterfly sums overflow, and signed zeros.
inline std::vector<float> hadamard_values(std::int64_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(static_cast<std::size_t>(n));
  for (auto& v : x) v = normal(rng) * std::exp2(float(int(rng() % 20) - 10));
  if (n > 8) {
    x[3] = std::numeric_limits<float>::quiet_NaN();
    x[std::size_t(n / 2)] = INFINITY;
    x[std::size_t(n - 1)] = 3e38f;
    x[5] = -0.0f;
    x[6] = 0.0f;
  }
  return x;
}

// Special rows over a tensor of at least 8 rows of `cols`: a NaN (where with_nan) and ±Inf in rows
// 1-3, alternating ±0 (row 4), subnormals of both signs (5), negative grid ties (6)
// and values beyond every element format's range (7).
inline void add_special_rows(std::vector<float>& x, int cols, bool with_nan) {
  if (with_nan) x[std::size_t(cols) + 3] = std::numeric_limits<float>::quiet_NaN();
  x[std::size_t(cols) * 2 + 9] = INFINITY;
  x[std::size_t(cols) * 3 + 4] = -INFINITY;
  for (int c = 0; c < cols; ++c) x[std::size_t(4) * cols + c] = (c % 2) ? -0.0f : 0.0f;
  for (int c = 0; c < cols; ++c) x[std::size_t(5) * cols + c] = std::ldexp(float(c) - cols / 2, -138);
  for (int c = 0; c < cols; ++c) x[std::size_t(6) * cols + c] = -(1.0f + float(c) / 32.0f);  // grid ties
  for (int c = 0; c < cols; ++c) x[std::size_t(7) * cols + c] = float(c) * -3e3f;            // overflow
}

// Rows whose consecutive blocks of `block` elements differ in kind, so that every position of a
// kernel's chunk of blocks meets blocks it must send to the general path: normal values at 1, 2^30
// and 2^-30; ±0 only; subnormals only; a tiny block (2^-40) among large ones (a zero NVFP4 block
// scale); negative ties of the FP4/FP6/INT grids that round to -0 and to even; and, where
// with_extremes, a NaN, an Inf, amax just above FLT_MIN and near FLT_MAX (OCP floor exponents past
// ±126). Row r starts at a different kind, and cols need not be a whole number of blocks.
inline std::vector<float> mixed_block_rows(int rows, int cols, int block, bool with_extremes, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  const int kinds = with_extremes ? 12 : 8;
  std::vector<float> x(std::size_t(rows) * std::size_t(cols));
  for (int r = 0; r < rows; ++r) {
    for (int c = 0; c < cols; ++c) {
      const int b = c / block, i = c % block;
      const float z = normal(rng);
      float v = z;
      switch ((b + r) % kinds) {
        case 0: v = z; break;
        case 1: v = z * 1073741824.0f; break;                              // 2^30
        case 2: v = z * 9.313225746154785e-10f; break;                     // 2^-30
        case 3: v = (i % 2) ? -0.0f : 0.0f; break;
        case 4: v = std::ldexp(float(i % 7) - 3.0f, -140); break;           // subnormals
        case 5: v = z * 9.094947017729282e-13f; break;                     // 2^-40
        case 6: v = i == 0 ? 6.0f : -std::ldexp(float(2 * (i % 6) + 1), -2 - (i % 3)); break;  // -0.25, -0.75, ...
        case 7: v = i == 0 ? -127.0f : -(float(i % 9) + 0.5f); break;      // integer ties
        case 8: v = i == block / 2 ? std::numeric_limits<float>::quiet_NaN() : z; break;
        case 9: v = i == 1 ? -INFINITY : z; break;
        case 10: v = z * 1.2e-38f; break;                                  // amax near FLT_MIN
        default: v = z * 1.5e38f; break;                                   // amax near FLT_MAX
      }
      x[std::size_t(r) * cols + c] = v;
    }
  }
  return x;
}

// A tensor of `outer` x `channels` x `inner` elements for channels along the middle axis: each
// (outer, channel) run of `inner` values at its own magnitude, the special rows of add_special_rows
// over the first runs (a NaN in channel 1, Inf in channels 2 and 3, ...), and channel 5 zero in
// every run (a passthrough group). channels >= 8.
inline std::vector<float> channel_run_values(int outer, int channels, int inner, unsigned seed) {
  auto x = scaled_normal_rows(outer * channels, inner, seed);
  add_special_rows(x, inner, true);
  for (int o = 0; o < outer; ++o)
    for (int i = 0; i < inner; ++i) x[(std::size_t(o) * channels + 5) * inner + i] = 0.0f;
  return x;
}

// The cases of the tests of channels along a middle axis: runs of 72 (whole bytes of 4-bit and
// 6-bit codes), of odd length, longer than a 4096-element tile or chunk, and a rank-4 (NCHW) tensor,
// each with its channel_run_values; and the per-channel formats they take along axis 1.
struct ChannelRunCase {
  std::vector<std::int64_t> shape;
  std::int64_t inner = 0;
  std::vector<float> values;
};
inline std::vector<ChannelRunCase> channel_run_cases(unsigned seed) {
  std::vector<ChannelRunCase> cases;
  for (const std::vector<std::int64_t>& shape : {std::vector<std::int64_t>{3, 12, 72}, {3, 12, 37}, {2, 8, 9000},
                                                 {2, 9, 6, 10}}) {
    const std::int64_t inner = shape.size() == 4 ? shape[2] * shape[3] : shape[2];
    cases.push_back({shape, inner, channel_run_values(int(shape[0]), int(shape[1]), int(inner), seed)});
  }
  return cases;
}
inline constexpr const char* kChannelRunFormats[] = {"int8@channel:axis=1", "int4@channel:axis=1",
                                                     "e4m3@channel:axis=1", "e3m2@channel:axis=1"};

// Shapes with dimensions of size 1 around a format's axis, each with its format. The kernels' drivers
// dispatch them as the shape without those dimensions (src/cpu/canonical_layout.hpp): [64, 24, 1, 1]
// per channel is the column-group case [64, 24]; [1, 24, 40] has one run per channel; [1, 24, 1]
// one element per channel; blocks along a middle axis with nothing after it are lines of blocks;
// an axis of size 1 is kept ([1, 1, 40] in blocks along it: one element a block, 40 columns).
// Values: scaled rows of the last dimension with the special rows (NaN, Inf, zeros, subnormals).
struct UnitDimCase {
  std::vector<std::int64_t> shape;
  const char* format;
  std::vector<float> values;
};
inline std::vector<UnitDimCase> unit_dim_cases(unsigned seed) {
  const std::pair<std::vector<std::int64_t>, const char*> layouts[] = {
      {{64, 24, 1, 1}, "int8@channel:axis=1"},
      {{64, 24, 1, 1}, "e3m2@channel:axis=-3"},
      {{1, 24, 40}, "int4@channel:axis=1"},
      {{1, 24, 1}, "e4m3@channel:axis=-2"},
      {{3, 1, 37}, "int8@channel:axis=1"},
      {{40, 1, 64}, "mxfp4"},
      {{2, 48, 1, 1}, "fp4_e2m1@g16+tensor:scale=ue4m3:axis=1"},  // NVFP4 along axis 1
      {{64, 1, 1}, "int4@g32:axis=0"},
      {{1, 1, 40}, "e2m1@g16:scale=ue4m3:axis=1"},
      {{1, 72, 1, 16}, "fp6_e2m3@g32:scale=e8m0:axis=1"}};
  std::vector<UnitDimCase> cases;
  for (const auto& [shape, format] : layouts) {
    std::int64_t n = 1;
    for (auto d : shape) n *= d;
    const int cols = int(shape.back() > 1 ? shape.back() : 8);
    const int rows = int((n + cols - 1) / cols) < 8 ? 8 : int((n + cols - 1) / cols);
    auto x = scaled_normal_rows(rows, cols, seed++);
    add_special_rows(x, cols, true);
    x.resize(std::size_t(n));
    cases.push_back({shape, format, x});
  }
  return cases;
}

}  // namespace qcast_test
