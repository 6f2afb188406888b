// The PTQ engine on TorchScript models defined here: the walk (order, names, shared and unsupported
// weights), RTN against the core cast, the packed export against the quantized model, GPTQ and ED
// against RTN, error folding, determinism, calibration loading and error messages.
#include <ATen/ATen.h>
#include <torch/csrc/jit/serialization/pickle.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>

#include "qcast/cast.hpp"
#include "qcast/format_names.hpp"
#include "qcast/npy.hpp"
#include "qcast/ptq/engine.hpp"
#include "qcast/ptq/weight_grid.hpp"
#include "qcast/qpack.hpp"

// LibTorch's logging defines a CHECK macro of its own; Catch's must win in this file.
#undef CHECK
#include <catch2/catch.hpp>

#include "module_params.hpp"

namespace ptq = qcast::ptq;
using torch::jit::Module;

namespace {

using qcast_test::param;

Module linear_module(const std::string& type, std::int64_t in, std::int64_t out, double scale = 0.2) {
  Module m(type);
  m.register_parameter("weight", at::randn({out, in}) * scale, false);
  m.register_parameter("bias", at::randn({out}) * 0.1, false);
  m.define("def forward(self, x):\n  return torch.linear(x, self.weight, self.bias)\n");
  return m;
}

// Residual branches, a submodule called twice, a submodule reached through a method, grouped,
// depthwise and 1-D convolutions, x·W, addmm, bmm, x·Wᵀ, an embedding (unsupported) and a weight used
// inside control flow (unsupported).
Module walk_model() {
  at::manual_seed(3);
  Module m("WalkNet");
  m.register_parameter("stem", at::randn({8, 3, 3, 3}) * 0.3, false);
  m.register_parameter("grouped", at::randn({8, 2, 3, 3}) * 0.3, false);
  m.register_parameter("depthwise", at::randn({8, 1, 3, 3}) * 0.3, false);
  m.register_parameter("temporal", at::randn({8, 8, 3}) * 0.2, false);
  m.register_module("shared", linear_module("Shared", 8, 8));
  Module head("Head");
  head.register_parameter("w", at::randn({8, 6}) * 0.3, false);
  head.register_parameter("wt", at::randn({6, 6}) * 0.3, false);
  head.define(
      "def project(self, x):\n  return torch.matmul(x, self.w)\n"
      "def forward(self, x):\n  return torch.matmul(self.project(x), self.wt.t())\n");
  m.register_module("head", head);
  m.register_parameter("mix", at::randn({6, 5}) * 0.3, false);
  m.register_parameter("mix_bias", at::randn({5}) * 0.1, false);
  m.register_parameter("batched", at::randn({2, 5, 4}) * 0.3, false);
  m.register_parameter("table", at::randn({10, 4}), false);
  m.register_parameter("gated", at::randn({4, 4}), false);
  m.define(R"(
def forward(self, x):
    y = torch.relu(torch.conv2d(x, self.stem, None, [1, 1], [1, 1], [1, 1], 1))
    y = y + torch.relu(torch.conv2d(y, self.grouped, None, [1, 1], [1, 1], [1, 1], 4))
    y = torch.conv2d(y, self.depthwise, None, [1, 1], [1, 1], [1, 1], 8)
    z = torch.relu(torch.conv1d(y.flatten(2), self.temporal, None, [1], [1], [1], 1)).mean(2)
    z = torch.relu(self.shared.forward(z))
    z = torch.relu(self.shared.forward(z))
    h = self.head.forward(z)
    h = torch.addmm(self.mix_bias, h, self.mix)
    b = torch.bmm(h.reshape(2, -1, 5), self.batched)
    e = torch.embedding(self.table, torch.zeros([1], dtype=4))
    if bool(b.sum() > 1e9):
        b = torch.matmul(b, self.gated)
    return b.reshape(-1, 4) + e
)");
  return m;
}

std::vector<ptq::Batch> random_calibration(std::vector<std::int64_t> shape, int batches) {
  std::vector<ptq::Batch> c;
  for (int i = 0; i < batches; ++i) c.push_back({at::rand(shape)});
  return c;
}

std::vector<float> values_of(const at::Tensor& t) {
  const at::Tensor c = t.to(at::kFloat).contiguous();
  return std::vector<float>(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
}

const ptq::LayerReport& layer(const ptq::Report& r, const std::string& name) {
  for (const auto& l : r.layers)
    if (l.name == name) return l;
  FAIL("no layer " << name << " in the report");
  return r.layers.front();
}

// A chain of linear layers whose inputs are strongly correlated (a low-rank signal plus noise), the
// setting where error-aware methods can beat rounding.
Module mlp(int layers, std::int64_t width) {
  at::manual_seed(11);
  Module m("Mlp");
  std::string body = "def forward(self, x):\n";
  for (int i = 0; i < layers; ++i) {
    const std::string n = "l" + std::to_string(i);
    m.register_module(n, linear_module("Lin" + std::to_string(i), width, width, 1.0 / std::sqrt(double(width))));
    body += "  x = torch.tanh(self." + n + ".forward(x))\n";
  }
  body += "  return x\n";
  m.define(body);
  return m;
}

std::vector<ptq::Batch> correlated_calibration(std::int64_t width, int batches, std::int64_t rows = 64) {
  at::manual_seed(12);
  const at::Tensor mixing = at::randn({8, width});
  std::vector<ptq::Batch> c;
  for (int i = 0; i < batches; ++i) c.push_back({at::mm(at::randn({rows, 8}), mixing) + 0.05 * at::randn({rows, width})});
  return c;
}

std::string temp_path(const std::string& name) {
  return (std::filesystem::temp_directory_path() / ("qcast_ptq_test_" + name)).string();
}

}  // namespace

TEST_CASE("the walk lists weight layers in execution order with module paths") {
  const auto layers = ptq::list_layers(walk_model());
  std::vector<std::string> names;
  std::map<std::string, ptq::LayerInfo> by_name;
  for (const auto& l : layers) {
    names.push_back(l.name);
    by_name[l.name] = l;
  }
  const std::vector<std::string> expected = {"stem",   "grouped", "depthwise", "temporal", "shared.weight", "head.w",
                                             "head.wt", "mix",    "batched",   "table",    "gated"};
  CHECK(names == expected);
  CHECK(by_name["shared.weight"].uses == 2);
  CHECK(by_name["shared.weight"].op == "aten::linear");
  CHECK(by_name["temporal"].op == "aten::conv1d");
  CHECK(by_name["mix"].op == "aten::addmm");
  CHECK(by_name["batched"].op == "aten::bmm");
  for (const char* ok : {"stem", "grouped", "depthwise", "temporal", "shared.weight", "head.w", "head.wt", "mix", "batched"})
    CHECK(by_name[ok].unsupported.empty());
  CHECK(by_name["table"].unsupported.find("aten::embedding") != std::string::npos);
  CHECK(by_name["gated"].unsupported.find("control flow") != std::string::npos);
  CHECK(by_name["gated"].unsupported.find("torch.jit.trace") != std::string::npos);  // and what to do instead
}

TEST_CASE("rtn gives the core cast of every weight matrix, and the export decodes to the model's weights") {
  const Module model = walk_model();
  const auto calib = random_calibration({2, 3, 6, 6}, 2);
  for (const char* name : {"mxfp4", "nvfp4", "int4@g128", "int4@channel", "fp8_e4m3", "mxfp6_e2m3", "e2m1@g4"}) {
    INFO(name);
    ptq::Options o;
    o.format = qcast::parse_format(name);
    o.method = "rtn";
    const ptq::Result r = ptq::quantize(model, calib, o);
    REQUIRE(r.packed.size() == 9);
    for (const auto& pw : r.packed) {
      INFO(pw.name);
      const at::Tensor w = param(model, pw.name);
      // The matrix view: rows = outputs, cols = reduction (transposed for x·W weights).
      const at::Tensor m = pw.layout == qcast::WeightLayout::rows ? w.reshape({pw.matrix.shape[0], -1})
                                                                   : w.transpose(-1, -2).reshape({pw.matrix.shape[0], -1});
      std::vector<float> expect = values_of(m);
      qcast::cast(expect.data(), expect.data(), pw.matrix.shape, ptq::weight_format(o.format));
      std::vector<float> decoded(expect.size());
      qcast::decode(pw.matrix, decoded.data());
      std::size_t bad = 0;
      for (std::size_t i = 0; i < expect.size(); ++i) bad += expect[i] != decoded[i] ? 1 : 0;  // -0 == +0 for integers
      CHECK(bad == 0);
      const auto in_model = values_of(param(r.model, pw.name));
      CHECK(qcast::decode_weight(pw) == in_model);
    }
    // The input model is untouched.
    CHECK(values_of(param(model, "stem")) == values_of(param(walk_model(), "stem")));
  }
}

TEST_CASE("gptq and ed export exactly the weights they put into the model, and survive a .qpack round trip") {
  const Module model = walk_model();
  const auto calib = random_calibration({2, 3, 6, 6}, 2);
  const std::string path = temp_path("roundtrip.qpack");
  for (const std::string method : {"gptq", "ed"}) {
    for (const char* name : {"mxfp4", "nvfp4", "int4@g128", "int4@channel", "fp8_e4m3"}) {
      INFO(method << " " << name);
      ptq::Options o;
      o.format = qcast::parse_format(name);
      o.method = method;
      if (method == "gptq" && std::string(name) == "int4@g128") o.method_options["act-order"] = "true";
      const ptq::Result r = ptq::quantize(model, calib, o);
      qcast::write_qpack(path, r.packed);
      const auto back = qcast::read_qpack(path);
      REQUIRE(back.size() == r.packed.size());
      for (std::size_t i = 0; i < back.size(); ++i) {
        INFO(back[i].name);
        CHECK(back[i].name == r.packed[i].name);
        CHECK(back[i].shape == r.packed[i].shape);
        CHECK(back[i].matrix.format == r.packed[i].matrix.format);
        const auto w = values_of(param(r.model, back[i].name));
        // Every weight in the model is what its codes and scales decode to: it lies on the grid.
        CHECK(qcast::decode_weight(back[i]) == w);
      }
    }
  }
  std::remove(path.c_str());
}

TEST_CASE("gptq and ed beat rtn on correlated inputs; ed folds the error of earlier layers into its target") {
  const Module model = mlp(3, 64);
  const auto calib = correlated_calibration(64, 4);
  std::map<std::string, ptq::Report> reports;
  for (const std::string method : {"rtn", "gptq", "ed"}) {
    ptq::Options o;
    o.format = qcast::parse_format("int4@g32");
    o.method = method;
    reports[method] = ptq::quantize(model, calib, o).report;
  }
  for (const char* l : {"l0.weight", "l1.weight", "l2.weight"}) {
    INFO(l);
    const double rtn = layer(reports["rtn"], l).relative_error;
    CHECK(layer(reports["gptq"], l).relative_error < rtn);
    CHECK(layer(reports["ed"], l).relative_error < rtn);
    CHECK(layer(reports["ed"], l).rtn_relative_error > layer(reports["ed"], l).relative_error);
  }
  // Later layers: ED's target is the float output W·X, so it corrects what earlier layers changed;
  // GPTQ reproduces W·X̂ and cannot.
  CHECK(layer(reports["ed"], "l2.weight").relative_error < layer(reports["gptq"], "l2.weight").relative_error);
}

TEST_CASE("ed is deterministic and every layer reports its time") {
  const Module model = mlp(2, 32);
  const auto calib = correlated_calibration(32, 2);
  ptq::Options o;
  o.format = qcast::parse_format("mxfp4");
  o.method = "ed";
  int calls = 0;
  int forward_calls = 0;
  o.progress = [&](const ptq::Progress& p) {
    CHECK(p.layers == 2);
    if (p.phase == ptq::Progress::Phase::forward) {
      ++forward_calls;
      CHECK(p.layer == calls + 1);  // the stage before the layer runs, then the layer is solved
      CHECK(p.batches == 2);
      return true;
    }
    ++calls;
    CHECK(p.layer == calls);
    return true;
  };
  const ptq::Result a = ptq::quantize(model, calib, o);
  CHECK(calls == 2);
  CHECK(forward_calls == 4);  // 2 stages x 2 batches
  o.progress = nullptr;
  const ptq::Result b = ptq::quantize(model, calib, o);
  for (const char* n : {"l0.weight", "l1.weight"}) CHECK(values_of(param(a.model, n)) == values_of(param(b.model, n)));
  for (const auto& l : a.report.layers) CHECK(l.seconds >= 0);
  CHECK(a.report.json().find("\"relative_error\"") != std::string::npos);
  CHECK(a.report.table().find("l1.weight") != std::string::npos);
}

TEST_CASE("exclude and per-layer formats") {
  const Module model = mlp(3, 32);
  const auto calib = correlated_calibration(32, 1);
  ptq::Options o;
  o.format = qcast::parse_format("mxfp4");
  o.method = "rtn";
  o.exclude = {"l0.*"};
  o.layer_formats = {{"l2.*", qcast::parse_format("fp8_e4m3")}};
  const ptq::Result r = ptq::quantize(model, calib, o);
  CHECK(layer(r.report, "l0.weight").status == "excluded");
  CHECK(values_of(param(r.model, "l0.weight")) == values_of(param(model, "l0.weight")));
  CHECK(layer(r.report, "l1.weight").format == "mxfp4");
  CHECK(layer(r.report, "l2.weight").format == "fp8_e4m3");
  CHECK(r.packed.size() == 2);
}

TEST_CASE("calibration data: torch.save tensors and tuples, .npy folders, clear errors") {
  namespace fs = std::filesystem;
  // (std::filesystem::remove_all is avoided: libtorch.so exports a copy of it that crashes here.)
  const std::string dir = temp_path("calib_dir");
  fs::create_directories(dir);
  std::remove((dir + "/a.npy").c_str());
  std::remove((dir + "/b.npy").c_str());
  const std::vector<float> a(5 * 4, 0.5f), b(3 * 4, 0.25f);
  qcast::write_npy(dir + "/a.npy", {5, 4}, a.data());
  qcast::write_npy(dir + "/b.npy", {3, 4}, b.data());
  auto batches = ptq::load_calibration(dir, 2);
  REQUIRE(batches.size() == 5);  // 2 + 2 + 1 from a, 2 + 1 from b: files are not mixed
  CHECK(batches[2][0].toTensor().size(0) == 1);
  CHECK(batches[3][0].toTensor().select(0, 0).select(0, 0).item<float>() == 0.25f);
  const auto six = ptq::load_calibration(dir, 4, 6);  // 4 + 1 from a, 1 from b
  REQUIRE(six.size() == 3);
  CHECK(six[2][0].toTensor().size(0) == 1);

  const std::string pt = temp_path("calib.pt");
  {
    const auto bytes = torch::jit::pickle_save(c10::ivalue::Tuple::create({at::ones({7, 3}), at::zeros({7}, at::kLong)}));
    std::ofstream(pt, std::ios::binary).write(bytes.data(), std::streamsize(bytes.size()));
  }
  batches = ptq::load_calibration(pt, 4);
  REQUIRE(batches.size() == 2);
  CHECK(batches[0].size() == 2);
  CHECK(batches[1][1].toTensor().size(0) == 3);

  {
    std::ofstream(pt, std::ios::binary) << "not a pickle";
  }
  CHECK_THROWS_WITH(ptq::load_calibration(pt, 4), Catch::Contains(pt) && Catch::Contains("torch.save"));
  CHECK_THROWS_WITH(ptq::load_calibration(dir + "/missing", 4), Catch::Contains("no such file"));
  std::remove((dir + "/a.npy").c_str());
  std::remove((dir + "/b.npy").c_str());
  std::remove(dir.c_str());
  std::remove(pt.c_str());
}

TEST_CASE("bad input gets a clear error") {
  const Module model = mlp(1, 16);
  ptq::Options o;
  o.format = qcast::parse_format("mxfp4");
  CHECK_THROWS_WITH(ptq::quantize(model, {{at::rand({4, 15})}}, o),
                    Catch::Contains("does not fit the model") && Catch::Contains("Float[4, 15]"));
  CHECK_THROWS_WITH(ptq::find_method("awq"), Catch::Contains("ed, flexround, gpfq, gptq, rtn"));
  const std::string bogus = temp_path("bogus.pt");
  std::ofstream(bogus) << "hello";
  CHECK_THROWS_WITH(ptq::load_model(bogus), Catch::Contains(bogus) && Catch::Contains("not a TorchScript model"));
  // The output model is written atomically and never over the input.
  const std::string saved = temp_path("model.pt");
  ptq::save_model(model, saved);
  CHECK_THROWS_WITH(ptq::save_model(model, saved, saved), Catch::Contains("over the input"));
  const Module loaded = ptq::load_model(saved);
  CHECK(values_of(param(loaded, "l0.weight")) == values_of(param(model, "l0.weight")));
  std::remove(bogus.c_str());
  std::remove(saved.c_str());
  const std::string qp = temp_path("trunc.qpack");
  std::ofstream(qp, std::ios::binary) << "QCASTPK1";
  CHECK_THROWS_WITH(qcast::read_qpack(qp), Catch::Contains(qp) && Catch::Contains("truncated"));
  std::remove(qp.c_str());
}
