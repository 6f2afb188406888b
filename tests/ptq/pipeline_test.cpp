// The PTQ engine as a pipeline: every layer's captured inputs on both streams equal a run of the
// whole model from its input (with the layers before it quantized as the engine quantized them), on
// a graph with in-place operations, control flow, two model inputs, a weight used twice with another
// layer between its uses, and attention whose q, k and v read one value; the same bits for any number
// of threads and with the boundary state spilled to disk; stopping; rtn without data; the method
// registry; devices; and the Gram kernel on every compiled instruction set against its scalar
// reference.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/cuda.h>

#include <cstdio>
#include <filesystem>
#include <map>
#include <random>
#include <set>
#include <tuple>

#include "capture_observer.hpp"
#include "gram_kernel.hpp"
#include "model_walk.hpp"
#include "prefix_capture.hpp"
#include "qcast/format_names.hpp"
#include "qcast/kernels.hpp"
#include "qcast/ptq/engine.hpp"

#undef CHECK
#include <catch2/catch.hpp>

#include "module_params.hpp"

namespace ptq = qcast::ptq;
using torch::jit::Module;

namespace {

using qcast_test::param;
using qcast_test::pipeline_calibration;
using qcast_test::pipeline_model;

Module mlp(int layers, std::int64_t width) {
  at::manual_seed(21);
  Module m("DeepMlp");
  std::string body = "def forward(self, x):\n";
  for (int i = 0; i < layers; ++i) {
    const std::string n = "w" + std::to_string(i);
    m.register_parameter(n, at::randn({width, width}) / std::sqrt(double(width)), false);
    body += "  x = x + torch.tanh(torch.linear(x, self." + n + "))\n";
  }
  body += "  return x\n";
  m.define(body);
  return m;
}

std::vector<ptq::Batch> mlp_calibration(std::int64_t width, int batches, std::int64_t rows) {
  at::manual_seed(22);
  const at::Tensor mixing = at::randn({12, width});
  std::vector<ptq::Batch> c;
  for (int i = 0; i < batches; ++i) c.push_back({at::mm(at::randn({rows, 12}), mixing) + 0.1 * at::randn({rows, width})});
  return c;
}

bool same_weights(const Module& a, const Module& b) {
  for (const auto& p : a.named_parameters(true))
    if (!at::equal(p.value, param(b, p.name))) return false;
  return true;
}

std::string temp_folder(const std::string& name) {
  const auto p = std::filesystem::temp_directory_path() / ("qcast_pipeline_test_" + name);
  std::filesystem::create_directories(p);
  return p.string();
}

bool empty_folder(const std::string& p) { return std::filesystem::is_empty(p); }

}  // namespace

TEST_CASE("every layer's inputs from the stages equal a run of the whole model from its input") {
  const Module model = pipeline_model();
  const auto calib = pipeline_calibration(3, 4);
  for (const std::string method : {"ed", "gptq"}) {
    INFO(method);
    // (layer, site, batch) -> captured inputs of both streams, copied as they were seen.
    std::map<std::tuple<std::string, std::size_t, std::size_t>, std::pair<std::vector<c10::IValue>, std::vector<c10::IValue>>>
        seen;
    ptq::detail::capture_observer() = [&](const std::string& l, std::size_t s, std::size_t b,
                                          const std::vector<c10::IValue>& xf, const std::vector<c10::IValue>& xq) {
      std::vector<c10::IValue> cf, cq;
      for (const auto& v : xf) cf.push_back(v.deepcopy());
      for (const auto& v : xq) cq.push_back(v.deepcopy());
      seen[{l, s, b}] = {cf, cq};
    };
    ptq::Options o;
    o.format = qcast::parse_format("int4@g8");
    o.method = method;
    const ptq::Result r = ptq::quantize(model, calib, o);
    ptq::detail::capture_observer() = nullptr;

    const auto walk = ptq::detail::walk_model(model);
    std::vector<std::string> order;
    for (const auto& l : walk.layers) {
      REQUIRE(l.info.unsupported.empty());
      order.push_back(l.info.name);
    }
    CHECK(order == std::vector<std::string>{"stem", "grouped", "a", "b", "wq", "wk", "wv", "out"});
    CHECK(walk.layers[2].sites.size() == 2);
    std::set<std::string> observed;
    for (const auto& [key, v] : seen) observed.insert(std::get<0>(key));
    // k and v read the value q reads, with nothing written in between: their statistics are q's.
    CHECK(observed == std::set<std::string>{"stem", "grouped", "a", "b", "wq", "out"});
    CHECK(seen.size() == (observed.size() + 1) * calib.size());  // "a" has two sites
    for (std::size_t li = 0; li < walk.layers.size(); ++li) {
      const auto& l = walk.layers[li];
      if (!observed.count(l.info.name)) continue;
      Module fref = model.deepcopy(), qref = model.deepcopy();
      for (std::size_t e = 0; e < li; ++e) param(qref, order[e]).copy_(param(r.model, order[e]));
      qcast_test::PrefixCapture capture(model, l);
      for (std::size_t b = 0; b < calib.size(); ++b) {
        const auto xf = capture.run(fref, calib[b]);
        const auto xq = capture.run(qref, calib[b]);
        for (std::size_t s = 0; s < l.sites.size(); ++s) {
          INFO(l.info.name << " site " << s << " batch " << b);
          const auto& got = seen.at({l.info.name, s, b});
          REQUIRE(got.first.size() == xf[s].size());
          for (std::size_t i = 0; i < xf[s].size(); ++i) {
            if (!xf[s][i].isTensor()) continue;
            CHECK(at::equal(got.first[i].toTensor(), xf[s][i].toTensor()));
            CHECK(at::equal(got.second[i].toTensor(), xq[s][i].toTensor()));
          }
        }
      }
    }
    // The shared layer's statistics at its second use saw "b" still in float; after the look-ahead the
    // stream ran on with "a" quantized: the capture of "b" (checked above) proves it.
    CHECK(r.report.stages == 9);
  }
}

TEST_CASE("the same bits for any number of threads, and with the boundary state on disk") {
  // 2 panels of 64 columns; 2048 tokens a batch cross token blocks. Gram matrices of this shape made
  // by a float32 at::bmm (the engine's sums before the pipeline) change with the thread count.
  const Module model = mlp(3, 96);
  const auto calib = mlp_calibration(96, 2, 2048);
  const int saved = at::get_num_threads();
  for (const std::string method : {"ed", "gptq", "rtn"}) {
    INFO(method);
    ptq::Options o;
    o.format = qcast::parse_format("nvfp4");
    o.method = method;
    std::vector<ptq::Result> runs;
    for (int threads : {1, 2, 3}) {
      at::set_num_threads(threads);
      runs.push_back(ptq::quantize(model, calib, o));
    }
    at::set_num_threads(saved);
    const std::string dir = temp_folder("spill_" + method);
    o.cache_mb = 0;
    o.spill_dir = dir;
    runs.push_back(ptq::quantize(model, calib, o));
    CHECK(runs.back().report.peak_spilled_bytes > 0);
    CHECK(runs.back().report.peak_cache_bytes == 0);
    CHECK(empty_folder(dir));
    for (std::size_t i = 1; i < runs.size(); ++i) {
      INFO("run " << i);
      CHECK(same_weights(runs[0].model, runs[i].model));
      for (std::size_t l = 0; l < runs[0].report.layers.size(); ++l)
        CHECK(runs[0].report.layers[l].relative_error == runs[i].report.layers[l].relative_error);
    }
    CHECK(!same_weights(runs[0].model, model));
    std::remove(dir.c_str());
  }
}

TEST_CASE("a stop asked by the progress callback leaves nothing behind") {
  const Module model = mlp(3, 32);
  const auto calib = mlp_calibration(32, 2, 8);
  const std::string dir = temp_folder("stop");
  ptq::Options o;
  o.format = qcast::parse_format("mxfp4");
  o.cache_mb = 0;
  o.spill_dir = dir;
  int calls = 0;
  o.progress = [&](const ptq::Progress&) { return ++calls < 5; };
  CHECK_THROWS_AS(ptq::quantize(model, calib, o), ptq::Stopped);
  CHECK(calls == 5);
  CHECK(empty_folder(dir));
  // A spill folder that cannot be made is a clear error naming the budget and the folder.
  o.progress = nullptr;
  o.spill_dir = dir + "/missing/deeper";
  CHECK_THROWS_WITH(ptq::quantize(model, calib, o), Catch::Contains("memory budget of 0 MiB") && Catch::Contains(o.spill_dir));
  std::remove(dir.c_str());
}

TEST_CASE("rtn needs no calibration data and gives the weights it gives with data") {
  const Module model = pipeline_model();
  ptq::Options o;
  o.format = qcast::parse_format("mxfp4");
  o.method = "rtn";
  const ptq::Result without = ptq::quantize(model, {}, o);
  const ptq::Result with = ptq::quantize(model, pipeline_calibration(1, 2), o);
  CHECK(same_weights(without.model, with.model));
  CHECK(without.packed.size() == 8);
  for (const auto& l : without.report.layers) {
    CHECK(l.status == "quantized");
    CHECK(l.relative_error == -1);
  }
  for (const auto& l : with.report.layers) CHECK(l.relative_error >= 0);
  o.method = "ed";
  CHECK_THROWS_WITH(ptq::quantize(model, {}, o), Catch::Contains("needs calibration data"));
}

TEST_CASE("the method registry: names, help, options") {
  std::vector<std::string> names;
  for (const auto& m : ptq::methods()) {
    names.push_back(m.name);
    CHECK(!m.help.empty());
  }
  CHECK(names == std::vector<std::string>{"ed", "flexround", "gpfq", "gptq", "rtn"});
  CHECK(!ptq::find_method("rtn").needs_calibration);
  CHECK(ptq::find_method("gptq").options.size() == 4);
  CHECK_THROWS_WITH(ptq::find_method("awq"), Catch::Contains("valid methods: ed, flexround, gpfq, gptq, rtn"));
  const Module model = mlp(1, 16);
  const auto calib = mlp_calibration(16, 1, 4);
  ptq::Options o;
  o.format = qcast::parse_format("mxfp4");
  o.method = "ed";
  o.method_options = {{"lazy-batch", "64"}};
  CHECK_THROWS_WITH(ptq::quantize(model, calib, o),
                    Catch::Contains("method ed has no option 'lazy-batch'; its options: scales, act-order, damping, held-out-damping, fold"));
  o.method = "rtn";
  CHECK_THROWS_WITH(ptq::quantize(model, calib, o), Catch::Contains("method rtn has no option 'lazy-batch' (it takes none)"));
  o.method = "gptq";
  o.method_options = {{"lazy-batch", "12x"}};
  CHECK_THROWS_WITH(ptq::quantize(model, calib, o), Catch::Contains("lazy-batch") && Catch::Contains("'12x'"));
  o.method_options = {{"act-order", "true"}, {"lazy-batch", "8"}, {"damping", "0.05"}};
  CHECK_NOTHROW(ptq::quantize(model, calib, o));
}

TEST_CASE("devices: unknown names and a missing CUDA device are clear errors") {
  const Module model = mlp(1, 16);
  ptq::Options o;
  o.format = qcast::parse_format("mxfp4");
  o.method = "rtn";
  o.device = "tpu";
  CHECK_THROWS_WITH(ptq::quantize(model, {}, o), Catch::Contains("valid: cpu, cuda, cuda:N"));
  o.device = "cuda";
  if (!torch::cuda::is_available()) CHECK_THROWS_WITH(ptq::quantize(model, {}, o), Catch::Contains("no CUDA device"));
}

TEST_CASE("the Gram kernel on every compiled instruction set equals its scalar reference, for any split") {
  std::mt19937 rng(7);
  std::normal_distribution<float> normal;
  std::uniform_int_distribution<int> exponent(-30, 30);
  for (const std::string& target : qcast::kernels::available_targets()) {
    INFO(target);
    qcast::kernels::use_target(target);
    for (const auto [n, tokens] : std::vector<std::pair<std::int64_t, std::int64_t>>{
             {1, 1}, {3, 5}, {8, 17}, {13, 300}, {64, 33}, {70, 257}, {131, 64}}) {
      INFO("n " << n << " tokens " << tokens);
      std::vector<double> a(std::size_t(n * tokens)), b(a.size());
      for (auto* v : {&a, &b})
        for (double& x : *v) x = double(std::ldexp(normal(rng), exponent(rng)));  // float32 values
      std::vector<double> g0(std::size_t(n * n)), ref;
      for (double& x : g0) x = double(normal(rng));
      ref = g0;
      qcast::ptq::detail::gram_panel_reference(a.data(), b.data(), n, tokens, 0, n, 0, n, ref.data(), n);
      std::vector<double> whole = g0;
      qcast::ptq::detail::gram_panel(a.data(), b.data(), n, tokens, 0, n, 0, n, whole.data(), n);
      CHECK(whole == ref);
      // Panels of 5 x 7 and tokens in three runs, in order.
      std::vector<double> split = g0;
      const std::int64_t t1 = tokens / 3, t2 = 2 * tokens / 3;
      for (const auto [t0, te] : {std::pair{std::int64_t(0), t1}, {t1, t2}, {t2, tokens}})
        for (std::int64_t i = 0; i < n; i += 5)
          for (std::int64_t j = 0; j < n; j += 7)
            qcast::ptq::detail::gram_panel(a.data() + t0 * n, b.data() + t0 * n, n, te - t0, i, std::min(n, i + 5), j,
                                           std::min(n, j + 7), split.data(), n);
      CHECK(split == ref);
    }
  }
  qcast::kernels::use_target("");
}
