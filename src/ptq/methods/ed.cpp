// ed: Error Diffusion (docs/ptq.md, docs/design/0003-error-diffusion.md): Ŵ·X̂ ≈ W·X, greedily, column
// by column. The float target W·X is first expressed on the quantized-path inputs: V minimizes
// ||V·X̂ − W·X||² + λ||V − W||², i.e. V = W + W·(XX̂ᵀ − X̂X̂ᵀ)·(X̂X̂ᵀ + λI)⁻¹ (one Cholesky solve; V = W
// when X̂ = X), which folds the error of the layers before into the target. Then each column in turn
// is rounded on its block's grid and the output error it leaves is diffused into the columns not yet
// quantized (the sequential nearest-plane step, through the same Cholesky factor GPTQ uses); a
// block's scale is fixed from the diffused weights when the walk reaches the block. No knobs: λ is
// the fixed 1 % of the mean diagonal that GPTQ uses by default.
#include <ATen/ATen.h>

#include "../method.hpp"
#include "../solvers.hpp"

QCAST_PTQ_METHOD(ed) {
  qcast::ptq::MethodInfo info;
  info.name = "ed";
  info.help = "Error Diffusion: fits W_q.X_q to the float output W.X, error diffused column by column";
  return {info, [](qcast::ptq::detail::GroupProblem& p) {
            using namespace qcast::ptq::detail;
            const ColumnWalk walk;  // natural column order, block scales fixed on reach, 1 % damping
            at::Tensor gd = p.g.clone();
            gd.diagonal().masked_fill_(p.g.diagonal() == 0, 1.0);  // always-zero inputs (their C rows are zero too)
            gd.diagonal().add_(damping_of(p.g, walk.damping));
            const at::Tensor l = at::linalg_cholesky(gd);
            const at::Tensor shift = at::cholesky_solve(at::mm((p.c - p.g).t(), p.w.t()), l).t();  // W·(C − G)·(G+λI)⁻¹
            return sequential_rounding((p.w + shift).contiguous(), p.g, p.row0, *p.grid, walk);
          }};
}
