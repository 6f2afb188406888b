// qcast formats: the table of named formats.
#include <cmath>
#include <cstdio>
#include <string>

#include "commands.hpp"
#include "qcast/format_names.hpp"

namespace qcast_cli {
namespace {

const char* kHelp =
    "usage: qcast formats [--help]\n"
    "\n"
    "Lists every named format: element bits, effective bits per element including scales, the\n"
    "largest value, the smallest normal and subnormal magnitudes of the element, its special\n"
    "values, and how it is scaled. intN@gK accepts any group size K; see docs/formats.md for the\n"
    "generic grammar that names every other format.\n";

std::string number(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, v >= 1e5 || v < 1e-3 ? "%.4g" : "%g", v);
  return buf;
}

std::string specials(const qcast::ElementFormat& e) {
  if (e.kind == qcast::ElementKind::integer) return "none";
  switch (e.specials) {
    case qcast::Specials::ieee: return "Inf, NaN";
    case qcast::Specials::fn: return "NaN (S.1111.111)";
    case qcast::Specials::fnuz: return "NaN (0x80), no -0";
    default: return "none";
  }
}

std::string scaling(const qcast::Format& f) {
  using qcast::Granularity;
  if (!f.is_scaled()) return "none (value cast)";
  std::string g = f.granularity == Granularity::tensor    ? "per tensor"
                  : f.granularity == Granularity::channel ? "per channel (axis " + std::to_string(f.axis) + ")"
                                                          : "block " + std::to_string(f.block_size);
  g += ", " + qcast::element_name(f.scale);
  if (f.rule != qcast::ScaleRule::amax) g += std::string(" ") + qcast::detail::rule_name(f.rule);
  if (f.tensor_scale) g += " x fp32 tensor";
  return g;
}

}  // namespace

int formats_command(const std::vector<std::string>& args) {
  for (const auto& a : args) {
    if (a == "--help" || a == "-h") {
      std::fputs(kHelp, stdout);
      return 0;
    }
    throw UsageError{"unexpected argument " + shown(a)};
  }
  std::printf("%-14s %4s %6s %10s %10s %10s  %-18s %s\n", "format", "bits", "eff.", "max", "min normal", "min subn.",
              "specials", "scaling");
  for (const auto& n : qcast::named_formats()) {
    const auto& e = n.format.element;
    std::printf("%-14s %4d %6s %10s %10s %10s  %-18s %s\n", n.name.c_str(), e.bits(),
                number(n.format.bits_per_element()).c_str(), number(e.max_value()).c_str(),
                number(e.min_normal()).c_str(),
                e.kind == qcast::ElementKind::minifloat ? number(e.min_subnormal()).c_str() : "-",
                specials(e).c_str(), scaling(n.format).c_str());
  }
  std::printf("\nmax and the minimum magnitudes are those of the element grid (before scaling).\n");
  return 0;
}

}  // namespace qcast_cli
