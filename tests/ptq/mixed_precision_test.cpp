// Mixed precision under a size budget (Options::mixed): the sensitivity pass's measurements against
// single-format runs, the allocation against brute force over the measured table, the budget against
// the bytes the second pass stores, the end-to-end probe against a KL computed here.
#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

#include "convolution_kernels.hpp"
#include "qcast/format_names.hpp"
#include "qcast/ptq/engine.hpp"

#undef CHECK
#include <catch2/catch.hpp>

#include "module_params.hpp"

namespace ptq = qcast::ptq;

namespace {

const ptq::LayerReport& layer(const ptq::Report& r, const std::string& name) {
  for (const auto& l : r.layers)
    if (l.name == name) return l;
  FAIL("no layer " << name);
  return r.layers.front();
}

ptq::Options mixed_options(const std::string& method, double budget_bits) {
  ptq::Options o;
  o.method = method;
  o.format = qcast::parse_format("mxfp4");
  for (const char* f : {"mxfp4", "nvfp4", "int4@g16", "mxfp6_e2m3"}) o.mixed.candidates.emplace_back(qcast::parse_format(f));
  o.mixed.candidates.emplace_back(std::nullopt);  // float
  o.mixed.budget_bits = budget_bits;
  o.mixed.sensitivity = ptq::MixedPrecision::Sensitivity::output;  // the tests of another one set it
  return o;
}

// The least summed cost over every assignment of the measured table whose size fits.
double brute_force(const ptq::Report& r, std::int64_t capacity) {
  std::vector<const ptq::LayerReport*> ls;
  for (const auto& l : r.layers)
    if (!l.candidates.empty()) ls.push_back(&l);
  std::vector<std::size_t> at(ls.size(), 0);
  double best = std::numeric_limits<double>::infinity();
  for (;;) {
    std::int64_t bytes = 0;
    double cost = 0;
    for (std::size_t i = 0; i < ls.size(); ++i) {
      bytes += ls[i]->candidates[at[i]].bytes;
      cost += ls[i]->candidates[at[i]].cost;
    }
    if (bytes <= capacity) best = std::min(best, cost);
    std::size_t i = 0;
    while (i < ls.size() && ++at[i] == ls[i]->candidates.size()) at[i++] = 0;
    if (i == ls.size()) return best;
  }
}

double mean_kl(const at::Tensor& ref, const at::Tensor& out) {
  const at::Tensor lp = at::log_softmax(ref.to(at::kDouble).reshape({-1, ref.size(-1)}), -1);
  const at::Tensor lq = at::log_softmax(out.to(at::kDouble).reshape({-1, out.size(-1)}), -1);
  return (lp.exp() * (lp - lq)).sum(-1).mean().item<double>();
}

}  // namespace

TEST_CASE("mixed precision: the budget holds, the allocation is optimal for the measured table, the run uses it") {
  const torch::jit::Module m = qcast_test::pipeline_model();
  const auto calib = qcast_test::pipeline_calibration(3, 4);
  for (const std::string method : {"rtn", "gptq", "ed"})
    for (const double budget : {4.45, 4.8, 6.0, 12.0, 40.0}) {
      CAPTURE(method, budget);
      const ptq::Result r = ptq::quantize(m, calib, mixed_options(method, budget));
      REQUIRE(r.report.allocation);
      const ptq::AllocationReport& a = *r.report.allocation;
      CHECK(r.report.format == "mixed");
      // The budget over the allocated layers, and the bytes the second pass stored for them.
      std::int64_t weights = 0, stored = 0;
      for (const auto& l : r.report.layers) {
        if (l.candidates.empty()) continue;
        std::int64_t n = 1;
        for (const auto d : l.shape) n *= d;
        weights += n;
        stored += l.quantized_bytes;
        // The layer got the candidate of its size: a format of the table (or float), with its bytes.
        const auto chosen = std::find_if(l.candidates.begin(), l.candidates.end(), [&](const auto& c) {
          return l.status == "quantized" ? c.format == l.format : c.format == "float";
        });
        REQUIRE(chosen != l.candidates.end());
        CHECK(chosen->bytes == l.quantized_bytes);
        CHECK(chosen->cost == Approx(chosen->relative_error * chosen->relative_error));
      }
      CHECK(a.weights == weights);
      CHECK(a.budget_bytes == std::int64_t(std::floor(budget * double(weights) / 8)));
      CHECK(stored == a.bytes);
      CHECK(stored <= a.budget_bytes);
      CHECK(a.cost == Approx(brute_force(r.report, a.budget_bytes)).epsilon(1e-12));
      // The curve falls (weakly) with the budget.
      for (std::size_t i = 1; i < a.curve.size(); ++i) CHECK(a.curve[i].second <= a.curve[i - 1].second * (1 + 1e-12));
    }
}

TEST_CASE("mixed precision: the sensitivity pass measures each layer on the float model's inputs") {
  // The first layer sees the model's input in either run: its candidate error equals its error in a
  // plain run with that format. The later layers of a plain run see quantized inputs, so their
  // sensitivity equals the plain run's only where every earlier layer stays in float.
  const torch::jit::Module m = qcast_test::pipeline_model();
  const auto calib = qcast_test::pipeline_calibration(2, 4);
  const ptq::Result mixed = ptq::quantize(m, calib, mixed_options("gptq", 6.0));
  for (const char* name : {"mxfp4", "int4@g16"}) {
    CAPTURE(name);
    ptq::Options plain;
    plain.method = "gptq";
    plain.format = qcast::parse_format(name);
    plain.exclude = {"grouped", "a", "b", "w?", "out"};  // only the stem quantized
    const ptq::Result p = ptq::quantize(m, calib, plain);
    const auto& measured = layer(mixed.report, "stem").candidates;
    const auto c = std::find_if(measured.begin(), measured.end(), [&](const auto& c) { return c.format == name; });
    REQUIRE(c != measured.end());
    CHECK(c->relative_error == Approx(layer(p.report, "stem").relative_error).epsilon(1e-9));
    CHECK(c->bytes == layer(p.report, "stem").quantized_bytes);
    // A later layer, alone quantized: float inputs in both runs.
    plain.exclude = {"stem", "grouped", "a", "w?", "out"};
    const ptq::Result pb = ptq::quantize(m, calib, plain);
    const auto& mb = layer(mixed.report, "b").candidates;
    const auto cb = std::find_if(mb.begin(), mb.end(), [&](const auto& c) { return c.format == name; });
    REQUIRE(cb != mb.end());
    CHECK(cb->relative_error == Approx(layer(pb.report, "b").relative_error).epsilon(1e-9));
  }
}

TEST_CASE("mixed precision: end-to-end sensitivity is the KL of the model with only that layer quantized") {
  const torch::jit::Module m = qcast_test::pipeline_model();
  const auto calib = qcast_test::pipeline_calibration(2, 4);
  ptq::Options o = mixed_options("rtn", 4.6);
  o.mixed.sensitivity = ptq::MixedPrecision::Sensitivity::end_to_end;
  const ptq::Result r = ptq::quantize(m, calib, o);
  REQUIRE(r.report.allocation);
  CHECK(r.report.allocation->sensitivity == "e2e");
  torch::jit::Module fm = m.deepcopy();
  for (const char* name : {"a", "out"}) {
    CAPTURE(name);
    const auto& cands = layer(r.report, name).candidates;
    for (const auto& c : cands) {
      CAPTURE(c.format);
      CHECK(c.cost == c.e2e);
      if (c.format == "float") {
        CHECK(c.e2e == 0);
        continue;
      }
      ptq::Options plain;
      plain.method = "rtn";
      plain.format = qcast::parse_format(c.format);
      plain.exclude = {"stem", "grouped", "a", "b", "w?", "out"};
      plain.exclude.erase(std::find(plain.exclude.begin(), plain.exclude.end(), std::string(name)));
      torch::jit::Module qm = ptq::quantize(m, {}, plain).model;
      double kl = 0;
      const ptq::detail::PerSampleConvolutions convolutions;  // the engine's kernels
      for (const auto& b : calib) kl += mean_kl(fm.forward(b).toTensor(), qm.forward(b).toTensor());
      CHECK(c.e2e == Approx(kl / double(calib.size())).epsilon(1e-6).margin(1e-15));
      CHECK(c.e2e > 0);
    }
  }
}

TEST_CASE("mixed precision: e2e-mse is the relative squared error of the model's output with only that layer quantized") {
  const torch::jit::Module m = qcast_test::pipeline_model();
  const auto calib = qcast_test::pipeline_calibration(2, 4);
  ptq::Options o = mixed_options("gptq", 4.6);
  o.mixed.sensitivity = ptq::MixedPrecision::Sensitivity::end_to_end_mse;
  o.mixed.probe_batches = 1;
  const ptq::Result r = ptq::quantize(m, calib, o);
  REQUIRE(r.report.allocation);
  CHECK(r.report.allocation->sensitivity == "e2e-mse");
  torch::jit::Module fm = m.deepcopy();
  const ptq::detail::PerSampleConvolutions convolutions;  // the engine's kernels
  const at::Tensor ref = fm.forward(calib.front()).toTensor().to(at::kDouble);
  const auto& cands = layer(r.report, "b").candidates;
  for (const auto& c : cands) {
    CAPTURE(c.format);
    if (c.format == "float") continue;
    // The weight the probe used: gptq on b's float-model inputs, as a plain run with b alone gives.
    ptq::Options plain;
    plain.method = "gptq";
    plain.format = qcast::parse_format(c.format);
    plain.exclude = {"stem", "grouped", "a", "w?", "out"};
    torch::jit::Module qm = ptq::quantize(m, calib, plain).model;
    const at::Tensor out = qm.forward(calib.front()).toTensor().to(at::kDouble);
    const double want = (out - ref).pow(2).sum().item<double>() / ref.pow(2).sum().item<double>();
    CHECK(c.e2e == Approx(want).epsilon(1e-6));
    CHECK(c.cost == c.e2e);
  }
}

TEST_CASE("mixed precision: gain scales the output errors by one probe per layer") {
  CHECK(ptq::MixedPrecision{}.sensitivity == ptq::MixedPrecision::Sensitivity::gain);  // the default
  // The probe of a gain run is the e2e probe (checked above) of the candidate with the (lower)
  // median output error; the other candidates' costs are that probe's ratio times their squared error.
  const torch::jit::Module m = qcast_test::pipeline_model();
  const auto calib = qcast_test::pipeline_calibration(2, 4);
  using S = ptq::MixedPrecision::Sensitivity;
  for (const auto& [gain, full] : {std::pair{S::gain, S::end_to_end}, std::pair{S::gain_mse, S::end_to_end_mse}}) {
    ptq::Options o = mixed_options("rtn", 4.6);
    o.mixed.sensitivity = full;
    const ptq::Result every = ptq::quantize(m, calib, o);
    o.mixed.sensitivity = gain;
    const ptq::Result r = ptq::quantize(m, calib, o);
    REQUIRE(r.report.allocation);
    CHECK(r.report.allocation->sensitivity == ptq::sensitivity_name(gain));
    for (const char* name : {"stem", "a", "b", "out"}) {
      CAPTURE(ptq::sensitivity_name(gain), name);
      const auto& cands = layer(r.report, name).candidates;
      const auto& full_cands = layer(every.report, name).candidates;
      REQUIRE(cands.size() == full_cands.size());
      std::vector<const ptq::LayerReport::Candidate*> by_error;
      for (const auto& c : cands)
        if (c.format != "float") by_error.push_back(&c);
      std::stable_sort(by_error.begin(), by_error.end(), [](auto* a, auto* b) { return a->relative_error < b->relative_error; });
      REQUIRE(by_error.size() == 4);
      const ptq::LayerReport::Candidate* median = by_error[1];  // the lower median of four
      REQUIRE(median->relative_error > 0);
      const double g = median->e2e / (median->relative_error * median->relative_error);
      CHECK(layer(r.report, name).notes.at("output_gain") == Approx(g).epsilon(1e-12));
      int probed = 0;
      for (std::size_t i = 0; i < cands.size(); ++i) {
        const auto& c = cands[i];
        CAPTURE(c.format);
        CHECK(c.relative_error == full_cands[i].relative_error);
        if (c.format == "float") {
          CHECK(c.cost == 0);
          continue;
        }
        if (&c == median) {  // the probed one
          ++probed;
          CHECK(c.e2e == Approx(full_cands[i].e2e).epsilon(1e-12));
          CHECK(c.cost == c.e2e);
        } else {
          CHECK(c.e2e == -1);  // not probed
          CHECK(c.cost == Approx(g * c.relative_error * c.relative_error).epsilon(1e-12));
        }
      }
      CHECK(probed == 1);
    }
  }
}

TEST_CASE("mixed precision: pinned layers, the report and clear errors") {
  const torch::jit::Module m = qcast_test::pipeline_model();
  const auto calib = qcast_test::pipeline_calibration(2, 4);
  ptq::Options o = mixed_options("gptq", 5.0);
  o.layer_formats = {{"out", qcast::parse_format("mxfp8_e4m3")}};
  o.exclude = {"stem"};
  const ptq::Result r = ptq::quantize(m, calib, o);
  CHECK(layer(r.report, "out").format == "mxfp8_e4m3");
  CHECK(layer(r.report, "out").candidates.size() == 1);
  CHECK(layer(r.report, "stem").status == "excluded");
  CHECK(layer(r.report, "stem").candidates.empty());
  const std::string json = r.report.json();
  CHECK(json.find("\"allocation\"") != std::string::npos);
  CHECK(json.find("\"candidates\"") != std::string::npos);
  const std::string html = r.report.html();
  for (const char* id : {"chart-errors", "chart-bytes", "chart-budget", "layer-table", "allocation-point"})
    CHECK(html.find(std::string("id=\"") + id + "\"") != std::string::npos);
  CHECK(html.find("<script") == std::string::npos);

  // A run without mixed precision gets the page without candidates and budget curve.
  ptq::Options plain;
  plain.method = "gptq";
  plain.format = qcast::parse_format("mxfp4");
  const std::string plain_html = ptq::quantize(m, calib, plain).report.html();
  CHECK(plain_html.find("id=\"chart-errors\"") != std::string::npos);
  CHECK(plain_html.find("id=\"chart-bytes\"") != std::string::npos);
  CHECK(plain_html.find("id=\"chart-budget\"") == std::string::npos);
  CHECK(plain_html.find("round to nearest") != std::string::npos);

  ptq::Options bad = mixed_options("gptq", 1.0);
  CHECK_THROWS_WITH(ptq::quantize(m, calib, bad), Catch::Contains("below the smallest assignment"));
  bad = mixed_options("gptq", 4.5);
  CHECK_THROWS_WITH(ptq::quantize(m, {}, bad), Catch::Contains("needs calibration") || Catch::Contains("calibration data"));
  bad.mixed.budget_bytes = 1000;
  CHECK_THROWS_WITH(ptq::quantize(m, calib, bad), Catch::Contains("one budget"));
  bad = mixed_options("gptq", 4.5);
  bad.search_formats = {qcast::parse_format("mxfp4")};
  CHECK_THROWS_WITH(ptq::quantize(m, calib, bad), Catch::Contains("format search"));
  bad = mixed_options("gptq", 4.5);
  bad.mixed.candidates.emplace_back(qcast::parse_format("nvfp4"));
  CHECK_THROWS_WITH(ptq::quantize(m, calib, bad), Catch::Contains("nvfp4 is given twice"));
  ptq::Options no_candidates;
  no_candidates.format = qcast::parse_format("mxfp4");
  no_candidates.mixed.budget_bits = 4;
  CHECK_THROWS_WITH(ptq::quantize(m, calib, no_candidates), Catch::Contains("--candidates"));
}
