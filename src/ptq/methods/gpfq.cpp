// gpfq: greedy path-following quantization (Lybrand and Saab, "A Greedy Algorithm for Quantizing
// Neural Networks", JMLR 2021; Zhang, Zhou and Saab, "Post-training quantization for neural networks
// with provable guarantees", 2023), in the memory-efficient form with Gram matrices that Brevitas'
// gpfq_mode computes. Like ED it fits the quantized stream to the float one: with X_t the float
// inputs of column t and X̂_t the quantized ones, and u the output error of the columns done so far,
//   q_t = Q((u + w_t·X_t)·X̂_t / ||X̂_t||²),   u ← u + w_t·X_t − q_t·X̂_t.
// Only inner products of u with X̂_t are needed, so u is never formed: with C = XX̂ᵀ and G = X̂X̂ᵀ,
//   (u + w_t X_t)·X̂_t = Σ_{s≤t} w_s C_st − Σ_{s<t} q_s G_st,
// kept for the columns not yet done in P[rows, cols]. Within a lazy batch P is updated column by
// column; past it, with one matrix product per batch (as GPTQ's lazy batches). Block scales:
// --scales static (default, as ED's) fixes them from the float weights before the walk; --scales
// diffused fixes a block's scale when the walk reaches it, from the targets its columns have then
// (the output error of the columns before included), which is what "current-weight" scales are in
// GPFQ, where the weights not yet reached never change. With an accumulator bound (AXE, Colbert et
// al. 2024), each target is rounded within the codes that keep it (BoundedRounding).
#include <ATen/ATen.h>

#include <algorithm>
#include <vector>

#include "../method.hpp"
#include "../solvers.hpp"

QCAST_PTQ_METHOD(gpfq) {
  qcast::ptq::MethodInfo info;
  info.name = "gpfq";
  info.help = "GPFQ: greedy path following, each column fitted to the float output left so far";
  info.bounds_accumulator = true;
  info.options = {
      qcast::ptq::detail::lazy_batch_option(),
      qcast::ptq::detail::scales_option("from the targets when the walk reaches them"),
  };
  return {info, [](qcast::ptq::detail::GroupProblem& p) {
            const at::Tensor& w = p.w;
            const std::int64_t rows = w.size(0), cols = w.size(1);
            const at::Tensor c = (p.g + p.d).contiguous();  // XX̂ᵀ
            const at::Tensor g = p.g.contiguous();
            qcast::ptq::WeightGrid& grid = *p.grid;
            const bool diffused = p.options->choice("scales") == "diffused";
            if (!diffused) qcast::ptq::detail::fix_all_blocks(grid, p.row0, w);  // static: from the float weights
            // AXE: each target soft-thresholded and clamped to the codes that keep the bound.
            std::optional<qcast::ptq::detail::BoundedRounding> bounded =
                qcast::ptq::detail::bounded_rounding(p.accumulator, grid, p.row0, w, !diffused);
            std::vector<double> block_targets;
            const std::int64_t width = qcast::ptq::detail::batch_width(grid, p.options->integer("lazy-batch"));

            at::Tensor q = at::zeros_like(w);
            at::Tensor pending = at::zeros_like(w);  // P: Σ over the columns done of w_s C_s· − q_s G_s·
            const double* W = w.data_ptr<double>();
            const double* C = c.data_ptr<double>();
            const double* G = g.data_ptr<double>();
            double* Q = q.data_ptr<double>();
            double* P = pending.data_ptr<double>();
            for (std::int64_t i1 = 0; i1 < cols; i1 += width) {
              const std::int64_t i2 = std::min(cols, i1 + width);
              for (std::int64_t t = i1; t < i2; ++t) {
                const double gtt = G[t * cols + t], ctt = C[t * cols + t];
                const double* ct = C + t * cols;
                const double* gt = G + t * cols;
                if (diffused && grid.opens_block(t)) {
                  // The block's columns are all in this lazy batch, so P holds every column before t.
                  const std::int64_t n = std::min<std::int64_t>(grid.block_size(), cols - t);
                  block_targets.resize(std::size_t(n));
                  for (std::int64_t r = 0; r < rows; ++r) {
                    for (std::int64_t k = 0; k < n; ++k) {
                      const double gkk = G[(t + k) * cols + t + k], wk = W[r * cols + t + k];
                      block_targets[std::size_t(k)] = gkk > 0 ? (P[r * cols + t + k] + wk * C[(t + k) * cols + t + k]) / gkk : wk;
                    }
                    grid.fix_block(p.row0 + r, t, block_targets.data(), n);
                  }
                }
                for (std::int64_t r = 0; r < rows; ++r) {
                  const double wt = W[r * cols + t];
                  // An input that is always zero on the quantized path: nothing to fit, round w.
                  const double target = gtt > 0 ? (P[r * cols + t] + wt * ctt) / gtt : wt;
                  const double qt = bounded ? bounded->quantize(r, t, target) : grid.quantize(p.row0 + r, t, target);
                  Q[r * cols + t] = qt;
                  double* pr = P + r * cols;
                  for (std::int64_t k = t + 1; k < i2; ++k) pr[k] += wt * ct[k] - qt * gt[k];
                }
              }
              if (i2 < cols) {
                const auto later = at::indexing::Slice(i2, cols);
                const auto done = at::indexing::Slice(i1, i2);
                pending.index({at::indexing::Slice(), later})
                    .add_(at::mm(w.index({at::indexing::Slice(), done}), c.index({done, later})))
                    .sub_(at::mm(q.index({at::indexing::Slice(), done}), g.index({done, later})));
              }
            }
            return q;
          }};
}
