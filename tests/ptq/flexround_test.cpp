// FlexRound (src/ptq/flexround.cpp, src/ptq/methods/flexround.cpp): the learnable rounding starts
// as round-to-nearest with static scales, its forward value is always the grid's own rounding of
// W / (S2 s3 s4) on the learned scales (what the final solve stores), its gradients are the
// straight-through ones, and in the engine every span's reconstruction error falls with training,
// on models with convolutions, in-place operations, control flow and a weight used twice.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <map>
#include <string>
#include <tuple>
#include <vector>

#include "flexround.hpp"
#include "qcast/cast.hpp"
#include "qcast/format_names.hpp"
#include "qcast/ptq/engine.hpp"
#include "qcast/ptq/weight_grid.hpp"
#include "solvers.hpp"

#undef CHECK
#include <catch2/catch.hpp>

#include "module_params.hpp"

namespace ptq = qcast::ptq;
using qcast::ptq::detail::FlexRoundWeight;

namespace {

at::Tensor rtn(const at::Tensor& w, const std::string& format) {
  ptq::WeightGrid grid(qcast::parse_format(format), w.size(0), w.size(1), w.data_ptr<double>());
  at::Tensor q = w.clone();
  ptq::detail::round_to_nearest(q, 0, grid);
  return q;
}

// What the engine's solve stores for a learned weight: its division rounded on its learned scales.
at::Tensor solved(const FlexRoundWeight& f, const at::Tensor& w, const std::string& format) {
  ptq::WeightGrid grid(qcast::parse_format(format), w.size(0), w.size(1), w.data_ptr<double>());
  f.fix_scales(grid);
  at::Tensor q = f.divided().contiguous();
  ptq::detail::round_to_nearest(q, 0, grid);
  std::vector<float> decoded(std::size_t(w.numel()));
  qcast::decode(grid.encoded(), decoded.data());
  CHECK(at::equal(at::from_blob(decoded.data(), q.sizes(), at::kFloat).to(at::kDouble), q));
  return q;
}

// Correlated inputs for the 192-wide tanh MLP: with white ones round-to-nearest is already about
// the best rounding.
std::vector<ptq::Batch> correlated_calibration() {
  at::manual_seed(12);
  std::vector<ptq::Batch> calib;
  const at::Tensor mix = at::randn({192, 192}) * at::rand({1, 192}) / 8.0;
  for (int b = 0; b < 4; ++b) calib.push_back({at::mm(at::randn({64, 192}), mix)});
  return calib;
}

}  // namespace

TEST_CASE("FlexRound starts as round-to-nearest and its forward is always the grid's rounding") {
  at::manual_seed(3);
  const at::Tensor w = (at::randn({12, 64}, at::kDouble) * 0.2).contiguous();
  for (const std::string format : {"int4@g16", "mxfp4", "nvfp4", "int8@channel", "mxfp6_e2m3", "int4@tensor"}) {
    INFO(format);
    FlexRoundWeight f(w, qcast::parse_format(format), 4);
    const at::Tensor start = f.forward().detach();
    CHECK(at::equal(start, rtn(w, format)));
    CHECK(at::equal(solved(f, w, format), start));
    // Perturbed factors and scales: the forward is the final solve's value, bit for bit, and differs
    // from the start.
    {
      at::NoGradGuard no_grad;
      for (auto& p : f.parameters()) p.add_(at::randn_like(p) * 0.3);
    }
    const at::Tensor moved = f.forward().detach();
    CHECK(at::equal(moved, solved(f, w, format)));
    CHECK(!at::equal(moved, start));
    f.reset();
    CHECK(at::equal(f.forward().detach(), start));
  }
}

TEST_CASE("FlexRound started from a column walk's rounded values starts at the walk's result") {
  at::manual_seed(5);
  const at::Tensor w = (at::randn({12, 64}, at::kDouble) * 0.2).contiguous();
  const at::Tensor x = at::mm(at::randn({64, 64}, at::kDouble) * at::rand({1, 64}, at::kDouble), at::randn({64, 256}, at::kDouble));
  const at::Tensor h = at::mm(x, x.t());
  for (const std::string format : {"int4@g16", "mxfp4", "nvfp4", "int8@channel", "int4@tensor"}) {
    for (const bool act_order : {false, true}) {
      INFO(format << (act_order ? ", act-order" : ""));
      ptq::WeightGrid grid(qcast::parse_format(format), 12, 64, w.data_ptr<double>());
      ptq::detail::ColumnWalk walk;
      walk.scales_from = w.clone();  // static scales, the start FlexRound's s1 = 1 reproduces
      walk.act_order = act_order;
      at::Tensor rounded;
      walk.rounded = &rounded;
      const at::Tensor q = ptq::detail::sequential_rounding(w.clone(), h, 0, grid, walk);
      REQUIRE(rounded.defined());
      // The walk diffused errors into the values it rounded: they are not the float weights, and
      // the walk's result is not round-to-nearest of them.
      CHECK(!at::equal(rounded, w));
      CHECK(!at::equal(q, rtn(w, format)));
      FlexRoundWeight f(w, qcast::parse_format(format), 4, rounded);
      CHECK(at::equal(f.forward().detach(), q));
      CHECK(at::equal(solved(f, w, format), q));
      {
        at::NoGradGuard no_grad;
        for (auto& p : f.parameters()) p.add_(at::randn_like(p) * 0.3);
      }
      CHECK(at::equal(f.forward().detach(), solved(f, w, format)));
      f.reset();
      CHECK(at::equal(f.forward().detach(), q));
    }
  }
}

TEST_CASE("FlexRound's gradients pass straight through the rounding") {
  at::manual_seed(4);
  const at::Tensor w = (at::randn({6, 32}, at::kDouble) * 0.3).contiguous();
  const at::Tensor g = at::randn({6, 32}, at::kDouble);
  FlexRoundWeight f(w, qcast::parse_format("int4@g16"), 2);
  {
    at::NoGradGuard no_grad;
    for (auto& p : f.parameters()) p.add_(at::randn_like(p) * 0.1);
  }
  const std::vector<at::Tensor> ps = f.parameters();  // log S2, log s3, log s4, log2 s1
  at::AutoGradMode grad(true);
  (f.forward() * g).sum().backward();
  // d/d log S2 of W / S is -W / S: the element's own gradient, through the rounding as if it were
  // not there, for the elements within the range of their group (|W / S| <= the group's amax, which
  // s1 learns from the float one); none for the saturated ones.
  const at::Tensor divided = f.divided();
  const at::Tensor amax = at::repeat_interleave(std::get<0>(w.abs().reshape({6, 2, 16}).max(2)) * at::exp2(ps[3].detach()), 16, 1);
  const at::Tensor inside = divided.abs() <= amax;
  CHECK(inside.logical_not().any().item<bool>());
  CHECK(inside.any().item<bool>());
  const at::Tensor expected = at::where(inside, -g * divided, at::zeros_like(g));
  CHECK(at::allclose(ps[0].grad(), expected, 1e-12, 1e-14));
  CHECK(at::allclose(ps[1].grad(), expected.sum(1, true), 1e-12, 1e-14));
  CHECK(at::allclose(ps[2].grad(), expected.reshape({6, 16, 2}).sum(at::IntArrayRef{0, 2}).reshape({1, 16}), 1e-12, 1e-14));
  // s1: (round(v) - v) · ds1, as for learned step sizes; nonzero unless every element sits on the grid.
  CHECK(ps[3].grad().abs().sum().item<double>() > 0);
}

TEST_CASE("FlexRound's held-out batches choose the iterate kept, and are never trained on") {
  // One linear layer as the span: Y = X Ŵᵀ, on correlated inputs (where learned rounding helps).
  at::manual_seed(21);
  const at::Tensor w = (at::randn({24, 64}, at::kDouble) * 0.2).contiguous();
  const at::Tensor mix = at::randn({64, 64}, at::kDouble) * at::rand({1, 64}, at::kDouble);
  std::vector<at::Tensor> x;
  for (int b = 0; b < 4; ++b) x.push_back(at::mm(at::randn({32, 64}, at::kDouble), mix));
  const at::Tensor start = rtn(w, "int4@g16");
  auto run = [&](const at::Tensor& held_out_target, std::size_t held_out, int check_every = 50, double lr = 1e-3) {
    std::vector<FlexRoundWeight> f;
    f.emplace_back(w, qcast::parse_format("int4@g16"), 1);
    at::Tensor installed;
    bool trained_on_held_out = false;
    ptq::detail::SpanTraining t;
    t.iterations = 200;
    t.learning_rate = lr;
    t.seed = 5;
    t.held_out = held_out;
    t.check_every = check_every;
    t.install = [&](std::size_t, const at::Tensor& w_hat) { installed = w_hat; };
    t.output = [&](std::size_t b) {
      if (b == 3 && at::GradMode::is_enabled()) trained_on_held_out = true;
      return std::vector<at::Tensor>{at::mm(x[b], installed.t())};
    };
    for (int b = 0; b < 3; ++b) t.targets.push_back({at::mm(x[std::size_t(b)], w.t())});
    t.targets.push_back({held_out_target});
    const ptq::detail::SpanResult r = ptq::detail::train_span(f, t);
    CHECK(trained_on_held_out == (held_out == 0));
    return std::make_pair(r, f[0].forward().detach());
  };
  auto held_out_error = [&](const at::Tensor& w_hat, const at::Tensor& target) {
    return (at::mm(x[3], w_hat.t()) - target).pow(2).sum().item<double>() / target.pow(2).sum().item<double>();
  };
  SECTION("held-out data like the training data: a trained iterate is kept, the best one seen") {
    const at::Tensor target = at::mm(x[3], w.t());
    const auto [r, kept] = run(target, 1);
    CHECK(r.kept_iteration > 0);
    CHECK((r.kept_iteration % 50 == 0 || r.kept_iteration == 200));
    CHECK(!r.kept_start);
    CHECK(r.held_out_before == Approx(held_out_error(start, target)).epsilon(1e-12));
    CHECK(r.held_out_after < r.held_out_before);
    CHECK(r.held_out_after == Approx(held_out_error(kept, target)).epsilon(1e-12));  // the weights are that iterate's
    CHECK(!at::equal(kept, start));
  }
  SECTION("a step size that overshoots: an iterate before the last is kept, and its weights restored") {
    const at::Tensor target = at::mm(x[3], w.t());
    const auto [r, kept] = run(target, 1, 10, 0.05);
    CHECK(r.kept_iteration > 0);
    CHECK(r.kept_iteration < 200);
    CHECK(r.held_out_after < r.held_out_before);
    CHECK(r.held_out_after == Approx(held_out_error(kept, target)).epsilon(1e-12));
  }
  SECTION("held-out targets that the start meets exactly: any move is worse there, so the start is kept") {
    const auto [r, kept] = run(at::mm(x[3], start.t()), 1);
    CHECK(r.held_out_before == 0);
    CHECK(r.kept_iteration == 0);
    CHECK(r.kept_start);
    CHECK(at::equal(kept, start));
    // Without held-out batches the fourth batch is trained on (run() checks it).
    run(at::mm(x[3], start.t()), 0);
  }
}

TEST_CASE("span keys") {
  using qcast::ptq::detail::span_key;
  CHECK(span_key("encoder.layer.3.attention.self.query", "auto") == "encoder.layer.3");
  CHECK(span_key("encoder.layer.3.output.dense", "auto") == span_key("encoder.layer.3.attention.self.key", "auto"));
  CHECK(span_key("encoder.layer.3.output.dense", "auto") != span_key("encoder.layer.4.output.dense", "auto"));
  CHECK(span_key("classifier", "auto") == "classifier");
  CHECK(span_key("block_3_expand.weight", "auto") == "block_3");
  CHECK(span_key("block_3_project.weight", "auto") == span_key("block_3_depthwise.weight", "auto"));
  CHECK(span_key("conv2d_185.weight", "auto") == "conv2d_185");  // its own: the next conv has another number
  CHECK(span_key("conv2d_186.weight", "auto") != span_key("conv2d_185.weight", "auto"));
  CHECK(span_key("features.12.conv.0.weight", "auto") == "features.12");
  CHECK(span_key("layer10x.weight", "auto") == "layer10x.weight");
  CHECK(span_key("encoder.layer.3.output.dense", "layer") == "encoder.layer.3.output.dense");
  CHECK(span_key("blocks.7.conv", "blocks\\.[0-9]+") == span_key("blocks.7.fc", "blocks\\.[0-9]+"));
  CHECK(span_key("head", "blocks\\.[0-9]+") == "head");
  CHECK_THROWS_WITH(span_key("x", "blocks.[0-9"), Catch::Contains("neither auto, layer nor a valid regular expression"));
}

TEST_CASE("flexround in the engine: every span reconstructs better than it started, the same bits twice") {
  // 192 x 192 weights: big enough that LibTorch splits their sums across threads.
  const auto model = qcast_test::tanh_mlp(192, 12.0, 11);
  const std::vector<ptq::Batch> calib = correlated_calibration();
  ptq::Options o;
  o.format = qcast::parse_format("int4@g16");
  o.method = "flexround";
  // w0 and w1 trained together (their output: w2's input), w2 alone up to the model's output.
  o.method_options = {{"span", "w(?=[01])"}, {"iters", "200"}, {"lr", "0.001"}};
  const ptq::Result r = ptq::quantize(model, calib, o);
  ptq::Options rtn_o = o;
  rtn_o.method = "rtn";
  rtn_o.method_options.clear();
  const ptq::Result base = ptq::quantize(model, calib, rtn_o);
  REQUIRE(r.report.layers.size() == 3);
  for (const auto& l : r.report.layers) {
    INFO(l.name);
    CHECK(l.status == "quantized");
    CHECK(l.notes.at("span_layers") == (l.name == "w2" ? 1 : 2));
    CHECK(l.notes.at("span_error_learned") < 0.9 * l.notes.at("span_error_start"));
    CHECK(l.notes.at("span_kept_start") == 0);
  }
  // The start of each span is round-to-nearest: the first span's start error is RTN's own.
  const at::Tensor x = calib[0][0].toTensor();
  auto out = [&](torch::jit::Module m) { return m.forward({x}).toTensor(); };
  const at::Tensor ref = out(model);
  const double err = (out(r.model) - ref).norm().item<double>(), err_rtn = (out(base.model) - ref).norm().item<double>();
  CHECK(err < err_rtn);
  // Every stored weight is its packed codes decoded.
  for (const auto& p : r.packed) {
    std::vector<float> decoded(std::size_t(p.matrix.shape[0] * p.matrix.shape[1]));
    qcast::decode(p.matrix, decoded.data());
    CHECK(at::equal(at::from_blob(decoded.data(), {p.matrix.shape[0], p.matrix.shape[1]}, at::kFloat),
                    qcast_test::param(r.model, p.name)));
  }
  // The same bits again, and with another number of threads.
  const int threads = at::get_num_threads();
  at::set_num_threads(threads == 1 ? 2 : 1);
  const ptq::Result again = ptq::quantize(model, calib, o);
  at::set_num_threads(threads);
  for (const auto& p : r.packed) CHECK(at::equal(qcast_test::param(r.model, p.name), qcast_test::param(again.model, p.name)));
  for (std::size_t l = 0; l < r.report.layers.size(); ++l)
    CHECK(r.report.layers[l].notes.at("span_error_learned") == again.report.layers[l].notes.at("span_error_learned"));
}

TEST_CASE("flexround --start ed: each span starts from ED's result and keeps it or beats it") {
  const auto model = qcast_test::tanh_mlp(192, 12.0, 11);
  const std::vector<ptq::Batch> calib = correlated_calibration();
  ptq::Options o;
  o.format = qcast::parse_format("mxfp4");
  o.method = "flexround";
  o.method_options = {{"span", "w(?=[01])"}, {"iters", "200"}, {"lr", "0.001"}};
  const ptq::Result from_rtn = ptq::quantize(model, calib, o);
  ptq::Options ed_o = o;
  ed_o.method = "ed";
  ed_o.method_options.clear();
  const ptq::Result ed = ptq::quantize(model, calib, ed_o);

  SECTION("a step too small to move any element: the weights are ED's, bit for bit") {
    // w1 is solved on the stream through ED's w0 inside the span's own walk, and w2 (its own span)
    // on the stream through both; E8M0 scales do not move by a step of 1e-12.
    o.method_options = {{"span", "w(?=[01])"}, {"iters", "1"}, {"lr", "1e-12"}, {"start", "ed"}};
    const ptq::Result r = ptq::quantize(model, calib, o);
    REQUIRE(r.packed.size() == ed.packed.size());
    for (const auto& p : ed.packed) {
      INFO(p.name);
      CHECK(at::equal(qcast_test::param(r.model, p.name), qcast_test::param(ed.model, p.name)));
    }
  }
  SECTION("trained: ED's start is better than round-to-nearest's; a span that does not beat it keeps ED's weights") {
    int improved = 0, kept = 0;
    for (const std::string lr : {"0.001", "0.0001", "0.00001"}) {
      o.method_options = {{"span", "w(?=[01])"}, {"iters", "200"}, {"lr", lr}, {"start", "ed"}};
      const ptq::Result r = ptq::quantize(model, calib, o);
      REQUIRE(r.report.layers.size() == 3);
      for (std::size_t l = 0; l < 3; ++l) {
        const auto& n = r.report.layers[l].notes;
        const std::string& name = r.report.layers[l].name;
        INFO(name << ", lr " << lr);
        CHECK(n.at("span_error_start") < from_rtn.report.layers[l].notes.at("span_error_start"));
        if (n.at("span_kept_start") == 1) {
          ++kept;
          CHECK(n.at("span_error_learned") >= n.at("span_error_start"));
          CHECK(at::equal(qcast_test::param(r.model, name), qcast_test::param(ed.model, name)));
        } else {
          ++improved;
          CHECK(n.at("span_error_learned") < n.at("span_error_start"));
        }
      }
    }
    // Here no step size beats ED's start (design 0017, "Starting from ED"): the fallback is what
    // runs, and the spans that did improve were checked above.
    CHECK(kept > 0);
    CHECK(kept + improved == 9);
  }
}

TEST_CASE("flexround through convolutions, in-place operations, control flow and a weight used twice") {
  const auto model = qcast_test::pipeline_model();
  const auto calib = qcast_test::pipeline_calibration(3, 8);
  // (span rule, int8 activations, start): the spans of layers of the last rule hold the weight
  // used twice, the in-place operations and q, k and v, which the start's own walk goes through.
  const std::vector<std::tuple<std::string, bool, std::string>> runs = {
      {"layer", false, "rtn"}, {"layer", true, "rtn"}, {"(stem|grouped)|(a|b)|w[qkv]", false, "rtn"},
      {"(stem|grouped)|(a|b)|w[qkv]", true, "rtn"}, {"(stem|grouped)|(a|b)|w[qkv]", true, "ed"}};
  double rtn_start_error = 0;  // the run before's summed start errors (same spans, round-to-nearest)
  for (const auto& [span, int8_inputs, start] : runs) {
   {
    INFO(span << (int8_inputs ? ", int8 activations" : "") << ", start " << start);
    ptq::Options o;
    o.format = qcast::parse_format("mxfp4");
    if (int8_inputs) o.activations.format = qcast::parse_format("int8");
    o.method = "flexround";
    o.method_options = {{"span", span}, {"iters", "60"}, {"lr", "0.001"}, {"start", start}};
    const ptq::Result r = ptq::quantize(model, calib, o);
    int improved = 0, quantized = 0;
    double start_error = 0;
    for (const auto& l : r.report.layers) {
      if (l.status != "quantized") continue;
      ++quantized;
      start_error += l.notes.at("span_error_start");
      // A span that reconstructs worse after training keeps its start, and says so.
      CHECK((l.notes.at("span_error_learned") <= l.notes.at("span_error_start")) == (l.notes.at("span_kept_start") == 0));
      improved += l.notes.at("span_error_learned") < l.notes.at("span_error_start");
    }
    CHECK(quantized == 8);
    if (start == "rtn") {
      CHECK(improved >= quantized / 2);
      rtn_start_error = start_error;
    } else {
      // ED's walk through the spans (the weight used twice, the in-place operations, q, k and v)
      // starts them closer to their targets than round-to-nearest does.
      CHECK(start_error < rtn_start_error);
    }
    // The quantized model still runs and its weights are on the grid.
    torch::jit::Module saved = r.model;
    CHECK_NOTHROW(saved.forward(calib[0]));
    for (const auto& p : r.packed) {
      std::vector<float> decoded(std::size_t(p.matrix.shape[0] * p.matrix.shape[1]));
      qcast::decode(p.matrix, decoded.data());
      const at::Tensor stored = qcast_test::param(r.model, p.name);
      CHECK(at::equal(at::from_blob(decoded.data(), {stored.numel()}, at::kFloat),
                      p.layout == qcast::WeightLayout::rows ? stored.reshape({-1}) : stored.transpose(-1, -2).reshape({-1})));
    }
   }
  }
}

TEST_CASE("flexround refuses what it cannot combine with") {
  const auto model = qcast_test::tanh_mlp(16, 4.0, 1);
  std::vector<ptq::Batch> calib{{at::randn({8, 16})}};
  ptq::Options o;
  o.format = qcast::parse_format("int4@g16");
  o.method = "flexround";
  o.mixed.candidates = {qcast::parse_format("mxfp4"), qcast::parse_format("int4@g16")};
  o.mixed.budget_bits = 4.5;
  CHECK_THROWS_WITH(ptq::quantize(model, calib, o), Catch::Contains("does not combine with mixed precision"));
  o.mixed = {};
  CHECK_THROWS_WITH(ptq::quantize(model, {}, o), Catch::Contains("needs calibration data"));
  o.method_options = {{"span", "("}};
  CHECK_THROWS_WITH(ptq::quantize(model, calib, o), Catch::Contains("nor a valid regular expression"));
  o.method_options = {{"iters", "0"}};
  CHECK_THROWS_WITH(ptq::quantize(model, calib, o), Catch::Contains("option iters of flexround takes an integer"));
  o.method_options = {{"holdout", "-1"}};
  CHECK_THROWS_WITH(ptq::quantize(model, calib, o), Catch::Contains("option holdout of flexround takes an integer from 0"));
  o.method_options = {{"holdout", "1"}};  // the calibration has one batch
  CHECK_THROWS_WITH(ptq::quantize(model, calib, o), Catch::Contains("1 held-out batches leave none to train on"));
}

