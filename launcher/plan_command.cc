// `lockstep plan`: the checkpoint interval and expected goodput of a run,
// in closed form and, with --simulate, by simulating whole runs.
#include <iostream>
#include <memory>

#include <fmt/format.h>

#include "commands.h"
#include "lockstep/error.h"
#include "plan.h"
#include "plan_report.h"

namespace lockstep::cli {

namespace {

using launcher::PlanInputs;
using launcher::SimulationOptions;

struct PlanOptions {
  PlanInputs inputs;
  double mtbf_hours = 0;
  double save_stall = 0;
  double restart_cost = 0;
  double memory_save_stall = 0;
  double memory_restart_cost = 0;
  double time_limit_hours = 0;
  double interval = 0;
  std::string from;
  bool json = false;
  bool simulate = false;
  SimulationOptions simulation;
  double repair_hours = 0;
  // Which options were given.
  CLI::Option* mtbf_option = nullptr;
  CLI::Option* save_stall_option = nullptr;
  CLI::Option* restart_cost_option = nullptr;
  CLI::Option* memory_save_stall_option = nullptr;
  CLI::Option* memory_restart_cost_option = nullptr;
  CLI::Option* interval_option = nullptr;
  CLI::Option* weibull_option = nullptr;
};

constexpr const char* kSources =
    "Sources of the default failure rate:\n"
    "  Llama 3 (Dubey et al., \"The Llama 3 Herd of Models\", 2024, section 3.3.4): 466 job\n"
    "  interruptions in a 54-day snapshot of pre-training on 16,384 H100 GPUs (8 per node),\n"
    "  47 planned and 419 unexpected, 78% of these confirmed or suspected hardware issues.\n"
    "  419 / 54 days / 2,048 nodes = 0.00379 failures per node per day (the default), a job\n"
    "  MTBF of 3.1 h; the 78% is the default --node-loss-share.\n"
    "  Meta's cluster study (Kokolis et al., \"Revisiting Reliability in Large-Scale Machine\n"
    "  Learning Research Clusters\", 2024): a failure every ~1.8 h at 16,384 GPUs, every\n"
    "  ~14 min projected at 131,072 GPUs (--mtbf-hours 1.8 plans with it).\n"
    "\n"
    "Closed form (Young 1974, Daly 2006): interval sqrt(2 C MTBF); goodput\n"
    "1 - C/interval - (interval/2 + R)/MTBF to first order, with the exact goodput for\n"
    "exponential failures beside it. README.md, \"Planning a run\", walks through an example.\n"
    "\n"
    "Examples:\n"
    "  lockstep plan --save-stall 5 --restart-cost 600\n"
    "  lockstep plan --from lockstep-run --simulate\n"
    "  lockstep plan --save-stall 30 --restart-cost 600 --memory-save-stall 2 \\\n"
    "      --memory-restart-cost 120 --flush-every 8 --simulate --json";

int run_plan(PlanOptions& options) {
  PlanInputs inputs = options.inputs;
  if (options.mtbf_option->count() > 0) inputs.mtbf_seconds = options.mtbf_hours * 3600;
  std::optional<launcher::MeasuredCosts> measured;
  if (!options.from.empty()) measured = launcher::read_measured_costs(options.from);
  // A flag wins over the run's measurement.
  const auto cost = [&](CLI::Option* flag, double value, std::optional<double> from_run,
                        const char* what) {
    if (flag->count() > 0) return value;
    if (from_run) return *from_run;
    if (measured) {
      throw UsageError(fmt::format(
          "--from {}: {} does not measure the {} (the run had no {}); give {}", options.from,
          measured->summary.string(), what,
          flag == options.save_stall_option ? "checkpoint" : "restart", flag->get_name()));
    }
    throw UsageError(
        fmt::format("{} is needed (or --from RUN_DIR to take it from a run)", flag->get_name()));
  };
  inputs.disk.save_stall_seconds =
      cost(options.save_stall_option, options.save_stall,
           measured ? measured->save_stall_seconds : std::nullopt, "save stall");
  inputs.disk.restart_cost_seconds =
      cost(options.restart_cost_option, options.restart_cost,
           measured ? measured->restart_cost_seconds : std::nullopt, "restart cost");
  const bool memory_stall = options.memory_save_stall_option->count() > 0;
  const bool memory_restart = options.memory_restart_cost_option->count() > 0;
  if (memory_stall != memory_restart) {
    throw UsageError(
        "--memory-save-stall and --memory-restart-cost describe the memory tier together: give "
        "both or neither");
  }
  if (memory_stall) {
    inputs.memory = launcher::TierCosts{options.memory_save_stall, options.memory_restart_cost};
  }
  inputs.time_limit_seconds = options.time_limit_hours * 3600;
  if (options.interval_option->count() > 0) inputs.interval_seconds = options.interval;
  std::optional<SimulationOptions> simulation;
  if (options.simulate) {
    if (options.weibull_option->count() > 0 && !(options.simulation.weibull_shape > 0)) {
      throw UsageError(fmt::format("--weibull-shape must be a positive number; got {}",
                                   options.simulation.weibull_shape));
    }
    simulation = options.simulation;
    simulation->repair_seconds = options.repair_hours * 3600;
  }
  const launcher::PlanReport report =
      launcher::make_plan_report(inputs, std::move(measured), simulation);
  if (options.json) {
    std::cout << launcher::to_json(report).dump(2) << "\n";
  } else {
    std::cout << launcher::describe(report);
  }
  return kExitSuccess;
}

}  // namespace

void add_plan_command(CLI::App& app, int& exit_code) {
  auto options = std::make_shared<PlanOptions>();
  PlanInputs& in = options->inputs;
  CLI::App* command = app.add_subcommand(
      "plan",
      "Checkpoint interval and expected goodput of a run from its scale, failure rate and "
      "costs; --simulate draws whole runs");
  command->footer(kSources);
  command->add_option("--gpus", in.gpus, "GPUs in the job")->capture_default_str();
  command->add_option("--gpus-per-node", in.gpus_per_node, "GPUs per node")->capture_default_str();
  auto* rate = command
                   ->add_option("--failures-per-node-day", in.failures_per_node_day,
                                "Failures per node per day (default: Llama 3's, see below)")
                   ->capture_default_str();
  options->mtbf_option =
      command->add_option("--mtbf-hours", options->mtbf_hours,
                          "The job's mean time between failures, instead of the per-node rate");
  options->mtbf_option->excludes(rate);
  options->save_stall_option =
      command->add_option("--save-stall", options->save_stall,
                          "Seconds a save to disk stalls training (C); summary.json's with --from");
  options->restart_cost_option = command->add_option(
      "--restart-cost", options->restart_cost,
      "Seconds from a failure to training again after a restore from disk (R); summary.json's "
      "mean time to recovery with --from");
  options->memory_save_stall_option = command->add_option(
      "--memory-save-stall", options->memory_save_stall,
      "Seconds a save to the memory tier stalls training; adds a memory+disk column");
  options->memory_restart_cost_option = command->add_option(
      "--memory-restart-cost", options->memory_restart_cost,
      "Seconds from a failure to training again after a restore from the memory tier");
  command
      ->add_option("--flush-every", in.flush_every,
                   "Memory tier: every K-th save also goes to disk")
      ->capture_default_str();
  command->add_option("--from", options->from,
                      "Take C and R from RUN_DIR/summary.json (`lockstep run --run-dir`)");
  command
      ->add_option("--time-limit-hours", options->time_limit_hours,
                   "Time limit of an allocation; the job saves and is requeued at it (0: none)")
      ->capture_default_str();
  command
      ->add_option("--requeue-delay", in.requeue_delay_seconds,
                   "Seconds a requeued job waits in the queue")
      ->capture_default_str();
  command->add_option("--days", in.days, "Length of the run in days")->capture_default_str();
  options->interval_option =
      command->add_option("--interval", options->interval,
                          "Save every this many seconds instead of at the Young/Daly interval");
  command->add_flag("--json", options->json, "Print JSON instead of the table");
  command->add_flag("--simulate", options->simulate,
                    "Also simulate whole runs (discrete events, per-node failures)");
  command->add_option("--runs", options->simulation.runs, "Simulated runs")->capture_default_str();
  command->add_option("--seed", options->simulation.seed, "Seed of the simulation")
      ->capture_default_str();
  options->weibull_option = command->add_option(
      "--weibull-shape", options->simulation.weibull_shape,
      "Weibull times between a node's failures with this shape, same mean (default exponential)");
  command
      ->add_option("--node-loss-share", options->simulation.node_loss_share,
                   "Share of failures that lose the node and its memory (the rest kill a "
                   "process)")
      ->capture_default_str();
  command
      ->add_option("--spares", options->simulation.spares,
                   "Spare nodes; a lost node without a spare is left out and the job runs "
                   "smaller (-1: a spare is always there)")
      ->capture_default_str();
  command
      ->add_option("--replace-delay", options->simulation.replace_delay_seconds,
                   "Seconds before a spare replaces a lost node")
      ->capture_default_str();
  command
      ->add_option("--repair-hours", options->repair_hours,
                   "Hours before a lost node is a spare again (0: never)")
      ->capture_default_str();
  command
      ->add_option("--threads", options->simulation.threads,
                   "Simulation threads (0: one per hardware thread)")
      ->capture_default_str();
  command->callback([options, &exit_code] { exit_code = run_plan(*options); });
}

}  // namespace lockstep::cli
