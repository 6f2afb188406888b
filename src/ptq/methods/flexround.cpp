// flexround: FlexRound (Lee et al., ICML 2023), learnable rounding by element-wise division,
// Ŵ = s1 · round(W / (s1 · S2 · s3 · s4)), trained with Adam to reconstruct the output of each span
// of layers on the quantized stream's inputs against the float stream's outputs. The engine trains
// the spans (src/ptq/flexround.cpp); this solve then rounds the learned W / (S2 · s3 · s4) on the
// learned scales, which the engine fixed on the grid before.
#include "../method.hpp"
#include "../solvers.hpp"

QCAST_PTQ_METHOD(flexround) {
  using qcast::ptq::MethodOption;
  qcast::ptq::MethodInfo info;
  info.name = "flexround";
  info.help = "learnable rounding by element-wise division, trained to reconstruct each span of layers (FlexRound)";
  info.reconstructs_spans = true;
  info.options = {
      {"span", MethodOption::Kind::text, "auto",
       "layers trained together: auto (name up to its first number between separators: encoder.layer.3, block_3), layer, or a regex whose match names the span"},
      {"iters", MethodOption::Kind::integer, "500", "Adam iterations per span, one calibration batch each"},
      {"lr", MethodOption::Kind::real, "0.0003", "Adam's first learning rate, falling linearly to 0 (the factors are learned as logarithms)"},
      {"seed", MethodOption::Kind::integer, "1", "seed of the order in which the batches are visited"},
      {"start", MethodOption::Kind::choice, "rtn",
       "where the rounding starts: round-to-nearest, or the result of gptq or ed (each span's layers solved by that method first)",
       {"rtn", "gptq", "ed"}},
      {"holdout", MethodOption::Kind::count, "0",
       "the last N calibration batches are not trained on; every 50 iterations the span's error on them picks the iterate kept (early stopping)"},
  };
  return {info, [](qcast::ptq::detail::GroupProblem& p) {
            qcast::ptq::detail::round_to_nearest(p.w, p.row0, *p.grid);
            return p.w;
          }};
}
