// The SIMD kernels from an installed qcast give the core's bits.
#include <qcast/kernels.hpp>
#include <qcast/qcast.hpp>

#include <vector>

int main() {
  std::vector<float> x(4096), a(x.size()), b(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = float(i % 97) * 0.173f - 8.0f;
  const qcast::Format f = qcast::parse_format("mxfp4");
  qcast::cast(x.data(), a.data(), {64, 64}, f);
  qcast::kernels::cast(x.data(), b.data(), {64, 64}, f);
  return a == b && a != x ? 0 : 1;
}
