// GPFQ (src/ptq/methods/gpfq.cpp): the Gram-matrix form the plug-in computes equals GPFQ written
// directly on the tokens (the running output error u as a vector, Lybrand and Saab's Algorithm 1),
// and on a model it beats round-to-nearest where the float and the quantized streams differ.
#include <ATen/ATen.h>

#include <map>
#include <string>

#include "grams.hpp"
#include "method.hpp"
#include "qcast/cast.hpp"
#include "qcast/format_names.hpp"
#include "qcast/ptq/engine.hpp"
#include "qcast/ptq/weight_grid.hpp"

#undef CHECK
#include <catch2/catch.hpp>

#include "module_params.hpp"

namespace ptq = qcast::ptq;

namespace {

// GPFQ on the tokens: x, xhat [cols, tokens] float64; block scales fixed from w first.
at::Tensor gpfq_on_tokens(const at::Tensor& w, const at::Tensor& x, const at::Tensor& xhat, ptq::WeightGrid& grid) {
  const std::int64_t rows = w.size(0), cols = w.size(1);
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t c = 0; c < cols; ++c)
      if (grid.opens_block(c))
        grid.fix_block(r, c, w[r].contiguous().data_ptr<double>() + c, std::min<std::int64_t>(grid.block_size(), cols - c));
  at::Tensor u = at::zeros({rows, x.size(1)}, at::kDouble);
  at::Tensor q = at::zeros_like(w);
  for (std::int64_t t = 0; t < cols; ++t) {
    const at::Tensor xt = x[t], xht = xhat[t];
    const at::Tensor target = at::mv(u + at::outer(w.select(1, t), xt), xht) / at::dot(xht, xht);
    for (std::int64_t r = 0; r < rows; ++r) q[r][t] = grid.quantize(r, t, target[r].item<double>());
    u += at::outer(w.select(1, t), xt) - at::outer(q.select(1, t), xht);
  }
  return q;
}

// The gpfq plug-in on one group with these options; the grid is left with its recorded codes.
at::Tensor solve_gpfq(const at::Tensor& w, const qcast::ptq::detail::Grams& grams, ptq::WeightGrid& grid,
                      const std::map<std::string, std::string>& options) {
  const auto& plugin = ptq::detail::find_plugin("gpfq");
  const ptq::detail::MethodValues values(plugin.info, options);
  ptq::detail::GroupProblem p;
  p.w = w.clone();
  p.g = grams.xhat_xhat[0];
  p.d = grams.diff_xhat[0];
  p.grid = &grid;
  p.options = &values;
  return plugin.solve(p);
}

}  // namespace

TEST_CASE("GPFQ from Gram matrices equals GPFQ on the tokens") {
  at::manual_seed(31);
  const std::int64_t rows = 6, cols = 40, tokens = 300;
  const at::Tensor mix = at::randn({cols, cols}).to(at::kDouble) / 6.0;
  const at::Tensor x = at::mm(mix, at::randn({cols, tokens}).to(at::kDouble)).to(at::kFloat).to(at::kDouble);
  const at::Tensor xhat = (x + 0.05 * at::randn({cols, tokens}).to(at::kDouble)).to(at::kFloat).to(at::kDouble);
  const at::Tensor w = at::randn({rows, cols}).to(at::kDouble).contiguous();
  qcast::ptq::detail::Grams grams;
  grams.add(x.unsqueeze(0), xhat.unsqueeze(0), 1);
  grams.finish();
  for (const std::string format : {"int4@g16", "mxfp4", "int8@channel"}) {
    for (const std::string lazy : {"1", "16", "128"}) {
      INFO(format << ", lazy batch " << lazy);
      ptq::WeightGrid grid(qcast::parse_format(format), rows, cols, w.data_ptr<double>());
      const at::Tensor from_grams = solve_gpfq(w, grams, grid, {{"lazy-batch", lazy}, {"scales", "static"}});
      ptq::WeightGrid direct_grid(qcast::parse_format(format), rows, cols, w.data_ptr<double>());
      const at::Tensor direct = gpfq_on_tokens(w, x, xhat, direct_grid);
      // Both forms round the same targets up to float64 reassociation; a target within an ulp of a
      // rounding boundary could go either way, and no such tie occurs in this data.
      CHECK(at::equal(from_grams, direct));
      CHECK(!at::equal(from_grams, at::zeros_like(from_grams)));
    }
  }
}

TEST_CASE("GPFQ with diffused scales: each block's scale from its columns' targets when the walk reaches it") {
  at::manual_seed(34);
  const std::int64_t rows = 4, cols = 64, tokens = 200;
  const at::Tensor x = at::randn({cols, tokens}).to(at::kDouble);
  const at::Tensor xhat = (x + 0.2 * at::randn({cols, tokens}).to(at::kDouble)).to(at::kFloat).to(at::kDouble);
  const at::Tensor w = at::randn({rows, cols}).to(at::kDouble).contiguous();
  qcast::ptq::detail::Grams grams;
  grams.add(x.unsqueeze(0), xhat.unsqueeze(0), 1);
  grams.finish();
  std::vector<std::vector<std::uint8_t>> scales;
  for (const std::string mode : {"static", "diffused"}) {
    ptq::WeightGrid grid(qcast::parse_format("mxfp4"), rows, cols, w.data_ptr<double>());
    const at::Tensor q = solve_gpfq(w, grams, grid, {{"scales", mode}, {"lazy-batch", "32"}});
    scales.push_back(grid.encoded().scales);
    // Every value is on its block's grid: decoding the recorded codes gives it back.
    std::vector<float> decoded(std::size_t(rows * cols));
    qcast::decode(grid.encoded(), decoded.data());
    CHECK(at::equal(q.to(at::kFloat), at::from_blob(decoded.data(), {rows, cols}, at::kFloat)));
  }
  CHECK(scales[0] != scales[1]);
}

TEST_CASE("GPFQ on a model: below round-to-nearest's output error after the first layer") {
  const torch::jit::Module m = qcast_test::tanh_mlp(48, 7.0, 32);
  const at::Tensor mixing = at::randn({8, 48});
  std::vector<ptq::Batch> calib;
  for (int b = 0; b < 2; ++b) calib.push_back({at::mm(at::randn({256, 8}), mixing) + 0.05 * at::randn({256, 48})});
  ptq::Options o;
  o.format = qcast::parse_format("int4@g16");
  o.method = "gpfq";
  const ptq::Result r = ptq::quantize(m, calib, o);
  REQUIRE(r.report.layers.size() == 3);
  for (const auto& l : r.report.layers) {
    INFO(l.name << ": " << l.relative_error << " vs rtn " << l.rtn_relative_error);
    CHECK(l.relative_error < l.rtn_relative_error);
  }
}

TEST_CASE("bias correction: the mean output shift goes into the bias, for any method") {
  at::manual_seed(33);
  torch::jit::Module m("Biased");
  m.register_parameter("w0", at::randn({32, 32}) / 6.0, false);
  m.register_parameter("b0", at::randn({32}) * 0.1, false);
  m.register_parameter("w1", at::randn({16, 32}) / 6.0, false);
  m.define(R"(
def forward(self, x):
    x = torch.relu(torch.linear(x, self.w0, self.b0))
    return torch.linear(x, self.w1)
)");
  // Inputs with a large common offset: rounding the weights then shifts each output's mean.
  std::vector<ptq::Batch> calib;
  for (int b = 0; b < 2; ++b) calib.push_back({at::randn({128, 32}) * 0.3 + 2.0});
  for (const std::string method : {"rtn", "gpfq", "ed"}) {
    INFO(method);
    ptq::Options o;
    o.format = qcast::parse_format("int4@g16");
    o.method = method;
    const ptq::Result plain = ptq::quantize(m, calib, o);
    o.bias_correction = true;
    const ptq::Result corrected = ptq::quantize(m, calib, o);
    const auto& l0 = corrected.report.layers[0];
    CHECK(l0.notes.count("bias_shift") == 1);
    CHECK(corrected.report.layers[1].notes.count("no_bias") == 1);
    // Same weights for layer 0; its bias moved by exactly the measured shift of the first layer's outputs.
    const at::Tensor w = m.attr("w0").toTensor(), b = m.attr("b0").toTensor();
    const at::Tensor wq = corrected.model.attr("w0").toTensor(), bq = corrected.model.attr("b0").toTensor();
    CHECK(at::equal(wq, plain.model.attr("w0").toTensor()));
    at::Tensor x = at::cat({calib[0][0].toTensor(), calib[1][0].toTensor()});
    const at::Tensor shift = (at::linear(x.to(at::kDouble), w.to(at::kDouble)) - at::linear(x.to(at::kDouble), wq.to(at::kDouble))).mean(0);
    CHECK(at::allclose(bq.to(at::kDouble) - b.to(at::kDouble), shift, 1e-5, 1e-6));
    CHECK(shift.abs().max().item<double>() > 1e-3);
    // The corrected layer's output error is below the uncorrected one's.
    CHECK(l0.relative_error < plain.report.layers[0].relative_error);
  }
  ptq::Options o;
  o.format = qcast::parse_format("int4@g16");
  o.method = "rtn";
  o.bias_correction = true;
  CHECK_THROWS_WITH(ptq::quantize(m, {}, o), Catch::Contains("bias correction needs calibration data"));
}
