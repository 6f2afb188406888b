// Independent reference for qcast's bit-exact contract, written from the specifications
// (OCP 8-bit Floating Point v1.0, OCP Microscaling Formats v1.0, the NVFP4 recipe) and the format
// contract of docs/formats.md. It never includes a qcast header and shares no code with the
// library: element casts enumerate every code into a value table and search it, where the
// library computes the rounding arithmetically.
#pragma once
#include <cstdint>
#include <vector>

namespace oracle {

enum class Policy { ieee, fn, fnuz, none };
enum class Mode { even, away, zero };

struct Minifloat {
  int ebits, mbits, bias;
  Policy policy;
};

// The named element formats of the contract.
Minifloat e4m3();      // fp8_e4m3 (fn, bias 7), max 448
Minifloat e5m2();      // fp8_e5m2 (ieee, bias 15), max 57344
Minifloat e4m3fnuz();  // bias 8, max 240
Minifloat e5m2fnuz();  // bias 16, max 57344
Minifloat e2m3();      // max 7.5
Minifloat e3m2();      // max 28
Minifloat e2m1();      // max 6

// Every finite non-negative value of a format with the code of its magnitude, ascending.
struct Entry {
  double value;
  std::uint32_t code;
};
std::vector<Entry> value_table(const Minifloat& f);
double max_value(const Minifloat& f);

// Value of a full code (sign included) of a signed minifloat; NaN for NaN codes, ±inf for Inf.
double decode(const Minifloat& f, std::uint32_t code);

// Direct, saturating cast of x (exact double input) by table search: NaN -> NaN, ±Inf and
// |x| > max -> ±max, nearest value otherwise with ties to the even code (Mode::even), ties away
// (Mode::away), or truncation (Mode::zero). -0 stays -0 except for fnuz (+0).
double cast(const Minifloat& f, double x, Mode mode = Mode::even);
// The two neighbours of |x| in the table (lo <= |x| <= hi), signed like x; for stochastic rounding.
void neighbours(const Minifloat& f, double x, double& lo, double& hi);

// Scaled formats over a rows x cols row-major matrix; blocks run along the last axis.
std::vector<float> mx(const std::vector<float>& x, int rows, int cols, const Minifloat& elem);
std::vector<float> mxint8(const std::vector<float>& x, int rows, int cols);
// NVFP4 recipe: amax_t is the largest finite |x| of the tensor, or given_amax_t where that is > 0
// (a static, calibrated tensor amax; block scales above 448 saturate, as the e4m3 cast does).
std::vector<float> nvfp4(const std::vector<float>& x, int rows, int cols, float given_amax_t = 0.0f);
// NVINT4: int4 elements in blocks of 16 with e4m3 scales under a binary32 tensor scale (NVFP4's
// recipe with the int4 grid), the same given_amax_t convention.
std::vector<float> nvint4(const std::vector<float>& x, int rows, int cols, float given_amax_t = 0.0f);
// Symmetric narrow-range integers: group = 0 for per tensor, -1 for per channel (axis 0),
// otherwise groups of `group` along the last axis.
std::vector<float> intq(const std::vector<float>& x, int rows, int cols, int bits, int group);

}  // namespace oracle
