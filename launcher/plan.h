// `lockstep plan`: how often to checkpoint a run and what goodput to expect,
// from its scale, its failure rate and what a save and a restart cost. The
// closed form (Young/Daly, core's young_daly.h) is here; the simulation of
// whole runs is in plan_simulation.h.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "lockstep/young_daly.h"

namespace lockstep::launcher {

// The published figures the default failure rate comes from. Llama 3
// (Dubey et al., "The Llama 3 Herd of Models", 2024, section 3.3.4): 466 job
// interruptions in a 54-day snapshot of pre-training on 16,384 H100 GPUs
// (8 per node), 47 planned and 419 unexpected.
struct Llama3Figures {
  static constexpr std::int64_t kGpus = 16384;
  static constexpr std::int64_t kGpusPerNode = 8;
  static constexpr double kDays = 54;
  static constexpr int kInterruptions = 466;
  static constexpr int kUnexpectedInterruptions = 419;
};
// 419 / 54 days / 2,048 nodes: 0.00379 unexpected interruptions per node per
// day, a job MTBF of 3.1 hours at 16,384 GPUs.
inline constexpr double kDefaultFailuresPerNodeDay =
    Llama3Figures::kUnexpectedInterruptions / Llama3Figures::kDays /
    static_cast<double>(Llama3Figures::kGpus / Llama3Figures::kGpusPerNode);

// What a save stalls training and what a restart from a tier costs.
struct TierCosts {
  double save_stall_seconds = 0;    // C
  double restart_cost_seconds = 0;  // R: failure to training again
};

struct PlanInputs {
  std::int64_t gpus = Llama3Figures::kGpus;
  std::int64_t gpus_per_node = Llama3Figures::kGpusPerNode;
  double failures_per_node_day = kDefaultFailuresPerNodeDay;
  // The job's MTBF; when set it replaces gpus / gpus_per_node × the rate.
  std::optional<double> mtbf_seconds;
  TierCosts disk;                    // every save to the shared file system
  std::optional<TierCosts> memory;   // node memory plus a partner's copy
  int flush_every = 8;               // memory tier: every K-th save also to disk
  double time_limit_seconds = 0;     // an allocation's time limit; 0: none
  double requeue_delay_seconds = 0;  // queue wait before a requeued job runs
  double days = Llama3Figures::kDays;
  // Save every this many seconds instead of at the Young/Daly interval.
  std::optional<double> interval_seconds;
};

// Throws UsageError naming the first bad input by its flag: zero or negative
// GPUs, GPUs per node, rates or costs, GPUs not divisible by GPUs per node.
void validate(const PlanInputs& inputs);

std::int64_t node_count(const PlanInputs& inputs);
// The job's mean time between failures: the given MTBF, else one over the
// node count times the per-node rate.
double job_mtbf_seconds(const PlanInputs& inputs);

// One way to checkpoint the run: disk only, or the memory tier with every
// K-th save flushed to disk.
struct Configuration {
  std::string name;  // "disk", "memory+disk"
  bool memory_tier = false;
  double save_stall_seconds = 0;       // each save (the memory tier's, or disk's)
  double disk_save_stall_seconds = 0;  // a save that goes to disk
  int flush_every = 1;                 // every K-th save goes to disk (1: every save)
  double restart_cost_seconds = 0;     // restoring from this configuration's tier
  double disk_restart_cost_seconds = 0;
  // The stall averaged over one flush cycle: (K−1) memory saves and a disk
  // save.
  double mean_stall_seconds() const;
};

// Disk only, then the memory tier when its costs are given.
std::vector<Configuration> configurations(const PlanInputs& inputs);

// A change to one input and what it does to the goodput.
struct Lever {
  std::string name;  // "halve the save stall", ...
  double goodput = 0;
  // The save stall and the restart cost are the job's to cut; the MTBF is
  // the cluster's. To first order doubling the MTBF buys at least as much
  // as either halving (it shrinks the stall and recomputation terms as
  // halving C does and the restart term as halving R does).
  bool in_the_jobs_hands = true;
};

// The closed form of one configuration. To first order every failure is
// restored from the configuration's own tier (losing a node and its partner
// between two saves is second order), a lost node is replaced at once, and
// a requeue costs a save to disk, the queue and a restart from disk; the
// simulation drops these assumptions.
struct ClosedForm {
  Configuration configuration;
  double mtbf_seconds = 0;
  double interval_seconds = 0;  // Young/Daly with the mean stall, or the one given
  YoungDalyGoodput first_order;
  double requeue = 0;              // fraction of wall time lost to requeues at the time limit
  double goodput = 0;              // first_order.goodput − requeue
  double exponential_goodput = 0;  // exact for exponential failures, less requeue
  double interruptions = 0;        // failures expected over the run
  std::vector<Lever> levers;       // halving C, halving R, doubling the MTBF
  // Of the levers in the job's hands, the one with the largest gain.
  const Lever& best_lever() const;
};

// The closed form of every configuration. Throws UsageError on bad inputs.
std::vector<ClosedForm> plan_closed_form(const PlanInputs& inputs);

// The costs a run measured, from <run_dir>/summary.json.
struct MeasuredCosts {
  std::filesystem::path summary;
  std::optional<double> save_stall_seconds;    // stall per save; none without a save
  std::optional<double> restart_cost_seconds;  // mean time to recovery; none without a restart
  std::int64_t checkpoints = 0;
  std::int64_t restarts = 0;
};

// Reads <run_dir>/summary.json, which `lockstep run` writes. Throws
// UsageError naming the file when it is missing or unreadable, comes from an
// older lockstep (no or another summary_version), lacks a figure, or is from
// a run that failed (its costs are not those of a working run).
MeasuredCosts read_measured_costs(const std::filesystem::path& run_dir);

}  // namespace lockstep::launcher
