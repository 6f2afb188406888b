#include <qcast/qcast.hpp>

int main() {
  float x = 3.3f, y = 0.0f;
  qcast::cast(&x, &y, {1}, qcast::parse_format("fp8_e4m3"));
  return y == 3.25f ? 0 : 1;
}
