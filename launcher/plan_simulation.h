// A discrete-event simulation of whole runs, for `lockstep plan --simulate`:
// where the closed form's assumptions (R and τ small against the MTBF, every
// failure survived by the memory tier, nodes replaced at once, no time
// limit) do not hold.
//
// Each node fails on its own, at exponential intervals (the job then fails
// at the summed rate) or Weibull ones with the same mean; a node's clock
// starts again at each of its failures (a new node, or a process started
// afresh), and the cluster has run long before the job, so the first
// failure of each node is the renewal process's residual time. A failure stops the job, which
// restores the newest checkpoint that survived and restarts; failures during
// a save or a restart are counted like any other. A failure either kills a
// process (the node and its memory survive) or loses the node: its memory
// copy is gone and the node is replaced by a spare after a delay, or, with
// no spare left, left out, and the job continues smaller as it does under
// Slurm's exclusion. The memory tier keeps each node's part on the node and
// on the next one (a ring of partners), so it survives unless a node and its
// partner are both lost between two saves; otherwise the job goes back to
// the newest disk save. At an allocation's time limit the job saves to disk,
// waits in the queue and restarts from disk, losing no work.
#pragma once

#include <cstdint>

#include "plan.h"

namespace lockstep::launcher {

struct SimulationOptions {
  int runs = 1000;
  std::uint64_t seed = 1;            // the same seed gives the same figures
  double weibull_shape = 0;          // 0: exponential; else Weibull with this shape
  double node_loss_share = 0.78;     // failures that lose the node (Llama 3: 78% hardware)
  std::int64_t spares = -1;          // spare nodes; -1: one is always there
  double replace_delay_seconds = 0;  // a spare joins this long after a node loss
  double repair_seconds = 0;         // a lost node is a spare again after this; 0: never
  int threads = 0;                   // 0: one per hardware thread
};

// Throws UsageError naming the flag of the first bad option.
void validate(const SimulationOptions& options);

// One simulated run; the fractions are of its wall time and sum to 1.
struct SimulatedRun {
  double goodput = 0;    // work kept
  double stall = 0;      // saves, including saves cut short by a failure
  double recompute = 0;  // work lost to failures
  double restart = 0;    // restarts after failures, replacement delays included
  double requeue = 0;    // the save at the time limit, the queue, the restart
  double excluded = 0;   // capacity of nodes left out while the job ran smaller
  // Counts; numbers with a fraction in a mean over runs.
  double failures = 0;
  double requeues = 0;
  double disk_restores = 0;  // memory tier: failures that needed the disk
  double exclusions = 0;
};

struct Spread {
  double mean = 0;
  double ci95 = 0;  // half width of the 95% confidence interval of the mean
  double p5 = 0;
  double p50 = 0;
  double p95 = 0;
};

struct SimulationResult {
  Configuration configuration;
  double interval_seconds = 0;
  int runs = 0;
  Spread goodput;
  SimulatedRun mean;  // every field averaged over the runs
  double elapsed_seconds = 0;
};

// Simulates `options.runs` runs of `inputs.days` days with the configuration
// and interval of `form`. The runs are independent, each with its own
// generator derived from the seed, so the figures do not depend on the
// number of threads. Throws UsageError on bad inputs or options.
SimulationResult simulate(const PlanInputs& inputs, const ClosedForm& form,
                          const SimulationOptions& options);

// One run, for tests: run `index` of the seed.
SimulatedRun simulate_run(const PlanInputs& inputs, const ClosedForm& form,
                          const SimulationOptions& options, std::uint64_t index);

}  // namespace lockstep::launcher
