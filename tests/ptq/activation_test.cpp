// Activation quantization (ActivationOptions): the quantized stream that the methods fit to runs
// through the same casts as the saved model (every layer's captured inputs equal a run of the saved
// model from its input); the static amax is the statistic the docs name, measured on the float
// stream; layers a format cannot apply to fail with their name or stay in float; the casts sit on
// the reduction axis; the result does not depend on the batch size; and Hadamard rotations leave
// the float function unchanged (weights rotated on their reduction axis, inputs in the graph).
#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <tuple>

#include "capture_observer.hpp"
#include "model_walk.hpp"
#include "prefix_capture.hpp"
#include "qcast/format_names.hpp"
#include "qcast/ptq/engine.hpp"
#include "qcast/torch.hpp"

#undef CHECK
#include <catch2/catch.hpp>

#include "module_params.hpp"

namespace ptq = qcast::ptq;
using torch::jit::Module;
using qcast_test::param;
using qcast_test::pipeline_calibration;
using qcast_test::pipeline_model;

namespace {

// A convolution on 16 channels, a 1x1 one on 32, a linear layer on 16.
Module conv_model() {
  at::manual_seed(33);
  Module m("ConvNet");
  m.register_parameter("c1", at::randn({32, 16, 3, 3}) * 0.1, false);
  m.register_parameter("c2", at::randn({16, 32, 1, 1}) * 0.2, false);
  m.register_parameter("fc", at::randn({10, 16}) * 0.3, false);
  m.define(R"(
def forward(self, x):
    y = torch.relu(torch.conv2d(x, self.c1, None, [1, 1], [1, 1], [1, 1], 1))
    y = torch.conv2d(y, self.c2, None, [1, 1], [0, 0], [1, 1], 1)
    return torch.linear(y.mean([2, 3]), self.fc)
)");
  return m;
}

std::vector<ptq::Batch> conv_calibration(int batches, std::int64_t rows) {
  at::manual_seed(34);
  std::vector<ptq::Batch> c;
  for (int i = 0; i < batches; ++i) c.push_back({at::randn({rows, 16, 5, 5}) * 2});
  return c;
}

using Seen = std::map<std::tuple<std::string, std::size_t, std::size_t>, std::vector<c10::IValue>>;

// Runs quantize and keeps every site's captured quantized-stream inputs.
ptq::Result quantize_seen(const Module& model, const std::vector<ptq::Batch>& calib, const ptq::Options& o, Seen& seen) {
  ptq::detail::capture_observer() = [&](const std::string& l, std::size_t s, std::size_t b,
                                        const std::vector<c10::IValue>&, const std::vector<c10::IValue>& xq) {
    std::vector<c10::IValue> c;
    for (const auto& v : xq) c.push_back(v.deepcopy());
    seen[{l, s, b}] = c;
  };
  try {
    ptq::Result r = ptq::quantize(model, calib, o);
    ptq::detail::capture_observer() = nullptr;
    return r;
  } catch (...) {
    ptq::detail::capture_observer() = nullptr;
    throw;
  }
}

// Every captured quantized input equals the same site's input in a run of the saved model from its
// input, with the layers from this one on restored to float (as the engine's stream had them: the
// weights of `model`, which must be the float model with the run's smoothing and rotations).
void check_saved_model_stream(const Module& model, const ptq::Result& r, const std::vector<ptq::Batch>& calib,
                              const Seen& seen, std::size_t min_layers = 3) {
  const auto walk = ptq::detail::walk_model(r.model);
  std::vector<std::string> order;
  for (const auto& l : walk.layers) order.push_back(l.info.name);
  std::size_t compared = 0;
  for (std::size_t li = 0; li < walk.layers.size(); ++li) {
    const auto& l = walk.layers[li];
    Module qref = r.model.deepcopy();
    for (std::size_t e = li; e < order.size(); ++e) param(qref, order[e]).copy_(param(model, order[e]));
    qcast_test::PrefixCapture capture(qref, l);
    for (std::size_t b = 0; b < calib.size(); ++b) {
      const auto xq = capture.run(qref, calib[b]);
      for (std::size_t s = 0; s < l.sites.size(); ++s) {
        const auto it = seen.find({l.info.name, s, b});
        if (it == seen.end()) continue;  // statistics shared with the layer before (q, k, v)
        INFO(l.info.name << " site " << s << " batch " << b);
        const auto& x = xq[s][std::size_t(l.sites[s].data_input)].toTensor();
        const auto& got = it->second[std::size_t(l.sites[s].data_input)].toTensor();
        REQUIRE(got.sizes() == x.sizes());
        CHECK(at::equal(got, x));
        ++compared;
      }
    }
  }
  CHECK(compared >= calib.size() * min_layers);
}

// The float stream's inputs of one layer's first site, one tensor per calibration batch.
std::vector<at::Tensor> float_batches(const Module& model, const std::string& layer, const std::vector<ptq::Batch>& calib) {
  const auto walk = ptq::detail::walk_model(model);
  std::vector<at::Tensor> all;
  for (const auto& l : walk.layers) {
    if (l.info.name != layer) continue;
    qcast_test::PrefixCapture capture(model, l);
    for (const auto& b : calib) all.push_back(capture.run(model, b)[0][std::size_t(l.sites[0].data_input)].toTensor());
  }
  if (all.empty()) FAIL("no layer " << layer);
  return all;
}

// The same, flattened into one tensor.
at::Tensor float_inputs(const Module& model, const std::string& layer, const std::vector<ptq::Batch>& calib) {
  std::vector<at::Tensor> flat;
  for (const auto& t : float_batches(model, layer, calib)) flat.push_back(t.flatten());
  return at::cat(flat);
}

// The quantized model computes the float model's function up to rounding, on each batch.
void check_same_function(const Module& model, const Module& quantized, const std::vector<ptq::Batch>& calib) {
  for (const auto& b : calib) {
    Module f = model.deepcopy(), q = quantized.deepcopy();
    CHECK(at::allclose(q.forward(b).toTensor(), f.forward(b).toTensor(), 1e-5, 1e-5));
  }
}

// Options whose weight cast is the identity (fp32, rtn): the saved model is the float model with the
// run's input transforms (rotation, smoothing), so it must compute the float function.
ptq::Options identity_options() {
  ptq::Options o;
  o.format = qcast::parse_format("fp32");
  o.method = "rtn";
  return o;
}

const ptq::LayerReport& layer_report(const ptq::Result& r, const std::string& name) {
  for (const auto& l : r.report.layers)
    if (l.name == name) return l;
  FAIL("no layer " << name << " in the report");
  return r.report.layers.front();
}

}  // namespace

TEST_CASE("the quantized stream runs through the saved model's activation casts") {
  const Module model = pipeline_model();
  const auto calib = pipeline_calibration(3, 4);
  for (const std::string method : {"ed", "gptq", "rtn"}) {
    INFO(method);
    ptq::Options o;
    o.format = qcast::parse_format("int4@g8");
    o.method = method;
    o.activations.format = qcast::parse_format("int8@g8");               // a, b, out: blocks of 8 along 24
    o.activations.layer_formats.push_back({"w?", qcast::parse_format("int8")});  // static per-tensor, shared by q, k, v
    o.activations.layer_formats.push_back({"grouped", qcast::parse_format("fp8_e4m3")});  // a direct cast
    o.activations.unfit_float = true;  // the stem's 3 channels take no block of 8
    Seen seen;
    const ptq::Result r = quantize_seen(model, calib, o, seen);
    check_saved_model_stream(model, r, calib, seen);

    CHECK(layer_report(r, "stem").act_format.empty());
    CHECK(layer_report(r, "stem").act_status.find("does not divide the input channels per group (3)") != std::string::npos);
    CHECK(layer_report(r, "grouped").act_format == "fp8_e4m3");
    CHECK(layer_report(r, "a").act_format == "int8@g8");
    CHECK(layer_report(r, "wq").act_format == "int8");
    // The static amax is the largest |x| of the float stream's inputs of the layer.
    const double amax = float_inputs(model, "wq", calib).abs().max().item<double>();
    CHECK(layer_report(r, "wq").act_amax == float(amax));
    CHECK(layer_report(r, "wk").act_amax == float(amax));
    CHECK(layer_report(r, "a").act_amax < 0);  // dynamic

    // The saved graph holds one cast for q, k and v (they read one value), one per other site.
    const std::string code = r.model.get_method("forward").function().qualname().name();
    CHECK(code == "forward");
    int casts = 0;
    const auto graph = ptq::detail::inlined_forward(r.model);
    for (const auto* n : graph->nodes()) casts += n->kind().toQualString() == std::string("qcast::cast");
    CHECK(casts == 1 /*grouped*/ + 3 /*a, b, a*/ + 1 /*q k v*/ + 1 /*out*/);
  }
}

TEST_CASE("activation formats that cannot apply name the layer, or leave it in float") {
  const Module model = pipeline_model();
  const auto calib = pipeline_calibration(2, 4);
  ptq::Options o;
  o.format = qcast::parse_format("int4@g8");
  o.method = "gptq";
  o.activations.format = qcast::parse_format("mxfp8_e4m3");
  try {
    ptq::quantize(model, calib, o);
    FAIL("no error");
  } catch (const std::invalid_argument& e) {
    const std::string m = e.what();
    CHECK(m.find("layer stem (aten::conv2d)") != std::string::npos);
    CHECK(m.find("a block of 32 does not divide the input channels per group (3)") != std::string::npos);
  }
  o.activations.format = qcast::parse_format("int8@channel");
  CHECK_THROWS_WITH(ptq::quantize(model, calib, o), Catch::Contains("per-channel activation scales are not supported"));
  // A static amax needs data.
  o.method = "rtn";
  o.activations.format.reset();
  o.activations.layer_formats = {{"out", qcast::parse_format("int8")}};
  CHECK_THROWS_WITH(ptq::quantize(model, {}, o), Catch::Contains("layer out: activation format int8 has a static amax"));
  // Dynamic formats run without data; "none" patterns keep a layer in float.
  o.activations.layer_formats = {{"a", std::nullopt}, {"*", qcast::parse_format("int8@g8")}};
  o.activations.unfit_float = true;
  ptq::Result r = ptq::quantize(model, {}, o);
  CHECK(layer_report(r, "a").act_format.empty());
  CHECK(layer_report(r, "a").act_status.empty());
  CHECK(layer_report(r, "b").act_format == "int8@g8");
  // The saved model runs.
  const at::Tensor y = r.model.forward(calib[0]).toTensor();
  CHECK(y.sizes() == at::IntArrayRef{4, 5});
}

TEST_CASE("two-level activation scales on a convolution's channel axis, with each amax statistic") {
  const Module model = conv_model();
  const auto calib = conv_calibration(4, 3);
  const at::Tensor x1 = float_inputs(model, "c1", calib);
  for (const auto statistic : {ptq::ActivationOptions::Amax::max, ptq::ActivationOptions::Amax::percentile,
                               ptq::ActivationOptions::Amax::mse}) {
    INFO(int(statistic));
    ptq::Options o;
    o.format = qcast::parse_format("mxfp4");
    o.method = "ed";
    o.activations.format = qcast::parse_format("nvfp4");
    o.activations.amax = statistic;
    o.activations.percentile = 99.0;
    Seen seen;
    const ptq::Result r = quantize_seen(model, calib, o, seen);
    check_saved_model_stream(model, r, calib, seen);
    CHECK(layer_report(r, "c1").act_format == "fp4_e2m1@g16+tensor:axis=-3");  // blocks along the channels
    CHECK(layer_report(r, "fc").act_format == "nvfp4");
    const float amax = float(layer_report(r, "c1").act_amax);
    const float max = x1.abs().max().item<float>();
    switch (statistic) {
      case ptq::ActivationOptions::Amax::max: CHECK(amax == max); break;
      case ptq::ActivationOptions::Amax::percentile: {
        // The upper edge of the histogram bin that holds the 99th percentile of |x|.
        const at::Tensor sorted = std::get<0>(x1.abs().sort());
        const auto n = sorted.numel();
        const float exact = sorted[std::int64_t(std::ceil(0.99 * double(n))) - 1].item<float>();
        CHECK(amax >= exact * (1 - 1e-6f));
        CHECK(amax <= exact + max / 2048 * (1 + 1e-6f));
        CHECK(amax < max);
        break;
      }
      case ptq::ActivationOptions::Amax::mse: {
        // One of the candidates max * 2^(-j/4), and no worse than max itself on these inputs.
        bool candidate = false;
        for (int j = 0; j < 20; ++j) candidate = candidate || amax == float(double(max) * std::exp2(-j / 4.0));
        CHECK(candidate);
        // The squared cast error over the calibration set, the casts as the layer's (blocks along
        // the channels).
        const qcast::Format f = qcast::parse_format("fp4_e2m1@g16+tensor:axis=-3");
        auto err = [&](float a) {
          double e = 0;
          for (const auto& x : float_batches(model, "c1", calib))
            e += (qcast::cast_calibrated(x, f, a) - x).to(at::kDouble).pow(2).sum().item<double>();
          return e;
        };
        const double chosen = err(amax);
        for (int j = 0; j < 20; ++j) CHECK(chosen <= err(float(double(max) * std::exp2(-j / 4.0))));
        CHECK(chosen < err(max));  // on these Gaussian inputs a clip below the max does better
        break;
      }
    }
  }
}

TEST_CASE("activation quantization gives the same bits for any batch size") {
  const Module model = conv_model();
  std::vector<ptq::Batch> small = conv_calibration(4, 3), whole;
  std::vector<at::Tensor> all;
  for (const auto& b : small) all.push_back(b[0].toTensor());
  whole.push_back({at::cat(all)});
  for (const auto statistic : {ptq::ActivationOptions::Amax::max, ptq::ActivationOptions::Amax::percentile}) {
    ptq::Options o;
    o.format = qcast::parse_format("nvfp4");
    o.method = "ed";
    o.activations.format = qcast::parse_format("nvfp4");
    o.activations.layer_formats = {{"c2", qcast::parse_format("int8")}};
    o.activations.amax = statistic;
    const ptq::Result a = ptq::quantize(model, small, o), b = ptq::quantize(model, whole, o);
    for (const auto& l : a.report.layers) {
      INFO(l.name);
      CHECK(l.act_amax == layer_report(b, l.name).act_amax);
      CHECK(at::equal(param(a.model, l.name), param(b.model, l.name)));
    }
  }
}

TEST_CASE("a Hadamard rotation leaves the float function unchanged and rotates each weight's reduction axis") {
  const Module model = pipeline_model();
  const auto calib = pipeline_calibration(2, 4);
  ptq::Options o = identity_options();
  o.hadamard_block = 2;
  o.activations.unfit_float = true;  // the stem's 3 channels take no rotation of 2
  const ptq::Result r = ptq::quantize(model, calib, o);
  CHECK(layer_report(r, "stem").hadamard_block == 0);
  CHECK(layer_report(r, "stem").act_status == "not rotated: a rotation of 2 does not divide the input channels per group (3)");
  // Each weight is W·H along its reduction axis: a conv's input channels, a linear layer's inputs,
  // the first axis of the x·W weights q, k, v.
  const std::map<std::string, int> axis = {{"grouped", 1}, {"a", -1}, {"b", -1}, {"wq", -2}, {"wk", -2}, {"wv", -2}, {"out", -1}};
  for (const auto& [name, ax] : axis) {
    INFO(name);
    CHECK(layer_report(r, name).hadamard_block == 2);
    CHECK(at::equal(param(r.model, name), qcast::hadamard(param(model, name), 2, ax)));
  }
  CHECK(at::equal(param(r.model, "stem"), param(model, "stem")));
  // The same function up to rounding, through the residual, the attention and the shared weight.
  check_same_function(model, r.model, calib);
  // A rotation that does not divide a layer names it.
  o.activations.unfit_float = false;
  CHECK_THROWS_WITH(ptq::quantize(model, calib, o),
                    Catch::Contains("layer stem (aten::conv2d): the Hadamard rotation cannot apply: a rotation of 2 does not divide"));
  o.hadamard_block = -1;  // from the weight format's block, which fp32 has none of
  CHECK_THROWS_WITH(ptq::quantize(model, calib, o), Catch::Contains("has no blocks; give one (hadamard:B)"));
}

TEST_CASE("rotated and quantized inputs: the quantized stream equals the saved model's, for each method") {
  const Module model = conv_model();
  const auto calib = conv_calibration(3, 3);
  for (const std::string method : {"ed", "gptq"}) {
    INFO(method);
    ptq::Options o;
    o.format = qcast::parse_format("nvint4");
    o.method = method;
    o.hadamard_block = -1;  // 16, the weight format's block
    o.activations.format = qcast::parse_format("nvint4");
    Seen seen;
    const ptq::Result r = quantize_seen(model, calib, o, seen);
    check_saved_model_stream(model, r, calib, seen);
    for (const auto& l : r.report.layers) CHECK(l.hadamard_block == 16);
    int rotations = 0;
    const auto graph = ptq::detail::inlined_forward(r.model);
    for (const auto* n : graph->nodes()) rotations += n->kind().toQualString() == std::string("qcast::hadamard");
    CHECK(rotations == 3);
  }
}

TEST_CASE("SmoothQuant scales each input channel by max|X_j|^a / max|W_j|^(1-a) and keeps the float function") {
  const Module model = pipeline_model();
  const auto calib = pipeline_calibration(2, 4);
  ptq::Options o = identity_options();
  o.smooth_alpha = 0.5;
  const ptq::Result r = ptq::quantize(model, calib, o);
  // Layer b: s from the float stream's inputs and the weight's columns, computed here.
  const at::Tensor x = at::cat(float_batches(model, "b", calib)).abs().reshape({-1, 24}).amax(0).to(at::kDouble);
  const at::Tensor w = param(model, "b").abs().amax(0).to(at::kDouble);
  const at::Tensor sv = (x.sqrt() / w.sqrt()).to(at::kFloat);
  CHECK(at::allclose(param(r.model, "b"), param(model, "b") * sv.reshape({1, 24}), 1e-6, 0));
  CHECK(layer_report(r, "b").notes.at("smooth_max") == Approx(sv.max().item<double>()).epsilon(1e-6));
  // A grouped convolution (4 groups of 2 channels): channel j's weights are those of its group's
  // output rows, so s has 8 entries and row o's column c takes s[2 * (o / 2) + c].
  const at::Tensor xg = at::cat(float_batches(model, "grouped", calib)).abs().amax({0, 2, 3}).to(at::kDouble);
  const at::Tensor wg0 = param(model, "grouped");
  const at::Tensor wg = wg0.abs().reshape({4, 2, 2, 3, 3}).amax({1, 3, 4}).reshape({-1}).to(at::kDouble);
  const at::Tensor sg = (xg.sqrt() / wg.sqrt()).to(at::kFloat);
  REQUIRE(sg.numel() == 8);
  for (int row = 0; row < 8; ++row)
    for (int c = 0; c < 2; ++c) {
      INFO("row " << row << " column " << c);
      CHECK(at::allclose(param(r.model, "grouped")[row][c], wg0[row][c] * sg[2 * (row / 2) + c].item<float>(), 1e-6, 0));
    }
  check_same_function(model, r.model, calib);
  // Smoothing, rotation and activation casts together: the stream is still the saved model's.
  ptq::Options a;
  a.format = qcast::parse_format("int4@g8");
  a.method = "ed";
  a.smooth_alpha = 0.5;
  a.hadamard_block = 2;
  a.activations.format = qcast::parse_format("int8@g8");
  a.activations.layer_formats.push_back({"w?", qcast::parse_format("int8")});
  a.activations.unfit_float = true;
  Seen seen;
  const ptq::Result s = quantize_seen(model, calib, a, seen);
  // The layers after the one compared are float in the engine's stream, but smoothed and rotated:
  // their weights come from the same transforms with an identity cast.
  ptq::Options t = identity_options();
  t.smooth_alpha = a.smooth_alpha;
  t.hadamard_block = a.hadamard_block;
  t.activations.unfit_float = true;
  const ptq::Result transformed = ptq::quantize(model, calib, t);
  check_saved_model_stream(transformed.model, s, calib, seen);
  CHECK_THROWS_WITH(ptq::quantize(model, {}, o), Catch::Contains("smoothing (--smooth) measures"));
}

// A pre-LN block: ln1's output feeds only q and k (foldable), ln2's feeds `up` and the residual
// (not foldable: the residual would see the division too).
Module pre_ln_model() {
  at::manual_seed(9);
  Module m("PreLn");
  m.register_parameter("ln1_w", at::rand({16}) + 0.5, false);
  m.register_parameter("ln1_b", at::randn({16}) * 0.1, false);
  m.register_parameter("q", at::randn({16, 16}) * 0.25, false);
  m.register_parameter("k", at::randn({16, 16}) * 0.25, false);
  m.register_parameter("ln2_w", at::rand({16}) + 0.5, false);
  m.register_parameter("ln2_b", at::randn({16}) * 0.1, false);
  m.register_parameter("up", at::randn({16, 16}) * 0.25, false);
  m.define(R"(
def forward(self, x):
    h = torch.layer_norm(x, [16], self.ln1_w, self.ln1_b, 1e-05, False)
    x = x + torch.linear(h, self.q) * torch.linear(h, self.k)
    h2 = torch.layer_norm(x, [16], self.ln2_w, self.ln2_b, 1e-05, False)
    return torch.linear(h2, self.up) + h2
)");
  return m;
}

TEST_CASE("SmoothQuant folds into a LayerNorm that feeds only quantized linear layers") {
  const Module model = pre_ln_model();
  at::manual_seed(10);
  std::vector<ptq::Batch> calib;
  // Channel 3 an outlier, as in the activations SmoothQuant is for.
  for (int b = 0; b < 3; ++b) calib.push_back({at::randn({4, 8, 16}) * (at::arange(16) == 3).to(at::kFloat).mul(20).add(1)});
  ptq::Options o = identity_options();
  o.smooth_alpha = 0.5;
  const ptq::Result r = ptq::quantize(model, calib, o);
  // q and k share one s: max|X_j| of ln1's output, max|W_j| over both weights.
  const at::Tensor x = at::cat(float_batches(model, "q", calib)).abs().reshape({-1, 16}).amax(0).to(at::kDouble);
  const at::Tensor w = at::maximum(param(model, "q").abs().amax(0), param(model, "k").abs().amax(0)).to(at::kDouble);
  const at::Tensor sv = (x.sqrt() / w.sqrt()).to(at::kFloat);
  for (const std::string l : {"q", "k"}) {
    INFO(l);
    CHECK(at::allclose(param(r.model, l), param(model, l) * sv.reshape({1, 16}), 1e-6, 0));
    CHECK(layer_report(r, l).notes.at("smooth_folded") == 1);
    CHECK(r.input_scales.count(l) == 0);
  }
  CHECK(at::allclose(param(r.model, "ln1_w"), param(model, "ln1_w") / sv, 1e-6, 0));
  CHECK(at::allclose(param(r.model, "ln1_b"), param(model, "ln1_b") / sv, 1e-6, 0));
  // ln2 is not folded: `up` keeps its own s and the inserted multiply.
  CHECK(at::equal(param(r.model, "ln2_w"), param(model, "ln2_w")));
  CHECK(layer_report(r, "up").notes.count("smooth_folded") == 0);
  CHECK(r.input_scales.count("up") == 1);
  auto muls = [](const Module& m) {
    int n = 0;
    const auto graph = ptq::detail::inlined_forward(m);
    for (const auto* node : graph->nodes()) n += node->kind() == c10::aten::mul;
    return n;
  };
  CHECK(muls(r.model) == muls(model) + 1);
  check_same_function(model, r.model, calib);
  // Without the fold every layer has its own s and its own multiply.
  o.smooth_fold = false;
  const ptq::Result unfolded = ptq::quantize(model, calib, o);
  CHECK(muls(unfolded.model) == muls(model) + 3);
  CHECK(unfolded.input_scales.size() == 3);
  CHECK(at::equal(param(unfolded.model, "ln1_w"), param(model, "ln1_w")));
  check_same_function(model, unfolded.model, calib);

  // With the folded LayerNorm, activation casts and ED: the engine's stream is the saved model's.
  ptq::Options a;
  a.format = qcast::parse_format("int4@g8");
  a.method = "ed";
  a.smooth_alpha = 0.5;
  a.activations.format = qcast::parse_format("int8@g8");
  Seen seen;
  const ptq::Result s = quantize_seen(model, calib, a, seen);
  CHECK(layer_report(s, "q").notes.at("smooth_folded") == 1);
  // q and k read one value through one transform again, so k reuses q's statistics (not captured).
  CHECK(layer_report(s, "k").notes.at("shared_statistics") == 1);
  check_saved_model_stream(r.model, s, calib, seen, 2);
}

TEST_CASE("LLM-FP4's per-channel exponent bias: powers of two folded into the weights exactly") {
  const Module model = pipeline_model();
  const auto calib = pipeline_calibration(2, 4);
  ptq::Options o = identity_options();
  o.smooth_pow2 = true;
  const ptq::Result r = ptq::quantize(model, calib, o);
  // Layer b: s_j = 2^(floor(log2 max|X_j|) - floor(log2 max_j max|X_j|)), from the float inputs here.
  const at::Tensor x = at::cat(float_batches(model, "b", calib)).abs().reshape({-1, 24}).amax(0).to(at::kDouble);
  const at::Tensor sv = at::exp2(at::floor(at::log2(x)) - std::floor(std::log2(x.max().item<double>()))).to(at::kFloat);
  CHECK((sv <= 1).all().item<bool>());
  CHECK(at::equal(param(r.model, "b"), param(model, "b") * sv.reshape({1, 24})));  // exact: powers of two
  check_same_function(model, r.model, calib);
}

TEST_CASE("the activation format search keeps the candidate with the least ||W·(Q(X) - X)|| per layer") {
  const Module model = conv_model();
  const auto calib = conv_calibration(3, 3);
  ptq::Options o;
  o.format = qcast::parse_format("mxfp4");
  o.method = "gptq";
  o.activations.format = qcast::parse_format("int8");  // replaced by the search
  // mxfp4's blocks of 32 fit c2 (32 channels) but not c1 or fc (16): there they are not candidates.
  o.search_act_formats = {qcast::parse_format("mxfp4"), qcast::parse_format("int4"), qcast::parse_format("nvfp4")};
  o.search_clips = {1.0, 0.5};
  Seen seen;
  const ptq::Result r = quantize_seen(model, calib, o, seen);
  check_saved_model_stream(model, r, calib, seen);
  // Layer fc, computed here from its float inputs: blocks along the last axis, static amax = max x clip.
  const auto xs = float_batches(model, "fc", calib);
  float max = 0;
  for (const auto& x : xs) max = std::max(max, x.abs().max().item<float>());
  const at::Tensor w = param(model, "fc").to(at::kDouble);
  struct Cand {
    const char* name;
    double clip;
  };
  double best = std::numeric_limits<double>::infinity();
  std::string best_name;
  double best_clip = 0;
  for (const Cand c : {Cand{"int4", 1.0}, Cand{"int4", 0.5}, Cand{"nvfp4", 1.0}, Cand{"nvfp4", 0.5}}) {
    const qcast::Format f = qcast::parse_format(c.name);
    double e = 0;
    for (const auto& x : xs) {
      const at::Tensor q = qcast::takes_static_amax(f) ? qcast::cast_calibrated(x, f, float(double(max) * c.clip)) : qcast::cast(x, f);
      e += at::mm(q.to(at::kDouble) - x.to(at::kDouble), w.t()).pow(2).sum().item<double>();
    }
    if (e < best) {
      best = e;
      best_name = c.name;
      best_clip = c.clip;
    }
  }
  const auto& lr = layer_report(r, "fc");
  INFO("chosen " << lr.act_format << " clip " << lr.notes.at("act_clip") << "; here " << best_name << " clip " << best_clip);
  CHECK(lr.act_format == best_name);
  CHECK(lr.notes.at("act_clip") == best_clip);
  CHECK(float(lr.act_amax) == float(double(max) * best_clip));
  double energy = 0;
  for (const auto& x : xs) energy += at::mm(x.to(at::kDouble), w.t()).pow(2).sum().item<double>();
  CHECK(lr.notes.at("act_search_error") == Approx(std::sqrt(best / energy)).epsilon(1e-5));
  // Without an activation format to replace, the search is an error.
  o.activations = {};
  CHECK_THROWS_WITH(ptq::quantize(model, calib, o), Catch::Contains("give --act-format"));
}
