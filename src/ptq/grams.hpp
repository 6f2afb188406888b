// The calibration statistics of one weight layer: Gram matrices summed over every token of the
// calibration set, in float64 and in a fixed order, so that they do not depend on the number of
// threads nor on how the samples are split into batches. The cross term is summed as (X − X̂)X̂ᵀ, not
// formed as XX̂ᵀ − X̂X̂ᵀ, so that the small difference of the two streams is not lost to cancellation
// (docs/design/0008-error-diffusion-fold.md). Internal to src/ptq.
#pragma once
#include <ATen/core/Tensor.h>

#include <array>
#include <cstdint>

namespace qcast::ptq::detail {

struct Grams {
  // [groups, cols, cols] float64 each; rows of a group are the columns of X (float stream) and X̂
  // (quantized stream) as [cols, tokens].
  at::Tensor xhat_xhat;  // G = X̂X̂ᵀ
  at::Tensor diff_xhat;  // D = (X − X̂)X̂ᵀ, so that XX̂ᵀ = G + D
  at::Tensor x_x;        // XXᵀ (for ||W·X||², the report's reference)
  // G and D over each half of the calibration samples (even and odd samples, counted in order over
  // the whole calibration set): held-out checks for a method, e.g. how much of the fold ED keeps.
  // The sums above are half 0 + half 1.
  std::array<at::Tensor, 2> half_xhat_xhat, half_diff_xhat;
  at::Tensor x_sum, xhat_sum;  // [groups, cols] float64: Σ X and Σ X̂ over the tokens (bias correction)
  std::int64_t tokens = 0;
  std::int64_t samples = 0;

  // Adds one chunk: x and xhat are [groups, cols, tokens] of any float dtype on any device, whose
  // tokens are `chunk_samples` calibration samples of equal length, in order (a chunk whose tokens
  // do not split evenly counts as one sample). Values are first rounded to float32 (as the engine's
  // streams compute them); on the CPU every product is then exact in float64 (the difference X − X̂
  // is split into a float32 part and a remainder where it needs more bits) and the sums run token by
  // token into the running sums (gram_panel); on other devices through LibTorch's float64 products.
  void add(const at::Tensor& x, const at::Tensor& xhat, std::int64_t chunk_samples = 1);

  // After the last chunk: fills the lower triangles of the symmetric sums, forms the totals from the
  // halves and moves everything to the CPU.
  void finish();

  // ||W·X||² over the calibration set for the layer's matrix w [rows, cols] (rows split evenly into
  // the groups), from XXᵀ.
  double target_energy(const at::Tensor& w) const;

  // X̂ == X in every chunk so far (D is zero and XXᵀ is X̂X̂ᵀ).
  bool streams_identical() const { return identical_; }

 private:
  bool identical_ = true;  // X̂ == X for every chunk so far: only X̂X̂ᵀ is summed (D is zero, XXᵀ equals it)
  void add_half(int half, const at::Tensor& a, const at::Tensor& b);
};

}  // namespace qcast::ptq::detail
