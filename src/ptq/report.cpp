// The PTQ report as JSON and as a text table (engine.hpp: Report).
#include <cmath>
#include <cstdio>
#include <sstream>

#include "qcast/ptq/engine.hpp"

namespace qcast::ptq {
namespace {

std::string shape_text(const std::vector<std::int64_t>& s) {
  std::string r = "[";
  for (std::size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

std::string json_string(const std::string& s) {
  std::string r = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') r += '\\', r += c;
    else if (c == '\n') r += "\\n";
    else if (static_cast<unsigned char>(c) < 0x20) {
      char b[8];
      std::snprintf(b, sizeof b, "\\u%04x", c);
      r += b;
    } else r += c;
  }
  return r + "\"";
}

std::string number(double v) {
  if (!std::isfinite(v)) return "null";
  char b[32];
  std::snprintf(b, sizeof b, "%.6g", v);
  return b;
}

}  // namespace

std::string Report::json() const {
  std::ostringstream s;
  s << "{\"method\": " << json_string(method) << ", \"format\": " << json_string(format)
    << ", \"device\": " << json_string(device) << ", \"samples\": " << samples << ", \"batches\": " << batches
    << ", \"seconds\": " << number(seconds) << ", \"forward_seconds\": " << number(forward_seconds)
    << ", \"statistics_seconds\": " << number(statistics_seconds) << ", \"solve_seconds\": " << number(solve_seconds)
    << ", \"stages\": " << stages << ", \"peak_cache_bytes\": " << peak_cache_bytes
    << ", \"peak_spilled_bytes\": " << peak_spilled_bytes << ", \"peak_rss_bytes\": " << peak_rss_bytes
    << ", \"layers\": [";
  for (std::size_t i = 0; i < layers.size(); ++i) {
    const LayerReport& l = layers[i];
    s << (i ? ",\n  " : "\n  ") << "{\"name\": " << json_string(l.name) << ", \"op\": " << json_string(l.op)
      << ", \"shape\": " << shape_text(l.shape) << ", \"status\": " << json_string(l.status)
      << ", \"format\": " << json_string(l.format) << ", \"method\": " << json_string(l.method)
      << ", \"relative_error\": " << (l.relative_error >= 0 ? number(l.relative_error) : "null")
      << ", \"rtn_relative_error\": " << (l.rtn_relative_error >= 0 ? number(l.rtn_relative_error) : "null")
      << ", \"seconds\": " << number(l.seconds);
    if (!l.notes.empty()) {
      s << ", \"notes\": {";
      bool first = true;
      for (const auto& [k, v] : l.notes) s << (first ? "" : ", ") << json_string(k) << ": " << number(v), first = false;
      s << "}";
    }
    s << "}";
  }
  s << "\n]}\n";
  return s.str();
}

std::string Report::table() const {
  std::ostringstream s;
  char line[512];
  std::snprintf(line, sizeof line, "%-36s %-14s %-20s %-12s %10s %10s %8s\n", "layer", "op", "shape", "format",
                "rel.error", "rtn error", "time s");
  s << line;
  for (const LayerReport& l : layers) {
    if (l.status != "quantized") {
      std::snprintf(line, sizeof line, "%-36s %-14s %-20s %s\n", l.name.c_str(), l.op.c_str(), shape_text(l.shape).c_str(),
                    l.status.c_str());
    } else {
      auto err = [](double e) { return e >= 0 ? number(e) : std::string("-"); };
      std::snprintf(line, sizeof line, "%-36s %-14s %-20s %-12s %10s %10s %8.2f\n", l.name.c_str(), l.op.c_str(),
                    shape_text(l.shape).c_str(), l.format.c_str(), err(l.relative_error).c_str(),
                    err(l.rtn_relative_error).c_str(), l.seconds);
    }
    s << line;
  }
  std::snprintf(line, sizeof line, "method %s, %lld calibration samples, %.2f s in all\n", method.c_str(),
                static_cast<long long>(samples), seconds);
  s << line;
  if (batches > 0) {
    std::snprintf(line, sizeof line,
                  "%lld stages x %lld batches: forward %.2f s, statistics %.2f s, solve %.2f s; boundary state "
                  "%.1f MiB in memory, %.1f MiB spilled at most; peak memory %.0f MiB\n",
                  static_cast<long long>(stages), static_cast<long long>(batches), forward_seconds, statistics_seconds,
                  solve_seconds, double(peak_cache_bytes) / (1 << 20), double(peak_spilled_bytes) / (1 << 20),
                  double(peak_rss_bytes) / (1 << 20));
    s << line;
  }
  return s.str();
}

}  // namespace qcast::ptq
