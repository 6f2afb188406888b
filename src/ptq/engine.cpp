// The PTQ driver as a pipeline (docs/design/0007-ptq-pipeline.md). The inlined forward is cut into
// stages at the sites of the layers to quantize; every calibration batch keeps its boundary state on
// both streams (float model: X, partly quantized copy: X̂) between stages. At each cut the stage
// before it runs once per stream and batch and hands over the inputs of the layer at the cut; the
// layer's Gram matrices are summed from them, its method solves, and its quantized weight is written
// into the copy before the copy's stream runs past it. A weight used at several cuts (one module
// called twice) is solved at its first cut from all of its uses: the stages up to its last use run
// once more on copies of the state (the look-ahead), with the layers between them still in float.
// The whole run costs one forward pass of each model over the calibration set, plus the look-aheads,
// the statistics and the solves.
#include "qcast/ptq/engine.hpp"
#include "error_text.hpp"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/GradMode.h>
#include <torch/cuda.h>

#include <algorithm>
#include <chrono>
#include <fnmatch.h>
#include <malloc.h>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <tuple>
#include <utility>

#include "activation_amax.hpp"
#include "input_transforms.hpp"
#include "boundary_cache.hpp"
#include "capture_observer.hpp"
#include "convolution_kernels.hpp"
#include "distributed.hpp"
#include "flexround.hpp"
#include "norm_fold.hpp"
#include "grams.hpp"
#include "method.hpp"
#include "model_walk.hpp"
#include "pipeline_run.hpp"
#include "shape_list_text.hpp"
#include "qcast/format_names.hpp"
#include "qcast/torch.hpp"
#include "qcast/torch_ops.hpp"
#include "solvers.hpp"
#include "stage_graph.hpp"

namespace qcast::ptq {
namespace {

using detail::SiteKind;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

std::string real_text(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

bool matches(const std::string& pattern, const std::string& name) {
  return fnmatch(pattern.c_str(), name.c_str(), 0) == 0;
}

std::string batch_text(const Batch& b) {
  std::string r;
  for (const auto& v : b) {
    if (!r.empty()) r += ", ";
    if (v.isTensor()) {
      const auto& t = v.toTensor();
      r += std::string(c10::toString(t.scalar_type())) + detail::shape_list_text({t.sizes().begin(), t.sizes().end()});
    } else {
      r += v.tagKind();
    }
  }
  return r;
}


at::Tensor weight_matrix(const at::Tensor& p, WeightLayout layout, std::int64_t cols) {
  if (layout == WeightLayout::rows) return p.reshape({-1, cols});
  return p.transpose(-1, -2).reshape({-1, cols});
}

at::Tensor parameter_of(const torch::jit::Module& m, const std::string& name) {
  for (const auto& p : m.named_parameters(true))
    if (p.name == name) return p.value;
  throw std::logic_error("qcast: parameter " + name + " disappeared");
}

// LibTorch's intra-op threads held at one while a method solves: its LAPACK and BLAS calls (Cholesky,
// the lazy batch products) then sum in one fixed order, whatever the thread count of the run.
class SingleThreaded {
 public:
  explicit SingleThreaded(bool active = true) : saved_(at::get_num_threads()), active_(active) {
    if (active_) at::set_num_threads(1);
  }
  ~SingleThreaded() {
    if (active_) at::set_num_threads(saved_);
  }
  SingleThreaded(const SingleThreaded&) = delete;
  SingleThreaded& operator=(const SingleThreaded&) = delete;

 private:
  int saved_;
  bool active_;
};

std::int64_t peak_rss_bytes() {
  std::ifstream f("/proc/self/status");
  std::string key;
  while (f >> key) {
    if (key == "VmHWM:") {
      long long kb = 0;
      f >> kb;
      return std::int64_t(kb) * 1024;
    }
    f.ignore(1 << 20, '\n');
  }
  return 0;
}

c10::Device parse_device(const std::string& text) {
  std::optional<c10::Device> d;
  try {
    d.emplace(text);
  } catch (const std::exception&) {
  }
  if (!d || (!d->is_cpu() && !d->is_cuda()))
    throw std::invalid_argument("unknown device '" + text.substr(0, 64) + "'; valid: cpu, cuda, cuda:N");
  if (d->is_cuda()) {
    if (!torch::cuda::is_available())
      throw std::invalid_argument("device " + text + ": no CUDA device can be used here (LibTorch finds none)");
    const auto n = static_cast<int>(torch::cuda::device_count());
    if (d->has_index() && d->index() >= n)
      throw std::invalid_argument("device " + text + ": there are " + std::to_string(n) + " CUDA devices (cuda:0.." +
                                  "cuda:" + std::to_string(n - 1) + ")");
  }
  return *d;
}

c10::IValue copy_to(const c10::IValue& v, const c10::Device& device) {
  if (v.isTensor()) return v.toTensor().to(device, /*non_blocking=*/false, /*copy=*/true);
  return v.deepcopy(device);
}

// A batch's own copy on the device (a stage may write into its inputs).
Batch batch_on(const Batch& batch, const c10::Device& device) {
  Batch out;
  for (const auto& v : batch) out.push_back(copy_to(v, device));
  return out;
}

// The bytes a weight takes as stored: packed codes + scales (+ a two-level format's float tensor
// scale). The report, the export and the mixed-precision budget all count this.
std::int64_t stored_bytes(const Encoded& e) {
  return std::int64_t(e.codes.size() + e.scales.size()) + (e.format.tensor_scale ? std::int64_t(sizeof(float)) : 0);
}

// A copy of a boundary state that the stages after it may write into without changing the original.
detail::Env deep_copy(const detail::Env& env) {
  c10::IValue::HashIdentityIValueMap memo;
  detail::Env out;
  for (const auto& [id, v] : env) out.emplace(id, v.deepcopy(memo));
  return out;
}

// The weight's largest |w| per input channel of the layer's data input: over every axis but the
// reduction axis, and for a grouped convolution (channels = groups x the weight's axis 1) per group
// of output rows, in channel order (group major).
at::Tensor weight_channel_max(const at::Tensor& weight, int axis, std::int64_t channels) {
  const at::Tensor w = weight.detach().to(at::kCPU, at::kFloat).abs();
  const std::int64_t a = axis < 0 ? axis + w.dim() : axis;
  if (a == 1 && w.dim() >= 3 && channels != w.size(1)) {  // grouped convolution
    const std::int64_t groups = channels / w.size(1);
    std::vector<std::int64_t> shape = {groups, w.size(0) / groups};
    shape.insert(shape.end(), w.sizes().begin() + 1, w.sizes().end());
    std::vector<std::int64_t> other = {1};
    for (std::int64_t d = 3; d < std::int64_t(shape.size()); ++d) other.push_back(d);
    return w.reshape(shape).amax(other).reshape({-1});
  }
  std::vector<std::int64_t> other;
  for (std::int64_t d = 0; d < w.dim(); ++d)
    if (d != a) other.push_back(d);
  return w.amax(other);
}

// The weight with input channel j multiplied by s[j] (s in channel order, as weight_channel_max).
at::Tensor smooth_weight(const at::Tensor& weight, const at::Tensor& s, int axis) {
  const std::int64_t a = axis < 0 ? axis + weight.dim() : axis;
  const at::Tensor sv = s.to(weight.device(), weight.scalar_type());
  if (a == 1 && weight.dim() >= 3 && s.numel() != weight.size(1)) {  // grouped convolution
    const std::int64_t groups = s.numel() / weight.size(1);
    std::vector<std::int64_t> shape = {groups, weight.size(0) / groups};
    shape.insert(shape.end(), weight.sizes().begin() + 1, weight.sizes().end());
    std::vector<std::int64_t> sshape(shape.size(), 1);
    sshape[0] = groups;
    sshape[2] = weight.size(1);
    return (weight.reshape(shape) * sv.reshape(sshape)).reshape(weight.sizes());
  }
  std::vector<std::int64_t> shape(std::size_t(weight.dim()), 1);
  shape[std::size_t(a)] = -1;
  return weight * sv.reshape(shape);
}

// A layer to quantize.
struct Planned {
  const detail::WalkLayer* layer;
  Format format;
  std::size_t report_index;
  at::Tensor float_weight;  // the parameter in the float copy (its shape unfolds convolution inputs)
  std::int64_t cols;        // the reduction size: the weight matrix's columns
  double clip = 1.0;        // the clip ratio of its grid (a format search may pick one below 1)
  double search_error = -1;  // the format search's error of the chosen candidate (rounded to nearest)
  bool pinned = false;       // its format from --layer-format (mixed precision leaves it)
  bool solved = false;
  std::size_t span = 0;      // the span it is trained in (methods that reconstruct spans)
  // What such a method learned for it: the solve rounds its W / (S2 s3 s4) on its learned scales.
  std::shared_ptr<detail::FlexRoundWeight> learned;
};

// Sets the parameter `name` (a dotted path) of m to t: FlexRound's training installs the weight it
// learns, with its autograd graph, where the stages read it.
void set_parameter(torch::jit::Module& m, const std::string& name, const at::Tensor& t) {
  torch::jit::Module owner = m;
  std::size_t from = 0;
  for (std::size_t dot = name.find('.'); dot != std::string::npos; dot = name.find('.', from)) {
    owner = owner.attr(name.substr(from, dot - from)).toModule();
    from = dot + 1;
  }
  owner.setattr(name.substr(from), t);
}

// The tensors of a model output (a tensor, or tensors inside tuples, lists and dicts), in order.
void tensors_of(const c10::IValue& v, std::vector<at::Tensor>& out) {
  if (v.isTensor()) {
    if (v.toTensor().is_floating_point()) out.push_back(v.toTensor());
  } else if (v.isTuple()) {
    for (const auto& e : v.toTupleRef().elements()) tensors_of(e, out);
  } else if (v.isList()) {
    for (const auto& e : v.toListRef()) tensors_of(e, out);
  } else if (v.isGenericDict()) {
    for (const auto& e : v.toGenericDict()) tensors_of(e.value(), out);
  }
}

std::int64_t batch_samples(const Batch& b) {
  if (b.empty() || !b.front().isTensor()) return 0;
  return b.front().toTensor().dim() ? b.front().toTensor().size(0) : 1;
}

// What a distributed calibration does not reduce yet: refused up front, on every rank alike.
void check_distributed_options(const Options& o, const std::vector<Batch>& calibration) {
  auto refuse = [](const std::string& what) {
    throw std::invalid_argument(what + " does not run across processes yet; run it in one process");
  };
  if (o.mixed.any()) refuse("mixed precision");
  if (!o.search_act_formats.empty()) refuse("the activation format search");
  if (o.smooth_alpha >= 0 || o.smooth_pow2) refuse("smoothing (--smooth)");
  if (o.activations.any() && o.activations.amax != ActivationOptions::Amax::max)
    refuse("a percentile or mse activation amax (--act-amax)");
  if (calibration.size() < std::size_t(o.distributed.world_size))
    throw std::invalid_argument("a distributed calibration needs a batch per rank at least: " +
                                std::to_string(calibration.size()) + " batches for " +
                                std::to_string(o.distributed.world_size) + " ranks (give a smaller --batch-size)");
}

// FNV-1a over bytes, folded into an int64 for a gather.
struct Fingerprint {
  std::uint64_t h = 1469598103934665603ull;
  void add(const void* p, std::size_t n) {
    const auto* b = static_cast<const std::uint8_t*>(p);
    for (std::size_t i = 0; i < n; ++i) h = (h ^ b[i]) * 1099511628211ull;
  }
  void add(const at::Tensor& t) {
    const at::Tensor c = t.detach().to(at::kCPU).contiguous();
    add(c.data_ptr(), std::size_t(c.numel()) * c.element_size());
  }
  std::int64_t value() const { return std::int64_t(h); }
};

// Every rank must quantize the same model on the same calibration set: their fingerprints are
// compared with rank 0's, and a rank that differs is named.
void check_same_inputs(detail::Collective& group, const torch::jit::Module& model, const std::vector<Batch>& calibration) {
  Fingerprint m, c;
  for (const auto& p : model.named_parameters(true)) m.add(p.value);
  for (const auto& b : model.named_buffers(true)) m.add(b.value);
  for (const auto& batch : calibration)
    for (const auto& v : batch)
      if (v.isTensor()) c.add(v.toTensor());
  const std::vector<std::int64_t> models = group.gather(m.value(), "the model check");
  const std::vector<std::int64_t> data = group.gather(c.value(), "the calibration data check");
  for (std::size_t r = 1; r < models.size(); ++r) {
    if (models[r] != models[0])
      throw std::invalid_argument("rank " + std::to_string(r) + " loaded a model whose weights differ from rank 0's");
    if (data[r] != data[0])
      throw std::invalid_argument("rank " + std::to_string(r) + " loaded calibration data that differs from rank 0's");
  }
}

// The sums of one layer's statistics over the ranks (each rank's from its share, finished), and the
// totals formed from them as Grams::finish forms them.
void reduce_statistics(detail::Collective& group, detail::Grams& g, const std::string& layer) {
  const bool was_identical = g.streams_identical();
  const std::vector<std::int64_t> identical = group.gather(was_identical ? 1 : 0, "the statistics of " + layer);
  bool all_identical = true;
  for (const std::int64_t v : identical) all_identical = all_identical && v == 1;
  // The symmetric sums (G's halves, XXᵀ) travel as their upper triangles: every rank's are exact
  // mirrors (Grams::finish), so the sums of the triangles mirrored are the sums of the matrices, bit
  // for bit, at a little over half the bytes.
  const std::int64_t n = g.xhat_xhat.size(1);
  const at::Tensor idx = at::triu_indices(n, n, 0, at::TensorOptions().dtype(at::kLong));
  const at::Tensor rows = idx[0], cols = idx[1];
  const auto all = at::indexing::Slice();
  auto upper = [&](const at::Tensor& m) { return m.index({all, rows, cols}).contiguous(); };
  auto mirrored = [&](const at::Tensor& u) {
    at::Tensor m = at::empty({u.size(0), n, n}, u.options());
    m.index_put_({all, rows, cols}, u);
    m.index_put_({all, cols, rows}, u);
    return m;
  };
  std::vector<at::Tensor> t = {upper(g.half_xhat_xhat[0]), upper(g.half_xhat_xhat[1]), g.half_diff_xhat[0],
                               g.half_diff_xhat[1], upper(was_identical ? g.xhat_xhat : g.x_x), g.x_sum, g.xhat_sum,
                               at::tensor({double(g.tokens)}, at::kDouble)};
  group.sum(t, "the statistics of " + layer);
  g.half_xhat_xhat = {mirrored(t[0]), mirrored(t[1])};
  g.half_diff_xhat = {t[2], t[3]};
  g.xhat_xhat = g.half_xhat_xhat[0] + g.half_xhat_xhat[1];
  g.diff_xhat = t[2] + t[3];
  g.x_x = all_identical ? g.xhat_xhat : mirrored(t[4]);  // X == X̂ on every rank: XXᵀ is X̂X̂ᵀ, as in one process
  g.x_sum = t[5];
  g.xhat_sum = t[6];
  g.tokens = std::int64_t(t[7][0].item<double>());
}

// Every rank solved the same problem and must hold the same codes: a difference would make rank
// 0's output depend on which rank wrote it.
void check_same_weights(detail::Collective& group, const Encoded& e, const std::string& layer) {
  Fingerprint f;
  f.add(e.codes.data(), e.codes.size());
  f.add(e.scales.data(), e.scales.size());
  const std::vector<std::int64_t> all = group.gather(f.value(), "the check of " + layer + "'s codes");
  for (std::size_t r = 1; r < all.size(); ++r)
    if (all[r] != all[0])
      throw std::logic_error("rank " + std::to_string(r) + " computed other codes for " + layer + " than rank 0");
}

// The weight columns one input channel spans: a convolution's kernel size, 1 for a matmul.
std::int64_t columns_per_channel(const Planned& p) {
  const at::Tensor& w = p.float_weight;
  return p.layer->sites.front().kind == detail::SiteKind::conv && w.dim() > 2 ? w[0][0].numel() : 1;
}

// The accumulator need of a quantized layer from its codes; a bound it breaks is a bug of the
// method's walk, never a result.
LayerReport::Accumulator accumulator_report(const detail::AccumulatorBound& b, const Encoded& codes) {
  const AccumulatorNeed need = accumulator_need(codes, b.input, b.tile);
  if (b.bits > 0 && need.worst > accumulator_limit(b.bits))
    throw std::logic_error("the quantized codes need a " + std::to_string(need.bits) + "-bit accumulator (row " +
                           std::to_string(need.row) + ", tile at column " + std::to_string(need.col) + "), past the bound of " +
                           std::to_string(b.bits) + " bits");
  LayerReport::Accumulator a;
  a.bits = b.bits;
  a.tile = b.tile;
  a.input_min = b.input.min;
  a.input_max = b.input.max;
  a.input_from = b.input_from;
  a.worst = need.worst;
  a.bits_needed = need.bits;
  return a;
}

// Which of p's sites sits at a walk position.
std::size_t site_at_of(const Planned& p, std::size_t node_index) {
  for (std::size_t s = 0; s < p.layer->sites.size(); ++s)
    if (p.layer->sites[s].node_index == node_index) return s;
  throw std::logic_error("qcast: no site of " + p.layer->info.name + " at walk position " + std::to_string(node_index));
}

}  // namespace

bool ActivationOptions::any() const { return format.has_value() || !layer_formats.empty(); }

namespace detail {
CaptureObserver& capture_observer() {
  static CaptureObserver observer;
  return observer;
}
}  // namespace detail

std::vector<LayerInfo> list_layers(const torch::jit::Module& model) {
  std::vector<LayerInfo> r;
  for (const auto& l : detail::walk_model(model).layers) r.push_back(l.info);
  return r;
}

namespace detail {

Result run_pipeline(const torch::jit::Module& model, const std::vector<Batch>& all_calibration, const Options& o,
                    const LayerAssignment* assignment, LayerAssignments* measured) {
  const auto start = Clock::now();
  // A distributed calibration: this rank's share of the batches, the samples before it (each
  // sample's half, even or odd, counts over the whole set), the group's checks that every rank has
  // the same model and data.
  std::unique_ptr<detail::Collective> group;
  std::vector<Batch> share;
  std::int64_t sample_offset = 0;
  if (o.distributed.any()) {
    check_distributed_options(o, all_calibration);
    group = detail::Collective::join(o.distributed);
    const auto [lo, hi] = detail::batch_share(all_calibration.size(), group->rank(), group->world_size());
    share.assign(all_calibration.begin() + std::ptrdiff_t(lo), all_calibration.begin() + std::ptrdiff_t(hi));
    for (std::size_t b = 0; b < lo; ++b) sample_offset += batch_samples(all_calibration[b]);
    check_same_inputs(*group, model, all_calibration);
  }
  const std::vector<Batch>& calibration = group ? share : all_calibration;
  const bool measure = measured != nullptr;
  if (!torch_ops_library()) throw std::logic_error("qcast: the operator library is not loaded");
  const detail::MethodPlugin& plugin = detail::find_plugin(o.method);
  const detail::MethodValues values(plugin.info, o.method_options);
  // The method whose result learned rounding starts from (FlexRound --start), with its defaults;
  // nullptr: round-to-nearest, or a method that does not learn its rounding.
  const detail::MethodPlugin* start_plugin =
      plugin.info.reconstructs_spans && values.choice("start") != "rtn" ? &detail::find_plugin(values.choice("start")) : nullptr;
  const std::optional<detail::MethodValues> start_values =
      start_plugin ? std::optional<detail::MethodValues>(std::in_place, start_plugin->info, std::map<std::string, std::string>{})
                   : std::nullopt;
  const c10::Device device = parse_device(o.device);
  if (calibration.empty() && plugin.info.needs_calibration)
    throw std::invalid_argument("method " + o.method + " needs calibration data (only rtn runs without)");
  if (calibration.empty() && o.bias_correction)
    throw std::invalid_argument("bias correction needs calibration data (the mean output shift is measured on it)");
  if (o.cache_mb > (std::int64_t(1) << 40)) throw std::invalid_argument("the boundary cache budget is out of range");
  if (o.accumulator.bits > 0 && !plugin.info.bounds_accumulator)
    throw std::invalid_argument("method " + o.method + " does not keep an accumulator bound (--accumulator-bits); the methods "
                                "that do: rtn, gptq, gpfq, ed");
  if (o.accumulator.any() && o.mixed.any())
    throw std::invalid_argument("an accumulator bound and mixed precision do not combine (the candidates need not be integer formats)");
  if (plugin.info.reconstructs_spans) {
    auto refuse = [&](const std::string& what) {
      throw std::invalid_argument("method " + o.method + " trains its rounding on spans of layers; it does not combine with " + what);
    };
    if (o.mixed.any()) refuse("mixed precision (its sensitivity pass solves each layer alone)");
    if (!o.search_formats.empty() || !o.search_clips.empty()) refuse("the weight format search (--search-format, --search-clip)");
    if (o.distributed.world_size > 1) refuse("a distributed calibration (its training is not reduced across processes yet)");
    const std::int64_t held_out = values.integer("holdout");
    if (held_out > 0 && std::uint64_t(held_out) >= calibration.size())
      throw std::invalid_argument("option holdout of " + o.method + ": " + std::to_string(held_out) +
                                  " held-out batches leave none to train on (the calibration has " +
                                  std::to_string(calibration.size()) + " batches)");
  }
  if (o.accumulator.bits == 0 && o.accumulator.tile != 0)
    throw std::invalid_argument("an accumulator tile is a tile of a bounded accumulator; give --accumulator-bits too");
  at::NoGradGuard no_grad;
  const detail::PerSampleConvolutions convolutions(o.per_sample_convolutions && device.is_cpu());
  torch::jit::Module fm = model.deepcopy(), qm = model.deepcopy();
  fm.eval();
  qm.eval();
  if (!calibration.empty()) {
    try {
      fm.forward(calibration.front());
    } catch (const std::exception& e) {
      throw std::invalid_argument("the calibration data (first batch: " + batch_text(calibration.front()) +
                                  ") does not fit the model's forward: " + detail::error_summary(e));
    }
  }
  fm.to(device);
  qm.to(device);
  const detail::ModelWalk walk = detail::walk_model(fm);

  Result res;
  Report& rep = res.report;
  rep.method = plugin.info.name;
  rep.format = format_name(o.format);
  rep.device = device.str();
  rep.options.emplace_back("method", rep.method);
  rep.options.emplace_back("format", rep.format);
  for (const auto& [k, v] : o.method_options) rep.options.emplace_back(k, v);
  for (const auto& p : o.exclude) rep.options.emplace_back("exclude", p);
  for (const auto& lf : o.layer_formats) rep.options.emplace_back("layer-format", lf.pattern + "=" + format_name(lf.format));
  rep.options.emplace_back("device", o.device);
  if (o.cache_mb >= 0) rep.options.emplace_back("cache-mb", std::to_string(o.cache_mb));
  rep.options.emplace_back("bias-correction", o.bias_correction ? "true" : "false");
  rep.options.emplace_back("threaded-forward", o.threaded_forward ? "true" : "false");
  rep.options.emplace_back("per-sample-convolutions", o.per_sample_convolutions ? "true" : "false");
  if (o.accumulator.bits > 0) rep.options.emplace_back("accumulator-bits", std::to_string(o.accumulator.bits));
  if (o.accumulator.tile > 0) rep.options.emplace_back("accumulator-tile", std::to_string(o.accumulator.tile));
  if (o.accumulator.input_bits > 0) {
    rep.options.emplace_back("act-bits", std::to_string(o.accumulator.input_bits));
    rep.options.emplace_back("act-unsigned", o.accumulator.input_signed ? "false" : "true");
  }
  const ActivationOptions& act = o.activations;
  if (act.any()) {
    if (act.format) rep.options.emplace_back("act-format", format_name(*act.format));
    for (const auto& lf : act.layer_formats)
      rep.options.emplace_back("layer-act-format", lf.pattern + "=" + (lf.format ? format_name(*lf.format) : "none"));
    rep.options.emplace_back("act-amax", act.amax == ActivationOptions::Amax::max          ? std::string("max")
                                         : act.amax == ActivationOptions::Amax::percentile ? "percentile:" + real_text(act.percentile)
                                                                                            : std::string("mse"));
  }
  if (o.smooth_pow2) rep.options.emplace_back("smooth", "pow2");
  else if (o.smooth_alpha >= 0) rep.options.emplace_back("smooth", real_text(o.smooth_alpha));
  for (const Format& f : o.search_formats) rep.options.emplace_back("search-format", format_name(f));
  for (const double c : o.search_clips) rep.options.emplace_back("search-clip", real_text(c));
  for (const Format& f : o.search_act_formats) rep.options.emplace_back("search-act-format", format_name(f));
  if (!o.search_act_formats.empty() && !act.any())
    throw std::invalid_argument("the activation format search replaces the formats of quantized activations; "
                                "give --act-format (or --layer-act-format) for the layers to search");
  if (!o.search_act_formats.empty() && calibration.empty())
    throw std::invalid_argument("the activation format search scores candidates on calibration data; none was given");
  if ((!o.search_formats.empty() || !o.search_clips.empty()) && calibration.empty())
    throw std::invalid_argument("the format search scores candidates on calibration data; none was given");
  for (const double c : o.search_clips)
    if (!(c > 0 && c <= 1)) throw std::invalid_argument("a clip ratio must be in (0, 1], got " + real_text(c));
  if (o.hadamard_block != 0)
    rep.options.emplace_back("rotate", o.hadamard_block < 0 ? std::string("hadamard") : "hadamard:" + std::to_string(o.hadamard_block));
  if (act.any() || o.hadamard_block != 0) rep.options.emplace_back("act-unfit", act.unfit_float ? "float" : "error");
  rep.batches = std::int64_t(all_calibration.size());
  for (const auto& b : all_calibration) rep.samples += batch_samples(b);
  if (group) {
    rep.world_size = group->world_size();
    rep.options.emplace_back("world-size", std::to_string(group->world_size()));
  }

  // Which layers are quantized, with which format.
  std::vector<Planned> plan;
  for (const detail::WalkLayer& l : walk.layers) {
    LayerReport lr;
    lr.name = l.info.name;
    lr.op = l.info.op;
    lr.shape = l.info.shape;
    lr.method = rep.method;
    const at::Tensor w = parameter_of(fm, l.info.name);
    lr.float_bytes = w.numel() * std::int64_t(w.element_size());
    lr.quantized_bytes = lr.float_bytes;  // until it is quantized
    bool excluded = false;
    for (const auto& p : o.exclude) excluded = excluded || matches(p, l.info.name);
    if (!l.info.unsupported.empty()) {
      lr.status = "float: " + l.info.unsupported;
    } else if (excluded) {
      lr.status = "excluded";
    } else {
      Format format = o.format;
      bool pinned = false;
      for (const auto& lf : o.layer_formats)
        if (matches(lf.pattern, l.info.name)) {
          format = lf.format;
          pinned = true;
          break;
        }
      const auto assigned = assignment ? assignment->find(l.info.name) : LayerAssignment::const_iterator();
      if (assignment && assigned != assignment->end()) {
        if (!assigned->second) {
          lr.status = "float: the allocation chose float";
          rep.layers.push_back(lr);
          continue;
        }
        format = *assigned->second;
      }
      lr.format = format_name(format);
      plan.push_back({&l, format, rep.layers.size(), w, detail::reduction_size(l.sites.front(), l.layout, w)});
      plan.back().pinned = pinned;
    }
    rep.layers.push_back(lr);
  }
  const int todo = int(plan.size());
  // Spans: runs of consecutive planned layers whose names give the same key (methods that
  // reconstruct spans; every layer is its own span otherwise).
  if (plugin.info.reconstructs_spans) {
    const std::string rule = values.choice("span");
    std::string last_key;
    for (std::size_t i = 0; i < plan.size(); ++i) {
      const std::string key = detail::span_key(plan[i].layer->info.name, rule);
      plan[i].span = i == 0 ? 0 : plan[i - 1].span + (key == last_key ? 0 : 1);
      last_key = key;
    }
  } else {
    for (std::size_t i = 0; i < plan.size(); ++i) plan[i].span = i;
  }

  // Input transforms: on each site of a quantized layer, a Hadamard rotation (the weight rotated to
  // match, in both model copies) and an activation quantizer, where asked for and where they apply.
  std::vector<detail::InputTransform> transforms;
  std::vector<std::size_t> act_plan;  // the plan entry of each
  auto unfit = [&](const detail::WalkLayer& l, const std::string& what, const std::string& why) {
    if (!act.unfit_float)
      throw std::invalid_argument("layer " + l.info.name + " (" + l.info.op + "): " + what + " cannot apply: " + why +
                                  " (with --act-unfit float, or ActivationOptions::unfit_float, it is left out there)");
  };
  for (std::size_t pi = 0; pi < plan.size(); ++pi) {
    const detail::WalkLayer& l = *plan[pi].layer;
    const at::Tensor& w = plan[pi].float_weight;
    LayerReport& lr = rep.layers[plan[pi].report_index];
    // The rotation: its block from the option, or the layer's weight-format block.
    std::int64_t block = o.hadamard_block;
    if (block < 0) {
      if (plan[pi].format.granularity != Granularity::block)
        throw std::invalid_argument("layer " + l.info.name + ": --rotate hadamard takes its block from the weight format's, "
                                    "and " + format_name(plan[pi].format) + " has no blocks; give one (hadamard:B)");
      block = plan[pi].format.block_size;
    }
    if (block > 0 && (block & (block - 1)) != 0)
      throw std::invalid_argument("layer " + l.info.name + ": the Hadamard rotation needs a power-of-two block, got " +
                                  std::to_string(block));
    std::string why = block > 0 ? detail::rotation_unfit_reason(block, l.sites, l.layout, w) : std::string();
    if (!why.empty()) {
      unfit(l, "the Hadamard rotation", why);
      lr.act_status = "not rotated: " + why;
      block = 0;
    }
    std::optional<Format> af = act.format;
    for (const auto& lf : act.layer_formats)
      if (matches(lf.pattern, l.info.name)) {
        af = lf.format;
        break;
      }
    why = af ? detail::activation_unfit_reason(*af, l.sites, l.layout, w) : std::string();
    if (!why.empty()) {
      unfit(l, "activation format " + format_name(*af), why);
      lr.act_status += (lr.act_status.empty() ? "" : "; ") + std::string("activations in float: ") + why;
      af.reset();
    }
    if (af && takes_static_amax(*af) && calibration.empty())
      throw std::invalid_argument("layer " + l.info.name + ": activation format " + format_name(*af) +
                                  " has a static amax, which is measured on calibration data; none was given");
    const bool smooth = o.smooth_alpha >= 0 || o.smooth_pow2;
    if (!af && block == 0 && !smooth) continue;  // nothing on this layer's input
    for (const detail::Site& site : l.sites) {
      detail::InputTransform t;
      t.node_index = site.node_index;
      t.op = site.op;
      t.data_input = site.data_input;
      t.axis = detail::activation_axis(site, w);
      t.hadamard_block = block;
      t.format = af;
      if (af && af->has_axis()) t.format->axis = t.axis;
      transforms.push_back(t);
      act_plan.push_back(pi);
    }
    if (af) lr.act_format = format_name(*transforms.back().format);
    lr.hadamard_block = block;
  }
  if ((o.smooth_alpha >= 0 || o.smooth_pow2) && calibration.empty())
    throw std::invalid_argument("smoothing (--smooth) measures each input channel's range on calibration data; none was given");
  if (o.smooth_alpha > 1) throw std::invalid_argument("the smoothing strength alpha must be in [0, 1]");

  // The weights that go with the input transforms, in both copies, so that the float model stays
  // the same function up to rounding (its stream runs through the same smoothing and rotation):
  // W·x = (W·diag(s)·H)(H·diag(1/s)·x). `smooth[pi]`: the layer's s along its weight's reduction axis.
  auto transform_weights = [&](const std::map<std::size_t, at::Tensor>& smooth) {
    for (std::size_t pi = 0; pi < plan.size(); ++pi) {
      const detail::WalkLayer& l = *plan[pi].layer;
      const std::int64_t block = rep.layers[plan[pi].report_index].hadamard_block;
      const auto sm = smooth.find(pi);
      if (block == 0 && sm == smooth.end()) continue;
      const int axis = detail::weight_reduction_axis(l.sites.front(), l.layout);
      for (torch::jit::Module* m : {&fm, &qm}) {
        at::Tensor p = parameter_of(*m, l.info.name);
        at::Tensor v = p;
        if (sm != smooth.end()) v = smooth_weight(v, sm->second, axis);
        if (block > 0) v = hadamard(v, block, axis);
        p.copy_(v);
      }
    }
  };

  auto report_progress = [&](Progress pr) {
    pr.layers = todo;
    pr.elapsed_s = seconds_since(start);
    if (measure) pr.pass = "sensitivity";
    if (o.progress && !o.progress(pr)) throw Stopped();
  };

  // The format search: each candidate format x clip ratio rounded to nearest, the one with the least
  // relative output error kept (the first of equal ones, in the order given).
  auto search_format = [&](Planned& p, const at::Tensor& w, const detail::Grams& grams) {
    const std::vector<Format> formats = o.search_formats.empty() ? std::vector<Format>{p.format} : o.search_formats;
    const std::vector<double> clips = o.search_clips.empty() ? std::vector<double>{1.0} : o.search_clips;
    const double energy = grams.target_energy(w);
    double best = -1;
    for (const Format& f : formats)
      for (const double c : clips) {
        WeightGrid g(f, w.size(0), w.size(1), w.data_ptr<double>(), c);
        at::Tensor r = w.clone();
        detail::round_to_nearest(r, 0, g);
        const double e = detail::relative_output_error(w, r, grams, energy);
        if (best < 0 || e < best) {
          best = e;
          p.format = f;
          p.clip = c;
        }
      }
    rep.layers[p.report_index].format = format_name(p.format);
    p.search_error = best;
  };

  // The method's Ŵ for w [rows, cols] (float64) on `grid`, group by group (grams: nullptr without
  // calibration data); the groups' notes averaged into `notes`. `method`: the run's own by default.
  // rounded: where set, receives the values the method rounded (w itself for one that rounds to
  // nearest).
  auto solve_groups = [&](const at::Tensor& w, WeightGrid& grid, const detail::Grams* grams, std::map<std::string, double>& notes,
                          const detail::AccumulatorBound* bound = nullptr, const detail::MethodPlugin* method = nullptr,
                          const detail::MethodValues* options = nullptr, at::Tensor* rounded = nullptr) {
    if (!method) method = &plugin;
    if (!options) options = &values;
    if (rounded) *rounded = w.clone();
    const std::int64_t rows = w.size(0);
    const std::int64_t groups = grams ? grams->xhat_xhat.size(0) : 1;
    if (rows % groups != 0) throw std::logic_error("weight rows do not split into the layer's groups");
    const std::int64_t per = rows / groups;
    at::Tensor q = w.clone();
    for (std::int64_t gi = 0; gi < groups; ++gi) {
      detail::GroupProblem gp;
      gp.w = q.narrow(0, gi * per, per).contiguous();
      if (grams) {
        gp.g = grams->xhat_xhat[gi];
        gp.d = grams->diff_xhat[gi];
        for (int h = 0; h < 2; ++h) {
          gp.half_g[std::size_t(h)] = grams->half_xhat_xhat[std::size_t(h)][gi];
          gp.half_d[std::size_t(h)] = grams->half_diff_xhat[std::size_t(h)][gi];
        }
      }
      gp.row0 = gi * per;
      gp.grid = &grid;
      gp.options = options;
      gp.accumulator = bound && bound->bits > 0 ? bound : nullptr;
      gp.record_rounded = rounded != nullptr;
      const at::Tensor qg = method->solve(gp);
      q.narrow(0, gi * per, per).copy_(qg);
      if (rounded && gp.rounded.defined()) rounded->narrow(0, gi * per, per).copy_(gp.rounded);
      for (const auto& [k, v] : gp.notes) notes[k] += v / double(groups);
    }
    return q;
  };

  // Ŵ [rows, cols] back in a parameter's layout (its shape; rows x cols of a transposed matmul weight).
  auto in_parameter_layout = [](const at::Tensor& q, const at::Tensor& param, WeightLayout layout) {
    if (layout == WeightLayout::rows) return q.reshape(param.sizes());
    std::vector<std::int64_t> s(param.sizes().begin(), param.sizes().end());
    std::swap(s[s.size() - 1], s[s.size() - 2]);
    return q.reshape(s).transpose(-1, -2);
  };

  // Mixed precision's end-to-end probe: the quantized copy with the input transforms, whose output
  // with float weights is the reference (log-probabilities per probe batch).
  std::optional<torch::jit::Module> probe;
  std::vector<at::Tensor> probe_reference;
  std::size_t probe_batches = 0;
  auto probe_forward = [&](std::size_t b) {
    SingleThreaded forward_threads(!o.threaded_forward && device.is_cpu());
    return detail::probe_output(probe->forward(batch_on(calibration[b], device)), o.mixed.probes_kl());
  };
  // The model's output with layer p's weight replaced by Ŵ against the reference: the mean KL, or
  // the relative squared error over the probe batches (1e30 where it is not finite).
  auto probe_error = [&](const Planned& p, const at::Tensor& q) {
    at::Tensor param = parameter_of(*probe, p.layer->info.name);
    const at::Tensor saved = param.clone();
    param.copy_(in_parameter_layout(q, param, p.layer->layout).to(param.scalar_type()));
    double kl = 0, err = 0, energy = 0;
    for (std::size_t b = 0; b < probe_batches; ++b) {
      const at::Tensor out = probe_forward(b);
      if (o.mixed.probes_kl()) {
        kl += detail::mean_kl(probe_reference[b], out);
      } else {
        const auto [e, n] = detail::squared_error(probe_reference[b], out);
        err += e;
        energy += n;
      }
    }
    param.copy_(saved);
    if (o.mixed.probes_kl()) return kl / double(probe_batches);
    const double r = energy > 0 ? err / energy : err;
    return std::isfinite(r) ? r : 1e30;
  };

  // The sensitivity pass: layer p solved with each candidate on its statistics, nothing written.
  // The gain sensitivities probe one candidate, the one of the median output error (the lower
  // median), and scale the others' squared output errors by its ratio: the output's divergence is,
  // to second order, a quadratic form of the layer's output error, which the ratio reads along one
  // candidate's noise. The median's noise is the most typical of the layer's candidates; the
  // loudest is often an outlier-driven error of another shape (docs/design/0014-mixed-precision.md).
  auto measure_candidates = [&](Planned& p, const at::Tensor& w, const detail::Grams& grams) {
    LayerReport& lr = rep.layers[p.report_index];
    const bool correct_bias = o.bias_correction && !p.layer->bias.empty();
    const double energy = grams.target_energy(w);
    const std::vector<std::optional<Format>> candidates =
        p.pinned ? std::vector<std::optional<Format>>{p.format} : o.mixed.candidates;
    (*measured)[p.layer->info.name] = candidates;
    const bool every = o.mixed.probes_every_candidate();
    // (index in lr.candidates, Ŵ in the probe's parameter type, as the probe would convert it) for the gain
    std::vector<std::pair<std::size_t, at::Tensor>> quantized;
    for (const auto& f : candidates) {
      LayerReport::Candidate c;
      c.format = f ? format_name(*f) : "float";
      if (!f) {
        c.bytes = lr.float_bytes;
        if (o.mixed.probes()) c.e2e = 0;
      } else {
        WeightGrid grid(*f, w.size(0), w.size(1), w.data_ptr<double>());
        std::map<std::string, double> notes;
        const at::Tensor q = solve_groups(w, grid, &grams, notes);
        const double e = detail::relative_output_error(w, q, grams, energy);
        c.relative_error = correct_bias ? detail::corrected_output_error(e, detail::bias_shift(w, q, grams), grams, energy) : e;
        c.bytes = stored_bytes(grid.encoded());
        if (every) c.e2e = probe_error(p, q);
        else if (o.mixed.probes())
          quantized.emplace_back(lr.candidates.size(), q.to(parameter_of(*probe, p.layer->info.name).scalar_type()));
      }
      c.cost = every ? c.e2e : c.relative_error * c.relative_error;
      lr.candidates.push_back(c);
    }
    // The lower median by output error of the candidates that change the output (the others cost
    // 0 at any gain; with none, nothing is probed); equal errors in the order given.
    const auto exact = std::remove_if(quantized.begin(), quantized.end(),
                                      [&](const auto& c) { return !(lr.candidates[c.first].relative_error > 0); });
    quantized.erase(exact, quantized.end());
    if (quantized.empty()) return;
    std::stable_sort(quantized.begin(), quantized.end(), [&](const auto& a, const auto& b) {
      return lr.candidates[a.first].relative_error < lr.candidates[b.first].relative_error;
    });
    const auto& [index, q] = quantized[(quantized.size() - 1) / 2];
    LayerReport::Candidate& probed = lr.candidates[index];
    probed.e2e = probe_error(p, q);
    const double gain = probed.e2e / (probed.relative_error * probed.relative_error);
    lr.notes["output_gain"] = gain;
    for (LayerReport::Candidate& c : lr.candidates)
      if (c.format != "float") c.cost = &c == &probed ? probed.e2e : gain * c.relative_error * c.relative_error;
  };

  // Quantizes one planned layer from its statistics (grams: nullptr without calibration data).
  auto solve = [&](Planned& p, const detail::Grams* grams) {
    const detail::WalkLayer& l = *p.layer;
    LayerReport& lr = rep.layers[p.report_index];
    const auto t0 = Clock::now();
    try {
      SingleThreaded one_thread;
      const at::Tensor param = parameter_of(qm, l.info.name);
      const std::int64_t cols = p.cols;
      const at::Tensor w = weight_matrix(param.to(at::kCPU), l.layout, cols).to(at::kDouble).contiguous();
      const std::int64_t rows = w.size(0);
      if (measure) {
        measure_candidates(p, w, *grams);
        lr.status = "measured";
        const double s = seconds_since(t0);
        lr.seconds += s;
        rep.solve_seconds += s;
        p.solved = true;
        return;
      }
      if (grams && (!o.search_formats.empty() || !o.search_clips.empty())) search_format(p, w, *grams);
      const std::optional<detail::AccumulatorBound> bound = detail::accumulator_bound(
          o.accumulator, p.format, lr.act_format, cols, columns_per_channel(p));
      WeightGrid grid(p.format, rows, cols, w.data_ptr<double>(), p.clip);
      std::map<std::string, double> notes;
      at::Tensor to_round = w;
      if (p.learned) {  // a method that reconstructs spans learned the scales and the division
        p.learned->fix_scales(grid);
        to_round = p.learned->divided();
      } else if (plugin.info.reconstructs_spans) {
        throw std::logic_error("qcast: layer " + l.info.name + " was not trained in a span");
      }
      const at::Tensor q = solve_groups(to_round, grid, grams, notes, bound ? &*bound : nullptr);
      for (const auto& [k, v] : notes) lr.notes[k] = v;  // beside what the transforms noted
      if (p.search_error >= 0) {
        lr.notes["clip"] = p.clip;
        lr.notes["search_rtn_error"] = p.search_error;
      }
      const bool correct_bias = o.bias_correction && grams && !l.bias.empty();
      if (o.bias_correction && grams && l.bias.empty()) lr.notes["no_bias"] = 1;
      const at::Tensor shift = correct_bias ? detail::bias_shift(w, q, *grams) : at::Tensor();
      if (grams) {
        const double energy = grams->target_energy(w);
        // With bias correction both errors are those after the correction (of each one's own shift).
        auto error_of = [&](const at::Tensor& wq, const at::Tensor& shift) {
          const double e = detail::relative_output_error(w, wq, *grams, energy);
          return correct_bias ? detail::corrected_output_error(e, shift, *grams, energy) : e;
        };
        lr.relative_error = error_of(q, shift);
        if (plugin.info.name == "rtn") {
          lr.rtn_relative_error = lr.relative_error;
        } else if (p.search_error >= 0 && !correct_bias) {
          lr.rtn_relative_error = p.search_error;  // the search rounded this very grid to nearest
        } else {
          WeightGrid rtn_grid(p.format, rows, cols, w.data_ptr<double>(), p.clip);
          at::Tensor r = w.clone();
          detail::round_to_nearest(r, 0, rtn_grid);
          lr.rtn_relative_error = error_of(r, correct_bias ? detail::bias_shift(w, r, *grams) : at::Tensor());
        }
      }
      if (correct_bias) {
        at::Tensor bias = parameter_of(qm, l.bias);
        if (bias.numel() != shift.numel())
          throw std::runtime_error("bias " + l.bias + " has " + std::to_string(bias.numel()) + " elements for " +
                                   std::to_string(shift.numel()) + " outputs");
        bias.add_(shift.reshape(bias.sizes()).to(bias.device(), bias.scalar_type()));
        lr.notes["bias_shift"] = shift.abs().mean().item<double>();
      }
      // Write Ŵ into the copy, in the parameter's layout, dtype and device.
      const at::Tensor qp = in_parameter_layout(q, param, l.layout);
      param.copy_(qp.to(param.scalar_type()));
      PackedWeight pw;
      pw.name = l.info.name;
      pw.shape = l.info.shape;
      pw.layout = l.layout;
      pw.matrix = grid.encoded();
      if (bound) lr.accumulator = accumulator_report(*bound, pw.matrix);
      if (group) check_same_weights(*group, pw.matrix, l.info.name);
      lr.quantized_bytes = stored_bytes(pw.matrix);
      res.packed.push_back(std::move(pw));
    } catch (const Stopped&) {
      throw;
    } catch (const std::exception& e) {
      throw std::runtime_error("layer " + l.info.name + " (" + l.info.op + "): " + detail::error_summary(e));
    }
    lr.status = "quantized";
    const double s = seconds_since(t0);
    lr.seconds += s;
    rep.solve_seconds += s;
    p.solved = true;
  };

  // One forward pass of the float model over the calibration set, ahead of the walk: for each batch
  // the stages up to the last one with a transform of interest (on the device, one intra-op thread
  // unless threaded_forward), handing `at` the transforms at each cut with the inputs the cut's node
  // received. `of_interest`: walk position -> indices into `transforms`.
  auto float_pass = [&](const detail::StagedForward& staged, const std::string& what,
                        const std::map<std::size_t, std::vector<std::size_t>>& of_interest,
                        const std::function<void(std::size_t transform, const std::vector<c10::IValue>& inputs)>& at) {
    std::size_t last_stage = 0;
    for (std::size_t k = 0; k < staged.stages(); ++k)
      if (of_interest.count(staged.cut(k))) last_stage = k;
    const auto t0 = Clock::now();
    for (std::size_t b = 0; b < calibration.size(); ++b) {
      Progress pr;
      pr.phase = Progress::Phase::activation_statistics;
      pr.name = what;
      pr.batch = int(b) + 1;
      pr.batches = int(calibration.size());
      report_progress(pr);
      SingleThreaded forward_threads(!o.threaded_forward && device.is_cpu());
      detail::Env env = staged.initial(batch_on(calibration[b], device));
      for (std::size_t k = 0; k <= last_stage; ++k) {
        std::vector<c10::IValue> in;
        try {
          in = staged.run(k, fm, env);
        } catch (const c10::Error& e) {
          throw std::invalid_argument("calibration batch " + std::to_string(b + 1) + " (" + batch_text(calibration[b]) +
                                      ") does not fit the model's forward: " + detail::error_summary(e));
        }
        const auto it = of_interest.find(staged.cut(k));
        if (it == of_interest.end()) continue;
        for (std::size_t i : it->second) at(i, in);
      }
    }
    rep.forward_seconds += seconds_since(t0);
  };

  // The activation format search (search_act_formats): for each layer with an activation quantizer,
  // every candidate that fits it (x each clip ratio, for those with a static amax: the max of the
  // float inputs times the ratio) is scored by ||W·(Q(X) - X)||² over the calibration set, summed
  // over the layer's sites (one pass for the maxima where a candidate needs them, one for the
  // errors); the best replaces the layer's format. Its amax is then fixed: the statistic of
  // `act.amax` does not apply to searched layers.
  auto search_activation_formats = [&](const detail::StagedForward& staged) {
    if (o.search_act_formats.empty()) return;
    const std::vector<double> clips = o.search_clips.empty() ? std::vector<double>{1.0} : o.search_clips;
    struct Candidate {
      Format format;
      double clip;
      bool fits;
    };
    std::map<std::size_t, std::vector<Candidate>> candidates;  // plan entry -> its candidates
    std::map<std::size_t, std::vector<std::size_t>> at_cut;
    bool needs_max = false;
    for (std::size_t i = 0; i < transforms.size(); ++i) {
      if (!transforms[i].format) continue;
      at_cut[transforms[i].node_index].push_back(i);
      auto& c = candidates[act_plan[i]];
      if (!c.empty()) continue;
      const detail::WalkLayer& l = *plan[act_plan[i]].layer;
      for (const Format& f : o.search_act_formats) {
        const std::string why = detail::activation_unfit_reason(f, l.sites, l.layout, plan[act_plan[i]].float_weight);
        const bool fixed = takes_static_amax(f);
        needs_max = needs_max || fixed;
        for (const double clip : fixed ? clips : std::vector<double>{1.0}) c.push_back({f, clip, why.empty()});
      }
    }
    if (candidates.empty()) return;
    // The largest finite |x| per transform: AmaxCalibration's max statistic.
    ActivationOptions by_max;
    detail::AmaxCalibration maxima(by_max, std::vector<Format>(transforms.size(), Format()));
    if (needs_max)
      float_pass(staged, "activation search, maxima", at_cut, [&](std::size_t i, const std::vector<c10::IValue>& in) {
        maxima.observe(0, i, in.at(std::size_t(transforms[i].data_input)).toTensor());
      });
    std::vector<float> max(transforms.size(), 0.0f);
    for (std::size_t i = 0; i < max.size(); ++i) max[i] = maxima.amax(i);
    std::map<std::size_t, std::vector<double>> error;  // plan entry -> per candidate
    std::map<std::size_t, double> energy;              // plan entry -> ||W·X||²
    auto cast_of = [&](const at::Tensor& x, std::size_t i, const Candidate& c) {
      Format f = c.format;
      if (f.has_axis()) f.axis = transforms[i].axis;
      if (!takes_static_amax(f)) return qcast::cast(x, f);
      return max[i] > 0 ? cast_calibrated(x, f, float(double(max[i]) * c.clip)) : x;
    };
    std::map<std::size_t, at::Tensor> weights;         // plan entry -> W [rows, cols], float32
    float_pass(staged, "activation search, errors", at_cut, [&](std::size_t i, const std::vector<c10::IValue>& in) {
      const std::size_t pi = act_plan[i];
      const Planned& p = plan[pi];
      const detail::Site& site = p.layer->sites[site_at_of(p, transforms[i].node_index)];
      const at::Tensor x = in.at(std::size_t(transforms[i].data_input)).toTensor();
      at::Tensor& w = weights[pi];
      if (!w.defined()) w = weight_matrix(parameter_of(fm, p.layer->info.name), p.layer->layout, p.cols).to(at::kFloat);
      const auto& cands = candidates[pi];
      auto& errs = error[pi];
      errs.resize(cands.size(), 0.0);
      bool energy_summed = false;  // ||W·X||² from the first candidate that fits, whichever it is
      for (std::size_t c = 0; c < cands.size(); ++c) {
        if (!cands[c].fits) continue;
        std::vector<c10::IValue> xq = in;
        xq[std::size_t(transforms[i].data_input)] = cast_of(x, i, cands[c]);
        detail::for_each_input_chunk(site, in, xq, p.float_weight, p.cols,
                                     [&](const at::Tensor& a, const at::Tensor& b, std::int64_t) {
                                       const at::Tensor wg = w.reshape({a.size(0), -1, p.cols});
                                       errs[c] += at::bmm(wg, (b - a).to(at::kFloat)).to(at::kDouble).pow(2).sum().item<double>();
                                       if (!energy_summed)
                                         energy[pi] += at::bmm(wg, a.to(at::kFloat)).to(at::kDouble).pow(2).sum().item<double>();
                                     });
        energy_summed = true;
      }
    });
    for (auto& [pi, errs] : error) {
      const auto& cands = candidates[pi];
      std::size_t best = cands.size();
      for (std::size_t c = 0; c < cands.size(); ++c)
        if (cands[c].fits && (best == cands.size() || errs[c] < errs[best])) best = c;
      if (best == cands.size()) continue;  // no candidate fits: the layer keeps its format
      LayerReport& lr = rep.layers[plan[pi].report_index];
      lr.act_amax = -1;
      for (std::size_t i = 0; i < transforms.size(); ++i) {
        if (act_plan[i] != pi || !transforms[i].format) continue;
        Format f = cands[best].format;
        if (f.has_axis()) f.axis = transforms[i].axis;
        transforms[i].format = f;
        transforms[i].amax.reset();
        transforms[i].searched = true;
        if (takes_static_amax(f) && max[i] > 0) transforms[i].amax = float(double(max[i]) * cands[best].clip);
        lr.act_format = format_name(f);
        if (transforms[i].amax && lr.act_amax < 0) lr.act_amax = double(*transforms[i].amax);
      }
      lr.notes["act_clip"] = cands[best].clip;
      lr.notes["act_search_error"] = energy[pi] > 0 ? std::sqrt(errs[best] / energy[pi]) : 0;
    }
  };

  // The static amax of the per-tensor and two-level activation quantizers: the float stream's inputs
  // of their layers, one or two passes over the calibration set ahead of the walk (each a forward
  // pass of the float model up to the last such layer). A quantizer whose inputs were all zero is
  // dropped: its layer's activations stay in float.
  auto measure_static_amax = [&](const detail::StagedForward& staged) {
    std::vector<std::size_t> which;
    std::vector<Format> formats;
    for (std::size_t i = 0; i < transforms.size(); ++i)
      if (transforms[i].format && takes_static_amax(*transforms[i].format) && !transforms[i].searched) {
        which.push_back(i);
        formats.push_back(*transforms[i].format);
      }
    if (which.empty()) return;
    detail::AmaxCalibration cal(act, formats);
    std::map<std::size_t, std::vector<std::size_t>> at_cut;  // walk position -> transforms there
    std::map<std::size_t, std::size_t> quantizer;            // transform -> index into `which`
    for (std::size_t j = 0; j < which.size(); ++j) {
      at_cut[transforms[which[j]].node_index].push_back(which[j]);
      quantizer[which[j]] = j;
    }
    for (int pass = 0; pass < cal.passes(); ++pass)
      float_pass(staged, "activation amax, pass " + std::to_string(pass + 1) + "/" + std::to_string(cal.passes()), at_cut,
                 [&](std::size_t i, const std::vector<c10::IValue>& in) {
                   cal.observe(pass, quantizer.at(i), in.at(std::size_t(transforms[i].data_input)).toTensor());
                 });
    // Across ranks: the largest amax of any rank's share (the max rule only; the others refuse a group).
    at::Tensor amaxes = at::empty({std::int64_t(which.size())}, at::kFloat);
    for (std::size_t j = 0; j < which.size(); ++j) amaxes[std::int64_t(j)] = cal.amax(j);
    if (group) {
      std::vector<at::Tensor> t = {amaxes};
      group->max(t, "the activations' static amax");
      amaxes = t[0];
    }
    std::vector<bool> drop(transforms.size(), false);
    for (std::size_t j = 0; j < which.size(); ++j) {
      const float a = amaxes[std::int64_t(j)].item<float>();
      LayerReport& lr = rep.layers[plan[act_plan[which[j]]].report_index];
      if (a > 0) {
        transforms[which[j]].amax = a;
        if (lr.act_amax < 0) lr.act_amax = a;
      } else {
        drop[which[j]] = true;
        lr.act_status = "activations in float: its inputs were zero on the calibration set (amax 0)";
      }
    }
    for (std::size_t i = 0; i < transforms.size(); ++i)
      if (drop[i]) {
        transforms[i].format.reset();
        rep.layers[plan[act_plan[i]].report_index].act_format.clear();
      }
  };

  // SmoothQuant's scales: s_j = max|X_j|^alpha / max|W_j|^(1-alpha) per input channel j of each
  // layer, max|X_j| over the float stream's inputs (all its sites, the whole calibration set, one
  // forward pass of the float model) and max|W_j| over the weight's other axes; 1 where either is
  // 0. Sets each transform's 1/s and returns s per plan entry.
  std::vector<std::pair<detail::NormFold, at::Tensor>> norm_scales;  // each folded LayerNorm and its s
  std::map<std::size_t, std::size_t> fold_of;  // plan entry -> its LayerNorm in norm_scales (no input_scale for it)
  auto measure_smoothing = [&](const std::vector<std::size_t>& cuts) {
    std::map<std::size_t, at::Tensor> smooth;
    if (o.smooth_alpha < 0 && !o.smooth_pow2) return smooth;
    const detail::StagedForward plain(fm, cuts);
    std::map<std::size_t, std::vector<std::size_t>> at_cut;  // walk position -> transforms there
    for (std::size_t i = 0; i < transforms.size(); ++i) at_cut[transforms[i].node_index].push_back(i);
    std::map<std::size_t, at::Tensor> channel_max;  // plan entry -> max |x| per input channel
    float_pass(plain, "smoothing ranges", at_cut, [&](std::size_t i, const std::vector<c10::IValue>& in) {
      const at::Tensor x = in.at(std::size_t(transforms[i].data_input)).toTensor().detach().to(at::kFloat).abs();
      const std::int64_t axis = transforms[i].axis < 0 ? transforms[i].axis + x.dim() : transforms[i].axis;
      std::vector<std::int64_t> other;
      for (std::int64_t d = 0; d < x.dim(); ++d)
        if (d != axis) other.push_back(d);
      const at::Tensor m = at::nan_to_num(x, 0.0, 0.0, 0.0).amax(other).to(at::kCPU);
      at::Tensor& acc = channel_max[act_plan[i]];
      acc = acc.defined() ? at::maximum(acc, m) : m;
    });
    // LayerNorms that the division folds into: their layers share one s, from the max of their
    // weights' channel maxima (their inputs are one value).
    std::vector<std::size_t> smoothed;
    std::vector<const detail::WalkLayer*> smoothed_layers;
    for (const auto& [pi, xmax] : channel_max) {
      smoothed.push_back(pi);
      smoothed_layers.push_back(plan[pi].layer);
    }
    const std::vector<detail::NormFold> folds =
        o.smooth_fold ? detail::foldable_norms(fm, smoothed_layers) : std::vector<detail::NormFold>{};
    for (std::size_t f = 0; f < folds.size(); ++f)
      for (std::size_t i : folds[f].layers) fold_of[smoothed[i]] = f;
    auto channel_weight_max = [&](std::size_t pi, std::int64_t channels) {
      const detail::WalkLayer& l = *plan[pi].layer;
      const int axis = detail::weight_reduction_axis(l.sites.front(), l.layout);
      return weight_channel_max(plan[pi].float_weight, axis, channels);
    };
    for (const auto& [pi, xmax] : channel_max) {
      at::Tensor wmax = channel_weight_max(pi, xmax.numel());
      const auto fold = fold_of.find(pi);
      if (fold != fold_of.end())
        for (std::size_t i : folds[fold->second].layers) wmax = at::maximum(wmax, channel_weight_max(smoothed[i], xmax.numel()));
      const at::Tensor xd = xmax.to(at::kDouble), wd = wmax.to(at::kDouble);
      at::Tensor sv;
      if (o.smooth_pow2) {
        // LLM-FP4's per-channel exponent bias: s_j = 2^(floor(log2 max|X_j|) - floor(log2 max_j' max|X_j'|)),
        // a power of two <= 1 that gives every channel the tensor's top exponent; the weights
        // absorb it exactly.
        const double top = std::floor(std::log2(xd.max().item<double>()));
        sv = at::exp2(at::floor(at::log2(xd)) - top);
        sv = at::where((xd > 0) & at::isfinite(sv), sv, at::ones_like(sv)).clamp(std::ldexp(1.0, -60), 1.0).to(at::kFloat);
      } else {
        sv = xd.pow(o.smooth_alpha) / wd.pow(1 - o.smooth_alpha);
        sv = at::where((xd > 0) & (wd > 0) & at::isfinite(sv), sv, at::ones_like(sv)).clamp(1e-5, 1e5).to(at::kFloat);
      }
      smooth[pi] = sv;
      rep.layers[plan[pi].report_index].notes["smooth_max"] = sv.max().item<double>();
      rep.layers[plan[pi].report_index].notes["smooth_min"] = sv.min().item<double>();
      if (fold != fold_of.end()) rep.layers[plan[pi].report_index].notes["smooth_folded"] = 1;
    }
    for (const detail::NormFold& f : folds) norm_scales.emplace_back(f, smooth.at(smoothed[f.layers.front()]));
    // 1/s on each site's input, shaped to broadcast along its reduction axis, in the weight's dtype
    // (not where it is folded into a LayerNorm).
    for (std::size_t i = 0; i < transforms.size(); ++i) {
      const auto it = smooth.find(act_plan[i]);
      if (it == smooth.end() || fold_of.count(act_plan[i])) continue;
      const at::Tensor w = plan[act_plan[i]].float_weight;
      const int in_dim = -transforms[i].axis;  // trailing dimensions from the axis on
      std::vector<std::int64_t> shape(std::size_t(in_dim), 1);
      shape[0] = -1;
      transforms[i].smooth_inv = (1.0 / it->second).to(device, w.scalar_type()).reshape(shape).contiguous();
    }
    return smooth;
  };

  if (calibration.empty()) {
    transform_weights({});
    for (std::size_t i = 0; i < plan.size(); ++i) {
      Progress pr;
      pr.phase = Progress::Phase::solve;
      pr.layer = int(i) + 1;
      pr.name = plan[i].layer->info.name;
      report_progress(pr);
      solve(plan[i], nullptr);
    }
  } else if (!plan.empty()) {
    // Cuts: every site of every planned layer.
    std::vector<std::size_t> cuts;
    std::map<std::size_t, std::pair<std::size_t, std::size_t>> site_at;  // walk position -> (plan, site)
    for (std::size_t pi = 0; pi < plan.size(); ++pi)
      for (std::size_t s = 0; s < plan[pi].layer->sites.size(); ++s) {
        cuts.push_back(plan[pi].layer->sites[s].node_index);
        site_at[plan[pi].layer->sites[s].node_index] = {pi, s};
      }
    const std::map<std::size_t, at::Tensor> smooth = measure_smoothing(cuts);
    transform_weights(smooth);
    // The folds: γ/s and β/s in both copies, so the LayerNorm's output is the one divided by s.
    for (const auto& [f, sv] : norm_scales)
      for (torch::jit::Module* m : {&fm, &qm})
        for (const std::string& name : {f.weight, f.bias})
          if (!name.empty()) {
            at::Tensor p = parameter_of(*m, name);
            p.copy_(p / sv.to(p.device(), p.scalar_type()));
          }
    for (const auto& [pi, sv] : smooth)
      if (!fold_of.count(pi))
        res.input_scales[plan[pi].layer->info.name] = (1.0 / sv.to(at::kDouble)).to(at::kFloat).cpu();
    // The float stream runs through the smoothing and the rotations, the quantized one through the
    // casts too.
    std::vector<detail::InputTransform> float_transforms;
    for (const auto& t : transforms)
      if (t.hadamard_block > 0 || t.smooth_inv.defined()) float_transforms.push_back(t.float_stream());
    const detail::StagedForward staged(fm, cuts, float_transforms);
    const std::size_t K = staged.stages(), B = calibration.size();
    search_activation_formats(staged);
    measure_static_amax(staged);
    if (measure && o.mixed.probes()) {
      probe.emplace(detail::with_input_transforms(qm.deepcopy(), transforms, device));
      probe_batches = o.mixed.probe_batches < 0 ? B : std::min<std::size_t>(B, std::size_t(o.mixed.probe_batches));
      for (std::size_t b = 0; b < probe_batches; ++b) probe_reference.push_back(probe_forward(b));
    }
    // The quantized stream runs through the same graph with the activation quantizers inserted.
    const detail::StagedForward staged_q(fm, cuts, transforms);
    std::map<std::size_t, const detail::InputTransform*> transform_at;  // walk position -> its cast
    for (const auto& c : transforms) transform_at[c.node_index] = &c;
    auto same_transforms = [&](std::size_t a, std::size_t b) {
      const auto ia = transform_at.find(a), ib = transform_at.find(b);
      if (ia == transform_at.end() || ib == transform_at.end()) return ia == transform_at.end() && ib == transform_at.end();
      return ia->second->same_transform(*ib->second);
    };
    rep.stages = std::int64_t(K);
    const std::int64_t budget =
        o.cache_mb >= 0 ? o.cache_mb * (std::int64_t(1) << 20) : detail::default_cache_bytes();
    // Two slots per batch, and two more where learned rounding walks a span with its start method.
    detail::BoundaryCache cache((start_plugin ? 4 : 2) * B, budget, o.spill_dir);
    auto slot_f = [](std::size_t b) { return 2 * b; };
    auto slot_q = [](std::size_t b) { return 2 * b + 1; };
    auto start_slot_f = [B](std::size_t b) { return 2 * B + 2 * b; };
    auto start_slot_q = [B](std::size_t b) { return 2 * B + 2 * b + 1; };
    // Runs stage k on the states in slots sf (float stream) and sq (quantized stream), on one
    // intra-op thread: LibTorch's CPU convolutions sum in an order that depends on the thread count
    // (measured on esrgan_medium_x2 in plain PyTorch). Returns the inputs of the site at cut k.
    auto run_both = [&](std::size_t k, std::size_t sf, std::size_t sq) {
      SingleThreaded forward_threads(!o.threaded_forward && device.is_cpu());
      std::pair<std::vector<c10::IValue>, std::vector<c10::IValue>> x;
      detail::Env ef = cache.take(sf);
      x.first = staged.run(k, fm, ef);
      cache.put(sf, std::move(ef));
      detail::Env eq = cache.take(sq);
      x.second = staged_q.run(k, qm, eq);
      cache.put(sq, std::move(eq));
      return x;
    };
    auto copy_of_batch = [&](std::size_t b) {  // each stream its own copy: a stage may write into its inputs
      return staged.initial(batch_on(calibration[b], device));
    };
    for (std::size_t b = 0; b < B; ++b) {
      cache.put(slot_f(b), copy_of_batch(b));
      cache.put(slot_q(b), copy_of_batch(b));
    }

    // A copy of the state in `slot` for stages to run on, the cached one left as it was: a deep copy
    // where one of those stages writes into tensors in place, a shallow one otherwise.
    auto copy_of_state = [&](std::size_t slot, bool writes) {
      detail::Env e = cache.take(slot);
      detail::Env c = writes ? deep_copy(e) : e;
      cache.put(slot, std::move(e));
      return c;
    };

    // Adds one site's captured inputs on both streams to the layer's statistics.
    auto add_site = [&](detail::Grams& grams, const Planned& p, std::size_t s, std::size_t b,
                        const std::vector<c10::IValue>& xf, const std::vector<c10::IValue>& xq) {
      if (detail::capture_observer()) detail::capture_observer()(p.layer->info.name, s, b, xf, xq);
      const auto t0 = Clock::now();
      try {
        detail::for_each_input_chunk(p.layer->sites[s], xf, xq, p.float_weight, p.cols,
                                     [&](const at::Tensor& a, const at::Tensor& b, std::int64_t n) { grams.add(a, b, n); });
      } catch (const c10::Error& e) {
        throw std::invalid_argument("calibration batch " + std::to_string(b + 1) + " (" + batch_text(calibration[b]) +
                                    "): the input of layer " + p.layer->info.name + " does not fit its weight: " +
                                    detail::error_summary(e));
      }
      const double sec = seconds_since(t0);
      rep.statistics_seconds += sec;
      rep.layers[p.report_index].seconds += sec;
    };

    // The statistics of the last solved single-site layer, reused by the next layer when it reads the
    // same value in the same way with nothing written in between (q, k and v of attention).
    std::optional<detail::Grams> last_grams;
    std::size_t last_cut = 0;

    // The start method's walk through the span [k, end) (reconstruct_span): each member solved by
    // that method and installed into the quantized copy, the values it rounded left in `starts`
    // (one per member). Layer pi, at cut k, is solved from `grams`; the others from statistics
    // gathered here, on copies of both streams' state at cut k (the walk's own state stays at k).
    // A layer used at several cuts of the span is solved after its last one.
    auto walk_span_with_start = [&](std::size_t k, std::size_t end, std::size_t pi, const detail::Grams& grams,
                                    const std::vector<std::size_t>& members, std::vector<at::Tensor>& starts) {
      auto solve_member = [&](std::size_t m, const detail::Grams& g) {
        const Planned& pm = plan[m];
        SingleThreaded one_thread;
        const at::Tensor param = parameter_of(qm, pm.layer->info.name);
        const at::Tensor w = weight_matrix(param.detach().to(at::kCPU), pm.layer->layout, pm.cols).to(at::kDouble).contiguous();
        WeightGrid grid(pm.format, w.size(0), w.size(1), w.data_ptr<double>(), pm.clip);
        std::map<std::string, double> notes;
        at::Tensor rounded;
        const at::Tensor q = solve_groups(w, grid, &g, notes, nullptr, start_plugin, &*start_values, &rounded);
        const std::size_t i = std::size_t(std::find(members.begin(), members.end(), m) - members.begin());
        starts.at(i) = rounded;
        set_parameter(qm, pm.layer->info.name, in_parameter_layout(q, param, pm.layer->layout).to(param.device(), param.scalar_type()));
      };
      solve_member(pi, grams);
      std::map<std::size_t, std::size_t> last_cut_of;  // member -> its last cut in the span
      for (std::size_t j = k; j < end; ++j) last_cut_of[site_at.at(staged.cut(j)).first] = j;
      if (end <= k + 1) return;
      for (std::size_t b = 0; b < B; ++b) {
        cache.put(start_slot_f(b), deep_copy(copy_of_state(slot_f(b), false)));
        cache.put(start_slot_q(b), deep_copy(copy_of_state(slot_q(b), false)));
      }
      std::map<std::size_t, detail::Grams> gathering;
      for (std::size_t j = k + 1; j < end; ++j) {
        const auto [pj, sj] = site_at.at(staged.cut(j));
        const bool gather = pj != pi;  // layer pi's statistics came from the walk
        detail::Grams* g = nullptr;
        if (gather) {
          const auto [at_pj, fresh] = gathering.try_emplace(pj);
          g = &at_pj->second;
          if (fresh) g->samples = sample_offset;
        }
        for (std::size_t b = 0; b < B; ++b) {
          const auto [xf, xq] = run_both(j, start_slot_f(b), start_slot_q(b));
          if (g)
            detail::for_each_input_chunk(plan[pj].layer->sites[sj], xf, xq, plan[pj].float_weight, plan[pj].cols,
                                         [&](const at::Tensor& a, const at::Tensor& c, std::int64_t n) { g->add(a, c, n); });
        }
        if (g && last_cut_of.at(pj) == j) {
          g->finish();
          solve_member(pj, *g);
          gathering.erase(pj);
        }
      }
      for (std::size_t b = 0; b < B; ++b) {  // the copies are dropped
        cache.take(start_slot_f(b));
        cache.take(start_slot_q(b));
      }
    };

    // FlexRound's training of the span that opens at cut k (layer pi's first site): the float
    // stream's outputs of the span are the targets; the quantized stream runs the span from its
    // state at cut k with the learned weights installed (autograd through the stage graphs). The
    // span ends at the first later cut that belongs to another span, or with the model. The weights
    // go back to float afterwards: each layer is then solved at its own cut from what was learned.
    //
    // With a start method (--start gptq|ed), the span's layers are first solved by that method, each
    // on the quantized stream through the ones before it as a run of that method would (from copies
    // of the state at cut k; `grams` are layer pi's, from the walk), and the training starts from
    // the values that method rounded: its result is the start, and the start kept if training does
    // not beat it.
    auto reconstruct_span = [&](std::size_t k, std::size_t pi, const detail::Grams& grams) {
      const std::size_t span = plan[pi].span;
      std::size_t end = K;  // K: the tail
      std::vector<std::size_t> members;
      for (std::size_t j = k; j < K; ++j) {
        const std::size_t pj = site_at.at(staged.cut(j)).first;
        if (plan[pj].span != span) {
          end = j;
          break;
        }
        if (std::find(members.begin(), members.end(), pj) == members.end()) members.push_back(pj);
      }
      bool writes = false;
      for (std::size_t j = k + 1; j <= std::min(end, K - 1); ++j) writes = writes || staged.writes(j);
      if (end == K) writes = writes || staged.tail_writes();
      const std::size_t out_input = end == K ? 0 : std::size_t(plan[site_at.at(staged.cut(end)).first]
                                                                   .layer->sites[site_at.at(staged.cut(end)).second]
                                                                   .data_input);
      // The span's outputs: what the span defines that is live at its end (a layer's output that
      // the next span reads, like q beside k and v, or a residual stream), with the input of the node
      // at the end as that node receives it (after its activation quantizer on the quantized
      // stream), or the model's outputs where the span runs to the end.
      std::vector<std::size_t> live;
      if (end < K) {
        const std::size_t captured = staged.cut_input(end, out_input)->unique();
        for (std::size_t id : staged.live_defined(k + 1, end))
          if (id != captured) live.push_back(id);
      }
      // The span's outputs from the state at cut k of one stream (a copy where a stage writes in place).
      auto run_span = [&](const detail::StagedForward& sf, const torch::jit::Module& m, std::size_t slot) {
        detail::Env c = copy_of_state(slot, writes);
        SingleThreaded forward_threads(!o.threaded_forward && device.is_cpu());
        std::vector<at::Tensor> out;
        const std::size_t last = std::min(end, K - 1);
        for (std::size_t j = k + 1; j <= last; ++j) {
          std::vector<c10::IValue> x = sf.run(j, m, c);
          if (j == end) tensors_of(x.at(out_input), out);
        }
        for (std::size_t id : live) {
          const auto it = c.find(id);
          if (it == c.end()) throw std::logic_error("qcast: a value live after the span is missing from a stream's state");
          tensors_of(it->second, out);
        }
        if (end == K) tensors_of(c10::ivalue::Tuple::create(sf.run_tail(m, c)), out);
        return out;
      };
      const auto t0 = Clock::now();
      std::vector<at::Tensor> originals;
      for (std::size_t m : members) originals.push_back(parameter_of(qm, plan[m].layer->info.name));
      std::vector<at::Tensor> starts(members.size());
      if (start_plugin) {
        try {
          walk_span_with_start(k, end, pi, grams, members, starts);
        } catch (...) {
          for (std::size_t i = 0; i < members.size(); ++i) set_parameter(qm, plan[members[i]].layer->info.name, originals[i]);
          throw;
        }
      }
      detail::SpanTraining t;
      t.iterations = int(values.integer("iters"));
      t.learning_rate = values.real("lr");
      t.seed = std::uint64_t(values.integer("seed"));
      t.held_out = std::size_t(values.integer("holdout"));
      for (std::size_t b = 0; b < B; ++b) t.targets.push_back(run_span(staged, fm, slot_f(b)));
      std::vector<detail::FlexRoundWeight> weights;
      for (std::size_t i = 0; i < members.size(); ++i) {
        const Planned& pm = plan[members[i]];
        const bool s4 = pm.layer->sites.front().kind == SiteKind::linear || pm.layer->sites.front().kind == SiteKind::conv;
        weights.emplace_back(weight_matrix(originals[i].detach().to(at::kCPU), pm.layer->layout, pm.cols).to(at::kDouble),
                             pm.format, s4 ? columns_per_channel(pm) : 0, starts[i]);
      }
      t.install = [&](std::size_t i, const at::Tensor& w_hat) {
        const Planned& pm = plan[members[i]];
        set_parameter(qm, pm.layer->info.name,
                      in_parameter_layout(w_hat, originals[i], pm.layer->layout).to(originals[i].device(), originals[i].scalar_type()));
      };
      t.output = [&](std::size_t b) { return run_span(staged_q, qm, slot_q(b)); };
      t.progress = [&](int it, double loss) {
        Progress pr;
        pr.phase = Progress::Phase::train;
        pr.layer = int(pi) + 1;
        pr.name = plan[pi].layer->info.name + (members.size() > 1 ? " (+" + std::to_string(members.size() - 1) + " in its span)" : "");
        pr.batch = it;
        pr.batches = t.iterations;
        pr.loss = loss;
        report_progress(pr);
      };
      detail::SpanResult r;
      try {
        // One intra-op thread for the whole training, not only the stages: the gradients of s1, s3
        // and s4 and the losses are sums whose order would otherwise follow the thread count.
        SingleThreaded training_threads(!o.threaded_forward && device.is_cpu());
        r = detail::train_span(weights, t);
      } catch (...) {
        for (std::size_t i = 0; i < members.size(); ++i) set_parameter(qm, plan[members[i]].layer->info.name, originals[i]);
        throw;
      }
      for (std::size_t i = 0; i < members.size(); ++i) {
        set_parameter(qm, plan[members[i]].layer->info.name, originals[i]);
        Planned& pm = plan[members[i]];
        pm.learned = std::make_shared<detail::FlexRoundWeight>(std::move(weights[i]));
        LayerReport& lr = rep.layers[pm.report_index];
        lr.notes["span_layers"] = double(members.size());
        lr.notes["span_error_start"] = r.error_before;
        lr.notes["span_error_learned"] = r.error_after;
        lr.notes["span_kept_start"] = r.kept_start ? 1 : 0;
        if (t.held_out > 0) {
          lr.notes["span_held_out_start"] = r.held_out_before;
          lr.notes["span_held_out_learned"] = r.held_out_after;
          lr.notes["span_kept_iteration"] = r.kept_iteration;
        }
      }
      const double sec = seconds_since(t0);
      rep.layers[plan[pi].report_index].seconds += sec;
      rep.solve_seconds += sec;
    };

    for (std::size_t k = 0; k < K; ++k) {
      const auto [pi, s] = site_at.at(staged.cut(k));
      Planned& p = plan[pi];
      const detail::Site& site = p.layer->sites[s];
      const bool solve_here = !p.solved;  // its first site: later ones were seen by the look-ahead
      bool reuse = false;
      if (solve_here && last_grams && p.layer->sites.size() == 1 && last_cut + 1 == k &&
          !staged.mutates_between(k - 1)) {
        const auto [ppi, ps] = site_at.at(staged.cut(k - 1));
        const detail::Site& prev = plan[ppi].layer->sites[ps];
        const bool same_kind = prev.kind == site.kind && site.kind != SiteKind::conv;
        reuse = same_kind && staged.cut_input(k, std::size_t(site.data_input)) ==
                                 staged.cut_input(k - 1, std::size_t(prev.data_input)) &&
                plan[ppi].layer->layout == p.layer->layout && plan[ppi].cols == p.cols &&
                same_transforms(staged.cut(k), staged.cut(k - 1));
      }
      detail::Grams grams;
      grams.samples = sample_offset;
      for (std::size_t b = 0; b < B; ++b) {
        Progress pr;
        pr.phase = Progress::Phase::forward;
        pr.layer = int(pi) + 1;
        pr.name = p.layer->info.name;
        pr.batch = int(b) + 1;
        pr.batches = int(B);
        const double done = (double(k) * double(B) + double(b)) / (double(K) * double(B));
        if (done > 0.02) pr.eta_s = seconds_since(start) * (1 - done) / done;
        report_progress(pr);
        const auto t0 = Clock::now();
        std::vector<c10::IValue> xf, xq;
        {
          try {
            std::tie(xf, xq) = run_both(k, slot_f(b), slot_q(b));
          } catch (const c10::Error& e) {  // the batch that does not fit, not only the first one
            throw std::invalid_argument("calibration batch " + std::to_string(b + 1) + " of " + std::to_string(B) +
                                        " (" + batch_text(calibration[b]) + ") does not fit the model's forward before layer " +
                                        p.layer->info.name + ": " + detail::error_summary(e));
          }
        }
        rep.forward_seconds += seconds_since(t0);
        if (solve_here && !reuse) add_site(grams, p, s, b, xf, xq);
      }
      if (!solve_here) continue;
      if (reuse) {
        grams = *last_grams;
        rep.layers[p.report_index].notes["shared_statistics"] = 1;  // the previous layer's (same input)
      } else if (p.layer->sites.size() > 1) {
        // Look-ahead: the later uses of this weight, on copies of the state.
        std::size_t last = k;
        for (std::size_t j = k + 1; j < K; ++j)
          if (site_at.at(staged.cut(j)).first == pi) last = j;
        // Stages that write into tensors in place need a deep copy of the state; the others read it
        // and leave it as it was.
        bool writes = false;
        for (std::size_t j = k + 1; j <= last; ++j) writes = writes || staged.writes(j);
        for (std::size_t b = 0; b < B; ++b) {
          detail::Env cf = copy_of_state(slot_f(b), writes);
          detail::Env cq = copy_of_state(slot_q(b), writes);
          for (std::size_t j = k + 1; j <= last; ++j) {
            const auto t1 = Clock::now();
            std::vector<c10::IValue> xf, xq;
            {
              SingleThreaded forward_threads(!o.threaded_forward && device.is_cpu());
              xf = staged.run(j, fm, cf);
              xq = staged_q.run(j, qm, cq);
            }
            rep.forward_seconds += seconds_since(t1);
            const auto [pj, sj] = site_at.at(staged.cut(j));
            if (pj == pi) add_site(grams, p, sj, b, xf, xq);
          }
        }
      }
      Progress pr;
      pr.phase = Progress::Phase::solve;
      pr.layer = int(pi) + 1;
      pr.name = p.layer->info.name;
      report_progress(pr);
      if (!reuse) {
        const auto t0 = Clock::now();
        grams.finish();
        if (group) reduce_statistics(*group, grams, p.layer->info.name);
        const double sec = seconds_since(t0);
        rep.statistics_seconds += sec;
        rep.layers[p.report_index].seconds += sec;
      }
      if (plugin.info.reconstructs_spans && !p.learned) reconstruct_span(k, pi, grams);
      solve(p, &grams);
      // The layer's temporaries (token-major copies, solver matrices) are freed: hand the pages back,
      // or glibc keeps them and the process's memory grows with the depth.
      ::malloc_trim(0);
      last_grams.reset();
      if (p.layer->sites.size() == 1) {
        last_grams.emplace(std::move(grams));
        last_cut = k;
      }
    }
    if (group) rep.collective_bytes = group->bytes();
    rep.peak_cache_bytes = cache.peak_resident_bytes();
    rep.peak_spilled_bytes = cache.peak_spilled_bytes();
  }
  qm.to(at::kCPU);
  if (!measure) res.model = transforms.empty() ? qm : detail::with_input_transforms(qm, transforms);
  rep.seconds = seconds_since(start);
  rep.peak_rss_bytes = peak_rss_bytes();
  return res;
}

}  // namespace detail
}  // namespace qcast::ptq
