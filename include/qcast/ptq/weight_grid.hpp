// The quantization grid of one weight matrix, for methods that quantize it column by column (GPTQ,
// Error Diffusion): scales are fixed when the algorithm reaches them and every element is rounded on
// the grid of its group, recording the codes that decode() turns back into exactly the same values.
//
// A weight is seen as a matrix [rows, cols] in row-major order: rows are outputs, cols run along the
// reduction dimension (a linear layer's in_features; a convolution's in_channels/groups x kh x kw in
// OIHW order). For weights the format's axis is implied: blocks run along cols, a channel is a row.
// No LibTorch: an inference engine can use this header with the core alone.
#pragma once
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "qcast/cast.hpp"
#include "qcast/element_codec.hpp"
#include "qcast/format.hpp"
#include "qcast/format_names.hpp"
#include "qcast/packing.hpp"
#include "qcast/ptq/accumulator.hpp"
#include "qcast/scaling.hpp"

namespace qcast::ptq {

// The format with the axis a weight matrix [rows, cols] implies: blocks along cols, channels = rows.
inline Format weight_format(Format f) {
  if (f.granularity == Granularity::block) f.axis = -1;
  if (f.granularity == Granularity::channel) f.axis = 0;
  return f;
}

class WeightGrid {
 public:
  // `initial` is the weight before any update (rows x cols, row-major): the scales that belong to
  // more than one column (tensor and channel granularity, and the tensor scale of a two-level format)
  // are fixed from it, as GPTQ fixes them before its first column. `clip` in (0, 1] scales every
  // group's amax before its scale is derived (values beyond clip x amax then saturate): the clipping
  // a format search tries (LLM-FP4); a two-level format's tensor scale keeps the whole amax.
  template <class T>
  WeightGrid(const Format& format, std::int64_t rows, std::int64_t cols, const T* initial, double clip = 1.0)
      : f_(weight_format(format)), rows_(rows), cols_(cols), clip_(clip) {
    qcast::detail::check_format(f_);
    if (!(clip > 0.0 && clip <= 1.0)) throw std::invalid_argument("a clip ratio must be in (0, 1], got " + std::to_string(clip));
    if (rows < 1 || cols < 1) throw std::invalid_argument("a weight matrix needs at least one row and one column");
    for (std::int64_t i = 0; i < rows * cols; ++i)
      if (!std::isfinite(double(initial[i])))
        throw std::invalid_argument("weight element " + std::to_string(i) + " is not finite");
    codes_.assign(packed_size(std::size_t(rows * cols), f_.element.bits()), 0);
    if (!f_.is_scaled()) return;
    groups_per_row_ = f_.granularity == Granularity::block ? (cols + f_.block_size - 1) / f_.block_size : 1;
    const std::int64_t groups = f_.granularity == Granularity::tensor ? 1 : rows * groups_per_row_;
    scales_.assign(std::size_t(groups), GroupScale{});
    fixed_.assign(std::size_t(groups), 0);
    if (f_.tensor_scale) {
      amax_t_ = float(amax_of(initial, rows * cols, 1));
      s_t_ = tensor_scale_of(f_, amax_t_);
    }
    if (f_.granularity == Granularity::tensor) fix(0, float(amax_of(initial, rows * cols, 1)));
    if (f_.granularity == Granularity::channel)
      for (std::int64_t r = 0; r < rows; ++r) fix(r, float(amax_of(initial + r * cols, cols, 1)));
  }

  const Format& format() const { return f_; }
  std::int64_t rows() const { return rows_; }
  std::int64_t cols() const { return cols_; }
  // Columns that open a block: the scales of that block are fixed there (block granularity only).
  bool opens_block(std::int64_t col) const { return f_.granularity == Granularity::block && col % f_.block_size == 0; }
  int block_size() const { return f_.granularity == Granularity::block ? f_.block_size : 0; }

  // Fixes the scale of the block of (row, col) from its current values values[0..n) (n = the block's width).
  template <class T>
  void fix_block(std::int64_t row, std::int64_t col, const T* values, std::int64_t n, std::int64_t stride = 1) {
    fix(group_of(row, col), float(amax_of(values, n, stride)));
  }
  // Fixes the scale of the group of (row, col) (its block, its channel or the tensor) from a given
  // amax, through the format's own scale rule: how a method that learns its scales (FlexRound's s1)
  // puts them on the grid. A channel or tensor scale the constructor fixed is replaced.
  void fix_group(std::int64_t row, std::int64_t col, double amax) {
    if (!f_.is_scaled()) throw std::logic_error("fix_group: the format has no scales");
    if (!(amax >= 0.0) || !std::isfinite(amax)) throw std::invalid_argument("a group's amax must be finite and >= 0");
    fix(group_of(row, col), float(amax));
  }
  // The stored code of the group's scale (the format must be scaled and the group fixed): two amax
  // values that give the same code give the same grid, which a scale search need not try twice.
  std::uint32_t scale_code(std::int64_t row, std::int64_t col) const {
    if (!f_.is_scaled()) throw std::logic_error("scale_code: the format has no scales");
    if (!block_fixed(row, col)) throw std::logic_error("scale_code: the group's scale is not fixed");
    return scales_[std::size_t(group_of(row, col))].code;
  }
  bool block_fixed(std::int64_t row, std::int64_t col) const {
    return !f_.is_scaled() || fixed_[std::size_t(group_of(row, col))] != 0;
  }

  // Rounds v onto the grid of element (row, col), records its code and returns its value.
  double quantize(std::int64_t row, std::int64_t col, double v) {
    const float x = float(v);
    const std::size_t i = std::size_t(row * cols_ + col);
    std::uint32_t code;
    float out;
    if (!f_.is_scaled()) {
      code = encode_element(f_.element, x, options_);
      out = decode_element(f_.element, code);
    } else {
      const std::int64_t gi = group_of(row, col);
      if (!fixed_[std::size_t(gi)])
        throw std::logic_error("the scale of weight element (" + std::to_string(row) + ", " + std::to_string(col) +
                               ") was not fixed before it was quantized");
      const GroupScale& g = scales_[std::size_t(gi)];
      if (g.kind == GroupScale::Kind::finite) {
        code = encode_element(f_.element, qcast::detail::scaled_input(f_, x, g, s_t_), options_);
        out = qcast::detail::scaled_output(f_, decode_element(f_.element, code), g, s_t_);
      } else {  // the group's scale is zero (all of it was zero when it was fixed): it decodes to zero
        code = encode_element(f_.element, 0.0f, options_);
        out = 0.0f * decode_element(f_.element, code);
      }
    }
    pack_code(codes_.data(), i, f_.element.bits(), code);
    return out;
  }

  // Integer elements (intN, MXINT8): the value one step of the code is worth at (row, col), that
  // is the value of code 1 on the element's grid (0 where its group decodes to zero). The element's
  // scale must be fixed.
  double integer_step(std::int64_t row, std::int64_t col) const {
    if (f_.element.kind != ElementKind::integer) throw std::logic_error("integer_step: the weight format has no integer elements");
    const double unit = std::ldexp(1.0, -f_.element.fraction_bits);
    if (!f_.is_scaled()) return unit;
    const std::int64_t gi = group_of(row, col);
    if (!fixed_[std::size_t(gi)]) throw std::logic_error("integer_step: the group's scale is not fixed");
    const GroupScale& g = scales_[std::size_t(gi)];
    if (g.kind != GroupScale::Kind::finite) return 0.0;
    return qcast::detail::scaled_output(f_, float(unit), g, s_t_);
  }
  // The signed integer last recorded for (row, col) (integer elements).
  std::int64_t integer_code(std::int64_t row, std::int64_t col) const {
    return integer_of_code(f_.element, unpack_code(codes_.data(), std::size_t(row * cols_ + col), f_.element.bits()));
  }
  // Records the integer q (within the element's codes) for (row, col) and returns its value: what
  // quantize() returns for a value that rounds to q.
  double set_integer(std::int64_t row, std::int64_t col, std::int64_t q) {
    if (f_.element.kind != ElementKind::integer) throw std::logic_error("set_integer: the weight format has no integer elements");
    const std::int64_t qmax = f_.element.integer_max(), qmin = f_.element.is_signed ? -qmax : 0;
    if (q < qmin || q > qmax) throw std::logic_error("set_integer: " + std::to_string(q) + " is not a code of the format");
    const std::uint32_t code = std::uint32_t(q) & qcast::detail::all_ones(f_.element.bits());
    float out = decode_element(f_.element, code);
    if (f_.is_scaled()) {
      const std::int64_t gi = group_of(row, col);
      if (!fixed_[std::size_t(gi)]) throw std::logic_error("set_integer: the group's scale is not fixed");
      const GroupScale& g = scales_[std::size_t(gi)];
      if (g.kind == GroupScale::Kind::finite) {
        out = qcast::detail::scaled_output(f_, out, g, s_t_);
      } else {  // as quantize(): a zero-scale group holds code 0
        if (q != 0) throw std::logic_error("set_integer: a group whose scale is zero holds only code 0");
        out = 0.0f * out;
      }
    }
    pack_code(codes_.data(), std::size_t(row * cols_ + col), f_.element.bits(), code);
    return out;
  }

  // The recorded codes and scales: decode(encoded()) gives every value quantize() returned.
  Encoded encoded() const {
    Encoded e;
    e.format = f_;
    e.shape = {rows_, cols_};
    e.codes = codes_;
    e.tensor_scale = s_t_;
    if (f_.is_scaled()) {
      const int bits = f_.scale_storage_bits();
      e.scales.assign(packed_size(scales_.size(), bits), 0);
      for (std::size_t g = 0; g < scales_.size(); ++g) pack_code(e.scales.data(), g, bits, scales_[g].code);
    }
    return e;
  }

 private:
  template <class T>
  static double amax_of(const T* v, std::int64_t n, std::int64_t stride) {
    double m = 0.0;
    for (std::int64_t i = 0; i < n; ++i) m = std::fmax(m, std::fabs(double(v[i * stride])));
    return m;
  }
  std::int64_t group_of(std::int64_t row, std::int64_t col) const {
    if (f_.granularity == Granularity::tensor) return 0;
    if (f_.granularity == Granularity::channel) return row;
    return row * groups_per_row_ + col / f_.block_size;
  }
  void fix(std::int64_t gi, float amax) {
    if (clip_ != 1.0) amax = float(double(amax) * clip_);
    scales_[std::size_t(gi)] = group_scale(f_, amax, false, amax_t_, s_t_);
    fixed_[std::size_t(gi)] = 1;
  }

  Format f_;
  std::int64_t rows_, cols_, groups_per_row_ = 1;
  double clip_ = 1.0;
  CastOptions options_;  // round to nearest even; the format's own saturation convention
  float amax_t_ = 1.0f, s_t_ = 1.0f;
  std::vector<GroupScale> scales_;
  std::vector<std::uint8_t> fixed_;
  std::vector<std::uint8_t> codes_;
};

}  // namespace qcast::ptq
