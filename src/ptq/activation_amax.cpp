// The static amax of activation quantizers (activation_amax.hpp).
#include "activation_amax.hpp"

#include <ATen/ATen.h>

#include <cmath>
#include <stdexcept>

#include "qcast/torch.hpp"

namespace qcast::ptq::detail {

AmaxCalibration::AmaxCalibration(const ActivationOptions& options, std::vector<Format> formats)
    : options_(options), formats_(std::move(formats)), max_(formats_.size(), 0.0f), counts_(formats_.size()) {
  if (options_.amax == ActivationOptions::Amax::percentile && !(options_.percentile > 0 && options_.percentile <= 100))
    throw std::invalid_argument("the activation amax percentile must be in (0, 100], got " + std::to_string(options_.percentile));
  const std::size_t n = options_.amax == ActivationOptions::Amax::percentile ? histogram_bins : mse_candidates;
  for (auto& c : counts_) c.assign(n, 0.0);
}

namespace {
// max * 2^(-j/4): candidate j of the MSE clip.
float candidate(float max, int j) { return float(double(max) * std::exp2(-double(j) / 4.0)); }
}  // namespace

void AmaxCalibration::observe(int pass, std::size_t i, const at::Tensor& x) {
  const at::Tensor a = x.detach().to(at::kFloat).abs();
  if (pass == 0) {
    const at::Tensor finite = at::where(at::isfinite(a), a, at::zeros({}, a.options()));
    if (finite.numel()) max_[i] = std::max(max_[i], finite.max().item<float>());
    return;
  }
  const float m = max_[i];
  if (!(m > 0) || !std::isfinite(m)) return;
  if (options_.amax == ActivationOptions::Amax::percentile) {
    // histc counts values in [0, m]; NaN and Inf fall outside.
    const at::Tensor h = at::histc(a.flatten(), histogram_bins, 0.0, double(m)).to(at::kCPU, at::kDouble);
    const double* p = h.data_ptr<double>();
    for (int b = 0; b < histogram_bins; ++b) counts_[i][std::size_t(b)] += p[b];
    return;
  }
  for (int j = 0; j < mse_candidates; ++j) {
    const float c = candidate(m, j);
    if (!(c > 0)) continue;
    const at::Tensor y = qcast::cast_calibrated(x.detach(), formats_[i], c);
    const at::Tensor e = (y.to(at::kDouble) - x.detach().to(at::kDouble));
    counts_[i][std::size_t(j)] += at::where(at::isfinite(e), e, at::zeros({}, e.options())).pow(2).sum().item<double>();
  }
}

float AmaxCalibration::amax(std::size_t i) const {
  const float m = max_[i];
  if (!(m > 0) || !std::isfinite(m)) return 0.0f;
  const std::vector<double>& c = counts_[i];
  switch (options_.amax) {
    case ActivationOptions::Amax::max: return m;
    case ActivationOptions::Amax::percentile: {
      double total = 0;
      for (double v : c) total += v;
      const double target = std::ceil(options_.percentile / 100.0 * total);
      double cum = 0;
      for (int b = 0; b < histogram_bins; ++b) {
        cum += c[std::size_t(b)];
        if (cum >= target) return b + 1 == histogram_bins ? m : float(double(m) * (b + 1) / histogram_bins);
      }
      return m;
    }
    case ActivationOptions::Amax::mse: {
      int best = 0;
      for (int j = 1; j < mse_candidates; ++j)
        if (c[std::size_t(j)] < c[std::size_t(best)]) best = j;
      return candidate(m, best);
    }
  }
  return m;
}

}  // namespace qcast::ptq::detail
