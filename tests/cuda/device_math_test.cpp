// The CUDA kernels' arithmetic, compiled for the host (src/cuda/device_or_host.hpp), against the
// reference: one element's Q(x), code and value on each of the device's three paths (lean, float,
// general), a group's scale, an element's value in its group, the group layout, the codes' byte
// stream, and whole tensors cast, encoded and decoded the way the kernels combine those functions.
// This runs wherever the tests run, GPU or not; the GPU tests (cuda_kernels_test.cpp) check the
// kernels themselves on a device. Compiled without fused multiply-adds (tests/CMakeLists.txt), as
// the device code is (-fmad=false).
//
// What the host build cannot show: a device intrinsic that differs from its host twin
// (device_or_host.hpp), and NaN payloads (a GPU product of a NaN is 0x7FFFFFFF; x86 passes the
// operand through), which the device code canonicalizes explicitly.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "common/cast_options.hpp"
#include "common/differing.hpp"
#include "common/tensor_values.hpp"
#include "grid_stride_device.cuh"
#include "packed_codes_device.cuh"
#include "params.hpp"
#include "qcast/format_names.hpp"

namespace cd = qcast::cuda_detail;
using qcast_test::differing;

namespace {

std::uint32_t bits(float x) {
  std::uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  return u;
}

float from_bits(std::uint32_t u) {
  float x;
  std::memcpy(&x, &u, sizeof x);
  return x;
}

// Every bfloat16 value; for formats of at most 16 bits, every value of the format, its neighbours
// in binary32, and the midpoints (ties) between consecutive values with their neighbours; random
// binary32 bit patterns.
std::vector<float> element_inputs(const qcast::ElementFormat& e) {
  std::vector<float> x;
  for (std::uint32_t h = 0; h < 0x10000u; ++h) x.push_back(from_bits(h << 16));
  if (e.bits() <= 16) {
    std::vector<double> grid;
    for (std::uint32_t c = 0; c < (1u << e.bits()); ++c) {
      const float v = qcast::decode_element(e, c);
      if (std::isfinite(v)) grid.push_back(std::fabs(double(v)));
    }
    std::sort(grid.begin(), grid.end());
    grid.erase(std::unique(grid.begin(), grid.end()), grid.end());
    for (std::size_t k = 0; k < grid.size(); ++k) {
      std::vector<float> points{float(grid[k])};
      if (k + 1 < grid.size()) points.push_back(float((grid[k] + grid[k + 1]) / 2));
      else points.push_back(float(grid[k] * 1.5));  // past the largest value
      for (float p : points)
        for (float q : {p, std::nextafter(p, 0.0f), std::nextafter(p, INFINITY)}) {
          x.push_back(q);
          x.push_back(-q);
        }
    }
  }
  std::mt19937 rng(7);
  for (int k = 0; k < 4096; ++k) x.push_back(from_bits(rng()));
  return x;
}

std::vector<std::string> element_names() {
  std::vector<std::string> names;
  for (const auto& e : qcast::named_elements()) names.push_back(e.name);
  for (const char* n : {"int2", "int3", "int4", "int5", "int6", "int7", "int8", "int12", "int16", "int8f6", "uint4",
                        "uint8", "e3m4", "e5m3", "e2m1nosp", "e3m2nosp", "e5m2b11", "e3m4fnuzb5", "e2m5", "ue5m3",
                        "e3m0", "e5m0", "e6m9", "ue4m3fn"})
    names.emplace_back(n);
  return names;
}

// The parameters of each device path that applies to format e under options o: lean, the float
// path without the lean shortcut, and the general path.
std::vector<std::pair<const char*, cd::ElementParams>> device_paths(const qcast::ElementFormat& e,
                                                                    const qcast::CastOptions& o) {
  std::vector<std::pair<const char*, cd::ElementParams>> paths;
  cd::ElementParams p = cd::element_params(e, o);
  if (p.lean) paths.emplace_back("lean", p);
  if (p.fast) {
    cd::ElementParams f = p;
    f.lean = false;
    paths.emplace_back("float", f);
  }
  cd::ElementParams g = p;
  g.lean = g.fast = false;
  paths.emplace_back("general", g);
  return paths;
}

std::string option_name(const qcast::CastOptions& o) {
  const char* r[] = {"nearest_even", "nearest_away", "toward_zero", "stochastic"};
  return std::string(r[int(o.rounding)]) + (o.saturate ? (*o.saturate ? " saturate" : " no-saturate") : "");
}

}  // namespace

TEST_CASE("device element math: Q(x), its code and a code's value equal the reference on every path") {
  for (const std::string& name : element_names()) {
    qcast::ElementFormat e;
    REQUIRE(qcast::detail::parse_element(name, e));
    const std::vector<float> x = element_inputs(e);
    // decode_general: every code (a sample of binary32's).
    const cd::ElementParams plain = cd::element_params(e, {});
    std::size_t bad_decode = 0;
    const std::uint32_t codes = e.bits() <= 16 ? (1u << e.bits()) : 0x20000u;
    for (std::uint32_t k = 0; k < codes; ++k) {
      const std::uint32_t c = e.bits() <= 16 ? k : k * 0x9E3779B1u;
      bad_decode += bits(cd::decode_general(plain, c)) != bits(qcast::decode_element(e, c));
    }
    {
      INFO(name << ": decode");
      CHECK(bad_decode == 0);
    }
    for (const qcast::CastOptions& o : qcast_test::rounding_and_overflow_options()) {
      for (const auto& [path, p] : device_paths(e, o)) {
        std::size_t bad_q = 0, bad_code = 0, first = x.size();
        for (std::size_t i = 0; i < x.size(); ++i) {
          const float want = qcast::quantize_element(e, x[i], o, i);
          if (bits(cd::quantize(p, x[i], i)) != bits(want)) ++bad_q, first = std::min(first, i);
          if (std::isnan(x[i]) && !e.has_nan()) continue;  // the reference throws; callers check first
          if (cd::encode(p, x[i], i) != qcast::encode_element(e, x[i], o, i)) ++bad_code, first = std::min(first, i);
        }
        INFO(name << ", " << option_name(o) << ", " << path << " path: first difference at x = "
                  << (first < x.size() ? x[first] : 0.0f));
        CHECK(bad_q == 0);
        CHECK(bad_code == 0);
      }
    }
  }
}

namespace {

// Block formats over every kind of scale: power-of-two scales under each rule, float scales one-
// and two-level, signed and unsigned, binary32. Two-level binary32 and bfloat16 block scales are
// valid over elements of max <= 1 only (int8f7, e4m3fnb16); the other combinations are rejected.
std::vector<std::string> scaled_format_names() {
  std::vector<std::string> names;
  for (const auto& n : qcast::named_formats())
    if (n.format.is_scaled()) names.push_back(n.name);
  for (const char* element : {"fp4_e2m1", "fp6_e3m2", "fp8_e4m3", "int8", "int4", "e3m4", "int8f7", "e4m3fnb16"}) {
    const std::string base = std::string(element) + "@g16";
    for (const char* rule : {"floor", "ceil", "rceil", "even"}) names.push_back(base + ":scale=e8m0:rule=" + rule);
    names.push_back(base + ":scale=e5m0");
    for (const char* scale : {"ue4m3", "fp8_e4m3", "fp8_e5m2", "bf16", "fp16", "fp32", "ue5m3", "e3m4fnuzb5"}) {
      names.push_back(base + ":scale=" + scale);
      const std::string two_level = base + "+tensor:scale=" + scale;
      try {
        qcast::parse_format(two_level);
        names.push_back(two_level);
      } catch (const qcast::FormatError&) {
        const qcast::Format one_level = qcast::parse_format(base + ":scale=" + scale);
        REQUIRE(one_level.element.max_value() * one_level.scale.max_value() > FLT_MAX);  // the only reason
      }
    }
  }
  return names;
}

qcast::Format parsed(const std::string& name) {
  const qcast::Format f = qcast::parse_format(name);
  qcast::detail::check_format(f);
  return f;
}

// amax values for a group's scale: every non-negative bfloat16 (Inf and NaN too), then
// max_elem * 2^k and its binary32 neighbours (where the power-of-two rules change k), then
// random magnitudes.
std::vector<float> amax_inputs(const qcast::Format& f) {
  std::vector<float> a;
  for (std::uint32_t h = 0; h <= 0x7FFFu; ++h) a.push_back(from_bits(h << 16));
  const float m = float(f.element.max_value());
  for (int k = -160; k <= 130; ++k) {
    const float p = std::ldexp(m, k);
    for (float q : {p, std::nextafter(p, 0.0f), std::nextafter(p, INFINITY)})
      if (std::isfinite(q)) a.push_back(q);
  }
  std::mt19937 rng(11);
  for (int k = 0; k < 4096; ++k) a.push_back(from_bits(rng() & 0x7FFFFFFFu));
  return a;
}

bool same_scale(const cd::DeviceGroupScale& d, const qcast::GroupScale& r) {
  return int(d.kind) == int(r.kind) && bits(d.value) == bits(r.value) && d.code == r.code;
}

}  // namespace

TEST_CASE("device scale math: a group's scale, and x / s, equal the reference for every kind of scale") {
  for (const std::string& name : scaled_format_names()) {
    const qcast::Format f = parsed(name);
    const cd::ScaleParams sp = cd::scale_params(f);
    const std::vector<float> amax = amax_inputs(f);
    // Two-level formats: tensor maxima from tiny (s_t subnormal or zero, so that d overflows) to
    // FLT_MAX, and the tensor scale itself as the kernels derive it from the tensor statistics.
    std::vector<float> tensor_amax{1.0f};
    if (f.tensor_scale) tensor_amax = {0.0f, 1e-45f, 1e-40f, 1e-30f, 3e-7f, 1.0f, 448.0f, 6e30f, 3.4028235e38f};
    std::size_t checked = 0, bad = 0, bad_error = 0, bad_simple = 0, bad_input = 0, bad_output = 0;
    std::string first;
    for (float amax_t : tensor_amax) {
      const unsigned stats[2] = {bits(amax_t), bits(amax_t)};
      const cd::TensorScale t = cd::tensor_scale(sp, stats);
      const float s_t = f.tensor_scale ? qcast::tensor_scale_of(f, amax_t) : 1.0f;
      REQUIRE(bits(t.s_t) == bits(s_t));
      if (f.tensor_scale && amax_t > 0.0f) {  // CastOptions::tensor_amax: the statistics are not read
        const cd::TensorScale given = cd::tensor_scale(cd::scale_params(f, amax_t), nullptr);
        REQUIRE(bits(given.amax_t) == bits(amax_t));
        REQUIRE(bits(given.s_t) == bits(s_t));
      }
      for (std::size_t i = 0; i < amax.size(); ++i) {
        const bool nonfinite = !std::isfinite(amax[i]);
        const float finite_amax = nonfinite ? 0.0f : amax[i];
        bool threw = false;
        qcast::GroupScale want;
        try {
          want = qcast::group_scale(f, finite_amax, nonfinite, amax_t, s_t);
          if (want.kind == qcast::GroupScale::Kind::nan && !f.scale.has_nan()) threw = true;  // encode throws
        } catch (const std::domain_error&) {
          threw = true;
        }
        int error = 0;
        const cd::DeviceGroupScale got = cd::group_scale(sp, finite_amax, nonfinite, t.amax_t, t.s_t, &error);
        ++checked;
        bad_error += (error != 0) != threw;
        if (threw) continue;
        if (!same_scale(got, want)) {
          if (first.empty()) {
            std::ostringstream where;
            where << "amax " << amax[i] << ", amax_t " << amax_t;
            first = where.str();
          }
          ++bad;
        }
        if (cd::simple_scale(sp)) {
          int e2 = 0;
          bad_simple += !same_scale(cd::group_scale<true>(sp, finite_amax, nonfinite, t.amax_t, t.s_t, &e2), want);
        }
        if (want.kind != qcast::GroupScale::Kind::finite) continue;
        // x / s (x / (s * s_t)) and q * s: a few values around and beyond the group's range.
        const cd::ScaledInput scaled(got.value, t.s_t, sp.two_level);
        for (float x : {amax[i], -amax[i], std::nextafter(amax[i], 0.0f), amax[i] / 3.0f, 1.0f, 3e38f, 1e-40f}) {
          bad_input += bits(scaled(x)) != bits(qcast::detail::scaled_input(f, x, want, s_t));
          const float q = float(f.element.max_value()) * (x < 0 ? -0.5f : 0.75f);
          bad_output += bits(cd::scaled_output(q, got.value, t.s_t, sp.two_level)) !=
                        bits(qcast::detail::scaled_output(f, q, want, s_t));
        }
      }
    }
    INFO(name << ": " << checked << " scales; first difference at " << first);
    CHECK(bad == 0);
    CHECK(bad_error == 0);
    CHECK(bad_simple == 0);
    CHECK(bad_input == 0);
    CHECK(bad_output == 0);
  }
}

TEST_CASE("device x / d: the corrected reciprocal path gives the correctly rounded quotient") {
  // ScaledInput's corrected path (q = x * RN(1/d), then q + (x - d q) RN(1/d)) against the host's
  // IEEE division, bit for bit: for divisors across its range [2^-60, 2^61) and at its edges, with
  // the significands that stress a reciprocal most (just above 1, just below 2, 1.5 +- 1 ulp, and
  // random ones); x every bfloat16 (all exponents, zeros, subnormals, Inf, NaN), random bit
  // patterns, and values whose quotient lies within a few ulps of a midpoint between two floats
  // (where one wrong rounding shows).
  std::mt19937 rng(11);
  std::vector<float> significands{1.0f, std::nextafter(1.0f, 2.0f), std::nextafter(2.0f, 1.0f), 1.5f,
                                  std::nextafter(1.5f, 2.0f), std::nextafter(1.5f, 1.0f), 1.0f + 1.0f / 3.0f};
  for (int k = 0; k < 96; ++k) significands.push_back(from_bits(0x3F800000u | (rng() & 0x7FFFFFu)));
  std::vector<float> divisors;
  for (float m : significands)
    for (int e : {-60, -59, -31, -9, -1, 0, 1, 7, 30, 59, 60}) divisors.push_back(std::ldexp(m, e));
  // Outside the range: the division itself.
  const std::vector<float> outside{std::ldexp(1.9f, -61), std::ldexp(1.25f, 61), std::ldexp(1.3f, 100), 1e-40f,
                                   -1.3f, 3.4e38f};
  std::vector<float> x;
  for (std::uint32_t h = 0; h < 0x10000u; ++h) x.push_back(from_bits(h << 16));
  for (int k = 0; k < 4096; ++k) x.push_back(from_bits(rng()));
  std::size_t checked = 0, bad = 0, bad_octet = 0, wrong_path = 0;
  std::string first;
  auto check_divisor = [&](float d, std::vector<float> inputs) {
    const cd::ScaledInput scaled(d, 1.0f, false);
    // Quotients near midpoints: q' = q * (1 + (2j + 1) 2^-25) for random q of a few magnitudes, and
    // x = RN(d q') with its neighbours.
    std::uniform_real_distribution<float> unit(1.0f, 2.0f);
    for (int k = 0; k < 512; ++k) {
      const double q = std::ldexp(double(unit(rng)), int(rng() % 80) - 40);
      const double near_mid = q * (1.0 + double(2 * int(rng() % 8) + 1) * std::ldexp(1.0, -25));
      const float xs = float(double(d) * near_mid);
      for (float v : {xs, std::nextafter(xs, 0.0f), std::nextafter(xs, INFINITY), -xs}) inputs.push_back(v);
    }
    for (float v : inputs) {
      ++checked;
      const float want = v / d;
      if (bits(scaled(v)) != bits(want)) {
        if (first.empty()) {
          std::ostringstream where;
          where << std::hexfloat << "x = " << v << ", d = " << d << ": " << scaled(v) << " against " << want;
          first = where.str();
        }
        ++bad;
      }
    }
    for (std::size_t i = 0; i + 8 <= inputs.size(); i += 8) {
      float v[8];
      std::copy(inputs.begin() + std::ptrdiff_t(i), inputs.begin() + std::ptrdiff_t(i + 8), v);
      scaled.octet(v);
      for (int k = 0; k < 8; ++k) bad_octet += bits(v[k]) != bits(inputs[i + std::size_t(k)] / d);
    }
    return scaled.path;
  };
  for (float d : divisors) {
    const auto path = check_divisor(d, x);
    const bool power_of_two = (bits(d) & 0x7FFFFFu) == 0;
    wrong_path += path != (power_of_two ? cd::ScaledInput::Path::multiply : cd::ScaledInput::Path::corrected);
  }
  for (float d : outside) wrong_path += check_divisor(d, x) != cd::ScaledInput::Path::divide;
  INFO(checked << " quotients; first difference: " << first);
  CHECK(bad == 0);
  CHECK(bad_octet == 0);
  CHECK(wrong_path == 0);
}

TEST_CASE("device grid-stride order: forward and reversed, every item once, each warp's steps mirrored") {
  // The fused block kernels' loop (for_each_block_octet): a warp starts at block * threads + its
  // first lane and steps by the grid's threads; its lanes take o0 + lane.
  for (int blocks : {1, 3, 8})
    for (int threads : {64, 256})
      for (std::int64_t count : {0, 1, 31, 32, 33, 1000, 12345, 65536}) {
        std::vector<int> forward_visits(std::size_t(count), 0), reversed_visits(std::size_t(count), 0);
        std::size_t mirrored = 0, units = 0;
        for (int b = 0; b < blocks; ++b)
          for (int t = 0; t < threads; t += 32) {
            std::vector<std::int64_t> steps[2];
            for (bool reversed : {false, true}) {
              const cd::GridStride order{std::int64_t(b) * threads + t, std::int64_t(blocks) * threads, count,
                                         reversed};
              for (std::int64_t o0 = order.begin(); order.inside(o0); o0 += order.step()) {
                steps[reversed].push_back(o0);
                for (int lane = 0; lane < 32; ++lane)
                  if (o0 + lane < count) ++(reversed ? reversed_visits : forward_visits)[std::size_t(o0 + lane)];
              }
            }
            ++units;
            mirrored += std::equal(steps[0].begin(), steps[0].end(), steps[1].rbegin(), steps[1].rend());
          }
        INFO(blocks << " blocks of " << threads << " threads, " << count << " items");
        CHECK(std::count(forward_visits.begin(), forward_visits.end(), 1) == count);
        CHECK(std::count(reversed_visits.begin(), reversed_visits.end(), 1) == count);
        CHECK(mirrored == units);
      }
}

TEST_CASE("device layout: group_of and group_members number groups as GroupLayout does") {
  std::mt19937 rng(5);
  const char* formats[] = {"int8@channel", "int8@channel:axis=0", "int8@channel:axis=1", "mxfp4", "fp4_e2m1@g32:scale=e8m0:axis=0",
                           "fp4_e2m1@g32:scale=e8m0:axis=1", "nvfp4", "int4@g7:axis=-2", "fp8_e4m3@tensor", "int4@g1"};
  for (const char* name : formats) {
    const qcast::Format f = parsed(name);
    for (int trial = 0; trial < 40; ++trial) {
      qcast::Shape shape;
      const int rank = 2 + int(rng() % 3);
      for (int d = 0; d < rank; ++d) shape.push_back(1 + std::int64_t(rng() % 37));
      const cd::LayoutParams l = cd::layout_params(shape, f);
      const qcast::detail::GroupLayout layout(shape, f);
      REQUIRE(l.groups == layout.groups());
      std::vector<std::int64_t> group_of_element(std::size_t(l.elements), -1);
      for (std::int64_t g = 0; g < l.groups; ++g) {
        const cd::DeviceGroup m = cd::group_members(l, g);
        std::vector<std::int64_t> got, want;
        for (std::int64_t r = 0; r < m.runs; ++r)
          for (std::int64_t j = 0; j < m.count; ++j) got.push_back(m.base + r * m.run_stride + j * m.stride);
        layout.group(g).for_each([&](std::int64_t i) { want.push_back(i); });
        INFO(name << " group " << g);
        REQUIRE(got == want);
        for (std::int64_t i : got) group_of_element[std::size_t(i)] = g;
      }
      std::size_t bad = 0;
      for (std::int64_t i = 0; i < l.elements; ++i) bad += cd::group_of(l, i) != group_of_element[std::size_t(i)];
      INFO(name);
      CHECK(bad == 0);
    }
  }
}

TEST_CASE("device code streams: eight codes a thread write and read the bytes of qcast/packing.hpp") {
  std::mt19937 rng(3);
  for (int bits_per_code = 1; bits_per_code <= 16; ++bits_per_code) {
    const std::uint32_t mask = (1u << bits_per_code) - 1;
    for (std::int64_t n : {1, 7, 8, 9, 61, 64}) {
      std::vector<std::uint32_t> codes(static_cast<std::size_t>(n));
      for (auto& c : codes) c = rng() & mask;
      std::vector<std::uint8_t> want(std::size_t((n * bits_per_code + 7) / 8), 0);
      for (std::int64_t i = 0; i < n; ++i) qcast::pack_code(want.data(), std::size_t(i), bits_per_code, codes[i]);
      std::vector<std::uint8_t> got(want.size(), 0);
      for (std::int64_t o = 0; o * 8 < n; ++o) {
        const int count = int(std::min<std::int64_t>(8, n - 8 * o));
        std::uint32_t c[8] = {};
        for (int k = 0; k < count; ++k) c[k] = codes[std::size_t(8 * o + k)];
        cd::store_codes(got.data(), o, bits_per_code, c, count);
      }
      INFO(bits_per_code << " bits, " << n << " codes");
      CHECK(got == want);
      std::size_t bad = 0;
      for (std::int64_t o = 0; o * 8 < n; ++o) {
        const int count = int(std::min<std::int64_t>(8, n - 8 * o));
        std::uint32_t c[8];
        cd::load_codes(want.data(), o, bits_per_code, c, count);
        for (int k = 0; k < count; ++k) bad += c[k] != codes[std::size_t(8 * o + k)];
      }
      CHECK(bad == 0);
    }
  }
  for (int bytes = 1; bytes <= 4; ++bytes) {
    std::vector<std::uint8_t> stream(std::size_t(5 * bytes));
    std::vector<std::uint32_t> codes(5);
    for (std::int64_t g = 0; g < 5; ++g) {
      codes[std::size_t(g)] = bytes == 4 ? rng() : rng() & ((1u << (8 * bytes)) - 1);
      cd::store_scale(stream.data(), g, bytes, codes[std::size_t(g)]);
    }
    for (std::int64_t g = 0; g < 5; ++g) {
      std::uint32_t want = 0;
      for (int b = 0; b < bytes; ++b) want |= std::uint32_t(stream[std::size_t(g * bytes + b)]) << (8 * b);
      CHECK(want == codes[std::size_t(g)]);  // little-endian bytes in group order
      CHECK(cd::load_scale(stream.data(), g, bytes) == codes[std::size_t(g)]);
    }
  }
}

namespace {

// A tensor cast, encoded and decoded the way the kernels of cast.cu and codec.cu combine the device
// functions: the tensor statistics, each group's statistics and scale (group_scales_kernel, or the
// fused block kernels' lean variant), then every element in its group. The combination is
// transcribed from the kernels; each step is the device's own function.
struct HostEmulation {
  qcast::Format f;
  qcast::Shape shape;
  qcast::CastOptions o;
  bool lean = false;  // the fused block kernels' variant: lean elements and a simple scale rule

  cd::ElementParams e;
  cd::ScaleParams s;
  cd::LayoutParams l;
  cd::TensorScale t;
  std::vector<cd::DeviceGroupScale> scales;
  int error = 0;

  HostEmulation(const qcast::Format& format, const qcast::Shape& sh, const qcast::CastOptions& options, bool lean_variant,
                const std::vector<float>& x)
      : f(format), shape(sh), o(options) {
    e = cd::element_params(f.element, o);
    s = cd::scale_params(f);
    l = cd::layout_params(shape, f);
    lean = lean_variant && e.lean && (!f.is_scaled() || cd::simple_scale(s));
    if (!f.is_scaled()) return;
    unsigned stats[2] = {0, 0};  // tensor_stats_kernel
    for (float v : x) {
      const unsigned b = cd::bits_of(v) & 0x7FFFFFFFu;
      stats[1] = std::max(stats[1], b);
      if (b < 0x7F800000u) stats[0] = std::max(stats[0], b);
    }
    t = cd::tensor_scale(s, stats);
    scales.resize(std::size_t(l.groups));
    if (f.granularity == qcast::Granularity::tensor) {  // tensor_group_scale_kernel
      scales[0] = cd::group_scale(s, cd::float_of(stats[0]), stats[1] >= 0x7F800000u, 1.0f, 1.0f, &error);
      return;
    }
    for (std::int64_t g = 0; g < l.groups; ++g) {  // group_scales_kernel, block_octet
      const cd::DeviceGroup m = cd::group_members(l, g);
      unsigned finite = 0, all = 0;
      for (std::int64_t r = 0; r < m.runs; ++r)
        for (std::int64_t j = 0; j < m.count; ++j) {
          const unsigned b = cd::bits_of(x[std::size_t(m.base + r * m.run_stride + j * m.stride)]) & 0x7FFFFFFFu;
          all = std::max(all, b);
          if (b < 0x7F800000u) finite = std::max(finite, b);
        }
      const bool nonfinite = all >= 0x7F800000u;
      scales[std::size_t(g)] = lean ? cd::group_scale<true>(s, cd::float_of(all), nonfinite, t.amax_t, t.s_t, &error)
                                    : cd::group_scale(s, cd::float_of(finite), nonfinite, t.amax_t, t.s_t, &error);
    }
  }

  // Whether the fused block kernels take the tensor (cast.cu's and codec.cu's `tiles`): blocks of
  // 8, 16, ..., 256 along the last axis that tile each line. They hand a thread's eight elements
  // to cast_octet_in_group and code_octet_in_group.
  bool tiles() const {
    const std::int64_t k = f.block_size;
    return f.granularity == qcast::Granularity::block && l.inner == 1 && l.len % k == 0 && k % 8 == 0 &&
           k / 8 <= 32 && ((k / 8) & (k / 8 - 1)) == 0;
  }

  // cast: direct_kernel, block_kernel, apply_kernel.
  std::vector<float> cast(const std::vector<float>& x) const {
    std::vector<float> y(x.size());
    if (f.is_scaled() && tiles()) {
      for (std::int64_t o8 = 0; 8 * o8 < l.elements; ++o8) {
        const cd::DeviceGroupScale& g = scales[std::size_t(cd::group_of(l, 8 * o8))];
        const cd::ScaledInput scaled(g.value, t.s_t, s.two_level);
        float v[8];
        std::copy_n(x.begin() + 8 * o8, 8, v);
        if (lean) cd::cast_octet_in_group<true>(e, s, g, scaled, t.s_t, v, 8 * o8);
        else cd::cast_octet_in_group(e, s, g, scaled, t.s_t, v, 8 * o8);
        std::copy_n(v, 8, y.begin() + 8 * o8);
      }
      return y;
    }
    for (std::int64_t i = 0; i < l.elements; ++i) {
      const float v = x[std::size_t(i)];
      if (!f.is_scaled()) {
        y[std::size_t(i)] = lean ? cd::quantize_lean(e, v) : cd::quantize(e, v, std::uint64_t(i));
        continue;
      }
      const cd::DeviceGroupScale& g = scales[std::size_t(cd::group_of(l, i))];
      const cd::ScaledInput scaled(g.value, t.s_t, s.two_level);
      y[std::size_t(i)] = lean ? cd::cast_in_group<true>(e, s, g, scaled, t.s_t, v, i)
                               : cd::cast_in_group(e, s, g, scaled, t.s_t, v, i);
    }
    return y;
  }

  // encode: encode_kernel and encode_block_kernel with pack_scales_kernel. Returns false where the
  // kernels report an error (a NaN that the element or the scale format cannot encode).
  bool encode(const std::vector<float>& x, std::vector<std::uint8_t>& codes,
              std::vector<std::uint8_t>& scale_codes) const {
    int element_nan = 0;
    codes.assign(std::size_t((l.elements * e.bits + 7) / 8), 0);
    for (std::int64_t o8 = 0; 8 * o8 < l.elements; ++o8) {
      const int count = int(std::min<std::int64_t>(8, l.elements - 8 * o8));
      std::uint32_t c[8] = {};
      if (f.is_scaled() && tiles()) {
        const cd::DeviceGroupScale& g = scales[std::size_t(cd::group_of(l, 8 * o8))];
        const cd::ScaledInput scaled(g.value, t.s_t, s.two_level);
        float v[8];
        std::copy_n(x.begin() + 8 * o8, 8, v);
        if (lean) cd::code_octet_in_group<true>(e, g, scaled, v, 8 * o8, c, &element_nan);
        else cd::code_octet_in_group(e, g, scaled, v, 8 * o8, c, &element_nan);
        cd::store_codes(codes.data(), o8, e.bits, c, 8);
        continue;
      }
      for (int k = 0; k < count; ++k) {
        const std::int64_t i = 8 * o8 + k;
        const float v = x[std::size_t(i)];
        if (!f.is_scaled()) {
          if (std::isnan(v) && !e.has_nan) return false;
          c[k] = cd::encode(e, v, std::uint64_t(i));
          continue;
        }
        const cd::DeviceGroupScale& g = scales[std::size_t(cd::group_of(l, i))];
        const cd::ScaledInput scaled(g.value, t.s_t, s.two_level);
        c[k] = lean ? cd::code_in_group<true>(e, g, scaled, v, i, &element_nan)
                    : cd::code_in_group(e, g, scaled, v, i, &element_nan);
      }
      cd::store_codes(codes.data(), o8, e.bits, c, count);
    }
    const int storage_bytes = f.is_scaled() ? f.scale_storage_bits() / 8 : 0;
    scale_codes.assign(std::size_t(storage_bytes) * scales.size(), 0);
    for (std::size_t g = 0; g < scales.size(); ++g)
      cd::store_scale(scale_codes.data(), std::int64_t(g), storage_bytes, scales[g].code);
    return error == 0 && element_nan == 0;
  }
};

// decode_kernel on the stream of `enc`: element values from the table of codes (at most 8 bits)
// or decode_general, scales from the table (1-byte scales) or decode_general of the scale's
// parameters (the signed twin of an unsigned scale format), combined by decoded_in_group.
std::vector<float> device_decode(const qcast::Encoded& enc) {
  const qcast::Format& f = enc.format;
  const cd::LayoutParams l = cd::layout_params(enc.shape, f);
  const cd::ElementParams e = cd::element_params(f.element, qcast::CastOptions{});
  const cd::ScaleParams s = cd::scale_params(f);
  const int storage_bytes = f.scale_storage_bits() / 8;
  std::vector<float> y(std::size_t(l.elements));
  for (std::int64_t o8 = 0; 8 * o8 < l.elements; ++o8) {
    const int count = int(std::min<std::int64_t>(8, l.elements - 8 * o8));
    std::uint32_t c[8];
    cd::load_codes(enc.codes.data(), o8, e.bits, c, count);
    for (int k = 0; k < count; ++k) {
      const std::int64_t i = 8 * o8 + k;
      float v = e.bits <= 8 ? qcast::decode_element(f.element, c[k]) : cd::decode_general(e, c[k]);
      if (f.is_scaled()) {
        const std::uint32_t code =
            cd::load_scale(enc.scales.data(), cd::group_of(l, i), storage_bytes) & qcast::detail::all_ones(f.scale.bits());
        const float scale = storage_bytes == 1 ? qcast::decode_element(f.scale, code) : cd::decode_general(s.scale, code);
        v = cd::decoded_in_group(v, scale, enc.tensor_scale, f.tensor_scale);
      }
      y[std::size_t(i)] = v;
    }
  }
  return y;
}

}  // namespace

TEST_CASE("device tensor math: cast, encode and decode as the kernels combine the device functions") {
  std::vector<std::string> names = scaled_format_names();
  for (const auto& n : qcast::named_formats())
    if (!n.format.is_scaled()) names.push_back(n.name);
  for (const char* extra : {"int8@channel:axis=0", "int4@g128:axis=0", "fp4_e2m1@g16+tensor:scale=ue4m3:axis=0",
                            "fp4_e2m1@g24:scale=e8m0", "e3m4fnuzb5", "uint8", "e8m0", "int4@g7:axis=-2"})
    names.emplace_back(extra);
  // Rows of 72: 4.5 blocks of 16, whole and partial blocks (the group kernels); rows of 64: blocks
  // of 8 to 64 that tile them (the fused block kernels).
  for (const int columns : {72, 64})
  for (bool with_nan : {false, true}) {
    const qcast::Shape shape{12, columns};
    std::vector<float> x = qcast_test::scaled_normal_rows(12, columns, 19);
    qcast_test::add_special_rows(x, columns, with_nan);
    for (int c = 0; c < columns; ++c)  // near FLT_MAX
      x[std::size_t(8 * columns + c)] = std::ldexp(1.0f, 127 - c % 8) * 1.5f;
    for (int c = 0; c < columns; ++c)  // subnormal groups
      x[std::size_t(9 * columns + c)] = std::ldexp(float(c + 1), -149 + c % 3);
    for (const std::string& name : names) {
      const qcast::Format f = parsed(name);
      for (const qcast::CastOptions& o : qcast_test::rounding_and_overflow_options()) {
        for (bool lean : {false, true}) {
          const HostEmulation dev(f, shape, o, lean, x);
          if (lean && !dev.lean) continue;  // the same as the general variant
          INFO(name << ", " << option_name(o) << (dev.lean ? ", lean variant" : "") << (with_nan ? ", with NaN" : "")
                    << ", rows of " << columns << (f.is_scaled() && dev.tiles() ? " (fused block kernels)" : ""));
          std::vector<float> want(x.size());
          bool threw = false;
          try {
            qcast::cast(x.data(), want.data(), shape, f, o);
          } catch (const std::domain_error&) {
            threw = true;
          }
          CHECK((dev.error != 0) == threw);
          if (!threw) {
            const std::vector<float> got = dev.cast(x);
            std::size_t first = 0;
            while (first < got.size() && bits(got[first]) == bits(want[first])) ++first;
            INFO("first difference at element " << first << ": x = " << (first < x.size() ? x[first] : 0.0f) << ", "
                 << std::hex << (first < got.size() ? bits(got[first]) : 0u) << " against "
                 << (first < got.size() ? bits(want[first]) : 0u));
            CHECK(differing(got, want) == 0);
          }
          qcast::Encoded enc;
          try {
            enc = qcast::encode(x.data(), shape, f, o);
            threw = false;
          } catch (const std::domain_error&) {
            threw = true;
          }
          std::vector<std::uint8_t> codes, scale_codes;
          const bool ok = dev.encode(x, codes, scale_codes);
          CHECK(ok == !threw);
          if (threw || !ok) continue;
          CHECK(codes == enc.codes);
          CHECK(scale_codes == enc.scales);
          std::vector<float> decoded(x.size());
          qcast::decode(enc, decoded.data());
          CHECK(differing(device_decode(enc), decoded) == 0);
        }
      }
    }
  }
}
