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
//    the diffused weights when the walk reaches the block (--scales diffused); --scales mse searches
//    each block's scale on the float weights first (solvers.hpp, fix_all_blocks_mse).
#include <ATen/ATen.h>

#include <algorithm>
#include <string>
#include <tuple>
#include <utility>

#include "../method.hpp"
#include "../solvers.hpp"

namespace {

using qcast::ptq::detail::damping_of;


// Δ = W·D·(G + λI)⁻¹: the fold's full correction from one set of statistics.
at::Tensor fold_shift(const at::Tensor& w, const at::Tensor& g, const at::Tensor& d, double damping) {
  at::Tensor gd = g.clone();
  gd.diagonal().masked_fill_(g.diagonal() == 0, 1.0);  // always-zero inputs (their D rows are zero too)
  gd.diagonal().add_(damping_of(g, damping));
  const at::Tensor l = at::linalg_cholesky(gd);
  return at::cholesky_solve(at::mm(d.t(), w.t()), l).t();
}

// The fold factor a from the two halves of the calibration samples (cross-fitting): Δ_h fitted on
// half h, scored on the other half o, where ||aΔ_h·X̂_o − W·(X_o − X̂_o)||² = a²·tr(Δ_h G_o Δ_hᵀ)
// − 2a·tr(Δ_h D_oᵀ Wᵀ) + const. 0 where the halves give no signal (e.g. one calibration sample).
double held_out_fold(const qcast::ptq::detail::GroupProblem& p, double damping) {
  double num = 0, den = 0;
  for (int h = 0; h < 2; ++h) {
    const std::size_t fit = std::size_t(h), test = std::size_t(1 - h);
    const at::Tensor delta = fold_shift(p.w, p.half_g[fit], p.half_d[fit], damping);
    num += (at::mm(p.w, p.half_d[test]) * delta).sum().item<double>();
    den += (at::mm(delta, p.half_g[test]) * delta).sum().item<double>();
  }
  if (!(den > 0)) return 0.0;
  return std::clamp(num / den, 0.0, 1.0);
}

// The candidates of --held-out-damping, as fractions of the mean diagonal of G.
constexpr double kDampings[] = {0.01, 0.03, 0.1, 0.3, 1.0};

// The damping chosen on held-out samples (cross-fitting, as the fold factor): for each candidate,
// the fold and the walk fitted on one half of the calibration samples are scored on the other, by
// ||Q·X̂_o − W·X_o||² = tr(Q G_o Qᵀ) − 2 tr(Q (G_o + D_o)ᵀ Wᵀ) + const, and the candidate with the
// least error summed over both directions is kept. A larger damping pulls the walk's corrections
// toward the directions the calibration inputs pin down: with 4096 tokens for 1536 columns the
// inverse of G fits noise, which held-out samples see and the samples fitted do not.
// Returns the damping and the fold factor chosen with it.
std::pair<double, double> held_out_damping(const qcast::ptq::detail::GroupProblem& p,
                                           const qcast::ptq::detail::ColumnWalk& base, const std::string& fold_mode) {
  using namespace qcast::ptq::detail;
  double best = kDampings[0], best_fold = 0, best_error = 0;
  bool first = true;
  for (const double damping : kDampings) {
    ColumnWalk walk = base;
    walk.damping = damping;
    walk.rounded = nullptr;
    const double a = fold_mode == "full" ? 1.0 : fold_mode == "none" ? 0.0 : held_out_fold(p, damping);
    double error = 0;
    for (int h = 0; h < 2; ++h) {
      const std::size_t fit = std::size_t(h), test = std::size_t(1 - h);
      at::Tensor v = p.w.clone();
      if (a > 0) v = (p.w + a * fold_shift(p.w, p.half_g[fit], p.half_d[fit], damping)).contiguous();
      const at::Tensor q = sequential_rounding(v, p.half_g[fit], p.row0, *p.grid, walk);
      error += (at::mm(q, p.half_g[test]) * q).sum().item<double>() -
               2 * (at::mm(q, (p.half_g[test] + p.half_d[test]).t()) * p.w).sum().item<double>();
    }
    if (first || error < best_error) {
      best = damping;
      best_fold = a;
      best_error = error;
      first = false;
    }
  }
  return {best, best_fold};
}

}  // namespace

QCAST_PTQ_METHOD(ed) {
  using qcast::ptq::MethodOption;
  qcast::ptq::MethodInfo info;
  info.name = "ed";
  info.help = "Error Diffusion: fits W_q.X_q to the float output W.X, error diffused column by column";
  info.bounds_accumulator = true;
  info.options = {
      qcast::ptq::detail::scales_option("from the diffused ones", true),
      {"act-order", MethodOption::Kind::flag, "false",
       "columns by decreasing input energy, as GPTQ's act-order (every block scale fixed before the walk)"},
      {"damping", MethodOption::Kind::real, "0.01", "added to G's diagonal in the fold and the walk, as a fraction of its mean"},
      {"held-out-damping", MethodOption::Kind::flag, "false",
       "the damping chosen from 0.01, 0.03, 0.1, 0.3 and 1 by the error on held-out calibration samples (--damping unused)"},
      {"fold", MethodOption::Kind::choice, "held-out",
       "how much of the float target to fold in: chosen on held-out samples, all of it, or none",
       {"held-out", "full", "none"}},
  };
  return {info, [](qcast::ptq::detail::GroupProblem& p) {
            using namespace qcast::ptq::detail;
            ColumnWalk walk;  // natural column order unless --act-order
            walk.damping = p.options->real("damping");
            choose_scales(walk, p.options->choice("scales"), p.w);
            walk.accumulator = p.accumulator;
            if (p.record_rounded) walk.rounded = &p.rounded;
            walk.act_order = p.options->flag("act-order");
            const std::string& mode = p.options->choice("fold");
            double a = 0;
            if (p.options->flag("held-out-damping")) {
              std::tie(walk.damping, a) = held_out_damping(p, walk, mode);
              p.notes["damping"] = walk.damping;
            } else {
              a = mode == "full" ? 1.0 : mode == "none" ? 0.0 : held_out_fold(p, walk.damping);
            }
            p.notes["fold"] = a;
            at::Tensor v = p.w;
            if (a > 0) v = (p.w + a * fold_shift(p.w, p.g, p.d, walk.damping)).contiguous();
            return noted_sequential_rounding(v, p.g, p.row0, *p.grid, walk, p.notes);
          }};
}
