#include "lockstep/young_daly.h"

#include <cmath>

#include <fmt/format.h>

#include "lockstep/error.h"

namespace lockstep {

namespace {

void check_inputs(double interval_seconds, double save_cost_seconds, double restart_cost_seconds,
                  double mtbf_seconds) {
  if (!(interval_seconds > 0) || !std::isfinite(interval_seconds) || !(save_cost_seconds >= 0) ||
      !std::isfinite(save_cost_seconds) || !(restart_cost_seconds >= 0) ||
      !std::isfinite(restart_cost_seconds) || !(mtbf_seconds > 0) || !std::isfinite(mtbf_seconds)) {
    throw UsageError(fmt::format(
        "goodput needs a positive interval and MTBF and costs >= 0; got interval {} s, save "
        "cost {} s, restart cost {} s, MTBF {} s",
        interval_seconds, save_cost_seconds, restart_cost_seconds, mtbf_seconds));
  }
}

}  // namespace

double young_daly_interval(double save_cost_seconds, double mtbf_seconds) {
  if (!(save_cost_seconds >= 0) || !std::isfinite(save_cost_seconds) || !(mtbf_seconds > 0) ||
      !std::isfinite(mtbf_seconds)) {
    throw UsageError(
        fmt::format("Young/Daly interval needs a save cost >= 0 and an MTBF > 0; got "
                    "{} s and {} s",
                    save_cost_seconds, mtbf_seconds));
  }
  return std::sqrt(2.0 * save_cost_seconds * mtbf_seconds);
}

YoungDalyGoodput young_daly_goodput(double interval_seconds, double save_cost_seconds,
                                    double restart_cost_seconds, double mtbf_seconds) {
  check_inputs(interval_seconds, save_cost_seconds, restart_cost_seconds, mtbf_seconds);
  YoungDalyGoodput result;
  result.stall = save_cost_seconds / interval_seconds;
  result.recompute = interval_seconds / 2 / mtbf_seconds;
  result.restart = restart_cost_seconds / mtbf_seconds;
  result.goodput = 1 - result.stall - result.recompute - result.restart;
  return result;
}

double exponential_goodput(double interval_seconds, double save_cost_seconds,
                           double restart_cost_seconds, double mtbf_seconds) {
  check_inputs(interval_seconds, save_cost_seconds, restart_cost_seconds, mtbf_seconds);
  // Expected wall time to complete one interval of work and its save, with
  // every failure costing a restart and the interval again.
  const double expected_seconds = mtbf_seconds * std::exp(restart_cost_seconds / mtbf_seconds) *
                                  std::expm1((interval_seconds + save_cost_seconds) / mtbf_seconds);
  return interval_seconds / expected_seconds;
}

}  // namespace lockstep
