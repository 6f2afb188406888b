// The block Walsh-Hadamard transform (qcast/hadamard.hpp), SIMD: written once, compiled for every
// instruction set Highway targets, dispatched once per call. Butterfly steps whose stride h is at
// least a vector run on whole vectors (loads of v[j..] and v[j + h..], stores of the sum and the
// difference). Each output is the
// same sequence of binary32 operations as in the reference, so the bits agree on every target. Steps
// below a vector use in-register shuffles (the partner of lane j is lane j ^ h). The
// blocks are independent: large arrays are split over the worker pool by whole blocks.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "src/cpu/hadamard_kernel.cpp"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>

#include <algorithm>
#include <cstdint>

#include "qcast/hadamard.hpp"
#include "qcast/kernels.hpp"
#include "parallel_ranges.hpp"

HWY_BEFORE_NAMESPACE();
namespace qcast::kernels::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// One butterfly step of stride h < Lanes(d) inside a vector of consecutive elements: the partner of
// lane j is lane j ^ h; lanes with bit h clear get v + partner (a + c), the others partner - v
// (a - c), the reference's operands in the reference's order. Returns false where this target has
// no such shuffle (the caller then runs the step on scalars).
template <class D, class V>
HWY_INLINE bool StepInVector(D d, V& v, std::int64_t h) {
#if HWY_TARGET == HWY_SCALAR
  (void)d, (void)v, (void)h;
  return false;
#else
  const std::int64_t lanes = std::int64_t(hn::Lanes(d));
  V partner;
  if (h == 1) partner = hn::Shuffle2301(v);
  else if (h == 2) partner = hn::Shuffle1032(v);
  else if (2 * h == lanes) partner = hn::ConcatLowerUpper(d, v, v);  // swap the two halves
  else if (h == 4 && lanes > 8) partner = hn::SwapAdjacentBlocks(v);  // swap 128-bit blocks pairwise
  else return false;
  const hn::RebindToSigned<D> di;
  const auto upper = hn::RebindMask(d, hn::Ne(hn::And(hn::Iota(di, 0), hn::Set(di, int32_t(h))), hn::Zero(di)));
  v = hn::IfThenElse(upper, hn::Sub(partner, v), hn::Add(v, partner));
  return true;
#endif
}

// The steps h = 1, 2, ... below min(block, Lanes(d)) over n consecutive values (n a multiple of the
// block): in registers where the target has the shuffles, else on scalars.
template <class D>
HWY_INLINE void SmallSteps(D d, float* x, std::int64_t n, std::int64_t block) {
  const std::int64_t lanes = std::int64_t(hn::Lanes(d));
  const std::int64_t top = std::min(block, lanes);
  std::int64_t done = 0;  // values whose small steps ran in registers
  if (lanes > 1 && top > 1) {
    bool ok = true;
    for (std::int64_t h = 1; h < top && ok; h *= 2) {
      auto probe = hn::Zero(d);
      ok = StepInVector(d, probe, h);
    }
    if (ok)
      for (; done + lanes <= n; done += lanes) {
        auto v = hn::LoadU(d, x + done);
        for (std::int64_t h = 1; h < top; h *= 2) StepInVector(d, v, h);
        hn::StoreU(v, d, x + done);
      }
  }
  for (std::int64_t b = done; b < n; b += block)  // the rest (a tail shorter than a vector) on scalars
    for (std::int64_t h = 1; h < top; h *= 2)
      for (std::int64_t i = b; i < b + block; i += 2 * h)
        for (std::int64_t j = i; j < i + h; ++j) {
          const float a = x[j], c = x[j + h];
          x[j] = a + c;
          x[j + h] = a - c;
        }
}

void HadamardBlocks(float* x, std::int64_t blocks, std::int64_t block, float scale) {
  const hn::ScalableTag<float> d;
  const std::int64_t lanes = std::int64_t(hn::Lanes(d));
  const auto vscale = hn::Set(d, scale);
  // A block at a time where it holds whole vectors (the later steps run across them); runs of
  // blocks shorter than a vector go through the register steps together.
  const std::int64_t per = block >= lanes ? 1 : std::max<std::int64_t>(1, 4096 / block);
  for (std::int64_t b0 = 0; b0 < blocks; b0 += per) {
    const std::int64_t nb = std::min(per, blocks - b0);
    float* v = x + b0 * block;
    const std::int64_t n = nb * block;
    SmallSteps(d, v, n, block);
    for (std::int64_t h = lanes; h < block; h *= 2)  // block >= 2 * lanes here
      for (std::int64_t i = 0; i < block; i += 2 * h)
        for (std::int64_t j = i; j < i + h; j += lanes) {
          const auto a = hn::LoadU(d, v + j), c = hn::LoadU(d, v + j + h);
          hn::StoreU(hn::Add(a, c), d, v + j);
          hn::StoreU(hn::Sub(a, c), d, v + j + h);
        }
    std::int64_t i = 0;
    for (; i + lanes <= n; i += lanes) hn::StoreU(hn::Mul(hn::LoadU(d, v + i), vscale), d, v + i);
    for (; i < n; ++i) v[i] *= scale;
  }
}

}  // namespace qcast::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace qcast::kernels {
HWY_EXPORT(HadamardBlocks);

void hadamard(float* x, std::int64_t n, std::int64_t block, int threads) {
  check_hadamard(n, block);
  const float scale = hadamard_scale(block);
  const std::int64_t blocks = n / block;
  parallel_ranges(blocks, resolve_threads(threads), block, [&](std::int64_t begin, std::int64_t end) {
    HWY_DYNAMIC_DISPATCH(HadamardBlocks)(x + begin * block, end - begin, block, scale);
  });
}

}  // namespace qcast::kernels
#endif
