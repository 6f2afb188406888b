// The PTQ report as one self-contained HTML page (Report::html): inline SVG charts drawn here, no
// script, nothing fetched, so that it opens anywhere, offline, and can be mailed as one file
// (docs/design/0014-mixed-precision.md says why not a charting library).
#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "qcast/ptq/engine.hpp"
#include "qcast/version.hpp"
#include "shape_list_text.hpp"

namespace qcast::ptq {
namespace {

std::string escaped(const std::string& s) {
  std::string r;
  for (const char c : s) switch (c) {
      case '&': r += "&amp;"; break;
      case '<': r += "&lt;"; break;
      case '>': r += "&gt;"; break;
      case '"': r += "&quot;"; break;
      case '\'': r += "&#39;"; break;
      default: r += c;
    }
  return r;
}

// Colours a reader with the common colour-vision deficiencies can still tell apart (Okabe-Ito).
const char* colour(std::size_t i) {
  static const char* palette[] = {"#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000"};
  return palette[i % 8];
}

std::string number_text(double v) { return fmt::format("{:.4g}", v); }

// Bytes in decimal units (the log-scaled axis ticks fall on powers of ten).
std::string bytes_text(double v) {
  const char* units[] = {"B", "kB", "MB", "GB", "TB"};
  int u = 0;
  while (v >= 1000 && u < 4) v /= 1000, ++u;
  return fmt::format("{:.4g} {}", v, units[u]);
}

// A plot area: its frame, and maps from data to pixels (y on a log scale or linear).
struct Plot {
  double width = 1100, height = 360, left = 70, right = 20, top = 20, bottom = 50;
  double x0 = 0, x1 = 1, y0 = 0, y1 = 1;
  bool log_y = false;
  std::string (*tick_text)(double) = nullptr;  // the y ticks' labels; number_text when none
  double x(double v) const { return left + (v - x0) / (x1 - x0 > 0 ? x1 - x0 : 1) * (width - left - right); }
  double y(double v) const {
    const double t = log_y ? (std::log10(v) - std::log10(y0)) / std::max(std::log10(y1) - std::log10(y0), 1e-12)
                           : (v - y0) / (y1 - y0 > 0 ? y1 - y0 : 1);
    return height - bottom - t * (height - top - bottom);
  }
  // The frame and the y axis's ticks (decades on a log scale, five steps on a linear one).
  std::string axes(const std::string& id, const std::string& x_label, const std::string& y_label) const {
    std::string s = fmt::format(R"~(<svg id="{}" class="chart" viewBox="0 0 {} {}" width="{}" height="{}" role="img">)~", id,
                                width, height, width, height);
    s += fmt::format(R"~(<rect x="{}" y="{}" width="{}" height="{}" class="frame"/>)~", left, top, width - left - right,
                     height - top - bottom);
    std::vector<double> ticks;
    if (log_y) {
      for (double d = std::floor(std::log10(y0)); d <= std::ceil(std::log10(y1)); d += 1) {
        const double v = std::pow(10.0, d);
        if (v >= y0 * 0.999 && v <= y1 * 1.001) ticks.push_back(v);
      }
    } else {  // steps of 1, 2 or 5 x 10^k, about five of them
      const double raw = (y1 - y0) / 5, decade = std::pow(10.0, std::floor(std::log10(raw > 0 ? raw : 1)));
      const double step = raw <= decade ? decade : raw <= 2 * decade ? 2 * decade : raw <= 5 * decade ? 5 * decade : 10 * decade;
      for (double t = std::ceil(y0 / step) * step; t <= y1 * (1 + 1e-9); t += step) ticks.push_back(t);
    }
    for (const double t : ticks)
      s += fmt::format(R"~(<line x1="{:.1f}" x2="{:.1f}" y1="{:.1f}" y2="{:.1f}" class="grid"/><text x="{:.1f}" y="{:.1f}" class="tick" text-anchor="end">{}</text>)~",
                       left, width - right, y(t), y(t), left - 6, y(t) + 4, tick_text ? tick_text(t) : number_text(t));
    s += fmt::format(R"~(<text x="{:.1f}" y="{:.1f}" class="label" text-anchor="middle">{}</text>)~", (left + width - right) / 2,
                     height - 10, escaped(x_label));
    s += fmt::format(R"~(<text x="16" y="{:.1f}" class="label" text-anchor="middle" transform="rotate(-90 16 {:.1f})">{}</text>)~",
                     (top + height - bottom) / 2, (top + height - bottom) / 2, escaped(y_label));
    return s;
  }
};

std::string legend(const std::vector<std::pair<std::string, std::string>>& entries) {  // (colour, text)
  std::string s = R"~(<div class="legend">)~";
  for (const auto& [c, t] : entries)
    s += fmt::format(R"~(<span class="key"><span class="swatch" style="background:{}"></span>{}</span>)~", c, escaped(t));
  return s + "</div>";
}

bool in_chart(const LayerReport& l) { return l.status == "quantized" || !l.candidates.empty(); }

// Relative output error per layer: each measured candidate (mixed precision), the error the run
// reached and round-to-nearest's on the same inputs.
std::string error_chart(const Report& r, const std::vector<std::string>& formats) {
  std::vector<const LayerReport*> ls;
  for (const auto& l : r.layers)
    if (in_chart(l)) ls.push_back(&l);
  Plot p;
  p.log_y = true;
  p.x0 = -0.5;
  p.x1 = double(ls.size()) - 0.5;
  double lo = std::numeric_limits<double>::infinity(), hi = 0;
  auto see = [&](double e) {
    if (e > 0 && std::isfinite(e)) lo = std::min(lo, e), hi = std::max(hi, e);
  };
  for (const LayerReport* l : ls) {
    see(l->relative_error);
    see(l->rtn_relative_error);
    for (const auto& c : l->candidates) see(c.relative_error);
  }
  if (!(hi > 0)) return R"~(<p class="empty">No layer has a measured error (a run without calibration data).</p>)~";
  p.y0 = std::pow(10.0, std::floor(std::log10(lo)));
  p.y1 = std::pow(10.0, std::ceil(std::log10(hi)));
  if (p.y1 <= p.y0) p.y1 = p.y0 * 10;
  std::string s = p.axes("chart-errors", "quantized layers, in execution order", "relative output error (log)");
  std::vector<std::pair<std::string, std::string>> keys;
  auto series = [&](const std::string& cls, const std::string& col, auto value_of, const std::string& what) {
    std::string path;
    for (std::size_t i = 0; i < ls.size(); ++i) {
      const double e = value_of(*ls[i]);
      if (!(e > 0) || !std::isfinite(e)) continue;
      path += fmt::format("{}{:.1f},{:.1f} ", path.empty() ? "M" : "L", p.x(double(i)), p.y(e));
      s += fmt::format(R"~(<circle cx="{:.1f}" cy="{:.1f}" r="3" fill="{}" class="{}"><title>{}: {} {}</title></circle>)~", p.x(double(i)),
                       p.y(e), col, cls, escaped(ls[i]->name), escaped(what), number_text(e));
    }
    if (!path.empty()) s += fmt::format(R"~(<path d="{}" stroke="{}" class="series {}"/>)~", path, col, cls);
  };
  for (std::size_t f = 0; f < formats.size(); ++f) {
    if (formats[f] == "float") continue;
    series("candidate", colour(f), [&](const LayerReport& l) {
      for (const auto& c : l.candidates)
        if (c.format == formats[f]) return c.relative_error;
      return -1.0;
    }, formats[f] + " (sensitivity pass)");
    keys.emplace_back(colour(f), formats[f] + " (sensitivity pass, float inputs)");
  }
  if (formats.empty()) {
    series("rtn", "#999999", [](const LayerReport& l) { return l.rtn_relative_error; }, "round to nearest");
    keys.emplace_back("#999999", "round to nearest");
  }
  // The run's own result: a black ring on each layer, in the format it got.
  for (std::size_t i = 0; i < ls.size(); ++i) {
    const double e = ls[i]->relative_error;
    if (!(e > 0) || !std::isfinite(e)) continue;
    s += fmt::format(R"~(<circle cx="{:.1f}" cy="{:.1f}" r="6" class="chosen"><title>{}: {} {} {}</title></circle>)~", p.x(double(i)),
                     p.y(e), escaped(ls[i]->name), escaped(ls[i]->format), escaped(r.method), number_text(e));
  }
  keys.emplace_back("#000000", "this run: " + r.method + " in the layer's format, against the float model (ring; it includes "
                               "the error the layer's inputs carry)");
  return s + "</svg>" + legend(keys);
}

// Bytes per layer as stored, coloured by format; the float size as an outline.
std::string bytes_chart(const Report& r, const std::vector<std::string>& formats) {
  Plot p;
  p.x0 = -0.5;
  p.x1 = double(r.layers.size()) - 0.5;
  // A log scale: a float embedding can be a thousand times a quantized block's size.
  std::int64_t lo = std::numeric_limits<std::int64_t>::max(), hi = 1;
  for (const auto& l : r.layers) {
    hi = std::max(hi, l.float_bytes);
    if (l.quantized_bytes > 0) lo = std::min(lo, l.quantized_bytes);
  }
  p.log_y = true;
  p.y0 = std::pow(10.0, std::floor(std::log10(double(std::min(lo, hi)))));
  p.y1 = std::pow(10.0, std::ceil(std::log10(double(hi))));
  if (p.y1 <= p.y0) p.y1 = p.y0 * 10;
  p.tick_text = bytes_text;
  std::string s = p.axes("chart-bytes", "weight layers, in execution order", "bytes (log)");
  std::map<std::string, std::string> colour_of;
  for (std::size_t f = 0; f < formats.size(); ++f) colour_of[formats[f]] = formats[f] == "float" ? "#BBBBBB" : colour(f);
  std::vector<std::pair<std::string, std::string>> keys;
  const double w = std::clamp((p.x(1) - p.x(0)) * 0.8, 1.0, 40.0);
  std::map<std::string, bool> used;
  for (std::size_t i = 0; i < r.layers.size(); ++i) {
    const LayerReport& l = r.layers[i];
    const bool q = l.status == "quantized";
    const std::string key = q ? l.format : "float";
    if (!colour_of.count(key)) colour_of[key] = key == "float" ? "#BBBBBB" : colour(colour_of.size());
    used[key] = true;
    const double base = p.y(p.y0);
    auto top = [&](std::int64_t b) { return p.y(std::max(double(b), p.y0)); };
    s += fmt::format(R"~(<rect x="{:.1f}" y="{:.1f}" width="{:.1f}" height="{:.1f}" class="outline"/>)~", p.x(double(i)) - w / 2,
                     top(l.float_bytes), w, base - top(l.float_bytes));
    s += fmt::format(R"~(<rect x="{:.1f}" y="{:.1f}" width="{:.1f}" height="{:.1f}" fill="{}" class="bar"><title>{}: {}, {} bytes ({} in float)</title></rect>)~",
                     p.x(double(i)) - w / 2, top(l.quantized_bytes), w, base - top(l.quantized_bytes),
                     colour_of[key], escaped(l.name), escaped(q ? l.format : l.status), l.quantized_bytes, l.float_bytes);
  }
  for (const auto& [f, c] : colour_of)
    if (used.count(f)) keys.emplace_back(c, f);
  keys.emplace_back("#FFFFFF", "outline: the size in float");
  return s + "</svg>" + legend(keys);
}

// The least summed sensitivity at each budget, and where this run's budget and allocation sit.
std::string budget_chart(const AllocationReport& a) {
  Plot p;
  double lo = std::numeric_limits<double>::infinity(), hi = 0;
  for (const auto& [b, c] : a.curve)
    if (c > 0) lo = std::min(lo, c), hi = std::max(hi, c);
  p.x0 = a.curve.front().first;
  p.x1 = std::max(a.curve.back().first, p.x0 + 1e-9);
  p.log_y = hi > 0;
  p.y0 = p.log_y ? std::pow(10.0, std::floor(std::log10(lo))) : 0;
  p.y1 = p.log_y ? std::pow(10.0, std::ceil(std::log10(hi))) : 1;
  if (p.y1 <= p.y0) p.y1 = p.y0 * 10;
  const std::string& k = a.sensitivity;
  const char* summed = k == "e2e"        ? "summed KL (log)"
                       : k == "e2e-mse"  ? "summed output rel. MSE (log)"
                       : k == "gain"     ? "summed gain-scaled KL (log)"
                       : k == "gain-mse" ? "summed gain-scaled output rel. MSE (log)"
                                         : "summed squared rel. error (log)";
  std::string s = p.axes("chart-budget", "budget, bits per weight (codes + scales)", summed);
  std::string path;
  for (const auto& [b, c] : a.curve) {
    const double y = c > 0 ? p.y(c) : p.y(p.y0);
    path += fmt::format("{}{:.1f},{:.1f} ", path.empty() ? "M" : "L", p.x(b), y);
    s += fmt::format(R"~(<circle cx="{:.1f}" cy="{:.1f}" r="3" fill="#0072B2" class="curve-point"><title>{} bits per weight: {}</title></circle>)~",
                     p.x(b), y, number_text(b), number_text(c));
  }
  s += fmt::format(R"~(<path d="{}" stroke="#0072B2" class="series"/>)~", path);
  const double bx = std::clamp(a.budget_bits_per_weight(), p.x0, p.x1);
  s += fmt::format(R"~(<line x1="{:.1f}" x2="{:.1f}" y1="{:.1f}" y2="{:.1f}" class="budget"><title>budget {} bits per weight</title></line>)~",
                   p.x(bx), p.x(bx), p.top, p.height - p.bottom, number_text(a.budget_bits_per_weight()));
  if (a.cost > 0 || !p.log_y)
    s += fmt::format(R"~(<circle cx="{:.1f}" cy="{:.1f}" r="6" class="chosen" id="allocation-point"><title>allocated: {} bits per weight, summed sensitivity {}</title></circle>)~",
                     p.x(std::clamp(a.bits_per_weight(), p.x0, p.x1)), p.y(a.cost > 0 ? a.cost : p.y0), number_text(a.bits_per_weight()),
                     number_text(a.cost));
  return s + "</svg>" +
         legend({{"#0072B2", "least summed sensitivity at each budget"}, {"#D55E00", "this run's budget (dashed)"},
                 {"#000000", "this run's allocation (ring)"}});
}

std::string error_cell(double e) { return e >= 0 && std::isfinite(e) ? number_text(e) : "-"; }

}  // namespace

std::string Report::html() const {
  std::vector<std::string> formats = allocation ? allocation->candidates : std::vector<std::string>{};
  std::string s = R"~(<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
)~";
  s += fmt::format("<title>qcast report: {} {}</title>\n", escaped(method), escaped(format));
  s += R"~(<style>
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;max-width:1180px}
h1{font-size:22px}h2{font-size:17px;margin-top:28px}
table{border-collapse:collapse}td,th{padding:3px 8px;border-bottom:1px solid #ddd;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums}
.chart{display:block;max-width:100%;height:auto}.frame{fill:none;stroke:#888}.grid{stroke:#e4e4e4}
.tick,.label{font-size:11px;fill:#444}.series{fill:none;stroke-width:1.2;opacity:.75}
.chosen{fill:none;stroke:#000;stroke-width:1.6}.outline{fill:none;stroke:#999;stroke-width:.6}
.budget{stroke:#D55E00;stroke-dasharray:5 4;stroke-width:1.5}
.legend{margin:6px 0 0 70px}.key{margin-right:18px;white-space:nowrap}
.swatch{display:inline-block;width:11px;height:11px;margin-right:5px;border:1px solid #888;vertical-align:-1px}
</style></head><body>
)~";
  s += fmt::format("<h1>qcast quantization report</h1>\n<section id=\"summary\"><table>\n");
  auto row = [&](const std::string& k, const std::string& v) { s += fmt::format("<tr><th>{}</th><td>{}</td></tr>\n", k, escaped(v)); };
  row("method", method);
  row("format", allocation ? "mixed: " + fmt::format("{}", fmt::join(allocation->candidates, ", ")) : format);
  row("calibration", fmt::format("{} samples in {} batches", samples, batches));
  row("weights", fmt::format("{} bytes in float, {} bytes quantized", float_bytes(), quantized_bytes()));
  if (allocation) {
    const AllocationReport& a = *allocation;
    row("budget", fmt::format("{:.4g} bits per weight ({} bytes over {} weights)", a.budget_bits_per_weight(), a.budget_bytes, a.weights));
    row("allocated", fmt::format("{:.4g} bits per weight ({} bytes), least summed {} sensitivity {:.6g}", a.bits_per_weight(), a.bytes,
                                 a.sensitivity, a.cost));
  }
  row("time", fmt::format("{:.2f} s", seconds));
  row("qcast", qcast::version_string);
  s += "</table></section>\n";
  s += "<section id=\"errors\"><h2>Relative output error per layer</h2>\n" + error_chart(*this, formats) + "</section>\n";
  s += "<section id=\"bytes\"><h2>Bytes per layer</h2>\n" + bytes_chart(*this, formats) + "</section>\n";
  if (allocation && !allocation->curve.empty())
    s += "<section id=\"budget\"><h2>Budget and sensitivity</h2>\n" + budget_chart(*allocation) + "</section>\n";
  s += "<section id=\"layers\"><h2>Layers</h2>\n<table id=\"layer-table\"><tr><th>layer</th><th>op</th><th>shape</th><th>status</th>"
       "<th>format</th><th>rel. error</th><th>rtn error</th><th>bytes</th>";
  for (const auto& f : formats) s += fmt::format("<th>{} error</th>", escaped(f));
  s += "</tr>\n";
  for (const LayerReport& l : layers) {
    s += fmt::format(R"~(<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class="n">{}</td><td class="n">{}</td><td class="n">{}</td>)~",
                     escaped(l.name), escaped(l.op), escaped(detail::shape_list_text(l.shape)), escaped(l.status), escaped(l.format),
                     error_cell(l.relative_error), error_cell(l.rtn_relative_error), l.quantized_bytes);
    for (const auto& f : formats) {
      std::string cell = "-";
      for (const auto& c : l.candidates)
        if (c.format == f) cell = error_cell(c.relative_error);
      s += "<td class=\"n\">" + cell + "</td>";
    }
    s += "</tr>\n";
  }
  s += "</table></section>\n</body></html>\n";
  return s;
}

}  // namespace qcast::ptq
