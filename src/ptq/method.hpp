// The interface of a PTQ method plug-in. A method is one file, src/ptq/methods/<name>.cpp, that
// defines QCAST_PTQ_METHOD(<name>) returning its MethodPlugin; the build lists the folder and
// registers every file in it (method_registry.cpp), so the CLI's method list, help and errors come
// from the plug-ins themselves. Internal to src/ptq.
#pragma once
#include <ATen/core/Tensor.h>

#include <array>
#include <cstdint>
#include <functional>
#include <map>
#include <string>

#include "bounded_rounding.hpp"
#include "qcast/ptq/engine.hpp"
#include "qcast/ptq/weight_grid.hpp"

namespace qcast::ptq::detail {

// A method's option values, checked against its declaration (defaults filled in).
class MethodValues {
 public:
  MethodValues(const MethodInfo& info, const std::map<std::string, std::string>& given);
  bool flag(const std::string& name) const;
  const std::string& choice(const std::string& name) const { return text(name); }
  std::int64_t integer(const std::string& name) const;
  double real(const std::string& name) const;

 private:
  const std::string& text(const std::string& name) const;
  std::string method_;
  std::map<std::string, std::string> values_;
};

// One group of rows of a weight matrix (a grouped convolution or a bmm weight has several; most
// layers one), with its calibration statistics.
struct GroupProblem {
  at::Tensor w;         // [rows, cols] float64 on the CPU, contiguous (a copy the method may change)
  at::Tensor g;         // X̂X̂ᵀ [cols, cols] float64; undefined when the run has no calibration data
  at::Tensor d;         // (X − X̂)X̂ᵀ [cols, cols] float64 (so XX̂ᵀ = g + d); likewise
  std::array<at::Tensor, 2> half_g, half_d;  // g and d over the even and the odd calibration samples
  std::int64_t row0 = 0;         // first row of the group in the grid
  WeightGrid* grid = nullptr;    // rounding: every value of the result must be grid->quantize(...) of its row and column
  const MethodValues* options = nullptr;
  // The run's accumulator bound for this layer (nullptr: none): a method that declares
  // bounds_accumulator rounds every element through a BoundedRounding of it.
  const AccumulatorBound* accumulator = nullptr;
  // Set by the engine when learned rounding starts from this method's result (FlexRound --start): a
  // method that walks columns leaves the values it rounded in `rounded` (ColumnWalk::rounded); one
  // that leaves it undefined rounded w itself, to nearest.
  bool record_rounded = false;
  at::Tensor rounded;
  // What the method wants the report to show for this layer (e.g. ED's fold factor), by name; the
  // report gives the mean over the layer's groups.
  std::map<std::string, double> notes;
};

struct MethodPlugin {
  MethodInfo info;
  // Returns Ŵ [rows, cols] float64 on the grid. Runs with LibTorch's intra-op threads set to one, so
  // that the result has the same bits for any thread count.
  std::function<at::Tensor(GroupProblem&)> solve;
};

const MethodPlugin& find_plugin(const std::string& name);

// Options several methods share, declared once.
inline MethodOption lazy_batch_option() {
  return {"lazy-batch", MethodOption::Kind::integer, "128", "columns per lazy batch update (rounded up to whole blocks)"};
}
// --scales static|diffused, static by default (docs/design/0008-error-diffusion-fold.md); `diffused`
// says where the scales come from for this method. With `mse` (a method whose walk takes
// ColumnWalk::scales_mse, solvers.hpp) the choice mse is offered too (design 0008, decision 5).
inline MethodOption scales_option(const std::string& diffused, bool mse = false) {
  MethodOption o{"scales", MethodOption::Kind::choice, "static", "block scales from the float weights, or " + diffused,
                 {"static", "diffused"}};
  if (mse) {
    o.help += "; mse: from the float weights, each block's amax scaled by the factor in 0.5, 0.525, ..., 2 "
              "with the least input-weighted squared rounding error (1 on ties)";
    o.choices.push_back("mse");
  }
  return o;
}

}  // namespace qcast::ptq::detail

// In src/ptq/methods/NAME.cpp: QCAST_PTQ_METHOD(NAME) { return {info, solve}; }
#define QCAST_PTQ_METHOD(NAME) ::qcast::ptq::detail::MethodPlugin qcast_ptq_method_##NAME()
