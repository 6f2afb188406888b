// The PTQ driver: for each weight layer in execution order, capture its inputs on the float model
// (X) and on the partly quantized copy (X̂) batch by batch, reduce them to Gram matrices, quantize the
// weight with the chosen method and write it into the copy before the next layer is captured.
// Memory is bounded by one layer's activations for one batch plus its Gram matrices.
#include "qcast/ptq/engine.hpp"

#include <ATen/ATen.h>
#include <torch/csrc/jit/serialization/import.h>
#include <torch/csrc/jit/serialization/pickle.h>
#include <c10/core/GradMode.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fnmatch.h>
#include <fstream>
#include <iterator>
#include <sstream>
#include <stdexcept>

#include "model_walk.hpp"
#include "qcast/format_names.hpp"
#include "qcast/npy.hpp"
#include "solvers.hpp"

namespace qcast::ptq {

const char* method_name(Method m) { return m == Method::rtn ? "rtn" : m == Method::gptq ? "gptq" : "ed"; }

Method parse_method(const std::string& name) {
  if (name == "rtn") return Method::rtn;
  if (name == "gptq") return Method::gptq;
  if (name == "ed") return Method::ed;
  throw std::invalid_argument("unknown method '" + name + "'; valid methods: rtn, gptq, ed");
}

namespace {

using detail::SiteKind;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

bool matches(const std::string& pattern, const std::string& name) {
  return fnmatch(pattern.c_str(), name.c_str(), 0) == 0;
}

std::vector<std::int64_t> int_list(const c10::IValue& v, std::size_t n, const char* what) {
  std::vector<std::int64_t> r;
  if (v.isIntList()) r = v.toIntVector();
  else if (v.isInt()) r.assign(n, v.toInt());
  else throw std::runtime_error(std::string("convolution ") + what + " is not a list of integers");
  if (r.size() == 1 && n > 1) r.assign(n, r[0]);
  if (r.size() != n) throw std::runtime_error(std::string("convolution ") + what + " has the wrong length");
  return r;
}

// The activations of one site on both streams (x: float model, xq: quantized model) as pairs of
// chunks [groups, cols, tokens] (cols along the weight's reduction dimension), passed to sink(x, x̂)
// one pair at a time so that an unfolded convolution input never exists whole.
template <class Sink>
void for_each_input_chunk(const detail::Site& site, const std::vector<c10::IValue>& in,
                          const std::vector<c10::IValue>& in_q, const at::Tensor& weight, std::int64_t cols,
                          Sink&& sink) {
  at::Tensor x = in.at(std::size_t(site.data_input)).toTensor();
  at::Tensor xq = in_q.at(std::size_t(site.data_input)).toTensor();
  switch (site.kind) {
    case SiteKind::linear:
    case SiteKind::right:
      sink(x.reshape({-1, cols}).t().unsqueeze(0), xq.reshape({-1, cols}).t().unsqueeze(0));
      return;
    case SiteKind::left:
      sink(x.transpose(-1, -2).reshape({-1, cols}).t().unsqueeze(0),
           xq.transpose(-1, -2).reshape({-1, cols}).t().unsqueeze(0));
      return;
    case SiteKind::bmm_right:  // x [b, M, in]
      sink(x.transpose(1, 2), xq.transpose(1, 2));
      return;
    case SiteKind::bmm_left:  // x [b, in, N]
      sink(x, xq);
      return;
    case SiteKind::conv: break;
  }
  // Convolution: unfold (im2col) so that each output is a weight row times a column of cols values in
  // (in_channel, kh, kw) order, which is OIHW order of the weight. The arguments (stride, padding, ...)
  // are the same in both streams.
  const bool is_1d = weight.dim() == 3;
  const std::size_t nd = is_1d ? 1 : 2;
  const bool full = site.op == "aten::_convolution";
  std::vector<std::int64_t> stride = int_list(in.at(3), nd, "stride");
  std::vector<std::int64_t> dilation = int_list(in.at(5), nd, "dilation");
  const std::int64_t groups = in.at(full ? 8 : 6).toInt();
  std::vector<std::int64_t> kernel(weight.sizes().begin() + 2, weight.sizes().end());
  std::vector<std::int64_t> padding;
  if (in.at(4).isString()) {  // conv2d(..., padding="same" | "valid")
    const std::string mode = in.at(4).toStringRef();
    padding.assign(nd, 0);
    if (mode == "same") {
      for (std::size_t d = 0; d < nd; ++d) {
        const std::int64_t total = dilation[d] * (kernel[d] - 1);
        if (total % 2) throw std::runtime_error("padding='same' with an even kernel is not supported");
        padding[d] = total / 2;
      }
    }
  } else {
    padding = int_list(in.at(4), nd, "padding");
  }
  if (x.dim() != std::int64_t(nd) + 2) {  // unbatched input
    x = x.unsqueeze(0);
    xq = xq.unsqueeze(0);
  }
  if (is_1d) {
    x = x.unsqueeze(2);
    xq = xq.unsqueeze(2);
    kernel.insert(kernel.begin(), 1);
    stride.insert(stride.begin(), 1);
    dilation.insert(dilation.begin(), 1);
    padding.insert(padding.begin(), 0);
  }
  if (x.sizes() != xq.sizes())
    throw std::runtime_error("the float and the quantized model gave this layer inputs of different shapes");
  auto unfold = [&](const at::Tensor& t, std::int64_t i) {  // [groups, cols, L]
    return at::im2col(t.narrow(0, i, 1), kernel, dilation, padding, stride).reshape({groups, cols, -1});
  };
  for (std::int64_t i = 0; i < x.size(0); ++i) sink(unfold(x, i), unfold(xq, i));
}

at::Tensor weight_matrix(const at::Tensor& p, WeightLayout layout, std::int64_t cols) {
  if (layout == WeightLayout::rows) return p.reshape({-1, cols});
  return p.transpose(-1, -2).reshape({-1, cols});
}

std::int64_t reduction_size(const detail::WalkLayer& l, const at::Tensor& p) {
  if (l.layout == WeightLayout::transposed) return p.size(-2);
  if (l.sites.front().kind == SiteKind::conv) return p.numel() / p.size(0);
  return p.size(-1);
}

at::Tensor parameter_of(const torch::jit::Module& m, const std::string& name) {
  for (const auto& p : m.named_parameters(true))
    if (p.name == name) return p.value;
  throw std::logic_error("qcast: parameter " + name + " disappeared");
}

std::string shape_text(const std::vector<std::int64_t>& s) {
  std::string r = "[";
  for (std::size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

std::string batch_text(const Batch& b) {
  std::string r;
  for (const auto& v : b) {
    if (!r.empty()) r += ", ";
    if (v.isTensor()) {
      const auto& t = v.toTensor();
      r += std::string(c10::toString(t.scalar_type())) + shape_text({t.sizes().begin(), t.sizes().end()});
    } else {
      r += v.tagKind();
    }
  }
  return r;
}

std::string first_line(const std::string& s) { return s.substr(0, s.find('\n')); }

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

std::vector<LayerInfo> list_layers(const torch::jit::Module& model) {
  std::vector<LayerInfo> r;
  for (const auto& l : detail::walk_model(model).layers) r.push_back(l.info);
  return r;
}

Result quantize(const torch::jit::Module& model, const std::vector<Batch>& calibration, const Options& o) {
  const auto start = Clock::now();
  if (calibration.empty()) throw std::invalid_argument("the calibration set is empty");
  at::NoGradGuard no_grad;
  torch::jit::Module fm = model.deepcopy(), qm = model.deepcopy();
  fm.eval();
  qm.eval();
  try {
    fm.forward(calibration.front());
  } catch (const std::exception& e) {
    throw std::invalid_argument("the calibration data (first batch: " + batch_text(calibration.front()) +
                                ") does not fit the model's forward: " + first_line(e.what()));
  }
  const detail::ModelWalk walk = detail::walk_model(fm);

  Result res;
  res.report.method = method_name(o.method);
  res.report.format = format_name(o.format);
  for (const auto& b : calibration)
    if (!b.empty() && b.front().isTensor()) res.report.samples += b.front().toTensor().dim() ? b.front().toTensor().size(0) : 1;

  int todo = 0;
  for (const auto& l : walk.layers) todo += l.info.unsupported.empty() ? 1 : 0;
  int done = 0;
  double solved_s = 0;
  for (const detail::WalkLayer& l : walk.layers) {
    LayerReport lr;
    lr.name = l.info.name;
    lr.op = l.info.op;
    lr.shape = l.info.shape;
    lr.method = res.report.method;
    if (!l.info.unsupported.empty()) {
      lr.status = "float: " + l.info.unsupported;
      res.report.layers.push_back(lr);
      continue;
    }
    ++done;
    bool excluded = false;
    for (const auto& p : o.exclude) excluded = excluded || matches(p, l.info.name);
    if (excluded) {
      lr.status = "excluded";
      res.report.layers.push_back(lr);
      continue;
    }
    Format format = o.format;
    for (const auto& lf : o.layer_formats)
      if (matches(lf.pattern, l.info.name)) {
        format = lf.format;
        break;
      }
    lr.format = format_name(format);
    if (o.progress) {
      Progress pr;
      pr.layer = done;
      pr.layers = todo;
      pr.name = l.info.name;
      pr.elapsed_s = seconds_since(start);
      pr.eta_s = done > 1 ? solved_s / (done - 1) * (todo - done + 1) : -1;
      o.progress(pr);
    }
    const auto t0 = Clock::now();
    try {
      const at::Tensor param = parameter_of(qm, l.info.name);
      const std::int64_t cols = reduction_size(l, param);
      const at::Tensor w = weight_matrix(param, l.layout, cols).to(at::kDouble).contiguous();
      detail::Capture capture(fm, l);
      detail::Grams grams;
      for (const Batch& b : calibration) {
        const auto xs = capture.run(fm, b);
        const auto xq = capture.run(qm, b);
        for (std::size_t s = 0; s < l.sites.size(); ++s) {
          for_each_input_chunk(l.sites[s], xs[s], xq[s], param, cols,
                             [&](const at::Tensor& a, const at::Tensor& b) { grams.add(a, b, w); });
        }
      }
      const std::int64_t rows = w.size(0);
      WeightGrid grid(format, rows, cols, w.data_ptr<double>());
      const at::Tensor q = detail::solve(o.method, w, grams, grid, o);
      lr.relative_error = detail::relative_output_error(w, q, grams);
      if (o.method == Method::rtn) {
        lr.rtn_relative_error = lr.relative_error;
      } else {
        WeightGrid rtn_grid(format, rows, cols, w.data_ptr<double>());
        lr.rtn_relative_error =
            detail::relative_output_error(w, detail::solve(Method::rtn, w, grams, rtn_grid, o), grams);
      }
      // Write Ŵ into the copy, in the parameter's layout and dtype.
      at::Tensor qp = l.layout == WeightLayout::rows
                          ? q.reshape(param.sizes())
                          : q.reshape([&] {
                               std::vector<std::int64_t> s(param.sizes().begin(), param.sizes().end());
                               std::swap(s[s.size() - 1], s[s.size() - 2]);
                               return s;
                             }())
                                .transpose(-1, -2);
      param.copy_(qp.to(param.scalar_type()));
      PackedWeight pw;
      pw.name = l.info.name;
      pw.shape = l.info.shape;
      pw.layout = l.layout;
      pw.matrix = grid.encoded();
      res.packed.push_back(std::move(pw));
    } catch (const std::exception& e) {
      throw std::runtime_error("layer " + l.info.name + " (" + l.info.op + "): " + first_line(e.what()));
    }
    lr.status = "quantized";
    lr.seconds = seconds_since(t0);
    solved_s += lr.seconds;
    res.report.layers.push_back(lr);
  }
  res.model = qm;
  res.report.seconds = seconds_since(start);
  return res;
}

std::string Report::json() const {
  std::ostringstream s;
  s << "{\"method\": " << json_string(method) << ", \"format\": " << json_string(format) << ", \"samples\": " << samples
    << ", \"seconds\": " << number(seconds) << ", \"layers\": [";
  for (std::size_t i = 0; i < layers.size(); ++i) {
    const LayerReport& l = layers[i];
    s << (i ? ",\n  " : "\n  ") << "{\"name\": " << json_string(l.name) << ", \"op\": " << json_string(l.op)
      << ", \"shape\": " << shape_text(l.shape) << ", \"status\": " << json_string(l.status)
      << ", \"format\": " << json_string(l.format) << ", \"method\": " << json_string(l.method)
      << ", \"relative_error\": " << (l.relative_error >= 0 ? number(l.relative_error) : "null")
      << ", \"rtn_relative_error\": " << (l.rtn_relative_error >= 0 ? number(l.rtn_relative_error) : "null")
      << ", \"seconds\": " << number(l.seconds) << "}";
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
      std::snprintf(line, sizeof line, "%-36s %-14s %-20s %-12s %10.5f %10.5f %8.2f\n", l.name.c_str(), l.op.c_str(),
                    shape_text(l.shape).c_str(), l.format.c_str(), l.relative_error, l.rtn_relative_error, l.seconds);
    }
    s << line;
  }
  std::snprintf(line, sizeof line, "method %s, %lld calibration samples, %.2f s in all\n", method.c_str(),
                static_cast<long long>(samples), seconds);
  s << line;
  return s.str();
}

std::vector<Batch> load_calibration(const std::string& path, std::int64_t batch_size, std::int64_t samples) {
  namespace fs = std::filesystem;
  if (batch_size < 1) throw std::invalid_argument("the batch size must be at least 1");
  // Sources: lists of tensors (one per model input) sharing their first dimension.
  std::vector<std::vector<at::Tensor>> sources;
  if (fs::is_directory(path)) {
    std::vector<std::string> files;
    for (const auto& e : fs::directory_iterator(path))
      if (e.is_regular_file() && e.path().extension() == ".npy") files.push_back(e.path().string());
    std::sort(files.begin(), files.end());
    if (files.empty()) throw std::invalid_argument(path + ": the folder holds no .npy files");
    for (const auto& f : files) {
      const NpyArray a = read_npy(f);  // NpyError names the file
      if (a.shape.empty()) throw std::invalid_argument(f + ": a calibration array needs a first (sample) dimension");
      const std::vector<float> v = a.to_float();
      sources.push_back({at::from_blob(const_cast<float*>(v.data()), a.shape, at::kFloat).clone()});
    }
  } else if (fs::is_regular_file(path)) {
    std::ifstream in(path, std::ios::binary);
    std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    c10::IValue v;
    try {
      v = torch::jit::pickle_load(bytes);
    } catch (const std::exception& e) {
      throw std::invalid_argument(path + ": not a tensor saved by torch.save (" + first_line(e.what()) + ")");
    }
    std::vector<at::Tensor> inputs;
    if (v.isTensor()) inputs.push_back(v.toTensor());
    else if (v.isTuple())
      for (const auto& e : v.toTupleRef().elements()) inputs.push_back(e.isTensor() ? e.toTensor() : at::Tensor());
    else if (v.isList())
      for (const auto& e : v.toListRef()) inputs.push_back(e.isTensor() ? e.toTensor() : at::Tensor());
    if (inputs.empty()) throw std::invalid_argument(path + ": holds a " + v.tagKind() + ", not a tensor or a tuple of tensors");
    for (std::size_t i = 0; i < inputs.size(); ++i) {
      if (!inputs[i].defined()) throw std::invalid_argument(path + ": element " + std::to_string(i) + " is not a tensor");
      if (inputs[i].dim() == 0 || inputs[i].size(0) != inputs[0].size(0))
        throw std::invalid_argument(path + ": every tensor needs the same first (sample) dimension");
    }
    sources.push_back(inputs);
  } else {
    throw std::invalid_argument(path + ": no such file or folder");
  }
  std::vector<Batch> batches;
  std::int64_t taken = 0;
  for (const auto& src : sources) {
    const std::int64_t n = src.front().size(0);
    for (std::int64_t i = 0; i < n && (samples < 0 || taken < samples); i += batch_size) {
      std::int64_t k = std::min(batch_size, n - i);
      if (samples >= 0) k = std::min(k, samples - taken);
      Batch b;
      for (const auto& t : src) b.emplace_back(t.narrow(0, i, k));
      batches.push_back(std::move(b));
      taken += k;
    }
  }
  if (batches.empty()) throw std::invalid_argument(path + ": no calibration samples");
  return batches;
}

torch::jit::Module load_model(const std::string& path) {
  if (!std::filesystem::is_regular_file(path)) throw std::invalid_argument(path + ": no such file");
  try {
    return torch::jit::load(path);
  } catch (const std::exception& e) {
    throw std::invalid_argument(path + ": not a TorchScript model (" + first_line(e.what()) + ")");
  }
}

void save_model(const torch::jit::Module& model, const std::string& path, const std::string& protect) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!protect.empty() && fs::exists(path) && fs::equivalent(path, protect, ec))
    throw std::invalid_argument(path + ": refusing to write the output over the input model");
  const std::string tmp = path + ".tmp" + std::to_string(std::chrono::steady_clock::now().time_since_epoch().count());
  try {
    model.save(tmp);
  } catch (const std::exception& e) {
    std::remove(tmp.c_str());
    throw std::runtime_error(path + ": cannot write the model (" + first_line(e.what()) + ")");
  }
  fs::rename(tmp, path, ec);
  if (ec) {
    std::remove(tmp.c_str());
    throw std::runtime_error(path + ": cannot move the finished model into place: " + ec.message());
  }
}

}  // namespace qcast::ptq
