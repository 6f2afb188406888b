// How the PTQ engine's time grows with depth: a family of residual MLPs (per block LayerNorm,
// Linear(W, W), GELU, added back), depth 8 to 128, each quantized with every registered method. Prints
// seconds per layer and the ratio of the whole run to the work it cannot avoid, measured in the same
// run: two forward passes of the float model over the calibration set (one per stream; the quantized
// copy costs the same) plus the statistics and the solves the engine reports.
//   qcast_ptq_scaling [--depths 8,32,128] [--width 384] [--samples 32] [--tokens 128]
//                     [--batch-size 8] [--format int4@g128] [--methods ed,gptq,rtn] [--threads N]
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "qcast/format_names.hpp"
#include "qcast/ptq/engine.hpp"

namespace ptq = qcast::ptq;
using Clock = std::chrono::steady_clock;

namespace {

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> r;
  std::stringstream in(s);
  std::string item;
  while (std::getline(in, item, ',')) r.push_back(item);
  return r;
}

torch::jit::Module residual_mlp(int depth, std::int64_t width) {
  at::manual_seed(1);
  torch::jit::Module m("ResidualMlp");
  std::string body = "def forward(self, x):\n";
  for (int i = 0; i < depth; ++i) {
    const std::string n = "b" + std::to_string(i);
    m.register_parameter(n + "_w", at::randn({width, width}) / std::sqrt(double(width)), false);
    m.register_parameter(n + "_bias", at::randn({width}) * 0.02, false);
    m.register_parameter(n + "_g", at::ones({width}), false);
    m.register_parameter(n + "_beta", at::zeros({width}), false);
    body += "  h = torch.layer_norm(x, [" + std::to_string(width) + "], self." + n + "_g, self." + n + "_beta, 1e-5, False)\n";
    body += "  x = x + torch.gelu(torch.linear(h, self." + n + "_w, self." + n + "_bias))\n";
  }
  body += "  return x\n";
  m.define(body);
  return m;
}

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

}  // namespace

int main(int argc, char** argv) {
  std::vector<int> depths = {8, 32, 128};
  std::int64_t width = 384, samples = 32, tokens = 128, batch = 8;
  std::string format = "int4@g128";
  std::vector<std::string> methods;
  for (const auto& m : ptq::methods()) methods.push_back(m.name);
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const std::string v = i + 1 < argc ? argv[i + 1] : "";
    if (a == "--depths") {
      depths.clear();
      for (const auto& d : split(v)) depths.push_back(std::atoi(d.c_str()));
    } else if (a == "--width") width = std::atoll(v.c_str());
    else if (a == "--samples") samples = std::atoll(v.c_str());
    else if (a == "--tokens") tokens = std::atoll(v.c_str());
    else if (a == "--batch-size") batch = std::atoll(v.c_str());
    else if (a == "--format") format = v;
    else if (a == "--methods") methods = split(v);
    else if (a == "--threads") at::set_num_threads(std::atoi(v.c_str()));
    else {
      fmt::print(stderr, "usage: {} [--depths 8,32,128] [--width 384] [--samples 32] [--tokens 128] [--batch-size 8]\n"
                         "          [--format int4@g128] [--methods ed,gptq,rtn] [--threads N]\n", argv[0]);
      return 2;
    }
    ++i;
  }
  at::NoGradGuard no_grad;
  at::manual_seed(2);
  std::vector<ptq::Batch> calib;
  for (std::int64_t s = 0; s < samples; s += batch) calib.push_back({at::randn({std::min(batch, samples - s), tokens, width})});
  fmt::print("residual MLP, width {}, {} samples x {} tokens, batches of {}, {}, {} threads\n", width, samples, tokens,
             batch, format, at::get_num_threads());
  fmt::print("{:>6} {:<6} {:>9} {:>9} {:>11} {:>11} {:>11} {:>9} {:>9} {:>7} {:>9}\n", "depth", "method", "total s",
             "s/layer", "2 fwd s", "stage fwd s", "stats s", "solve s", "floor s", "ratio", "peak MiB");
  std::map<std::string, std::map<int, double>> per_layer;
  for (int depth : depths) {
    const torch::jit::Module model = residual_mlp(depth, width);
    // Two plain forward passes over the calibration set: what the float and the quantized stream cost.
    torch::jit::Module copy = model.deepcopy();
    copy.eval();
    copy.forward(calib.front());  // warm-up (the executor's first run)
    const auto t0 = Clock::now();
    for (const auto& b : calib) copy.forward(b);
    const double forward2 = 2 * seconds_since(t0);
    for (const auto& method : methods) {
      ptq::Options o;
      o.format = qcast::parse_format(format);
      o.method = method;
      const ptq::Result r = ptq::quantize(model, calib, o);
      const ptq::Report& rep = r.report;
      const double floor = forward2 + rep.statistics_seconds + rep.solve_seconds;
      per_layer[method][depth] = rep.seconds / depth;
      fmt::print("{:>6} {:<6} {:>9.2f} {:>9.3f} {:>11.2f} {:>11.2f} {:>11.2f} {:>9.2f} {:>9.2f} {:>7.2f} {:>9.0f}\n",
                 depth, method, rep.seconds, rep.seconds / depth, forward2, rep.forward_seconds,
                 rep.statistics_seconds, rep.solve_seconds, floor, rep.seconds / floor,
                 double(rep.peak_rss_bytes) / (1 << 20));
      std::fflush(stdout);
    }
  }
  if (depths.size() > 1) {
    fmt::print("\nseconds per layer at depth {} / at depth {}:\n", depths.back(), depths.front());
    for (const auto& [method, by_depth] : per_layer)
      fmt::print("  {:<6} {:.2f}\n", method, by_depth.at(depths.back()) / by_depth.at(depths.front()));
  }
  return 0;
}
