// Gram matrices in float64 in a fixed summation order (grams.hpp). On the CPU the [cols, cols]
// output is cut into 64 x 64 panels computed in parallel, each by one thread over a block of at most
// 256 tokens at a time, blocks in token order: which thread computes a panel never changes the order
// in which its sums run. Symmetric sums compute the panels on and above the diagonal only.
#include "grams.hpp"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <stdexcept>
#include <vector>

#include "gram_kernel.hpp"

namespace qcast::ptq::detail {
namespace {

constexpr std::int64_t kPanel = 64;        // rows and columns of g per task
constexpr std::int64_t kTokenBlock = 256;  // tokens per pass over a panel: a 64-wide slice of a and b stays in L2

// [groups, cols, tokens] of any dtype and device -> [groups, tokens, cols] float64, float32 values.
at::Tensor token_major(const at::Tensor& x) {
  return x.to(at::kFloat).to(at::kDouble).transpose(1, 2).contiguous();
}

}  // namespace

void Grams::add_cpu(const at::Tensor& a, const at::Tensor& b, at::Tensor& g, bool symmetric) {
  const std::int64_t groups = a.size(0), tokens = a.size(1), cols = a.size(2);
  const std::int64_t panels = (cols + kPanel - 1) / kPanel;
  std::vector<std::pair<std::int64_t, std::int64_t>> tasks;
  for (std::int64_t pi = 0; pi < panels; ++pi)
    for (std::int64_t pj = symmetric ? pi : 0; pj < panels; ++pj) tasks.emplace_back(pi, pj);
  for (std::int64_t gi = 0; gi < groups; ++gi) {
    const double* ag = a[gi].data_ptr<double>();
    const double* bg = b[gi].data_ptr<double>();
    double* gg = g[gi].data_ptr<double>();
    for (std::int64_t t0 = 0; t0 < tokens; t0 += kTokenBlock) {
      const std::int64_t tb = std::min(kTokenBlock, tokens - t0);
      at::parallel_for(0, std::int64_t(tasks.size()), 1, [&](std::int64_t begin, std::int64_t end) {
        for (std::int64_t k = begin; k < end; ++k) {
          const auto [pi, pj] = tasks[std::size_t(k)];
          gram_panel(ag + t0 * cols, bg + t0 * cols, cols, tb, pi * kPanel, std::min(cols, (pi + 1) * kPanel),
                     pj * kPanel, std::min(cols, (pj + 1) * kPanel), gg, cols);
        }
      });
    }
  }
}

void Grams::add(const at::Tensor& x, const at::Tensor& xhat) {
  if (x.sizes() != xhat.sizes())
    throw std::runtime_error("the float and the quantized model gave this layer inputs of different shapes (" +
                             std::to_string(x.numel()) + " vs " + std::to_string(xhat.numel()) + " elements)");
  const std::int64_t groups = x.size(0), cols = x.size(1);
  const auto opts = at::TensorOptions().dtype(at::kDouble).device(x.device());
  if (!xhat_xhat.defined()) xhat_xhat = at::zeros({groups, cols, cols}, opts);
  const bool same = identical_ && at::equal(x, xhat);
  if (identical_ && !same) {  // from here on the three sums part: each starts from the common history
    identical_ = false;
    x_xhat = xhat_xhat.clone();
    x_x = xhat_xhat.clone();
  }
  const at::Tensor b = token_major(xhat);
  const at::Tensor a = same ? b : token_major(x);
  tokens += x.size(2);
  if (x.device().is_cpu()) {
    add_cpu(b, b, xhat_xhat, true);
    if (same) return;
    add_cpu(a, b, x_xhat, false);
    add_cpu(a, a, x_x, true);
  } else {
    xhat_xhat.add_(at::bmm(b.transpose(1, 2), b));
    if (same) return;
    x_xhat.add_(at::bmm(a.transpose(1, 2), b));
    x_x.add_(at::bmm(a.transpose(1, 2), a));
  }
}

void Grams::finish() {
  if (!xhat_xhat.defined()) throw std::runtime_error("the layer received no calibration tokens");
  auto mirror = [](at::Tensor& g) {
    g = g.to(at::kCPU).contiguous();
    const std::int64_t n = g.size(1);
    for (std::int64_t gi = 0; gi < g.size(0); ++gi) {
      double* p = g[gi].data_ptr<double>();
      for (std::int64_t i = 0; i < n; ++i)
        for (std::int64_t j = 0; j < i; ++j) p[i * n + j] = p[j * n + i];
    }
  };
  const bool on_cpu = xhat_xhat.device().is_cpu();
  if (on_cpu) mirror(xhat_xhat);
  else xhat_xhat = xhat_xhat.to(at::kCPU).contiguous();
  if (identical_) {
    x_xhat = xhat_xhat;
    x_x = xhat_xhat;
    return;
  }
  x_xhat = x_xhat.to(at::kCPU).contiguous();
  if (on_cpu) mirror(x_x);
  else x_x = x_x.to(at::kCPU).contiguous();
}

double Grams::target_energy(const at::Tensor& w) const {
  const std::int64_t groups = x_x.size(0);
  const std::int64_t per = w.size(0) / groups;
  double e = 0;
  for (std::int64_t gi = 0; gi < groups; ++gi) {
    const at::Tensor wg = w.narrow(0, gi * per, per).to(at::kDouble);
    e += (at::mm(wg, x_x[gi]) * wg).sum().item<double>();
  }
  return e;
}

}  // namespace qcast::ptq::detail
