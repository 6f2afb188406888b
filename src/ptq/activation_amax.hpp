// The static amax of activation quantizers, measured on the float stream's layer inputs over the
// calibration set (ActivationOptions::Amax). One or two passes: the max first; then, for the
// percentile, a histogram over [0, max], and for the MSE clip, each candidate's squared cast error.
// Every statistic is a sum or a max over elements, so it does not depend on how the samples are
// batched (the histogram's counts are exact; the squared errors are summed in float64 per batch,
// and only their order of addition changes with the batching). Internal to src/ptq.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstddef>
#include <vector>

#include "qcast/format.hpp"
#include "qcast/ptq/engine.hpp"

namespace qcast::ptq::detail {

class AmaxCalibration {
 public:
  // One quantizer per format (the format of the cast, axis included).
  AmaxCalibration(const ActivationOptions& options, std::vector<Format> formats);
  int passes() const { return options_.amax == ActivationOptions::Amax::max ? 1 : 2; }
  // x: the float stream's input of quantizer i in pass `pass` (0-based), one batch.
  void observe(int pass, std::size_t i, const at::Tensor& x);
  // Quantizer i's amax after the last pass; 0 when its inputs were all zero (or not finite).
  float amax(std::size_t i) const;

  static constexpr int histogram_bins = 2048;
  static constexpr int mse_candidates = 20;

 private:
  ActivationOptions options_;
  std::vector<Format> formats_;
  std::vector<float> max_;
  std::vector<std::vector<double>> counts_;  // histogram, or squared error per candidate
};

}  // namespace qcast::ptq::detail
