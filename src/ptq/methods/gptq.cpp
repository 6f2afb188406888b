// gptq: Frantar et al., "GPTQ" (2023), with X̂X̂ᵀ from the partly quantized model as the Hessian (the
// sequential variant: the target is W·X̂). Damping, lazy batches and act-order as in the paper's code.
#include "../method.hpp"
#include "../solvers.hpp"

QCAST_PTQ_METHOD(gptq) {
  using qcast::ptq::MethodOption;
  qcast::ptq::MethodInfo info;
  info.name = "gptq";
  info.help = "GPTQ: second-order error compensation on the quantized model's inputs";
  info.bounds_accumulator = true;
  info.options = {
      {"act-order", MethodOption::Kind::flag, "false", "columns by decreasing input energy (block scales fixed from W first)"},
      {"damping", MethodOption::Kind::real, "0.01", "added to the Hessian's diagonal, as a fraction of its mean"},
      qcast::ptq::detail::lazy_batch_option(),
      qcast::ptq::detail::scales_option("from the updated ones", true),
  };
  return {info, [](qcast::ptq::detail::GroupProblem& p) {
            qcast::ptq::detail::ColumnWalk walk;
            walk.act_order = p.options->flag("act-order");
            walk.damping = p.options->real("damping");
            walk.lazy_batch = p.options->integer("lazy-batch");
            qcast::ptq::detail::choose_scales(walk, p.options->choice("scales"), p.w);
            walk.accumulator = p.accumulator;
            if (p.record_rounded) walk.rounded = &p.rounded;
            return qcast::ptq::detail::noted_sequential_rounding(p.w, p.g, p.row0, *p.grid, walk, p.notes);
          }};
}
