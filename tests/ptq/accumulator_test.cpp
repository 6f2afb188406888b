// Accumulator bounds in the engine (Options::accumulator, AXE): for every method that keeps one,
// the exported integer codes of every layer fit a P-bit accumulator for any input in range,
// checked here from the codes alone (the worst corner of the input box, per row and tile); the
// bound is not trivially met (the same run without it needs more bits); a bound too loose to bind
// changes nothing; formats that cannot carry a bound are refused with the reason.
#include <ATen/ATen.h>

#include <algorithm>
#include <cstdint>
#include <string>

#include "qcast/format_names.hpp"
#include "qcast/packing.hpp"
#include "qcast/ptq/engine.hpp"

#undef CHECK
#include <catch2/catch.hpp>

#include "module_params.hpp"

namespace ptq = qcast::ptq;

namespace {

// The signed integers of an encoded matrix's codes, read here from the bit stream.
std::vector<std::int64_t> integers_of(const qcast::Encoded& e) {
  const int bits = e.format.element.integer_bits;
  const std::int64_t n = e.shape[0] * e.shape[1];
  std::vector<std::int64_t> q(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) {
    std::int64_t c = 0;
    for (int b = 0; b < bits; ++b) {
      const std::int64_t bit = std::int64_t(i) * bits + b;
      c |= std::int64_t((e.codes[std::size_t(bit / 8)] >> (bit % 8)) & 1) << b;
    }
    if (e.format.element.is_signed && c >= (std::int64_t{1} << (bits - 1))) c -= std::int64_t{1} << bits;
    q[std::size_t(i)] = c;
  }
  return q;
}

// The largest |Σ q·x| over rows and tiles of `tile` columns, x_i in [lo, hi]: each product at
// whichever end of the range makes it largest (for the maximum) or smallest (for the minimum).
std::int64_t worst_of(const qcast::Encoded& e, std::int64_t lo, std::int64_t hi, std::int64_t tile) {
  const std::vector<std::int64_t> q = integers_of(e);
  const std::int64_t rows = e.shape[0], cols = e.shape[1];
  std::int64_t worst = 0;
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t c0 = 0; c0 < cols; c0 += tile) {
      std::int64_t most = 0, least = 0;
      for (std::int64_t c = c0; c < std::min(cols, c0 + tile); ++c) {
        const std::int64_t a = q[std::size_t(r * cols + c)] * lo, b = q[std::size_t(r * cols + c)] * hi;
        most += std::max(a, b);
        least += std::min(a, b);
      }
      worst = std::max({worst, most, -least});
    }
  return worst;
}

// Three linear layers of 64, the middle one all positive (every product pushes one way: the worst
// case for an accumulator), int8 activations from calibration data.
torch::jit::Module skewed_mlp() {
  torch::jit::Module m = qcast_test::tanh_mlp(64, 6.0, 17);
  qcast_test::param(m, "w1").abs_();
  return m;
}

std::vector<ptq::Batch> mlp_calibration() {
  at::manual_seed(18);
  std::vector<ptq::Batch> c;
  for (int i = 0; i < 4; ++i) c.push_back({at::randn({32, 64})});
  return c;
}

ptq::Options bounded(const std::string& method, const std::string& format, int bits, std::int64_t tile = 0) {
  ptq::Options o;
  o.method = method;
  o.format = qcast::parse_format(format);
  o.activations.format = qcast::parse_format("int8");
  o.accumulator.bits = bits;
  o.accumulator.tile = tile;
  return o;
}

}  // namespace

TEST_CASE("accumulator bound: every method's codes fit P bits for any input in range") {
  const torch::jit::Module model = skewed_mlp();
  const auto calib = mlp_calibration();
  struct Case {
    std::string format;
    std::int64_t tile;  // as asked (0: default)
    std::int64_t tile_used;
    int bits;
  };
  for (const Case& c : {Case{"int4@channel", 0, 64, 14}, Case{"int4@channel", 16, 16, 12}, Case{"int4@g16", 0, 16, 12},
                        Case{"int4@g32", 8, 8, 11}, Case{"int8@channel", 0, 64, 19}, Case{"mxint8", 0, 32, 17}}) {
    // What the codes need without a bound: more than the bound (so that it binds).
    ptq::Options loose = bounded("gptq", c.format, 0, 0);
    loose.accumulator.input_bits = 8;  // reported only; the range still comes from the int8 activations
    const ptq::Result free = ptq::quantize(model, calib, loose);
    int free_bits = 0;
    for (const auto& l : free.report.layers) free_bits = std::max(free_bits, l.accumulator->bits_needed);
    INFO(c.format << ", tile " << c.tile << ", " << c.bits << " bits; unbounded need " << free_bits);
    CHECK(free_bits > c.bits);
    for (const std::string method : {"rtn", "gptq", "gpfq", "ed"}) {
      INFO(method);
      const ptq::Result r = ptq::quantize(model, calib, bounded(method, c.format, c.bits, c.tile));
      REQUIRE(r.packed.size() == 3);
      for (const auto& pw : r.packed) {
        const std::int64_t worst = worst_of(pw.matrix, -127, 127, c.tile_used);
        INFO(pw.name << ": worst " << worst);
        CHECK(worst <= (std::int64_t{1} << (c.bits - 1)) - 1);
        const ptq::LayerReport* lr = nullptr;
        for (const auto& l : r.report.layers)
          if (l.name == pw.name) lr = &l;
        REQUIRE(lr);
        REQUIRE(lr->accumulator);
        CHECK(lr->accumulator->worst == worst);
        CHECK(lr->accumulator->tile == c.tile_used);
        CHECK(lr->accumulator->bits == c.bits);
        CHECK(lr->accumulator->input_min == -127);
        CHECK(lr->relative_error < 1.0);  // the bound costs accuracy, but the layer still fits its output
      }
    }
  }
}

TEST_CASE("accumulator bound: a bound that cannot bind changes no bit") {
  const torch::jit::Module model = skewed_mlp();
  const auto calib = mlp_calibration();
  for (const std::string method : {"rtn", "gptq", "gpfq", "ed"}) {
    INFO(method);
    const ptq::Result plain = ptq::quantize(model, calib, bounded(method, "int4@g16", 0));
    const ptq::Result loose = ptq::quantize(model, calib, bounded(method, "int4@g16", 40));
    for (std::size_t i = 0; i < plain.packed.size(); ++i) CHECK(plain.packed[i].matrix.codes == loose.packed[i].matrix.codes);
  }
}

TEST_CASE("accumulator bound: tighter bounds cost more output error") {
  const torch::jit::Module model = skewed_mlp();
  const auto calib = mlp_calibration();
  for (const std::string method : {"gptq", "gpfq"}) {
    double previous = 0;
    for (const int bits : {18, 15, 13, 11}) {
      const ptq::Result r = ptq::quantize(model, calib, bounded(method, "int4@channel", bits));
      const double e = r.report.layers[1].relative_error;
      INFO(method << ", " << bits << " bits: " << e << " (looser: " << previous << ")");
      CHECK(e >= previous);
      previous = e;
    }
  }
}

TEST_CASE("accumulator bound: convolutions, grouped convolutions and matmuls with unsigned inputs") {
  const torch::jit::Module model = qcast_test::pipeline_model();
  const auto calib = qcast_test::pipeline_calibration(2, 4);
  ptq::Options o;
  o.method = "gptq";
  o.format = qcast::parse_format("int4@channel");
  o.accumulator.bits = 10;
  o.accumulator.input_bits = 8;
  o.accumulator.input_signed = false;
  const ptq::Result r = ptq::quantize(model, calib, o);
  REQUIRE(r.packed.size() >= 6);
  for (const auto& pw : r.packed) {
    INFO(pw.name);
    CHECK(worst_of(pw.matrix, 0, 255, pw.matrix.shape[1]) <= 511);
  }
}

TEST_CASE("accumulator bound: what cannot carry one is refused with the reason") {
  const torch::jit::Module model = skewed_mlp();
  const auto calib = mlp_calibration();
  auto refused = [&](ptq::Options o, const std::string& says) {
    INFO(says);
    CHECK_THROWS_WITH(ptq::quantize(model, calib, o), Catch::Contains(says));
  };
  refused(bounded("gptq", "mxfp4", 14), "needs integer weights");
  ptq::Options fp_act = bounded("gptq", "int4@channel", 14);
  fp_act.activations.format = qcast::parse_format("fp8_e4m3");
  refused(fp_act, "needs integer inputs");
  ptq::Options no_range = bounded("gptq", "int4@channel", 14);
  no_range.activations.format.reset();
  refused(no_range, "--act-bits N");
  refused(bounded("gptq", "int4@g16", 14, 12), "crosses the blocks");
  ptq::Options diffused = bounded("gptq", "int4@g16", 14);
  diffused.method_options["scales"] = "diffused";
  refused(diffused, "--scales static");
  ptq::Options mixed = bounded("gptq", "int4@channel", 14);
  mixed.mixed.candidates.emplace_back(qcast::parse_format("int4@channel"));
  mixed.mixed.budget_bits = 4.5;
  refused(mixed, "mixed precision");
  ptq::Options tile_alone = bounded("gptq", "int4@channel", 0, 8);
  refused(tile_alone, "--accumulator-bits");
}
