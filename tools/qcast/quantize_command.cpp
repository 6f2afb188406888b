// qcast quantize: post-training quantization of a TorchScript model's weights.
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>

#include "commands.hpp"
#include "qcast/detail/atomic_file.hpp"
#include "qcast/format_names.hpp"
#include "qcast/ptq/engine.hpp"

namespace qcast_cli {
namespace {

const char* kHelp =
    "usage: qcast quantize MODEL.pt --format F --method rtn|gptq|ed --calib DATA -o OUT.pt\n"
    "                      [--samples N] [--batch-size B] [--exclude PATTERN]...\n"
    "                      [--layer-format PATTERN=F]... [--act-order] [--export OUT.qpack]\n"
    "                      [--report R.json] [--list] [--quiet]\n"
    "\n"
    "Quantizes the weights of every linear, convolution (1-D/2-D, grouped, depthwise) and\n"
    "matmul/mm/addmm/bmm with a parameter weight of a TorchScript model, layer by layer in execution\n"
    "order, and writes the model with its weights replaced by their quantized values (it loads in any\n"
    "LibTorch or PyTorch). Blocks of block-scaled formats run along each weight's reduction dimension\n"
    "(a convolution's in_channels x kh x kw, OIHW order). Prints a per-layer table; docs/ptq.md has more.\n"
    "\n"
    "  --format F            weight format ('qcast formats' lists the named ones)\n"
    "  --method M            rtn (round to nearest), gptq, or ed (Error Diffusion; default)\n"
    "  --calib DATA          calibration inputs: a file saved by torch.save holding a tensor (or a\n"
    "                        tuple of tensors, one per model input) whose first dimension counts\n"
    "                        samples, or a folder of .npy files (float32/float16, first dimension =\n"
    "                        samples, read in name order)\n"
    "  --samples N           use the first N calibration samples (default: all)\n"
    "  --batch-size B        samples per forward pass (default 16)\n"
    "  --exclude PATTERN     leave layers whose name matches the glob in float (repeatable)\n"
    "  --layer-format P=F    format F for layers matching glob P; the first match wins (repeatable)\n"
    "  --act-order           GPTQ: quantize columns by decreasing input energy (static block scales)\n"
    "  -o, --output OUT.pt   the quantized model (written to a temporary file, then renamed)\n"
    "  --export OUT.qpack    also write codes + scales + format per layer (docs/qpack.md)\n"
    "  --report R.json       also write the per-layer report as JSON\n"
    "  --list                print the model's weight layers and exit\n"
    "  --quiet               no progress lines on stderr\n";

void write_text(const std::string& path, const std::string& text) {
  qcast::detail::write_file_atomically(path, path, [&](std::ofstream& f) { f << text; });
}

std::string duration(double s) {
  char b[32];
  if (s < 120) std::snprintf(b, sizeof b, "%.0fs", s);
  else std::snprintf(b, sizeof b, "%.0fm%02.0fs", std::floor(s / 60), std::fmod(s, 60));
  return b;
}

}  // namespace

int quantize_command(const std::vector<std::string>& args) {
  namespace fs = std::filesystem;
  namespace ptq = qcast::ptq;
  std::string model_path, format_text, method_text = "ed", calib, out, export_path, report_path;
  long long samples = -1, batch_size = 16;
  bool list = false, quiet = false;
  ptq::Options options;
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    auto value = [&]() -> const std::string& { return option_value(args, i); };
    if (a == "--help" || a == "-h") {
      std::fputs(kHelp, stdout);
      return 0;
    } else if (a == "--format") format_text = value();
    else if (a == "--method") method_text = value();
    else if (a == "--calib") calib = value();
    else if (a == "--samples") samples = parse_integer(a, value());
    else if (a == "--batch-size") batch_size = parse_integer(a, value());
    else if (a == "--exclude") options.exclude.push_back(value());
    else if (a == "--layer-format") {
      const std::string v = value();
      const auto eq = v.find('=');
      if (eq == std::string::npos || eq == 0) throw UsageError{"--layer-format needs PATTERN=FORMAT, got '" + v + "'"};
      options.layer_formats.push_back({v.substr(0, eq), qcast::parse_format(v.substr(eq + 1))});
    } else if (a == "--act-order") options.act_order = true;
    else if (a == "-o" || a == "--output") out = value();
    else if (a == "--export") export_path = value();
    else if (a == "--report") report_path = value();
    else if (a == "--list") list = true;
    else if (a == "--quiet") quiet = true;
    else if (a.size() > 1 && a[0] == '-') throw UsageError{"unknown option '" + a + "'"};
    else if (model_path.empty()) model_path = a;
    else throw UsageError{"more than one model given ('" + model_path + "', '" + a + "')"};
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
  if (format_text.empty()) throw UsageError{"--format is required"};
  if (calib.empty()) throw UsageError{"--calib is required"};
  if (out.empty()) throw UsageError{"-o OUT.pt is required"};
  if (batch_size < 1) throw UsageError{"--batch-size must be at least 1"};
  options.format = qcast::parse_format(format_text);
  try {
    options.method = ptq::parse_method(method_text);
  } catch (const std::invalid_argument& e) {
    throw UsageError{e.what()};
  }
  std::error_code ec;
  for (const std::string* p : {&out, &export_path, &report_path})
    if (!p->empty() && fs::exists(*p, ec) && (fs::equivalent(*p, model_path, ec) || fs::equivalent(*p, calib, ec)))
      throw UsageError{"the output " + *p + " is an input; choose another path"};

  const torch::jit::Module model = ptq::load_model(model_path);
  const auto batches = ptq::load_calibration(calib, batch_size, samples);
  if (!quiet)
    options.progress = [](const ptq::Progress& p) {
      std::fprintf(stderr, "[%d/%d] %-40s elapsed %s%s\n", p.layer, p.layers, p.name.c_str(), duration(p.elapsed_s).c_str(),
                   p.eta_s >= 0 ? (", ETA " + duration(p.eta_s)).c_str() : "");
    };
  const ptq::Result r = ptq::quantize(model, batches, options);
  ptq::save_model(r.model, out, model_path);
  if (!export_path.empty()) qcast::write_qpack(export_path, r.packed);
  if (!report_path.empty()) write_text(report_path, r.report.json());
  std::fputs(r.report.table().c_str(), stdout);
  return 0;
}

}  // namespace qcast_cli
