// What `lockstep plan` prints: a table for people, JSON for programs.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "plan.h"
#include "plan_simulation.h"

namespace lockstep::launcher {

struct PlanReport {
  PlanInputs inputs;
  std::optional<MeasuredCosts> measured;  // --from
  std::vector<ClosedForm> closed_form;    // one per configuration
  // With --simulate: one per configuration, in the same order.
  std::optional<SimulationOptions> simulation_options;
  std::vector<SimulationResult> simulations;
};

// The closed form of every configuration, and its simulation when
// `simulation` is given. Throws UsageError on bad inputs.
PlanReport make_plan_report(const PlanInputs& inputs, std::optional<MeasuredCosts> measured,
                            std::optional<SimulationOptions> simulation);

// Fractions as fractions (0.914), times in seconds.
nlohmann::json to_json(const PlanReport& report);
// The configurations side by side, one column each.
std::string describe(const PlanReport& report);

}  // namespace lockstep::launcher
