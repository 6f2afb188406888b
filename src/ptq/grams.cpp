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

// g[gi] += a[gi]ᵀ b[gi] for a, b [groups, tokens, cols] float64 on the CPU, token by token in order.
void add_products(const at::Tensor& a, const at::Tensor& b, at::Tensor& g, bool symmetric) {
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

// s[gi] += Σ over tokens of a[gi], tokens in order (ATen's sum would split its reduction by thread).
void add_token_sums(const at::Tensor& a, at::Tensor& s) {
  if (!a.device().is_cpu()) {
    s.add_(a.sum(1));
    return;
  }
  const std::int64_t groups = a.size(0), tokens = a.size(1), cols = a.size(2);
  for (std::int64_t gi = 0; gi < groups; ++gi) {
    const double* p = a[gi].data_ptr<double>();
    double* out = s[gi].data_ptr<double>();
    for (std::int64_t t = 0; t < tokens; ++t)
      for (std::int64_t c = 0; c < cols; ++c) out[c] += p[t * cols + c];
  }
}

}  // namespace

// a = X (float stream), b = X̂, both [groups, tokens, cols] float64 holding float32 values.
void Grams::add_half(int h, const at::Tensor& a, const at::Tensor& b) {
  const bool same = identical_ && a.data_ptr() == b.data_ptr();
  if (!b.device().is_cpu()) {
    half_xhat_xhat[h].add_(at::bmm(b.transpose(1, 2), b));
    if (!same) half_diff_xhat[h].add_(at::bmm((a - b).transpose(1, 2), b));
    return;
  }
  add_products(b, b, half_xhat_xhat[h], true);
  if (same) return;
  // X − X̂ of two float32 values is exact in float64 (unless their exponents are more than 29 apart),
  // but may need more than float32's 24 bits: then its float32 part and the remainder (at most 29
  // bits) each give an exact product with X̂'s 24 bits. Tokens then enter the sum as (part, x̂) and
  // (remainder, x̂) in turn, which adds the same as the part alone where the remainder is zero, so
  // the result does not depend on which chunk needed the split.
  const at::Tensor diff = a - b;
  const at::Tensor high = diff.to(at::kFloat).to(at::kDouble);
  const at::Tensor rest = diff - high;
  if (!rest.ne(0).any().item<bool>()) {
    add_products(high, b, half_diff_xhat[h], false);
    return;
  }
  const std::int64_t groups = a.size(0), tokens = a.size(1), cols = a.size(2);
  add_products(at::stack({high, rest}, 2).reshape({groups, 2 * tokens, cols}),
               at::stack({b, b}, 2).reshape({groups, 2 * tokens, cols}), half_diff_xhat[h], false);
}

void Grams::add(const at::Tensor& x, const at::Tensor& xhat, std::int64_t chunk_samples) {
  if (x.sizes() != xhat.sizes())
    throw std::runtime_error("the float and the quantized model gave this layer inputs of different shapes (" +
                             std::to_string(x.numel()) + " vs " + std::to_string(xhat.numel()) + " elements)");
  const std::int64_t groups = x.size(0), cols = x.size(1), chunk_tokens = x.size(2);
  const auto opts = at::TensorOptions().dtype(at::kDouble).device(x.device());
  if (!half_xhat_xhat[0].defined())
    for (auto& g : half_xhat_xhat) g = at::zeros({groups, cols, cols}, opts);
  const bool same = identical_ && at::equal(x, xhat);
  if (identical_ && !same) {  // from here on the sums part: D starts at zero, XXᵀ from the common history
    identical_ = false;
    for (auto& d : half_diff_xhat) d = at::zeros({groups, cols, cols}, opts);
    x_x = half_xhat_xhat[0] + half_xhat_xhat[1];
  }
  const at::Tensor b = token_major(xhat);
  const at::Tensor a = same ? b : token_major(x);
  tokens += chunk_tokens;
  if (!x_sum.defined()) {
    x_sum = at::zeros({groups, cols}, opts);
    xhat_sum = at::zeros({groups, cols}, opts);
  }
  add_token_sums(b, xhat_sum);
  if (same) x_sum.copy_(xhat_sum);  // X == X̂ in every chunk so far: the sums are equal
  else add_token_sums(a, x_sum);
  // A NaN or Inf input shows in the sums (cheaper than a pass over the inputs), and would otherwise
  // surface later as a failed Cholesky factorization that names nothing.
  if (!at::isfinite(x_sum).all().item<bool>() || !at::isfinite(xhat_sum).all().item<bool>())
    throw std::runtime_error(std::string("the layer's input holds NaN or Inf on the calibration data (in the ") +
                             (at::isfinite(x_sum).all().item<bool>() ? "quantized" : "float") +
                             " model; the data is not finite, or the model overflows float32 on it)");
  // Each sample's tokens go to the half of its index over the whole calibration set, so the halves
  // are the same whatever the batch size.
  if (chunk_samples < 1 || chunk_tokens % chunk_samples != 0) chunk_samples = 1;
  const std::int64_t per = chunk_tokens / std::max<std::int64_t>(1, chunk_samples);
  const std::int64_t first = samples;
  samples += chunk_samples;
  if (!same) {  // XXᵀ over the whole chunk, tokens in order
    if (a.device().is_cpu()) add_products(a, a, x_x, true);
    else x_x.add_(at::bmm(a.transpose(1, 2), a));
  }
  if (per == 0) return;
  if (chunk_samples == 1) {
    add_half(int(first % 2), a, b);
    return;
  }
  for (int h = 0; h < 2; ++h) {
    std::vector<std::int64_t> idx;
    for (std::int64_t s = 0; s < chunk_samples; ++s)
      if ((first + s) % 2 == h)
        for (std::int64_t t = s * per; t < (s + 1) * per; ++t) idx.push_back(t);
    if (idx.empty()) continue;
    const at::Tensor sel = at::tensor(idx, at::kLong).to(x.device());
    const at::Tensor bh = b.index_select(1, sel);
    add_half(h, same ? bh : a.index_select(1, sel), bh);
  }
}

void Grams::finish() {
  if (!half_xhat_xhat[0].defined()) throw std::runtime_error("the layer received no calibration tokens");
  auto mirror = [](at::Tensor g) {  // on the CPU: fill the lower triangles from the upper
    const std::int64_t n = g.size(1);
    for (std::int64_t gi = 0; gi < g.size(0); ++gi) {
      double* p = g[gi].data_ptr<double>();
      for (std::int64_t i = 0; i < n; ++i)
        for (std::int64_t j = 0; j < i; ++j) p[i * n + j] = p[j * n + i];
    }
  };
  const bool on_cpu = half_xhat_xhat[0].device().is_cpu();
  for (auto& g : half_xhat_xhat) {
    g = g.to(at::kCPU).contiguous();
    if (on_cpu) mirror(g);
  }
  xhat_xhat = half_xhat_xhat[0] + half_xhat_xhat[1];
  x_sum = x_sum.to(at::kCPU);
  xhat_sum = xhat_sum.to(at::kCPU);
  if (identical_) {
    for (auto& d : half_diff_xhat) d = at::zeros_like(xhat_xhat);
    diff_xhat = at::zeros_like(xhat_xhat);
    x_x = xhat_xhat;
    return;
  }
  for (auto& d : half_diff_xhat) d = d.to(at::kCPU).contiguous();
  diff_xhat = half_diff_xhat[0] + half_diff_xhat[1];
  x_x = x_x.to(at::kCPU).contiguous();
  if (on_cpu) mirror(x_x);
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
