// Sums of outer products over tokens in float64, in a fixed order: the statistics (Gram matrices) of
// the PTQ engine. Written once with Highway and compiled per instruction set (src/ptq/gram_kernel.cpp).
// No LibTorch.
#pragma once
#include <cstdint>

namespace qcast::ptq::detail {

// For i in [i0, i1), j in [j0, j1): g[i*ldg + j] += sum over t in [0, tokens) of a[t*ld + i] * b[t*ld + j],
// adding one token at a time in increasing t into the running value of g. a and b hold float32
// values widened to float64, so every product is exact and a fused multiply-add rounds exactly as a
// multiply then an add: the result is the same on every instruction set, for any split of the
// tokens into calls (in order) and of (i, j) into panels, and so for any number of threads.
void gram_panel(const double* a, const double* b, std::int64_t ld, std::int64_t tokens, std::int64_t i0,
                std::int64_t i1, std::int64_t j0, std::int64_t j1, double* g, std::int64_t ldg);

// The same, one scalar at a time: the reference every compiled target is tested against.
void gram_panel_reference(const double* a, const double* b, std::int64_t ld, std::int64_t tokens, std::int64_t i0,
                          std::int64_t i1, std::int64_t j0, std::int64_t j1, double* g, std::int64_t ldg);

}  // namespace qcast::ptq::detail
