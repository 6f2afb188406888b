// rtn: round to nearest on each group's grid. Needs no calibration data; with data the report still
// gives each layer's relative output error. Identical bit for bit to the core's qcast::cast of the
// weight matrix.
#include "../method.hpp"
#include "../solvers.hpp"

QCAST_PTQ_METHOD(rtn) {
  qcast::ptq::MethodInfo info;
  info.name = "rtn";
  info.help = "round to nearest on each group's grid (needs no calibration data)";
  info.needs_calibration = false;
  info.bounds_accumulator = true;
  return {info, [](qcast::ptq::detail::GroupProblem& p) {
            qcast::ptq::detail::round_to_nearest(p.w, p.row0, *p.grid, p.accumulator);
            return p.w;
          }};
}
