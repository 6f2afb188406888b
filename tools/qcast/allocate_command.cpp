// qcast allocate: the mixed-precision allocation again, from the sensitivity table of a report
// (qcast quantize --candidates ... --report R.json), at another budget, without measuring again.
// Prints the chosen format per layer and the options that quantize with exactly that assignment.
#include <cmath>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "command_line.hpp"
#include "commands.hpp"
#include "qcast/ptq/allocation.hpp"

namespace qcast_cli {
namespace {

const char* kUsage =
    "usage: qcast allocate REPORT.json (--budget BITS | --budget-mb MB | --budget-bytes N) [--json]\n"
    "\n"
    "Solves the mixed-precision allocation of a report written by 'qcast quantize --candidates ...\n"
    "--report R.json' at another budget: the assignment of one measured candidate per layer with the\n"
    "least summed sensitivity whose size (codes + scales) fits, exactly. Prints each layer's choice\n"
    "and the --layer-format/--exclude options that quantize with it (add them to the quantize\n"
    "command without --candidates). Layers that --layer-format pinned keep their one candidate.\n"
    "\n"
    "  --budget BITS         bits per weight over the report's allocated layers\n"
    "  --budget-mb MB        or MiB over them\n"
    "  --budget-bytes N      or bytes\n"
    "  --json                one JSON object: the budget, the allocation and each layer's choice\n";

struct Layer {
  std::string name;
  std::int64_t weights = 1;
  std::vector<std::string> formats;
  std::vector<qcast::ptq::AllocationChoice> choices;
};

std::vector<Layer> read_layers(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error(path + ": cannot open the report");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(f);
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error(path + ": not a JSON report (" + std::string(e.what()) + ")");
  }
  std::vector<Layer> layers;
  try {
    if (!j.is_object() || j.value("schema", "") != "qcast.ptq.report")
      throw std::runtime_error("not a qcast PTQ report (no \"schema\": \"qcast.ptq.report\")");
    for (const auto& l : j.at("layers")) {
      if (!l.contains("candidates")) continue;
      Layer layer;
      layer.name = l.at("name").get<std::string>();
      for (const auto& d : l.at("shape")) layer.weights *= d.get<std::int64_t>();
      for (const auto& c : l.at("candidates")) {
        layer.formats.push_back(c.at("format").get<std::string>());
        const auto& cost = c.at("cost");
        if (!cost.is_number()) throw std::runtime_error("layer " + layer.name + ": a candidate's cost is not a number");
        layer.choices.push_back({c.at("bytes").get<std::int64_t>(), cost.get<double>()});
      }
      if (layer.choices.empty()) throw std::runtime_error("layer " + layer.name + " has an empty candidates list");
      layers.push_back(std::move(layer));
    }
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error(path + ": a field of the report is missing or of the wrong type (" + std::string(e.what()) + ")");
  } catch (const std::runtime_error& e) {
    throw std::runtime_error(path + ": " + e.what());
  }
  if (layers.empty())
    throw std::runtime_error(path + ": the report has no sensitivity table (it comes from qcast quantize --candidates ... --report R.json)");
  return layers;
}

}  // namespace

int allocate_command(const std::vector<std::string>& args) {
  std::vector<std::string> positionals;
  std::string budget_text, budget_mb_text, budget_bytes_text;
  bool json = false;
  CLI::App app{"", "qcast allocate"};
  prepare_command_app(app);
  app.add_option("--budget", budget_text);
  app.add_option("--budget-mb", budget_mb_text);
  app.add_option("--budget-bytes", budget_bytes_text);
  app.add_flag("--json", json);
  app.add_option("report", positionals);
  if (!parse_command_line(app, args, kUsage)) return exit_ok;
  if (positionals.size() != 1) throw UsageError{"give one REPORT.json"};
  if (int(!budget_text.empty()) + int(!budget_mb_text.empty()) + int(!budget_bytes_text.empty()) != 1)
    throw UsageError{"give one budget: --budget BITS, --budget-mb MB or --budget-bytes N"};
  const std::vector<Layer> layers = read_layers(positionals[0]);
  std::int64_t weights = 0;
  std::vector<std::vector<qcast::ptq::AllocationChoice>> problem;
  for (const Layer& l : layers) {
    weights += l.weights;
    problem.push_back(l.choices);
  }
  std::int64_t capacity = 0;
  if (!budget_text.empty()) {
    capacity = std::int64_t(std::floor(budget_bits_option(budget_text) * double(weights) / 8.0));
  } else if (!budget_mb_text.empty()) {
    capacity = budget_mb_option(budget_mb_text);
  } else {
    capacity = parse_integer("--budget-bytes", budget_bytes_text, 0, std::int64_t(1) << 60);
  }
  const qcast::ptq::Allocation a = qcast::ptq::allocate(problem, capacity);
  if (!a.feasible)
    throw std::runtime_error(fmt::format("the budget ({} bytes) is below the smallest assignment, {} bytes ({:.4g} bits per weight)",
                                         capacity, a.least_bytes, 8.0 * double(a.least_bytes) / double(weights)));
  std::vector<std::string> options;
  for (std::size_t l = 0; l < layers.size(); ++l) {
    const std::string& f = layers[l].formats[a.choice[l]];
    options.push_back(f == "float" ? "--exclude " + layers[l].name : "--layer-format " + layers[l].name + "=" + f);
  }
  if (json) {
    nlohmann::ordered_json j;
    j["budget_bytes"] = capacity;
    j["weights"] = weights;
    j["bytes"] = a.bytes;
    j["bits_per_weight"] = 8.0 * double(a.bytes) / double(weights);
    j["cost"] = a.cost;
    j["states"] = a.states;
    nlohmann::ordered_json ls = nlohmann::ordered_json::array();
    for (std::size_t l = 0; l < layers.size(); ++l)
      ls.push_back({{"name", layers[l].name},
                    {"format", layers[l].formats[a.choice[l]]},
                    {"choice", a.choice[l]},
                    {"bytes", layers[l].choices[a.choice[l]].bytes},
                    {"cost", layers[l].choices[a.choice[l]].cost}});
    j["layers"] = ls;
    j["quantize_options"] = options;
    fmt::print("{}\n", j.dump(1));
    return exit_ok;
  }
  fmt::print("{:<44} {:<16} {:>12} {:>14}\n", "layer", "format", "bytes", "sensitivity");
  for (std::size_t l = 0; l < layers.size(); ++l)
    fmt::print("{:<44} {:<16} {:>12} {:>14.6g}\n", layers[l].name, layers[l].formats[a.choice[l]],
               layers[l].choices[a.choice[l]].bytes, layers[l].choices[a.choice[l]].cost);
  fmt::print("budget {} bytes ({:.4g} bits per weight over {} weights): allocated {} bytes ({:.4g} bits per weight), least "
             "summed sensitivity {:.6g}\n",
             capacity, 8.0 * double(capacity) / double(weights), weights, a.bytes, 8.0 * double(a.bytes) / double(weights), a.cost);
  std::string joined;
  for (const auto& o : options) joined += " " + o;
  fmt::print("quantize with this assignment:{}\n", joined);
  return exit_ok;
}

}  // namespace qcast_cli
