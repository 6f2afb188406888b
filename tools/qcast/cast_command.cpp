// qcast cast: fake quantization of a .npy file.
#include <cstdio>
#include <optional>
#include <stdexcept>
#include <string>

#include "command_line.hpp"
#include "qcast/cast.hpp"
#include "qcast/detail/atomic_file.hpp"
#include "qcast/kernels.hpp"
#include "qcast/npy.hpp"

namespace qcast_cli {
namespace {

const char* kHelp =
    "usage: qcast cast --format F [--axis A] [--round even|away|zero|stochastic] [--seed S]\n"
    "                  [--saturate|--no-saturate] [--tensor-amax A] IN.npy OUT.npy\n"
    "\n"
    "Reads a float32 or float16 .npy array (C order, any rank), rounds every value to format F\n"
    "(scaled and scaled back for block/channel/tensor formats) and writes the result as float32.\n"
    "The output is written to a temporary file and renamed into place; it may not be the input.\n"
    "\n"
    "  --format F      a format name: 'qcast formats' lists the named ones\n"
    "  --axis A        axis of channel/block scaling (default: last axis for blocks, 0 for channels)\n"
    "  --round MODE    element rounding: even (ties to even, default), away (ties away), zero\n"
    "                  (truncate), stochastic (with --seed; independent of thread count)\n"
    "  --seed S        seed of stochastic rounding (default 0)\n"
    "  --saturate      overflow and Inf give ±max (default for every format but fp16/bf16)\n"
    "  --no-saturate   overflow gives Inf/NaN where the format has them (default for fp16/bf16,\n"
    "                  which convert as IEEE 754 does)\n"
    "  --tensor-amax A two-level formats (nvfp4, ...@gK+tensor): derive the tensor scale from A\n"
    "                  (e.g. a calibrated amax) instead of the input's largest finite |x|;\n"
    "                  larger values saturate\n";

}  // namespace

int cast_command(const std::vector<std::string>& args) {
  std::string format_text, round = "even";
  std::string axis_text, seed_text, tensor_amax_text;
  bool saturate_flag = false, no_saturate_flag = false;
  std::vector<std::string> files;
  CLI::App app{"", "qcast cast"};
  prepare_command_app(app);
  app.add_option("--format", format_text);
  app.add_option("--axis", axis_text);
  app.add_option("--round", round);
  app.add_option("--seed", seed_text);
  app.add_option("--tensor-amax", tensor_amax_text);
  app.add_flag("--saturate", saturate_flag);
  app.add_flag("--no-saturate", no_saturate_flag);
  app.add_option("files", files);
  if (!parse_command_line(app, args, kHelp)) return exit_ok;
  if (saturate_flag && no_saturate_flag) throw UsageError{"--saturate and --no-saturate contradict each other"};
  std::optional<bool> saturate;
  if (saturate_flag || no_saturate_flag) saturate = saturate_flag;
  if (format_text.empty()) throw UsageError{"--format is required"};
  if (files.size() != 2) throw UsageError{"expected IN.npy and OUT.npy, got " + std::to_string(files.size()) + " paths"};

  qcast::Format format = format_option(format_text);
  if (!axis_text.empty()) {
    if (!format.has_axis())
      throw UsageError{"--axis applies to channel and block formats; " + shown(format_text) + " has no axis"};
    format.axis = int(parse_integer("--axis", axis_text, -64, 63));
  }
  qcast::CastOptions options;
  if (round == "even") options.rounding = qcast::Rounding::nearest_even;
  else if (round == "away") options.rounding = qcast::Rounding::nearest_away;
  else if (round == "zero") options.rounding = qcast::Rounding::toward_zero;
  else if (round == "stochastic") options.rounding = qcast::Rounding::stochastic;
  else throw UsageError{"--round must be even, away, zero or stochastic, got " + shown(round)};
  if (!seed_text.empty()) {
    if (options.rounding != qcast::Rounding::stochastic) throw UsageError{"--seed only applies to --round stochastic"};
    options.seed = static_cast<std::uint64_t>(parse_integer("--seed", seed_text, 0, LLONG_MAX));
  }
  options.saturate = saturate;
  if (!tensor_amax_text.empty()) options.tensor_amax = parse_number("--tensor-amax", tensor_amax_text);
  try {  // the library's own check of format and options, before any file is read
    qcast::detail::check_format(format, options);
  } catch (const std::invalid_argument& e) {
    throw UsageError{e.what()};
  }

  const std::string& in_path = files[0];
  const std::string& out_path = files[1];
  std::optional<qcast::detail::OutputSet> output;  // checked, with its temporary file, before reading
  try {
    output.emplace(std::vector<qcast::detail::OutputSet::Output>{{"OUT.npy", out_path}}, std::vector<std::string>{in_path});
  } catch (const std::invalid_argument& e) {
    throw UsageError{e.what()};
  }

  const qcast::NpyArray in = qcast::read_npy(in_path);
  std::vector<float> values = in.to_float();
  qcast::kernels::cast(values.data(), values.data(), in.shape, format, options);
  output->write(0, [&](std::ostream& f) { qcast::write_npy(f, in.shape, values.data()); });
  output->commit();
  return exit_ok;
}

}  // namespace qcast_cli
