// The format search (Options::search_formats, search_clips): each layer gets the candidate format x
// clip ratio whose round-to-nearest weights have the least output error on the calibration data,
// checked against the errors computed here from the data itself, grid by grid.
#include <ATen/ATen.h>

#include <limits>

#include "qcast/format_names.hpp"
#include "qcast/ptq/engine.hpp"
#include "qcast/ptq/weight_grid.hpp"

#undef CHECK
#include <catch2/catch.hpp>

#include "module_params.hpp"

namespace ptq = qcast::ptq;
using qcast_test::param;

namespace {

// Round to nearest on a WeightGrid with the clip ratio: each block's scale from its own values.
at::Tensor rtn(const at::Tensor& w, const qcast::Format& f, double clip) {
  const at::Tensor wd = w.to(at::kDouble).contiguous();
  const std::int64_t rows = wd.size(0), cols = wd.size(1);
  ptq::WeightGrid g(f, rows, cols, wd.data_ptr<double>(), clip);
  at::Tensor q = wd.clone();
  double* v = q.data_ptr<double>();
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t c = 0; c < cols; ++c) {
      if (g.opens_block(c)) g.fix_block(r, c, v + r * cols + c, std::min<std::int64_t>(g.block_size(), cols - c));
      v[r * cols + c] = g.quantize(r, c, v[r * cols + c]);
    }
  return q.to(at::kFloat);
}

}  // namespace

TEST_CASE("the format search keeps the candidate and clip with the least output error") {
  at::manual_seed(41);
  at::Tensor w = at::randn({16, 64}) * 0.2;
  w.index_put_({at::indexing::Slice(), 5}, 3.0);  // an outlier column ...
  torch::jit::Module m("One");
  m.register_parameter("w", w, false);
  m.define("def forward(self, x):\n    return torch.linear(x, self.w)\n");
  at::Tensor x = at::randn({256, 64});
  x.index_put_({at::indexing::Slice(), 5}, x.index({at::indexing::Slice(), 5}) * 0.01);  // ... on an input that is nearly 0:
  // clipping it costs the output little and refines the grid of its block's other 31 weights
  const std::vector<ptq::Batch> calib = {{x.narrow(0, 0, 128)}, {x.narrow(0, 128, 128)}};

  ptq::Options o;
  o.format = qcast::parse_format("int4@g32");
  o.method = "rtn";
  o.search_formats = {qcast::parse_format("e1m2nosp@g32:scale=e8m0"), qcast::parse_format("mxfp4"),
                      qcast::parse_format("int4@g32")};
  o.search_clips = {1.0, 0.9, 0.8, 0.7, 0.6};
  const ptq::Result r = ptq::quantize(m, calib, o);
  const auto& lr = r.report.layers.at(0);

  double best = std::numeric_limits<double>::infinity();
  std::string best_format;
  double best_clip = 0;
  const at::Tensor target = at::mm(x.to(at::kDouble), w.t().to(at::kDouble));
  for (const auto& f : o.search_formats)
    for (const double c : o.search_clips) {
      const at::Tensor q = rtn(w, f, c);
      const double e = (at::mm(x.to(at::kDouble), q.t().to(at::kDouble)) - target).norm().item<double>() /
                       target.norm().item<double>();
      if (e < best * (1 - 1e-9)) {
        best = e;
        best_format = qcast::format_name(f);
        best_clip = c;
      }
    }
  INFO("chosen " << lr.format << " clip " << lr.notes.at("clip") << ", best here " << best_format << " clip " << best_clip);
  CHECK(lr.format == best_format);
  CHECK(lr.notes.at("clip") == best_clip);
  CHECK(lr.notes.at("search_rtn_error") == Approx(best).epsilon(1e-9));
  CHECK(lr.relative_error == Approx(best).epsilon(1e-9));  // rtn: the method's result is the candidate's
  CHECK(best_clip < 1.0);  // the outlier column makes a clip worth it
  CHECK(at::equal(param(r.model, "w"), rtn(w, qcast::parse_format(best_format), best_clip)));
  // The packed weight holds the chosen format.
  CHECK(qcast::format_name(r.packed.at(0).matrix.format) == best_format);

  // Bad input: no data, a clip outside (0, 1].
  CHECK_THROWS_WITH(ptq::quantize(m, {}, o), Catch::Contains("the format search scores candidates on calibration data"));
  o.search_clips = {1.2};
  CHECK_THROWS_WITH(ptq::quantize(m, calib, o), Catch::Contains("a clip ratio must be in (0, 1]"));
}
