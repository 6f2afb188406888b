// The engine's pipeline pass, and what mixed precision adds around it (src/ptq/mixed_precision.cpp
// runs it twice: to measure, then to quantize). Internal to src/ptq.
#pragma once
#include <ATen/core/Tensor.h>
#include <ATen/core/ivalue.h>

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "qcast/ptq/engine.hpp"

namespace qcast::ptq::detail {

// Layer name -> its format from an allocation (std::nullopt: float); it wins over Options' formats.
using LayerAssignment = std::map<std::string, std::optional<Format>>;
// Layer name -> the formats it may take, in the order of its report's `candidates`.
using LayerAssignments = std::map<std::string, std::vector<std::optional<Format>>>;

// One pass of the pipeline. With `measured`, the sensitivity pass: every planned layer is solved
// with each candidate of options.mixed (only its own format where --layer-format pins it) on the
// float model's inputs, scored into its report's `candidates` (their formats into `measured`), and
// left in float (status "measured"); no model is saved.
Result run_pipeline(const torch::jit::Module& model, const std::vector<Batch>& calibration, const Options& options,
                    const LayerAssignment* assignment, LayerAssignments* measured);

// The model's output for an end-to-end probe, float64 on the CPU: its first tensor (of a tuple, list
// or dict, the first one that is a tensor), as log-probabilities over its last axis (log_softmax)
// or as it is. Throws naming what it got otherwise.
at::Tensor probe_output(const c10::IValue& output, bool log_softmax);
// Mean KL(P || Q) over the rows of two log-probabilities of the same shape; non-finite: 1e30.
double mean_kl(const at::Tensor& log_p, const at::Tensor& log_q);
// ||q - ref||² and ||ref||² summed (for a relative squared error over several batches).
std::pair<double, double> squared_error(const at::Tensor& ref, const at::Tensor& q);

}  // namespace qcast::ptq::detail
