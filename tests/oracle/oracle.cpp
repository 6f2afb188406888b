#include "oracle.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

namespace oracle {

Minifloat e4m3() { return {4, 3, 7, Policy::fn}; }
Minifloat e5m2() { return {5, 2, 15, Policy::ieee}; }
Minifloat e4m3fnuz() { return {4, 3, 8, Policy::fnuz}; }
Minifloat e5m2fnuz() { return {5, 2, 16, Policy::fnuz}; }
Minifloat e2m3() { return {2, 3, 1, Policy::none}; }
Minifloat e3m2() { return {3, 2, 3, Policy::none}; }
Minifloat e2m1() { return {2, 1, 1, Policy::none}; }

namespace {

const double kNaN = std::numeric_limits<double>::quiet_NaN();

// Value of a magnitude code, or NaN/inf where the policy reserves it.
double magnitude_value(const Minifloat& f, std::uint32_t mag) {
  const std::uint32_t exp_field = mag >> f.mbits;
  const std::uint32_t mant = mag & ((1u << f.mbits) - 1);
  const std::uint32_t exp_ones = (1u << f.ebits) - 1;
  if (f.policy == Policy::ieee && exp_field == exp_ones) return mant ? kNaN : INFINITY;
  if (f.policy == Policy::fn && exp_field == exp_ones && mant == (1u << f.mbits) - 1) return kNaN;
  if (exp_field == 0) return mant * std::pow(2.0, 1 - f.bias - f.mbits);
  return (1.0 + mant / std::pow(2.0, f.mbits)) * std::pow(2.0, int(exp_field) - f.bias);
}

// floor(log2 |x|) of a nonzero finite binary32, read off its bit fields.
int exponent_of(float x) {
  std::uint32_t u;
  std::memcpy(&u, &x, 4);
  const int field = int((u >> 23) & 0xFF);
  std::uint32_t mant = u & 0x7FFFFF;
  if (field) return field - 127;
  int top = 22;
  while (!(mant >> top)) --top;
  return top - 149;
}

bool finite_block(const std::vector<float>& x, int from, int to) {
  for (int i = from; i < to; ++i)
    if (!std::isfinite(x[i])) return false;
  return true;
}

float block_amax(const std::vector<float>& x, int from, int to) {
  float m = 0.0f;
  for (int i = from; i < to; ++i) m = std::max(m, std::fabs(x[i]));
  return m;
}

}  // namespace

std::vector<Entry> value_table(const Minifloat& f) {
  std::vector<Entry> t;
  for (std::uint32_t mag = 0; mag < (1u << (f.ebits + f.mbits)); ++mag) {
    const double v = magnitude_value(f, mag);
    if (std::isfinite(v)) t.push_back({v, mag});
  }
  std::sort(t.begin(), t.end(), [](const Entry& a, const Entry& b) { return a.value < b.value; });
  return t;
}

double max_value(const Minifloat& f) { return value_table(f).back().value; }

double decode(const Minifloat& f, std::uint32_t code) {
  const std::uint32_t sign = code >> (f.ebits + f.mbits) & 1;
  const std::uint32_t mag = code & ((1u << (f.ebits + f.mbits)) - 1);
  if (f.policy == Policy::fnuz && sign && mag == 0) return kNaN;
  const double v = magnitude_value(f, mag);
  return sign ? -v : v;
}

void neighbours(const Minifloat& f, double x, double& lo, double& hi) {
  const std::vector<Entry> t = value_table(f);
  const double a = std::fabs(x);
  if (a >= t.back().value) {
    lo = hi = t.back().value;
  } else {
    auto up = std::lower_bound(t.begin(), t.end(), a, [](const Entry& e, double v) { return e.value < v; });
    hi = up->value;
    lo = up->value == a ? a : (up - 1)->value;
  }
  if (std::signbit(x)) lo = -lo, hi = -hi;
}

double cast(const Minifloat& f, double x, Mode mode) {
  if (std::isnan(x)) return kNaN;
  const std::vector<Entry> t = value_table(f);
  const double a = std::fabs(x);
  double r;
  if (a >= t.back().value) {
    r = t.back().value;
  } else {
    std::size_t i = std::lower_bound(t.begin(), t.end(), a, [](const Entry& e, double v) { return e.value < v; }) - t.begin();
    if (t[i].value == a) {
      r = a;
    } else {
      const Entry& lo = t[i - 1];
      const Entry& hi = t[i];
      if (mode == Mode::zero) r = lo.value;
      else if (2 * a < lo.value + hi.value) r = lo.value;
      else if (2 * a > lo.value + hi.value) r = hi.value;
      else if (mode == Mode::away) r = hi.value;
      else r = (lo.code % 2 == 0) ? lo.value : hi.value;
    }
  }
  if (f.policy == Policy::fnuz && r == 0) return 0.0;
  return std::signbit(x) ? -r : r;
}

std::vector<float> mx(const std::vector<float>& x, int rows, int cols, const Minifloat& elem) {
  // OCP MX v1.0 §6.3: X = 2^(floor(log2(amax)) - emax_elem), emax_elem = exponent of the largest normal.
  const int emax_elem = int(std::floor(std::log2(max_value(elem))));
  std::vector<float> out(x.size());
  for (int r = 0; r < rows; ++r)
    for (int b = 0; b < cols; b += 32) {
      const int from = r * cols + b, to = r * cols + std::min(cols, b + 32);
      const float amax = block_amax(x, from, to);
      for (int i = from; i < to; ++i) {
        if (!finite_block(x, from, to)) out[i] = std::numeric_limits<float>::quiet_NaN();
        else if (amax == 0.0f) out[i] = x[i];
        else {
          const int e = std::clamp(exponent_of(amax) - emax_elem, -127, 127);
          const double scale = std::ldexp(1.0, e);
          out[i] = float(cast(elem, double(x[i]) / scale) * scale);
        }
      }
    }
  return out;
}

std::vector<float> mxint8(const std::vector<float>& x, int rows, int cols) {
  std::vector<float> out(x.size());
  for (int r = 0; r < rows; ++r)
    for (int b = 0; b < cols; b += 32) {
      const int from = r * cols + b, to = r * cols + std::min(cols, b + 32);
      const float amax = block_amax(x, from, to);
      for (int i = from; i < to; ++i) {
        if (!finite_block(x, from, to)) out[i] = std::numeric_limits<float>::quiet_NaN();
        else if (amax == 0.0f) out[i] = x[i];
        else {
          const int e = std::clamp(exponent_of(amax) - 0, -127, 127);  // emax of int8 (1.984375) is 0
          const double scale = std::ldexp(1.0, e);
          const double k = std::clamp(std::nearbyint(double(x[i]) / scale * 64.0), -127.0, 127.0);
          out[i] = float(k / 64.0 * scale);
        }
      }
    }
  return out;
}

// The NVFP4 recipe over any element grid with maximum elem_max, quantized by q(v): blocks of 16;
// amax_t the tensor's finite amax (or the given one); s_t = amax_t / (elem_max * 448), floored at
// 2^-128 because the recipe clamps the encode scale (elem_max * 448) / amax_t to FLT_MAX;
// d = (amax_b / elem_max) / s_t; s_b = the e4m3 cast of d; y = (q(x / (s_b * s_t)) * s_b) * s_t.
template <class Quantize>
std::vector<float> two_level(const std::vector<float>& x, int rows, int cols, float given_amax_t, float elem_max,
                             Quantize q) {
  float amax_t = given_amax_t;
  if (!(given_amax_t > 0.0f))
    for (float v : x)
      if (std::isfinite(v)) amax_t = std::max(amax_t, std::fabs(v));
  float s_t = amax_t / (elem_max * 448.0f);
  if (amax_t > 0.0f) s_t = std::max(s_t, float(1.0 / double(std::numeric_limits<float>::max())));
  std::vector<float> out(x.size());
  for (int r = 0; r < rows; ++r)
    for (int b = 0; b < cols; b += 16) {
      const int from = r * cols + b, to = r * cols + std::min(cols, b + 16);
      const bool finite = finite_block(x, from, to);
      const float amax_b = block_amax(x, from, to);
      const float d = (amax_b / elem_max) / s_t;
      const float s_b = float(cast(e4m3(), double(d)));
      for (int i = from; i < to; ++i) {
        if (!finite) out[i] = std::numeric_limits<float>::quiet_NaN();
        else if (amax_t == 0.0f) out[i] = x[i];
        else if (s_b == 0.0f) out[i] = std::copysign(0.0f, x[i]);
        else out[i] = (q(x[i] / (s_b * s_t)) * s_b) * s_t;
      }
    }
  return out;
}

std::vector<float> nvfp4(const std::vector<float>& x, int rows, int cols, float given_amax_t) {
  return two_level(x, rows, cols, given_amax_t, 6.0f, [](float v) { return float(cast(e2m1(), double(v))); });
}

std::vector<float> nvint4(const std::vector<float>& x, int rows, int cols, float given_amax_t) {
  // int4 elements: ties to even, narrow range [-7, 7].
  return two_level(x, rows, cols, given_amax_t, 7.0f, [](float v) { return std::min(7.0f, std::max(-7.0f, std::nearbyint(v))); });
}

std::vector<float> intq(const std::vector<float>& x, int rows, int cols, int bits, int group) {
  const float qmax = float((1 << (bits - 1)) - 1);
  std::vector<float> out(x.size());
  auto run = [&](const std::vector<int>& idx) {
    bool finite = true;
    float amax = 0.0f;
    for (int i : idx) {
      finite = finite && std::isfinite(x[i]);
      amax = std::max(amax, std::fabs(x[i]));
    }
    const float scale = amax / qmax;
    for (int i : idx) {
      if (!finite) out[i] = std::numeric_limits<float>::quiet_NaN();
      else if (amax == 0.0f) out[i] = x[i];
      else out[i] = std::clamp(std::nearbyint(x[i] / scale), -qmax, qmax) * scale;
    }
  };
  std::vector<int> idx;
  if (group == 0) {
    for (int i = 0; i < rows * cols; ++i) idx.push_back(i);
    run(idx);
  } else if (group < 0) {
    for (int r = 0; r < rows; ++r) {
      idx.clear();
      for (int c = 0; c < cols; ++c) idx.push_back(r * cols + c);
      run(idx);
    }
  } else {
    for (int r = 0; r < rows; ++r)
      for (int b = 0; b < cols; b += group) {
        idx.clear();
        for (int c = b; c < std::min(cols, b + group); ++c) idx.push_back(r * cols + c);
        run(idx);
      }
  }
  return out;
}

}  // namespace oracle
