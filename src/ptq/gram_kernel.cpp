// The Gram panel kernel (gram_kernel.hpp), compiled for every instruction set Highway targets
// (foreach_target re-includes this file per target; HWY_DYNAMIC_DISPATCH picks one at run time).
// A register tile of 4 rows x 2 vectors of g is loaded once, accumulates every token in order, and is
// stored once; the tokens' rows of a and b are read where they lie (the caller keeps a panel's token
// block small enough to stay in the core's L2 cache).
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "src/ptq/gram_kernel.cpp"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>

#include "gram_kernel.hpp"

HWY_BEFORE_NAMESPACE();
namespace qcast::ptq::detail::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// g[i][j] for one (i, j) over every token, in order (edges of the panel).
HWY_INLINE void GramScalar(const double* HWY_RESTRICT a, const double* HWY_RESTRICT b, std::int64_t ld,
                           std::int64_t tokens, std::int64_t i, std::int64_t j, double* HWY_RESTRICT g,
                           std::int64_t ldg) {
  double acc = g[i * ldg + j];
  for (std::int64_t t = 0; t < tokens; ++t) acc += a[t * ld + i] * b[t * ld + j];
  g[i * ldg + j] = acc;
}

void GramPanel(const double* HWY_RESTRICT a, const double* HWY_RESTRICT b, std::int64_t ld, std::int64_t tokens,
               std::int64_t i0, std::int64_t i1, std::int64_t j0, std::int64_t j1, double* HWY_RESTRICT g,
               std::int64_t ldg) {
  const hn::ScalableTag<double> d;
  const std::int64_t L = static_cast<std::int64_t>(hn::Lanes(d));
  std::int64_t i = i0;
  for (; i + 4 <= i1; i += 4) {
    std::int64_t j = j0;
    for (; j + 2 * L <= j1; j += 2 * L) {
      double* g0 = g + i * ldg + j;
      double* g1 = g0 + ldg;
      double* g2 = g1 + ldg;
      double* g3 = g2 + ldg;
      auto c00 = hn::LoadU(d, g0), c01 = hn::LoadU(d, g0 + L);
      auto c10 = hn::LoadU(d, g1), c11 = hn::LoadU(d, g1 + L);
      auto c20 = hn::LoadU(d, g2), c21 = hn::LoadU(d, g2 + L);
      auto c30 = hn::LoadU(d, g3), c31 = hn::LoadU(d, g3 + L);
      const double* ap = a + i;
      const double* bp = b + j;
      for (std::int64_t t = 0; t < tokens; ++t, ap += ld, bp += ld) {
        const auto b0 = hn::LoadU(d, bp), b1 = hn::LoadU(d, bp + L);
        const auto a0 = hn::Set(d, ap[0]);
        c00 = hn::MulAdd(a0, b0, c00);
        c01 = hn::MulAdd(a0, b1, c01);
        const auto a1 = hn::Set(d, ap[1]);
        c10 = hn::MulAdd(a1, b0, c10);
        c11 = hn::MulAdd(a1, b1, c11);
        const auto a2 = hn::Set(d, ap[2]);
        c20 = hn::MulAdd(a2, b0, c20);
        c21 = hn::MulAdd(a2, b1, c21);
        const auto a3 = hn::Set(d, ap[3]);
        c30 = hn::MulAdd(a3, b0, c30);
        c31 = hn::MulAdd(a3, b1, c31);
      }
      hn::StoreU(c00, d, g0);
      hn::StoreU(c01, d, g0 + L);
      hn::StoreU(c10, d, g1);
      hn::StoreU(c11, d, g1 + L);
      hn::StoreU(c20, d, g2);
      hn::StoreU(c21, d, g2 + L);
      hn::StoreU(c30, d, g3);
      hn::StoreU(c31, d, g3 + L);
    }
    for (; j < j1; ++j)
      for (std::int64_t r = i; r < i + 4; ++r) GramScalar(a, b, ld, tokens, r, j, g, ldg);
  }
  for (; i < i1; ++i)
    for (std::int64_t j = j0; j < j1; ++j) GramScalar(a, b, ld, tokens, i, j, g, ldg);
}

}  // namespace qcast::ptq::detail::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace qcast::ptq::detail {

HWY_EXPORT(GramPanel);

void gram_panel(const double* a, const double* b, std::int64_t ld, std::int64_t tokens, std::int64_t i0,
                std::int64_t i1, std::int64_t j0, std::int64_t j1, double* g, std::int64_t ldg) {
  HWY_DYNAMIC_DISPATCH(GramPanel)(a, b, ld, tokens, i0, i1, j0, j1, g, ldg);
}

void gram_panel_reference(const double* a, const double* b, std::int64_t ld, std::int64_t tokens, std::int64_t i0,
                          std::int64_t i1, std::int64_t j0, std::int64_t j1, double* g, std::int64_t ldg) {
  for (std::int64_t i = i0; i < i1; ++i)
    for (std::int64_t j = j0; j < j1; ++j) {
      double acc = g[i * ldg + j];
      for (std::int64_t t = 0; t < tokens; ++t) acc += a[t * ld + i] * b[t * ld + j];
      g[i * ldg + j] = acc;
    }
}

}  // namespace qcast::ptq::detail
#endif
