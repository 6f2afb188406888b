// The calibration statistics of one weight layer: Gram matrices summed over every token of the
// calibration set, in float64 and in a fixed order, so that they do not depend on the number of
// threads nor on how the tokens are split into batches. Internal to src/ptq.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>

namespace qcast::ptq::detail {

struct Grams {
  // [groups, cols, cols] float64 each; rows of a group are the columns of X (float stream) and X̂
  // (quantized stream) as [cols, tokens].
  at::Tensor xhat_xhat;  // X̂X̂ᵀ
  at::Tensor x_xhat;     // XX̂ᵀ
  at::Tensor x_x;        // XXᵀ (for ||W·X||², the report's reference)
  std::int64_t tokens = 0;

  // Adds one chunk: x and xhat are [groups, cols, tokens] of any float dtype on any device. Values
  // are first rounded to float32 (as the engine's streams compute them), then every product is
  // exact in float64. On the CPU the sums run token by token into the running sums (gram_panel);
  // on other devices through LibTorch's float64 matrix product there.
  void add(const at::Tensor& x, const at::Tensor& xhat);

  // After the last chunk: fills the lower triangles of the symmetric sums and moves them to the CPU.
  void finish();

  // ||W·X||² over the calibration set for the layer's matrix w [rows, cols] (rows split evenly into
  // the groups), from XXᵀ.
  double target_energy(const at::Tensor& w) const;

 private:
  bool identical_ = true;  // X̂ == X for every chunk so far: only X̂X̂ᵀ is summed (the others equal it)
  void add_cpu(const at::Tensor& a, const at::Tensor& b, at::Tensor& g, bool symmetric);
};

}  // namespace qcast::ptq::detail
