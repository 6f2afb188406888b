// RTN, GPTQ and Error Diffusion on one weight matrix W [rows, cols] (cols along the reduction
// dimension), each group of rows with its own Gram matrices (grouped convolutions, bmm weights).
// Inner loops run over contiguous float64 rows; the updates that reach beyond the current batch of
// columns are one matrix product per batch (GPTQ's lazy batch updates, used by ED too).
#include "solvers.hpp"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <vector>

namespace qcast::ptq::detail {

void Grams::add(const at::Tensor& x, const at::Tensor& xhat, const at::Tensor& w) {
  if (x.sizes() != xhat.sizes())
    throw std::runtime_error("the float and the quantized model gave this layer inputs of different shapes (" +
                             std::to_string(x.numel()) + " vs " + std::to_string(xhat.numel()) + " elements)");
  const at::Tensor a = x.to(at::kFloat), b = xhat.to(at::kFloat);
  const at::Tensor bt = b.transpose(1, 2);
  const at::Tensor gg = at::bmm(b, bt).to(at::kDouble), cc = at::bmm(a, bt).to(at::kDouble);
  if (!xhat_xhat.defined()) {
    xhat_xhat = gg;
    x_xhat = cc;
  } else {
    xhat_xhat.add_(gg);
    x_xhat.add_(cc);
  }
  const std::int64_t groups = x.size(0);
  const at::Tensor wg = w.to(at::kFloat).reshape({groups, -1, x.size(1)});  // [groups, rows/groups, cols]
  target_energy += at::bmm(wg, a).to(at::kDouble).pow(2).sum().item<double>();
}

namespace {

// Width of the lazy batches: the requested width rounded up to whole blocks, so that a block's
// columns are all in the batch where its scale is fixed.
std::int64_t batch_width(const WeightGrid& grid, int requested) {
  const std::int64_t b = std::max(1, requested);
  const std::int64_t bs = grid.block_size();
  return bs > 0 ? (b + bs - 1) / bs * bs : b;
}

void round_to_nearest(double* w, std::int64_t rows, std::int64_t cols, std::int64_t row0, WeightGrid& grid) {
  for (std::int64_t r = 0; r < rows; ++r) {
    double* row = w + r * cols;
    for (std::int64_t c = 0; c < cols; ++c) {
      if (grid.opens_block(c)) grid.fix_block(row0 + r, c, row + c, std::min<std::int64_t>(grid.block_size(), cols - c));
      row[c] = grid.quantize(row0 + r, c, row[c]);
    }
  }
}

double damping_of(const at::Tensor& h, double fraction) { return fraction * h.diagonal().mean().item<double>(); }

// GPTQ (Frantar et al., "GPTQ", 2023, Algorithm 1) with X̂X̂ᵀ as the Hessian: columns in order (or by
// decreasing diagonal with act-order), each rounded on its group's grid and its error spread over the
// later columns through the upper Cholesky factor of the damped inverse Hessian.
at::Tensor gptq(at::Tensor w, at::Tensor h, std::int64_t row0, WeightGrid& grid, const Options& o) {
  const std::int64_t rows = w.size(0), cols = w.size(1);
  const at::Tensor diag = h.diagonal();
  const at::Tensor dead = diag == 0;
  h = h.clone();
  h.diagonal().masked_fill_(dead, 1.0);
  w.index_put_({at::indexing::Slice(), dead}, 0.0);  // inputs that are always zero: their weights do nothing

  std::vector<std::int64_t> order(static_cast<std::size_t>(cols));
  for (std::int64_t i = 0; i < cols; ++i) order[std::size_t(i)] = i;
  if (o.act_order) {
    // Blocks are not contiguous in this order, so every block scale is fixed from W before the first
    // column ("static groups"); without act-order a block's scale is fixed when the walk reaches it.
    const at::Tensor perm = at::argsort(h.diagonal(), /*stable=*/true, /*dim=*/0, /*descending=*/true);
    for (std::int64_t i = 0; i < cols; ++i) order[std::size_t(i)] = perm[i].item<std::int64_t>();
    for (std::int64_t r = 0; r < rows; ++r)
      for (std::int64_t c = 0; c < cols; c += std::max(1, grid.block_size()))
        if (grid.opens_block(c))
          grid.fix_block(row0 + r, c, w[r].data_ptr<double>() + c, std::min<std::int64_t>(grid.block_size(), cols - c));
    w = w.index_select(1, perm).contiguous();
    h = h.index_select(0, perm).index_select(1, perm);
  }
  h.diagonal().add_(damping_of(h, o.damping));
  at::Tensor u = at::linalg_cholesky(at::cholesky_inverse(at::linalg_cholesky(h)), /*upper=*/true).contiguous();

  const std::int64_t width = batch_width(grid, o.gptq_block);
  double* W = w.data_ptr<double>();
  const double* U = u.data_ptr<double>();
  std::vector<double> err(std::size_t(rows * width));
  for (std::int64_t i1 = 0; i1 < cols; i1 += width) {
    const std::int64_t i2 = std::min(cols, i1 + width);
    for (std::int64_t i = i1; i < i2; ++i) {
      const std::int64_t col = order[std::size_t(i)];
      const double uii = U[i * cols + i];
      for (std::int64_t r = 0; r < rows; ++r) {
        double* row = W + r * cols;
        if (!o.act_order && grid.opens_block(col))
          grid.fix_block(row0 + r, col, row + i, std::min<std::int64_t>(grid.block_size(), cols - i));
        const double q = grid.quantize(row0 + r, col, row[i]);
        const double e = (row[i] - q) / uii;
        row[i] = q;
        err[std::size_t(r * width + (i - i1))] = e;
        const double* ui = U + i * cols;
        for (std::int64_t k = i + 1; k < i2; ++k) row[k] -= e * ui[k];
      }
    }
    if (i2 < cols) {
      const at::Tensor e = at::from_blob(err.data(), {rows, width}, at::kDouble).narrow(1, 0, i2 - i1);
      w.narrow(1, i2, cols - i2).sub_(at::mm(e, u.narrow(0, i1, i2 - i1).narrow(1, i2, cols - i2)));
    }
  }
  if (!o.act_order) return w;
  at::Tensor out = at::empty_like(w);
  for (std::int64_t i = 0; i < cols; ++i) out.select(1, order[std::size_t(i)]).copy_(w.select(1, i));
  return out;
}

// Error Diffusion (docs/ptq.md, docs/design/0003-error-diffusion.md): Ŵ·X̂ ≈ W·X, greedily, column by
// column. The float target W·X is first expressed on the quantized-path inputs: V minimizes
// ||V·X̂ − W·X||² + λ||V − W||², i.e. V = W + W·(XX̂ᵀ − X̂X̂ᵀ)·(X̂X̂ᵀ + λI)⁻¹ (one Cholesky solve; V = W
// when X̂ = X), which folds the error of the layers before into the target. Then each column in turn is rounded on its block's grid
// and the output error it leaves is diffused into the columns not yet quantized, exactly (the
// sequential nearest-plane step, through the same Cholesky factor GPTQ uses); a block's scale is
// fixed from the diffused weights when the walk reaches the block.
at::Tensor error_diffusion(const at::Tensor& w0, const at::Tensor& g, const at::Tensor& c, std::int64_t row0,
                           WeightGrid& grid, const Options& o) {
  at::Tensor gd = g.clone();
  gd.diagonal().masked_fill_(g.diagonal() == 0, 1.0);  // inputs that are always zero (their C rows are zero too)
  gd.diagonal().add_(damping_of(g, o.damping));
  const at::Tensor l = at::linalg_cholesky(gd);
  const at::Tensor shift = at::cholesky_solve(at::mm((c - g).t(), w0.t()), l).t();  // W·(C − G)·(G+λI)⁻¹
  const at::Tensor v = (w0 + shift).contiguous();
  Options sequential = o;
  sequential.act_order = false;  // ED has no knobs: natural column order, block scales fixed on reach
  return gptq(v, g, row0, grid, sequential);
}

}  // namespace

at::Tensor solve(Method method, const at::Tensor& w, const Grams& grams, WeightGrid& grid, const Options& o) {
  const std::int64_t groups = grams.xhat_xhat.defined() ? grams.xhat_xhat.size(0) : 1;
  const std::int64_t rows = w.size(0), cols = w.size(1);
  if (rows % groups != 0) throw std::logic_error("weight rows do not split into the layer's groups");
  const std::int64_t per = rows / groups;
  at::Tensor out = w.to(at::kDouble).contiguous().clone();
  for (std::int64_t gi = 0; gi < groups; ++gi) {
    at::Tensor wg = out.narrow(0, gi * per, per).contiguous();
    at::Tensor q;
    switch (method) {
      case Method::rtn:
        round_to_nearest(wg.data_ptr<double>(), per, cols, gi * per, grid);
        q = wg;
        break;
      case Method::gptq: q = gptq(wg, grams.xhat_xhat[gi], gi * per, grid, o); break;
      case Method::ed: q = error_diffusion(wg, grams.xhat_xhat[gi], grams.x_xhat[gi], gi * per, grid, o); break;
    }
    out.narrow(0, gi * per, per).copy_(q);
  }
  return out;
}

double relative_output_error(const at::Tensor& w, const at::Tensor& w_hat, const Grams& grams) {
  const std::int64_t groups = grams.xhat_xhat.size(0);
  const std::int64_t per = w.size(0) / groups;
  double err = grams.target_energy;  // ||ŴX̂ − WX||² = tr(ŴGŴᵀ) − 2 tr(ŴCᵀWᵀ) + ||WX||²
  for (std::int64_t gi = 0; gi < groups; ++gi) {
    const at::Tensor a = w.narrow(0, gi * per, per).to(at::kDouble), q = w_hat.narrow(0, gi * per, per).to(at::kDouble);
    err += (at::mm(q, grams.xhat_xhat[gi]) * q).sum().item<double>();
    err -= 2 * (at::mm(q, grams.x_xhat[gi].t()) * a).sum().item<double>();
  }
  const double ref = grams.target_energy;
  if (ref <= 0) return err <= 0 ? 0.0 : INFINITY;
  return std::sqrt(std::max(0.0, err) / ref);
}

}  // namespace qcast::ptq::detail
