// qcast formats: the table of named formats, or the same as JSON (--json).
#include <cmath>
#include <cstdio>
#include <string>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "command_line.hpp"
#include "qcast/format_names.hpp"

namespace qcast_cli {
namespace {

const char* kHelp =
    "usage: qcast formats [--json]\n"
    "\n"
    "Lists every named format: element bits, effective bits per element including scales, the\n"
    "largest value, the smallest normal and subnormal magnitudes of the element, its special\n"
    "values, and how it is scaled. intN@gK accepts any group size K; see docs/formats.md for the\n"
    "generic grammar that names every other format.\n"
    "\n"
    "  --json   one JSON array, an object per format, with the same numbers (exact, not rounded)\n";

std::string number(double v) { return v >= 1e5 || v < 1e-3 ? fmt::format("{:.4g}", v) : fmt::format("{:g}", v); }

std::string specials(const qcast::ElementFormat& e) {
  if (e.kind == qcast::ElementKind::integer) return "none";
  switch (e.specials) {
    case qcast::Specials::ieee: return "Inf, NaN";
    case qcast::Specials::fn: return "NaN (S.1111.111)";
    case qcast::Specials::fnuz: return "NaN (0x80), no -0";
    default: return "none";
  }
}

const char* granularity_name(qcast::Granularity g) {
  switch (g) {
    case qcast::Granularity::tensor: return "tensor";
    case qcast::Granularity::channel: return "channel";
    case qcast::Granularity::block: return "block";
    default: return "element";
  }
}

std::string scaling(const qcast::Format& f) {
  using qcast::Granularity;
  if (!f.is_scaled()) return "none (value cast)";
  std::string g = f.granularity == Granularity::tensor    ? "per tensor"
                  : f.granularity == Granularity::channel ? fmt::format("per channel (axis {})", f.axis)
                                                          : fmt::format("block {}", f.block_size);
  g += ", " + qcast::element_name(f.scale);
  if (f.rule != qcast::ScaleRule::amax) g += std::string(" ") + qcast::detail::rule_name(f.rule);
  if (f.tensor_scale) g += " x fp32 tensor";
  return g;
}

nlohmann::ordered_json format_json(const qcast::NamedFormat& n) {
  const qcast::Format& f = n.format;
  const auto& e = f.element;
  nlohmann::ordered_json j;
  j["name"] = n.name;
  j["element"] = qcast::element_name(e);
  j["bits"] = e.bits();
  j["bits_per_element"] = f.bits_per_element();
  j["max"] = e.max_value();
  j["min_normal"] = e.min_normal();
  j["min_subnormal"] = e.kind == qcast::ElementKind::minifloat ? nlohmann::ordered_json(e.min_subnormal()) : nullptr;
  j["specials"] = specials(e);
  j["granularity"] = granularity_name(f.granularity);
  j["block_size"] = f.is_scaled() && f.granularity == qcast::Granularity::block ? nlohmann::ordered_json(f.block_size)
                                                                                : nullptr;
  j["scale"] = f.is_scaled() ? nlohmann::ordered_json(qcast::element_name(f.scale)) : nullptr;
  j["tensor_scale"] = f.tensor_scale;
  j["scaling"] = scaling(f);
  return j;
}

}  // namespace

int formats_command(const std::vector<std::string>& args) {
  bool json = false;
  CLI::App app{"", "qcast formats"};
  prepare_command_app(app);
  app.add_flag("--json", json);
  if (!parse_command_line(app, args, kHelp)) return exit_ok;
  if (json) {
    nlohmann::ordered_json all = nlohmann::ordered_json::array();
    for (const auto& n : qcast::named_formats()) all.push_back(format_json(n));
    fmt::print("{}\n", all.dump(2));
    return exit_ok;
  }
  fmt::print("{:<14} {:>4} {:>6} {:>10} {:>10} {:>10}  {:<18} {}\n", "format", "bits", "eff.", "max", "min normal",
             "min subn.", "specials", "scaling");
  for (const auto& n : qcast::named_formats()) {
    const auto& e = n.format.element;
    fmt::print("{:<14} {:>4} {:>6} {:>10} {:>10} {:>10}  {:<18} {}\n", n.name, e.bits(),
               number(n.format.bits_per_element()), number(e.max_value()), number(e.min_normal()),
               e.kind == qcast::ElementKind::minifloat ? number(e.min_subnormal()) : "-", specials(e),
               scaling(n.format));
  }
  fmt::print("\nmax and the minimum magnitudes are those of the element grid (before scaling).\n");
  return exit_ok;
}

}  // namespace qcast_cli
