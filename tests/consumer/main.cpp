#include <qcast/kernels.hpp>
#include <qcast/qcast.hpp>

int main() {
  float x[2] = {3.3f, -100.0f}, y[2] = {0, 0}, z[2] = {0, 0};
  qcast::cast(x, y, {2}, qcast::parse_format("fp8_e4m3"));
  qcast::kernels::cast(x, z, {2}, qcast::parse_format("fp8_e4m3"));
  return y[0] == 3.25f && y[1] == -96.0f && z[0] == y[0] && z[1] == y[1] ? 0 : 1;
}
