// The header-only core from an installed qcast: FP8 E4M3 rounding (OCP FP8: 3.3 -> 3.25, -100 -> -96).
#include <qcast/qcast.hpp>
#include <qcast/version.hpp>

int main() {
  float x[2] = {3.3f, -100.0f}, y[2] = {0, 0};
  qcast::cast(x, y, {2}, qcast::parse_format("fp8_e4m3"));
  static_assert(QCAST_VERSION >= 100, "qcast/version.hpp is installed");
  return y[0] == 3.25f && y[1] == -96.0f ? 0 : 1;
}
