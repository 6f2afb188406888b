// One format's figures in `qcast bench`, shared by the CPU and the CUDA bench so that both print the
// same JSON fields: a figure that was not measured (0) is null in JSON and '-' in the table.
#pragma once
#include <string>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace qcast_cli {

struct BenchFigures {
  double gbps = 0;         // qcast
  double limit_gbps = 0;   // memcpy (CPU) or a device-to-device copy (CUDA)
  double aten_gbps = 0;    // the ATen-op composition
  double scalar_gbps = 0;  // the scalar reference (CPU only)
  double fq_gbps = 0;      // at::fake_quantize_per_channel_affine (int8@channel)
};

inline nlohmann::ordered_json measured(double v) {
  return v > 0 ? nlohmann::ordered_json(v) : nlohmann::ordered_json(nullptr);
}

inline std::string cell(double v, const char* spec) {
  return v > 0 ? fmt::format(fmt::runtime(spec), v) : std::string("-");
}

// Appends the figures and their ratios to `row`; tensor_amax: null for one-level formats, else
// "given" (--static-tensor-amax) or "measured".
inline void add_figures(nlohmann::ordered_json& row, const BenchFigures& b, bool two_level, bool amax_given) {
  row["gbps"] = b.gbps;
  row["memcpy_gbps"] = b.limit_gbps;
  row["aten_gbps"] = measured(b.aten_gbps);
  row["scalar_gbps"] = measured(b.scalar_gbps);
  row["ratio_memcpy"] = b.gbps / b.limit_gbps;
  row["ratio_aten"] = measured(b.aten_gbps > 0 ? b.gbps / b.aten_gbps : 0);
  row["fake_quantize_per_channel_gbps"] = measured(b.fq_gbps);
  row["ratio_fake_quantize_per_channel"] = measured(b.fq_gbps > 0 ? b.gbps / b.fq_gbps : 0);
  row["tensor_amax"] = !two_level ? nlohmann::ordered_json(nullptr) : amax_given ? "given" : "measured";
}

}  // namespace qcast_cli
