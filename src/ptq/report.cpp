// The PTQ report as JSON and as a text table (engine.hpp: Report). JSON through nlohmann::json,
// text through fmt; neither appears in a public header (docs/design/0010-cli-and-text-output.md).
#include <cmath>
#include <string>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>
#include <torch/version.h>

#include "qcast/ptq/engine.hpp"
#include "qcast/version.hpp"
#include "shape_list_text.hpp"

namespace qcast::ptq {
namespace {

using Json = nlohmann::ordered_json;

Json number(double v) { return std::isfinite(v) ? Json(v) : Json(nullptr); }
Json error_value(double e) { return e >= 0 ? number(e) : Json(nullptr); }

// Bytes in the largest binary unit that leaves at least 1 of it.
std::string size_text(std::int64_t bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = double(bytes);
  int u = 0;
  while (v >= 1024 && u < 4) v /= 1024, ++u;
  return u == 0 ? fmt::format("{} B", bytes) : fmt::format("{:.2f} {}", v, units[u]);
}

// Options a run may give more than once: always a JSON array, so that their type does not depend
// on how many were given.
bool repeatable(const std::string& name) {
  return name == "exclude" || name == "layer-format" || name == "layer-act-format" || name == "search-format" ||
         name == "search-clip" || name == "search-act-format" || name == "candidate";
}

// Bits per weight element of the weight layers: their quantized bytes over their elements.
double bits_per_weight(const Report& r) {
  std::int64_t elements = 0;
  for (const auto& l : r.layers) {
    std::int64_t n = 1;
    for (auto d : l.shape) n *= d;
    elements += n;
  }
  return elements ? 8.0 * double(r.quantized_bytes()) / double(elements) : 0;
}

}  // namespace

std::int64_t Report::float_bytes() const {
  std::int64_t b = 0;
  for (const auto& l : layers) b += l.float_bytes;
  return b;
}

std::int64_t Report::quantized_bytes() const {
  std::int64_t b = 0;
  for (const auto& l : layers) b += l.quantized_bytes;
  return b;
}

std::string Report::json() const {
  Json j;
  j["schema"] = "qcast.ptq.report";
  j["schema_version"] = schema_version;
  j["qcast_version"] = qcast::version_string;
  j["torch_version"] = TORCH_VERSION;
  j["method"] = method;
  j["format"] = format;
  j["device"] = device;
  Json opts = Json::object();
  for (const auto& [k, v] : options) {
    if (!opts.contains(k)) opts[k] = repeatable(k) ? Json::array({v}) : Json(v);
    else if (opts[k].is_array()) opts[k].push_back(v);
    else opts[k] = Json::array({opts[k], v});
  }
  j["options"] = opts;
  j["samples"] = samples;
  j["batches"] = batches;
  j["seconds"] = number(seconds);
  j["forward_seconds"] = number(forward_seconds);
  j["statistics_seconds"] = number(statistics_seconds);
  j["solve_seconds"] = number(solve_seconds);
  j["stages"] = stages;
  j["peak_cache_bytes"] = peak_cache_bytes;
  j["peak_spilled_bytes"] = peak_spilled_bytes;
  j["peak_rss_bytes"] = peak_rss_bytes;
  j["world_size"] = world_size;
  j["collective_bytes"] = collective_bytes;
  j["float_bytes"] = float_bytes();
  j["quantized_bytes"] = quantized_bytes();
  j["bits_per_weight"] = number(bits_per_weight(*this));
  Json all = Json::array();
  for (const LayerReport& l : layers) {
    Json e;
    e["name"] = l.name;
    e["op"] = l.op;
    e["shape"] = l.shape;
    e["status"] = l.status;
    e["format"] = l.format;
    e["method"] = l.method;
    // The activation quantizer of its data input (absent in runs without activation formats).
    if (!l.act_format.empty() || !l.act_status.empty() || l.hadamard_block > 0) {
      e["act_format"] = l.act_format.empty() ? Json(nullptr) : Json(l.act_format);
      e["act_amax"] = l.act_amax >= 0 ? number(l.act_amax) : Json(nullptr);
      e["hadamard_block"] = l.hadamard_block;
      if (!l.act_status.empty()) e["act_status"] = l.act_status;
    }
    e["relative_error"] = error_value(l.relative_error);
    e["rtn_relative_error"] = error_value(l.rtn_relative_error);
    e["seconds"] = number(l.seconds);
    e["float_bytes"] = l.float_bytes;
    e["quantized_bytes"] = l.quantized_bytes;
    if (!l.candidates.empty()) {  // mixed precision: what the sensitivity pass measured
      Json cands = Json::array();
      for (const auto& c : l.candidates)
        cands.push_back({{"format", c.format}, {"bytes", c.bytes}, {"relative_error", number(c.relative_error)},
                         {"e2e", c.e2e >= 0 ? number(c.e2e) : Json(nullptr)}, {"cost", number(c.cost)}});
      e["candidates"] = cands;
    }
    if (l.accumulator) {
      const LayerReport::Accumulator& a = *l.accumulator;
      e["accumulator"] = {{"bits", a.bits > 0 ? Json(a.bits) : Json(nullptr)},
                          {"tile", a.tile},
                          {"input_min", a.input_min},
                          {"input_max", a.input_max},
                          {"input_from", a.input_from},
                          {"worst", a.worst},
                          {"bits_needed", a.bits_needed}};
    }
    if (!l.notes.empty()) {
      Json notes = Json::object();
      for (const auto& [k, v] : l.notes) notes[k] = number(v);
      e["notes"] = notes;
    }
    all.push_back(e);
  }
  j["layers"] = all;
  if (allocation) {
    const AllocationReport& a = *allocation;
    Json curve = Json::array();
    for (const auto& [bits, cost] : a.curve) curve.push_back({{"bits_per_weight", number(bits)}, {"cost", number(cost)}});
    j["allocation"] = {{"sensitivity", a.sensitivity},
                       {"candidates", a.candidates},
                       {"weights", a.weights},
                       {"budget_bytes", a.budget_bytes},
                       {"budget_bits_per_weight", number(a.budget_bits_per_weight())},
                       {"bytes", a.bytes},
                       {"bits_per_weight", number(a.bits_per_weight())},
                       {"cost", number(a.cost)},
                       {"states", a.states},
                       {"seconds", number(a.seconds)},
                       {"curve", curve}};
  }
  return j.dump(1) + "\n";
}

std::string Report::table() const {
  std::string s = fmt::format("{:<36} {:<14} {:<20} {:<12} {:>10} {:>10} {:>8} {:>10}\n", "layer", "op", "shape",
                              "format", "rel.error", "rtn error", "time s", "bytes");
  auto err = [](double e) { return e >= 0 && std::isfinite(e) ? fmt::format("{:.6g}", e) : std::string("-"); };
  for (const LayerReport& l : layers) {
    if (l.status != "quantized")
      s += fmt::format("{:<36} {:<14} {:<20} {:<12} {:>10} {:>10} {:>8} {:>10}\n", l.name, l.op, detail::shape_list_text(l.shape),
                       l.status, "", "", "", l.quantized_bytes);
    else
      s += fmt::format("{:<36} {:<14} {:<20} {:<12} {:>10} {:>10} {:>8.2f} {:>10}\n", l.name, l.op, detail::shape_list_text(l.shape),
                       l.format, err(l.relative_error), err(l.rtn_relative_error), l.seconds, l.quantized_bytes);
  }
  s += fmt::format("method {}, {} calibration samples, {:.2f} s in all\n", method, samples, seconds);
  // Input transforms: how many layers have an activation quantizer and a rotation, and each layer
  // that was asked for one it could not take.
  int act_layers = 0, rotated = 0;
  for (const LayerReport& l : layers) {
    act_layers += l.act_format.empty() ? 0 : 1;
    rotated += l.hadamard_block > 0 ? 1 : 0;
  }
  if (act_layers > 0) s += fmt::format("activations quantized at the inputs of {} layers\n", act_layers);
  if (rotated > 0) s += fmt::format("Hadamard rotation on the inputs of {} layers\n", rotated);
  for (const LayerReport& l : layers)
    if (!l.act_status.empty()) s += fmt::format("{}: {}\n", l.name, l.act_status);
  // Accumulators: the widest need of any layer, against the bound where there is one.
  const LayerReport* widest = nullptr;
  for (const LayerReport& l : layers)
    if (l.accumulator && (!widest || l.accumulator->bits_needed > widest->accumulator->bits_needed)) widest = &l;
  if (widest) {
    const LayerReport::Accumulator& a = *widest->accumulator;
    if (a.bits > 0)
      s += fmt::format("accumulator bound {} bits: every quantized layer's integer dot products fit for any input in range; "
                       "the widest need is {} bits ({}, tiles of {}, inputs {})\n",
                       a.bits, a.bits_needed, widest->name, a.tile, a.input_from);
    else
      s += fmt::format("accumulators: the widest need is {} bits ({}, tiles of {}, inputs {}); no bound was kept\n",
                       a.bits_needed, widest->name, a.tile, a.input_from);
  }
  if (allocation) {
    const AllocationReport& a = *allocation;
    s += fmt::format("mixed precision ({} sensitivity, candidates {}): budget {:.4g} bits per weight ({} bytes), allocated "
                     "{:.4g} ({} bytes), least summed sensitivity {:.6g}; sensitivity pass + allocation {:.2f} s\n",
                     a.sensitivity, fmt::join(a.candidates, ","), a.budget_bits_per_weight(), a.budget_bytes,
                     a.bits_per_weight(), a.bytes, a.cost, a.seconds);
  }
  // The size line, as llama.cpp's quantize prints it: the weights before and after.
  const std::int64_t before = float_bytes(), after = quantized_bytes();
  s += fmt::format("weights: {} in float -> {} quantized ({:.2f} bits per weight, {:.2f}x smaller)\n", size_text(before),
                   size_text(after), bits_per_weight(*this), after > 0 ? double(before) / double(after) : 0.0);
  if (world_size > 1)
    s += fmt::format("calibration across {} ranks: {} batches in all, the statistics summed over the ranks ({:.1f} MiB "
                     "all-reduced from this rank)\n",
                     world_size, batches, double(collective_bytes) / (1 << 20));
  if (batches > 0)
    s += fmt::format(
        "{} stages x {} batches: forward {:.2f} s, statistics {:.2f} s, solve {:.2f} s; boundary state {:.1f} MiB in "
        "memory, {:.1f} MiB spilled at most; peak memory {:.0f} MiB\n",
        stages, batches, forward_seconds, statistics_seconds, solve_seconds, double(peak_cache_bytes) / (1 << 20),
        double(peak_spilled_bytes) / (1 << 20), double(peak_rss_bytes) / (1 << 20));
  return s;
}

}  // namespace qcast::ptq
