// qcast quantize: post-training quantization of a TorchScript model's weights. The methods, their
// one-line help and their options come from the engine's method registry.
#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <optional>
#include <string>

#include "commands.hpp"
#include "qcast/detail/atomic_file.hpp"
#include "qcast/format_names.hpp"
#include "qcast/ptq/engine.hpp"
#include "error_text.hpp"  // src/ptq: LibTorch errors without backtraces

namespace qcast_cli {
namespace {

namespace ptq = qcast::ptq;

// An error's message for the user: the engine's messages as they are (they name the layer), a
// LibTorch error reduced to the line that says what (ptq::detail::error_summary). Every line after
// the first that is part of a backtrace is dropped.
std::string error_summary(const std::exception& e) {
  if (dynamic_cast<const c10::Error*>(&e)) return ptq::detail::error_summary(e);
  const std::string m = e.what();
  const auto backtrace = m.find("\nException raised from");
  return backtrace == std::string::npos ? m : m.substr(0, backtrace);
}

const char* kUsage =
    "usage: qcast quantize MODEL.pt --format F [--method M] [--calib DATA] -o OUT.pt\n"
    "                      [--samples N] [--batch-size B] [--exclude PATTERN]...\n"
    "                      [--layer-format PATTERN=F]... [--device cpu|cuda[:N]] [--cache-mb MB]\n"
    "                      [--spill-dir DIR] [METHOD OPTIONS] [--export OUT.qpack] [--report R.json]\n"
    "                      [--list] [--quiet]\n"
    "\n"
    "Quantizes the weights of every linear, convolution (1-D/2-D, grouped, depthwise) and\n"
    "matmul/mm/addmm/bmm with a parameter weight of a TorchScript model, layer by layer in execution\n"
    "order, and writes the model with its weights replaced by their quantized values (it loads in any\n"
    "LibTorch or PyTorch). Blocks of block-scaled formats run along each weight's reduction dimension\n"
    "(a convolution's in_channels x kh x kw, OIHW order). The model runs stage by stage: each part of\n"
    "the graph once per model copy and calibration batch. Prints a per-layer table; docs/ptq.md has more.\n"
    "\n"
    "  --format F            weight format ('qcast formats' lists the named ones)\n"
    "  --method M            the method (default ed; listed below)\n"
    "  --calib DATA          calibration inputs (needed by every method but rtn): a file saved by\n"
    "                        torch.save holding a tensor (or a tuple of tensors, one per model input)\n"
    "                        whose first dimension counts samples, or a folder of .npy files\n"
    "                        (float32/float16, first dimension = samples, read in name order)\n"
    "  --samples N           use the first N calibration samples (default: all)\n"
    "  --batch-size B        samples per forward pass (default 16)\n"
    "  --exclude PATTERN     leave layers whose name matches the glob in float (repeatable)\n"
    "  --layer-format P=F    format F for layers matching glob P; the first match wins (repeatable)\n"
    "  --device D            where the models run and the statistics are summed: cpu (default),\n"
    "                        cuda or cuda:N; the saved model is on the CPU\n"
    "  --cache-mb MB         activations kept in memory between stages (default: half the available\n"
    "                        memory); the rest goes to a temporary folder, removed at the end\n"
    "  --spill-dir DIR       where that temporary folder is made (default: $TMPDIR or /tmp)\n"
    "  --threaded-forward    run the model's stages on every intra-op thread: faster forward passes,\n"
    "                        but LibTorch's convolutions then give bits that depend on the thread count\n"
    "                        (by default they run on one thread and the result is the same for any)\n"
    "  --bias-correction     add each quantized layer's mean output shift on the calibration set to\n"
    "                        its bias (linear and convolution layers with a bias; any method)\n"
    "  -o, --output OUT.pt   the quantized model (written to a temporary file, then renamed)\n"
    "  --export OUT.qpack    also write codes + scales + format per layer (docs/qpack.md)\n"
    "  --report R.json       also write the per-layer report as JSON\n"
    "  --list                print the model's weight layers and exit\n"
    "  --quiet               no progress lines on stderr\n"
    "\n"
    "Ctrl-C (SIGINT) or SIGTERM stops the run at the next batch: nothing is written, temporary files\n"
    "are removed, exit code 130.\n";

std::string help_text() {
  std::string h = kUsage;
  h += "\nmethods:\n";
  for (const auto& m : ptq::methods()) {
    char line[256];
    std::snprintf(line, sizeof line, "  %-8s %s\n", m.name.c_str(), m.help.c_str());
    h += line;
    for (const auto& o : m.options) {
      std::string flag = "--" + o.name;
      if (o.kind == ptq::MethodOption::Kind::choice) {
        flag += " ";
        for (std::size_t i = 0; i < o.choices.size(); ++i) flag += (i ? "|" : "") + o.choices[i];
      } else if (o.kind != ptq::MethodOption::Kind::flag) {
        flag += " X";
      }
      std::snprintf(line, sizeof line, "      %-20s %s (default %s)\n", flag.c_str(), o.help.c_str(),
                    o.default_value.c_str());
      h += line;
    }
  }
  return h;
}

// The method option of that flag ("--act-order" -> act-order), over every registered method.
const ptq::MethodOption* method_option(const std::string& flag) {
  if (flag.rfind("--", 0) != 0) return nullptr;
  const std::string name = flag.substr(2);
  for (const auto& m : ptq::methods())
    for (const auto& o : m.options)
      if (o.name == name) return &o;
  return nullptr;
}

std::string duration(double s) {
  char b[32];
  if (s < 120) std::snprintf(b, sizeof b, "%.0fs", s);
  else std::snprintf(b, sizeof b, "%.0fm%02.0fs", std::floor(s / 60), std::fmod(s, 60));
  return b;
}

std::atomic<int> stop_signal{0};
extern "C" void on_stop_signal(int sig) { stop_signal = sig; }

int run_quantize(const std::vector<std::string>& args) {
  std::string model_path, format_text, calib, out, export_path, report_path;
  long long samples = -1, batch_size = 16;
  bool list = false, quiet = false;
  ptq::Options options;
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    auto value = [&]() -> const std::string& { return option_value(args, i); };
    if (a == "--help" || a == "-h") {
      std::fputs(help_text().c_str(), stdout);
      return 0;
    } else if (a == "--format") format_text = value();
    else if (a == "--method") options.method = value();
    else if (a == "--calib") calib = value();
    else if (a == "--samples") samples = parse_integer(a, value(), 1, std::int64_t(1) << 40);
    else if (a == "--batch-size") batch_size = parse_integer(a, value(), 1, std::int64_t(1) << 20);
    else if (a == "--exclude") options.exclude.push_back(value());
    else if (a == "--layer-format") {
      const std::string v = value();
      const auto eq = v.find('=');
      if (eq == std::string::npos || eq == 0) throw UsageError{"--layer-format needs PATTERN=FORMAT, got " + shown(v)};
      options.layer_formats.push_back({v.substr(0, eq), qcast::parse_format(v.substr(eq + 1))});
    } else if (a == "--device") options.device = value();
    else if (a == "--cache-mb") options.cache_mb = parse_integer(a, value(), 0, std::int64_t(1) << 30);
    else if (a == "--spill-dir") options.spill_dir = value();
    else if (a == "--threaded-forward") options.threaded_forward = true;
    else if (a == "--bias-correction") options.bias_correction = true;
    else if (a == "-o" || a == "--output") out = value();
    else if (a == "--export") export_path = value();
    else if (a == "--report") report_path = value();
    else if (a == "--list") list = true;
    else if (a == "--quiet") quiet = true;
    else if (const ptq::MethodOption* mo = method_option(a)) {
      options.method_options[mo->name] = mo->kind == ptq::MethodOption::Kind::flag ? "true" : value();
    } else if (a.size() > 1 && a[0] == '-') throw UsageError{"unknown option " + shown(a)};
    else if (model_path.empty()) model_path = a;
    else throw UsageError{"more than one model given (" + shown(model_path) + ", " + shown(a) + ")"};
  }
  if (model_path.empty()) throw UsageError{"no MODEL.pt given"};
  if (list) {
    const auto layers = ptq::list_layers(ptq::load_model(model_path));
    std::printf("%-40s %-16s %-20s %s\n", "layer", "op", "shape", "status");
    for (const auto& l : layers) {
      std::string shape = "[";
      for (std::size_t i = 0; i < l.shape.size(); ++i) shape += (i ? ", " : "") + std::to_string(l.shape[i]);
      shape += "]";
      std::printf("%-40s %-16s %-20s %s\n", l.name.c_str(), l.op.c_str(), shape.c_str(),
                  l.unsupported.empty() ? (l.uses > 1 ? ("quantizable (" + std::to_string(l.uses) + " uses)").c_str()
                                                      : "quantizable")
                                        : ("float: " + l.unsupported).c_str());
    }
    return 0;
  }
  const ptq::MethodInfo* method = nullptr;
  try {
    method = &ptq::find_method(options.method);
  } catch (const std::invalid_argument& e) {
    throw UsageError{e.what()};
  }
  for (const auto& [name, v] : options.method_options) {
    bool declared = false;
    for (const auto& o : method->options) declared = declared || o.name == name;
    if (!declared) {
      std::string owners;
      for (const auto& m : ptq::methods())
        for (const auto& o : m.options)
          if (o.name == name) owners += (owners.empty() ? "" : ", ") + m.name;
      throw UsageError{"--" + name + " is an option of " + owners + ", not of " + method->name};
    }
  }
  if (format_text.empty()) throw UsageError{"--format is required"};
  if (calib.empty() && method->needs_calibration)
    throw UsageError{"--calib is required by method " + method->name + " (rtn runs without)"};
  if (calib.empty() && options.bias_correction) throw UsageError{"--bias-correction needs --calib"};
  if (out.empty()) throw UsageError{"-o OUT.pt is required"};
  options.format = qcast::parse_format(format_text);
  // From here a signal stops the run at the next batch (before the outputs exist, so that none of
  // their temporary files can be left behind); restored on every way out.
  stop_signal = 0;
  auto previous_int = std::signal(SIGINT, on_stop_signal);
  auto previous_term = std::signal(SIGTERM, on_stop_signal);
  struct RestoreSignals {
    decltype(previous_int) i, t;
    ~RestoreSignals() {
      std::signal(SIGINT, i);
      std::signal(SIGTERM, t);
    }
  } restore{previous_int, previous_term};
  // Every output is checked against the others and the inputs, and gets its temporary file, before
  // any work; they are renamed into place together at the end (OutputSet).
  std::vector<qcast::detail::OutputSet::Output> wanted = {{"-o", out}};
  if (!export_path.empty()) wanted.push_back({"--export", export_path});
  if (!report_path.empty()) wanted.push_back({"--report", report_path});
  std::optional<qcast::detail::OutputSet> outputs;
  try {
    outputs.emplace(wanted, std::vector<std::string>{model_path, calib});
  } catch (const std::invalid_argument& e) {
    throw UsageError{e.what()};
  }

  const torch::jit::Module model = ptq::load_model(model_path);
  std::vector<ptq::Batch> batches;
  if (!calib.empty()) batches = ptq::load_calibration(calib, batch_size, samples);

  auto last_line = std::chrono::steady_clock::now() - std::chrono::hours(1);
  options.progress = [&](const ptq::Progress& p) {
    if (stop_signal) return false;
    if (quiet) return true;
    const auto now = std::chrono::steady_clock::now();
    const std::string eta = p.eta_s >= 0 ? ", ETA " + duration(p.eta_s) : "";
    if (p.phase == ptq::Progress::Phase::solve) {
      std::fprintf(stderr, "[%d/%d] %-40s solve, elapsed %s%s\n", p.layer, p.layers, p.name.c_str(),
                   duration(p.elapsed_s).c_str(), eta.c_str());
      last_line = now;
    } else if (now - last_line > std::chrono::seconds(5)) {
      std::fprintf(stderr, "[%d/%d] %-40s forward, batch %d/%d, elapsed %s%s\n", p.layer, p.layers, p.name.c_str(),
                   p.batch, p.batches, duration(p.elapsed_s).c_str(), eta.c_str());
      last_line = now;
    }
    return true;
  };
  ptq::Result r;
  try {
    r = ptq::quantize(model, batches, options);
  } catch (const ptq::Stopped&) {
    std::fprintf(stderr, "qcast quantize: stopped by %s; nothing was written\n",
                 stop_signal == SIGTERM ? "SIGTERM" : "SIGINT");
    return 130;
  } catch (const std::exception& e) {
    throw std::runtime_error(error_summary(e) + (calib.empty() ? "" : " [calibration data: " + calib + "]"));
  }
  std::size_t k = 0;
  outputs->write(k++, [&](std::ostream& f) { ptq::save_model(r.model, f); });
  if (!export_path.empty()) outputs->write(k++, [&](std::ostream& f) { qcast::write_qpack(f, r.packed); });
  if (!report_path.empty()) outputs->write(k++, [&](std::ostream& f) { f << r.report.json(); });
  if (stop_signal) {  // a signal while the outputs were written: none of them is moved into place
    std::fprintf(stderr, "qcast quantize: stopped by %s; nothing was written\n",
                 stop_signal == SIGTERM ? "SIGTERM" : "SIGINT");
    return 130;
  }
  outputs->commit();
  std::fputs(r.report.table().c_str(), stdout);
  return 0;
}

}  // namespace

int quantize_command(const std::vector<std::string>& args) {
  try {
    return run_quantize(args);
  } catch (const c10::Error& e) {  // LibTorch's own errors: the line that says what, no backtrace
    throw std::runtime_error(error_summary(e));
  }
}

}  // namespace qcast_cli
