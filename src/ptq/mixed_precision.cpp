// quantize(): one pipeline pass, or for mixed precision (Options::mixed) a sensitivity pass, the
// exact allocation under the budget, and the pass that quantizes with it
// (docs/design/0014-mixed-precision.md).
#include <ATen/ATen.h>

#include <chrono>
#include <cmath>
#include <stdexcept>
#include <string>

#include <fmt/format.h>

#include "pipeline_run.hpp"
#include "qcast/format_names.hpp"
#include "qcast/ptq/allocation.hpp"

namespace qcast::ptq {
namespace detail {

at::Tensor probe_output(const c10::IValue& output, bool log_softmax) {
  c10::IValue v = output;
  if (v.isTuple() && !v.toTupleRef().elements().empty()) v = v.toTupleRef().elements()[0];
  else if (v.isList() && v.toListRef().size() > 0) v = v.toListRef()[0];
  else if (v.isGenericDict() && v.toGenericDict().size() > 0) v = v.toGenericDict().begin()->value();
  if (!v.isTensor())
    throw std::invalid_argument("the probing sensitivities (gain, the default, and e2e) need a model whose output is a tensor (or holds one "
                                "first); it returns " + output.tagKind() + " (--sensitivity output needs no probe)");
  const at::Tensor t = v.toTensor().detach().to(at::kCPU, at::kDouble);
  if (t.dim() == 0)
    throw std::invalid_argument("the probing sensitivities (gain, the default, and e2e) need a model output with at least one axis; it is a "
                                "scalar (--sensitivity output needs no probe)");
  return log_softmax ? at::log_softmax(t.reshape({-1, t.size(-1)}), -1) : t;
}

std::pair<double, double> squared_error(const at::Tensor& ref, const at::Tensor& q) {
  if (!ref.sizes().equals(q.sizes())) throw std::logic_error("end-to-end probe: the output's shape changed");
  return {(q - ref).pow(2).sum().item<double>(), ref.pow(2).sum().item<double>()};
}

double mean_kl(const at::Tensor& log_p, const at::Tensor& log_q) {
  const double kl = (log_p.exp() * (log_p - log_q)).sum(-1).mean().item<double>();
  return std::isfinite(kl) ? std::max(kl, 0.0) : 1e30;
}

}  // namespace detail

namespace {

using Sensitivity = MixedPrecision::Sensitivity;
constexpr std::pair<Sensitivity, const char*> sensitivity_names[] = {
    {Sensitivity::output, "output"}, {Sensitivity::end_to_end, "e2e"}, {Sensitivity::end_to_end_mse, "e2e-mse"},
    {Sensitivity::gain, "gain"},     {Sensitivity::gain_mse, "gain-mse"}};

}  // namespace

const char* sensitivity_name(Sensitivity s) {
  for (const auto& [v, name] : sensitivity_names)
    if (v == s) return name;
  throw std::logic_error("unnamed sensitivity");
}

Sensitivity sensitivity_from_name(const std::string& name) {
  std::string valid;
  for (const auto& [v, n] : sensitivity_names) {
    if (name == n) return v;
    valid += std::string(valid.empty() ? "" : ", ") + n;
  }
  throw std::invalid_argument("unknown sensitivity '" + name + "'; valid values are " + valid);
}

namespace {

using Clock = std::chrono::steady_clock;

std::string bits_text(double b) { return fmt::format("{:.4g}", b); }

void check_mixed_options(const Options& o, const std::vector<Batch>& calibration) {
  const MixedPrecision& m = o.mixed;
  if (!m.any()) {
    if (m.budget_bits >= 0 || m.budget_bytes >= 0)
      throw std::invalid_argument("a size budget allocates formats among candidates; none were given (--candidates)");
    return;
  }
  if ((m.budget_bits >= 0) == (m.budget_bytes >= 0))
    throw std::invalid_argument("mixed precision needs one budget: bits per weight (--budget) or bytes (--budget-mb)");
  if (m.budget_bits >= 0 && !(m.budget_bits > 0 && m.budget_bits <= 64))
    throw std::invalid_argument("the budget in bits per weight must be in (0, 64], got " + bits_text(m.budget_bits));
  if (calibration.empty())
    throw std::invalid_argument("mixed precision measures each layer's sensitivity on calibration data; none was given");
  if (!o.search_formats.empty() || !o.search_clips.empty())
    throw std::invalid_argument("mixed precision chooses each layer's format itself; it does not combine with the format search");
  if (o.hadamard_block < 0)
    throw std::invalid_argument("mixed precision gives layers formats of different blocks; give the rotation's block (hadamard:B)");
  for (std::size_t i = 0; i < m.candidates.size(); ++i)
    for (std::size_t j = 0; j < i; ++j)
      if (m.candidates[i].has_value() == m.candidates[j].has_value() &&
          (!m.candidates[i] || format_name(*m.candidates[i]) == format_name(*m.candidates[j])))
        throw std::invalid_argument("candidate " +
                                    (m.candidates[i] ? format_name(*m.candidates[i]) : std::string("float")) + " is given twice");
}

}  // namespace

Result quantize(const torch::jit::Module& model, const std::vector<Batch>& calibration, const Options& o) {
  check_mixed_options(o, calibration);
  if (!o.mixed.any()) return detail::run_pipeline(model, calibration, o, nullptr, nullptr);
  const auto start = Clock::now();
  detail::LayerAssignments formats;  // what each layer's candidates are
  const Result measured = detail::run_pipeline(model, calibration, o, nullptr, &formats);

  // The knapsack: each measured layer's candidates as (bytes, cost).
  std::vector<const LayerReport*> layers;
  std::vector<std::vector<AllocationChoice>> problem;
  AllocationReport ar;
  ar.sensitivity = sensitivity_name(o.mixed.sensitivity);
  for (const auto& c : o.mixed.candidates) ar.candidates.push_back(c ? format_name(*c) : "float");
  std::int64_t largest = 0;
  for (const LayerReport& lr : measured.report.layers) {
    if (lr.status != "measured") continue;
    layers.push_back(&lr);
    std::int64_t n = 1;
    for (const std::int64_t d : lr.shape) n *= d;
    ar.weights += n;
    std::vector<AllocationChoice> choices;
    std::int64_t hi = 0;
    for (const auto& c : lr.candidates) {
      choices.push_back({c.bytes, c.cost});
      hi = std::max(hi, c.bytes);
    }
    largest += hi;
    problem.push_back(std::move(choices));
  }
  if (layers.empty()) throw std::invalid_argument("mixed precision: no layer is quantized (every one is excluded or unsupported)");
  ar.budget_bytes = o.mixed.budget_bytes >= 0 ? o.mixed.budget_bytes
                                              : std::int64_t(std::floor(o.mixed.budget_bits * double(ar.weights) / 8.0));
  const Allocation a = allocate(problem, ar.budget_bytes);
  if (!a.feasible)
    throw std::invalid_argument(fmt::format(
        "the budget ({} bytes, {} bits per weight over {} weights) is below the smallest assignment: {} bytes, {} bits per weight "
        "(every layer at its smallest candidate)",
        ar.budget_bytes, bits_text(ar.budget_bits_per_weight()), ar.weights, a.least_bytes,
        bits_text(8.0 * double(a.least_bytes) / double(ar.weights))));
  ar.bytes = a.bytes;
  ar.cost = a.cost;
  ar.states = std::int64_t(a.states);
  // The curve: the least summed sensitivity at budgets from the smallest assignment to the largest.
  const int points = 32;
  for (int i = 0; i <= points; ++i) {
    const std::int64_t cap = a.least_bytes + std::int64_t(std::floor(double(largest - a.least_bytes) * double(i) / points));
    const Allocation c = allocate(problem, cap);
    ar.curve.emplace_back(8.0 * double(cap) / double(ar.weights), c.cost);
  }
  detail::LayerAssignment assignment;
  for (std::size_t l = 0; l < layers.size(); ++l) assignment[layers[l]->name] = formats.at(layers[l]->name).at(a.choice[l]);
  ar.seconds = std::chrono::duration<double>(Clock::now() - start).count();

  Result r = detail::run_pipeline(model, calibration, o, &assignment, nullptr);
  for (LayerReport& lr : r.report.layers)
    for (const LayerReport* m : layers)
      if (m->name == lr.name) {
        lr.candidates = m->candidates;
        if (const auto g = m->notes.find("output_gain"); g != m->notes.end()) lr.notes["output_gain"] = g->second;
      }
  r.report.allocation = ar;
  r.report.format = "mixed";
  r.report.seconds += ar.seconds;
  r.report.options.emplace_back("sensitivity", ar.sensitivity);
  for (const auto& c : ar.candidates) r.report.options.emplace_back("candidate", c);
  if (o.mixed.budget_bits >= 0) r.report.options.emplace_back("budget", bits_text(o.mixed.budget_bits));
  else r.report.options.emplace_back("budget-bytes", std::to_string(o.mixed.budget_bytes));
  return r;
}

}  // namespace qcast::ptq
