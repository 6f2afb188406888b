// Rounding on the grid and the sequential column walk (solvers.hpp). Inner loops run over contiguous
// float64 rows; the updates that reach beyond the current batch of columns are one matrix product per
// batch (GPTQ's lazy batch updates).
#include "solvers.hpp"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <vector>

namespace qcast::ptq::detail {
std::int64_t batch_width(const WeightGrid& grid, std::int64_t requested) {
  const std::int64_t b = std::max<std::int64_t>(1, requested);
  const std::int64_t bs = grid.block_size();
  return bs > 0 ? (b + bs - 1) / bs * bs : b;
}

void fix_all_blocks(WeightGrid& grid, std::int64_t row0, const at::Tensor& from) {
  const at::Tensor v = from.to(at::kDouble).contiguous();
  const std::int64_t rows = v.size(0), cols = v.size(1);
  const double* p = v.data_ptr<double>();
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t c = 0; c < cols; c += std::max(1, grid.block_size()))
      if (grid.opens_block(c))
        grid.fix_block(row0 + r, c, p + r * cols + c, std::min<std::int64_t>(grid.block_size(), cols - c));
}

std::pair<double, double> fix_all_blocks_mse(WeightGrid& grid, std::int64_t row0, const at::Tensor& from,
                                             const at::Tensor& energy) {
  const std::int64_t bs = grid.block_size();
  if (bs == 0) return {0.0, 0.0};  // channel and tensor scales: the grid's constructor fixed them
  const at::Tensor v = from.to(at::kDouble).contiguous(), e = energy.to(at::kDouble).contiguous();
  const std::int64_t rows = v.size(0), cols = v.size(1);
  const double* p = v.data_ptr<double>();
  const double* d = e.data_ptr<double>();
  // The factors: 1 first (the plain rule; ties keep it), then 0.975 down to 0.5 (clipping), then
  // 1.025 up to 2 (a coarser grid without clipping: for NVFP4, 1.5 maps the block's largest value to
  // 4 instead of 6, "four over six"; for E8M0 scales, up to 2 reaches the next power of two, which
  // avoids saturating values in (6, 8) x 2^k). A factor whose scale code equals the last one tried
  // or the plain rule's gives the same grid and is skipped, so E8M0 blocks try at most three scales.
  std::vector<double> factors{1.0};
  for (int k = 1; k <= 20; ++k) factors.push_back(1.0 - 0.025 * k);
  for (int k = 1; k <= 40; ++k) factors.push_back(1.0 + 0.025 * k);
  std::int64_t blocks = 0, clipped = 0, coarser = 0;
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t c = 0; c < cols; c += bs) {
      const double* x = p + r * cols + c;
      const std::int64_t n = std::min(bs, cols - c);
      double amax = 0;
      for (std::int64_t j = 0; j < n; ++j) amax = std::fmax(amax, std::fabs(x[j]));
      double best = 1, best_err = INFINITY;
      std::uint32_t tried = 0, plain = 0;
      for (std::size_t k = 0; k < factors.size() && amax > 0; ++k) {
        const double f = factors[k];
        grid.fix_group(row0 + r, c, amax * f);
        const std::uint32_t code = grid.scale_code(row0 + r, c);
        if (k == 0) plain = code;
        else if (code == tried || code == plain) continue;
        tried = code;
        double err = 0;
        for (std::int64_t j = 0; j < n; ++j) {
          const double q = grid.quantize(row0 + r, c + j, x[j]);
          err += d[c + j] * (x[j] - q) * (x[j] - q);
        }
        if (err < best_err) {  // ties keep the earlier factor: 1, the plain rule's, first
          best_err = err;
          best = f;
        }
      }
      grid.fix_group(row0 + r, c, amax * best);
      ++blocks;
      clipped += best < 1.0;
      coarser += best > 1.0;
    }
  return {blocks ? double(clipped) / double(blocks) : 0.0, blocks ? double(coarser) / double(blocks) : 0.0};
}

std::optional<BoundedRounding> bounded_rounding(const AccumulatorBound* bound, WeightGrid& grid, std::int64_t row0,
                                                const at::Tensor& w, bool scales_fixed) {
  if (!bound) return std::nullopt;
  if (!scales_fixed && grid.block_size() > 0)
    throw std::invalid_argument("an accumulator bound needs the block scales fixed before the walk (--scales static): its "
                                "limits are in codes, whose step each block's scale sets");
  const at::Tensor v = w.to(at::kDouble).contiguous();
  return std::optional<BoundedRounding>(std::in_place, *bound, grid, row0, v.data_ptr<double>(), v.size(0));
}

void round_to_nearest(at::Tensor& w, std::int64_t row0, WeightGrid& grid, const AccumulatorBound* bound) {
  const std::int64_t rows = w.size(0), cols = w.size(1);
  double* p = w.data_ptr<double>();
  if (bound) {
    fix_all_blocks(grid, row0, w);
    std::optional<BoundedRounding> bounded = bounded_rounding(bound, grid, row0, w, true);
    for (std::int64_t r = 0; r < rows; ++r)
      for (std::int64_t c = 0; c < cols; ++c) p[r * cols + c] = bounded->quantize(r, c, p[r * cols + c]);
    return;
  }
  for (std::int64_t r = 0; r < rows; ++r) {
    double* row = p + r * cols;
    for (std::int64_t c = 0; c < cols; ++c) {
      // A block whose scale is already fixed keeps it (a method that learned its scales fixed them).
      if (grid.opens_block(c) && !grid.block_fixed(row0 + r, c))
        grid.fix_block(row0 + r, c, row + c, std::min<std::int64_t>(grid.block_size(), cols - c));
      row[c] = grid.quantize(row0 + r, c, row[c]);
    }
  }
}

void choose_scales(ColumnWalk& walk, const std::string& scales, const at::Tensor& w) {
  walk.scales_mse = scales == "mse";
  if (scales == "static" || scales == "mse") walk.scales_from = w.clone();
  else if (scales == "diffused") walk.scales_from = at::Tensor();
  else throw std::logic_error("--scales is static, mse or diffused, not " + scales);
}

double damping_of(const at::Tensor& h, double fraction) { return fraction * h.diagonal().mean().item<double>(); }

at::Tensor sequential_rounding(at::Tensor w, at::Tensor h, std::int64_t row0, WeightGrid& grid, const ColumnWalk& o) {
  const std::int64_t rows = w.size(0), cols = w.size(1);
  const at::Tensor diag = h.diagonal();
  const at::Tensor dead = diag == 0;
  h = h.clone();
  h.diagonal().masked_fill_(dead, 1.0);
  w.index_put_({at::indexing::Slice(), dead}, 0.0);  // inputs that are always zero: their weights do nothing

  std::vector<std::int64_t> order(static_cast<std::size_t>(cols));
  for (std::int64_t i = 0; i < cols; ++i) order[std::size_t(i)] = i;
  // Static scales: every block's scale fixed before the first column. act-order needs them, since
  // its order does not visit a block's columns together.
  const bool fixed_first = o.scales_from.defined() || o.act_order;
  if (fixed_first) {
    at::Tensor from = o.scales_from.defined() ? o.scales_from.to(at::kDouble).clone() : w.clone();
    if (from.sizes() != w.sizes()) throw std::logic_error("the scales' source has another shape than the weights");
    from.index_put_({at::indexing::Slice(), dead}, 0.0);
    if (o.scales_mse && o.scales_from.defined()) {
      const std::pair<double, double> shares = fix_all_blocks_mse(grid, row0, from, h.diagonal());
      if (o.searched_shares) *o.searched_shares = shares;
    } else {
      fix_all_blocks(grid, row0, from);
    }
  }
  // The thresholds of the bound from the weights before the walk, in their own column order.
  std::optional<BoundedRounding> bounded = bounded_rounding(o.accumulator, grid, row0, w, fixed_first);
  if (o.act_order) {
    const at::Tensor perm = at::argsort(h.diagonal(), /*stable=*/true, /*dim=*/0, /*descending=*/true);
    for (std::int64_t i = 0; i < cols; ++i) order[std::size_t(i)] = perm[i].item<std::int64_t>();
    w = w.index_select(1, perm).contiguous();
    h = h.index_select(0, perm).index_select(1, perm);
  }
  h.diagonal().add_(damping_of(h, o.damping));
  at::Tensor u = at::linalg_cholesky(at::cholesky_inverse(at::linalg_cholesky(h)), /*upper=*/true).contiguous();

  const std::int64_t width = batch_width(grid, o.lazy_batch);
  double* W = w.data_ptr<double>();
  const double* U = u.data_ptr<double>();
  std::vector<double> err(std::size_t(rows * width));
  at::Tensor before;  // the values rounded, in the walk's column order
  if (o.rounded) before = at::empty_like(w);
  double* B = o.rounded ? before.data_ptr<double>() : nullptr;
  for (std::int64_t i1 = 0; i1 < cols; i1 += width) {
    const std::int64_t i2 = std::min(cols, i1 + width);
    for (std::int64_t i = i1; i < i2; ++i) {
      const std::int64_t col = order[std::size_t(i)];
      const double uii = U[i * cols + i];
      for (std::int64_t r = 0; r < rows; ++r) {
        double* row = W + r * cols;
        if (!fixed_first && grid.opens_block(col))
          grid.fix_block(row0 + r, col, row + i, std::min<std::int64_t>(grid.block_size(), cols - i));
        // With a bound, the error diffused is that of the bounded code: the columns after make up
        // for the clamping as they do for the rounding.
        const double q = bounded ? bounded->quantize(r, col, row[i]) : grid.quantize(row0 + r, col, row[i]);
        if (B) B[r * cols + i] = row[i];
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
  if (!o.act_order) {
    if (o.rounded) *o.rounded = before;
    return w;
  }
  at::Tensor out = at::empty_like(w);
  for (std::int64_t i = 0; i < cols; ++i) out.select(1, order[std::size_t(i)]).copy_(w.select(1, i));
  if (o.rounded) {
    *o.rounded = at::empty_like(before);
    for (std::int64_t i = 0; i < cols; ++i) o.rounded->select(1, order[std::size_t(i)]).copy_(before.select(1, i));
  }
  return out;
}

double relative_output_error(const at::Tensor& w, const at::Tensor& w_hat, const Grams& grams, double target_energy) {
  const std::int64_t groups = grams.xhat_xhat.size(0);
  const std::int64_t per = w.size(0) / groups;
  double err = target_energy;  // ||ŴX̂ − WX||² = tr(ŴGŴᵀ) − 2 tr(ŴCᵀWᵀ) + ||WX||²
  for (std::int64_t gi = 0; gi < groups; ++gi) {
    const at::Tensor a = w.narrow(0, gi * per, per).to(at::kDouble), q = w_hat.narrow(0, gi * per, per).to(at::kDouble);
    err += (at::mm(q, grams.xhat_xhat[gi]) * q).sum().item<double>();
    err -= 2 * (at::mm(q, (grams.xhat_xhat[gi] + grams.diff_xhat[gi]).t()) * a).sum().item<double>();  // XX̂ᵀ = G + D
  }
  if (target_energy <= 0) return err <= 0 ? 0.0 : INFINITY;
  return std::sqrt(std::max(0.0, err) / target_energy);
}

at::Tensor bias_shift(const at::Tensor& w, const at::Tensor& w_hat, const Grams& grams) {
  const std::int64_t groups = grams.x_sum.size(0);
  const std::int64_t per = w.size(0) / groups;
  const double n = double(std::max<std::int64_t>(1, grams.tokens));
  std::vector<at::Tensor> parts;
  for (std::int64_t gi = 0; gi < groups; ++gi) {
    const at::Tensor a = w.narrow(0, gi * per, per).to(at::kDouble), q = w_hat.narrow(0, gi * per, per).to(at::kDouble);
    parts.push_back((at::mv(a, grams.x_sum[gi]) - at::mv(q, grams.xhat_sum[gi])) / n);
  }
  return at::cat(parts);
}

double corrected_output_error(double relative_error, const at::Tensor& shift, const Grams& grams, double target_energy) {
  if (target_energy <= 0 || !std::isfinite(relative_error)) return relative_error;
  const double err = relative_error * relative_error * target_energy - double(grams.tokens) * shift.pow(2).sum().item<double>();
  return std::sqrt(std::max(0.0, err) / target_energy);
}

at::Tensor noted_sequential_rounding(const at::Tensor& w, const at::Tensor& h, std::int64_t row0, WeightGrid& grid,
                                     ColumnWalk o, std::map<std::string, double>& notes) {
  std::pair<double, double> shares{0.0, 0.0};
  o.searched_shares = &shares;
  at::Tensor q = sequential_rounding(w, h, row0, grid, o);
  if (o.scales_mse && o.scales_from.defined()) {
    notes["scales_clipped"] = shares.first;
    notes["scales_coarser"] = shares.second;
  }
  return q;
}

}  // namespace qcast::ptq::detail
