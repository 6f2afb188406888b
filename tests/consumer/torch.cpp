// The LibTorch adapter from an installed qcast: a tensor cast to FP8 E4M3.
#include <ATen/ATen.h>
#include <qcast/torch.hpp>

int main() {
  const at::Tensor x = at::tensor({3.3f, -100.0f});
  const at::Tensor y = qcast::cast(x, "fp8_e4m3");
  return at::equal(y, at::tensor({3.25f, -96.0f})) ? 0 : 1;
}
