#include "plan.h"

#include <algorithm>
#include <cmath>
#include <fstream>

#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "attempt.h"
#include "lockstep/error.h"

namespace lockstep::launcher {

namespace {

constexpr double kSecondsPerDay = 86400;

void require_positive(double value, const char* input) {
  if (!(value > 0) || !std::isfinite(value)) {
    throw UsageError(fmt::format("{} must be a positive number; got {}", input, value));
  }
}

void require_not_negative(double value, const char* input) {
  if (!(value >= 0) || !std::isfinite(value)) {
    throw UsageError(fmt::format("{} must be 0 or more; got {}", input, value));
  }
}

ClosedForm closed_form(const Configuration& configuration, double mtbf_seconds,
                       const PlanInputs& inputs) {
  ClosedForm result;
  result.configuration = configuration;
  result.mtbf_seconds = mtbf_seconds;
  const double stall = configuration.mean_stall_seconds();
  result.interval_seconds =
      inputs.interval_seconds ? *inputs.interval_seconds : young_daly_interval(stall, mtbf_seconds);
  result.first_order = young_daly_goodput(result.interval_seconds, stall,
                                          configuration.restart_cost_seconds, mtbf_seconds);
  if (inputs.time_limit_seconds > 0) {
    // Each allocation ends with a save to disk at the warning, waits in the
    // queue and restarts from disk; nothing is recomputed.
    result.requeue = (configuration.disk_save_stall_seconds + inputs.requeue_delay_seconds +
                      configuration.disk_restart_cost_seconds) /
                     (inputs.time_limit_seconds + inputs.requeue_delay_seconds);
  }
  result.goodput = result.first_order.goodput - result.requeue;
  result.exponential_goodput =
      exponential_goodput(result.interval_seconds, stall, configuration.restart_cost_seconds,
                          mtbf_seconds) -
      result.requeue;
  result.interruptions = inputs.days * kSecondsPerDay / mtbf_seconds;
  return result;
}

}  // namespace

void validate(const PlanInputs& inputs) {
  if (inputs.gpus <= 0) {
    throw UsageError(fmt::format("--gpus must be at least 1; got {}", inputs.gpus));
  }
  if (inputs.gpus_per_node <= 0) {
    throw UsageError(
        fmt::format("--gpus-per-node must be at least 1; got {}", inputs.gpus_per_node));
  }
  if (inputs.gpus % inputs.gpus_per_node != 0) {
    throw UsageError(
        fmt::format("--gpus {} is not a multiple of --gpus-per-node {}: a job takes whole nodes",
                    inputs.gpus, inputs.gpus_per_node));
  }
  if (inputs.mtbf_seconds) {
    require_positive(*inputs.mtbf_seconds / 3600, "--mtbf-hours");
  } else {
    require_positive(inputs.failures_per_node_day, "--failures-per-node-day");
  }
  require_positive(inputs.disk.save_stall_seconds, "--save-stall");
  require_positive(inputs.disk.restart_cost_seconds, "--restart-cost");
  if (inputs.memory) {
    require_positive(inputs.memory->save_stall_seconds, "--memory-save-stall");
    require_positive(inputs.memory->restart_cost_seconds, "--memory-restart-cost");
    if (inputs.flush_every < 1) {
      throw UsageError(fmt::format("--flush-every must be at least 1; got {}", inputs.flush_every));
    }
  }
  require_not_negative(inputs.time_limit_seconds / 3600, "--time-limit-hours");
  require_not_negative(inputs.requeue_delay_seconds, "--requeue-delay");
  require_positive(inputs.days, "--days");
  if (inputs.interval_seconds) require_positive(*inputs.interval_seconds, "--interval");
}

std::int64_t node_count(const PlanInputs& inputs) { return inputs.gpus / inputs.gpus_per_node; }

double job_mtbf_seconds(const PlanInputs& inputs) {
  if (inputs.mtbf_seconds) return *inputs.mtbf_seconds;
  return kSecondsPerDay / (static_cast<double>(node_count(inputs)) * inputs.failures_per_node_day);
}

double Configuration::mean_stall_seconds() const {
  return ((flush_every - 1) * save_stall_seconds + disk_save_stall_seconds) / flush_every;
}

std::vector<Configuration> configurations(const PlanInputs& inputs) {
  std::vector<Configuration> result;
  result.push_back({
      .name = "disk",
      .memory_tier = false,
      .save_stall_seconds = inputs.disk.save_stall_seconds,
      .disk_save_stall_seconds = inputs.disk.save_stall_seconds,
      .flush_every = 1,
      .restart_cost_seconds = inputs.disk.restart_cost_seconds,
      .disk_restart_cost_seconds = inputs.disk.restart_cost_seconds,
  });
  if (inputs.memory) {
    result.push_back({
        .name = "memory+disk",
        .memory_tier = true,
        .save_stall_seconds = inputs.memory->save_stall_seconds,
        .disk_save_stall_seconds = inputs.disk.save_stall_seconds,
        .flush_every = inputs.flush_every,
        .restart_cost_seconds = inputs.memory->restart_cost_seconds,
        .disk_restart_cost_seconds = inputs.disk.restart_cost_seconds,
    });
  }
  return result;
}

const Lever& ClosedForm::best_lever() const {
  const Lever* best = nullptr;
  for (const Lever& lever : levers) {
    if (lever.in_the_jobs_hands && (best == nullptr || lever.goodput > best->goodput)) {
      best = &lever;
    }
  }
  return *best;
}

std::vector<ClosedForm> plan_closed_form(const PlanInputs& inputs) {
  validate(inputs);
  const double mtbf = job_mtbf_seconds(inputs);
  std::vector<ClosedForm> result;
  for (const Configuration& configuration : configurations(inputs)) {
    ClosedForm form = closed_form(configuration, mtbf, inputs);
    // Each lever keeps the rest and lets the interval follow (unless fixed).
    Configuration cheaper_saves = configuration;
    cheaper_saves.save_stall_seconds /= 2;
    cheaper_saves.disk_save_stall_seconds /= 2;
    Configuration cheaper_restarts = configuration;
    cheaper_restarts.restart_cost_seconds /= 2;
    cheaper_restarts.disk_restart_cost_seconds /= 2;
    form.levers = {
        {"halve the save stall", closed_form(cheaper_saves, mtbf, inputs).goodput},
        {"halve the restart cost", closed_form(cheaper_restarts, mtbf, inputs).goodput},
        {"double the MTBF", closed_form(configuration, 2 * mtbf, inputs).goodput, false},
    };
    result.push_back(std::move(form));
  }
  return result;
}

MeasuredCosts read_measured_costs(const std::filesystem::path& run_dir) {
  MeasuredCosts costs;
  costs.summary = run_dir / "summary.json";
  const std::string name = costs.summary.string();
  std::ifstream file(costs.summary);
  if (!file) {
    throw UsageError(
        fmt::format("--from {}: cannot read {} (give the --run-dir of a finished `lockstep run`)",
                    run_dir.string(), name));
  }
  const nlohmann::json summary = nlohmann::json::parse(file, nullptr, /*allow_exceptions=*/false);
  if (!summary.is_object()) {
    throw UsageError(fmt::format("--from {}: {} is not a JSON object", run_dir.string(), name));
  }
  const auto version = summary.find("summary_version");
  if (version == summary.end() || !version->is_number_integer() ||
      version->get<int>() != kSummaryVersion) {
    throw UsageError(fmt::format(
        "--from {}: {} has summary_version {}, this lockstep reads version {}; it was written "
        "by {} lockstep: run the job again with this version, or give --save-stall and "
        "--restart-cost",
        run_dir.string(), name, version == summary.end() ? "(none)" : version->dump(),
        kSummaryVersion, version == summary.end() ? "an older" : "another"));
  }
  const auto number = [&](const char* field) {
    const auto found = summary.find(field);
    if (found == summary.end() || !found->is_number() || !(found->get<double>() >= 0)) {
      throw UsageError(fmt::format("--from {}: {} has no valid \"{}\" (a number >= 0)",
                                   run_dir.string(), name, field));
    }
    return found->get<double>();
  };
  const std::string outcome = summary.value("outcome", std::string("(none)"));
  const double exit_code = number("exit_code");
  // A run stopped for a requeue or preemption measured its costs as well as
  // one that finished.
  if (outcome != "success" && outcome != "stopped") {
    throw UsageError(fmt::format(
        "--from {}: {} is from a run that did not succeed (outcome \"{}\", exit code {}); the "
        "costs of a failed run are not those of a working one",
        run_dir.string(), name, outcome, exit_code));
  }
  costs.checkpoints = static_cast<std::int64_t>(number("checkpoints"));
  costs.restarts = static_cast<std::int64_t>(number("restarts"));
  const double stall = number("checkpoint_stall_seconds");
  const double recovery = number("mean_time_to_recovery_seconds");
  if (costs.checkpoints > 0)
    costs.save_stall_seconds = stall / static_cast<double>(costs.checkpoints);
  if (costs.restarts > 0 && recovery > 0) costs.restart_cost_seconds = recovery;
  return costs;
}

}  // namespace lockstep::launcher
