// The PTQ engine: walks a TorchScript module, cuts its forward into stages at the weight layers, runs
// the float model and the progressively quantized copy stage by stage over the calibration set (each
// stage once per stream and batch), and quantizes the layers in execution order with a method from
// the registry: rtn, gptq, ed (Error Diffusion), or any plug-in (docs/ptq.md). Needs LibTorch
// (target qcast::ptq); the core headers never include it.
#pragma once
#include <torch/csrc/jit/api/module.h>

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "qcast/format.hpp"
#include "qcast/qpack.hpp"
#include "qcast/safetensors.hpp"

namespace qcast::ptq {

// One batch of model inputs (a single tensor for most models; several for multi-input models).
using Batch = std::vector<c10::IValue>;

// An option a method declares; the CLI turns it into --NAME (a flag) or --NAME VALUE.
struct MethodOption {
  // integer: 1 to 2^30; count: 0 to 2^30; text: any non-empty value
  enum class Kind { flag, integer, real, choice, text, count };
  std::string name;           // e.g. "act-order"
  Kind kind = Kind::flag;
  std::string default_value;  // as text: "false", "128", "0.01", "static"
  std::string help;           // one line
  std::vector<std::string> choices = {};  // the values a choice takes
};

// A registered method (src/ptq/methods/<name>.cpp).
struct MethodInfo {
  std::string name;  // e.g. "gptq"
  std::string help;  // one line
  std::vector<MethodOption> options;
  bool needs_calibration = true;  // false: runs without data (calibration then only feeds the report)
  // true: the method rounds through the accumulator bound when the run keeps one (AXE; rtn, gptq,
  // gpfq and ed do). A run with --accumulator-bits refuses a method that does not.
  bool bounds_accumulator = false;
  // true: the engine trains the method's rounding on spans of layers before solving them (FlexRound;
  // the method declares a `span` option and the options of its training: iters, lr, seed, holdout).
  bool reconstructs_spans = false;
};

// Every registered method, by name.
const std::vector<MethodInfo>& methods();
// The method of that name; std::invalid_argument listing the valid names otherwise.
const MethodInfo& find_method(const std::string& name);

struct LayerFormat {
  std::string pattern;  // glob over layer names (* and ?), e.g. "classifier.*"
  Format format;
};

// A format for the activations of the layers whose names match a glob; no format: they stay in float.
struct LayerActFormat {
  std::string pattern;
  std::optional<Format> format;
};

// Activation quantization (WxAy, docs/ptq.md "Activations"): a `qcast::cast` on each quantized
// layer's data input, in the quantized stream of the calibration (so that the methods fit the
// weights to the inputs they will see) and in the saved model. Block formats take their scales
// along the reduction axis at run time; per-tensor formats (intN, X@tensor) and the tensor scale of
// two-level formats (nvfp4, ...@gK+tensor) use a static amax measured on the float stream's inputs
// of the layer over the calibration set.
struct ActivationOptions {
  std::optional<Format> format;               // every quantized layer's; none: activations stay in float
  std::vector<LayerActFormat> layer_formats;  // first match wins over `format`
  // How the static amax is measured: the largest finite |x|; the `percentile`-th percentile of |x|
  // (from a 2048-bin histogram over [0, max], its bin's upper edge); or the clip among
  // max * 2^(-j/4), j = 0..19, whose cast has the smallest squared error over the calibration set.
  enum class Amax { max, percentile, mse };
  Amax amax = Amax::max;
  double percentile = 99.99;
  // A format or rotation that cannot apply to a layer (a block that does not divide its reduction):
  // false, an error naming the layer; true, that layer goes without it and the report says why.
  bool unfit_float = false;
  bool any() const;
};

struct Progress {
  // train: a method that reconstructs spans (FlexRound) trains the span that opens at `layer`;
  // `batch` counts its iterations of `batches`, and `loss` is the mean loss of the last ones.
  enum class Phase { forward, solve, activation_statistics, train };
  Phase phase = Phase::forward;
  std::string pass;           // "sensitivity" in a mixed-precision run's first pass, "" otherwise
  int layer = 0, layers = 0;  // 1-based index of the layer whose stage runs or which is solved, of `layers`
  std::string name;           // that layer
  int batch = 0, batches = 0;  // forward, activation_statistics: 1-based batch within the stage or pass, of `batches`
  double elapsed_s = 0, eta_s = -1;  // eta_s < 0: not known yet
  double loss = 0;                   // train only
};

// Thrown by quantize() when the progress callback asks it to stop. Nothing is written; temporary
// files are removed.
struct Stopped : std::runtime_error {
  Stopped() : std::runtime_error("stopped on request") {}
};

// Mixed precision under a size budget (docs/ptq.md "Mixed precision"): a first pass measures every
// quantized layer's sensitivity to each candidate (the method run with that format on the float
// model's inputs), an exact multiple-choice knapsack (qcast/ptq/allocation.hpp) picks one candidate
// per layer with the least summed sensitivity whose summed size fits the budget, and a second pass
// quantizes with that assignment (later layers calibrated on the earlier layers' chosen formats).
// Layers that --layer-format pins keep their format (and count in the size); excluded layers are
// outside the budget. Needs calibration data.
struct MixedPrecision {
  std::vector<std::optional<Format>> candidates;  // std::nullopt: float (the weight as it is)
  // The budget over the allocated layers' weights, codes + scales as stored: bits per weight, or
  // bytes in all; exactly one of them (>= 0).
  double budget_bits = -1;
  std::int64_t budget_bytes = -1;
  // output: a layer's sensitivity to a candidate is its squared relative output error
  // ||Ŵ·X − W·X||² / ||W·X||² on the calibration set (from the Gram matrices; no extra forward
  // pass). end_to_end: the mean KL divergence of the model's output (softmax over its last axis)
  // from the model's with only that layer quantized (a forward pass per layer and candidate);
  // end_to_end_mse: the relative squared error of that output instead (regression outputs: images,
  // embeddings). gain (gain_mse): the squared output error times the layer's gain to the model's
  // output, read from one probe per layer (KL, or relative squared error) of the candidate with the
  // median output error: cost = probe / e_probed² · e², the probed candidate's cost its probe.
  enum class Sensitivity { output, end_to_end, end_to_end_mse, gain, gain_mse };
  // The default: gain beat the uniform formats at 4.5 bits on 3 of the 5 models of docs/results.md
  // where output did on 1; it costs a forward pass per layer and probe batch (probe_batches).
  Sensitivity sensitivity = Sensitivity::gain;
  std::int64_t probe_batches = -1;  // the probing sensitivities: calibration batches each probe runs (< 0: all)
  bool any() const { return !candidates.empty(); }
  // Whether the sensitivity runs the model with a layer quantized, and whether that probe scores by KL.
  bool probes() const { return sensitivity != Sensitivity::output; }
  bool probes_kl() const { return sensitivity == Sensitivity::end_to_end || sensitivity == Sensitivity::gain; }
  bool probes_every_candidate() const {
    return sensitivity == Sensitivity::end_to_end || sensitivity == Sensitivity::end_to_end_mse;
  }
};

// A sensitivity's name as the CLI and the report spell it ("output", "e2e", "e2e-mse", "gain",
// "gain-mse"), and back: an unknown name is std::invalid_argument listing the valid ones.
const char* sensitivity_name(MixedPrecision::Sensitivity s);
MixedPrecision::Sensitivity sensitivity_from_name(const std::string& name);

// Accumulator bounds (AXE, docs/ptq.md "Accumulator bounds"; qcast/ptq/accumulator.hpp): integer
// weights kept, during the method's walk, within the codes that make every integer dot product of a
// layer fit a P-bit accumulator for any input in the layer's integer range; checked afterwards from
// the codes and reported per layer. The inputs' range comes from the layer's activation format
// (an integer format) or from input_bits. Weights and activations of bounded layers must be integer
// formats.
struct AccumulatorOptions {
  int bits = 0;  // P (2..62); 0: no bound (with input_bits, each layer's need is still reported)
  // T: products per tile, each tile summed in P bits and the tiles' sums added in a wider register
  // (multi-stage accumulation). 0: a whole row, or the largest that divides the formats' blocks.
  std::int64_t tile = 0;
  int input_bits = 0;  // the inputs' integer width where no integer activation format gives it
  bool input_signed = true;
  bool any() const { return bits > 0 || input_bits > 0; }
};

// Calibration across processes (docs/ptq.md "Calibration across processes"): this process is one
// rank of a c10d process group (Gloo over TCP; rank 0 hosts the group's TCPStore). Every rank is
// given the same model and calibration batches and takes the contiguous share
// [rank·B/world_size, (rank+1)·B/world_size) of the B batches; the sums each layer's solve needs are
// all-reduced, every rank solves the same problem and holds the same quantized weights (checked per
// layer), and the caller writes outputs on rank 0 alone.
struct DistributedOptions {
  int rank = 0, world_size = 1;    // world_size 1: one process, nothing shared
  std::string host = "127.0.0.1";  // where rank 0 hosts the store
  int port = 29500;
  double timeout_s = 600;          // a collective waiting longer fails, naming the step and the ranks behind
  bool any() const { return world_size > 1; }
};

// torchrun's variables: RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT; std::nullopt where WORLD_SIZE is
// unset. std::invalid_argument naming the variable that does not parse.
std::optional<DistributedOptions> distributed_from_environment();

struct Options {
  Format format;
  std::string method = "ed";                          // a name from methods()
  std::map<std::string, std::string> method_options;  // NAME -> value text, as the method declares them
  std::vector<std::string> exclude;                   // globs of layer names left in float
  std::vector<LayerFormat> layer_formats;             // first match wins over `format`
  std::string device = "cpu";                         // "cpu", "cuda" or "cuda:N": streams and statistics
  std::int64_t cache_mb = -1;  // boundary state kept in memory (MiB); < 0: half the available memory
  std::string spill_dir;       // where state beyond it goes (a temporary folder inside); "": TMPDIR
  // false (default): the stages run with LibTorch's intra-op threads at one, so that the forward
  // passes, and so the result, have the same bits for any thread count (LibTorch's CPU convolutions
  // do not). true: they use every intra-op thread: faster forward passes, bits that may depend on it.
  bool threaded_forward = false;
  // true (default): on the CPU, every convolution of the run takes ATen's per-sample kernel (im2col
  // and one matrix product per sample), so the activations, and so the result, are the same for any
  // batch size. false: ATen picks oneDNN or NNPACK by batch size and thread count, as in inference:
  // faster 3x3 convolutions, bits that depend on the batch size. Sets ATen's global flags for the
  // duration of the run (docs/ptq.md, "Determinism").
  bool per_sample_convolutions = true;
  // Bias correction: after a layer is quantized, its output's mean shift over the calibration set,
  // mean(W·X) − mean(Ŵ·X̂) per output channel, is added to its bias (linear layers and convolutions
  // whose bias is a parameter; the report notes layers without one). Any method; needs calibration.
  bool bias_correction = false;
  ActivationOptions activations;
  AccumulatorOptions accumulator;
  DistributedOptions distributed;
  // Hadamard rotation of each quantized layer's reduction dimension (--rotate hadamard[:B]): the
  // weight W becomes W·H offline and its data input H·x in the graph (qcast::hadamard), so that W·x
  // is unchanged up to rounding while outliers spread over each block of B. 0: none; -1: B is each
  // layer's weight-format block size; B > 0: that block (a power of two). A layer whose reduction
  // extent B does not divide fails, or with activations.unfit_float stays unrotated (reported).
  std::int64_t hadamard_block = 0;
  // SmoothQuant (--smooth ALPHA, in [0, 1]; < 0: none): per input channel j of each quantized layer,
  // s_j = max|X_j|^alpha / max|W_j|^(1-alpha) from the float stream over the calibration set; the
  // weight's input channels are multiplied by s and the input by 1/s, so the float function is
  // unchanged while the activations' outlier channels shrink. Applied before the rotation. Needs
  // calibration. Where a LayerNorm's output feeds only quantized linear layers (a pre-LN
  // transformer), those layers share one s (max|W_j| over all of them) and 1/s is folded into the
  // LayerNorm's γ and β; elsewhere the input goes through an inserted aten::mul by 1/s.
  double smooth_alpha = -1;
  // false: no fold, every smoothed input through an inserted aten::mul (for comparison).
  bool smooth_fold = true;
  // Instead (--smooth pow2): LLM-FP4's per-channel activation exponent bias folded into the weights,
  // s_j = 2^(floor(log2 max|X_j|) - floor(log2 max over channels)): powers of two, so the weights
  // absorb s exactly, and every input channel reaches the tensor's top exponent.
  bool smooth_pow2 = false;
  // Format search (LLM-FP4's baseline; --search-format, --search-clip): for each quantized layer,
  // every candidate format x clip ratio is rounded to nearest and scored by the layer's relative
  // output error on the calibration statistics; the method then runs with the best. Empty formats:
  // the layer's own format is the one candidate; empty clips: {1}. Needs calibration.
  std::vector<Format> search_formats;
  std::vector<double> search_clips;
  // The same for activation formats (--search-act-format): each layer with an activation quantizer
  // gets the candidate (x clip ratio of its static amax, for per-tensor and two-level formats) with
  // the least ||W·(Q(X) - X)||² on the float stream over the calibration set.
  std::vector<Format> search_act_formats;
  MixedPrecision mixed;
  // Called at every batch of every stage and before every solve; returning false stops the run
  // (quantize throws Stopped).
  std::function<bool(const Progress&)> progress;
};

// A weight layer of the walk: a parameter used as the weight operand of supported operations.
struct LayerInfo {
  std::string name;        // parameter path, e.g. "features.0.weight"
  std::string op;          // aten::linear, aten::conv2d, ... (first use)
  int uses = 0;            // how many calls use it (a module called twice: 2)
  std::vector<std::int64_t> shape;
  std::string unsupported;  // non-empty: why it stays in float
};

struct LayerReport {
  std::string name, op, status;  // status: "quantized", "excluded", or "float: <why>"
  std::vector<std::int64_t> shape;
  std::string format, method;
  // The activation format of its data input (its axis along the reduction), "" when its activations
  // stay in float; act_status says why they do where a format was asked for ("float: <why>").
  std::string act_format, act_status;
  std::int64_t hadamard_block = 0;  // the block of its Hadamard rotation, 0: not rotated
  double act_amax = -1;  // the static amax of a per-tensor or two-level act format (of its first use); -1: none
  double relative_error = -1;  // ||Ŵ·X̂ − W·X|| / ||W·X|| over the calibration set (bias excluded); -1: no data
  double rtn_relative_error = -1;  // the same for round-to-nearest weights on the same inputs
  double seconds = 0;              // statistics + solve of this layer
  // The weight parameter's bytes in float (its dtype) and as stored quantized: packed codes +
  // scales (+ 4 bytes of a two-level format's tensor scale). A layer left in float counts its float
  // bytes on both sides.
  std::int64_t float_bytes = 0, quantized_bytes = 0;
  std::map<std::string, double> notes;  // what the method reports of this layer, e.g. ED's "fold" factor
  // Mixed precision: the sensitivity pass's measurement of each candidate ("float" for float).
  struct Candidate {
    std::string format;
    std::int64_t bytes = 0;
    double relative_error = 0;  // on the float model's inputs
    double e2e = -1;            // end-to-end sensitivity (KL or relative MSE of the output); -1: not measured
    double cost = 0;            // what the allocation summed
  };
  std::vector<Candidate> candidates;
  // Runs with an accumulator bound or an input width (AccumulatorOptions): the worst case of the
  // layer's integer dot products, computed from its codes after quantization.
  struct Accumulator {
    int bits = 0;             // the bound P (0: none, only measured)
    std::int64_t tile = 0;    // columns per tile
    std::int64_t input_min = 0, input_max = 0;  // the inputs' integer range
    std::string input_from;   // where the range came from: "act-format int8", "act-bits 8"
    std::int64_t worst = 0;   // the largest |Σ q·x| of any output and tile for inputs in range
    int bits_needed = 0;      // the least accumulator width that holds it (<= bits where bounded)
  };
  std::optional<Accumulator> accumulator;
};

// What the allocation of a mixed-precision run decided.
struct AllocationReport {
  std::string sensitivity;          // sensitivity_name(): "output", "e2e" (KL), "e2e-mse", "gain", "gain-mse"
  std::vector<std::string> candidates;
  std::int64_t weights = 0;         // elements of the allocated layers' weights
  std::int64_t budget_bytes = 0;    // the budget, as bytes over them
  std::int64_t bytes = 0;           // the chosen assignment's
  double cost = 0;                  // its summed sensitivity: the least of every assignment that fits
  std::int64_t states = 0;          // partial assignments the exact search kept
  double seconds = 0;               // the sensitivity pass and the allocation
  // The budget-vs-sensitivity curve: (bits per weight of the budget, least summed sensitivity).
  std::vector<std::pair<double, double>> curve;
  double budget_bits_per_weight() const { return weights ? 8.0 * double(budget_bytes) / double(weights) : 0; }
  double bits_per_weight() const { return weights ? 8.0 * double(bytes) / double(weights) : 0; }
};

struct Report {
  // The JSON's layout; raised when a field changes meaning or goes (docs/ptq.md: the report).
  static constexpr int schema_version = 1;
  std::string method, format, device;
  // The run's options as NAME -> value text (a repeated option appears once per value, in order):
  // the engine's from Options, a caller's own (the CLI adds its model, calib, samples, batch-size).
  std::vector<std::pair<std::string, std::string>> options;
  std::int64_t samples = 0, batches = 0;
  double seconds = 0;             // the whole run
  double forward_seconds = 0;     // the stages of both streams (and the look-ahead of shared weights)
  double statistics_seconds = 0;  // Gram matrices
  double solve_seconds = 0;       // the methods
  std::int64_t stages = 0;
  std::int64_t peak_cache_bytes = 0;    // boundary state held in memory at once
  std::int64_t peak_spilled_bytes = 0;  // boundary state on disk at once
  std::int64_t peak_rss_bytes = 0;      // the process's peak resident memory (Linux), 0 where unknown
  int world_size = 1;                   // ranks of a distributed calibration (samples, batches: all ranks')
  std::int64_t collective_bytes = 0;    // what this rank's all-reduces carried
  std::vector<LayerReport> layers;
  std::optional<AllocationReport> allocation;  // mixed-precision runs
  std::int64_t float_bytes() const;      // sums over every weight layer
  std::int64_t quantized_bytes() const;
  std::string json() const;
  std::string table() const;
  // One self-contained HTML page (inline SVG charts, no script, nothing fetched): per-layer output
  // error of each measured format, the chosen formats, bytes per layer, the budget curve.
  std::string html() const;
};

struct Result {
  torch::jit::Module model;  // weights replaced by their dequantized values; on the CPU
  std::vector<PackedWeight> packed;
  Report report;
  // Smoothing (--smooth): per smoothed layer (by weight name), the factor 1/s its input is
  // multiplied by per input channel (float32 [channels], on the CPU), before any rotation; the
  // stored weight includes s. Layers whose 1/s was folded into a LayerNorm are not listed (the
  // model's LayerNorm parameters hold it).
  std::map<std::string, at::Tensor> input_scales;
};

// The run as a safetensors checkpoint: each quantized weight as codes + scales (+ tensor scale)
// with its format in the metadata (qcast/safetensors.hpp), every other parameter and buffer of the
// quantized model as it is (docs/safetensors.md).
SafetensorsFile export_safetensors(const Result& result);
// The JSON quantization config written beside it: method, formats per layer, layers left in float.
std::string quantization_config(const Result& result, const std::string& weights_file);

// The weight layers of `model` in execution order (of forward, with submodules inlined).
std::vector<LayerInfo> list_layers(const torch::jit::Module& model);

// Quantizes a copy of `model`; `model` itself is not changed. `calibration` may be empty for
// methods that need no data (rtn).
Result quantize(const torch::jit::Module& model, const std::vector<Batch>& calibration, const Options& options);

// Calibration data from a file: a tensor or a tuple/list of tensors saved by torch.save (first
// dimension = samples; a tuple holds one tensor per model input), or a folder of .npy files (each
// one model input with first dimension = samples, taken in name order). Split into batches of at
// most `batch_size` samples, `samples` in all (< 0: every sample). Errors name the path.
std::vector<Batch> load_calibration(const std::string& path, std::int64_t batch_size, std::int64_t samples = -1);

// Loads a TorchScript model (clear error naming the path when it is not one) and saves one
// atomically (a temporary file renamed into place; refuses to overwrite `protect`).
torch::jit::Module load_model(const std::string& path);
void save_model(const torch::jit::Module& model, const std::string& path, const std::string& protect = {});
// The archive, as a whole, into a stream (the caller checks the stream; OutputSet does).
void save_model(const torch::jit::Module& model, std::ostream& out);

}  // namespace qcast::ptq
