// ed: Error Diffusion (docs/ptq.md, docs/design/0003-error-diffusion.md, 0008-error-diffusion-fold.md):
// Ŵ·X̂ ≈ W·X, greedily, column by column.
// 1. The fold: the float target W·X is expressed on the quantized-path inputs. The least-squares
//    correction Δ = W·D·(G + λI)⁻¹ (G = X̂X̂ᵀ, D = (X − X̂)X̂ᵀ, λ GPTQ's 1 % of the mean diagonal) fits
//    the calibration tokens, and with more columns than the tokens can pin down it over-corrects. So
//    ED folds in a·Δ, with a in [0, 1] chosen from held-out data: Δ fitted on the even calibration
//    samples is scored on the odd ones and the reverse; a minimizes the summed held-out error
//    ||(W + aΔ)X̂ − WX||², a quadratic in a with a closed-form minimum (two extra Cholesky solves).
// 2. The walk: each column in turn is rounded on its block's grid and the output error it leaves is
//    diffused into the columns not yet quantized (the sequential nearest-plane step, through the same
//    Cholesky factor GPTQ uses). Block scales come from the float weights (--scales static) or from
//    the diffused weights when the walk reaches the block (--scales diffused).
#include <ATen/ATen.h>

#include <algorithm>

#include "../method.hpp"
#include "../solvers.hpp"

namespace {

using qcast::ptq::detail::damping_of;

constexpr double kDamping = 0.01;  // λ as a fraction of the mean diagonal of G, as GPTQ's default

// Δ = W·D·(G + λI)⁻¹: the fold's full correction from one set of statistics.
at::Tensor fold_shift(const at::Tensor& w, const at::Tensor& g, const at::Tensor& d) {
  at::Tensor gd = g.clone();
  gd.diagonal().masked_fill_(g.diagonal() == 0, 1.0);  // always-zero inputs (their D rows are zero too)
  gd.diagonal().add_(damping_of(g, kDamping));
  const at::Tensor l = at::linalg_cholesky(gd);
  return at::cholesky_solve(at::mm(d.t(), w.t()), l).t();
}

// The fold factor a from the two halves of the calibration samples (cross-fitting): Δ_h fitted on
// half h, scored on the other half o, where ||aΔ_h·X̂_o − W·(X_o − X̂_o)||² = a²·tr(Δ_h G_o Δ_hᵀ)
// − 2a·tr(Δ_h D_oᵀ Wᵀ) + const. 0 where the halves give no signal (e.g. one calibration sample).
double held_out_fold(const qcast::ptq::detail::GroupProblem& p) {
  double num = 0, den = 0;
  for (int h = 0; h < 2; ++h) {
    const std::size_t fit = std::size_t(h), test = std::size_t(1 - h);
    const at::Tensor delta = fold_shift(p.w, p.half_g[fit], p.half_d[fit]);
    num += (at::mm(p.w, p.half_d[test]) * delta).sum().item<double>();
    den += (at::mm(delta, p.half_g[test]) * delta).sum().item<double>();
  }
  if (!(den > 0)) return 0.0;
  return std::clamp(num / den, 0.0, 1.0);
}

}  // namespace

QCAST_PTQ_METHOD(ed) {
  using qcast::ptq::MethodOption;
  qcast::ptq::MethodInfo info;
  info.name = "ed";
  info.help = "Error Diffusion: fits W_q.X_q to the float output W.X, error diffused column by column";
  info.bounds_accumulator = true;
  info.options = {
      qcast::ptq::detail::scales_option("from the diffused ones"),
      {"act-order", MethodOption::Kind::flag, "false",
       "columns by decreasing input energy, as GPTQ's act-order (every block scale fixed before the walk)"},
      {"fold", MethodOption::Kind::choice, "held-out",
       "how much of the float target to fold in: chosen on held-out samples, all of it, or none",
       {"held-out", "full", "none"}},
  };
  return {info, [](qcast::ptq::detail::GroupProblem& p) {
            using namespace qcast::ptq::detail;
            ColumnWalk walk;  // 1 % damping; natural column order unless --act-order
            choose_scales(walk, p.options->choice("scales"), p.w);
            walk.accumulator = p.accumulator;
            if (p.record_rounded) walk.rounded = &p.rounded;
            walk.act_order = p.options->flag("act-order");
            const std::string& mode = p.options->choice("fold");
            const double a = mode == "full" ? 1.0 : mode == "none" ? 0.0 : held_out_fold(p);
            p.notes["fold"] = a;
            at::Tensor v = p.w;
            if (a > 0) v = (p.w + a * fold_shift(p.w, p.g, p.d)).contiguous();
            return sequential_rounding(v, p.g, p.row0, *p.grid, walk);
          }};
}
