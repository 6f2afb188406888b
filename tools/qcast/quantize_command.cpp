// qcast quantize: post-training quantization of a TorchScript model's weights. The methods, their
// one-line help and their options come from the engine's method registry.
#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <filesystem>
#include <cstdio>
#include <optional>
#include <set>
#include <string>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "command_line.hpp"
#include "qcast/detail/atomic_file.hpp"
#include "qcast/format_names.hpp"
#include "qcast/ptq/engine.hpp"
#include "error_text.hpp"       // src/ptq: LibTorch errors without backtraces
#include "shape_list_text.hpp"  // src/ptq: shapes as the engine writes them

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
    "                      [--layer-format PATTERN=F]... [--act-format F] [--layer-act-format PATTERN=F]...\n"
    "                      [--act-amax max|percentile[:P]|mse] [--smooth ALPHA|pow2] [--rotate hadamard[:B]]\n"
    "                      [--act-unfit error|float] [--search-format F,...] [--search-clip]\n"
    "                      [--search-act-format F,...]\n"
    "                      [--candidates F,...|float --budget BITS|--budget-mb MB\n"
    "                       [--sensitivity output|gain|gain-mse|e2e|e2e-mse]]\n"
    "                      [--accumulator-bits P [--accumulator-tile T]] [--act-bits N [--act-unsigned]]\n"
    "                      [--dist-init tcp://HOST:PORT --rank R --world-size N [--dist-timeout S]]\n"
    "                      [--device cpu|cuda[:N]] [--cache-mb MB]\n"
    "                      [--spill-dir DIR] [METHOD OPTIONS] [--export OUT.safetensors|OUT.qpack]\n"
    "                      [--report R.json|R.html]\n"
    "                      [--list [--json]] [--quiet]\n"
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
    "  --act-format F        also quantize activations: a qcast::cast (libqcast_ops.so) on the data\n"
    "                        input of every quantized layer, in the calibration's quantized stream\n"
    "                        and in the saved model. Block formats (mxfp8_e4m3, mxfp4, mxint8,\n"
    "                        int8@g32, ...) scale along the reduction axis at run time; per-tensor\n"
    "                        (int8, fp8_e4m3@tensor) and two-level (nvfp4) formats use a static amax\n"
    "                        measured on the float model's inputs of the layer; 'none': float\n"
    "  --layer-act-format P=F  activation format F (or none) for layers matching glob P; the first\n"
    "                        match wins over --act-format (repeatable)\n"
    "  --act-amax S          the static amax: max (default; the largest |x|), percentile[:P] (the\n"
    "                        P-th percentile of |x|, default 99.99) or mse (the clip with the least\n"
    "                        squared cast error over the calibration set)\n"
    "  --smooth ALPHA        SmoothQuant: each layer's input channel j divided by s_j =\n"
    "                        max|X_j|^ALPHA / max|W_j|^(1-ALPHA) (measured on the float model over the\n"
    "                        calibration set) and its weight's input channel multiplied by it; ALPHA\n"
    "                        in [0, 1], 0.5 is SmoothQuant's default; the float function is unchanged.\n"
    "                        The division is folded into a LayerNorm whose output only quantized\n"
    "                        linear layers read (pre-LN blocks; they share one s), else inserted as\n"
    "                        an aten::mul.\n"
    "                        --smooth pow2: LLM-FP4's per-channel activation exponent bias instead,\n"
    "                        s_j = 2^(floor(log2 max|X_j|) - floor(log2 max over channels)), which the\n"
    "                        weights absorb exactly\n"
    "  --rotate hadamard[:B] rotate each quantized layer's reduction dimension by the orthonormal\n"
    "                        block Walsh-Hadamard transform of size B (a power of two; default the\n"
    "                        layer's weight-format block): weights W·H offline, inputs H·x by a\n"
    "                        qcast::hadamard in the graph, so the float function is unchanged\n"
    "  --search-format F,... search each layer's weight format among these (LLM-FP4's search): every\n"
    "                        candidate is rounded to nearest and scored by the layer's output error\n"
    "                        on the calibration data, and the method runs with the best. fpN<rest>\n"
    "                        (N = 3..8) stands for every eXmY with X + Y = N - 1 and no specials:\n"
    "                        fp4@g32:scale=e8m0 is e1m2nosp@g32:scale=e8m0 and mxfp4\n"
    "  --search-clip         also search the clip ratio of each group's amax among 1, 0.95, ..., 0.6\n"
    "                        (of the static amax, for --search-act-format candidates)\n"
    "  --search-act-format F,...  the same for the activation formats of the layers --act-format\n"
    "                        quantizes: each candidate scored by ||W·(Q(X) - X)|| on the float model\n"
    "  --candidates F,...    mixed precision: each quantized layer gets one of these formats ('float'\n"
    "                        keeps its weight as it is), the assignment with the least summed\n"
    "                        sensitivity whose size fits the budget (exact; --format is then not\n"
    "                        needed, --layer-format pins layers). A first pass measures every layer\n"
    "                        with every candidate, a second quantizes with the choice\n"
    "  --budget BITS         the budget in bits per weight over the quantized layers, codes + scales\n"
    "                        as stored (e.g. 4.5)\n"
    "  --budget-mb MB        or in MiB over those layers\n"
    "  --sensitivity S       gain (default): the layer's squared relative output error on the float\n"
    "                        model's inputs (from the calibration statistics) times its gain to the\n"
    "                        model's output, read from one probe per layer: the KL divergence of the\n"
    "                        model's output (softmax over its last axis) with that layer alone\n"
    "                        quantized in its median candidate; gain-mse: the probe scored by the\n"
    "                        output's relative squared error (images, embeddings); output: the output\n"
    "                        error alone, no probe (cheapest); e2e, e2e-mse: every candidate probed\n"
    "                        (a forward pass per layer and candidate). docs/results.md compares them\n"
    "  --probe-batches N     with a probing sensitivity: the calibration batches each probe runs\n"
    "                        (default all)\n"
    "  --act-unfit error|float  a layer an activation format or rotation cannot apply to (a block\n"
    "                        that does not divide its reduction, e.g. a depthwise convolution's one\n"
    "                        channel): an error naming it (default), or the layer goes without it\n"
    "                        (the report lists them)\n"
    "  --device D            where the models run and the statistics are summed: cpu (default),\n"
    "                        cuda or cuda:N; the saved model is on the CPU\n"
    "  --cache-mb MB         activations kept in memory between stages (default: half the available\n"
    "                        memory); the rest goes to a temporary folder, removed at the end\n"
    "  --spill-dir DIR       where that temporary folder is made (default: $TMPDIR or /tmp)\n"
    "  --threaded-forward    run the model's stages on every intra-op thread: faster forward passes,\n"
    "                        but LibTorch's convolutions then give bits that depend on the thread count\n"
    "                        (by default they run on one thread and the result is the same for any)\n"
    "  --fastest-convolutions  let LibTorch pick each CPU convolution's kernel (oneDNN, NNPACK) by\n"
    "                        batch size and thread count: faster, but the result then depends on the\n"
    "                        batch size (by default every convolution runs the per-sample kernel)\n"
    "  --bias-correction     add each quantized layer's mean output shift on the calibration set to\n"
    "                        its bias (linear and convolution layers with a bias; any method)\n"    "  --accumulator-bits P  AXE: keep integer weights, during the method's walk, within the codes that\n"
    "                        make every dot product of a layer fit a P-bit accumulator for any input in\n"
    "                        its integer range (rtn, gptq, gpfq, ed; integer weight formats); checked\n"
    "                        from the codes afterwards, each layer's need in the report\n"
    "  --accumulator-tile T  multi-stage accumulation: tiles of T products summed in P bits, then added\n"
    "                        wider (default: a whole row; with block formats, one block)\n"
    "  --act-bits N          the integer width of the layers' inputs where no integer --act-format gives\n"
    "                        it; alone, the report gives each layer's accumulator need without a bound\n"
    "  --act-unsigned        with --act-bits: inputs in [0, 2^N - 1] (default signed, [-2^(N-1), 2^(N-1) - 1])\n"
    "  --dist-init tcp://HOST:PORT  run as one rank of a process group (c10d, Gloo over TCP): rank 0\n"
    "                        hosts its store at HOST:PORT; every rank takes a contiguous share of\n"
    "                        the calibration batches, the statistics are summed over the ranks before\n"
    "                        each layer's solve, and rank 0 alone writes the outputs. Without it,\n"
    "                        torchrun's RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT are read\n"
    "  --rank R, --world-size N  this rank and the number of ranks (with --dist-init)\n"
    "  --dist-timeout S      a rank waiting longer than S seconds on the others fails, naming the step\n"
    "                        and where the others were (default 600)\n"
    "  -o, --output OUT.pt   the quantized model (written to a temporary file, then renamed)\n"
    "  --export OUT.safetensors\n"
    "                        also write the quantized weights as codes + scales with PyTorch's\n"
    "                        low-precision dtypes, the model's other tensors, and beside it\n"
    "                        OUT.quantization_config.json (docs/safetensors.md)\n"
    "  --export OUT.qpack    or as qcast's own .qpack file (docs/qpack.md)\n"
    "  --report R.json       also write the report as JSON: versions, options, per-layer errors and\n"
    "                        bytes of the float and the quantized weights (docs/ptq.md)\n"
    "  --report R.html       or as one self-contained HTML page with charts: error and bytes per layer,\n"
    "                        and for mixed precision each candidate's error and the budget curve\n"
    "  --list                print the model's weight layers and exit\n"
    "  --json                with --list: one JSON array, an object per layer\n"
    "  --quiet               no progress lines on stderr\n"
    "\n"
    "Ctrl-C (SIGINT) or SIGTERM stops the run at the next batch: nothing is written, temporary files\n"
    "are removed, exit code 130.\n";

std::string help_text() {
  std::string h = kUsage;
  h += "\nmethods:\n";
  for (const auto& m : ptq::methods()) {
    h += fmt::format("  {:<8} {}\n", m.name, m.help);
    for (const auto& o : m.options) {
      std::string flag = "--" + o.name;
      if (o.kind == ptq::MethodOption::Kind::choice) {
        flag += " ";
        for (std::size_t i = 0; i < o.choices.size(); ++i) flag += (i ? "|" : "") + o.choices[i];
      } else if (o.kind != ptq::MethodOption::Kind::flag) {
        flag += " X";
      }
      h += fmt::format("      {:<20} {} (default {})\n", flag, o.help, o.default_value);
    }
  }
  return h;
}

std::string duration(double s) {
  if (s < 120) return fmt::format("{:.0f}s", s);
  return fmt::format("{:.0f}m{:02.0f}s", std::floor(s / 60), std::fmod(s, 60));
}

// quantize --list: the model's weight layers as a table or (--json) a JSON array.
void print_layers(const std::vector<ptq::LayerInfo>& layers, bool json) {
  if (json) {
    nlohmann::ordered_json all = nlohmann::ordered_json::array();
    for (const auto& l : layers) {
      nlohmann::ordered_json j;
      j["name"] = l.name;
      j["op"] = l.op;
      j["shape"] = l.shape;
      j["uses"] = l.uses;
      j["quantizable"] = l.unsupported.empty();
      j["float_reason"] = l.unsupported.empty() ? nlohmann::ordered_json(nullptr) : nlohmann::ordered_json(l.unsupported);
      all.push_back(j);
    }
    fmt::print("{}\n", all.dump(2));
    return;
  }
  fmt::print("{:<40} {:<16} {:<20} {}\n", "layer", "op", "shape", "status");
  for (const auto& l : layers) {
    const std::string status = !l.unsupported.empty() ? "float: " + l.unsupported
                               : l.uses > 1          ? fmt::format("quantizable ({} uses)", l.uses)
                                                     : std::string("quantizable");
    fmt::print("{:<40} {:<16} {:<20} {}\n", l.name, l.op, ptq::detail::shape_list_text(l.shape), status);
  }
}

// PATTERN=FORMAT of --layer-format and --layer-act-format, split at the first '='.
std::pair<std::string, std::string> pattern_and_format(const std::string& flag, const std::string& v) {
  const auto eq = v.find('=');
  if (eq == std::string::npos || eq == 0) throw UsageError{flag + " needs PATTERN=FORMAT, got " + shown(v)};
  return {v.substr(0, eq), v.substr(eq + 1)};
}

// Comma-separated formats (--search-format, --search-act-format, --candidates); fpN<rest> (N = 3..8)
// expands to every eXmY with X + Y = N - 1, X, Y >= 1, without special values, each with <rest>
// (granularity and keys); "float" is std::nullopt where float_allowed.
std::vector<std::optional<qcast::Format>> format_list(const std::string& flag, const std::string& text, bool float_allowed) {
  std::vector<std::optional<qcast::Format>> out;
  std::size_t from = 0;
  while (from <= text.size()) {
    const std::size_t comma = std::min(text.find(',', from), text.size());
    const std::string item = text.substr(from, comma - from);
    from = comma + 1;
    if (item.empty()) throw UsageError{flag + " has an empty entry: " + shown(text)};
    if (float_allowed && item == "float") {
      out.emplace_back(std::nullopt);
      continue;
    }
    const bool family = item.size() >= 3 && item.compare(0, 2, "fp") == 0 && item[2] >= '3' && item[2] <= '8' &&
                        (item.size() == 3 || item[3] == '@' || item[3] == ':');
    if (!family) {
      out.emplace_back(format_option(item));
      continue;
    }
    const int n = item[2] - '0';
    for (int x = 1; x <= n - 2; ++x)
      out.emplace_back(format_option("e" + std::to_string(x) + "m" + std::to_string(n - 1 - x) + "nosp" + item.substr(3)));
  }
  return out;
}

std::vector<qcast::Format> search_format_list(const std::string& flag, const std::string& text) {
  std::vector<qcast::Format> out;
  for (const auto& f : format_list(flag, text, false)) out.push_back(*f);
  return out;
}

std::atomic<int> stop_signal{0};
extern "C" void on_stop_signal(int sig) { stop_signal = sig; }

int run_quantize(const std::vector<std::string>& args) {
  std::string model_path, format_text, calib, out, export_path, report_path;
  std::string samples_text, batch_size_text, cache_mb_text, accumulator_bits_text, accumulator_tile_text, act_bits_text;
  bool act_unsigned = false;
  std::string dist_init, rank_text, world_size_text, dist_timeout_text;
  std::vector<std::string> layer_format_texts, positionals, layer_act_format_texts;
  std::string act_format_text, act_amax_text, act_unfit_text, rotate_text, smooth_text, search_format_text;
  bool search_clip = false;
  std::string search_act_format_text, candidates_text, budget_text, budget_mb_text, sensitivity_text, probe_batches_text;
  long long samples = -1, batch_size = 16;
  bool list = false, list_json = false, quiet = false;
  ptq::Options options;
  CLI::App app{"", "qcast quantize"};
  prepare_command_app(app);
  app.add_option("--format", format_text);
  app.add_option("--method", options.method);
  app.add_option("--calib", calib);
  app.add_option("--samples", samples_text);
  app.add_option("--batch-size", batch_size_text);
  app.add_option("--exclude", options.exclude);
  app.add_option("--layer-format", layer_format_texts);
  app.add_option("--act-format", act_format_text);
  app.add_option("--layer-act-format", layer_act_format_texts);
  app.add_option("--act-amax", act_amax_text);
  app.add_option("--act-unfit", act_unfit_text);
  app.add_option("--rotate", rotate_text);
  app.add_option("--smooth", smooth_text);
  app.add_option("--search-format", search_format_text);
  app.add_flag("--search-clip", search_clip);
  app.add_option("--search-act-format", search_act_format_text);
  app.add_option("--candidates", candidates_text);
  app.add_option("--budget", budget_text);
  app.add_option("--budget-mb", budget_mb_text);
  app.add_option("--sensitivity", sensitivity_text);
  app.add_option("--probe-batches", probe_batches_text);
  app.add_option("--device", options.device);
  app.add_option("--cache-mb", cache_mb_text);
  app.add_option("--spill-dir", options.spill_dir);
  app.add_flag("--threaded-forward", options.threaded_forward);
  bool fastest_convolutions = false;
  app.add_flag("--fastest-convolutions", fastest_convolutions);
  app.add_flag("--bias-correction", options.bias_correction);
  app.add_option("--accumulator-bits", accumulator_bits_text);
  app.add_option("--accumulator-tile", accumulator_tile_text);
  app.add_option("--act-bits", act_bits_text);
  app.add_flag("--act-unsigned", act_unsigned);
  app.add_option("--dist-init", dist_init);
  app.add_option("--rank", rank_text);
  app.add_option("--world-size", world_size_text);
  app.add_option("--dist-timeout", dist_timeout_text);
  app.add_option("-o,--output", out);
  app.add_option("--export", export_path);
  app.add_option("--report", report_path);
  app.add_flag("--list", list);
  app.add_flag("--json", list_json);
  app.add_flag("--quiet", quiet);
  // The options of every registered method (a name two methods share is one flag); which method
  // may take them is checked once the method is known.
  std::map<std::string, std::string> method_values;
  std::map<std::string, bool> method_flags;
  std::set<std::string> method_option_names;
  for (const auto& m : ptq::methods())
    for (const auto& o : m.options) {
      if (!method_option_names.insert(o.name).second) continue;
      if (o.kind == ptq::MethodOption::Kind::flag) app.add_flag("--" + o.name, method_flags[o.name]);
      else app.add_option("--" + o.name, method_values[o.name]);
    }
  app.add_option("model", positionals);
  if (!parse_command_line(app, args, help_text())) return exit_ok;
  for (const auto& name : method_option_names) {
    if (app.count("--" + name) == 0) continue;
    const auto flag = method_flags.find(name);
    options.method_options[name] = flag != method_flags.end() ? (flag->second ? "true" : "false") : method_values[name];
  }
  if (positionals.size() > 1)
    throw UsageError{"more than one model given (" + shown(positionals[0]) + ", " + shown(positionals[1]) + ")"};
  if (positionals.empty()) throw UsageError{"no MODEL.pt given"};
  model_path = positionals[0];
  options.per_sample_convolutions = !fastest_convolutions;
  if (!samples_text.empty()) samples = parse_integer("--samples", samples_text, 1, std::int64_t(1) << 40);
  if (!batch_size_text.empty()) batch_size = parse_integer("--batch-size", batch_size_text, 1, std::int64_t(1) << 20);
  if (!cache_mb_text.empty()) options.cache_mb = parse_integer("--cache-mb", cache_mb_text, 0, std::int64_t(1) << 30);
  if (!accumulator_bits_text.empty()) options.accumulator.bits = int(parse_integer("--accumulator-bits", accumulator_bits_text, 2, 62));
  if (!accumulator_tile_text.empty()) {
    if (accumulator_bits_text.empty()) throw UsageError{"--accumulator-tile tiles a bounded accumulator; give --accumulator-bits too"};
    options.accumulator.tile = parse_integer("--accumulator-tile", accumulator_tile_text, 1, std::int64_t(1) << 30);
  }
  if (!act_bits_text.empty()) options.accumulator.input_bits = int(parse_integer("--act-bits", act_bits_text, 1, 24));
  if (act_unsigned && act_bits_text.empty()) throw UsageError{"--act-unsigned describes --act-bits; give --act-bits N too"};
  options.accumulator.input_signed = !act_unsigned;
  if (!dist_init.empty()) {
    if (dist_init.rfind("tcp://", 0) != 0 || dist_init.find(':', 6) == std::string::npos)
      throw UsageError{"--dist-init needs tcp://HOST:PORT, got " + shown(dist_init)};
    if (rank_text.empty() || world_size_text.empty()) throw UsageError{"--dist-init needs --rank R and --world-size N"};
    const std::size_t colon = dist_init.rfind(':');
    options.distributed.host = dist_init.substr(6, colon - 6);
    options.distributed.port = int(parse_integer("--dist-init's port", dist_init.substr(colon + 1), 1, 65535));
    options.distributed.world_size = int(parse_integer("--world-size", world_size_text, 1, 1 << 16));
    options.distributed.rank = int(parse_integer("--rank", rank_text, 0, options.distributed.world_size - 1));
  } else if (!rank_text.empty() || !world_size_text.empty()) {
    throw UsageError{"--rank and --world-size go with --dist-init tcp://HOST:PORT"};
  } else {
    try {
      if (const auto env = ptq::distributed_from_environment()) options.distributed = *env;
    } catch (const std::invalid_argument& e) {
      throw UsageError{e.what()};
    }
  }
  if (!dist_timeout_text.empty())
    options.distributed.timeout_s = double(parse_integer("--dist-timeout", dist_timeout_text, 1, 7 * 24 * 3600));
  // Rank 0 writes the outputs; the others check their paths' syntax only, and write nothing.
  const bool writes_outputs = options.distributed.rank == 0;
  for (const auto& v : layer_format_texts) {
    const auto [pattern, format] = pattern_and_format("--layer-format", v);
    options.layer_formats.push_back({pattern, format_option(format)});
  }
  // Activation formats: a format name or none.
  auto act_format_option = [](const std::string& text) -> std::optional<qcast::Format> {
    if (text == "none") return std::nullopt;
    return format_option(text);
  };
  if (!act_format_text.empty()) options.activations.format = act_format_option(act_format_text);
  for (const auto& v : layer_act_format_texts) {
    const auto [pattern, format] = pattern_and_format("--layer-act-format", v);
    options.activations.layer_formats.push_back({pattern, act_format_option(format)});
  }
  if (!act_amax_text.empty()) {
    using Amax = ptq::ActivationOptions::Amax;
    if (act_amax_text == "max") {
      options.activations.amax = Amax::max;
    } else if (act_amax_text == "mse") {
      options.activations.amax = Amax::mse;
    } else if (act_amax_text.rfind("percentile", 0) == 0) {
      options.activations.amax = Amax::percentile;
      if (act_amax_text.size() > 10) {
        if (act_amax_text[10] != ':') throw UsageError{"--act-amax: valid values are max, percentile[:P], mse; got " + shown(act_amax_text)};
        const double p = parse_number("--act-amax percentile", act_amax_text.substr(11));
        if (!(p > 0 && p <= 100)) throw UsageError{"--act-amax percentile: P must be in (0, 100], got " + shown(act_amax_text.substr(11))};
        options.activations.percentile = p;
      }
    } else {
      throw UsageError{"--act-amax: valid values are max, percentile[:P], mse; got " + shown(act_amax_text)};
    }
  }
  if (!act_unfit_text.empty()) {
    if (act_unfit_text != "error" && act_unfit_text != "float")
      throw UsageError{"--act-unfit: valid values are error and float; got " + shown(act_unfit_text)};
    options.activations.unfit_float = act_unfit_text == "float";
  }
  if (!rotate_text.empty()) {
    if (rotate_text == "hadamard") {
      options.hadamard_block = -1;
    } else if (rotate_text.rfind("hadamard:", 0) == 0) {
      options.hadamard_block = parse_integer("--rotate hadamard:B", rotate_text.substr(9), 1, 1 << 16);
      if (options.hadamard_block & (options.hadamard_block - 1))
        throw UsageError{"--rotate hadamard:B needs a power of two, got " + shown(rotate_text.substr(9))};
    } else {
      throw UsageError{"--rotate: valid values are hadamard and hadamard:B; got " + shown(rotate_text)};
    }
  }
  if (!smooth_text.empty()) {
    if (smooth_text == "pow2") {
      options.smooth_pow2 = true;
    } else {
      const double a = parse_number("--smooth", smooth_text);
      if (!(a >= 0 && a <= 1)) throw UsageError{"--smooth needs ALPHA in [0, 1] or pow2, got " + shown(smooth_text)};
      options.smooth_alpha = a;
    }
    if (calib.empty()) throw UsageError{"--smooth needs --calib (the input channels' ranges are measured on it)"};
  }
  if (!search_format_text.empty()) options.search_formats = search_format_list("--search-format", search_format_text);
  if (!search_act_format_text.empty()) {
    options.search_act_formats = search_format_list("--search-act-format", search_act_format_text);
    if (calib.empty()) throw UsageError{"--search-act-format needs --calib (the candidates are scored on it)"};
    if (!options.activations.any())
      throw UsageError{"--search-act-format searches the formats of quantized activations: give --act-format too"};
  }
  if (search_clip)
    for (int i = 0; i <= 8; ++i) options.search_clips.push_back(1.0 - 0.05 * i);
  if ((search_clip || !search_format_text.empty()) && calib.empty())
    throw UsageError{"--search-format and --search-clip need --calib (the candidates are scored on it)"};
  if (!options.activations.any() && !act_amax_text.empty())
    throw UsageError{"--act-amax applies to activation formats (--act-format, --layer-act-format)"};
  if (!options.activations.any() && options.hadamard_block == 0 && !act_unfit_text.empty())
    throw UsageError{"--act-unfit applies to activation formats and rotations (--act-format, --rotate)"};
  if (!candidates_text.empty()) {
    options.mixed.candidates = format_list("--candidates", candidates_text, true);
    if (calib.empty()) throw UsageError{"--candidates needs --calib (each layer's sensitivity is measured on it)"};
    if (budget_text.empty() == budget_mb_text.empty())
      throw UsageError{"--candidates needs one budget: --budget BITS (per weight) or --budget-mb MB"};
  } else if (!budget_text.empty() || !budget_mb_text.empty() || !sensitivity_text.empty() || !probe_batches_text.empty()) {
    throw UsageError{"--budget, --budget-mb, --sensitivity and --probe-batches apply to mixed precision (--candidates)"};
  }
  if (!budget_text.empty()) options.mixed.budget_bits = budget_bits_option(budget_text);
  if (!budget_mb_text.empty()) options.mixed.budget_bytes = budget_mb_option(budget_mb_text);
  if (!sensitivity_text.empty()) {
    try {
      options.mixed.sensitivity = ptq::sensitivity_from_name(sensitivity_text);
    } catch (const std::invalid_argument& e) {
      throw UsageError{std::string("--sensitivity: ") + e.what()};
    }
  }
  if (!probe_batches_text.empty()) {
    if (!options.mixed.probes()) throw UsageError{"--probe-batches applies to --sensitivity e2e, e2e-mse, gain and gain-mse"};
    options.mixed.probe_batches = parse_integer("--probe-batches", probe_batches_text, 1, std::int64_t(1) << 30);
  }
  if (list_json && !list) throw UsageError{"--json applies to --list (the report's JSON is --report R.json)"};
  if (list) {
    print_layers(ptq::list_layers(ptq::load_model(model_path)), list_json);
    return exit_ok;
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
  if (format_text.empty() && !options.mixed.any()) throw UsageError{"--format is required (or --candidates)"};
  if (calib.empty() && method->needs_calibration)
    throw UsageError{"--calib is required by method " + method->name + " (rtn runs without)"};
  if (calib.empty() && options.bias_correction) throw UsageError{"--bias-correction needs --calib"};
  if (out.empty()) throw UsageError{"-o OUT.pt is required"};
  if (!format_text.empty()) options.format = format_option(format_text);
  else  // mixed precision assigns every layer a candidate; the first quantized one stands in until then
    for (const auto& c : options.mixed.candidates)
      if (c) {
        options.format = *c;
        break;
      }
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
  // --export: by its extension, a safetensors checkpoint (with its quantization config beside it,
  // STEM.quantization_config.json) or a .qpack file.
  const std::filesystem::path export_file(export_path);
  const bool export_safetensors = export_file.extension() == ".safetensors";
  if (!export_path.empty() && !export_safetensors && export_file.extension() != ".qpack")
    throw UsageError{"--export needs a path ending in .safetensors or .qpack, got " + shown(export_path)};
  if (!export_path.empty()) wanted.push_back({"--export", export_path});
  if (export_safetensors)
    wanted.push_back({"--export (its quantization config)",
                      std::filesystem::path(export_file).replace_extension(".quantization_config.json").string()});
  if (!report_path.empty()) wanted.push_back({"--report", report_path});
  const std::string report_extension = std::filesystem::path(report_path).extension().string();
  const bool report_html = report_extension == ".html" || report_extension == ".htm";
  std::optional<qcast::detail::OutputSet> outputs;
  try {
    if (writes_outputs) outputs.emplace(wanted, std::vector<std::string>{model_path, calib});
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
    const std::string pass = p.pass.empty() ? "" : p.pass + ": ";
    if (p.phase == ptq::Progress::Phase::activation_statistics) {
      if (now - last_line > std::chrono::seconds(5) || p.batch == 1) {
        fmt::print(stderr, "{}{}, batch {}/{}, elapsed {}\n", pass, p.name, p.batch, p.batches, duration(p.elapsed_s));
        last_line = now;
      }
    } else if (p.phase == ptq::Progress::Phase::train) {
      if (now - last_line > std::chrono::seconds(5) || p.batch == p.batches) {
        fmt::print(stderr, "{}[{}/{}] {:<40} train, iteration {}/{}, loss {:.4g}, elapsed {}\n", pass, p.layer, p.layers, p.name,
                   p.batch, p.batches, p.loss, duration(p.elapsed_s));
        last_line = now;
      }
    } else if (p.phase == ptq::Progress::Phase::solve) {
      fmt::print(stderr, "{}[{}/{}] {:<40} solve, elapsed {}{}\n", pass, p.layer, p.layers, p.name, duration(p.elapsed_s), eta);
      last_line = now;
    } else if (now - last_line > std::chrono::seconds(5)) {
      fmt::print(stderr, "{}[{}/{}] {:<40} forward, batch {}/{}, elapsed {}{}\n", pass, p.layer, p.layers, p.name, p.batch,
                 p.batches, duration(p.elapsed_s), eta);
      last_line = now;
    }
    return true;
  };
  auto stopped = [&] {
    fmt::print(stderr, "qcast quantize: stopped by {}; nothing was written\n", stop_signal == SIGTERM ? "SIGTERM" : "SIGINT");
    return exit_stopped;
  };
  ptq::Result r;
  try {
    r = ptq::quantize(model, batches, options);
  } catch (const ptq::Stopped&) {
    return stopped();
  } catch (const std::exception& e) {
    throw std::runtime_error(error_summary(e) + (calib.empty() ? "" : " [calibration data: " + calib + "]"));
  }
  // The report's options: the engine's, then what only the command line knows.
  r.report.options.insert(r.report.options.begin(), {{"model", model_path}});
  if (!calib.empty()) r.report.options.emplace_back("calib", calib);
  if (samples > 0) r.report.options.emplace_back("samples", std::to_string(samples));
  r.report.options.emplace_back("batch-size", std::to_string(batch_size));
  if (!writes_outputs) {
    fmt::print("rank {} of {}: done; rank 0 writes the outputs\n", options.distributed.rank, options.distributed.world_size);
    return exit_ok;
  }
  std::size_t k = 0;
  outputs->write(k++, [&](std::ostream& f) { ptq::save_model(r.model, f); });
  if (export_safetensors) {
    outputs->write(k++, [&](std::ostream& f) { qcast::write_safetensors(f, ptq::export_safetensors(r)); });
    outputs->write(k++, [&](std::ostream& f) { f << ptq::quantization_config(r, export_file.filename().string()); });
  } else if (!export_path.empty()) {
    outputs->write(k++, [&](std::ostream& f) { qcast::write_qpack(f, r.packed); });
  }
  if (!report_path.empty())
    outputs->write(k++, [&](std::ostream& f) { f << (report_html ? r.report.html() : r.report.json()); });
  if (stop_signal) return stopped();  // a signal while the outputs were written: none is moved into place
  outputs->commit();
  fmt::print("{}", r.report.table());
  return exit_ok;
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
