// FlexRound's learnable rounding and the training of one span (flexround.hpp).
#include "flexround.hpp"

#include <ATen/ATen.h>
#include <torch/optim/adam.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>
#include <random>
#include <regex>
#include <cctype>
#include <stdexcept>

namespace qcast::ptq::detail {

FlexRoundWeight::FlexRoundWeight(const at::Tensor& w, const Format& format, std::int64_t cols_per_channel,
                                 const at::Tensor& start)
    : w_((start.defined() ? start : w).to(at::kCPU, at::kDouble).contiguous().clone()),
      scale_w_(start.defined() ? w.to(at::kCPU, at::kDouble).contiguous().clone() : w_),
      format_(weight_format(format)),
      rows_(w.size(0)),
      cols_(w.size(1)),
      cols_per_channel_(cols_per_channel),
      scaled_(format_.is_scaled()),
      element_max_(format_.element.max_value()) {
  if (w.dim() != 2) throw std::logic_error("FlexRoundWeight: a weight matrix has two dimensions");
  if (start.defined() && start.sizes() != w.sizes()) throw std::logic_error("FlexRoundWeight: a start of another shape");
  if (cols_per_channel_ > 0 && cols_ % cols_per_channel_ != 0)
    throw std::logic_error("FlexRoundWeight: the columns do not split into input channels");
  if (scaled_) {
    const at::Tensor a = scale_w_.abs();
    if (format_.granularity == Granularity::block) {
      group_cols_ = format_.block_size;
      const std::int64_t groups = (cols_ + group_cols_ - 1) / group_cols_;
      const at::Tensor padded = at::constant_pad_nd(a, {0, groups * group_cols_ - cols_});
      amax0_ = std::get<0>(padded.reshape({rows_, groups, group_cols_}).max(2));
    } else if (format_.granularity == Granularity::channel) {
      group_cols_ = int(cols_);
      amax0_ = std::get<0>(a.max(1, true));
    } else {
      group_cols_ = int(cols_);
      amax0_ = a.max().reshape({1, 1});
    }
  }
  reset();
}

void FlexRoundWeight::reset() {
  const auto opts = at::TensorOptions().dtype(at::kDouble);
  log_s2_ = at::zeros({rows_, cols_}, opts).requires_grad_(true);
  log_s3_ = at::zeros({rows_, 1}, opts).requires_grad_(true);
  if (cols_per_channel_ > 0) log_s4_ = at::zeros({1, cols_ / cols_per_channel_}, opts).requires_grad_(true);
  if (scaled_) log2_s1_ = at::zeros_like(amax0_).requires_grad_(true);
}

std::vector<at::Tensor> FlexRoundWeight::snapshot() const {
  std::vector<at::Tensor> out;
  for (const auto& p : parameters()) out.push_back(p.detach().clone());
  return out;
}

void FlexRoundWeight::restore(const std::vector<at::Tensor>& values) {
  at::NoGradGuard no_grad;
  const std::vector<at::Tensor> p = parameters();
  if (p.size() != values.size()) throw std::logic_error("FlexRoundWeight: a snapshot of another weight");
  for (std::size_t i = 0; i < p.size(); ++i) p[i].copy_(values[i]);
}

std::vector<at::Tensor> FlexRoundWeight::parameters() const {
  std::vector<at::Tensor> p{log_s2_, log_s3_};
  if (log_s4_.defined()) p.push_back(log_s4_);
  if (log2_s1_.defined()) p.push_back(log2_s1_);
  return p;
}

at::Tensor FlexRoundWeight::per_element(const at::Tensor& g) const {
  at::Tensor e = g;
  if (format_.granularity == Granularity::block) e = at::repeat_interleave(g, group_cols_, 1).narrow(1, 0, cols_);
  return e.expand({rows_, cols_});
}

at::Tensor FlexRoundWeight::group_amax() const {
  at::NoGradGuard no_grad;
  return amax0_ * at::exp2(log2_s1_);
}

at::Tensor FlexRoundWeight::divided_with_gradients() const {
  at::Tensor log_s = log_s2_ + log_s3_;
  if (log_s4_.defined()) log_s = log_s + at::repeat_interleave(log_s4_, cols_per_channel_, 1);
  return w_ / log_s.exp();
}

at::Tensor FlexRoundWeight::divided() const {
  at::NoGradGuard no_grad;
  return divided_with_gradients();
}

void FlexRoundWeight::fix_scales(WeightGrid& grid) const {
  if (!scaled_) return;
  if (grid.rows() != rows_ || grid.cols() != cols_) throw std::logic_error("FlexRoundWeight: a grid of another shape");
  fix_groups(grid, group_amax().contiguous());
}

void FlexRoundWeight::fix_groups(WeightGrid& grid, const at::Tensor& amax) const {
  const auto a = amax.accessor<double, 2>();
  for (std::int64_t r = 0; r < amax.size(0); ++r)
    for (std::int64_t g = 0; g < amax.size(1); ++g) grid.fix_group(r, g * group_cols_, a[r][g]);
}

at::Tensor FlexRoundWeight::grid_values(const at::Tensor& divided, const at::Tensor& amax) const {
  WeightGrid grid(format_, rows_, cols_, scale_w_.data_ptr<double>());
  if (scaled_) fix_groups(grid, amax);
  at::Tensor q = divided.contiguous().clone();
  double* p = q.data_ptr<double>();
  for (std::int64_t r = 0; r < rows_; ++r)
    for (std::int64_t c = 0; c < cols_; ++c) p[r * cols_ + c] = grid.quantize(r, c, p[r * cols_ + c]);
  return q;
}

at::Tensor FlexRoundWeight::forward() const {
  const at::Tensor wd = divided_with_gradients();
  if (!scaled_) {
    const at::Tensor q = grid_values(wd.detach(), at::Tensor());
    const at::Tensor e = at::where(wd.detach().abs() <= element_max_, wd, q);
    return q + (e - e.detach());
  }
  const at::Tensor amax = amax0_ * at::exp2(log2_s1_);
  const at::Tensor q = grid_values(wd.detach(), amax.detach().contiguous());
  // s1 as the ideal (unrounded) scale amax / max element; the grid's own scale rule rounds it, and
  // the forward value is q exactly (q + (e - e) below), so that rounding passes straight through.
  // An element beyond the largest value saturates: it has no gradient of its own, and its value
  // moves with s1 alone (d Ŵ / d s1 = round(v), as learned step sizes clip). Passing saturated
  // elements straight through instead gives d Ŵ / d s1 = round(v) - v < 0 for them, the wrong sign,
  // and s1 then shrinks without end (measured: the reconstruction error grew up to 200-fold,
  // docs/design/0017-flexround.md).
  const at::Tensor s1 = per_element(amax / element_max_).clamp_min(1e-300);
  const at::Tensor v = wd / s1;
  const at::Tensor r = (q / s1).detach();
  const at::Tensor inside = v.detach().abs() <= element_max_;
  const at::Tensor e = s1 * at::where(inside, v + (r - v).detach(), r);
  return q + (e - e.detach());
}

namespace {

// ||Y - T||² summed over the outputs, in float64.
at::Tensor squared_distance(const std::vector<at::Tensor>& y, const std::vector<at::Tensor>& t) {
  if (y.size() != t.size()) throw std::logic_error("train_span: the span gave " + std::to_string(y.size()) +
                                                   " outputs for " + std::to_string(t.size()) + " targets");
  at::Tensor s = at::zeros({}, at::TensorOptions().dtype(at::kDouble).device(t.empty() ? at::kCPU : t[0].device()));
  for (std::size_t i = 0; i < y.size(); ++i) s = s + (y[i].to(at::kDouble) - t[i].to(at::kDouble)).pow(2).sum();
  return s;
}

}  // namespace

std::string span_key(const std::string& name, const std::string& rule) {
  if (rule == "layer") return name;
  if (rule == "auto") {
    // The first number that is a whole component, between separators ('.' or '_'): the block's
    // index in "encoder.layer.3.attention", "features.4.conv" or "block_3_expand".
    const auto separator = [](char c) { return c == '.' || c == '_'; };
    for (std::size_t i = 0; i < name.size(); ++i) {
      if (!std::isdigit(static_cast<unsigned char>(name[i])) || (i > 0 && !separator(name[i - 1]))) continue;
      std::size_t j = i;
      while (j < name.size() && std::isdigit(static_cast<unsigned char>(name[j]))) ++j;
      if (j < name.size() && separator(name[j])) return name.substr(0, j);
      i = j;
    }
    return name;
  }
  std::regex re;
  try {
    re = std::regex(rule, std::regex::ECMAScript);
  } catch (const std::regex_error& e) {
    throw std::invalid_argument("option span of flexround: '" + rule.substr(0, 64) +
                                "' is neither auto, layer nor a valid regular expression (" + e.what() + ")");
  }
  std::smatch m;
  return std::regex_search(name, m, re) && m.length(0) > 0 ? "\x01" + m.str(0) : name;
}

SpanResult train_span(std::vector<FlexRoundWeight>& weights, const SpanTraining& t) {
  const auto start = std::chrono::steady_clock::now();
  const std::size_t B = t.targets.size();
  if (B == 0) throw std::logic_error("train_span: no calibration batches");
  // ||T||² per batch: `energy` scales each iteration's loss (1 for an all-zero target: the plain
  // squared error), `target_energy` is the denominator of the reported errors.
  std::vector<double> energy(B, 0.0), target_energy(B, 0.0);
  for (std::size_t b = 0; b < B; ++b) {
    for (const auto& x : t.targets[b]) target_energy[b] += x.to(at::kDouble).pow(2).sum().item<double>();
    energy[b] = target_energy[b] > 0 ? target_energy[b] : 1.0;
  }
  // The relative error over batches [from, to), with the current parameters installed.
  auto evaluate = [&](std::size_t from, std::size_t to) {
    at::NoGradGuard no_grad;
    for (std::size_t i = 0; i < weights.size(); ++i) t.install(i, weights[i].forward());
    double err = 0, e = 0;
    for (std::size_t b = from; b < to; ++b) {
      err += squared_distance(t.output(b), t.targets[b]).item<double>();
      e += target_energy[b];
    }
    return e > 0 ? err / e : err;
  };
  const std::size_t H = t.held_out;
  if (H >= B) throw std::logic_error("train_span: every batch held out");
  const std::size_t T = B - H;  // the batches trained on
  SpanResult r;
  r.error_before = evaluate(0, B);
  std::vector<std::vector<at::Tensor>> best;  // the held-out best iterate's values; empty: the start
  if (H > 0) r.held_out_before = r.held_out_after = evaluate(T, B);
  auto check_held_out = [&](int it) {
    const double e = evaluate(T, B);
    if (!(e < r.held_out_after)) return;
    r.held_out_after = e;
    r.kept_iteration = it;
    best.clear();
    for (const auto& w : weights) best.push_back(w.snapshot());
  };

  std::vector<at::Tensor> params;
  for (const auto& w : weights)
    for (const auto& p : w.parameters()) params.push_back(p);
  torch::optim::Adam adam(params, torch::optim::AdamOptions(t.learning_rate));
  // The batch order: a Fisher-Yates shuffle per epoch from a seeded 64-bit Mersenne Twister, written
  // out so that the order is the same with every standard library.
  std::mt19937_64 rng(t.seed);
  std::vector<std::size_t> order(T);
  std::iota(order.begin(), order.end(), std::size_t(0));
  std::size_t next = T;
  double running = 0;
  int counted = 0;
  {
    at::AutoGradMode grad(true);
    for (int it = 1; it <= t.iterations; ++it) {
      if (next == T) {
        for (std::size_t i = T; i > 1; --i) std::swap(order[i - 1], order[std::size_t(rng() % i)]);
        next = 0;
      }
      const std::size_t b = order[next++];
      // The learning rate falls linearly to zero: the straight-through steps keep flipping elements
      // across rounding boundaries while it is large, and the last ones settle.
      static_cast<torch::optim::AdamOptions&>(adam.param_groups()[0].options())
          .lr(t.learning_rate * (1.0 - double(it - 1) / double(t.iterations)));
      adam.zero_grad();
      for (std::size_t i = 0; i < weights.size(); ++i) t.install(i, weights[i].forward());
      const at::Tensor loss = squared_distance(t.output(b), t.targets[b]) / energy[b];
      loss.backward();
      adam.step();
      running += loss.item<double>();
      ++counted;
      if (H > 0 && (it % t.check_every == 0 || it == t.iterations)) check_held_out(it);
      if (t.progress && (it % 50 == 0 || it == t.iterations)) {
        t.progress(it, running / counted);
        running = 0;
        counted = 0;
      }
    }
  }
  if (H > 0) {
    // Early stopping: the iterate that reconstructed the held-out batches best, or the start.
    if (best.empty()) {
      for (auto& w : weights) w.reset();
      r.kept_start = true;
    } else {
      for (std::size_t i = 0; i < weights.size(); ++i) weights[i].restore(best[i]);
    }
    r.error_after = evaluate(0, B);
  } else {
    r.error_after = evaluate(0, B);
    if (!(r.error_after <= r.error_before)) {
      for (auto& w : weights) w.reset();
      r.kept_start = true;
    }
  }
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return r;
}

}  // namespace qcast::ptq::detail
