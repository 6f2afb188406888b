// The table of weight operations (op_table.hpp) and the unfolding of their data inputs.
#include "op_table.hpp"

#include <ATen/ATen.h>

#include <stdexcept>

namespace qcast::ptq::detail {
namespace {

std::string rank_two(const torch::jit::Node* n, const OpOperand&, bool, std::int64_t dim) {
  if (dim == 2) return {};
  return std::string(n->kind().toQualString()) + " with a " + std::to_string(dim) + "-D weight";
}

std::string linear_rule(const torch::jit::Node*, const OpOperand&, bool transposed, std::int64_t) {
  return transposed ? "aten::linear with a transposed weight" : "";
}

std::string conv_rule(const torch::jit::Node*, const OpOperand&, bool, std::int64_t dim) {
  return dim > 4 ? "3-D convolution" : "";
}

std::string full_conv_rule(const torch::jit::Node* n, const OpOperand& o, bool t, std::int64_t dim) {
  // aten::_convolution(input, weight, bias, stride, padding, dilation, transposed, ...)
  const auto tr = torch::jit::toIValue(n->input(6));
  if (!tr || !tr->isBool() || tr->toBool()) return "transposed convolution";
  return conv_rule(n, o, t, dim);
}

std::string bmm_rule(const torch::jit::Node* n, const OpOperand&, bool transposed, std::int64_t dim) {
  if (transposed) return "aten::bmm with a transposed weight";
  if (dim == 3) return {};
  return std::string(n->kind().toQualString()) + " with a " + std::to_string(dim) + "-D weight";
}

const std::vector<OpRule>& rules() {
  static const std::vector<OpRule> table = {
      {"aten::linear", {{1, 0, SiteKind::linear}}, linear_rule},
      {"aten::conv1d", {{1, 0, SiteKind::conv}}, conv_rule},
      {"aten::conv2d", {{1, 0, SiteKind::conv}}, conv_rule},
      {"aten::_convolution", {{1, 0, SiteKind::conv}}, full_conv_rule},
      {"aten::matmul", {{1, 0, SiteKind::right}, {0, 1, SiteKind::left}}, rank_two},
      {"aten::mm", {{1, 0, SiteKind::right}, {0, 1, SiteKind::left}}, rank_two},
      {"aten::addmm", {{2, 1, SiteKind::right}, {1, 2, SiteKind::left}}, rank_two},
      {"aten::bmm", {{1, 0, SiteKind::bmm_right}, {0, 1, SiteKind::bmm_left}}, bmm_rule},
  };
  return table;
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

}  // namespace

const OpRule* find_op_rule(const std::string& op) {
  for (const OpRule& r : rules())
    if (op == r.op) return &r;
  return nullptr;
}

WeightLayout layout_of(const Site& s) {
  const bool out_first = s.kind == SiteKind::linear || s.kind == SiteKind::conv || s.kind == SiteKind::left ||
                         s.kind == SiteKind::bmm_left;
  return out_first != s.transposed ? WeightLayout::rows : WeightLayout::transposed;
}

std::int64_t reduction_size(const Site& s, WeightLayout layout, const at::Tensor& p) {
  if (layout == WeightLayout::transposed) return p.size(-2);
  if (s.kind == SiteKind::conv) return p.numel() / p.size(0);
  return p.size(-1);
}

void for_each_input_chunk(const Site& site, const std::vector<c10::IValue>& in, const std::vector<c10::IValue>& in_q,
                          const at::Tensor& weight, std::int64_t cols,
                          const std::function<void(const at::Tensor&, const at::Tensor&, std::int64_t)>& sink) {
  at::Tensor x = in.at(std::size_t(site.data_input)).toTensor();
  at::Tensor xq = in_q.at(std::size_t(site.data_input)).toTensor();
  if (x.sizes() != xq.sizes())
    throw std::runtime_error("the float and the quantized model gave this layer inputs of different shapes");
  switch (site.kind) {
    case SiteKind::linear:
    case SiteKind::right:  // x [..., cols]: the leading dimension counts the samples
      sink(x.reshape({-1, cols}).t().unsqueeze(0), xq.reshape({-1, cols}).t().unsqueeze(0), x.dim() >= 2 ? x.size(0) : 1);
      return;
    case SiteKind::left:  // x [..., cols, N]
      sink(x.transpose(-1, -2).reshape({-1, cols}).t().unsqueeze(0),
           xq.transpose(-1, -2).reshape({-1, cols}).t().unsqueeze(0), x.dim() >= 3 ? x.size(0) : 1);
      return;
    case SiteKind::bmm_right:  // x [b, M, in]: b is the weight's batch, so the call is one sample
      sink(x.transpose(1, 2), xq.transpose(1, 2), 1);
      return;
    case SiteKind::bmm_left:  // x [b, in, N]
      sink(x, xq, 1);
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
  auto unfold = [&](const at::Tensor& t, std::int64_t i) {  // [groups, cols, L]
    return at::im2col(t.narrow(0, i, 1), kernel, dilation, padding, stride).reshape({groups, cols, -1});
  };
  for (std::int64_t i = 0; i < x.size(0); ++i) sink(unfold(x, i), unfold(xq, i), 1);
}

}  // namespace qcast::ptq::detail
